/* `medshard bench anchor --nodes N`: the self-contained run. It measures the
 * raw libraft ceiling and the Merkle proofs first, then starts N `medshard
 * node` processes (this same binary) on loopback ports in a temp directory,
 * drives them with the client load of bench_anchor.c, fetches a real proof
 * bundle, and stops and removes everything again, also on failure. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_anchor_int.h"
#include "bench/bench_raft.h"
#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "common/err.h"

#define READY_WAIT_S 30.0 /* bound on start-up: election plus every NodeJoin */
#define STOP_WAIT_S 10.0  /* SIGTERM grace before SIGKILL, as tests/cluster/lib.sh */
#define CEILING_INFLIGHT_MAX 1024u
#define CEILING_INFLIGHT_MIN 32u
#define CEILING_BYTES_IN_FLIGHT ((size_t)1 << 20)
#define CEILING_ATTEMPTS 3u
#define LOG_TAIL_BYTES 2048

/* ---- the cluster's processes ---- */

int ba_cluster_dir(struct ba_cluster *c, const char *parent)
{
  if (parent == NULL)
    parent = getenv("TMPDIR");
  if (parent == NULL || *parent == 0)
    parent = "/tmp";
  /* Room below it for "/n9/raft/..." within raft_uv's path limit. */
  if ((size_t)snprintf(c->dir, sizeof c->dir, "%s/medshard-bench-XXXXXX", parent) >= 400) {
    fprintf(stderr, "bench anchor: directory name too long: %s\n", parent);
    c->dir[0] = 0;
    return -ENAMETOOLONG;
  }
  if (mkdtemp(c->dir) == NULL) {
    int rc = -errno;
    fprintf(stderr, "bench anchor: cannot create a directory in %s: %s\n", parent,
            msd_strerror(rc));
    c->dir[0] = 0;
    return rc;
  }
  return 0;
}

/* 2n distinct free loopback ports: every socket stays bound until all are
 * chosen, so none repeats. Another process may still take one before the
 * node binds it; that node then fails to start and says so in its log. */
static int pick_ports(uint16_t *ports, unsigned n)
{
  int fds[2 * BA_MAX_NODES], rc = 0;
  unsigned opened = 0;
  for (; rc == 0 && opened < n; opened++) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    fds[opened] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[opened] < 0 || bind(fds[opened], (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fds[opened], (struct sockaddr *)&sa, &len) != 0)
      rc = -errno;
    ports[opened] = ntohs(sa.sin_port);
  }
  for (unsigned i = 0; i < opened; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  return rc;
}

static int cluster_addresses(struct ba_cluster *c)
{
  uint16_t ports[2 * BA_MAX_NODES];
  uint8_t secret[32];
  int rc = pick_ports(ports, 2 * c->n);
  if (rc == 0 && getrandom(secret, sizeof secret, 0) != (ssize_t)sizeof secret)
    rc = -EIO; /* UNTESTED: getrandom does not fail for 32 bytes */
  if (rc != 0) {
    fprintf(stderr, "bench anchor: cannot pick loopback ports: %s\n", msd_strerror(rc));
    return rc;
  }
  for (unsigned i = 0; i < c->n; i++) {
    snprintf(c->raft[i], BA_ADDR, "127.0.0.1:%u", ports[2 * i]);
    snprintf(c->ctl[i], BA_ADDR, "127.0.0.1:%u", ports[2 * i + 1]);
  }
  for (size_t b = 0; b < sizeof secret; b++)
    snprintf(c->secret_hex + 2 * b, 3, "%02x", secret[b]);
  return 0;
}

