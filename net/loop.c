/* The data plane's io_uring network loop (loop.h).
 *
 * A connection reads a 24-byte header into itself, then takes one pool
 * buffer for the whole request ([header][message][payload]) and reads the
 * rest into it; the reply is built in the same buffer and sent from it, and
 * only then is the buffer returned. So each request in progress holds
 * exactly one pool buffer and nothing else grows. */
#include "net/loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/wire.h"

enum op_kind { OP_ACCEPT = 1, OP_EVENT, OP_PAUSE, OP_RECV, OP_SEND, OP_CANCEL, OP_AUX };

/* What a completion belongs to: its address is the SQE's user_data. */
struct op {
  enum op_kind kind;
  struct net_conn *c;
};

enum conn_state { C_HEADER, C_WAIT_BUF, C_BODY, C_HANDLER, C_SEND, C_CLOSING };

struct net_conn {
  struct net_loop *l;
  int fd;
  enum conn_state st;
  uint8_t hdr[WIRE_HEADER_BYTES];
  struct wire_header h;
  size_t have;   /* bytes of the current part received (or sent) */
  size_t want;   /* bytes the current part needs */
  uint8_t *buf;  /* the request's pool buffer, or NULL */
  bool held;     /* the handler owes this request an answer */
  struct iovec iov[2];  /* the reply: header and message, then the payload */
  struct msghdr mh;
  unsigned inflight;
  struct op rx, tx;
  struct net_conn *next, *prev;  /* every connection */
  struct net_conn *wait_next;    /* FIFO of connections waiting for a buffer */
};

struct net_loop {
  struct io_uring ring;
  int listen_fd, event_fd;
  uint16_t port;
  struct net_opts o;
  size_t buf_size;               /* header + message + payload bound */
  uint8_t *pool;                 /* pool_buffers x buf_size */
  uint8_t **free_bufs;
  unsigned nfree;
  net_handler handler;
  void *ctx;
  struct net_conn *conns, *wait_head, *wait_tail;
  struct op accept_op, event_op, pause_op, cancel_op, aux_op;
  int aux_fd;
  net_aux_fn aux;
  void *aux_ctx;
  bool aux_armed;
  struct sockaddr_in peer;
  socklen_t peer_len;
  uint64_t event_val;
  struct __kernel_timespec pause;
  bool stopping, accept_armed, ring_ready;
  unsigned loop_inflight;        /* accept, eventfd read, pause */
  struct net_stats stats;
};

static struct io_uring_sqe *sqe_for(struct net_loop *l)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
  if (sqe == NULL) { /* the queue is full: make room */
    io_uring_submit(&l->ring);
    sqe = io_uring_get_sqe(&l->ring);
  }
  return sqe;
}

static void arm_accept(struct net_loop *l)
{
  struct io_uring_sqe *sqe = sqe_for(l);
  l->peer_len = sizeof l->peer;
  io_uring_prep_accept(sqe, l->listen_fd, (struct sockaddr *)&l->peer, &l->peer_len,
                       SOCK_CLOEXEC);
  io_uring_sqe_set_data(sqe, &l->accept_op);
  l->accept_armed = true;
  l->loop_inflight++;
}

static void arm_event(struct net_loop *l)
{
  struct io_uring_sqe *sqe = sqe_for(l);
  io_uring_prep_read(sqe, l->event_fd, &l->event_val, sizeof l->event_val, 0);
  io_uring_sqe_set_data(sqe, &l->event_op);
  l->loop_inflight++;
}

/* ---- connections ---- */

static void arm_recv(struct net_conn *c, uint8_t *into)
{
  struct io_uring_sqe *sqe = sqe_for(c->l);
  io_uring_prep_recv(sqe, c->fd, into + c->have, c->want - c->have, 0);
  io_uring_sqe_set_data(sqe, &c->rx);
  c->inflight++;
}

/* Sends what is left of the reply's two parts (the message in the buffer,
 * the payload where it was built) in one sendmsg. */
static void arm_send(struct net_conn *c)
{
  struct io_uring_sqe *sqe = sqe_for(c->l);
  c->mh = (struct msghdr){.msg_iov = c->iov[0].iov_len > 0 ? &c->iov[0] : &c->iov[1],
                          .msg_iovlen = c->iov[0].iov_len > 0 ? 2 : 1};
  io_uring_prep_sendmsg(sqe, c->fd, &c->mh, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, &c->tx);
  c->inflight++;
}

