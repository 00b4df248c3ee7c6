/* `medshard bench anchor`: anchors submitted through the control plane, in
 * batches, by several client threads; committed anchors/s and submit-to-
 * commit latency, and with a watched leader also submit-to-sealed. With
 * --node it drives a running cluster: --acks FILE logs each acknowledged
 * anchor (object id, leaf index) and --check FILE later proves every logged
 * anchor is in a node's state exactly once (the multi-process chain test
 * uses both). With --nodes N it starts its own cluster (bench_anchor_local.c). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "bench/bench.h"
#include "bench/bench_anchor_int.h"
#include "chain-anchor/block.h"
#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "proto/wire.h"

#define WATCH_POLL_MS 2.0    /* HEAD period: the resolution of seal times */
#define WATCH_FIRST_WAIT_S 5.0 /* bound on the watcher's first HEAD */

/* One acknowledged anchor: where it landed and when its batch was sent. */
struct acked {
  uint64_t leaf;
  double t_submit;
};

/* The sealed tree size as the watcher first saw it. */
struct seal_point {
  double t;
  uint64_t size;
  uint64_t applied; /* the leader's applied Raft index at that poll */
};

/* Polls a node's HEAD and records each growth of the sealed tree size. The
 * first address is the leader's; when a node stops answering the watcher
 * moves to the next, since every node applies the same seals. */
struct seal_watch {
  char addr[BA_MAX_NODES][128];
  unsigned naddr, cur;
  pthread_t thread;
  atomic_bool stop;
  pthread_mutex_t mu;       /* guards everything below */
  struct seal_point *pts;   /* ascending in t and size */
  size_t npts, cap;
  uint64_t height;          /* sealed height whose size is in pts */
  uint64_t applied0;        /* applied index at the first successful poll */
  bool started;
  int err;                  /* last failure, for the report */
};

struct anchor_run {
  const struct anchor_load *in;
  uint32_t shard_nodes[48];
  FILE *acks;
  pthread_mutex_t mu;       /* guards everything below */
  uint64_t done, failed, taken; /* taken: handed to a client, not yet answered */
  bool stopped;             /* a submission failed and the load stops early */
  double *lat_ms;           /* submit -> commit, one per batch */
  size_t nlat, lat_cap;
  struct acked *acked;
  size_t nacked, acked_cap;
};

static Medshard__CtlRequest ctl_request(Medshard__CtlOp op)
{
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  q.format_version = 1;
  q.op = op;
  return q;
}

/* A synthetic PutObject: random object id, content hash and salt; shards
 * on the given nodes with random digests (no data plane involved). */
struct fake_put {
  Medshard__Command cmd;
  Medshard__PutObject put;
  Medshard__Manifest man;
  Medshard__ShardMap map;
  Medshard__ErasurePolicy pol;
  Medshard__ShardLocation loc[48], *locp[48];
  uint8_t id[16], sha[32], salt[32], digest[48][16];
  char key[64];
};

static void fake_put_init(struct fake_put *f, const char *bucket, unsigned k, unsigned m,
                          const uint32_t *shard_nodes, uint64_t n)
{
  medshard__command__init(&f->cmd);
  medshard__put_object__init(&f->put);
  medshard__manifest__init(&f->man);
  medshard__shard_map__init(&f->map);
  medshard__erasure_policy__init(&f->pol);
  getrandom(f->id, sizeof f->id, 0);
  getrandom(f->sha, sizeof f->sha, 0);
  getrandom(f->salt, sizeof f->salt, 0);
  snprintf(f->key, sizeof f->key, "anchor-%016" PRIx64, n);
  f->pol.format_version = 1;
  f->pol.k = k;
  f->pol.m = m;
  f->pol.unit = 1 << 20;
  f->map.format_version = 1;
  f->map.policy = &f->pol;
  f->map.size = 4096;
  f->map.n_shards = k + m;
  f->map.shards = f->locp;
  for (unsigned i = 0; i < k + m; i++) {
    medshard__shard_location__init(&f->loc[i]);
    getrandom(f->digest[i], 16, 0);
    f->loc[i].index = i;
    f->loc[i].node_id = shard_nodes[i];
    f->loc[i].digest = (ProtobufCBinaryData){16, f->digest[i]};
    f->locp[i] = &f->loc[i];
  }
  f->man.format_version = 1;
  f->man.object_id = (ProtobufCBinaryData){16, f->id};
  f->man.bucket = (char *)bucket;
  f->man.key = f->key;
  f->man.size = 4096;
  f->man.sha256 = (ProtobufCBinaryData){32, f->sha};
  f->man.salt = (ProtobufCBinaryData){32, f->salt};
  f->man.shard_map = &f->map;
  f->put.manifest = &f->man;
  f->cmd.body_case = MEDSHARD__COMMAND__BODY_PUT_OBJECT;
  f->cmd.put_object = &f->put;
}

