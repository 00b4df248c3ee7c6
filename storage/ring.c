/* io_uring engine and its pread/pwrite fallback (see ring.h). */
#include "storage/ring.h"

#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"

struct ring {
  bool fallback;
  bool fixed; /* pool registered with the kernel */
  struct io_uring uring;
  struct ring_req *head, *tail; /* queued, not yet submitted */
  unsigned inflight;            /* SQEs submitted, CQEs not yet reaped */
  /* Buffer pool. */
  unsigned nbufs;
  size_t buf_size;
  unsigned char *pool;
  int *free_stack;
  unsigned nfree;
  struct ring_stats stats;
};


bool ring_is_fallback(const struct ring *r) { return r->fallback; }
bool ring_has_fixed_buffers(const struct ring *r) { return r->fixed; }
size_t ring_buf_size(const struct ring *r) { return r->buf_size; }
unsigned ring_buf_free(const struct ring *r) { return r->nfree; }
void ring_stats(const struct ring *r, struct ring_stats *out) { *out = r->stats; }

unsigned char *ring_buf_get(struct ring *r, int *index)
{
  if (r->nfree == 0)
    return NULL;
  int i = r->free_stack[--r->nfree];
  *index = i;
  return r->pool + (size_t)i * r->buf_size;
}

void ring_buf_put(struct ring *r, int index)
{
  assert(index >= 0 && (unsigned)index < r->nbufs && r->nfree < r->nbufs);
  r->free_stack[r->nfree++] = index;
}

/* Registers the pool so reads and writes skip per-I/O page pinning. The
 * kernel charges it to RLIMIT_MEMLOCK (unless CAP_IPC_LOCK): when that is
 * too small, keep going on plain buffers rather than fail. */
static void register_pool(struct ring *r)
{
  struct rlimit rl;
  struct iovec *iov = msd_calloc(r->nbufs, sizeof *iov);
  if (iov == NULL)
    return;
  for (unsigned i = 0; i < r->nbufs; i++)
    iov[i] = (struct iovec){r->pool + (size_t)i * r->buf_size, r->buf_size};
  int rc = io_uring_register_buffers(&r->uring, iov, r->nbufs);
  msd_free(iov);
  if (rc == 0) {
    r->fixed = true;
    return;
  }
  getrlimit(RLIMIT_MEMLOCK, &rl);
  msd_log(MSD_LOG_WARN,
          "io_uring: cannot register %u x %zu-byte buffers (%s; RLIMIT_MEMLOCK %llu bytes): "
          "using unregistered buffers",
          r->nbufs, r->buf_size, strerror(-rc), (unsigned long long)rl.rlim_cur);
}

int ring_create(const struct ring_opts *opts, struct ring **out)
{
  struct ring_opts o = opts ? *opts : (struct ring_opts){0};
  if (o.entries == 0)
    o.entries = 256;
  if (o.nbufs == 0)
    o.nbufs = 16;
  if (o.buf_size == 0)
    o.buf_size = 1 << 20;
  o.buf_size = (o.buf_size + 4095) & ~(size_t)4095;

  struct ring *r = msd_calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  r->nbufs = o.nbufs;
  r->buf_size = o.buf_size;
  r->pool = msd_aligned_alloc(4096, (size_t)o.nbufs * o.buf_size);
  r->free_stack = msd_calloc(o.nbufs, sizeof *r->free_stack);
  if (r->pool == NULL || r->free_stack == NULL) {
    ring_destroy(r);
    return -ENOMEM;
  }
  for (unsigned i = 0; i < o.nbufs; i++)
    r->free_stack[r->nfree++] = (int)(o.nbufs - 1 - i);

  r->fallback = true;
  if (!o.fallback) {
    int rc = io_uring_queue_init(o.entries, &r->uring, 0);
    if (rc == 0) {
      r->fallback = false;
      register_pool(r);
    } else {
      msd_log(MSD_LOG_WARN, "io_uring unavailable (%s): using pread/pwrite", strerror(-rc));
    }
  }
  *out = r;
  return 0;
}

