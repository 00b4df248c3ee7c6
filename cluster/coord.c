/* The coordinator's workers, their queue, and the cluster-map caches each
 * worker keeps for placement (coord.h). */
#include "cluster/coord_int.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sock.h"
#include "proto/wire.h"

#define MAP_MS 2000

/* ---- client answers outside the ring ---- */

int coord_respond(int fd, uint64_t id, Medshard__DataResponse *r)
{
  r->format_version = 1;
  size_t mlen = medshard__data_response__get_packed_size(r);
  uint8_t *buf = msd_malloc(WIRE_HEADER_BYTES + mlen);
  if (buf == NULL)
    return -ENOMEM;
  struct wire_header h = {.kind = WIRE_RESPONSE, .request_id = id, .msg_len = (uint32_t)mlen};
  wire_encode(&h, buf);
  medshard__data_response__pack(r, buf + WIRE_HEADER_BYTES);
  int rc = msd_sock_send_all(fd, buf, WIRE_HEADER_BYTES + mlen, msd_now_ms() + 5000);
  msd_free(buf);
  return rc;
}

void coord_refuse(int fd, uint64_t id, int code, const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
  r.code = code;
  r.message = msg;
  r.last = true;
  msd_log(MSD_LOG_INFO, "coordinator: refused: %s", msg);
  if (coord_respond(fd, id, &r) == 0) {
    /* The client may still be sending its body: read and drop it for a
     * moment, so closing does not reset the connection under the answer. */
    shutdown(fd, SHUT_WR);
    static uint8_t sink[65536];
    int64_t until = msd_now_ms() + 2000;
    while (msd_now_ms() < until && msd_sock_recv_all(fd, sink, 1, until) == 0)
      if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) == 0)
        break;
  }
  close(fd);
}

/* ---- the cluster map, per worker ---- */

static void drop_places(struct coord_worker *w)
{
  for (int i = 0; i < COORD_CACHE; i++) {
    place_map_destroy(w->place[i].pm);
    w->place[i].pm = NULL;
  }
}

const Medshard__CtlResponse *coord_map(struct coord_worker *w, bool force)
{
  int64_t now = msd_now_ms();
  if (w->map != NULL && !force && now - w->map_ms < MAP_MS)
    return w->map;
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_call_any(w->c->control, &req, 5000, &r, NULL, NULL);
  if (rc != 0 || r->code != 0) {
    msd_log(MSD_LOG_WARN, "coordinator: cannot read the cluster map from %s: %s", w->c->control,
            msd_strerror(rc ? rc : r->code));
    if (rc == 0)
      medshard__ctl_response__free_unpacked(r, NULL);
    return w->map; /* the last one known, if any */
  }
  if (w->map != NULL)
    medshard__ctl_response__free_unpacked(w->map, NULL);
  w->map = r;
  w->map_ms = now;
  drop_places(w); /* rebuilt on demand from the new map */
  return w->map;
}

const Medshard__NodeInfo *coord_node(struct coord_worker *w, uint32_t id)
{
  const Medshard__CtlResponse *m = coord_map(w, false);
  for (size_t i = 0; m != NULL && i < m->n_nodes; i++)
    if (m->nodes[i]->node_id == id)
      return m->nodes[i];
  return NULL;
}

struct ec_codec *coord_codec(struct coord_worker *w, int k, int m)
{
  int free_slot = -1;
  for (int i = 0; i < COORD_CACHE; i++) {
    if (w->codec[i].ec != NULL && w->codec[i].k == k && w->codec[i].m == m)
      return w->codec[i].ec;
    if (w->codec[i].ec == NULL && free_slot < 0)
      free_slot = i;
  }
  if (free_slot < 0) { /* eight policies in use at once: recycle one */
    free_slot = k % COORD_CACHE;
    ec_destroy(w->codec[free_slot].ec);
    w->codec[free_slot].ec = NULL;
  }
  if (ec_create(k, m, &w->codec[free_slot].ec) != 0)
    return NULL;
  w->codec[free_slot].k = k;
  w->codec[free_slot].m = m;
  return w->codec[free_slot].ec;
}

