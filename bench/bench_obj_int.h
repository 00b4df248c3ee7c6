/* Private to `medshard bench put|get`: the run (bench_obj.c), the dev
 * cluster driven through this binary's `dev` verbs (bench_obj_dev.c), the
 * physical limits (bench_obj_limits.c), the object load (bench_obj_load.c)
 * and the report (bench_obj_report.c) share these declarations. */
#ifndef MSD_BENCH_OBJ_INT_H
#define MSD_BENCH_OBJ_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/medshard.pb-c.h"

struct msd_client;

#define OBJ_MAX_RUNS 9u
#define OBJ_PASSES 2u           /* limit passes: after the PUTs and at the end */
#define OBJ_MAX_DOWN 2u         /* nodes killed for the degraded GET */
#define OBJ_SMALL (512u << 10)  /* small-object ingest: object size */
#define OBJ_AIM_PUT 0.6         /* the aims, as shares of the limits */
#define OBJ_AIM_GET 0.7

/* Every flag of `medshard bench put|get`, parsed and checked. */
struct obj_opts {
  bool get_first;         /* `bench get`: GET figures lead the report */
  uint64_t size;          /* --size: the big object */
  uint64_t limit_bytes;   /* client bytes fio and loopback move per pass */
  unsigned nodes, k, m;   /* --nodes, --ec: the local cluster */
  unsigned clients, runs;
  uint64_t small_count;
  const char *dir;        /* --dir: parent of the run's temp dir (fio runs there) */
  const char *node;       /* --node: a running cluster instead */
  const char *dev_dir;    /* --dev-dir: that cluster's `dev` dir (degraded phase) */
  const char *bucket;
  bool json, keep;
};

/* ---- bench_obj_dev.c: the cluster ---- */

/* The run's temp dir, the cluster and the guard process that tears the
 * cluster down however this process ends (normal end, error, SIGINT,
 * SIGKILL): it holds the read end of a pipe whose EOF is its cue. */
struct obj_cluster {
  bool own;             /* started by this run with `dev up` in tmp/dev */
  bool keep;            /* --keep: `dev down` without --wipe, tmp kept */
  char tmp[512];        /* this run's directory (own: dev/, medshard.conf; fio/) */
  char dev_dir[600];    /* own: tmp/dev; else --dev-dir or "" */
  char fio_dir[600];    /* tmp/fio */
  char control[2048];   /* control addresses, comma-separated */
  pid_t guard;
  int guard_fd;         /* write end; -1 once closed */
};

/* Creates the temp dir under parent (NULL: $TMPDIR or /tmp) and starts the
 * guard. 0, or an error with the reason printed. */
int obj_cluster_prepare(struct obj_cluster *c, const char *parent, const char *dev_dir,
                        bool own, bool keep);

/* `dev up --nodes N --ec K+M` in c->dev_dir; fills c->control. 0 or an
 * error (dev up's own messages and node log tails are on stderr). */
int obj_cluster_up(struct obj_cluster *c, unsigned nodes, unsigned k, unsigned m);

/* A node as `dev status` reports it. */
struct obj_node_role {
  uint32_t id;
  pid_t pid;
  bool voter, leader, alive;
};

/* `dev status --json` of c->dev_dir into roles (up to cap). 0 or an error. */
int obj_cluster_roles(struct obj_cluster *c, struct obj_node_role *roles, size_t cap,
                      size_t *n);

/* `dev kill ID` / `dev start ID` in c->dev_dir, the guard told first so
 * that an interrupted run still restarts what it killed. 0 or an error. */
int obj_cluster_kill(struct obj_cluster *c, uint32_t id);
int obj_cluster_start(struct obj_cluster *c, uint32_t id);

/* CPU time (user + system, every thread) process pid has used, in
 * seconds; pid 0 is this process. -1 when it cannot be read. */
double obj_proc_cpu_s(pid_t pid);

/* CPU time the whole machine has been busy (not idle, not waiting for
 * I/O), in seconds summed over CPUs, from /proc/stat; -1 if unreadable. */
double obj_machine_busy_s(void);

/* The last lines of every node log in c->dev_dir, to stderr (own cluster). */
void obj_cluster_log_tails(const struct obj_cluster *c);

/* Hands the teardown to the guard and waits for it: `dev down --wipe` and
 * the temp dir removed (own cluster), killed nodes restarted (--dev-dir).
 * 0, or 1 if the teardown failed (the guard says why on stderr). */
int obj_cluster_finish(struct obj_cluster *c);

/* ---- bench_obj_limits.c: the physical limits ---- */

struct obj_limits {
  double fio_write_bps;  /* disk bytes/s: k+m jobs, size/k each */
  double fio_read_bps;   /* disk bytes/s: k jobs reading those files */
  double loopback_bps;   /* one TCP stream over 127.0.0.1 */
  unsigned write_jobs, read_jobs;
  uint64_t job_bytes, loop_bytes;
};

