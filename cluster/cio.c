/* Coordinator I/O over one io_uring (cio.h). */
#include "cluster/cio.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sock.h"

#define POOL_MAX 64 /* idle node connections kept per worker */

struct pooled {
  int fd;
  char addr[128];
};

struct cio {
  struct io_uring ring;
  struct pooled pool[POOL_MAX];
  unsigned npool;
  struct cio_peer *dead[64]; /* failed with nothing in flight: flush next run */
  unsigned ndead;
  /* cio_wake: another thread writes the eventfd; a read of it stays armed
   * in the ring (its user_data is &wake_val, which no peer can be). */
  int wake_fd;
  bool wake_armed;
  uint64_t wake_val;
};

/* user_data: the peer's address with the low bit saying which side. */
#define TAG_TX 1u

int cio_create(struct cio **out)
{
  struct cio *io = msd_calloc(1, sizeof *io);
  if (io == NULL)
    return -ENOMEM;
  /* Completions are taken only when this thread asks for them, so the
   * kernel never interrupts the worker's blocking control-port calls
   * with task-work (which would make them fail with EINTR). */
  struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
  int rc = io_uring_queue_init_params(256, &io->ring, &p);
  if (rc == -EINVAL) { /* an older kernel: the plain ring still works */
    memset(&p, 0, sizeof p);
    rc = io_uring_queue_init_params(256, &io->ring, &p);
  }
  if (rc != 0) {
    msd_free(io);
    return rc;
  }
  /* Blocking, so the ring's read waits for a write (a non-blocking one
   * would complete at once with -EAGAIN). */
  io->wake_fd = eventfd(0, EFD_CLOEXEC);
  if (io->wake_fd < 0) {
    rc = -errno;
    io_uring_queue_exit(&io->ring);
    msd_free(io);
    return rc;
  }
  *out = io;
  return 0;
}

void cio_wake(struct cio *io)
{
  uint64_t one = 1;
  /* Cannot fail short of a counter overflow (2^64 - 1 wakes). */
  ssize_t n = write(io->wake_fd, &one, sizeof one);
  (void)n;
}

static struct io_uring_sqe *sqe_for(struct cio *io);

static void arm_wake(struct cio *io)
{
  if (io->wake_armed)
    return;
  struct io_uring_sqe *sqe = sqe_for(io);
  io_uring_prep_read(sqe, io->wake_fd, &io->wake_val, sizeof io->wake_val, 0);
  io_uring_sqe_set_data(sqe, &io->wake_val);
  io->wake_armed = true;
}

void cio_destroy(struct cio *io)
{
  if (io == NULL)
    return;
  for (unsigned i = 0; i < io->npool; i++)
    close(io->pool[i].fd);
  io_uring_queue_exit(&io->ring); /* ends the wake read still armed */
  close(io->wake_fd);
  msd_free(io);
}

static struct io_uring_sqe *sqe_for(struct cio *io)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
  if (sqe == NULL) {
    io_uring_submit(&io->ring);
    sqe = io_uring_get_sqe(&io->ring);
  }
  return sqe;
}

static void peer_init(struct cio *io, struct cio_peer *p, int fd, void *sess, cio_frame_fn f,
                      cio_sent_fn s)
{
  uint8_t *msg = p->msg;
  memset(p, 0, sizeof *p);
  p->io = io;
  p->fd = fd;
  p->msg = msg;
  p->sess = sess;
  p->on_frame = f;
  p->on_sent = s;
  p->last_ms = msd_now_ms();
  p->next_id = (uint64_t)p->last_ms << 16;
}

/* A pooled connection to addr that the other side has not closed
 * meanwhile (a restarted node): a stale one would turn a healthy target
 * into a hole on its first frame. */
static int take_pooled(struct cio *io, const char *addr)
{
  for (unsigned i = io->npool; i-- > 0;) {
    if (strcmp(io->pool[i].addr, addr) != 0)
      continue;
    int fd = io->pool[i].fd;
    io->pool[i] = io->pool[--io->npool];
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return fd;
    close(fd); /* closed, reset, or unexpected bytes */
  }
  return -1;
}