static uint32_t zone_id(const char *zone)
{
  uint32_t h = 2166136261u; /* FNV-1a: zones only need telling apart */
  for (const char *p = zone ? zone : ""; *p; p++)
    h = (h ^ (uint8_t)*p) * 16777619u;
  return h;
}

/* Nodes that may take new shards: up, with a data port, some weight. */
static struct place_map *build_place(struct coord_worker *w, int k, int m, int *err)
{
  const Medshard__CtlResponse *map = coord_map(w, false);
  if (map == NULL) {
    *err = MSD_EUNAVAILABLE;
    return NULL;
  }
  struct place_node *pn = msd_calloc(map->n_nodes ? map->n_nodes : 1, sizeof *pn);
  if (pn == NULL) {
    *err = -ENOMEM;
    return NULL;
  }
  size_t n = 0;
  for (size_t i = 0; i < map->n_nodes; i++) {
    const Medshard__NodeInfo *ni = map->nodes[i];
    if (ni->status != MEDSHARD__NODE_STATUS__NODE_STATUS_UP || ni->data_address == NULL ||
        ni->data_address[0] == 0)
      continue;
    pn[n++] = (struct place_node){ni->node_id, zone_id(ni->zone), ni->weight ? ni->weight : 1.0};
  }
  struct place_map *pm = NULL;
  *err = place_map_create(pn, n, k, m, &pm);
  msd_free(pn);
  return *err == 0 ? pm : NULL;
}

int coord_place(struct coord_worker *w, int k, int m, const uint8_t oid[16], uint32_t *out)
{
  coord_map(w, false); /* may drop stale maps */
  int slot = -1, rc = 0;
  for (int i = 0; i < COORD_CACHE && slot < 0; i++)
    if (w->place[i].pm != NULL && w->place[i].k == k && w->place[i].m == m)
      slot = i;
  if (slot < 0) {
    slot = k % COORD_CACHE;
    place_map_destroy(w->place[slot].pm);
    w->place[slot].pm = build_place(w, k, m, &rc);
    if (w->place[slot].pm == NULL)
      return rc;
    w->place[slot].k = k;
    w->place[slot].m = m;
  }
  size_t need = place_scratch_size(w->place[slot].pm);
  if (need > w->scratch_len) {
    msd_free(w->scratch);
    w->scratch_len = 0;
    if ((w->scratch = msd_aligned_alloc(64, need)) == NULL)
      return -ENOMEM;
    w->scratch_len = need;
  }
  return place_select(w->place[slot].pm, oid, out, w->scratch);
}

uint8_t *coord_arena(struct coord_worker *w, size_t need)
{
  if (need <= w->arena_len)
    return w->arena;
  msd_free(w->arena);
  w->arena_len = 0;
  w->arena = msd_aligned_alloc(64, need);
  if (w->arena != NULL)
    w->arena_len = need;
  return w->arena;
}

unsigned coord_window(size_t per_stripe, uint64_t stripes)
{
  size_t fit = COORD_WINDOW_BYTES / per_stripe;
  unsigned w = fit < 2 ? 2 : fit > 8 ? 8 : (unsigned)fit;
  return stripes < w ? (stripes ? (unsigned)stripes : 1) : w;
}

/* ---- workers ---- */

static void serve(struct coord_worker *w, struct coord_job *j)
{
  if (j->req->op == MEDSHARD__DATA_OP__DATA_OP_PUT)
    coord_put(w, j);
  else
    coord_get(w, j);
  medshard__data_request__free_unpacked(j->req, NULL);
}