int bench_anchor_sizes(const char *bucket, unsigned batch, unsigned k, unsigned m,
                       size_t *entry, size_t *submit)
{
  struct fake_put *puts = msd_calloc(batch, sizeof *puts);
  Medshard__Command **cmds = msd_calloc(batch, sizeof *cmds);
  uint32_t nodes[48];
  uint8_t rid[16] = {0};
  int rc = puts != NULL && cmds != NULL ? 0 : -ENOMEM;
  for (unsigned i = 0; i < 48; i++)
    nodes[i] = i + 1;
  for (unsigned i = 0; rc == 0 && i < batch; i++) {
    fake_put_init(&puts[i], bucket, k, m, nodes, i);
    /* Every command carries a 16-byte request id by the time it is sent. */
    puts[i].cmd.request_id = (ProtobufCBinaryData){16, rid};
    cmds[i] = &puts[i].cmd;
  }
  if (rc == 0) {
    Medshard__CommandBatch b = MEDSHARD__COMMAND_BATCH__INIT;
    Medshard__CtlRequest q = ctl_request(MEDSHARD__CTL_OP__CTL_OP_SUBMIT);
    b.format_version = 1;
    b.timestamp_ms = (uint64_t)time(NULL) * 1000u; /* the varint width of today's clock */
    b.commands = q.commands = cmds;
    b.n_commands = q.n_commands = batch;
    *entry = medshard__command_batch__get_packed_size(&b);
    *submit = medshard__ctl_request__get_packed_size(&q);
  }
  msd_free(puts);
  msd_free(cmds);
  return rc;
}

/* ---- the clients ---- */

static void record(struct anchor_run *r, struct fake_put *puts, size_t n,
                   const Medshard__CtlResponse *resp, double t_submit, double ms)
{
  char hex[33]; /* the caller holds r->mu */
  for (size_t i = 0; i < n; i++) {
    const Medshard__Outcome *o = i < resp->n_outcomes ? resp->outcomes[i] : NULL;
    if (o == NULL || o->code != 0 || o->anchor == NULL) {
      r->failed++;
      if (o != NULL && r->failed < 5)
        fprintf(stderr, "bench anchor: rejected: %s\n", o->message);
      continue;
    }
    r->done++;
    if (msd_grow(&r->acked, &r->acked_cap, r->nacked, sizeof *r->acked, 4096) == 0)
      r->acked[r->nacked++] = (struct acked){o->anchor->leaf_index, t_submit};
    if (r->acks != NULL) {
      for (int b = 0; b < 16; b++)
        snprintf(hex + 2 * b, 3, "%02x", puts[i].id[b]);
      fprintf(r->acks, "%s %" PRIu64 "\n", hex, o->anchor->leaf_index);
    }
  }
  if (msd_grow(&r->lat_ms, &r->lat_cap, r->nlat, sizeof *r->lat_ms, 1024) == 0)
    r->lat_ms[r->nlat++] = ms;
}

