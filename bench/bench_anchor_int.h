/* Private to `medshard bench anchor`: the client load (bench_anchor.c), the
 * self-contained local cluster (bench_anchor_local.c) and the proof figures
 * (bench_anchor_proof.c) share these declarations. */
#ifndef MSD_BENCH_ANCHOR_INT_H
#define MSD_BENCH_ANCHOR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct chain_key;

#define BA_MAX_NODES 9u
#define BA_ADDR 32 /* "127.0.0.1:65535" and then some */

/* Every flag of `medshard bench anchor`, parsed and checked. */
struct anchor_opts {
  const char *node;      /* --node ADDRS: drive a running cluster */
  unsigned nodes;        /* --nodes N: start N local voters (0: not given) */
  const char *bucket, *acks, *check, *dir;
  unsigned clients, batch, cut_ms;
  uint64_t count, proof_leaves;
  double ceiling_s;
  bool json, keep;
};

/* What the client load is pointed at. */
struct anchor_load {
  const char *addrs;  /* control addresses, the leader first if known */
  const char *bucket; /* must exist with policy k+m */
  const char *acks_path; /* NULL, or where to log each acknowledged anchor */
  const char *watch;  /* NULL, or control addresses (the leader first) whose
                         HEAD is polled for sealed blocks */
  unsigned clients, batch, k, m;
  uint64_t count;
  double seal_wait_s; /* bound on waiting for the last anchor's seal */
  bool stop_on_failure; /* hand out no more batches after a failed submit */
};

struct anchor_load_result {
  uint64_t done, failed;
  double commit_s;                     /* first submit -> last acknowledgement */
  double commit_p50_ms, commit_p99_ms; /* per submitted batch */
  /* Only with a watch address: */
  bool all_sealed;           /* the last acknowledged anchor was seen sealed */
  uint64_t unsealed;         /* acknowledged anchors never seen sealed */
  double sealed_s;           /* first submit -> last acknowledged anchor sealed */
  double sealed_p50_ms, sealed_p99_ms; /* per anchor: its batch's submit -> seal seen */
  double poll_ms;            /* the watcher's HEAD period (the seal time resolution) */
  uint64_t entries;          /* Raft entries applied over the run (leader's HEAD) */
  uint64_t first_leaf, last_leaf; /* leaf indexes of acknowledged anchors */
};

/* Runs the load (load->clients threads, batches of load->batch synthetic
 * PutObjects) and fills *out. 0, or an MSD_E* code when the cluster map
 * cannot be read or no client could start (the reason printed to stderr).
 * Anchors rejected or lost are counted in out->failed, not an error. */
int bench_anchor_load(const struct anchor_load *load, struct anchor_load_result *out);

/* Packed sizes for `batch` synthetic PutObjects into `bucket` as this load
 * sends them, request ids included: *entry, the CommandBatch (with the
 * leader's timestamp) the node writes as one Raft entry for one submission;
 * *submit, the SUBMIT request, which must fit the control plane's
 * WIRE_MSG_MAX. 0 or -ENOMEM. */
int bench_anchor_sizes(const char *bucket, unsigned batch, unsigned k, unsigned m,
                       size_t *entry, size_t *submit);

/* The erasure policy of the benchmark's bucket for a cluster of `nodes`
 * voters (0: a running cluster, 2+1): 2+1, or 1+(nodes-1) below 3 nodes. */
void ba_policy(unsigned nodes, unsigned *k, unsigned *m);

/* `--nodes N`: the whole self-contained run. Returns the exit code. */
int bench_anchor_local(const struct anchor_opts *o);

/* A cluster of `medshard node` child processes in a temp directory. */
struct ba_cluster {
  unsigned n, cut_ms;
  char dir[512];             /* the temp directory this run created */
  char raft[BA_MAX_NODES][BA_ADDR], ctl[BA_MAX_NODES][BA_ADDR];
  char secret_hex[65];
  pid_t pid[BA_MAX_NODES];   /* 0 once reaped */
  int leader;                /* index of the leader, -1 before ready */
  char addrs[BA_MAX_NODES * (BA_ADDR + 1)]; /* control addresses, leader first */
};

