/* bench_raft_raw (bench_raft.h): the raw libraft ceiling for the anchor
 * benchmark. N libraft 0.15 voters on the real raft_uv backend and TCP
 * transport, an FSM that does nothing, and a load generator on the leader's
 * loop that keeps a fixed number of raft_apply requests in flight.
 *
 * Each node gets its own thread and uv loop, as each voter gets its own
 * process and core in a deployment: one shared loop would put the leader's
 * and both followers' CPU work (encoding, checksums, syscalls) on one core
 * and measure that core, not libraft. The price is cross-thread signalling,
 * kept to a few atomics: the main thread only waits and flips a phase; each
 * raft instance is touched by its own loop thread alone (and by the main
 * thread before that thread starts and after it is joined). */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "bench/bench.h"
#include "bench/bench_raft.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"

#define RB_MAX_NODES 9u
#define RB_MAX_INFLIGHT 65536u
#define RB_MAX_ENTRY ((size_t)4 << 20)        /* half libraft's 8 MiB segment */
#define RB_MAX_BYTES_IN_FLIGHT ((uint64_t)1 << 30)
#define RB_MAX_SECONDS 3600.0
/* libraft's defaults, pinned so the ceiling does not move with a later
 * libraft. The side-chain nodes must run with the same values for the
 * comparison to hold; the snapshot threshold above all (see node_init). */
#define RB_ELECTION_MS 1000u
#define RB_HEARTBEAT_MS 100u
#define RB_SNAPSHOT_THRESHOLD 1024u
#define RB_SNAPSHOT_TRAILING 128u
#define RB_TICK_MS 5u          /* how often each node looks at its own state */
#define RB_ELECT_WAIT_S 10.0   /* bound on electing the first leader */
#define RB_DRAIN_WAIT_S 10.0   /* bound on the last requests after the window */
#define RB_CLOSE_WAIT_S 15.0   /* bound on every node finishing raft_close */
#define RB_PORT_ATTEMPTS 3u    /* fresh ports when another process took one */

/* Latency histogram: one bucket per value below 2^(SUB+1) ns, then 2^SUB
 * buckets per power of two, so a bucket is at most 1/64 of its value wide and
 * memory is fixed (30 KiB) however long the run. */
#define HIST_SUB 6u
#define HIST_LINEAR (2u << HIST_SUB)
#define HIST_N (HIST_LINEAR + (64u - HIST_SUB - 1u) * (1u << HIST_SUB))

enum rb_phase { RB_WAIT, RB_LOAD, RB_STOP };

/* What a node has set up, so node_begin_close/node_release undo just that. */
enum rb_stage {
  RB_LOOP = 1u << 0,
  RB_TIMERS = 1u << 1, /* tick, end and idle handles */
  RB_ASYNC = 1u << 2,
  RB_TCP = 1u << 3,
  RB_IO = 1u << 4,
  RB_RAFT = 1u << 5,
  RB_THREAD = 1u << 6,
};

struct rb_node;

/* One raft_apply in flight. req.data points back here. */
struct rb_req {
  struct raft_apply req;
  struct rb_node *node;
  uint64_t submit_ns;
  struct rb_req *next; /* free list */
};

/* Load generator state: touched only by the loop thread of the node that won
 * load_owner, and read by the main thread after joining that thread. */
struct rb_load {
  struct rb_req *reqs, *free;
  unsigned outstanding;
  bool running; /* submitting new requests */
  uint64_t win_start_ns, win_end_ns;
  uint64_t entries; /* successful apply callbacks inside the window */
  int err;          /* first failure, as an -errno/MSD_E* code */
  uint64_t hist[HIST_N];
};

struct rb_node {
  struct rb_bench *b;
  unsigned id, stage;
  bool closing, raft_closed;
  uint16_t port;
  uint64_t applied; /* FSM state: number of entries applied */
  char address[32];
  char dir[4096];
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick, end;
  uv_idle_t idle;
  struct raft_uv_transport transport;
  struct raft_io io;
  struct raft_fsm fsm;
  struct raft raft;
  pthread_t thread;
  atomic_bool exited;
};