/* Whether fio runs here. */
bool obj_fio_present(void);

/* fio in dir (made if missing, its files removed after): k+m sequential
 * writers of ceil(bytes/k) each, then k readers of the same files; 1 MiB
 * blocks, io_uring, direct=1, iodepth 1 per job, as `bench store` runs it.
 * 0 or an error (printed); out's fio fields are 0 on failure. */
int obj_fio(const char *dir, unsigned k, unsigned m, uint64_t bytes, struct obj_limits *out);

/* A sender and a receiver thread move `bytes` over one 127.0.0.1 TCP
 * connection in 1 MiB sends. 0 or -errno (printed). */
int obj_loopback(uint64_t bytes, struct obj_limits *out);

/* ---- bench_obj_load.c: objects ---- */

/* The body of object `seed` at [off, off + len): a counter-based PRNG
 * (splitmix64 of the 8-byte word index), so any chunk of it can be made
 * on its own, and a GET can be checked against obj_body_sum. */
void obj_body_fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len);
/* The sum of the body's little-endian 64-bit words (the last one zero-
 * padded), what a GET's sink must arrive at. */
uint64_t obj_body_sum(uint64_t seed, uint64_t size);

/* One timed PUT of a generated body of `size` bytes as bucket/key. On
 * success *secs is the msd_put call's wall time and *m (if not NULL) the
 * manifest (the caller frees it). 0 or an error (printed, naming key). */
int obj_put(struct msd_client *c, const char *bucket, const char *key, uint64_t seed,
            uint64_t size, double *secs, Medshard__Manifest **m);

/* One timed whole GET of bucket/key into a sink that sums every byte and
 * checks the length and the sum against `size` and `sum` (obj_body_sum of
 * the body stored). 0 or an error (printed; MSD_ECHECKSUM when the bytes
 * are not the body's). */
int obj_get(struct msd_client *c, const char *bucket, const char *key, uint64_t size,
            uint64_t sum, double *secs);

struct obj_small {
  uint64_t done, failed;
  double wall_s;          /* first PUT started -> last PUT answered */
  double p50_ms, p99_ms;  /* per PUT, of those that succeeded */
};

/* `count` PUTs of OBJ_SMALL bytes as bucket/<prefix>N from `clients`
 * threads, one msd_client each. 0, or an error when no client could
 * start; failed PUTs are counted in out->failed (the first few printed). */
int obj_small_ingest(const char *addrs, const char *bucket, const char *prefix, uint64_t count,
                     unsigned clients, struct obj_small *out);

/* ---- bench_obj.c / bench_obj_report.c: the figures ---- */

/* CPU time a phase cost, from /proc: every node process (own cluster or
 * --dev-dir; 0 otherwise) and this client process. */
struct obj_cpu {
  bool nodes_known;
  double nodes_s, busiest_s, client_s; /* busiest: the node process that used most */
  double others_s;                     /* every other process on the machine */
  double wall_s;
  uint64_t bytes;                      /* object bytes the phase moved */
};

/* Timed runs of one phase; MB/s from the fastest and from the median. */
struct obj_runs {
  double s[OBJ_MAX_RUNS];
  unsigned n;
  int rc;                 /* the first failure, 0 if every run succeeded */
  struct obj_cpu cpu;
};

struct obj_report {
  const struct obj_opts *o;
  unsigned k, m;          /* of the bucket, from the first PUT's manifest */
  double up_s;            /* `dev up` wall time, own cluster */
  double gen_gbps;        /* body generator + sum, client side */
  struct obj_runs put, get, deg;
  uint32_t down[OBJ_MAX_DOWN];
  unsigned ndown;
  const char *deg_skipped; /* why the degraded phase did not run, or NULL */
  struct obj_small small;
  struct obj_cpu small_cpu;
  int small_rc;
  long ncpu;              /* online CPUs, for the CPU-bound ceilings */
  struct obj_limits pass[OBJ_PASSES];
  int limits_rc;
  unsigned npass;
  bool fio;
};

/* The fastest and the median MB/s (10^6 bytes/s) of r for `bytes`. */
double obj_best_mbps(const struct obj_runs *r, uint64_t bytes);
double obj_median_mbps(const struct obj_runs *r, uint64_t bytes);

/* Each limit's best pass, in bytes/s (0 when never measured). */
struct obj_best_limits {
  double fio_write, fio_read, loopback;
  double put_limit, get_limit; /* min(fio_write * k/(k+m), loopback); min(fio_read, loopback) */
};
void obj_best_limits(const struct obj_report *r, struct obj_best_limits *out);

void obj_print_human(const struct obj_report *r);
void obj_print_json(const struct obj_report *r);

/* Median of v[0..n) (sorts v); percentile p of sorted v. 0 for n == 0. */
double obj_median(double *v, size_t n);
double obj_percentile(const double *v, size_t n, unsigned p);

#endif