void ring_destroy(struct ring *r)
{
  if (r == NULL)
    return;
  assert(r->inflight == 0);
  if (!r->fallback)
    io_uring_queue_exit(&r->uring);
  msd_free(r->free_stack);
  msd_free(r->pool);
  msd_free(r);
}

static void push(struct ring *r, struct ring_req *req)
{
  req->next_ = NULL;
  if (r->tail)
    r->tail->next_ = req;
  else
    r->head = req;
  r->tail = req;
}

static void reset(struct ring_req *req)
{
  req->done = 0;
  req->res = 0;
  req->link_ = NULL;
  req->link_head_ = req->retrying_ = false;
}

void ring_queue(struct ring *r, struct ring_req *req)
{
  reset(req);
  push(r, req);
}

void ring_queue_linked(struct ring *r, struct ring_req *first, struct ring_req *then)
{
  reset(first);
  reset(then);
  first->link_ = then;
  first->link_head_ = true;
  then->link_ = first; /* back pointer, so the tail can find its head */
  push(r, first);
}

static bool is_link_head(const struct ring_req *req)
{
  return req->link_head_;
}

/* Performs one request synchronously (fallback path, or -EOPNOTSUPP). */
static int do_sync(struct ring_req *req)
{
  while (req->op != RING_OP_FSYNC && req->done < req->len) {
    ssize_t n = req->op == RING_OP_READ
                    ? pread(req->fd, req->buf + req->done, req->len - req->done,
                            (off_t)(req->off + req->done))
                    : pwrite(req->fd, req->buf + req->done, req->len - req->done,
                             (off_t)(req->off + req->done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break; /* end of file */
    req->done += (size_t)n;
  }
  if (req->op == RING_OP_FSYNC && fdatasync(req->fd) != 0)
    return -errno;
  return 0;
}

static void finish(struct ring *r, struct ring_req *req, int res)
{
  if (res == 0 && msd_fault_hit())
    res = -EIO; /* injected I/O failure */
  req->res = res;
  r->stats.completed++;
  if (req->cb)
    req->cb(req);
}

static int drain_fallback(struct ring *r)
{
  while (r->head) {
    struct ring_req *req = r->head;
    r->head = req->next_;
    if (r->head == NULL)
      r->tail = NULL;
    r->stats.submitted++;
    struct ring_req *then = is_link_head(req) ? req->link_ : NULL;
    finish(r, req, do_sync(req));
    if (then) {
      r->stats.submitted++;
      finish(r, then, req->res == 0 ? do_sync(then) : -ECANCELED);
    }
  }
  return 0;
}

static void prep(struct ring *r, struct io_uring_sqe *sqe, struct ring_req *req)
{
  unsigned char *p = req->buf + req->done;
  unsigned n = (unsigned)(req->len - req->done);
  uint64_t off = req->off + req->done;
  bool fixed = r->fixed && req->buf_index >= 0;
  switch (req->op) {
  case RING_OP_READ:
    if (fixed)
      io_uring_prep_read_fixed(sqe, req->fd, p, n, off, req->buf_index);
    else
      io_uring_prep_read(sqe, req->fd, p, n, off);
    break;
  case RING_OP_WRITE:
    if (fixed)
      io_uring_prep_write_fixed(sqe, req->fd, p, n, off, req->buf_index);
    else
      io_uring_prep_write(sqe, req->fd, p, n, off);
    break;
  case RING_OP_FSYNC:
    io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
    break;
  }
  io_uring_sqe_set_data(sqe, req);
  r->stats.submitted++;
  r->inflight++;
}

/* Moves queued requests into SQEs; a linked pair always goes in together. */
static int submit_queued(struct ring *r)
{
  int rc = 0;
  while (r->head) {
    struct ring_req *req = r->head;
    unsigned need = is_link_head(req) ? 2 : 1;
    if (io_uring_sq_space_left(&r->uring) < need) {
      rc = io_uring_submit(&r->uring);
      if (rc < 0)
        return rc;
      continue;
    }
    r->head = req->next_;
    if (r->head == NULL)
      r->tail = NULL;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
    prep(r, sqe, req);
    if (need == 2) {
      /* Why linked: the fdatasync must not start before the write it makes
       * durable has completed; the kernel orders linked SQEs for us. */
      sqe->flags |= IOSQE_IO_LINK;
      prep(r, io_uring_get_sqe(&r->uring), req->link_);
    }
  }
  r->stats.batches++;
  rc = io_uring_submit(&r->uring);
  return rc < 0 ? rc : 0;
}

/* A linked head that must be resubmitted (short or -EAGAIN) cannot go again
 * until the kernel has cancelled its tail, or the tail would be in flight
 * twice: it waits, flagged, for the tail's -ECANCELED completion. */
static void complete_link_tail(struct ring *r, struct ring_req *req, int res)
{
  struct ring_req *head = req->link_;
  if (head->retrying_) {
    head->retrying_ = false;
    r->stats.short_resubmits++;
    push(r, head); /* link_ fields still pair them */
    return;
  }
  req->link_ = NULL;
  if (res == -EAGAIN) {
    r->stats.eagain_requeues++;
    push(r, req);
    return;
  }
  finish(r, req, res < 0 ? res : 0);
}

static void complete(struct ring *r, struct ring_req *req, int res)
{
  assert(req->op == RING_OP_READ || req->op == RING_OP_WRITE || req->op == RING_OP_FSYNC);
  r->inflight--;
  if (req->link_ != NULL && !req->link_head_) {
    complete_link_tail(r, req, res);
    return;
  }
  if (res == -EOPNOTSUPP) {
    res = do_sync(req); /* UNTESTED: regular files support every op we use */
  } else if (res == -EAGAIN) {
    r->stats.eagain_requeues++;
    if (req->link_head_)
      req->retrying_ = true;
    else
      push(r, req);
    return;
  } else if (res > 0 && req->op != RING_OP_FSYNC) {
    req->done += (size_t)res;
    if (req->done < req->len) {
      if (req->link_head_) {
        req->retrying_ = true;
      } else {
        r->stats.short_resubmits++;
        push(r, req);
      }
      return;
    }
    res = 0;
  } else if (res == 0 && req->op == RING_OP_WRITE && req->done < req->len) {
    res = -EIO; /* UNTESTED: a regular-file write never returns 0 */
  }
  finish(r, req, res < 0 ? res : 0);
}

int ring_fd(const struct ring *r)
{
  return r->fallback ? -1 : r->uring.ring_fd;
}

bool ring_busy(const struct ring *r)
{
  return r->head != NULL || r->inflight > 0;
}

/* Dispatches the completions already in the queue; how many. */
static unsigned reap_ready(struct ring *r)
{
  struct io_uring_cqe *cqe;
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&r->uring, head, cqe)
  {
    complete(r, io_uring_cqe_get_data(cqe), cqe->res);
    seen++;
  }
  io_uring_cq_advance(&r->uring, seen);
  return seen;
}

int ring_poll(struct ring *r)
{
  if (r->fallback) {
    uint64_t before = r->stats.completed;
    int rc = drain_fallback(r);
    return rc < 0 ? rc : (int)(r->stats.completed - before);
  }
  int done = 0;
  for (;;) {
    if (r->head) {
      int rc = submit_queued(r);
      if (rc < 0)
        return rc;
    }
    unsigned n = reap_ready(r);
    done += (int)n;
    if (n == 0 && r->head == NULL)
      return done;
  }
}

int ring_drain(struct ring *r)
{
  if (r->fallback)
    return drain_fallback(r);
  while (r->head || r->inflight) {
    if (r->head) {
      int rc = submit_queued(r);
      if (rc < 0)
        return rc;
    }
    struct io_uring_cqe *cqe;
    int rc = io_uring_wait_cqe(&r->uring, &cqe);
    if (rc == -EINTR)
      continue;
    if (rc < 0)
      return rc;
    reap_ready(r);
  }
  return 0;
}