struct rb_bench {
  unsigned n, inflight;
  size_t entry_bytes;
  double seconds, warmup;
  unsigned char *payload; /* copied into every entry */
  char root[4096];
  atomic_uint leader;     /* id of a node that last saw itself leader, or 0 */
  atomic_uint load_owner; /* id of the node running the load, or 0 */
  atomic_int phase;
  atomic_bool done; /* window over and drained, or the load failed */
  bool abandoned;   /* a node thread never exited: memory must not be freed */
  struct rb_load load;
  struct rb_node nodes[];
};

/* libraft's positive codes as -errno / MSD_E* (STYLE.md: Errors). */
static int rb_err(int rv)
{
  switch (rv) {
  case 0: return 0;
  case RAFT_NOMEM: return -ENOMEM;
  case RAFT_NOSPACE: return -ENOSPC;
  case RAFT_IOERR: case RAFT_CORRUPT: return -EIO;
  case RAFT_NOTFOUND: return -ENOENT;
  case RAFT_NAMETOOLONG: return -ENAMETOOLONG;
  case RAFT_UNAUTHORIZED: return -EACCES;
  case RAFT_NOCONNECTION: return -ECONNREFUSED;
  case RAFT_BADID: case RAFT_DUPLICATEID: case RAFT_DUPLICATEADDRESS:
  case RAFT_BADROLE: case RAFT_MALFORMED: case RAFT_INVALID: case RAFT_TOOBIG:
    return MSD_EPARAM;
  default: return MSD_ESTATE; /* NOTLEADER, LEADERSHIPLOST, SHUTDOWN, ... */
  }
}

static int node_fail(const struct rb_node *n, const char *what, int rv, const char *detail)
{
  msd_log(MSD_LOG_ERROR, "bench raft: node %u (%s): %s: %s%s%s", n->id, n->address, what,
          raft_strerror(rv), detail && *detail ? ": " : "", detail ? detail : "");
  return rb_err(rv);
}

static void sleep_ms(unsigned ms)
{
  struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};
  nanosleep(&ts, NULL);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

/* ---- latency histogram ---- */

static void hist_add(uint64_t *h, uint64_t v)
{
  if (v < HIST_LINEAR) {
    h[v]++;
    return;
  }
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB + 1 */
  uint64_t sub = (v >> (e - HIST_SUB)) - (1u << HIST_SUB);
  h[HIST_LINEAR + (e - HIST_SUB - 1u) * (1u << HIST_SUB) + sub]++;
}

/* Middle of the bucket holding the nearest-rank pct-th percentile, in ns. */
static double hist_percentile(const uint64_t *h, uint64_t total, unsigned pct)
{
  if (total == 0)
    return 0.0;
  uint64_t rank = (total * pct + 99) / 100, seen = 0;
  if (rank == 0)
    rank = 1;
  for (unsigned i = 0; i < HIST_N; i++) {
    seen += h[i];
    if (seen < rank)
      continue;
    if (i < HIST_LINEAR)
      return (double)i;
    unsigned group = (i - HIST_LINEAR) >> HIST_SUB;
    unsigned sub = (i - HIST_LINEAR) & ((1u << HIST_SUB) - 1), shift = group + 1u;
    uint64_t lo = ((uint64_t)(1u << HIST_SUB) + sub) << shift;
    return (double)lo + (double)(((uint64_t)1 << shift) - 1) / 2.0;
  }
  return 0.0; /* UNTESTED: counts add up to total */
}

/* ---- the FSM: no work ---- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
  struct rb_node *n = fsm->data;
  (void)buf;
  n->applied++;
  *result = NULL;
  return 0;
}

/* libraft takes both the array and the buffer (raft_malloc'd) on success. */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
  struct rb_node *n = fsm->data;
  struct raft_buffer *v = raft_malloc(sizeof *v);
  if (v == NULL)
    return RAFT_NOMEM;
  v->len = sizeof n->applied;
  v->base = raft_malloc(v->len);
  if (v->base == NULL) {
    raft_free(v);
    return RAFT_NOMEM;
  }
  memcpy(v->base, &n->applied, v->len);
  *bufs = v;
  *n_bufs = 1;
  return 0;
}

