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

struct coord_worker {
  struct coord *c;
  unsigned index;
  pthread_t thread;
  struct cio *io;
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

void coord_put(struct coord_worker *w, struct coord_job *j);
void coord_get(struct coord_worker *w, struct coord_job *j);

#endif
