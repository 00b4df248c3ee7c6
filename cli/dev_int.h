/* Private to `medshard dev`: the verbs (cmd_dev.c), the state file and the
 * dev dir (dev_state.c) and the node processes (dev_proc.c) share the model
 * of a local cluster declared here. */
#ifndef MSD_CLI_DEV_INT_H
#define MSD_CLI_DEV_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DEV_STATE "cluster.ini"
#define DEV_VERSION 1
#define DEV_HOST "127.0.0.1"
#define DEV_MAX_NODES 32
#define DEV_PATH 512
#define DEV_BUCKET "default"
#define TERM_WAIT_S 10 /* SIGTERM, then SIGKILL */
#define KILL_WAIT_S 5

/* The ports a node listens on: the state file's key and `medshard node`'s
 * flag for each. A new listener of the node is one more row in dev_ports
 * (dev_state.c); readers of the state file ignore keys they do not know. */
enum dev_port { DEV_PORT_RAFT, DEV_PORT_CONTROL, DEV_PORT_DATA, DEV_PORT_COUNT };
struct dev_port_name {
  const char *key, *flag;
};
extern const struct dev_port_name dev_ports[DEV_PORT_COUNT];

struct dev_node {
  uint32_t id;
  bool voter;
  uint16_t port[DEV_PORT_COUNT];
  char dir[DEV_PATH + 32], log[DEV_PATH + 32];
  pid_t pid; /* 0 once `dev` stopped it (or before its first start) */
};

struct dev_cluster {
  char dir[DEV_PATH]; /* absolute */
  char secret[129];   /* hex */
  unsigned k, m;      /* the default bucket's policy */
  unsigned long orphan_grace, sweep_interval; /* seconds, passed to every node; 0: its default */
  size_t n;
  struct dev_node node[DEV_MAX_NODES];
};

/* ---- dev_state.c: the cluster, its state file and its dev dir ---- */

/* "127.0.0.1:PORT" of n's port p into out. */
void dev__addr_of(const struct dev_node *n, enum dev_port p, char *out, size_t cap);
/* Every node's control address, comma-separated, into out. */
void dev__control_list(const struct dev_cluster *dc, char *out, size_t cap);
/* How many of dc's nodes are voters. */
size_t dev__voters_of(const struct dev_cluster *dc);
/* The node with this id, inside dc, or NULL. */
struct dev_node *dev__find_node(struct dev_cluster *dc, uint32_t id);
/* mkdir -p. 0 or -errno. */
int dev__make_dirs(const char *path);
/* Publishes dc as <dc->dir>/cluster.ini (cli_write_atomic). 0 or -errno. */
int dev__state_write(const struct dev_cluster *dc);
/* Reads <dc->dir>/cluster.ini into dc. 0, -ENOENT (no cluster there), or an
 * error with a sentence in err. */
int dev__state_read(struct dev_cluster *dc, char *err, size_t cap);
/* Writes <dc->dir>/secret, 0600, the file the nodes read (--secret-file). */
int dev__write_secret(const struct dev_cluster *dc);
/* Sets dc->dir to the absolute path of the existing directory d. 0 or
 * -errno. */
int dev__set_dir(struct dev_cluster *dc, const char *d);
/* Takes the dev dir's lock for the rest of the process (one `dev` command
 * at a time changes a dev dir). 0, or -1 after printing why not. */
int dev__lock_dir(const struct dev_cluster *dc, const char *sub);

/* ---- dev_proc.c: the node processes ---- */

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t dev__now_ms(void);
void dev__sleep_ms(long ms);
/* Reads up to cap-1 bytes of a small file (under /proc, say) into buf,
 * NUL-terminated. The byte count, or -1. */
ssize_t dev__read_small(const char *path, char *buf, size_t cap);
/* Whether n's process runs: a child of ours that has not exited, or a live
 * `medshard node` with n's dir (a recorded PID may have been reused). On
 * false, *status (if given) is a child's wait status, else -1. */
bool dev__running(const struct dev_node *n, int *status);
/* "exited with status N", "was killed by signal N" or "is gone" for a wait
 * status from dev__running (-1: not known). */
void dev__describe_exit(int st, char *out, size_t cap);
/* Starts node n detached, its output appended to its log; sets n->pid.
 * 0, or an error with a sentence in why. */
int dev__spawn_node(const struct dev_cluster *dc, struct dev_node *n, char *why, size_t cap);
/* SIGTERM to every node that runs, up to TERM_WAIT_S, then SIGKILL for the
 * rest and up to KILL_WAIT_S. ids (DEV_MAX_NODES) gets the ids of the nodes
 * that were running, *nids their count; returns how many still run. Nodes
 * that are gone get pid 0. */
size_t dev__stop_all(struct dev_cluster *dc, uint32_t *ids, size_t *nids);
/* Waits up to secs for n's process (every thread of it) to be gone. */
bool dev__wait_gone(const struct dev_node *n, int secs);
/* The last lines of a node's log, to stderr. */
void dev__print_tail(const char *path);

#endif
