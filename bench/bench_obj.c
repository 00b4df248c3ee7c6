/* `medshard bench put|get`: object PUT and GET throughput through the
 * client API (cluster/client.h) against a dev cluster this run starts (or
 * a running one), a degraded GET with nodes killed, a small-object ingest
 * from several clients, and in the same run the physical limits those
 * figures are compared with: fio on the data directory's filesystem and
 * loopback TCP. Both verbs run every phase and print every figure; `put`
 * leads with the PUT figures, `get` with the GET ones. */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_obj_int.h"
#include "cluster/client.h"
#include "common/err.h"

#define GIB ((uint64_t)1 << 30)

/* Everything one run holds. */
struct obj_run {
  const struct obj_opts *o;
  struct obj_cluster cl;
  struct msd_client *c;
  const char *addrs, *bucket;
  char prefix[64];          /* key prefix unique to this run */
  char big_key[96];         /* the object GETs read: the last PUT that succeeded */
  uint64_t big_seed, big_sum; /* big_sum: obj_body_sum, made once for every GET */
  Medshard__Manifest *man;  /* its manifest (shard map for the degraded phase) */
  struct obj_report rep;
};

/* One progress line on stderr, stamped with CLOCK_MONOTONIC seconds so a
 * `perf record -k CLOCK_MONOTONIC` profile can be cut per phase. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "bench [t=%.3f] %s\n", bench_now(), line);
}

/* ---- CPU accounting ---- */

/* CPU used so far by the node processes running now and by this one. */
struct cpu_snap {
  pid_t pid[64];
  double cpu[64];
  size_t n;
  double client, machine, t;
  bool nodes;
};

static void cpu_snap(struct obj_run *r, struct cpu_snap *s)
{
  struct obj_node_role roles[64];
  size_t n = 0;
  memset(s, 0, sizeof *s);
  if (r->cl.dev_dir[0] != 0 && obj_cluster_roles(&r->cl, roles, 64, &n) == 0)
    for (size_t i = 0; i < n; i++)
      if (roles[i].alive && roles[i].pid > 0 && (s->cpu[s->n] = obj_proc_cpu_s(roles[i].pid)) >= 0)
        s->pid[s->n++] = roles[i].pid;
  s->nodes = s->n > 0;
  s->client = obj_proc_cpu_s(0);
  s->machine = obj_machine_busy_s();
  s->t = bench_now();
}

/* What the phase since `a` cost: nodes present at both ends, and us. */
static void cpu_since(struct obj_run *r, const struct cpu_snap *a, uint64_t bytes,
                      struct obj_cpu *out)
{
  struct cpu_snap b;
  cpu_snap(r, &b);
  memset(out, 0, sizeof *out);
  out->bytes = bytes;
  out->client_s = b.client - a->client;
  out->nodes_known = a->nodes && b.nodes;
  for (size_t i = 0; i < a->n; i++)
    for (size_t j = 0; j < b.n; j++)
      if (a->pid[i] == b.pid[j]) {
        double d = b.cpu[j] - a->cpu[i];
        out->nodes_s += d;
        out->busiest_s = d > out->busiest_s ? d : out->busiest_s;
      }
  out->wall_s = b.t - a->t;
  /* Not exact (a killed node's last ticks, `dev status` itself), so never
   * below zero; the point is how much of the machine others took. */
  double others = b.machine - a->machine - out->nodes_s - out->client_s;
  out->others_s = others > 0 && a->machine >= 0 ? others : 0;
}

/* ---- phases ---- */