/* Drops n sent bytes from the front of the reply's parts. */
static void sent_bytes(struct net_conn *c, size_t n)
{
  for (int i = 0; i < 2 && n > 0; i++) {
    size_t k = n < c->iov[i].iov_len ? n : c->iov[i].iov_len;
    c->iov[i].iov_base = (uint8_t *)c->iov[i].iov_base + k;
    c->iov[i].iov_len -= k;
    n -= k;
  }
}

static void read_header(struct net_conn *c)
{
  c->st = C_HEADER;
  c->have = 0;
  c->want = WIRE_HEADER_BYTES;
  arm_recv(c, c->hdr);
}

static void buf_put(struct net_loop *l, uint8_t *b)
{
  l->free_bufs[l->nfree++] = b;
}

static void wait_remove(struct net_loop *l, struct net_conn *c)
{
  struct net_conn **p = &l->wait_head, *prev = NULL;
  while (*p != NULL && *p != c) {
    prev = *p;
    p = &(*p)->wait_next;
  }
  if (*p == NULL)
    return;
  *p = c->wait_next;
  if (l->wait_tail == c)
    l->wait_tail = prev;
  c->wait_next = NULL;
}

/* Closes c from the loop's side; a handler holding it still answers. */
static void conn_close(struct net_conn *c, const char *why)
{
  if (c->st == C_CLOSING)
    return;
  if (why != NULL)
    msd_log(MSD_LOG_WARN, "net: connection %d closed: %s", c->fd, why);
  if (c->st == C_WAIT_BUF)
    wait_remove(c->l, c);
  c->st = C_CLOSING;
  /* Pending receives and sends complete (with an error) once the socket is
   * shut down; the connection is freed when the last one has. */
  if (c->fd >= 0)
    shutdown(c->fd, SHUT_RDWR);
}

void net_close(struct net_conn *c, const char *why)
{
  c->held = false;
  conn_close(c, why);
}

int net_detach(struct net_conn *c)
{
  if (c->st != C_HANDLER)
    return MSD_ESTATE;
  c->held = false;
  int fd = c->fd;
  c->fd = -1; /* reap frees the connection and its buffer, not the socket */
  c->st = C_CLOSING;
  return fd;
}

static void buf_release(struct net_loop *l, uint8_t *b);

/* Frees closing connections with nothing in flight. */
static void reap(struct net_loop *l)
{
  struct net_conn *c = l->conns;
  while (c != NULL) {
    struct net_conn *next = c->next;
    if (c->st == C_CLOSING && c->inflight == 0 && !c->held) {
      if (c->prev != NULL)
        c->prev->next = c->next;
      else
        l->conns = c->next;
      if (c->next != NULL)
        c->next->prev = c->prev;
      if (c->buf != NULL)
        buf_release(l, c->buf); /* a waiting connection may take it */
      if (c->fd >= 0)
        close(c->fd);
      l->stats.conns--;
      msd_free(c);
    }
    c = next;
  }
}

static void read_body(struct net_conn *c)
{
  memcpy(c->buf, c->hdr, WIRE_HEADER_BYTES);
  c->st = C_BODY;
  c->have = WIRE_HEADER_BYTES;
  c->want = WIRE_HEADER_BYTES + c->h.msg_len + c->h.payload_len;
  if (c->have < c->want) {
    arm_recv(c, c->buf);
    return;
  }
  c->st = C_HANDLER; /* a frame with no body at all */
  c->held = true;
  struct net_request r = {.id = c->h.request_id, .msg = c->buf + WIRE_HEADER_BYTES};
  c->l->stats.requests++;
  c->l->handler(c->l->ctx, c, &r);
}

/* Hands a free buffer to the first waiting connection, or keeps it. */
static void buf_release(struct net_loop *l, uint8_t *b)
{
  struct net_conn *c = l->wait_head;
  if (c == NULL) {
    buf_put(l, b);
    return;
  }
  l->wait_head = c->wait_next;
  if (l->wait_head == NULL)
    l->wait_tail = NULL;
  c->wait_next = NULL;
  c->buf = b;
  read_body(c);
}