/* On success the FSM owns buf->base (libraft's restore contract). */
static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
  struct rb_node *n = fsm->data;
  if (buf->len != sizeof n->applied)
    return RAFT_MALFORMED;
  memcpy(&n->applied, buf->base, buf->len);
  raft_free(buf->base);
  return 0;
}

/* ---- the load generator (leader's loop thread only) ---- */

static void load_finish(struct rb_bench *b)
{
  atomic_store(&b->done, true);
}

static void load_fail(struct rb_node *n, int rv, const char *what)
{
  struct rb_load *l = &n->b->load;
  if (l->err == 0) {
    l->err = (rv == RAFT_NOTLEADER || rv == RAFT_LEADERSHIPLOST) ? MSD_ESTATE : rb_err(rv);
    msd_log(MSD_LOG_ERROR, "bench raft: leader node %u (%s): %s: %s; the run is void", n->id,
            n->address, what, raft_strerror(rv));
  }
  l->running = false;
  if (l->outstanding == 0)
    load_finish(n->b);
}

static void idle_cb(uv_idle_t *idle);

static void apply_cb(struct raft_apply *req, int status, void *result)
{
  struct rb_req *q = req->data;
  struct rb_node *n = q->node;
  struct rb_load *l = &n->b->load;
  uint64_t now = msd_now_ns();
  (void)result;
  l->outstanding--;
  q->next = l->free;
  l->free = q;
  if (status != 0) {
    load_fail(n, status, "apply callback");
  } else if (l->running && now >= l->win_start_ns) {
    l->entries++;
    hist_add(l->hist, now - q->submit_ns);
  }
  /* Refill from the next loop iteration rather than from inside libraft's
   * apply path, as a server handing over client requests would. */
  if (l->running)
    uv_idle_start(&n->idle, idle_cb);
  else if (l->outstanding == 0)
    load_finish(n->b);
}

static void load_fill(struct rb_node *n)
{
  struct rb_bench *b = n->b;
  struct rb_load *l = &b->load;
  while (l->running && l->free != NULL) {
    struct rb_req *q = l->free;
    struct raft_buffer buf = {.base = raft_malloc(b->entry_bytes), .len = b->entry_bytes};
    if (buf.base == NULL) {
      load_fail(n, RAFT_NOMEM, "raft_malloc");
      return;
    }
    memcpy(buf.base, b->payload, buf.len);
    l->free = q->next;
    q->submit_ns = msd_now_ns();
    int rv = raft_apply(&n->raft, &q->req, &buf, 1, apply_cb);
    if (rv != 0) {
      raft_free(buf.base); /* libraft takes the buffer only on success */
      q->next = l->free;
      l->free = q;
      load_fail(n, rv, "raft_apply");
      return;
    }
    l->outstanding++;
  }
}

static void idle_cb(uv_idle_t *idle)
{
  uv_idle_stop(idle);
  load_fill(idle->data);
}

static void end_cb(uv_timer_t *end)
{
  struct rb_node *n = end->data;
  struct rb_load *l = &n->b->load;
  l->win_end_ns = msd_now_ns();
  l->running = false;
  if (l->outstanding == 0)
    load_finish(n->b);
}

static void load_start(struct rb_node *n)
{
  struct rb_bench *b = n->b;
  struct rb_load *l = &b->load;
  uint64_t now = msd_now_ns();
  for (unsigned i = 0; i < b->inflight; i++)
    l->reqs[i].node = n;
  l->win_start_ns = now + (uint64_t)(b->warmup * 1e9);
  l->running = true;
  uv_update_time(&n->loop);
  uv_timer_start(&n->end, end_cb, (uint64_t)((b->warmup + b->seconds) * 1000.0 + 0.5), 0);
  load_fill(n);
}

/* Publishes whether this node leads; the first leader to see the LOAD phase
 * takes the load (raft 0.15 has no state-change callback to hook instead). */
static void tick_cb(uv_timer_t *tick)
{
  struct rb_node *n = tick->data;
  struct rb_bench *b = n->b;
  bool leader = raft_state(&n->raft) == RAFT_LEADER;
  unsigned me = n->id, none = 0;
  if (leader)
    atomic_store(&b->leader, n->id);
  else
    atomic_compare_exchange_strong(&b->leader, &me, 0u);
  if (leader && atomic_load(&b->phase) == RB_LOAD &&
      atomic_compare_exchange_strong(&b->load_owner, &none, n->id))
    load_start(n);
}