static void phase_put(struct obj_run *r)
{
  const struct obj_opts *o = r->o;
  struct cpu_snap cs;
  cpu_snap(r, &cs);
  for (unsigned i = 0; i < o->runs; i++) {
    char key[96];
    Medshard__Manifest *m = NULL;
    double s;
    uint64_t seed = (uint64_t)getpid() << 20 | i;
    snprintf(key, sizeof key, "%sbig-%u", r->prefix, i);
    note("PUT %u/%u: %s (%" PRIu64 " bytes)", i + 1, o->runs, key, o->size);
    int rc = obj_put(r->c, r->bucket, key, seed, o->size, &s, &m);
    if (rc != 0) {
      r->rep.put.rc = r->rep.put.rc ? r->rep.put.rc : rc;
      continue;
    }
    r->rep.put.s[r->rep.put.n++] = s;
    note("PUT %u/%u done: %.3f s = %.1f MB/s", i + 1, o->runs, s, (double)o->size / s / 1e6);
    if (r->man != NULL)
      medshard__manifest__free_unpacked(r->man, NULL);
    r->man = m;
    snprintf(r->big_key, sizeof r->big_key, "%s", key);
    r->big_seed = seed;
    const Medshard__ShardMap *sm = m->shard_map;
    if (sm != NULL && sm->policy != NULL)
      r->rep.k = sm->policy->k, r->rep.m = sm->policy->m;
  }
  cpu_since(r, &cs, r->rep.put.n * o->size, &r->rep.put.cpu);
}

/* runs whole GETs of the big object into rs. */
static void get_runs(struct obj_run *r, struct obj_runs *rs, const char *what)
{
  struct cpu_snap cs;
  cpu_snap(r, &cs);
  for (unsigned i = 0; i < r->o->runs; i++) {
    double s;
    note("%s %u/%u: %s", what, i + 1, r->o->runs, r->big_key);
    int rc = obj_get(r->c, r->bucket, r->big_key, r->o->size, r->big_sum, &s);
    if (rc != 0) {
      rs->rc = rs->rc ? rs->rc : rc;
      continue;
    }
    rs->s[rs->n++] = s;
    note("%s %u/%u done: %.3f s = %.1f MB/s", what, i + 1, r->o->runs, s,
         (double)r->o->size / s / 1e6);
  }
  cpu_since(r, &cs, rs->n * r->o->size, &rs->cpu);
}

static void phase_limits(struct obj_run *r)
{
  struct obj_limits *l = &r->rep.pass[r->rep.npass++];
  note("limits pass %u: loopback TCP, %" PRIu64 " bytes", r->rep.npass, r->o->limit_bytes);
  int rc = obj_loopback(r->o->limit_bytes, l);
  if (r->rep.fio) {
    note("limits pass %u: fio in %s, %u+%u layout", r->rep.npass, r->cl.fio_dir, r->rep.k,
         r->rep.m);
    int frc = obj_fio(r->cl.fio_dir, r->rep.k, r->rep.m, r->o->limit_bytes, l);
    rc = rc ? rc : frc;
  }
  r->rep.limits_rc = r->rep.limits_rc ? r->rep.limits_rc : rc;
  note("limits pass %u done: loopback %.1f MB/s, fio write %.1f MB/s, read %.1f MB/s",
       r->rep.npass, l->loopback_bps / 1e6, l->fio_write_bps / 1e6, l->fio_read_bps / 1e6);
}

static void phase_small(struct obj_run *r)
{
  char prefix[96];
  snprintf(prefix, sizeof prefix, "%ssmall-", r->prefix);
  struct cpu_snap cs;
  note("small objects: %" PRIu64 " x %u KiB from %u clients", r->o->small_count, OBJ_SMALL >> 10,
       r->o->clients);
  cpu_snap(r, &cs);
  r->rep.small_rc = obj_small_ingest(r->addrs, r->bucket, prefix, r->o->small_count,
                                     r->o->clients, &r->rep.small);
  cpu_since(r, &cs, r->rep.small.done * OBJ_SMALL, &r->rep.small_cpu);
  if (r->rep.small_rc == 0 && r->rep.small.failed > 0)
    r->rep.small_rc = MSD_EUNAVAILABLE;
  note("small objects done: %" PRIu64 " stored, %" PRIu64 " failed in %.3f s", r->rep.small.done,
       r->rep.small.failed, r->rep.small.wall_s);
}

/* Picks up to `want` nodes holding data shards of r->man to kill: never
 * the Raft leader, standbys first, and no more voters than leaves a
 * majority of voters running (a GET needs no Raft, but the restarts and
 * the next phases should not wait for an election). */
