/* The orphan sweep of a node (docs/dataplane.md "PUT", step 5): a thread
 * that pages through the node's own sealed shards (SHARD_LIST on its data
 * port) and deletes those older than a grace period that no live manifest
 * names on this node: shards of a PUT whose coordinator died before the
 * commit, of a deleted object, or sealed after the coordinator had made
 * them a hole. A shard is deleted only on an authoritative answer from the
 * Raft leader; any doubt keeps it for a later pass. */
#ifndef MSD_CLUSTER_SWEEP_H
#define MSD_CLUSTER_SWEEP_H

#include <stdint.h>

#define SWEEP_GRACE_S 3600    /* default orphan grace */
#define SWEEP_INTERVAL_S 600  /* default pause between passes */
#define SWEEP_LOOKUPS_PER_S 200

struct sweep_opts {
  const char *control;    /* this node's control address (copied) */
  const char *data;       /* this node's data address (copied) */
  uint32_t node_id;       /* this node: the id shard maps must name */
  unsigned grace_s;       /* only shards sealed at least this long ago; 0: default */
  unsigned interval_s;    /* pause between the end of a pass and the next; 0: default */
  unsigned lookups_per_s; /* manifest lookups, local and leader together; 0: default */
};

struct sweep;

/* Starts the sweep's thread; the first pass runs at once (it only notes
 * the store's sequence number: nothing is older than the grace yet).
 * *out is the caller's (sweep_stop). 0, -ENOMEM or -errno. */
int sweep_start(const struct sweep_opts *o, struct sweep **out);

/* Stops the thread (within one request's timeout, a few seconds at most),
 * joins it and frees everything. NULL is fine. */
void sweep_stop(struct sweep *s);

#endif