/* ---- node life cycle ---- */

static void raft_closed_cb(struct raft *r)
{
  struct rb_node *n = r->data;
  n->raft_closed = true;
}

/* Starts closing everything the node set up; runs on the loop's thread, and
 * uv_run then returns once the last close callback has fired. */
static void node_begin_close(struct rb_node *n)
{
  if (n->closing)
    return;
  n->closing = true;
  if (atomic_load(&n->b->load_owner) == n->id)
    n->b->load.running = false; /* no uv_idle_start on a closing handle */
  if (n->stage & RB_TIMERS) {
    uv_close((uv_handle_t *)&n->tick, NULL);
    uv_close((uv_handle_t *)&n->end, NULL);
    uv_close((uv_handle_t *)&n->idle, NULL);
  }
  if (n->stage & RB_ASYNC)
    uv_close((uv_handle_t *)&n->wake, NULL);
  /* raft_close fails the requests still pending (their callbacks run) and
   * closes raft_uv, which closes the transport; only after raft_closed_cb
   * may raft_uv_close / raft_uv_tcp_close free their memory. */
  if (n->stage & RB_RAFT)
    raft_close(&n->raft, raft_closed_cb);
}

static void wake_cb(uv_async_t *wake)
{
  struct rb_node *n = wake->data;
  if (atomic_load(&n->b->phase) == RB_STOP)
    node_begin_close(n);
}

/* Frees what the closed node still holds; its loop must have run dry. */
static void node_release(struct rb_node *n)
{
  if ((n->stage & RB_RAFT) && !n->raft_closed)
    msd_log(MSD_LOG_WARN, "bench raft: node %u: raft_close never completed", n->id);
  if (n->stage & RB_IO)
    raft_uv_close(&n->io);
  if (n->stage & RB_TCP)
    raft_uv_tcp_close(&n->transport);
  if (n->stage & RB_LOOP) {
    int rc = uv_loop_close(&n->loop);
    if (rc != 0)
      msd_log(MSD_LOG_WARN, "bench raft: node %u: uv loop not empty at close: %s", n->id,
              uv_strerror(rc));
  }
  n->stage = 0;
}

static int node_init(struct rb_node *n, const char *root, const struct raft_configuration *conf)
{
  int rc;
  if ((size_t)snprintf(n->dir, sizeof n->dir, "%s/n%u", root, n->id) >= sizeof n->dir)
    return -ENAMETOOLONG; /* UNTESTED: root was checked shorter */
  if (mkdir(n->dir, 0700) != 0) {
    rc = -errno;
    msd_log(MSD_LOG_ERROR, "bench raft: mkdir %s: %s", n->dir, msd_strerror(rc));
    return rc;
  }
  if ((rc = uv_loop_init(&n->loop)) != 0)
    return rc; /* libuv codes are -errno */
  n->stage |= RB_LOOP;
  uv_timer_init(&n->loop, &n->tick);
  uv_timer_init(&n->loop, &n->end);
  uv_idle_init(&n->loop, &n->idle);
  n->tick.data = n->end.data = n->idle.data = n;
  n->stage |= RB_TIMERS;
  if ((rc = uv_async_init(&n->loop, &n->wake, wake_cb)) != 0)
    return rc;
  n->wake.data = n;
  n->stage |= RB_ASYNC;
  if ((rc = raft_uv_tcp_init(&n->transport, &n->loop)) != 0)
    return node_fail(n, "raft_uv_tcp_init", rc, NULL);
  n->stage |= RB_TCP;
  if ((rc = raft_uv_init(&n->io, &n->loop, n->dir, &n->transport)) != 0)
    return node_fail(n, "raft_uv_init", rc, n->io.errmsg);
  n->stage |= RB_IO;
  n->fsm = (struct raft_fsm){.version = 1, .data = n, .apply = fsm_apply,
                             .snapshot = fsm_snapshot, .restore = fsm_restore};
  if ((rc = raft_init(&n->raft, &n->io, &n->fsm, n->id, n->address)) != 0)
    return node_fail(n, "raft_init", rc, raft_errmsg(&n->raft));
  n->stage |= RB_RAFT;
  n->raft.data = n;
  raft_set_election_timeout(&n->raft, RB_ELECTION_MS);
  raft_set_heartbeat_timeout(&n->raft, RB_HEARTBEAT_MS);
  /* Each snapshot stalls appends for 30-50 ms in libraft 0.15 (on ext4 and
   * tmpfs alike), so one every 1024 entries cuts this run to a third at
   * 1024 in flight (measured 12.7k against 41k entries/s with 300 B entries
   * and none). A ceiling without them would flatter raft against an FSM
   * that must take them. */
  raft_set_snapshot_threshold(&n->raft, RB_SNAPSHOT_THRESHOLD);
  raft_set_snapshot_trailing(&n->raft, RB_SNAPSHOT_TRAILING);
  if ((rc = raft_bootstrap(&n->raft, conf)) != 0)
    return node_fail(n, "raft_bootstrap", rc, raft_errmsg(&n->raft));
  return 0;
}