/* How many anchors this client sends next (0: none left). */
static size_t take(struct anchor_run *r, uint64_t *first)
{
  pthread_mutex_lock(&r->mu);
  uint64_t taken = r->done + r->failed + r->taken, left = r->in->count - taken;
  size_t n = taken >= r->in->count || r->stopped
                 ? 0 : (size_t)(left < r->in->batch ? left : r->in->batch);
  r->taken += n;
  pthread_mutex_unlock(&r->mu);
  *first = taken;
  return n;
}

static void *client_main(void *arg)
{
  struct anchor_run *r = arg;
  const struct anchor_load *in = r->in;
  struct fake_put *puts = msd_calloc(in->batch, sizeof *puts);
  Medshard__Command **cmds = msd_calloc(in->batch, sizeof *cmds);
  uint64_t first;
  size_t n;
  while (puts != NULL && cmds != NULL && (n = take(r, &first)) != 0) {
    for (size_t i = 0; i < n; i++) {
      fake_put_init(&puts[i], in->bucket, in->k, in->m, r->shard_nodes, first + i);
      cmds[i] = &puts[i].cmd;
    }
    Medshard__CtlResponse *resp = NULL;
    double t0 = bench_now();
    /* A long deadline: leader changes stall submissions for seconds, and
     * the same request ids make every retry safe. */
    int rc = ctl_submit(in->addrs, cmds, n, 60000, &resp, NULL, 0);
    /* Moving n from "taken" to done/failed in one step keeps other
     * threads from handing out the same anchors twice. */
    pthread_mutex_lock(&r->mu);
    r->taken -= n;
    if (rc != 0 || resp->code != 0) {
      r->failed += n;
      r->stopped = in->stop_on_failure;
      fprintf(stderr, "bench anchor: submit failed: %s\n",
              rc != 0 ? msd_strerror(rc) : resp->message);
    } else {
      record(r, puts, n, resp, t0, (bench_now() - t0) * 1e3);
    }
    pthread_mutex_unlock(&r->mu);
    if (resp != NULL)
      medshard__ctl_response__free_unpacked(resp, NULL);
  }
  msd_free(puts);
  msd_free(cmds);
  return NULL;
}

/* ---- the seal watcher ---- */

