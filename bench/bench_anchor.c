/* `medshard bench anchor`: anchors submitted to a running cluster through
 * the control plane, in batches, by several client threads; committed
 * anchors/s and submit-to-commit latency. With --acks FILE each
 * acknowledged anchor is logged (object id, leaf index) and --check FILE
 * later proves every logged anchor is in a node's state exactly once:
 * the multi-process chain test uses both. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench/bench.h"
#include "chain-anchor/ctl_client.h"
#include "common/alloc.h"
#include "common/err.h"

struct anchor_run {
  const char *nodes, *bucket, *acks_path;
  unsigned clients, batch;
  uint64_t count;        /* anchors in total */
  uint32_t shard_nodes[48];
  unsigned k, m;
  FILE *acks;
  pthread_mutex_t mu;
  uint64_t done, failed;
  double *lat_ms;        /* one per batch */
  size_t nlat, lat_cap;
};

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

static void fake_put_init(struct fake_put *f, const struct anchor_run *r, uint64_t n)
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
  f->pol = (Medshard__ErasurePolicy)MEDSHARD__ERASURE_POLICY__INIT;
  f->pol.format_version = 1;
  f->pol.k = r->k;
  f->pol.m = r->m;
  f->pol.unit = 1 << 20;
  f->map.format_version = 1;
  f->map.policy = &f->pol;
  f->map.size = 4096;
  f->map.n_shards = r->k + r->m;
  f->map.shards = f->locp;
  for (unsigned i = 0; i < r->k + r->m; i++) {
    medshard__shard_location__init(&f->loc[i]);
    getrandom(f->digest[i], 16, 0);
    f->loc[i].index = i;
    f->loc[i].node_id = r->shard_nodes[i];
    f->loc[i].digest = (ProtobufCBinaryData){16, f->digest[i]};
    f->locp[i] = &f->loc[i];
  }
  f->man.format_version = 1;
  f->man.object_id = (ProtobufCBinaryData){16, f->id};
  f->man.bucket = (char *)r->bucket;
  f->man.key = f->key;
  f->man.size = 4096;
  f->man.sha256 = (ProtobufCBinaryData){32, f->sha};
  f->man.salt = (ProtobufCBinaryData){32, f->salt};
  f->man.shard_map = &f->map;
  f->put.manifest = &f->man;
  f->cmd.body_case = MEDSHARD__COMMAND__BODY_PUT_OBJECT;
  f->cmd.put_object = &f->put;
}

static void record(struct anchor_run *r, struct fake_put *puts, size_t n,
                   const Medshard__CtlResponse *resp, double ms)
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
    if (r->acks != NULL) {
      for (int b = 0; b < 16; b++)
        snprintf(hex + 2 * b, 3, "%02x", puts[i].id[b]);
      fprintf(r->acks, "%s %" PRIu64 "\n", hex, o->anchor->leaf_index);
    }
  }
  if (msd_grow(&r->lat_ms, &r->lat_cap, r->nlat, sizeof *r->lat_ms, 1024) == 0)
    r->lat_ms[r->nlat++] = ms;
}

static void *client_main(void *arg)
{
  struct anchor_run *r = arg;
  struct fake_put *puts = msd_calloc(r->batch, sizeof *puts);
  Medshard__Command **cmds = msd_calloc(r->batch, sizeof *cmds);
  static uint64_t seq;
  for (;;) {
    pthread_mutex_lock(&r->mu);
    uint64_t taken = r->done + r->failed + seq;
    size_t n = taken >= r->count ? 0 : (size_t)(r->count - taken < r->batch ? r->count - taken : r->batch);
    seq += n;
    pthread_mutex_unlock(&r->mu);
    if (n == 0 || puts == NULL || cmds == NULL)
      break;
    for (size_t i = 0; i < n; i++) {
      fake_put_init(&puts[i], r, taken + i);
      cmds[i] = &puts[i].cmd;
    }
    Medshard__CtlResponse *resp = NULL;
    double t0 = bench_now();
    /* A long deadline: leader changes stall submissions for seconds, and
     * the same request ids make every retry safe. */
    int rc = ctl_submit(r->nodes, cmds, n, 60000, &resp, NULL, 0);
    /* Moving n from "taken" to done/failed in one step keeps other
     * threads from handing out the same anchors twice. */
    pthread_mutex_lock(&r->mu);
    seq -= n;
    if (rc != 0 || resp->code != 0) {
      r->failed += n;
      fprintf(stderr, "bench anchor: submit failed: %s\n",
              rc != 0 ? msd_strerror(rc) : resp->message);
    } else {
      record(r, puts, n, resp, (bench_now() - t0) * 1e3);
    }
    pthread_mutex_unlock(&r->mu);
    if (resp != NULL)
      medshard__ctl_response__free_unpacked(resp, NULL);
  }
  msd_free(puts);
  msd_free(cmds);
  return NULL;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

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
  struct ctl_client *c;
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
    Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
    req.format_version = 1;
    req.op = MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST;
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
  fclose(f);
  ctl_client_close(c);
  return rc == 0 ? 0 : 1;
}