static int loopback_socket(uint16_t port, struct sockaddr_in *sa)
{
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

/* Whether something else holds the port (bind says EADDRINUSE). */
static bool port_taken(uint16_t port)
{
  struct sockaddr_in sa;
  int fd = loopback_socket(port, &sa);
  if (fd < 0)
    return false; /* UNTESTED */
  bool taken = bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno == EADDRINUSE;
  close(fd);
  return taken;
}

/* Listens on the node's port (before any node's loop runs, so no node
 * connects to a port that is not listening yet) and starts its tick. */
static int node_start(struct rb_node *n)
{
  int rc = raft_start(&n->raft);
  if (rc == RAFT_IOERR && port_taken(n->port)) {
    /* libraft 0.15 reports a failed bind as a bare RAFT_IOERR. */
    msd_log(MSD_LOG_WARN, "bench raft: node %u: port %s was taken meanwhile", n->id, n->address);
    return -EADDRINUSE;
  }
  if (rc != 0)
    return node_fail(n, "raft_start", rc, raft_errmsg(&n->raft));
  uv_timer_start(&n->tick, tick_cb, RB_TICK_MS, RB_TICK_MS);
  return 0;
}

static void *node_main(void *arg)
{
  struct rb_node *n = arg;
  uv_run(&n->loop, UV_RUN_DEFAULT);
  atomic_store(&n->exited, true);
  return NULL;
}

/* ---- the cluster ---- */

/* Binds N loopback sockets to port 0 at once (so the kernel hands out N
 * distinct free ports), notes the ports and closes the sockets again: a port
 * that never connected leaves no TIME_WAIT behind, and the listeners take
 * them a moment later in node_start. */
static int pick_ports(struct rb_bench *b)
{
  int fds[RB_MAX_NODES];
  unsigned opened = 0;
  int rc = 0;
  for (unsigned i = 0; i < b->n && rc == 0; i++) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = loopback_socket(0, &sa);
    if (fd < 0) {
      rc = -errno;
      break;
    }
    fds[opened++] = fd;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
      rc = -errno;
    else
      b->nodes[i].port = ntohs(sa.sin_port);
    snprintf(b->nodes[i].address, sizeof b->nodes[i].address, "127.0.0.1:%u",
             (unsigned)b->nodes[i].port);
  }
  for (unsigned i = 0; i < opened; i++)
    close(fds[i]);
  if (rc != 0)
    msd_log(MSD_LOG_ERROR, "bench raft: finding a free port on 127.0.0.1: %s", msd_strerror(rc));
  return rc;
}

static int cluster_init(struct rb_bench *b)
{
  struct raft_configuration conf;
  raft_configuration_init(&conf);
  int rc = pick_ports(b);
  for (unsigned i = 0; i < b->n && rc == 0; i++) {
    rc = raft_configuration_add(&conf, b->nodes[i].id, b->nodes[i].address, RAFT_VOTER);
    if (rc != 0)
      rc = node_fail(&b->nodes[i], "raft_configuration_add", rc, NULL);
  }
  for (unsigned i = 0; i < b->n && rc == 0; i++)
    rc = node_init(&b->nodes[i], b->root, &conf);
  raft_configuration_close(&conf);
  for (unsigned i = 0; i < b->n && rc == 0; i++)
    rc = node_start(&b->nodes[i]);
  return rc;
}

