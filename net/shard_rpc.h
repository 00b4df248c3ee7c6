/* Shard RPCs on the data port (docs/dataplane.md, docs/FORMATS.md "Data
 * plane"): a net_handler that serves DataRequests from a node's shard
 * store. Each shard is named by (object id, shard index), so every call is
 * safe to retry: OPEN restarts an unsealed shard, SEAL of a shard already
 * sealed with the same digest succeeds, APPEND must name the offset the
 * shard has reached. The store is used only from the loop's thread, and
 * its disk I/O never blocks the loop: it completes through the loop's
 * auxiliary poll of the store's ring (dataplane.c). */
#ifndef MSD_NET_SHARD_RPC_H
#define MSD_NET_SHARD_RPC_H

#include <stddef.h>

#include "net/loop.h"
#include "storage/store.h"

struct shard_rpc;

/* Serves `store` (borrowed; it must outlive the server). At most
 * `max_open` shards may be open for writing at once (the store's I/O
 * buffers bound it too); an open shard idle for more than idle_ms is
 * dropped when a new OPEN needs its slot (its coordinator is gone).
 * payload_max is the data loop's payload bound: READs are clipped to it.
 * 0 or -ENOMEM. */
int shard_rpc_create(struct store *store, unsigned max_open, unsigned idle_ms, size_t payload_max,
                     struct shard_rpc **out);

/* Aborts the shards still open. */
void shard_rpc_destroy(struct shard_rpc *r);

/* The net_handler; ctx is the shard_rpc. APPEND, SEAL and READ are
 * answered later, from shard_rpc_poll. */
void shard_rpc_handle(void *ctx, struct net_conn *c, const struct net_request *req);

/* Makes loop l drive the store: its poll descriptor joins the loop, and
 * after every batch of completions the requests whose disk work is done
 * are answered. Call once, before net_loop_run. */
void shard_rpc_attach(struct shard_rpc *r, struct net_loop *l);

#endif