static void got_header(struct net_conn *c)
{
  struct net_loop *l = c->l;
  const char *why;
  int rc = wire_decode(c->hdr, (uint32_t)l->o.buffer_bytes, &c->h, &why);
  if (rc == 0 && c->h.kind != WIRE_REQUEST)
    rc = MSD_EFRAME, why = "response frame sent to a server";
  if (rc != 0) {
    l->stats.bad_frames++;
    conn_close(c, why);
    return;
  }
  if (l->nfree == 0) {
    l->stats.buffer_waits++;
    c->st = C_WAIT_BUF;
    if (l->wait_tail != NULL)
      l->wait_tail->wait_next = c;
    else
      l->wait_head = c;
    l->wait_tail = c;
    return;
  }
  c->buf = l->free_bufs[--l->nfree];
  read_body(c);
}

static void on_recv(struct net_conn *c, int res)
{
  if (c->st == C_CLOSING)
    return;
  if (res <= 0) {
    conn_close(c, res == 0 ? (c->have > 0 || c->st == C_BODY ? "peer closed in the middle of a frame"
                                                               : NULL)
                           : strerror(-res));
    return;
  }
  c->have += (size_t)res;
  if (c->have < c->want) {
    arm_recv(c, c->st == C_HEADER ? c->hdr : c->buf);
    return;
  }
  if (c->st == C_HEADER) {
    got_header(c);
    return;
  }
  c->st = C_HANDLER;
  c->held = true;
  struct net_request r = {.id = c->h.request_id,
                          .msg = c->buf + WIRE_HEADER_BYTES,
                          .msg_len = c->h.msg_len,
                          .payload = c->buf + WIRE_HEADER_BYTES + c->h.msg_len,
                          .payload_len = c->h.payload_len};
  c->l->stats.requests++;
  c->l->handler(c->l->ctx, c, &r);
}

static void on_send(struct net_conn *c, int res)
{
  if (c->st == C_CLOSING)
    return;
  if (res < 0) {
    conn_close(c, strerror(-res));
    return;
  }
  c->have += (size_t)res;
  if (c->have < c->want) {
    sent_bytes(c, (size_t)res);
    arm_send(c);
    return;
  }
  uint8_t *b = c->buf;
  c->buf = NULL;
  read_header(c);
  buf_release(c->l, b);
}

uint8_t *net_reply_area(struct net_conn *c, size_t *cap)
{
  *cap = c->l->o.buffer_bytes;
  return c->buf + WIRE_HEADER_BYTES + WIRE_MSG_MAX;
}

int net_reply(struct net_conn *c, uint64_t id, const uint8_t *msg, size_t msg_len,
              const uint8_t *payload, size_t payload_len)
{
  if (c->st == C_CLOSING && c->held) {
    c->held = false; /* the loop closed it meanwhile: reap frees it now */
    return MSD_ESTATE;
  }
  if (c->st != C_HANDLER)
    return MSD_ESTATE;
  c->held = false;
  if (msg_len > WIRE_MSG_MAX || payload_len > c->l->o.buffer_bytes) {
    conn_close(c, "reply larger than the frame bounds");
    return MSD_EPARAM;
  }
  uint8_t *area = c->buf + WIRE_HEADER_BYTES + WIRE_MSG_MAX;
  bool in_area = payload_len > 0 && payload == area;
  /* The sources may lie in this very buffer (an echo): keep the message
   * aside, move the payload into place, then put the message back. */
  uint8_t *m = msg_len > 0 ? msd_malloc(msg_len) : NULL;
  if (msg_len > 0 && m == NULL) {
    conn_close(c, "out of memory for a reply");
    return -ENOMEM;
  }
  if (msg_len > 0)
    memcpy(m, msg, msg_len);
  if (payload_len > 0 && !in_area)
    memmove(c->buf + WIRE_HEADER_BYTES + msg_len, payload, payload_len);
  if (msg_len > 0)
    memcpy(c->buf + WIRE_HEADER_BYTES, m, msg_len);
  msd_free(m);
  struct wire_header h = {.kind = WIRE_RESPONSE, .request_id = id, .msg_len = (uint32_t)msg_len,
                          .payload_len = (uint32_t)payload_len};
  wire_encode(&h, c->buf);
  c->st = C_SEND;
  c->have = 0;
  c->want = WIRE_HEADER_BYTES + msg_len + payload_len;
  size_t head = WIRE_HEADER_BYTES + msg_len + (in_area ? 0 : payload_len);
  c->iov[0] = (struct iovec){c->buf, head};
  c->iov[1] = (struct iovec){area, in_area ? payload_len : 0};
  arm_send(c);
  return 0;
}