static int cluster_stop(struct rb_bench *b);

/* Sets every node up and listening. Another process can take a picked port
 * before its node listens; then everything is closed and set up again on
 * fresh ports in a fresh directory (bootstrap needs pristine ones). */
static int cluster_up(struct rb_bench *b)
{
  int rc = cluster_init(b);
  for (unsigned attempt = 1; rc == -EADDRINUSE && attempt < RB_PORT_ATTEMPTS; attempt++) {
    cluster_stop(b); /* no thread runs yet: cannot be abandoned */
    for (unsigned i = 0; i < b->n; i++) {
      struct rb_node *n = &b->nodes[i];
      unsigned id = n->id;
      memset(n, 0, sizeof *n);
      n->b = b, n->id = id;
    }
    atomic_store(&b->phase, RB_WAIT);
    nftw(b->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(b->root, 0700) != 0)
      return -errno; /* UNTESTED */
    rc = cluster_init(b);
  }
  if (rc == -EADDRINUSE)
    msd_log(MSD_LOG_ERROR, "bench raft: %u attempts lost a loopback port to another process",
            RB_PORT_ATTEMPTS);
  return rc;
}

/* Node threads start with SIGPIPE blocked: libuv writes to sockets with
 * write(2), and a follower that closed first must give EPIPE, not kill us. */