static unsigned pick_victims(struct obj_run *r, unsigned want, uint32_t *out)
{
  struct obj_node_role roles[64];
  size_t n;
  if (obj_cluster_roles(&r->cl, roles, 64, &n) != 0)
    return 0;
  unsigned voters = 0, got = 0, spare;
  for (size_t i = 0; i < n; i++)
    voters += roles[i].voter;
  spare = voters > 0 ? voters - (voters / 2 + 1) : 0;
  const Medshard__ShardMap *sm = r->man->shard_map;
  for (int pass = 0; pass < 2 && got < want; pass++)
    for (size_t s = 0; s < sm->n_shards && s < r->rep.k && got < want; s++) {
      uint32_t id = sm->shards[s]->node_id;
      for (size_t i = 0; id != 0 && i < n; i++) {
        const struct obj_node_role *nr = &roles[i];
        bool taken = false;
        for (unsigned j = 0; j < got; j++)
          taken = taken || out[j] == id;
        if (nr->id != id || taken || !nr->alive || nr->leader || nr->voter != (pass == 1))
          continue;
        if (nr->voter && spare == 0)
          continue;
        spare -= nr->voter;
        out[got++] = id;
      }
    }
  return got;
}

static void phase_degraded(struct obj_run *r)
{
  unsigned want = r->rep.m < OBJ_MAX_DOWN ? r->rep.m : OBJ_MAX_DOWN;
  if (r->man == NULL)
    r->rep.deg_skipped = "no object was stored";
  else if (want == 0)
    r->rep.deg_skipped = "the policy has no parity (m = 0): no node can be lost";
  else if (r->cl.dev_dir[0] == 0)
    r->rep.deg_skipped = "--node without --dev-dir: this run cannot kill that cluster's nodes";
  if (r->rep.deg_skipped != NULL) {
    note("degraded GET skipped: %s", r->rep.deg_skipped);
    return;
  }
  r->rep.ndown = pick_victims(r, want, r->rep.down);
  if (r->rep.ndown < want) {
    r->rep.deg_skipped = "not enough data-shard nodes can be killed without the Raft leader or"
                         " quorum";
    r->rep.deg.rc = MSD_ENODES;
    note("degraded GET not run: %s", r->rep.deg_skipped);
    return;
  }
  int rc = 0;
  unsigned killed = 0;
  for (unsigned i = 0; i < r->rep.ndown && rc == 0; i++) {
    note("degraded GET: SIGKILL node %" PRIu32 " (holds a data shard)", r->rep.down[i]);
    if ((rc = obj_cluster_kill(&r->cl, r->rep.down[i])) == 0)
      killed++;
  }
  if (rc == 0)
    get_runs(r, &r->rep.deg, "degraded GET");
  for (unsigned i = 0; i < killed; i++) {
    note("degraded GET: starting node %" PRIu32 " again", r->rep.down[i]);
    int src = obj_cluster_start(&r->cl, r->rep.down[i]);
    rc = rc ? rc : src;
  }
  r->rep.deg.rc = r->rep.deg.rc ? r->rep.deg.rc : rc;
}

/* The whole sequence, on a cluster that answers at r->addrs. The limits
 * are measured twice, between the phases, and the best pass counts. */
static void run_phases(struct obj_run *r)
{
  struct msd_error e = {0};
  int rc = msd_client_open(r->addrs, &r->c, &e);
  if (rc != 0) {
    fprintf(stderr, "medshard bench: %s\n", e.msg);
    r->rep.put.rc = rc;
    return;
  }
  phase_put(r);
  if (r->man != NULL)
    r->big_sum = obj_body_sum(r->big_seed, r->o->size);
  phase_limits(r);
  if (r->man != NULL)
    get_runs(r, &r->rep.get, "GET");
  else
    r->rep.get.rc = MSD_ENOTFOUND;
  if (r->o->small_count > 0)
    phase_small(r);
  phase_degraded(r);
  phase_limits(r);
  msd_client_close(r->c);
  r->c = NULL;
}

/* Generator speed, client side: one pass over the body (words made and
 * summed), not a limit but the cost the PUT's read callback adds. */