static void on_accept(struct net_loop *l, int res)
{
  l->accept_armed = false;
  if (l->stopping) {
    if (res >= 0)
      close(res);
    return;
  }
  if (res < 0) {
    /* Out of descriptors or similar: pause, do not spin. */
    msd_log(MSD_LOG_WARN, "net: accept: %s; pausing 100 ms", strerror(-res));
    struct io_uring_sqe *sqe = sqe_for(l);
    l->pause = (struct __kernel_timespec){.tv_nsec = 100000000};
    io_uring_prep_timeout(sqe, &l->pause, 0, 0);
    io_uring_sqe_set_data(sqe, &l->pause_op);
    l->loop_inflight++;
    return;
  }
  arm_accept(l);
  struct net_conn *c = l->stats.conns < l->o.max_conns ? msd_calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    l->stats.refused_conns++;
    msd_log(MSD_LOG_WARN, "net: refused a connection: %u open (the limit) or out of memory",
            l->stats.conns);
    close(res);
    return;
  }
  int one = 1;
  setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->l = l;
  c->fd = res;
  c->rx = (struct op){OP_RECV, c};
  c->tx = (struct op){OP_SEND, c};
  c->next = l->conns;
  if (l->conns != NULL)
    l->conns->prev = c;
  l->conns = c;
  l->stats.accepted++;
  l->stats.conns++;
  read_header(c);
}

static void dispatch(struct net_loop *l, struct io_uring_cqe *cqe)
{
  struct op *op = io_uring_cqe_get_data(cqe);
  int res = cqe->res;
  switch (op->kind) {
  case OP_ACCEPT:
    l->loop_inflight--;
    on_accept(l, res);
    break;
  case OP_EVENT:
    l->loop_inflight--;
    l->stopping = true;
    break;
  case OP_PAUSE:
    l->loop_inflight--;
    if (!l->stopping)
      arm_accept(l);
    break;
  case OP_CANCEL:
    l->loop_inflight--;
    break;
  case OP_AUX:
    l->loop_inflight--;
    l->aux_armed = false;
    break;
  case OP_RECV:
    op->c->inflight--;
    on_recv(op->c, res);
    break;
  case OP_SEND:
    op->c->inflight--;
    on_send(op->c, res);
    break;
  }
}

void net_loop_set_aux(struct net_loop *l, int fd, net_aux_fn fn, void *ctx)
{
  l->aux_fd = fd;
  l->aux = fn;
  l->aux_ctx = ctx;
}

/* Watches the auxiliary descriptor; a one-shot poll, armed again each
 * turn, so it reports readiness that is still there (level-triggered). */
static void arm_aux(struct net_loop *l)
{
  if (l->aux_fd < 0 || l->aux_armed)
    return;
  struct io_uring_sqe *sqe = sqe_for(l);
  io_uring_prep_poll_add(sqe, l->aux_fd, POLLIN);
  io_uring_sqe_set_data(sqe, &l->aux_op);
  l->aux_armed = true;
  l->loop_inflight++;
}

static void cancel_op(struct net_loop *l, struct op *op)
{
  struct io_uring_sqe *sqe = sqe_for(l);
  io_uring_prep_cancel(sqe, op, 0);
  io_uring_sqe_set_data(sqe, &l->cancel_op);
  l->loop_inflight++;
}

static void begin_stop(struct net_loop *l)
{
  if (l->accept_armed)
    cancel_op(l, &l->accept_op);
  for (struct net_conn *c = l->conns; c != NULL; c = c->next)
    conn_close(c, NULL);
}

int net_loop_run(struct net_loop *l)
{
  /* The ring is made by the thread that runs it: io_uring sends its
   * task-work notifications to the ring's task, and a blocking syscall
   * with a socket timeout on another thread (a client, the control loop)
   * would come back with EINTR. */
  int rc = io_uring_queue_init(256, &l->ring, 0);
  if (rc != 0)
    return rc;
  l->ring_ready = true;
  arm_accept(l);
  arm_event(l);
  bool stop_begun = false, aux_cancelled = false, more = false;
  for (;;) {
    if (l->stopping && !stop_begun) {
      begin_stop(l);
      stop_begun = true;
    }
    reap(l);
    /* The auxiliary source is watched while anything may still need it:
     * a held connection waits for it to answer. */
    if (stop_begun && l->conns == NULL && l->aux_armed && !aux_cancelled) {
      cancel_op(l, &l->aux_op);
      aux_cancelled = true;
    } else if (!(stop_begun && l->conns == NULL)) {
      arm_aux(l);
    }
    if (stop_begun && l->conns == NULL && l->loop_inflight == 0)
      break;
    rc = more ? io_uring_submit(&l->ring) : io_uring_submit_and_wait(&l->ring, 1);
    if (rc < 0 && rc != -EINTR)
      return rc;
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&l->ring, head, cqe) {
      dispatch(l, cqe);
      n++;
    }
    io_uring_cq_advance(&l->ring, n);
    more = l->aux != NULL && l->aux(l->aux_ctx);
  }
  return 0;
}