void ba_sleep_s(double s)
{
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

/* The tree size of block `height` (its header's size_after). */
static int sealed_size(struct ctl_client *c, uint64_t height, uint64_t *size)
{
  Medshard__CtlRequest q = ctl_request(MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK);
  Medshard__CtlResponse *resp;
  struct block_header h;
  q.height = height;
  int rc = ctl_client_call(c, &q, 1000, &resp, NULL, NULL);
  if (rc != 0)
    return rc;
  rc = resp->code != 0 ? resp->code
       : resp->block == NULL ? MSD_EDECODE
                             : block_decode(resp->block->header.data, resp->block->header.len, &h);
  medshard__ctl_response__free_unpacked(resp, NULL);
  if (rc == 0)
    *size = h.size_after;
  return rc;
}

/* One HEAD; on a new sealed height, one GET_BLOCK for its tree size. The
 * time stamped is when the HEAD answer arrived, so a seal is never dated
 * before the node reported it. */
static int watch_poll(struct seal_watch *w, struct ctl_client *c)
{
  Medshard__CtlRequest q = ctl_request(MEDSHARD__CTL_OP__CTL_OP_HEAD);
  Medshard__CtlResponse *resp;
  int rc = ctl_client_call(c, &q, 1000, &resp, NULL, NULL);
  if (rc != 0)
    return rc;
  double t = bench_now();
  uint64_t sealed = resp->head ? resp->head->sealed : 0;
  uint64_t applied = resp->head ? resp->head->applied : 0;
  rc = resp->head == NULL ? MSD_EDECODE : 0;
  medshard__ctl_response__free_unpacked(resp, NULL);
  uint64_t size = 0;
  bool grew = rc == 0 && (sealed > w->height || !w->started);
  if (grew && sealed > 0)
    rc = sealed_size(c, sealed, &size);
  pthread_mutex_lock(&w->mu);
  if (rc == 0 && !w->started)
    w->applied0 = applied;
  if (rc == 0 && grew &&
      msd_grow(&w->pts, &w->cap, w->npts, sizeof *w->pts, 256) == 0) {
    w->pts[w->npts++] = (struct seal_point){t, size, applied};
    w->height = sealed;
  }
  w->started = w->started || rc == 0;
  pthread_mutex_unlock(&w->mu);
  return rc;
}

static void *watch_main(void *arg)
{
  struct seal_watch *w = arg;
  struct ctl_client *c = NULL;
  while (!atomic_load(&w->stop)) {
    int rc = c != NULL ? 0 : ctl_client_connect(w->addr[w->cur], 500, &c);
    if (rc == 0)
      rc = watch_poll(w, c);
    if (rc != 0) { /* busy, stopping or gone: try the next node */
      ctl_client_close(c);
      c = NULL;
      w->cur = (w->cur + 1) % w->naddr;
      pthread_mutex_lock(&w->mu);
      w->err = rc;
      pthread_mutex_unlock(&w->mu);
    }
    ba_sleep_s(WATCH_POLL_MS / 1e3);
  }
  ctl_client_close(c);
  return NULL;
}

/* Stops the watcher thread; its points stay readable until watch_free. */
static void watch_join(struct seal_watch *w)
{
  atomic_store(&w->stop, true);
  pthread_join(w->thread, NULL);
}

static void watch_free(struct seal_watch *w)
{
  pthread_mutex_destroy(&w->mu);
  msd_free(w->pts);
}

/* Starts the watcher and waits for its first HEAD, so the run's starting
 * applied index and sealed size are known before the first submit. On
 * failure nothing is left running or allocated. */
static int watch_start(struct seal_watch *w, const char *addrs)
{
  memset(w, 0, sizeof *w);
  for (const char *p = addrs; p != NULL && *p != 0 && w->naddr < BA_MAX_NODES;) {
    size_t len = strcspn(p, ",");
    snprintf(w->addr[w->naddr++], sizeof w->addr[0], "%.*s", (int)(len < 127 ? len : 127), p);
    p = p[len] == ',' ? p + len + 1 : NULL;
  }
  if (w->naddr == 0)
    return MSD_EPARAM;
  atomic_init(&w->stop, false);
  pthread_mutex_init(&w->mu, NULL);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    fprintf(stderr, "bench anchor: cannot start the seal watcher thread\n");
    watch_free(w);
    return MSD_ESTATE;
  }
  for (double end = bench_now() + WATCH_FIRST_WAIT_S; bench_now() < end; ba_sleep_s(0.005)) {
    pthread_mutex_lock(&w->mu);
    bool started = w->started;
    pthread_mutex_unlock(&w->mu);
    if (started)
      return 0;
  }
  watch_join(w);
  fprintf(stderr, "bench anchor: no HEAD from %s within %.0f s: %s\n", addrs, WATCH_FIRST_WAIT_S,
          msd_strerror(w->err));
  watch_free(w);
  return MSD_ETIMEDOUT;
}

/* Waits (at most wait_s) until the sealed size exceeds last_leaf. */
static bool watch_until(struct seal_watch *w, uint64_t last_leaf, double wait_s)
{
  for (double end = bench_now() + wait_s;; ba_sleep_s(WATCH_POLL_MS / 1e3)) {
    pthread_mutex_lock(&w->mu);
    bool done = w->npts > 0 && w->pts[w->npts - 1].size > last_leaf;
    pthread_mutex_unlock(&w->mu);
    if (done || bench_now() >= end)
      return done;
  }
}

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double ba_percentile(const double *v, size_t n, unsigned p)
{
  return n == 0 ? 0 : v[n * p / 100 < n ? n * p / 100 : n - 1];
}

double ba_median(double *v, size_t n)
{
  qsort(v, n, sizeof *v, cmp_double);
  return ba_percentile(v, n, 50);
}