static void *worker_main(void *arg)
{
  struct coord_worker *w = arg;
  struct coord *c = w->c;
  int rc = cio_create(&w->io);
  if (rc != 0)
    msd_log(MSD_LOG_ERROR, "coordinator: worker %u has no io_uring: %s", w->index,
            msd_strerror(rc));
  /* Started (and joined, below) by the worker itself, so it lives exactly
   * as long as the worker's loop, whichever way that ends. */
  if (rc == 0 && (rc = coord_hash_start(w->io, &w->hash)) != 0)
    msd_log(MSD_LOG_ERROR, "coordinator: worker %u has no hasher thread: %s", w->index,
            msd_strerror(rc));
  for (;;) {
    pthread_mutex_lock(&c->mu);
    while (c->n == 0 && !c->stopping)
      pthread_cond_wait(&c->cv, &c->mu);
    if (c->n == 0) {
      pthread_mutex_unlock(&c->mu);
      break;
    }
    struct coord_job j = c->jobs[c->head];
    c->head = (c->head + 1) % c->o.queue;
    c->n--;
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (w->hash == NULL || stopping) { /* UNTESTED without io_uring or threads */
      coord_refuse(j.fd, j.id, MSD_EUNAVAILABLE, "node %u is shutting down", c->o.node_id);
      medshard__data_request__free_unpacked(j.req, NULL);
      continue;
    }
    serve(w, &j);
  }
  coord_hash_stop(w->hash);
  w->hash = NULL;
  return NULL;
}

void coord_take(void *coord, int fd, uint64_t id, Medshard__DataRequest *req)
{
  struct coord *c = coord;
  pthread_mutex_lock(&c->mu);
  bool room = c->n < c->o.queue && !c->stopping;
  if (room) {
    c->jobs[(c->head + c->n) % c->o.queue] = (struct coord_job){fd, id, req};
    c->n++;
    pthread_cond_signal(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  if (!room) {
    /* UNTESTED: needs more waiting clients than the queue holds. Runs on
     * the data loop, so no draining: answer and close. */
    Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
    r.code = MSD_EUNAVAILABLE;
    r.message = (char *)"this node has too many requests waiting; retry later or elsewhere";
    r.last = true;
    coord_respond(fd, id, &r);
    close(fd);
    medshard__data_request__free_unpacked(req, NULL);
  }
}

int coord_start(const struct coord_opts *o, struct coord **out)
{
  struct coord *c = msd_calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->o = *o;
  c->o.workers = o->workers ? o->workers : 4;
  c->o.queue = o->queue ? o->queue : 256;
  snprintf(c->control, sizeof c->control, "%s", o->control);
  c->w = msd_calloc(c->o.workers, sizeof *c->w);
  c->jobs = msd_calloc(c->o.queue, sizeof *c->jobs);
  if (c->w == NULL || c->jobs == NULL) {
    msd_free(c->w);
    msd_free(c->jobs);
    msd_free(c);
    return -ENOMEM;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); /* signals belong to the control loop */
  unsigned started = 0;
  int rc = 0;
  for (; started < c->o.workers && rc == 0; started++) {
    c->w[started].c = c;
    c->w[started].index = started;
    rc = -pthread_create(&c->w[started].thread, NULL, worker_main, &c->w[started]);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    c->o.workers = started - 1;
    coord_stop(c);
    return rc;
  }
  *out = c;
  return 0;
}

void coord_stop(struct coord *c)
{
  if (c == NULL)
    return;
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  for (unsigned i = 0; i < c->o.workers; i++) {
    struct coord_worker *w = &c->w[i];
    pthread_join(w->thread, NULL);
    cio_destroy(w->io);
    if (w->map != NULL)
      medshard__ctl_response__free_unpacked(w->map, NULL);
    drop_places(w);
    for (int k = 0; k < COORD_CACHE; k++)
      ec_destroy(w->codec[k].ec);
    msd_free(w->scratch);
    msd_free(w->arena);
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  msd_free(c->w);
  msd_free(c->jobs);
  msd_free(c);
}