void net_loop_stop(struct net_loop *l)
{
  uint64_t one = 1;
  if (write(l->event_fd, &one, sizeof one) != sizeof one)
    msd_log(MSD_LOG_ERROR, "net: cannot wake the loop to stop it: %s", strerror(errno));
}

/* ---- set-up ---- */

static int listen_on(const char *addr, int *fd, uint16_t *port)
{
  char host[64];
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
    return MSD_EPARAM;
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  char *end;
  long p = strtol(colon + 1, &end, 10);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
  if (*end != 0 || p < 0 || p > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
    return MSD_EPARAM;
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (s < 0)
    return -errno;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = sizeof sa;
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s, 512) != 0 ||
      getsockname(s, (struct sockaddr *)&sa, &len) != 0) {
    int rc = -errno;
    close(s);
    return rc;
  }
  *fd = s;
  *port = ntohs(sa.sin_port);
  return 0;
}

static int make_pool(struct net_loop *l)
{
  l->buf_size = WIRE_HEADER_BYTES + WIRE_MSG_MAX + l->o.buffer_bytes;
  l->pool = msd_aligned_alloc(4096, l->buf_size * l->o.pool_buffers);
  l->free_bufs = msd_calloc(l->o.pool_buffers, sizeof *l->free_bufs);
  if (l->pool == NULL || l->free_bufs == NULL)
    return -ENOMEM;
  for (unsigned i = 0; i < l->o.pool_buffers; i++)
    l->free_bufs[l->nfree++] = l->pool + (size_t)i * l->buf_size;
  return 0;
}

int net_loop_create(const struct net_opts *o, net_handler h, void *ctx, struct net_loop **out)
{
  if (o == NULL || h == NULL || out == NULL || o->buffer_bytes > (256u << 20))
    return MSD_EPARAM;
  struct net_loop *l = msd_calloc(1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  l->o = *o;
  l->o.pool_buffers = o->pool_buffers ? o->pool_buffers : 64;
  l->o.buffer_bytes = o->buffer_bytes ? o->buffer_bytes : 1u << 20;
  l->o.max_conns = o->max_conns ? o->max_conns : 1024;
  l->handler = h;
  l->ctx = ctx;
  l->listen_fd = l->event_fd = -1;
  l->accept_op = (struct op){OP_ACCEPT, NULL};
  l->event_op = (struct op){OP_EVENT, NULL};
  l->pause_op = (struct op){OP_PAUSE, NULL};
  l->cancel_op = (struct op){OP_CANCEL, NULL};
  l->aux_op = (struct op){OP_AUX, NULL};
  l->aux_fd = -1;
  int rc = make_pool(l);
  if (rc == 0)
    rc = listen_on(o->listen, &l->listen_fd, &l->port);
  if (rc == 0 && (l->event_fd = eventfd(0, EFD_CLOEXEC)) < 0)
    rc = -errno;
  if (rc != 0) {
    if (l->listen_fd >= 0)
      close(l->listen_fd);
    if (l->event_fd >= 0)
      close(l->event_fd);
    msd_free(l->pool);
    msd_free(l->free_bufs);
    msd_free(l);
    return rc;
  }
  *out = l;
  return 0;
}

void net_loop_destroy(struct net_loop *l)
{
  if (l == NULL)
    return;
  if (l->ring_ready)
    io_uring_queue_exit(&l->ring);
  close(l->listen_fd);
  close(l->event_fd);
  msd_free(l->pool);
  msd_free(l->free_bufs);
  msd_free(l);
}

uint16_t net_loop_port(const struct net_loop *l)
{
  return l->port;
}

void net_loop_stats(const struct net_loop *l, struct net_stats *out)
{
  *out = l->stats;
  out->pool_free = l->nfree;
}