int cio_peer_open(struct cio *io, struct cio_peer *p, uint32_t node, const char *addr,
                  int timeout_ms, void *sess, cio_frame_fn on_frame, cio_sent_fn on_sent)
{
  int fd = take_pooled(io, addr);
  if (fd < 0) {
    int rc = msd_sock_connect(addr, timeout_ms, &fd);
    if (rc != 0)
      return rc;
    /* io_uring would hand EAGAIN back for a non-blocking socket. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  }
  if (p->msg == NULL && (p->msg = msd_malloc(WIRE_MSG_MAX)) == NULL) {
    close(fd);
    return -ENOMEM;
  }
  peer_init(io, p, fd, sess, on_frame, on_sent);
  p->node = node;
  snprintf(p->addr, sizeof p->addr, "%s", addr);
  p->rx_kind = WIRE_RESPONSE;
  return 0;
}

void cio_peer_adopt(struct cio *io, struct cio_peer *p, int fd, void *sess, cio_frame_fn on_frame,
                    cio_sent_fn on_sent)
{
  if (p->msg == NULL)
    p->msg = msd_malloc(WIRE_MSG_MAX);
  peer_init(io, p, fd, sess, on_frame, on_sent);
  p->rx_kind = WIRE_REQUEST;
  if (p->msg == NULL)
    cio_fail(p, "out of memory");
}

/* ---- sending ---- */

static void arm_send(struct cio_peer *p)
{
  struct cio_out *o = &p->out[p->out_head];
  struct io_uring_sqe *sqe = sqe_for(p->io);
  if (o->done < o->head_len)
    io_uring_prep_send(sqe, p->fd, o->head + o->done, o->head_len - o->done,
                       MSG_NOSIGNAL | (o->payload_len ? MSG_MORE : 0));
  else
    io_uring_prep_send(sqe, p->fd, o->payload + (o->done - o->head_len),
                       o->payload_len - (o->done - o->head_len), MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, (void *)((uintptr_t)p | TAG_TX));
  p->tx_armed = true;
  p->inflight++;
}

int cio_send(struct cio_peer *p, uint8_t kind, uint64_t *id, const uint8_t *msg, size_t msg_len,
             const uint8_t *payload, size_t payload_len, void *tag)
{
  if (p->dead)
    return MSD_ESTATE;
  if (p->out_n == CIO_QUEUE || msg_len > sizeof p->out[0].head - WIRE_HEADER_BYTES)
    return MSD_EWINDOW;
  struct cio_out *o = &p->out[(p->out_head + p->out_n) % CIO_QUEUE];
  struct wire_header h = {.kind = kind,
                          .request_id = kind == WIRE_REQUEST ? ++p->next_id : *id,
                          .msg_len = (uint32_t)msg_len,
                          .payload_len = (uint32_t)payload_len};
  if (kind == WIRE_REQUEST && id != NULL)
    *id = h.request_id;
  wire_encode(&h, o->head);
  memcpy(o->head + WIRE_HEADER_BYTES, msg, msg_len);
  o->head_len = WIRE_HEADER_BYTES + msg_len;
  o->payload = payload;
  o->payload_len = payload_len;
  o->done = 0;
  o->tag = tag;
  p->out_n++;
  if (!p->tx_armed)
    arm_send(p);
  return 0;
}

static void on_send(struct cio_peer *p, int res)
{
  p->tx_armed = false;
  if (p->dead)
    return;
  if (res <= 0) {
    cio_fail(p, res == 0 ? "connection closed" : strerror(-res));
    return;
  }
  p->last_ms = msd_now_ms();
  struct cio_out *o = &p->out[p->out_head];
  o->done += (size_t)res;
  if (o->done == o->head_len + o->payload_len) {
    void *tag = o->tag;
    p->out_head = (p->out_head + 1) % CIO_QUEUE;
    p->out_n--;
    p->on_sent(p->sess, p, tag, 0);
  }
  if (p->out_n > 0 && !p->tx_armed && !p->dead)
    arm_send(p);
}

/* ---- receiving ---- */

/* Where the next received bytes of the current part go, and how many. */
static uint8_t *rx_room(struct cio_peer *p, size_t *len)
{
  if (p->rx_part == 0) {
    *len = WIRE_HEADER_BYTES - p->have;
    return p->rx_hdr + p->have;
  }
  if (p->rx_part == 1) {
    *len = p->h.msg_len - p->have;
    return p->msg + p->have;
  }
  const struct cio_in *in = &p->in[p->in_head];
  size_t first = in->cap < p->h.payload_len ? in->cap : p->h.payload_len;
  if (p->have < first) { /* a recv never crosses into dst2: it is not adjacent */
    *len = first - p->have;
    return in->dst + p->have;
  }
  *len = p->h.payload_len - p->have;
  return in->dst2 + (p->have - first);
}

static void arm_recv(struct cio_peer *p)
{
  size_t len;
  uint8_t *into = rx_room(p, &len);
  struct io_uring_sqe *sqe = sqe_for(p->io);
  io_uring_prep_recv(sqe, p->fd, into, len, 0);
  io_uring_sqe_set_data(sqe, p);
  p->rx_armed = true;
  p->inflight++;
}

int cio_expect(struct cio_peer *p, uint8_t *dst, size_t cap, void *tag)
{
  return cio_expect_split(p, dst, cap, NULL, 0, tag);
}

int cio_expect_split(struct cio_peer *p, uint8_t *dst, size_t cap, uint8_t *dst2, size_t cap2,
                     void *tag)
{
  if (p->dead)
    return MSD_ESTATE;
  if (p->in_n == CIO_QUEUE)
    return MSD_EWINDOW;
  p->in[(p->in_head + p->in_n) % CIO_QUEUE] = (struct cio_in){dst, dst2, cap, cap2, tag};
  p->in_n++;
  if (!p->rx_armed) {
    p->rx_part = 0;
    p->have = 0;
    arm_recv(p);
  }
  return 0;
}

unsigned cio_pending(const struct cio_peer *p)
{
  return p->out_n + p->in_n;
}

/* The current part is complete: move to the next, or deliver. */
static void rx_part_done(struct cio_peer *p)
{
  p->have = 0;
  if (p->rx_part == 0) {
    const char *why = NULL;
    const struct cio_in *in = &p->in[p->in_head];
    int rc = wire_decode(p->rx_hdr, (uint32_t)(in->cap + in->cap2), &p->h, &why);
    if (rc == 0 && p->h.kind != p->rx_kind)
      why = "a frame of the wrong kind", rc = MSD_EFRAME;
    if (rc != 0) {
      cio_fail(p, why);
      return;
    }
    p->rx_part = 1;
    if (p->h.msg_len > 0)
      return;
  }
  if (p->rx_part == 1) {
    p->rx_part = 2;
    if (p->h.payload_len > 0)
      return;
  }
  struct cio_in in = p->in[p->in_head];
  p->in_head = (p->in_head + 1) % CIO_QUEUE;
  p->in_n--;
  p->rx_part = 0;
  p->on_frame(p->sess, p, in.tag, 0, &p->h, p->msg);
}

static void on_recv(struct cio_peer *p, int res)
{
  p->rx_armed = false;
  if (p->dead)
    return;
  if (res <= 0) {
    cio_fail(p, res == 0 ? "connection closed" : strerror(-res));
    return;
  }
  p->last_ms = msd_now_ms();
  p->have += (size_t)res;
  size_t want = p->rx_part == 0 ? WIRE_HEADER_BYTES
                : p->rx_part == 1 ? p->h.msg_len : p->h.payload_len;
  if (p->have == want)
    rx_part_done(p);
  if (!p->dead && !p->rx_armed && p->in_n > 0)
    arm_recv(p);
}

/* ---- failure and release ---- */

void cio_fail(struct cio_peer *p, const char *why)
{
  if (p->dead)
    return;
  p->dead = true;
  snprintf(p->why, sizeof p->why, "%s", why ? why : "failed");
  if (p->fd >= 0)
    shutdown(p->fd, SHUT_RDWR);
  struct cio *io = p->io;
  if (io == NULL) /* never opened (its connect failed): nothing queued */
    return;
  if (p->inflight == 0 && io->ndead < sizeof io->dead / sizeof io->dead[0])
    io->dead[io->ndead++] = p;
}

static void forget_dead(struct cio *io, const struct cio_peer *p)
{
  for (unsigned i = io->ndead; i-- > 0;)
    if (io->dead[i] == p)
      io->dead[i] = io->dead[--io->ndead];
}

/* A dead peer with nothing in flight: every queued frame fails. */
static void flush_dead(struct cio_peer *p)
{
  while (p->out_n > 0) {
    void *tag = p->out[p->out_head].tag;
    p->out_head = (p->out_head + 1) % CIO_QUEUE;
    p->out_n--;
    p->on_sent(p->sess, p, tag, MSD_EUNAVAILABLE);
  }
  while (p->in_n > 0) {
    void *tag = p->in[p->in_head].tag;
    p->in_head = (p->in_head + 1) % CIO_QUEUE;
    p->in_n--;
    p->on_frame(p->sess, p, tag, MSD_EUNAVAILABLE, NULL, NULL);
  }
}

static void flush_all_dead(struct cio *io)
{
  while (io->ndead > 0)
    flush_dead(io->dead[--io->ndead]);
}

int cio_run(struct cio *io, int timeout_ms)
{
  flush_all_dead(io);
  arm_wake(io);
  struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                 .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
  struct io_uring_cqe *cqe;
  int rc = io_uring_submit_and_wait_timeout(&io->ring, &cqe, 1, &ts, NULL);
  if (rc < 0 && rc != -ETIME && rc != -EINTR)
    return rc;
  unsigned head, n = 0, skipped = 0;
  /* Collect first: a callback may queue new work (and so new SQEs). */
  struct { struct cio_peer *p; bool tx; int res; } done[256];
  io_uring_for_each_cqe(&io->ring, head, cqe) {
    if (n == 256)
      break;
    uintptr_t ud = (uintptr_t)io_uring_cqe_get_data(cqe);
    if (ud == 0) { /* a cancel request's own completion */
      skipped++;
      continue;
    }
    if (ud == (uintptr_t)&io->wake_val) { /* woken: the read is re-armed next run */
      io->wake_armed = cqe->res < 0 && cqe->res != -EINTR; /* else it would spin */
      if (io->wake_armed) /* UNTESTED: an eventfd read does not fail */
        msd_log(MSD_LOG_ERROR, "coordinator: its wake-up read failed: %s", strerror(-cqe->res));
      skipped++;
      continue;
    }
    done[n].p = (struct cio_peer *)(ud & ~(uintptr_t)TAG_TX);
    done[n].tx = (ud & TAG_TX) != 0;
    done[n].res = cqe->res;
    n++;
  }
  io_uring_cq_advance(&io->ring, n + skipped);
  for (unsigned i = 0; i < n; i++) {
    struct cio_peer *p = done[i].p;
    p->inflight--;
    if (done[i].tx)
      on_send(p, done[i].res);
    else
      on_recv(p, done[i].res);
    if (p->dead && p->inflight == 0)
      flush_dead(p);
  }
  flush_all_dead(io);
  return 0;
}

void cio_peer_release(struct cio_peer *p)
{
  if (p->io == NULL)
    return;
  struct cio *io = p->io;
  if (cio_pending(p) > 0 || p->inflight > 0)
    cio_fail(p, "released while busy");
  forget_dead(io, p);
  int64_t give_up = msd_now_ms() + 5000;
  while (p->inflight > 0 && msd_now_ms() < give_up)
    if (cio_run(io, 100) != 0)
      break;
  if (p->inflight > 0) /* UNTESTED: a shut-down socket completes at once */
    msd_log(MSD_LOG_ERROR, "coordinator: a connection to %s would not let go", p->addr);
  if (!p->dead && p->node != 0 && io->npool < POOL_MAX) {
    io->pool[io->npool].fd = p->fd;
    snprintf(io->pool[io->npool].addr, sizeof io->pool[0].addr, "%s", p->addr);
    io->npool++;
  } else if (p->fd >= 0 && p->inflight == 0) {
    close(p->fd);
  }
  p->fd = -1;
  p->io = NULL;
}

int cio_peer_detach(struct cio_peer *p)
{
  struct cio *io = p->io;
  if (io == NULL)
    return -1;
  forget_dead(io, p);
  p->out_n = p->in_n = 0; /* no callbacks: the owner is done with them */
  if (p->inflight > 0) {
    struct io_uring_sqe *sqe = sqe_for(io);
    io_uring_prep_cancel(sqe, p, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(sqe, NULL);
    sqe = sqe_for(io);
    io_uring_prep_cancel(sqe, (void *)((uintptr_t)p | TAG_TX), IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(sqe, NULL);
  }
  int64_t give_up = msd_now_ms() + 2000;
  while (p->inflight > 0 && msd_now_ms() < give_up)
    if (cio_run(io, 100) != 0)
      break;
  int fd = p->inflight == 0 ? p->fd : -1;
  if (fd < 0 && p->fd >= 0)
    shutdown(p->fd, SHUT_RDWR); /* UNTESTED: cancelled operations end at once */
  p->fd = -1;
  p->io = NULL;
  return fd;
}
