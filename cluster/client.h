/* The client API (docs/dataplane.md "Client side"): what the CLI, the
 * benchmarks and the gateways use to store and read objects. A client is
 * given the control addresses of some nodes; it learns every node's data
 * address from the cluster map and asks one node at a time to coordinate
 * a PUT or GET (the node erasure-codes, places, anchors, and for a GET
 * decodes around missing shards). Bodies stream through callbacks, so no
 * call ever holds a whole object. Not thread-safe: one msd_client per
 * thread (they are cheap). */
#ifndef MSD_CLUSTER_CLIENT_H
#define MSD_CLUSTER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/medshard.pb-c.h"

struct msd_client;

/* Every call that can fail fills one of these: a code (MSD_E*, or -errno)
 * and a sentence for a human ("bucket scans does not exist"). */
struct msd_error {
  int code;
  char msg[512];
};

/* Connects to the cluster reachable at `nodes` (control addresses,
 * "HOST:PORT[,HOST:PORT...]") and reads its cluster map. 0 or an error
 * (MSD_EUNAVAILABLE when no node answers). *out: msd_client_close. */
int msd_client_open(const char *nodes, struct msd_client **out, struct msd_error *e);
void msd_client_close(struct msd_client *c);

/* Reads up to cap bytes of the body into buf: returns the count, 0 at the
 * end, or a negative error code (the PUT is then abandoned). */
typedef ssize_t (*msd_read_fn)(void *ctx, void *buf, size_t cap);
/* Takes len bytes of the object, which start at object offset `off`; a
 * non-zero return abandons the GET with that code. */
typedef int (*msd_write_fn)(void *ctx, uint64_t off, const void *buf, size_t len);

struct msd_put_opts {
  const char *content_type; /* NULL: application/octet-stream */
  bool has_size;            /* the body's size is known (then checked) */
  uint64_t size;
};

/* Stores bucket/key from the body `rd` yields. Success means every shard
 * the write quorum needs is sealed and the PutObject anchor is committed;
 * *out (may be NULL; medshard__manifest__free_unpacked) is the stored
 * manifest: object id, version, size, SHA-256, shard map (holes have node
 * 0), anchor reference. On failure nothing is visible under the name. */
int msd_put(struct msd_client *c, const char *bucket, const char *key,
            const struct msd_put_opts *o, msd_read_fn rd, void *rd_ctx, Medshard__Manifest **out,
            struct msd_error *e);

/* A byte range [off, off + len) of an object; len is clipped at the end. */
struct msd_range {
  uint64_t off, len;
};

/* Reads bucket/key (the whole object when r is NULL) and hands its bytes
 * to wr in order. A whole read is checked against the manifest's SHA-256
 * by the coordinator; a mismatch or any shard trouble it cannot decode
 * around fails the call (MSD_ECHECKSUM, MSD_ETOO_MANY_ERASURES naming the
 * missing shards) after some bytes may have been handed over: callers
 * writing a file remove it then. *m (may be NULL) gets the manifest. */
int msd_get(struct msd_client *c, const char *bucket, const char *key, const struct msd_range *r,
            msd_write_fn wr, void *wr_ctx, Medshard__Manifest **m, struct msd_error *e);

#endif