static int lookup_nodes(struct anchor_run *r)
{
  char first[128];
  snprintf(first, sizeof first, "%.*s", (int)strcspn(r->nodes, ","), r->nodes);
  struct ctl_client *c;
  Medshard__CtlResponse *resp;
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  req.format_version = 1;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_client_connect(first, 3000, &c);
  if (rc == 0)
    rc = ctl_client_call(c, &req, 10000, &resp, NULL, NULL);
  ctl_client_close(c);
  if (rc != 0)
    return rc;
  rc = resp->n_nodes >= r->k + r->m ? 0 : MSD_ENODES;
  for (unsigned i = 0; rc == 0 && i < r->k + r->m; i++)
    r->shard_nodes[i] = resp->nodes[i]->node_id;
  medshard__ctl_response__free_unpacked(resp, NULL);
  return rc;
}

int bench_anchor_main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"node", 1, 0, 'n'},   {"bucket", 1, 0, 'b'}, {"count", 1, 0, 'c'}, {"clients", 1, 0, 'C'},
      {"batch", 1, 0, 'B'},  {"acks", 1, 0, 'a'},   {"check", 1, 0, 'k'}, {"json", 0, 0, 'j'},
      {0, 0, 0, 0}};
  struct anchor_run r = {.bucket = "anchors", .clients = 4, .batch = 64, .count = 10000,
                         .k = 2, .m = 1};
  const char *check = NULL;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'n': r.nodes = optarg; break;
    case 'b': r.bucket = optarg; break;
    case 'c': r.count = strtoull(optarg, NULL, 10); break;
    case 'C': r.clients = (unsigned)atoi(optarg); break;
    case 'B': r.batch = (unsigned)atoi(optarg); break;
    case 'a': r.acks_path = optarg; break;
    case 'k': check = optarg; break;
    case 'j': json = true; break;
    default: return 2;
    }
  }
  if (r.nodes == NULL || r.clients == 0 || r.clients > 64 || r.batch == 0 || r.batch > 1024) {
    fprintf(stderr, "usage: medshard bench anchor --node HOST:PORT[,...] [--bucket B (2+1)]\n"
                    "         [--count N] [--clients C <= 64] [--batch B <= 1024] [--acks FILE]\n"
                    "       medshard bench anchor --node HOST:PORT --check ACKS_FILE\n");
    return 2;
  }
  if (check != NULL) {
    uint64_t n;
    int rc = check_acks(r.nodes, check, &n);
    if (rc == 0)
      printf("%s: all %" PRIu64 " acknowledged anchors present at their leaves\n", r.nodes, n);
    return rc;
  }
  if (lookup_nodes(&r) != 0) {
    fprintf(stderr, "bench anchor: cannot read the cluster map from %s\n", r.nodes);
    return 1;
  }
  r.acks = r.acks_path ? fopen(r.acks_path, "w") : NULL;
  pthread_mutex_init(&r.mu, NULL);
  pthread_t th[64];
  double t0 = bench_now();
  for (unsigned i = 0; i < r.clients; i++)
    pthread_create(&th[i], NULL, client_main, &r);
  for (unsigned i = 0; i < r.clients; i++)
    pthread_join(th[i], NULL);
  double secs = bench_now() - t0;
  if (r.acks)
    fclose(r.acks);
  qsort(r.lat_ms, r.nlat, sizeof *r.lat_ms, cmp_double);
  double p50 = r.nlat ? r.lat_ms[r.nlat / 2] : 0, p99 = r.nlat ? r.lat_ms[r.nlat * 99 / 100] : 0;
  if (json)
    printf("{\"anchors\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"per_s\":%.0f,"
           "\"commit_p50_ms\":%.2f,\"commit_p99_ms\":%.2f}\n",
           r.done, r.failed, secs, (double)r.done / secs, p50, p99);
  else
    printf("anchors committed: %" PRIu64 " (%" PRIu64 " failed) in %.2f s = %.0f/s; "
           "submit->commit p50 %.2f ms, p99 %.2f ms (batches of %u, %u clients)\n",
           r.done, r.failed, secs, (double)r.done / secs, p50, p99, r.batch, r.clients);
  msd_free(r.lat_ms);
  pthread_mutex_destroy(&r.mu);
  return r.failed == 0 ? 0 : 1;
}
