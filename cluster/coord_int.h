/* Internals shared by the coordinator's files (coord.c: workers, caches
 * of the cluster map; coord_put.c; coord_get.c). */
#ifndef MSD_CLUSTER_COORD_INT_H
#define MSD_CLUSTER_COORD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cio.h"
#include "cluster/coord.h"
#include "proto/medshard.pb-c.h"
#include "shard/ec.h"
#include "shard/placement.h"

#define COORD_PAYLOAD (1u << 20)     /* frame payload bound, as the data loop's */
#define COORD_WINDOW_BYTES (24u << 20) /* stripe buffers per worker */
#define COORD_CONNECT_MS 1000
#define COORD_CACHE 8

struct coord_hash;

struct coord_worker {
  struct coord *c;
  unsigned index;
  pthread_t thread;
  struct cio *io;
  struct coord_hash *hash; /* the worker's SHA-256 thread (coord_hash.c) */
  Medshard__CtlResponse *map; /* GET_NODES answer, refreshed every 2 s */
  int64_t map_ms;
  struct { int k, m; struct place_map *pm; } place[COORD_CACHE];
  struct { int k, m; struct ec_codec *ec; } codec[COORD_CACHE];
  void *scratch;
  size_t scratch_len;
  uint8_t *arena; /* the stripe window of the request being served */
  size_t arena_len;
};

struct coord {
  struct coord_opts o;
  char control[128];
  struct coord_worker *w;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct coord_job *jobs; /* ring of o.queue */
  unsigned head, n;
  bool stopping;
};

struct coord_job {
  int fd;
  uint64_t id;
  Medshard__DataRequest *req;
};

/* The cluster map (refreshed when older than 2 s, or when `force`). NULL
 * when the control port does not answer. */
const Medshard__CtlResponse *coord_map(struct coord_worker *w, bool force);
const Medshard__NodeInfo *coord_node(struct coord_worker *w, uint32_t id);
struct ec_codec *coord_codec(struct coord_worker *w, int k, int m);
/* k+m targets for a new object: out[i] = node id for shard i. 0,
 * MSD_ENODES (fewer usable nodes than shards), MSD_EUNAVAILABLE. */
int coord_place(struct coord_worker *w, int k, int m, const uint8_t oid[16], uint32_t *out);

/* The worker's stripe arena, at least `need` bytes (64-byte aligned):
 * allocated once and reused by every request, so requests do not fault
 * in fresh pages (or grow memory) one after another. NULL if out of
 * memory. */
uint8_t *coord_arena(struct coord_worker *w, size_t need);
/* Stripes in flight for a request of `stripes` stripes of `per_stripe`
 * bytes: as many as COORD_WINDOW_BYTES holds, 2..8, never more than the
 * request has (at least 1). */
unsigned coord_window(size_t per_stripe, uint64_t stripes);

/* One response frame on the client's socket, blocking (outside a
 * request's io_uring traffic). */
int coord_respond(int fd, uint64_t id, Medshard__DataResponse *r);
/* An error answer, then the connection is drained briefly (so the client
 * reads the answer, not a reset) and closed. */
void coord_refuse(int fd, uint64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- coord_hash.c: a SHA-256 thread per worker ----
 * The worker queues a request's bytes in order and goes on with its
 * stripes; the thread digests them. A queued span is borrowed: it must stay
 * unchanged until coord_hash_done has passed its end (or until
 * coord_hash_cancel returns). Every function is for the worker's thread. */

/* Starts the thread; `wake` is the worker's ring, woken (cio_wake) after
 * every span digested. *out is the caller's until coord_hash_stop.
 * 0, -ENOMEM or -errno from pthread_create. */
int coord_hash_start(struct cio *wake, struct coord_hash **out);
/* Stops and joins the thread (queued spans are dropped) and frees it. */
void coord_hash_stop(struct coord_hash *h);
/* A new digest (waits for the previous request's spans, if any). */
void coord_hash_reset(struct coord_hash *h);
/* Queues len bytes at p, the request's next; may wait (without spinning)
 * while 64 spans are queued. */
void coord_hash_push(struct coord_hash *h, const uint8_t *p, size_t len);
/* Bytes digested since the reset: every span ending at or before this
 * offset of the request's bytes may be reused. */
uint64_t coord_hash_done(struct coord_hash *h);
/* Waits for every queued span, then writes the SHA-256 of all of them. */
void coord_hash_final(struct coord_hash *h, uint8_t out[32]);
/* Drops the queued spans and waits for the one in hand (a failed request,
 * before its memory is reused); the digest is then garbage until reset. */
void coord_hash_cancel(struct coord_hash *h);

void coord_put(struct coord_worker *w, struct coord_job *j);
void coord_get(struct coord_worker *w, struct coord_job *j);

#endif