static void time_generator(struct obj_run *r)
{
  uint64_t bytes = r->o->size < (256u << 20) ? r->o->size : (256u << 20);
  double t0 = bench_now();
  volatile uint64_t sum = obj_body_sum(1, bytes);
  (void)sum;
  double s = bench_now() - t0;
  r->rep.gen_gbps = s > 0 ? (double)bytes / s / 1e9 : 0;
}

static int bench_run(const struct obj_opts *o)
{
  static struct obj_run r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.rep.o = o;
  r.rep.k = o->k, r.rep.m = o->m;
  r.bucket = o->bucket;
  r.rep.fio = obj_fio_present();
  r.rep.ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (!r.rep.fio)
    fprintf(stderr, "medshard bench: fio is not installed: no disk limits (scripts/bootstrap"
            " installs it: apt-get install fio)\n");
  snprintf(r.prefix, sizeof r.prefix, "bench-%ld-%d-", (long)time(NULL), (int)getpid());
  bool own = o->node == NULL;
  if (obj_cluster_prepare(&r.cl, o->dir, o->dev_dir, own, o->keep) != 0)
    return 1;
  int rc = 0;
  if (own) {
    note("dev up: %u nodes, %u+%u, in %s", o->nodes, o->k, o->m, r.cl.dev_dir);
    double t0 = bench_now();
    rc = obj_cluster_up(&r.cl, o->nodes, o->k, o->m);
    r.rep.up_s = bench_now() - t0;
    r.addrs = r.cl.control;
  } else {
    r.addrs = o->node;
  }
  time_generator(&r);
  if (rc == 0)
    run_phases(&r);
  bool failed = rc != 0 || r.rep.put.rc || r.rep.get.rc || r.rep.deg.rc || r.rep.small_rc ||
                r.rep.limits_rc;
  if (failed && rc == 0)
    obj_cluster_log_tails(&r.cl);
  if (r.man != NULL)
    medshard__manifest__free_unpacked(r.man, NULL);
  int down = obj_cluster_finish(&r.cl);
  if (rc == 0) {
    if (o->json)
      obj_print_json(&r.rep);
    else
      obj_print_human(&r.rep);
  }
  return failed || down != 0 ? 1 : 0;
}

/* ---- options ---- */

static void usage(FILE *f, const char *verb)
{
  fprintf(f,
          "usage: medshard bench %s [--size 1GiB] [--nodes 6] [--ec 4+2] [--dir DIR]\n"
          "                       [--small-count 2000] [--clients 4] [--runs 3]\n"
          "                       [--limit-size BYTES] [--keep] [--json]\n"
          "       medshard bench %s --node ADDRS [--bucket NAME] [--dev-dir DEVDIR] [...]\n"
          "Starts a dev cluster in a temp dir under DIR (default $TMPDIR or /tmp), then:\n"
          "PUTs a --size object generated in memory (--runs times: best and median MB/s),\n"
          "GETs it back (--runs times), ingests --small-count 512 KiB objects from --clients\n"
          "threads (objects/s, p50/p99 latency), SIGKILLs two nodes holding data shards and\n"
          "GETs it degraded (--runs times), restarts them, and stops and removes the cluster\n"
          "(also on Ctrl-C; --keep keeps it, stopped). In the same run, twice: fio sequential\n"
          "write and read on DIR's filesystem and loopback TCP, max(--size, 1GiB) each (or\n"
          "--limit-size); prints PUT / min(fio write x k/(k+m), loopback) and GET /\n"
          "min(fio read, loopback) against the aims (PUT 0.6, GET 0.7). `put` prints the PUT\n"
          "figures first, `get` the GET figures. --node uses a running cluster (degraded\n"
          "phase only with --dev-dir, its `medshard dev` dir). Progress goes to stderr.\n",
          verb, verb);
}