/* The first point whose sealed size covers leaf, or NULL. */
static const struct seal_point *seal_of(const struct seal_watch *w, uint64_t leaf)
{
  size_t lo = 0, hi = w->npts;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (w->pts[mid].size > leaf)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo < w->npts ? &w->pts[lo] : NULL;
}

/* Submit -> sealed per anchor; the clock of the whole run stops at the seal
 * of the highest acknowledged leaf. The watcher has stopped. */
static void sealed_figures(const struct anchor_run *r, const struct seal_watch *w, double t0,
                           struct anchor_load_result *out)
{
  double *lat = msd_calloc(r->nacked ? r->nacked : 1, sizeof *lat);
  size_t n = 0;
  const struct seal_point *last = seal_of(w, out->last_leaf);
  for (size_t i = 0; lat != NULL && i < r->nacked; i++) {
    const struct seal_point *p = seal_of(w, r->acked[i].leaf);
    if (p != NULL)
      lat[n++] = (p->t - r->acked[i].t_submit) * 1e3;
  }
  qsort(lat, n, sizeof *lat, cmp_double);
  out->unsealed = r->nacked - n;
  out->all_sealed = last != NULL && n == r->nacked && r->nacked > 0;
  out->sealed_s = last != NULL ? last->t - t0 : 0;
  out->sealed_p50_ms = ba_percentile(lat, n, 50);
  out->sealed_p99_ms = ba_percentile(lat, n, 99);
  out->poll_ms = WATCH_POLL_MS;
  out->entries = last != NULL ? last->applied - w->applied0 : 0;
  msd_free(lat);
}

static void leaf_range(const struct anchor_run *r, struct anchor_load_result *out)
{
  out->first_leaf = UINT64_MAX;
  out->last_leaf = 0;
  for (size_t i = 0; i < r->nacked; i++) {
    out->first_leaf = r->acked[i].leaf < out->first_leaf ? r->acked[i].leaf : out->first_leaf;
    out->last_leaf = r->acked[i].leaf > out->last_leaf ? r->acked[i].leaf : out->last_leaf;
  }
  if (r->nacked == 0)
    out->first_leaf = 0;
}

/* The first k+m nodes of the cluster map, from the first of in->addrs that
 * answers: a node that is down (the one named first, say) does not stop the
 * benchmark while the others serve. */
static int lookup_nodes(const struct anchor_load *in, uint32_t *shard_nodes)
{
  Medshard__CtlResponse *resp;
  Medshard__CtlRequest req = ctl_request(MEDSHARD__CTL_OP__CTL_OP_GET_NODES);
  int rc = ctl_call_any(in->addrs, &req, 10000, &resp, NULL, NULL);
  if (rc != 0)
    return rc;
  rc = resp->code != 0 ? resp->code : resp->n_nodes >= in->k + in->m ? 0 : MSD_ENODES;
  for (unsigned i = 0; rc == 0 && i < in->k + in->m; i++)
    shard_nodes[i] = resp->nodes[i]->node_id;
  medshard__ctl_response__free_unpacked(resp, NULL);
  return rc;
}