/* The forked child: only async-signal-safe calls until exec. */
static _Noreturn void child_exec(const char *log, char *const argv[], pid_t parent)
{
  static const char fail[] = "bench anchor: exec /proc/self/exe failed\n";
  /* If the benchmark dies without stopping its nodes, they stop too. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent)
    _exit(127);
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
  int in = open("/dev/null", O_RDONLY);
  if (fd < 0 || in < 0 || dup2(in, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
    _exit(127);
  execv("/proc/self/exe", argv);
  if (write(2, fail, sizeof fail - 1) < 0)
    _exit(127);
  _exit(127);
}

/* Starts node i (index; its id is i + 1) with the flags tests/cluster/lib.sh
 * uses, stdout and stderr appended to <dir>/n<id>.log. */
static int spawn(struct ba_cluster *c, unsigned i)
{
  char id[12], dir[600], log[600], cut[12], peers[BA_MAX_NODES][2 * BA_ADDR + 16];
  char *argv[16 + 2 * BA_MAX_NODES];
  int a = 0;
  snprintf(id, sizeof id, "%u", i + 1);
  snprintf(dir, sizeof dir, "%s/n%u", c->dir, i + 1);
  snprintf(log, sizeof log, "%s/n%u.log", c->dir, i + 1);
  snprintf(cut, sizeof cut, "%u", c->cut_ms);
  char *fixed[] = {"medshard", "node", "--id", id, "--dir", dir, "--raft", c->raft[i],
                   "--control", c->ctl[i], "--secret", c->secret_hex, "--cut-ms", cut};
  for (size_t f = 0; f < sizeof fixed / sizeof fixed[0]; f++)
    argv[a++] = fixed[f];
  for (unsigned p = 0; p < c->n; p++) {
    snprintf(peers[p], sizeof peers[p], "%u,%s,%s", p + 1, c->raft[p], c->ctl[p]);
    argv[a++] = "--peer";
    argv[a++] = peers[p];
  }
  argv[a] = NULL;
  pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0)
    child_exec(log, argv, parent);
  if (pid < 0) {
    int rc = -errno;
    fprintf(stderr, "bench anchor: cannot start node %u: fork: %s\n", i + 1, msd_strerror(rc));
    return rc;
  }
  c->pid[i] = pid;
  return 0;
}

/* What one node's HEAD said. */
struct head_view {
  int rc;
  char state[16];
  uint32_t leader, voters;
};

static void head_of(const char *addr, struct head_view *v)
{
  struct ctl_client *cl = NULL;
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  q.format_version = 1;
  q.op = MEDSHARD__CTL_OP__CTL_OP_HEAD;
  v->rc = ctl_client_connect(addr, 300, &cl);
  if (v->rc == 0)
    v->rc = ctl_client_call(cl, &q, 1000, &r, NULL, NULL);
  ctl_client_close(cl);
  if (v->rc != 0)
    return;
  v->rc = r->head == NULL ? MSD_EDECODE : 0;
  if (r->head != NULL) {
    snprintf(v->state, sizeof v->state, "%s", r->head->raft_state ? r->head->raft_state : "");
    v->leader = r->head->leader_id;
    v->voters = r->head->voters;
  }
  medshard__ctl_response__free_unpacked(r, NULL);
}