static int parse_ec(const char *s, unsigned *k, unsigned *m)
{
  unsigned a, b;
  char extra;
  if (sscanf(s, "%u+%u%c", &a, &b, &extra) != 2 || a < 1 || a > 32 || b > 16)
    return MSD_EPARAM;
  *k = a, *m = b;
  return 0;
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
  uint64_t v;
  if (bench_parse_size(s, &v) != 0 || v < min || v > max)
    return MSD_EPARAM;
  *out = v;
  return 0;
}

/* One flag into o; false on a bad value. `given` collects the letters. */
static bool parse_flag(int c, const char *arg, struct obj_opts *o)
{
  uint64_t v = 0;
  switch (c) {
  case 's': return parse_uint(arg, 1, UINT64_MAX, &o->size) == 0;
  case 'L': return parse_uint(arg, 1u << 20, UINT64_MAX, &o->limit_bytes) == 0;
  case 'N': return parse_uint(arg, 1, 32, &v) == 0 && (o->nodes = (unsigned)v, true);
  case 'C': return parse_uint(arg, 1, 64, &v) == 0 && (o->clients = (unsigned)v, true);
  case 'r': return parse_uint(arg, 1, OBJ_MAX_RUNS, &v) == 0 && (o->runs = (unsigned)v, true);
  case 'S': return parse_uint(arg, 0, 10000000, &o->small_count) == 0;
  case 'e': return parse_ec(arg, &o->k, &o->m) == 0;
  case 'd': o->dir = arg; return true;
  case 'n': o->node = arg; return true;
  case 'D': o->dev_dir = arg; return true;
  case 'b': o->bucket = arg; return true;
  case 'k': o->keep = true; return true;
  case 'j': o->json = true; return true;
  default: return false;
  }
}

/* Flags that only make sense in one mode; NULL when they fit together. */
static const char *mode_conflict(const struct obj_opts *o, const char *given)
{
  if (o->node != NULL && strpbrk(given, "Nek") != NULL)
    return "--nodes, --ec and --keep are for the cluster this run starts; --node uses a running"
           " one";
  if (o->node == NULL && strpbrk(given, "Db") != NULL)
    return "--dev-dir and --bucket go with --node";
  if (o->node == NULL && o->k + o->m > o->nodes)
    return "--ec K+M puts each shard on its own node: --nodes must be at least K+M";
  return NULL;
}

int bench_obj_main(int argc, char **argv)
{
  static const struct option opts[] = {
      {"size", 1, 0, 's'},    {"nodes", 1, 0, 'N'},   {"ec", 1, 0, 'e'},
      {"dir", 1, 0, 'd'},     {"node", 1, 0, 'n'},    {"dev-dir", 1, 0, 'D'},
      {"bucket", 1, 0, 'b'},  {"small-count", 1, 0, 'S'}, {"clients", 1, 0, 'C'},
      {"runs", 1, 0, 'r'},    {"limit-size", 1, 0, 'L'},  {"keep", 0, 0, 'k'},
      {"json", 0, 0, 'j'},    {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
  const char *verb = argv[0];
  struct obj_opts o = {.get_first = strcmp(verb, "get") == 0, .size = GIB, .nodes = 6, .k = 4,
                       .m = 2, .clients = 4, .runs = 3, .small_count = 2000,
                       .bucket = "default"};
  char given[32] = "";
  size_t ngiven = 0;
  int c, idx;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
    if (c == 'h') {
      usage(stdout, verb);
      return 0;
    }
    if (c == '?' || !parse_flag(c, optarg, &o)) {
      if (c != '?')
        fprintf(stderr, "medshard bench %s: bad value '%s' for --%s\n", verb, optarg,
                opts[idx].name);
      usage(stderr, verb);
      return 2;
    }
    if (ngiven < sizeof given - 1)
      given[ngiven++] = (char)c;
  }
  const char *why = optind < argc ? "unexpected argument" : mode_conflict(&o, given);
  if (why != NULL) {
    fprintf(stderr, "medshard bench %s: %s%s%s\n", verb, why, optind < argc ? " " : "",
            optind < argc ? argv[optind] : "");
    return 2;
  }
  if (o.limit_bytes == 0)
    o.limit_bytes = o.size > GIB ? o.size : GIB;
  return bench_run(&o);
}