/* Starts the clients, waits for them; returns how many ran. */
static unsigned run_clients(struct anchor_run *r)
{
  pthread_t th[64];
  unsigned started = 0;
  while (started < r->in->clients && pthread_create(&th[started], NULL, client_main, r) == 0)
    started++;
  if (started < r->in->clients)
    fprintf(stderr, "bench anchor: only %u of %u client threads started\n", started,
            r->in->clients);
  for (unsigned i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  return started;
}

int bench_anchor_load(const struct anchor_load *in, struct anchor_load_result *out)
{
  struct anchor_run r = {.in = in};
  struct seal_watch w;
  memset(out, 0, sizeof *out);
  int rc = lookup_nodes(in, r.shard_nodes);
  if (rc != 0) {
    fprintf(stderr, "bench anchor: cannot read the cluster map from %s: %s\n", in->addrs,
            msd_strerror(rc));
    return rc;
  }
  r.acks = in->acks_path ? fopen(in->acks_path, "w") : NULL;
  if (in->acks_path != NULL && r.acks == NULL) {
    rc = -errno;
    fprintf(stderr, "bench anchor: cannot write %s: %s\n", in->acks_path, msd_strerror(rc));
    return rc;
  }
  if (in->watch != NULL && (rc = watch_start(&w, in->watch)) != 0) {
    if (r.acks)
      fclose(r.acks);
    return rc;
  }
  pthread_mutex_init(&r.mu, NULL);
  double t0 = bench_now();
  unsigned ran = run_clients(&r);
  out->commit_s = bench_now() - t0;
  out->done = r.done;
  out->failed = r.failed + (in->count - r.done - r.failed);
  leaf_range(&r, out);
  qsort(r.lat_ms, r.nlat, sizeof *r.lat_ms, cmp_double);
  out->commit_p50_ms = ba_percentile(r.lat_ms, r.nlat, 50);
  out->commit_p99_ms = ba_percentile(r.lat_ms, r.nlat, 99);
  if (in->watch != NULL) {
    if (r.nacked > 0 && !watch_until(&w, out->last_leaf, in->seal_wait_s))
      fprintf(stderr, "bench anchor: leaf %" PRIu64 " not sealed within %.0f s of the last"
              " acknowledgement\n", out->last_leaf, in->seal_wait_s);
    watch_join(&w); /* the points are ours alone from here */
    sealed_figures(&r, &w, t0, out);
    watch_free(&w);
  }
  if (r.acks)
    fclose(r.acks);
  msd_free(r.lat_ms);
  msd_free(r.acked);
  pthread_mutex_destroy(&r.mu);
  return ran == 0 ? MSD_ESTATE : 0;
}

/* ---- --node mode ---- */

/* Every logged anchor's object is in the node's state with the logged
 * leaf index, and the node holds no more PUT leaves than were logged
 * (so none was applied twice). */
static int check_acks(const char *node, const char *path, uint64_t *checked)
{
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "bench anchor: cannot read %s\n", path);
    return 2;
  }
  struct ctl_client *c = NULL;
  int rc = ctl_client_connect(node, 3000, &c);
  char hex[40];
  uint64_t leaf;
  *checked = 0;
  while (rc == 0 && fscanf(f, "%39s %" SCNu64, hex, &leaf) == 2) {
    uint8_t id[16];
    for (int b = 0; b < 16; b++) {
      unsigned v = 0;
      sscanf(hex + 2 * b, "%2x", &v);
      id[b] = (uint8_t)v;
    }
    Medshard__CtlRequest req = ctl_request(MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST);
    req.object_id = (ProtobufCBinaryData){16, id};
    Medshard__CtlResponse *resp;
    rc = ctl_client_call(c, &req, 10000, &resp, NULL, NULL);
    if (rc != 0)
      break;
    if (resp->manifest == NULL || resp->manifest->anchor == NULL ||
        resp->manifest->anchor->leaf_index != leaf) {
      fprintf(stderr, "bench anchor: node %s: acknowledged anchor %s (leaf %" PRIu64 ") is %s\n",
              node, hex, leaf, resp->manifest == NULL ? "missing" : "at another leaf");
      rc = MSD_ECORRUPT;
    }
    medshard__ctl_response__free_unpacked(resp, NULL);
    (*checked)++;
  }
  if (rc != 0 && rc != MSD_ECORRUPT)
    fprintf(stderr, "bench anchor: node %s: %s\n", node, msd_strerror(rc));
  fclose(f);
  ctl_client_close(c);
  return rc == 0 ? 0 : 1;
}