/* Creates the run's temp directory under parent (NULL: $TMPDIR or /tmp).
 * 0 or -errno, with the reason printed. */
int ba_cluster_dir(struct ba_cluster *c, const char *parent);

/* Starts c->n nodes in c->dir and waits (at most timeout_s) for a leader
 * whose HEAD counts c->n voters; fills c->leader and c->addrs. 0 or an
 * error code with the reason printed; started children stay in c->pid
 * for ba_cluster_stop either way. */
int ba_cluster_start(struct ba_cluster *c, double timeout_s);

/* Creates bucket `name` with policy k+m through the leader. 0 or a code. */
int ba_cluster_bucket(const struct ba_cluster *c, const char *name, unsigned k, unsigned m);

/* Prints the last lines of every node's log to stderr. */
void ba_cluster_log_tails(const struct ba_cluster *c);

/* Stops every child still running (SIGTERM, a bounded wait, SIGKILL) and
 * reaps it. Returns how many did not exit 0 on SIGTERM in time. */
unsigned ba_cluster_stop(struct ba_cluster *c);

/* Removes c->dir and everything in it (nothing if c->dir is empty). */
void ba_cluster_remove(struct ba_cluster *c);

/* A packed ProofBundle with the trusted keys it verifies against. */
struct ba_bundle {
  uint8_t *bytes;          /* msd_malloc'ed; ba_bundle_free */
  size_t len;
  struct chain_key *keys;  /* msd_malloc'ed; ba_bundle_free */
  size_t nkeys;
  uint64_t leaf, height, tree_size;
  unsigned path_hashes, cosigs, voters;
  double verify_us;        /* best of a few medians of chain_proof_verify */
};

void ba_bundle_free(struct ba_bundle *b);

/* Times chain_proof_verify of each bundle: rounds of many calls, the
 * bundles interleaved, the lowest median kept (a shared machine's noise
 * only ever adds time). Run it with the nodes stopped: the figure is
 * CPU-bound. 0 or an error code with the reason printed. */
int ba_bundles_time(struct ba_bundle *const *b, size_t n);

/* Proof figures at a large tree size, built offline in a directory. */
struct ba_proof_local {
  uint64_t leaves;
  unsigned samples;
  unsigned path_hashes;         /* of the sampled leaves' audit paths, the longest */
  size_t path_bytes;            /* path_hashes x 32 */
  double build_s;               /* appending every leaf to the on-disk tree */
  double gen_us, verify_us;     /* median merkle_tree_inclusion / _verify_inclusion */
  struct ba_bundle bundle;      /* a full bundle at this size, `voters` cosigs */
};

/* Builds a `leaves`-leaf Merkle hash cache in dir (removed again), times
 * proofs for random leaves, and makes a full bundle cosigned by `voters`
 * fresh keys (out->bundle, owned by out; not yet timed). 0 or an error code
 * with the reason printed. */
int ba_proof_local(const char *dir, uint64_t leaves, unsigned voters, struct ba_proof_local *out);

/* Fetches the bundle of `leaf` and the keys of the cluster map from the
 * first of `addrs` (comma-separated) that answers, into out (which then owns
 * them; not yet timed). 0 or an error code with the reason printed. */
int ba_proof_cluster(const char *addrs, uint64_t leaf, struct ba_bundle *out);

/* Sleeps s seconds (fractions allowed). */
void ba_sleep_s(double s);

/* Median of v[0..n) (sorts v). 0 for n == 0. */
double ba_median(double *v, size_t n);

/* The p-th percentile of v[0..n), v sorted ascending. 0 for n == 0. */
double ba_percentile(const double *v, size_t n, unsigned p);

#endif
