/* The io_uring engine: one ring per thread, a registered buffer pool,
 * batched submissions and completions dispatched to per-request callbacks.
 * The same interface runs on plain pread/pwrite/fdatasync when io_uring is
 * unavailable or when asked to (the fallback path tests also exercise). */
#ifndef MSD_STORAGE_RING_H
#define MSD_STORAGE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ring_op { RING_OP_READ = 1, RING_OP_WRITE, RING_OP_FSYNC };

/* One I/O. The caller owns the struct and keeps it (and buf) alive until its
 * callback runs; `op` comes first so a completion can be checked by cast. */
struct ring_req {
  enum ring_op op;
  int fd;
  unsigned char *buf;
  size_t len;
  uint64_t off;
  int buf_index; /* registered buffer the bytes live in, or -1 */
  /* Filled in by the ring: */
  size_t done;   /* bytes transferred (a read stops short at end of file) */
  int res;       /* 0 or -errno once complete */
  void (*cb)(struct ring_req *req); /* may queue new requests */
  void *ctx;
  /* Private to the ring. */
  struct ring_req *next_;
  struct ring_req *link_; /* the other request of a linked pair */
  bool link_head_;        /* this is the first of the pair */
  bool retrying_;         /* a linked head waiting to resubmit the pair */
};

struct ring_opts {
  unsigned entries;   /* submission queue size; default 256 */
  unsigned nbufs;     /* registered buffers in the pool; default 16 */
  size_t buf_size;    /* bytes each; default 1 MiB */
  bool fallback;      /* force the pread/pwrite path */
};

struct ring;

/* Creates a ring (io_uring unless opts->fallback, or io_uring_setup fails)
 * and its buffer pool. Registering the pool needs RLIMIT_MEMLOCK headroom;
 * without it the ring still works, on unregistered buffers. *out is owned by
 * the caller (ring_destroy, only with nothing in flight). 0 or -errno. */
int ring_create(const struct ring_opts *opts, struct ring **out);
void ring_destroy(struct ring *r);

bool ring_is_fallback(const struct ring *r);
bool ring_has_fixed_buffers(const struct ring *r);

/* Takes a free pool buffer (buf_size bytes, 4 KiB aligned), or NULL when all
 * are in use; *index identifies it for ring_buf_put and for req->buf_index. */
unsigned char *ring_buf_get(struct ring *r, int *index);
void ring_buf_put(struct ring *r, int index);
size_t ring_buf_size(const struct ring *r);
unsigned ring_buf_free(const struct ring *r);

/* Queues a request; it is submitted with the next batch (ring_run). */
void ring_queue(struct ring *r, struct ring_req *req);

/* Queues `first` and then `then`, which starts only after `first` fully
 * succeeds (IORING linked SQEs); if `first` fails, `then` completes with
 * -ECANCELED. Used to order a write before its fdatasync. */
void ring_queue_linked(struct ring *r, struct ring_req *first, struct ring_req *then);

/* Submits everything queued in one batch and dispatches completions until
 * nothing is in flight or queued. Callbacks may queue more requests but must
 * not call ring_drain. Short reads and writes are resubmitted for the rest,
 * -EAGAIN is requeued, -EOPNOTSUPP falls back to pread/pwrite. Returns 0 or
 * -errno for a failure of the ring itself (request errors go to req->res). */
int ring_drain(struct ring *r);

/* For an event loop that drives the ring without blocking: */

/* The ring's descriptor, readable (POLLIN) while completions wait to be
 * reaped; -1 on the fallback path, where ring_poll does the I/O itself. */
int ring_fd(const struct ring *r);

/* Submits what is queued and dispatches the completions already there,
 * never waiting (the fallback path performs everything queued). Callbacks
 * may queue more; those are submitted before it returns. The number of
 * completions dispatched, or -errno for a failure of the ring itself. */
int ring_poll(struct ring *r);

/* Requests queued or in flight. */
bool ring_busy(const struct ring *r);

/* Counters for tests and metrics. */
struct ring_stats {
  uint64_t submitted, completed, short_resubmits, eagain_requeues, batches;
};
void ring_stats(const struct ring *r, struct ring_stats *out);

#endif