static int cluster_spawn(struct rb_bench *b)
{
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  int rc = 0;
  for (unsigned i = 0; i < b->n && rc == 0; i++) {
    struct rb_node *n = &b->nodes[i];
    rc = -pthread_create(&n->thread, NULL, node_main, n);
    if (rc == 0)
      n->stage |= RB_THREAD;
    else
      msd_log(MSD_LOG_ERROR, "bench raft: node %u: starting its thread: %s", n->id,
              msd_strerror(rc));
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

/* Waits for a leader, opens the LOAD phase and waits for the window to end
 * and its requests to drain; every wait is bounded. */
static int cluster_measure(struct rb_bench *b)
{
  double deadline = bench_now() + RB_ELECT_WAIT_S;
  while (atomic_load(&b->leader) == 0) {
    if (bench_now() > deadline) {
      msd_log(MSD_LOG_ERROR, "bench raft: no leader among %u nodes within %.0f s", b->n,
              RB_ELECT_WAIT_S);
      return -ETIMEDOUT;
    }
    sleep_ms(2);
  }
  atomic_store(&b->phase, RB_LOAD);
  /* A leader that steps down before taking the load leaves it to the next
   * one, hence the second election allowance. */
  deadline = bench_now() + RB_ELECT_WAIT_S + b->warmup + b->seconds + RB_DRAIN_WAIT_S;
  while (!atomic_load(&b->done)) {
    if (bench_now() > deadline) {
      msd_log(MSD_LOG_ERROR,
              "bench raft: the run did not finish: requests still uncommitted %.0f s after "
              "the window closed",
              RB_DRAIN_WAIT_S);
      return -ETIMEDOUT;
    }
    sleep_ms(2);
  }
  return 0;
}

/* Closes every node: threaded ones on their own loops, the rest (setup
 * failed before their thread started) here. 0, or MSD_ESTATE if a node
 * thread did not exit in time, in which case nothing may be freed. */
static int cluster_stop(struct rb_bench *b)
{
  atomic_store(&b->phase, RB_STOP);
  for (unsigned i = 0; i < b->n; i++) {
    struct rb_node *n = &b->nodes[i];
    if (n->stage & RB_THREAD) {
      uv_async_send(&n->wake);
    } else if (n->stage & RB_LOOP) {
      node_begin_close(n);
      uv_run(&n->loop, UV_RUN_DEFAULT);
    }
  }
  double deadline = bench_now() + RB_CLOSE_WAIT_S;
  for (unsigned i = 0; i < b->n; i++) {
    while ((b->nodes[i].stage & RB_THREAD) && !atomic_load(&b->nodes[i].exited)) {
      if (bench_now() > deadline) {
        /* UNTESTED: abandon the threads (memory and directory stay) rather
         * than free what they may still use. */
        msd_log(MSD_LOG_ERROR, "bench raft: node %u did not close within %.0f s", b->nodes[i].id,
                RB_CLOSE_WAIT_S);
        b->abandoned = true;
        return MSD_ESTATE;
      }
      sleep_ms(2);
    }
  }
  for (unsigned i = 0; i < b->n; i++) {
    if (b->nodes[i].stage & RB_THREAD)
      pthread_join(b->nodes[i].thread, NULL);
    node_release(&b->nodes[i]);
  }
  return 0;
}

static void cluster_result(const struct rb_bench *b, struct bench_raft_result *out)
{
  const struct rb_load *l = &b->load;
  double secs = (double)(l->win_end_ns - l->win_start_ns) / 1e9;
  out->entries = l->entries;
  out->seconds = secs;
  out->entries_per_s = secs > 0 ? (double)l->entries / secs : 0.0;
  out->p50_ms = hist_percentile(l->hist, l->entries, 50) / 1e6;
  out->p99_ms = hist_percentile(l->hist, l->entries, 99) / 1e6;
}

static bool params_ok(const char *dir, unsigned nodes, size_t entry_bytes, unsigned inflight,
                      double seconds)
{
  return dir != NULL && nodes >= 1 && nodes <= RB_MAX_NODES && entry_bytes >= 1 &&
         entry_bytes <= RB_MAX_ENTRY && inflight >= 1 && inflight <= RB_MAX_INFLIGHT &&
         (uint64_t)inflight * entry_bytes <= RB_MAX_BYTES_IN_FLIGHT && seconds > 0 &&
         seconds <= RB_MAX_SECONDS;
}

int bench_raft_raw(const char *dir, unsigned nodes, size_t entry_bytes, unsigned inflight,
                   double seconds, struct bench_raft_result *out)
{
  if (!params_ok(dir, nodes, entry_bytes, inflight, seconds) || out == NULL)
    return MSD_EPARAM;
  int rc = -ENOMEM;
  struct rb_bench *b = msd_calloc(1, sizeof *b + nodes * sizeof b->nodes[0]);
  if (b == NULL)
    return rc;
  b->n = nodes, b->inflight = inflight, b->entry_bytes = entry_bytes, b->seconds = seconds;
  b->warmup = seconds / 10 < 1.0 ? seconds / 10 : 1.0;
  b->payload = msd_malloc(entry_bytes);
  b->load.reqs = msd_calloc(inflight, sizeof *b->load.reqs);
  if (b->payload == NULL || b->load.reqs == NULL)
    goto free_bench;
  bench_fill(b->payload, entry_bytes, 0x7261667462656e63ull);
  for (unsigned i = 0; i < inflight; i++) {
    b->load.reqs[i].req.data = &b->load.reqs[i];
    b->load.reqs[i].next = i + 1 < inflight ? &b->load.reqs[i + 1] : NULL;
  }
  b->load.free = b->load.reqs;
  for (unsigned i = 0; i < nodes; i++) {
    b->nodes[i].b = b;
    b->nodes[i].id = i + 1;
  }
  /* Room for "/n9" below the root, within raft_uv's own path limit. */
  if ((size_t)snprintf(b->root, sizeof b->root, "%s/medshard-raft-XXXXXX", dir) >= 1000) {
    rc = -ENAMETOOLONG;
    msd_log(MSD_LOG_ERROR, "bench raft: directory name too long: %s", dir);
    goto free_bench;
  }
  if (mkdtemp(b->root) == NULL) {
    rc = -errno;
    msd_log(MSD_LOG_ERROR, "bench raft: creating a directory in %s: %s", dir, msd_strerror(rc));
    goto free_bench;
  }

  rc = cluster_up(b);
  if (rc == 0)
    rc = cluster_spawn(b);
  if (rc == 0)
    rc = cluster_measure(b);
  int stop_rc = cluster_stop(b);
  if (b->abandoned)
    return stop_rc; /* UNTESTED: see cluster_stop */
  if (rc == 0)
    rc = stop_rc != 0 ? stop_rc : b->load.err;
  if (rc == 0)
    cluster_result(b, out);
  nftw(b->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);

free_bench:
  msd_free(b->load.reqs);
  msd_free(b->payload);
  msd_free(b);
  return rc;
}