/* "exit code 3" or "signal 9", for a wait status. */
static const char *status_text(int st, char *buf, size_t cap)
{
  snprintf(buf, cap, "%s %d", WIFEXITED(st) ? "exit code" : "signal",
           WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  return buf;
}

/* A child that exited early is reaped and reported. */
static int check_children(struct ba_cluster *c)
{
  char why[32];
  for (unsigned i = 0; i < c->n; i++) {
    int st;
    if (c->pid[i] > 0 && waitpid(c->pid[i], &st, WNOHANG) == c->pid[i]) {
      c->pid[i] = 0;
      fprintf(stderr, "bench anchor: node %u (%s) exited during the run (%s); see its log"
              " below\n", i + 1, c->ctl[i], status_text(st, why, sizeof why));
      return MSD_EUNAVAILABLE;
    }
  }
  return 0;
}

/* Polls every node until one is leader with all n voters in its map. */
static int wait_ready(struct ba_cluster *c, double timeout_s)
{
  struct head_view v[BA_MAX_NODES];
  memset(v, 0, sizeof v);
  for (double end = bench_now() + timeout_s; bench_now() < end; ba_sleep_s(0.05)) {
    int rc = check_children(c);
    if (rc != 0)
      return rc;
    for (unsigned i = 0; i < c->n; i++) {
      head_of(c->ctl[i], &v[i]);
      if (v[i].rc == 0 && strcmp(v[i].state, "leader") == 0 && v[i].voters == c->n) {
        c->leader = (int)i;
        return 0;
      }
    }
  }
  fprintf(stderr, "bench anchor: no leader with %u voters within %.0f s:\n", c->n, timeout_s);
  for (unsigned i = 0; i < c->n; i++)
    fprintf(stderr, "  node %u (%s): %s\n", i + 1, c->ctl[i],
            v[i].rc != 0 ? msd_strerror(v[i].rc) : v[i].state);
  return MSD_ETIMEDOUT;
}

int ba_cluster_start(struct ba_cluster *c, double timeout_s)
{
  c->leader = -1;
  int rc = cluster_addresses(c);
  for (unsigned i = 0; rc == 0 && i < c->n; i++)
    rc = spawn(c, i);
  if (rc == 0)
    rc = wait_ready(c, timeout_s);
  if (rc != 0)
    return rc;
  /* The leader first: ctl_submit starts there and needs no redirect. */
  size_t len = (size_t)snprintf(c->addrs, sizeof c->addrs, "%s", c->ctl[c->leader]);
  for (unsigned i = 0; i < c->n; i++)
    if ((int)i != c->leader)
      len += (size_t)snprintf(c->addrs + len, sizeof c->addrs - len, ",%s", c->ctl[i]);
  return 0;
}

int ba_cluster_bucket(const struct ba_cluster *c, const char *name, unsigned k, unsigned m)
{
  Medshard__CtlResponse *r;
  int rc = ctl_create_bucket(c->addrs, name, k, m, 1 << 20, &r);
  if (rc != 0) {
    fprintf(stderr, "bench anchor: creating bucket %s: %s\n", name, msd_strerror(rc));
    return rc;
  }
  rc = r->code != 0 ? r->code : r->n_outcomes == 1 ? r->outcomes[0]->code : MSD_EDECODE;
  if (rc != 0)
    fprintf(stderr, "bench anchor: creating bucket %s %u+%u: %s\n", name, k, m,
            r->code != 0 ? r->message : r->n_outcomes == 1 ? r->outcomes[0]->message : "?");
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc;
}

void ba_cluster_log_tails(const struct ba_cluster *c)
{
  char path[600], buf[LOG_TAIL_BYTES + 1];
  for (unsigned i = 0; i < c->n && c->dir[0] != 0; i++) {
    snprintf(path, sizeof path, "%s/n%u.log", c->dir, i + 1);
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > LOG_TAIL_BYTES ? size - LOG_TAIL_BYTES : 0, SEEK_SET);
    size_t n = fread(buf, 1, LOG_TAIL_BYTES, f);
    fclose(f);
    buf[n] = 0;
    /* Start at a whole line when the tail was cut. */
    const char *from = size > LOG_TAIL_BYTES && strchr(buf, '\n') ? strchr(buf, '\n') + 1 : buf;
    fprintf(stderr, "---- node %u (%s), end of %s ----\n%s%s", i + 1, c->ctl[i], path, from,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
  }
}

/* Reaps every child that has exited; returns how many still run. */
static unsigned reap(struct ba_cluster *c, unsigned *unclean)
{
  unsigned running = 0;
  char why[32];
  for (unsigned i = 0; i < c->n; i++) {
    int st;
    if (c->pid[i] <= 0)
      continue;
    if (waitpid(c->pid[i], &st, WNOHANG) != c->pid[i]) {
      running++;
      continue;
    }
    c->pid[i] = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      (*unclean)++;
      fprintf(stderr, "bench anchor: node %u stopped with %s\n", i + 1,
              status_text(st, why, sizeof why));
    }
  }
  return running;
}