static int remote_main(const struct anchor_opts *o)
{
  if (o->check != NULL) {
    uint64_t n;
    int rc = check_acks(o->node, o->check, &n);
    if (rc == 0)
      printf("%s: all %" PRIu64 " acknowledged anchors present at their leaves\n", o->node, n);
    return rc;
  }
  struct anchor_load in = {.addrs = o->node, .bucket = o->bucket, .acks_path = o->acks,
                           .clients = o->clients, .batch = o->batch, .k = 2, .m = 1,
                           .count = o->count};
  struct anchor_load_result res;
  if (bench_anchor_load(&in, &res) != 0)
    return 1;
  double secs = res.commit_s;
  if (o->json)
    printf("{\"anchors\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"per_s\":%.0f,"
           "\"commit_p50_ms\":%.2f,\"commit_p99_ms\":%.2f}\n",
           res.done, res.failed, secs, (double)res.done / secs, res.commit_p50_ms,
           res.commit_p99_ms);
  else
    printf("anchors committed: %" PRIu64 " (%" PRIu64 " failed) in %.2f s = %.0f/s; "
           "submit->commit p50 %.2f ms, p99 %.2f ms (batches of %u, %u clients)\n",
           res.done, res.failed, secs, (double)res.done / secs, res.commit_p50_ms,
           res.commit_p99_ms, o->batch, o->clients);
  return res.failed == 0 ? 0 : 1;
}

/* ---- flags ---- */

static void usage(void)
{
  fprintf(stderr,
          "usage: medshard bench anchor --nodes N [--dir PARENT] [--keep] [--cut-ms T]\n"
          "         [--ceiling-s S] [--proof-leaves L] [--count C] [--clients K] [--batch B]\n"
          "         [--json]\n"
          "       medshard bench anchor --node HOST:PORT[,...] [--bucket B (2+1)] [--count C]\n"
          "         [--clients K] [--batch B] [--acks FILE] [--json]\n"
          "       medshard bench anchor --node HOST:PORT --check ACKS_FILE\n"
          "--nodes N (1..9) starts N local voters in a temp dir under PARENT ($TMPDIR or\n"
          "/tmp), runs the load, measures the raw libraft ceiling first (S seconds, 0 to\n"
          "skip; default 3) and proofs in a tree of L leaves (0 to skip; default 10^6).\n"
          "Limits: --clients 1..64, --batch 1..1024 (and one SUBMIT must fit the 64 KiB\n"
          "control message: at most 271 for 2+1), --count >= 1, --cut-ms 1..60000.\n");
}

/* Parses a whole decimal number in [lo, hi]. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
  char *end;
  if (s == NULL || *s < '0' || *s > '9')
    return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end != 0 || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

static bool parse_flag(int c, const char *arg, struct anchor_opts *o)
{
  uint64_t v = 0;
  char *end;
  switch (c) {
  case 'n': o->node = arg; return true;
  case 'N': return parse_u64(arg, 1, BA_MAX_NODES, &v) && (o->nodes = (unsigned)v, true);
  case 'b': o->bucket = arg; return true;
  case 'c': return parse_u64(arg, 1, UINT64_MAX >> 1, &o->count);
  case 'C': return parse_u64(arg, 1, 64, &v) && (o->clients = (unsigned)v, true);
  case 'B': return parse_u64(arg, 1, 1024, &v) && (o->batch = (unsigned)v, true);
  case 'a': o->acks = arg; return true;
  case 'k': o->check = arg; return true;
  case 'j': o->json = true; return true;
  case 'd': o->dir = arg; return true;
  case 'K': o->keep = true; return true;
  case 't': return parse_u64(arg, 1, 60000, &v) && (o->cut_ms = (unsigned)v, true);
  case 'p': return parse_u64(arg, 0, (uint64_t)1 << 32, &o->proof_leaves);
  case 's':
    o->ceiling_s = strtod(arg, &end);
    return *arg != 0 && *end == 0 && o->ceiling_s >= 0 && o->ceiling_s <= 60;
  default: return false;
  }
}

/* Flags that make sense in only one of the two modes. */
static const char *mode_conflict(const struct anchor_opts *o, bool local_only_seen)
{
  if (o->node != NULL && o->nodes != 0)
    return "--node (a running cluster) and --nodes (start one) exclude each other";
  if (o->node == NULL && o->nodes == 0)
    return "give --node ADDRS or --nodes N";
  if (o->nodes != 0 && o->check != NULL)
    return "--check needs --node: a --nodes cluster is gone when the run ends";
  if (o->node != NULL && local_only_seen)
    return "--dir, --keep, --cut-ms, --ceiling-s and --proof-leaves go with --nodes";
  return NULL;
}

