/* A node's data plane thread (dataplane.h). */
#include "net/dataplane.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "net/loop.h"
#include "net/shard_rpc.h"
#include "storage/store.h"

#define PAYLOAD_MAX (1u << 20)
/* The node's memory budget (DESIGN §7: fixed at start, never grown by
 * load): OPEN_SHARDS writers hold one registered 1 MiB store buffer each
 * (pinned, so resident from the start), POOL_BUFFERS requests in flight
 * hold one ~1.06 MiB loop buffer each, and the coordinator's workers one
 * 24 MiB stripe arena each: about 40 + 34 + 96 MiB at most. More shard
 * writers or requests than that wait (or are refused with ENOBUFS). */
#define OPEN_SHARDS 32
#define POOL_BUFFERS 32
/* Store buffers shard READs verify into, beyond the writers' (more READs
 * wait their turn inside the store). */
#define READ_BUFFERS 8

struct dataplane {
  dataplane_take_fn take;
  void *take_ctx;
  char *store_dir;
  pthread_mutex_t mu; /* start-up: the thread says how opening went */
  pthread_cond_t cv;
  bool started;
  int start_rc;
  struct store *store;
  struct shard_rpc *rpc;
  struct net_loop *loop;
  pthread_t thread;
  bool running;
};

/* Shard operations are served here; object operations leave the loop
 * with their connection for the coordinator. */
static void handle(void *ctx, struct net_conn *c, const struct net_request *r)
{
  struct dataplane *d = ctx;
  Medshard__DataRequest *req = medshard__data_request__unpack(NULL, r->msg_len, r->msg);
  bool object_op = req != NULL && req->format_version == 1 && (req->op == MEDSHARD__DATA_OP__DATA_OP_PUT ||
                                   req->op == MEDSHARD__DATA_OP__DATA_OP_GET);
  if (!object_op || d->take == NULL) {
    if (req != NULL)
      medshard__data_request__free_unpacked(req, NULL);
    shard_rpc_handle(d->rpc, c, r); /* it answers the rest, errors included */
    return;
  }
  int fd = net_detach(c);
  if (fd < 0) { /* UNTESTED: the handler always holds the request */
    medshard__data_request__free_unpacked(req, NULL);
    net_close(c, "cannot hand the connection over");
    return;
  }
  d->take(d->take_ctx, fd, r->id, req);
}

/* Opens the store on the loop's own thread: its io_uring then belongs to
 * the thread that submits to it and reaps it (one ring per thread; task
 * work and wake-ups go to the ring's thread, not the control loop). */
static int open_store(struct dataplane *d)
{
  /* One store writer per open shard: the store's I/O buffers bound them. */
  struct store_opts so = {.create = true, .io_buffers = OPEN_SHARDS + READ_BUFFERS + 1,
                          .max_writers = OPEN_SHARDS};
  int rc = store_open(d->store_dir, &so, &d->store);
  if (rc != 0)
    msd_log(MSD_LOG_ERROR, "data plane: cannot open the shard store %s: %s", d->store_dir,
            msd_strerror(rc));
  if (rc == 0)
    rc = shard_rpc_create(d->store, OPEN_SHARDS, 60000, PAYLOAD_MAX, &d->rpc);
  if (rc == 0)
    shard_rpc_attach(d->rpc, d->loop);
  return rc;
}

static void *run(void *arg)
{
  struct dataplane *d = arg;
  int rc = open_store(d);
  pthread_mutex_lock(&d->mu);
  d->started = true;
  d->start_rc = rc;
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
  if (rc != 0)
    return NULL;
  rc = net_loop_run(d->loop);
  if (rc != 0)
    msd_log(MSD_LOG_ERROR, "data plane: the io_uring loop failed: %s", msd_strerror(rc));
  return NULL;
}

static void release(struct dataplane *d)
{
  net_loop_destroy(d->loop);
  shard_rpc_destroy(d->rpc);
  store_close(d->store);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cv);
  msd_free(d->store_dir);
  msd_free(d);
}

/* Starts the thread with every signal blocked (libuv's handler runs on the
 * control loop) and waits until it has opened the store. */
static int start_thread(struct dataplane *d)
{
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = -pthread_create(&d->thread, NULL, run, d);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&d->mu);
  while (!d->started)
    pthread_cond_wait(&d->cv, &d->mu);
  rc = d->start_rc;
  pthread_mutex_unlock(&d->mu);
  if (rc != 0)
    pthread_join(d->thread, NULL);
  return rc;
}

int dataplane_start(const struct dataplane_opts *o, struct dataplane **out)
{
  struct dataplane *d = msd_calloc(1, sizeof *d);
  if (d == NULL)
    return -ENOMEM;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
  d->take = o->take;
  d->take_ctx = o->take_ctx;
  d->store_dir = msd_malloc(strlen(o->store_dir) + 1);
  int rc = d->store_dir ? 0 : -ENOMEM;
  if (rc == 0)
    strcpy(d->store_dir, o->store_dir);
  struct net_opts no = {.listen = o->listen, .pool_buffers = o->pool_buffers ? o->pool_buffers : POOL_BUFFERS,
                        .buffer_bytes = PAYLOAD_MAX};
  if (rc == 0 && (rc = net_loop_create(&no, handle, d, &d->loop)) != 0)
    msd_log(MSD_LOG_ERROR, "data plane: cannot listen on %s: %s", o->listen, msd_strerror(rc));
  if (rc == 0)
    rc = start_thread(d);
  if (rc != 0) {
    release(d);
    return rc;
  }
  d->running = true;
  msd_log(MSD_LOG_INFO, "data plane: serving shards from %s on %s", o->store_dir, o->listen);
  *out = d;
  return 0;
}

void dataplane_stop(struct dataplane *d)
{
  if (d == NULL)
    return;
  if (d->running) {
    net_loop_stop(d->loop);
    pthread_join(d->thread, NULL);
  }
  release(d);
}