unsigned ba_cluster_stop(struct ba_cluster *c)
{
  unsigned unclean = 0;
  for (unsigned i = 0; i < c->n; i++)
    if (c->pid[i] > 0)
      kill(c->pid[i], SIGTERM);
  double end = bench_now() + STOP_WAIT_S;
  while (reap(c, &unclean) > 0 && bench_now() < end)
    ba_sleep_s(0.02);
  for (unsigned i = 0; i < c->n; i++) {
    if (c->pid[i] <= 0)
      continue;
    fprintf(stderr, "bench anchor: node %u ignored SIGTERM for %.0f s; killing it\n", i + 1,
            STOP_WAIT_S);
    kill(c->pid[i], SIGKILL);
    waitpid(c->pid[i], NULL, 0);
    c->pid[i] = 0;
    unclean++;
  }
  return unclean;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

void ba_cluster_remove(struct ba_cluster *c)
{
  if (c->dir[0] != 0)
    nftw(c->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  c->dir[0] = 0;
}

/* ---- the run ---- */

/* Everything the run measured; a stage that failed leaves its _ok false. */
struct ba_report {
  unsigned k, m;
  size_t entry_bytes;
  unsigned inflight; /* the ceiling's */
  bool ceiling_ok, proof_ok, load_ok, bundle_ok;
  struct bench_raft_result ceiling;
  struct ba_proof_local proof;
  struct anchor_load_result load;
  struct ba_bundle bundle; /* from the cluster */
  double ready_s;
};

/* Requests the ceiling keeps in flight: 1024, but about 1 MiB of entries
 * (at least 32). With 1024 x 15 KB (batches of 64) queued, the followers'
 * election timers fired on this 2-core machine and leadership moved, voiding
 * the run; 32 to 128 in flight gave the most entries/s (2.6k) without that.
 * 61 KB entries (batches of 256) gave 774/s at 16 in flight, 951 at 32 and
 * 1018 at 64: about 60 MB/s, the same stream limit. */
static unsigned ceiling_inflight(size_t entry_bytes)
{
  size_t n = CEILING_BYTES_IN_FLIGHT / (entry_bytes ? entry_bytes : 1);
  return n > CEILING_INFLIGHT_MAX ? CEILING_INFLIGHT_MAX
         : n < CEILING_INFLIGHT_MIN ? CEILING_INFLIGHT_MIN
                                    : (unsigned)n;
}

/* The raw libraft ceiling, retried when leadership moved mid-run (libraft
 * voids such a run rather than report a mixed figure). */
static void run_ceiling(const struct anchor_opts *o, const char *dir, struct ba_report *rep)
{
  int rc = MSD_ESTATE;
  rep->inflight = ceiling_inflight(rep->entry_bytes);
  for (unsigned a = 0; a < CEILING_ATTEMPTS && rc == MSD_ESTATE; a++)
    rc = bench_raft_raw(dir, o->nodes, rep->entry_bytes, rep->inflight, o->ceiling_s,
                        &rep->ceiling);
  if (rc == 0 && rep->ceiling.entries == 0)
    rc = MSD_ETIMEDOUT; /* nothing committed inside a very short window */
  rep->ceiling_ok = rc == 0;
  if (rc != 0)
    fprintf(stderr, "bench anchor: raw libraft ceiling failed: %s\n", msd_strerror(rc));
}

static void run_offline(const struct anchor_opts *o, const char *dir, struct ba_report *rep)
{
  size_t submit;
  if (bench_anchor_sizes(o->bucket, o->batch, rep->k, rep->m, &rep->entry_bytes, &submit) != 0)
    rep->entry_bytes = 0; /* UNTESTED: out of memory; the ceiling is skipped */
  if (o->ceiling_s > 0 && rep->entry_bytes > 0)
    run_ceiling(o, dir, rep);
  if (o->proof_leaves > 0)
    rep->proof_ok = ba_proof_local(dir, o->proof_leaves, o->nodes, &rep->proof) == 0;
}

/* Start, bucket, load, one real proof. 0 or the first failure's code. */
static int run_cluster(const struct anchor_opts *o, struct ba_cluster *c, struct ba_report *rep)
{
  double t0 = bench_now();
  int rc = ba_cluster_start(c, READY_WAIT_S);
  rep->ready_s = bench_now() - t0;
  if (rc == 0)
    rc = ba_cluster_bucket(c, o->bucket, rep->k, rep->m);
  if (rc != 0)
    return rc;
  struct anchor_load in = {.addrs = c->addrs, .bucket = o->bucket, .acks_path = o->acks,
                           .watch = c->addrs, .clients = o->clients,
                           .batch = o->batch, .k = rep->k, .m = rep->m, .count = o->count,
                           .seal_wait_s = 10.0 + 3.0 * o->cut_ms / 1e3,
                           .stop_on_failure = true};
  rc = bench_anchor_load(&in, &rep->load);
  rep->load_ok = rc == 0 && rep->load.failed == 0 && rep->load.all_sealed;
  if (rc == 0 && rep->load.done > 0 && rep->load.all_sealed) {
    uint64_t span = rep->load.last_leaf - rep->load.first_leaf + 1, pick;
    if (getrandom(&pick, sizeof pick, 0) != (ssize_t)sizeof pick)
      pick = 0; /* UNTESTED */
    rep->bundle_ok = ba_proof_cluster(c->addrs, rep->load.first_leaf + pick % span,
                                      &rep->bundle) == 0;
  }
  if (rc == 0)
    rc = check_children(c); /* a node that died mid-run spoils the figures */
  return rc != 0 ? rc : rep->load_ok && rep->bundle_ok ? 0 : MSD_ESTATE;
}

/* ---- output ---- */

#define AIM_SEALED_PER_S 20000.0 /* the aims, printed beside the figures */
#define AIM_BUNDLE_BYTES 1536.0  /* 1.5 KiB */
#define AIM_VERIFY_US 300.0

static double per_s(uint64_t n, double s)
{
  return s > 0 ? (double)n / s : 0;
}

static double ratio(double a, double b)
{
  return b > 0 ? a / b : 0; /* JSON has no inf */
}

static void print_load(const struct anchor_opts *o, const struct ba_report *rep)
{
  const struct anchor_load_result *l = &rep->load;
  double sealed = per_s(l->done, l->sealed_s);
  if (l->all_sealed)
    printf("anchors sealed:    %" PRIu64 " in %.2f s = %.0f/s | aim %.0f/s: %.2f of aim\n",
           l->done, l->sealed_s, sealed, AIM_SEALED_PER_S, sealed / AIM_SEALED_PER_S);
  else
    printf("anchors sealed:    NOT ALL: %" PRIu64 " of %" PRIu64 " acknowledged anchors were seen"
           " sealed; no rate (latencies below are of those sealed)\n",
           l->done - l->unsealed, l->done);
  printf("anchors committed: %" PRIu64 " (%" PRIu64 " failed) in %.2f s = %.0f/s\n", l->done,
         l->failed, l->commit_s, per_s(l->done, l->commit_s));
  printf("submit->sealed:    p50 %.1f ms, p99 %.1f ms per anchor (its batch's submit to the first"
         " leader HEAD, polled every %.0f ms, whose sealed block covers its leaf)\n",
         l->sealed_p50_ms, l->sealed_p99_ms, l->poll_ms);
  printf("submit->commit:    p50 %.1f ms, p99 %.1f ms per batch (one ctl_submit round trip)\n",
         l->commit_p50_ms, l->commit_p99_ms);
  printf("raft entries:      %" PRIu64 " applied on the leader from first submit to last seal"
         " (anchor batches, block cuts, cosignatures) = %.1f anchors per entry\n",
         l->entries, l->entries ? (double)l->done / (double)l->entries : 0.0);
  if (!rep->ceiling_ok)
    return;
  const struct bench_raft_result *c = &rep->ceiling;
  printf("raw libraft:       %.0f entries/s of %zu B (%u voters, %u in flight, %.1f s, empty FSM;"
         " p50 %.1f ms) -- entry = protobuf packed size of one CommandBatch of %u PutObjects\n",
         c->entries_per_s, rep->entry_bytes, o->nodes, rep->inflight, c->seconds, c->p50_ms,
         o->batch);
  printf("  sealed/s / (raw entries/s x %u anchors per entry) = %.0f / %.0f = %.3f"
         "  (share of what raw libraft carries in the same entries)\n",
         o->batch, sealed, c->entries_per_s * o->batch, ratio(sealed, c->entries_per_s * o->batch));
  printf("  sealed/s / raw entries/s = %.0f / %.0f = %.3f  (anchors each raw entry would have to"
         " carry to match the sealed rate)\n",
         sealed, c->entries_per_s, ratio(sealed, c->entries_per_s));
}

static void print_proofs(const struct ba_report *rep)
{
  const struct ba_proof_local *p = &rep->proof;
  const struct ba_bundle *pb = &rep->proof.bundle, *b = &rep->bundle;
  if (rep->proof_ok) {
    printf("Merkle proof:      %" PRIu64 " leaves: audit path %u hashes = %zu B; generate p50"
           " %.2f us, verify p50 %.2f us (%u random leaves; tree built on disk in %.2f s)\n",
           p->leaves, p->path_hashes, p->path_bytes, p->gen_us, p->verify_us, p->samples,
           p->build_s);
    printf("proof bundle:      %" PRIu64 " leaves: %zu B | aim %.0f B: %.2f of aim;"
           " chain_proof_verify %.1f us | aim %.0f us: %.2f of aim (%u cosignatures; verify time"
           " = lowest of 5 medians of 101 calls, after the nodes stopped)\n",
           p->leaves, pb->len, AIM_BUNDLE_BYTES, (double)pb->len / AIM_BUNDLE_BYTES,
           pb->verify_us, AIM_VERIFY_US, pb->verify_us / AIM_VERIFY_US, pb->cosigs);
  }
  if (rep->bundle_ok)
    printf("cluster bundle:    leaf %" PRIu64 " in block %" PRIu64 " (tree %" PRIu64 " leaves, %u"
           " path hashes, %u cosigs): %zu B; chain_proof_verify %.1f us against the cluster's"
           " %u voter keys (timed as above)\n",
           b->leaf, b->height, b->tree_size, b->path_hashes, b->cosigs, b->len, b->verify_us,
           b->voters);
}

static void print_human(const struct anchor_opts *o, const struct ba_report *rep)
{
  printf("bench anchor: %u local voter%s (medshard node processes on 127.0.0.1), cut_ms %u,"
         " bucket %s %u+%u; %" PRIu64 " anchors from %u clients in batches of %u; leader"
         " ready after %.1f s\n",
         o->nodes, o->nodes == 1 ? "" : "s", o->cut_ms, o->bucket, rep->k, rep->m, o->count,
         o->clients, o->batch, rep->ready_s);
  if (rep->load.done > 0)
    print_load(o, rep);
  else if (rep->ceiling_ok)
    printf("raw libraft:       %.0f entries/s of %zu B (%u voters, %u in flight)\n",
           rep->ceiling.entries_per_s, rep->entry_bytes, o->nodes, rep->inflight);
  print_proofs(rep);
}

static void json_ceiling(const struct anchor_opts *o, const struct ba_report *rep, double sealed)
{
  const struct bench_raft_result *c = &rep->ceiling;
  if (!rep->ceiling_ok) {
    printf(",\"ceiling\":null");
    return;
  }
  printf(",\"ceiling\":{\"entries_per_s\":%.0f,\"entry_bytes\":%zu,\"inflight\":%u,"
         "\"seconds\":%.3f,\"p50_ms\":%.2f,\"p99_ms\":%.2f},"
         "\"ratio_sealed_to_ceiling_anchors\":%.4f,\"ratio_sealed_to_ceiling_entries\":%.4f",
         c->entries_per_s, rep->entry_bytes, rep->inflight, c->seconds, c->p50_ms, c->p99_ms,
         ratio(sealed, c->entries_per_s * o->batch), ratio(sealed, c->entries_per_s));
}

static void json_proofs(const struct ba_report *rep)
{
  const struct ba_proof_local *p = &rep->proof;
  const struct ba_bundle *pb = &rep->proof.bundle, *b = &rep->bundle;
  if (rep->proof_ok)
    printf(",\"proof\":{\"leaves\":%" PRIu64 ",\"samples\":%u,\"path_hashes\":%u,"
           "\"path_bytes\":%zu,\"generate_us\":%.3f,\"verify_us\":%.3f,\"build_s\":%.3f,"
           "\"bundle_bytes\":%zu,\"bundle_verify_us\":%.2f,\"cosigs\":%u}",
           p->leaves, p->samples, p->path_hashes, p->path_bytes, p->gen_us, p->verify_us,
           p->build_s, pb->len, pb->verify_us, pb->cosigs);
  else
    printf(",\"proof\":null");
  if (rep->bundle_ok)
    printf(",\"cluster_bundle\":{\"leaf\":%" PRIu64 ",\"height\":%" PRIu64 ",\"tree_size\":%"
           PRIu64 ",\"bytes\":%zu,\"path_hashes\":%u,\"cosigs\":%u,\"voters\":%u,"
           "\"verify_us\":%.2f}",
           b->leaf, b->height, b->tree_size, b->len, b->path_hashes, b->cosigs, b->voters,
           b->verify_us);
  else
    printf(",\"cluster_bundle\":null");
}

static void print_json(const struct anchor_opts *o, const struct ba_report *rep)
{
  const struct anchor_load_result *l = &rep->load;
  double sealed = per_s(l->done, l->sealed_s);
  printf("{\"nodes\":%u,\"clients\":%u,\"batch\":%u,\"count\":%" PRIu64 ",\"cut_ms\":%u,"
         "\"k\":%u,\"m\":%u,\"ready_s\":%.2f,\"anchors\":%" PRIu64 ",\"failed\":%" PRIu64
         ",\"all_sealed\":%s,\"sealed_seconds\":%.3f,\"sealed_per_s\":%.0f,"
         "\"sealed_p50_ms\":%.2f,\"sealed_p99_ms\":%.2f,\"seal_poll_ms\":%.1f,"
         "\"commit_seconds\":%.3f,\"committed_per_s\":%.0f,\"commit_p50_ms\":%.2f,"
         "\"commit_p99_ms\":%.2f,\"raft_entries\":%" PRIu64,
         o->nodes, o->clients, o->batch, o->count, o->cut_ms, rep->k, rep->m, rep->ready_s,
         l->done, l->failed, l->all_sealed ? "true" : "false", l->sealed_s, sealed,
         l->sealed_p50_ms, l->sealed_p99_ms, l->poll_ms, l->commit_s, per_s(l->done, l->commit_s),
         l->commit_p50_ms, l->commit_p99_ms, l->entries);
  json_ceiling(o, rep, sealed);
  json_proofs(rep);
  printf("}\n");
}

/* Both bundles' verification, timed together once the nodes are gone. */
static int time_bundles(struct ba_report *rep)
{
  struct ba_bundle *b[2];
  size_t n = 0;
  if (rep->proof_ok)
    b[n++] = &rep->proof.bundle;
  if (rep->bundle_ok)
    b[n++] = &rep->bundle;
  int rc = ba_bundles_time(b, n);
  if (rc != 0)
    rep->proof_ok = rep->bundle_ok = false;
  return rc;
}

int bench_anchor_local(const struct anchor_opts *o)
{
  struct ba_cluster c = {.n = o->nodes, .cut_ms = o->cut_ms, .leader = -1};
  struct ba_report rep = {0};
  ba_policy(o->nodes, &rep.k, &rep.m);
  if (ba_cluster_dir(&c, o->dir) != 0)
    return 1;
  run_offline(o, c.dir, &rep);
  int rc = run_cluster(o, &c, &rep);
  unsigned unclean = ba_cluster_stop(&c);
  if (time_bundles(&rep) != 0 && rc == 0)
    rc = MSD_ECORRUPT;
  ba_bundle_free(&rep.proof.bundle);
  ba_bundle_free(&rep.bundle);
  if (rc != 0 || unclean != 0)
    ba_cluster_log_tails(&c);
  if (o->keep)
    fprintf(stderr, "bench anchor: kept %s\n", c.dir);
  else
    ba_cluster_remove(&c);
  if (o->json)
    print_json(o, &rep);
  else
    print_human(o, &rep);
  bool offline_ok = (o->ceiling_s == 0 || rep.ceiling_ok) && (o->proof_leaves == 0 || rep.proof_ok);
  return rc == 0 && unclean == 0 && offline_ok ? 0 : 1;
}