void ba_policy(unsigned nodes, unsigned *k, unsigned *m)
{
  *k = nodes == 0 || nodes >= 3 ? 2 : 1; /* 0: --node mode's bucket, 2+1 */
  *m = nodes == 0 || nodes >= 3 ? 1 : nodes - 1;
}

/* The SUBMIT of one batch must fit one control-plane message; otherwise
 * every submission would fail (and be retried until its deadline). Names
 * the largest batch that fits. */
static bool batch_fits(const struct anchor_opts *o)
{
  unsigned k, m, lo = 1, hi = o->batch;
  size_t entry, submit, s;
  ba_policy(o->nodes, &k, &m);
  if (bench_anchor_sizes(o->bucket, o->batch, k, m, &entry, &submit) != 0 || submit <= WIRE_MSG_MAX)
    return true; /* out of memory: let the run report it */
  while (lo < hi) { /* the largest batch whose SUBMIT fits */
    unsigned mid = lo + (hi - lo + 1) / 2;
    if (bench_anchor_sizes(o->bucket, mid, k, m, &entry, &s) == 0 && s <= WIRE_MSG_MAX)
      lo = mid;
    else
      hi = mid - 1;
  }
  fprintf(stderr, "medshard bench anchor: --batch %u: one SUBMIT of %u PutObjects is %zu bytes,"
          " over the control plane's %u-byte message limit; use --batch %u or less\n",
          o->batch, o->batch, submit, WIRE_MSG_MAX, lo);
  return false;
}

static const char *flag_name(const struct option *opts, int c)
{
  for (; opts->name != NULL; opts++)
    if (opts->val == c)
      return opts->name;
  return "?"; /* UNTESTED: every value getopt returns is in opts */
}

int bench_anchor_main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"node", 1, 0, 'n'},  {"nodes", 1, 0, 'N'},     {"bucket", 1, 0, 'b'},
      {"count", 1, 0, 'c'}, {"clients", 1, 0, 'C'},   {"batch", 1, 0, 'B'},
      {"acks", 1, 0, 'a'},  {"check", 1, 0, 'k'},     {"json", 0, 0, 'j'},
      {"dir", 1, 0, 'd'},   {"keep", 0, 0, 'K'},      {"cut-ms", 1, 0, 't'},
      {"ceiling-s", 1, 0, 's'}, {"proof-leaves", 1, 0, 'p'}, {"help", 0, 0, 'h'},
      {0, 0, 0, 0}};
  struct anchor_opts o = {.bucket = "anchors", .clients = 4, .batch = 64, .count = 10000,
                          .cut_ms = 100, .ceiling_s = 3, .proof_leaves = 1000000};
  bool local_only = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'h') {
      usage();
      return 0;
    }
    local_only = local_only || strchr("dKtsp", c) != NULL;
    if (c == '?' || !parse_flag(c, optarg, &o)) {
      if (c != '?')
        fprintf(stderr, "medshard bench anchor: bad value '%s' for --%s\n", optarg,
                flag_name(opts, c));
      usage();
      return 2;
    }
  }
  const char *why = optind < argc ? "unexpected argument" : mode_conflict(&o, local_only);
  if (why != NULL) {
    fprintf(stderr, "medshard bench anchor: %s%s%s\n", why, optind < argc ? " " : "",
            optind < argc ? argv[optind] : "");
    usage();
    return 2;
  }
  if (o.check == NULL && !batch_fits(&o))
    return 2;
  return o.nodes != 0 ? bench_anchor_local(&o) : remote_main(&o);
}
