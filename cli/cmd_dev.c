/* `medshard dev up|status|kill|start|down`: a local cluster of `medshard
 * node` processes on 127.0.0.1 for development and tests. A state file in
 * the dev dir records every node's ports, data dir and PID so that later
 * commands find them; docs/dev.md describes it and the client config. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "cli/cli.h"
#include "common/err.h"

#define DEV_STATE "cluster.ini"
#define DEV_VERSION 1
#define DEV_DEFAULT_DIR "./var/dev"
#define DEV_HOST "127.0.0.1"
#define DEV_MAX_NODES 32
#define DEV_PATH 512
#define DEV_BUCKET "default"
#define DEV_UNIT (1u << 20)
#define UP_WAIT_S 60    /* dev up: leader elected and every node in the map */
#define START_WAIT_S 15 /* dev start: the node answers on its control port */
#define TERM_WAIT_S 10  /* SIGTERM, then SIGKILL */
#define KILL_WAIT_S 5
#define HEAD_MS 1000
#define TAIL_LINES 15

/* The ports a node listens on: the state file's key and `medshard node`'s
 * flag for each. A new listener of the node is one more row here; readers
 * of the state file ignore keys they do not know. */
enum dev_port { DEV_PORT_RAFT, DEV_PORT_CONTROL, DEV_PORT_DATA, DEV_PORT_COUNT };
static const struct {
  const char *key, *flag;
} dev_ports[DEV_PORT_COUNT] = {
    [DEV_PORT_RAFT] = {"raft", "--raft"},
    [DEV_PORT_CONTROL] = {"control", "--control"},
    [DEV_PORT_DATA] = {"data", "--data"},
};

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
  size_t n;
  struct dev_node node[DEV_MAX_NODES];
};

/* Options by bit, so each subcommand can refuse the ones it does not take. */
enum { O_DIR = 1, O_NODES = 2, O_VOTERS = 4, O_EC = 8, O_JSON = 16, O_WIPE = 32 };

struct dev_opts {
  const char *sub, *dir;
  unsigned long nodes, voters, k, m;
  unsigned given; /* O_* bits */
  bool json, wipe;
  int argi, argc;
  char **argv;
};

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static void addr_of(const struct dev_node *n, enum dev_port p, char *out, size_t cap)
{
  snprintf(out, cap, DEV_HOST ":%u", (unsigned)n->port[p]);
}

/* Every node's control address, comma-separated. */
static void control_list(const struct dev_cluster *dc, char *out, size_t cap)
{
  size_t len = 0;
  out[0] = 0;
  for (size_t i = 0; i < dc->n && len < cap; i++)
    len += (size_t)snprintf(out + len, cap - len, "%s" DEV_HOST ":%u", i ? "," : "",
                            (unsigned)dc->node[i].port[DEV_PORT_CONTROL]);
}

static size_t voters_of(const struct dev_cluster *dc)
{
  size_t v = 0;
  for (size_t i = 0; i < dc->n; i++)
    v += dc->node[i].voter;
  return v;
}

static struct dev_node *find_node(struct dev_cluster *dc, uint32_t id)
{
  for (size_t i = 0; i < dc->n; i++)
    if (dc->node[i].id == id)
      return &dc->node[i];
  return NULL;
}

/* mkdir -p. 0 or -errno. */
static int make_dirs(const char *path)
{
  char p[DEV_PATH];
  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
    return -ENAMETOOLONG;
  for (char *s = p + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
      return -errno;
    *s = '/';
  }
  return mkdir(p, 0755) != 0 && errno != EEXIST ? -errno : 0;
}

/* ---- the state file (docs/dev.md) ---- */

static int state_write(const struct dev_cluster *dc)
{
  char *text = NULL, path[DEV_PATH + 16], addr[32];
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f == NULL)
    return -errno;
  fprintf(f, "medshard-dev %d\n# The local cluster of `medshard dev` (docs/dev.md); written by"
             " the dev\n# verbs. Edit only while every node is stopped.\n"
             "secret = %s\nec = %u+%u\nbucket = " DEV_BUCKET "\n",
          DEV_VERSION, dc->secret, dc->k, dc->m);
  for (size_t i = 0; i < dc->n; i++) {
    const struct dev_node *n = &dc->node[i];
    fprintf(f, "\n[node %" PRIu32 "]\nrole = %s\n", n->id, n->voter ? "voter" : "standby");
    for (int p = 0; p < DEV_PORT_COUNT; p++) {
      addr_of(n, (enum dev_port)p, addr, sizeof addr);
      fprintf(f, "%s = %s\n", dev_ports[p].key, addr);
    }
    fprintf(f, "dir = %s\nlog = %s\npid = %d\n", n->dir, n->log, (int)n->pid);
  }
  if (fclose(f) != 0) {
    free(text);
    return -ENOMEM;
  }
  snprintf(path, sizeof path, "%s/" DEV_STATE, dc->dir);
  int rc = cli_write_atomic(path, text, 0600);
  free(text);
  return rc;
}

/* "127.0.0.1:PORT" into a port. */
static int parse_port(const char *v, uint16_t *port)
{
  unsigned long p;
  const char *colon = strrchr(v, ':');
  if (colon == NULL || cli_parse_ulong(colon + 1, 1, 65535, &p) != 0)
    return MSD_EPARAM;
  *port = (uint16_t)p;
  return 0;
}

static int copy_value(char *dst, size_t cap, const char *v)
{
  if (strlen(v) >= cap || v[0] == 0)
    return MSD_EPARAM;
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

/* One key of a [node N] section; unknown keys are ignored. */
static int node_key(struct dev_node *n, const char *k, const char *v)
{
  unsigned long pid;
  for (int p = 0; p < DEV_PORT_COUNT; p++)
    if (strcmp(k, dev_ports[p].key) == 0)
      return parse_port(v, &n->port[p]);
  if (strcmp(k, "role") == 0) {
    n->voter = strcmp(v, "voter") == 0;
    return n->voter || strcmp(v, "standby") == 0 ? 0 : MSD_EPARAM;
  }
  if (strcmp(k, "dir") == 0)
    return copy_value(n->dir, sizeof n->dir, v);
  if (strcmp(k, "log") == 0)
    return copy_value(n->log, sizeof n->log, v);
  if (strcmp(k, "pid") == 0) {
    if (cli_parse_ulong(v, 0, INT_MAX, &pid) != 0)
      return MSD_EPARAM;
    n->pid = (pid_t)pid;
  }
  return 0;
}

/* One line after the version line: a section, a key, or nothing. */
static int state_line(struct dev_cluster *dc, char *line)
{
  unsigned id;
  char *t = cli_trim(line);
  if (t[0] == 0 || t[0] == '#')
    return 0;
  if (t[0] == '[') {
    if (sscanf(t, "[node %u]", &id) != 1 || id == 0 || id > DEV_MAX_NODES ||
        dc->n == DEV_MAX_NODES || find_node(dc, id) != NULL)
      return MSD_EPARAM;
    memset(&dc->node[dc->n], 0, sizeof dc->node[0]);
    dc->node[dc->n++].id = id;
    return 0;
  }
  char *eq = strchr(t, '=');
  if (eq == NULL)
    return MSD_EPARAM;
  *eq = 0;
  const char *k = cli_trim(t), *v = cli_trim(eq + 1);
  if (dc->n > 0)
    return node_key(&dc->node[dc->n - 1], k, v);
  if (strcmp(k, "secret") == 0)
    return copy_value(dc->secret, sizeof dc->secret, v);
  if (strcmp(k, "ec") == 0)
    return sscanf(v, "%u+%u", &dc->k, &dc->m) == 2 ? 0 : MSD_EPARAM;
  return 0;
}

/* What a complete state lacks, or NULL. */
static const char *state_missing(const struct dev_cluster *dc)
{
  if (strlen(dc->secret) < 32)
    return "no secret (secret = HEX, at least 16 bytes)";
  size_t v = voters_of(dc);
  if (dc->n == 0 || (v != 1 && v != 3 && v != 5))
    return "no [node N] sections, or voters other than 1, 3 or 5";
  for (size_t i = 0; i < dc->n; i++) {
    for (int p = 0; p < DEV_PORT_COUNT; p++)
      if (dc->node[i].port[p] == 0)
        return "a node without all of its ports";
    if (dc->node[i].dir[0] == 0 || dc->node[i].log[0] == 0)
      return "a node without its dir or log";
  }
  return NULL;
}

/* Reads <dc->dir>/cluster.ini. 0, -ENOENT (no cluster there), or an error
 * with a sentence in err. */
static int state_read(struct dev_cluster *dc, char *err, size_t cap)
{
  char path[DEV_PATH + 16], line[DEV_PATH + 64];
  unsigned ver = 0, lineno = 1;
  snprintf(path, sizeof path, "%s/" DEV_STATE, dc->dir);
  dc->n = 0;
  dc->secret[0] = 0;
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    int rc = -errno;
    snprintf(err, cap, "cannot read %s: %s", path, strerror(errno));
    return rc;
  }
  int rc = 0;
  if (fgets(line, sizeof line, f) == NULL || sscanf(line, "medshard-dev %u", &ver) != 1) {
    snprintf(err, cap, "%s is not a dev cluster state file (first line must be 'medshard-dev %d')",
             path, DEV_VERSION);
    rc = MSD_EPARAM;
  } else if (ver != DEV_VERSION) {
    snprintf(err, cap, "%s is version %u; this medshard reads version %d", path, ver, DEV_VERSION);
    rc = MSD_EVERSION;
  }
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    if ((rc = state_line(dc, line)) != 0)
      snprintf(err, cap, "%s line %u: not a valid section or key = value", path, lineno);
  }
  fclose(f);
  const char *why = rc == 0 ? state_missing(dc) : NULL;
  if (why != NULL) {
    snprintf(err, cap, "%s is incomplete: %s", path, why);
    rc = MSD_EPARAM;
  }
  return rc;
}

/* The secret file the nodes read (--secret-file), 0600, from the state. */
static int write_secret(const struct dev_cluster *dc)
{
  char path[DEV_PATH + 16], text[sizeof dc->secret + 2];
  snprintf(path, sizeof path, "%s/secret", dc->dir);
  snprintf(text, sizeof text, "%s\n", dc->secret);
  return cli_write_atomic(path, text, 0600);
}

/* ---- processes ---- */

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t got = read(fd, buf, cap - 1);
  close(fd);
  if (got >= 0)
    buf[got] = 0;
  return got;
}

/* Whether some thread of pid is still alive. A SIGKILLed process's main
 * thread turns zombie while other threads may still be exiting (in an
 * fsync, say) and holding the process's files and their locks, so the
 * process is gone only once every thread is a zombie or dead. */
static bool any_thread_alive(pid_t pid)
{
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (d == NULL)
    return false;
  bool alive = false;
  for (struct dirent *e; !alive && (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "/proc/%d/task/%.16s/stat", (int)pid, e->d_name);
    char *paren = read_small(path, buf, sizeof buf) > 0 ? strrchr(buf, ')') : NULL;
    alive = paren != NULL && paren[1] != 0 && paren[2] != 'Z' && paren[2] != 'X';
  }
  closedir(d);
  return alive;
}

/* Whether pid is n's `medshard node` process: alive (any_thread_alive),
 * and its command line is `.../medshard node ... --dir <n's dir>` (a PID
 * recorded long ago may belong to another program by now). */
static bool is_node_process(const struct dev_node *n)
{
  char path[64], buf[8192];
  if (n->pid <= 0 || kill(n->pid, 0) != 0 || !any_thread_alive(n->pid))
    return false;
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)n->pid);
  ssize_t len = read_small(path, buf, sizeof buf);
  if (len <= 0)
    return false;
  const char *arg[64];
  size_t argc = 0;
  for (ssize_t off = 0; off < len && argc < 64; off += (ssize_t)strlen(buf + off) + 1)
    arg[argc++] = buf + off;
  const char *base = strrchr(arg[0], '/');
  bool ok = argc >= 2 && strstr(base ? base + 1 : arg[0], "medshard") != NULL &&
            strcmp(arg[1], "node") == 0;
  bool dir = false;
  for (size_t i = 2; ok && i + 1 < argc; i++)
    dir = dir || (strcmp(arg[i], "--dir") == 0 && strcmp(arg[i + 1], n->dir) == 0);
  return ok && dir;
}

/* For a child of ours: 1 while it runs (it may not have reached exec
 * yet), 0 once it exited (reaped, its wait status in *status). -1 for a
 * PID that is not our child. */
static int child_state(pid_t pid, int *status)
{
  int st;
  pid_t w = waitpid(pid, &st, WNOHANG);
  if (w == pid && status)
    *status = st;
  return w == 0 ? 1 : w == pid ? 0 : -1;
}

/* Whether process pid still exists: a child of ours not yet exited, or a
 * process with a live thread. For the waits after a signal, once running()
 * said the PID was the node. *status: a child's wait status, else -1. */
static bool pid_exists(pid_t pid, int *status)
{
  if (status)
    *status = -1;
  int c = pid > 0 ? child_state(pid, status) : 0;
  return c == 1 || (c == -1 && kill(pid, 0) == 0 && any_thread_alive(pid));
}

/* Whether n's process runs: a child of ours that has not exited, or
 * is_node_process. *status as for pid_exists. */
static bool running(const struct dev_node *n, int *status)
{
  if (status)
    *status = -1;
  int c = n->pid > 0 ? child_state(n->pid, status) : 0;
  return c == 1 || (c == -1 && is_node_process(n));
}

static void describe_exit(int st, char *out, size_t cap)
{
  if (st >= 0 && WIFEXITED(st))
    snprintf(out, cap, "exited with status %d", WEXITSTATUS(st));
  else if (st >= 0 && WIFSIGNALED(st))
    snprintf(out, cap, "was killed by signal %d", WTERMSIG(st));
  else
    snprintf(out, cap, "is gone");
}

/* The child: own session (a Ctrl-C at the terminal or the end of `dev`
 * does not reach it), output to its log, nothing else inherited. */
static _Noreturn void child_exec(int logfd, const char **argv)
{
  setsid();
  int nul = open("/dev/null", O_RDONLY);
  if (nul >= 0)
    dup2(nul, 0);
  dup2(logfd, 1);
  dup2(logfd, 2);
  for (int fd = 3; fd < 1024; fd++)
    close(fd);
  execv(argv[0], (char *const *)argv);
  fprintf(stderr, "medshard dev: cannot run %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

/* The control address a standby joins through: the first voter that is
 * running, else the first voter. */
static const struct dev_node *join_target(const struct dev_cluster *dc)
{
  const struct dev_node *first = NULL;
  for (size_t i = 0; i < dc->n; i++) {
    if (!dc->node[i].voter)
      continue;
    if (first == NULL)
      first = &dc->node[i];
    if (running(&dc->node[i], NULL))
      return &dc->node[i];
  }
  return first;
}

struct node_argv {
  const char *v[64];
  char id[16], secret[DEV_PATH + 16], addr[DEV_PORT_COUNT][32], join[32];
  char peer[DEV_MAX_NODES][80];
};

/* `medshard node` for n: every voter as --peer, --join for a standby. */
static void build_argv(const struct dev_cluster *dc, const struct dev_node *n, const char *exe,
                       struct node_argv *a)
{
  size_t k = 0, np = 0;
  snprintf(a->id, sizeof a->id, "%" PRIu32, n->id);
  snprintf(a->secret, sizeof a->secret, "%s/secret", dc->dir);
  a->v[k++] = exe, a->v[k++] = "node", a->v[k++] = "--id", a->v[k++] = a->id;
  a->v[k++] = "--dir", a->v[k++] = n->dir;
  for (int p = 0; p < DEV_PORT_COUNT; p++) {
    addr_of(n, (enum dev_port)p, a->addr[p], sizeof a->addr[p]);
    a->v[k++] = dev_ports[p].flag, a->v[k++] = a->addr[p];
  }
  a->v[k++] = "--secret-file", a->v[k++] = a->secret;
  for (size_t i = 0; i < dc->n; i++) {
    const struct dev_node *p = &dc->node[i];
    if (!p->voter)
      continue;
    snprintf(a->peer[np], sizeof a->peer[np], "%" PRIu32 "," DEV_HOST ":%u," DEV_HOST ":%u", p->id,
             (unsigned)p->port[DEV_PORT_RAFT], (unsigned)p->port[DEV_PORT_CONTROL]);
    a->v[k++] = "--peer", a->v[k++] = a->peer[np++];
  }
  if (!n->voter) {
    addr_of(join_target(dc), DEV_PORT_CONTROL, a->join, sizeof a->join);
    a->v[k++] = "--join", a->v[k++] = a->join;
  }
  a->v[k] = NULL;
}

/* Starts node n detached, output appended to its log; sets n->pid. */
static int spawn_node(const struct dev_cluster *dc, struct dev_node *n, char *why, size_t cap)
{
  static struct node_argv a;
  char exe[DEV_PATH], stamp[64];
  ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (el <= 0) {
    snprintf(why, cap, "cannot find the medshard binary (/proc/self/exe): %s", strerror(errno));
    return -EIO;
  }
  exe[el] = 0;
  build_argv(dc, n, exe, &a);
  int logfd = open(n->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) {
    snprintf(why, cap, "cannot open node %" PRIu32 "'s log %s: %s", n->id, n->log, strerror(errno));
    return -errno;
  }
  time_t t = time(NULL);
  struct tm tm;
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
  dprintf(logfd, "=== medshard dev: starting node %" PRIu32 " at %s ===\n", n->id, stamp);
  pid_t pid = fork();
  if (pid == 0)
    child_exec(logfd, a.v);
  int e = errno;
  close(logfd);
  if (pid < 0) {
    snprintf(why, cap, "cannot start node %" PRIu32 ": fork: %s", n->id, strerror(e));
    return -e;
  }
  n->pid = pid;
  return 0;
}

/* Sends sig to every node that runs; nodes that do not get pid 0. Returns
 * how many were signalled and lists their ids. */
static size_t signal_all(struct dev_cluster *dc, int sig, uint32_t *ids)
{
  size_t k = 0;
  for (size_t i = 0; i < dc->n; i++) {
    struct dev_node *n = &dc->node[i];
    if (!running(n, NULL)) {
      n->pid = 0;
      continue;
    }
    kill(n->pid, sig);
    ids[k++] = n->id;
  }
  return k;
}

/* Waits up to secs for every node to be gone. Returns how many remain. */
static size_t wait_all_gone(struct dev_cluster *dc, int secs)
{
  uint64_t deadline = now_ms() + (uint64_t)secs * 1000;
  for (;;) {
    size_t left = 0;
    for (size_t i = 0; i < dc->n; i++)
      if (pid_exists(dc->node[i].pid, NULL))
        left++;
      else
        dc->node[i].pid = 0;
    if (left == 0 || now_ms() >= deadline)
      return left;
    sleep_ms(100);
  }
}

/* SIGTERM to every node that runs, a bounded wait, then SIGKILL for the
 * stragglers. ids gets who was running; returns how many still run. */
static size_t stop_all(struct dev_cluster *dc, uint32_t *ids, size_t *nids)
{
  *nids = signal_all(dc, SIGTERM, ids);
  if (*nids == 0 || wait_all_gone(dc, TERM_WAIT_S) == 0)
    return 0;
  for (size_t i = 0; i < dc->n; i++) /* the ones signalled above that remain */
    if (dc->node[i].pid > 0)
      kill(dc->node[i].pid, SIGKILL);
  return wait_all_gone(dc, KILL_WAIT_S);
}

/* The last TAIL_LINES lines of a log, to stderr. */
static void print_tail(const char *path)
{
  char buf[4096];
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
  size_t len = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[len] = 0;
  const char *start = buf;
  int lines = 0;
  for (size_t i = len; i > 0 && start == buf; i--)
    if (buf[i - 1] == '\n' && i != len && ++lines == TAIL_LINES)
      start = buf + i;
  fprintf(stderr, "--- %s (last lines) ---\n%s%s", path, start,
          len > 0 && buf[len - 1] != '\n' ? "\n" : "");
}

/* ---- talking to the nodes ---- */

/* HEAD of node n within ms. 0 with *out the caller's
 * (medshard__ctl_response__free_unpacked) and (*out)->head set, or an error. */
static int node_head(const struct dev_node *n, int ms, Medshard__CtlResponse **out)
{
  char addr[32];
  struct ctl_client *c;
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  req.format_version = 1;
  req.op = MEDSHARD__CTL_OP__CTL_OP_HEAD;
  addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
  int rc = ctl_client_connect(addr, ms, &c);
  if (rc != 0)
    return rc;
  rc = ctl_client_call(c, &req, ms, out, NULL, NULL);
  ctl_client_close(c);
  if (rc == 0 && ((*out)->code != 0 || (*out)->head == NULL)) {
    rc = (*out)->code != 0 ? (*out)->code : MSD_EDECODE;
    medshard__ctl_response__free_unpacked(*out, NULL);
  }
  return rc;
}

/* How many of dc's nodes the cluster map lists, as node n has applied it. */
static size_t map_count(const struct dev_cluster *dc, const struct dev_node *n)
{
  char addr[32];
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
  if (ctl_call_any(addr, &req, 2000, &r, NULL, NULL) != 0)
    return 0;
  size_t found = 0;
  for (size_t i = 0; i < dc->n; i++)
    for (size_t j = 0; r->code == 0 && j < r->n_nodes; j++)
      found += r->nodes[j]->node_id == dc->node[i].id;
  medshard__ctl_response__free_unpacked(r, NULL);
  return found;
}

/* One look: every node answers, a leader is known, and the leader's map
 * lists every node. On false, why says what is missing. */
static bool cluster_ready(struct dev_cluster *dc, uint32_t *leader, char *why, size_t cap)
{
  char addr[32];
  *leader = 0;
  for (size_t i = 0; i < dc->n; i++) {
    Medshard__CtlResponse *r;
    if (node_head(&dc->node[i], HEAD_MS, &r) != 0) {
      addr_of(&dc->node[i], DEV_PORT_CONTROL, addr, sizeof addr);
      snprintf(why, cap, "node %" PRIu32 " does not answer on %s", dc->node[i].id, addr);
      return false;
    }
    if (*leader == 0)
      *leader = r->head->leader_id;
    medshard__ctl_response__free_unpacked(r, NULL);
  }
  const struct dev_node *l = find_node(dc, *leader);
  size_t have = l != NULL ? map_count(dc, l) : 0;
  if (l == NULL)
    snprintf(why, cap, "no leader elected");
  else if (have < dc->n)
    snprintf(why, cap, "the cluster map lists %zu of the %zu nodes", have, dc->n);
  return l != NULL && have == dc->n;
}

/* Waits up to secs for cluster_ready; fails early when a node exits. */
static int wait_ready(struct dev_cluster *dc, int secs, uint32_t *leader, char *why, size_t cap)
{
  char last[300] = "", how[64];
  uint64_t deadline = now_ms() + (uint64_t)secs * 1000;
  for (;;) {
    for (size_t i = 0; i < dc->n; i++) {
      int st;
      if (running(&dc->node[i], &st))
        continue;
      describe_exit(st, how, sizeof how);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) %s during start-up", dc->node[i].id,
               (int)dc->node[i].pid, how);
      dc->node[i].pid = 0;
      return MSD_ESTATE;
    }
    if (cluster_ready(dc, leader, last, sizeof last))
      return 0;
    if (now_ms() >= deadline) {
      snprintf(why, cap, "the cluster is not ready after %d s: %s", secs, last);
      return MSD_ETIMEDOUT;
    }
    sleep_ms(250);
  }
}

/* Creates the default bucket; one that exists already (a restarted
 * cluster) is fine. */
static int create_bucket(const struct dev_cluster *dc, char *why, size_t cap)
{
  char nodes[1024];
  Medshard__CtlResponse *r;
  control_list(dc, nodes, sizeof nodes);
  int rc = ctl_create_bucket(nodes, DEV_BUCKET, dc->k, dc->m, DEV_UNIT, &r);
  if (rc != 0) {
    snprintf(why, cap, "cannot create bucket " DEV_BUCKET ": %s", msd_strerror(rc));
    return rc;
  }
  rc = r->code != 0 ? r->code : r->n_outcomes == 1 ? r->outcomes[0]->code : MSD_EDECODE;
  const char *msg = r->code != 0 ? r->message : r->n_outcomes == 1 ? r->outcomes[0]->message : "";
  if (rc != 0 && rc != MSD_EEXIST)
    snprintf(why, cap, "cannot create bucket " DEV_BUCKET ": %s",
             msg && msg[0] ? msg : msd_strerror(rc));
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc == MSD_EEXIST ? 0 : rc;
}

/* ---- finding the cluster ---- */

/* The dev dir: --dir, else the dev_dir of ./medshard.conf, else ./var/dev. */
static const char *dir_arg(const struct dev_opts *o, struct cli_config *cfg)
{
  char err[700];
  if (o->dir != NULL)
    return o->dir;
  if (cli_config_read(CLI_CONFIG_FILE, cfg, err, sizeof err) == 0 && cfg->dev_dir[0] != 0)
    return cfg->dev_dir;
  return DEV_DEFAULT_DIR;
}

static int set_dir(struct dev_cluster *dc, const char *d)
{
  char real[PATH_MAX];
  if (realpath(d, real) == NULL)
    return -errno;
  if (strlen(real) >= sizeof dc->dir - 32)
    return -ENAMETOOLONG;
  memcpy(dc->dir, real, strlen(real) + 1);
  return 0;
}

/* One `dev` command at a time changes a dev dir: an exclusive lock on
 * <dir>/cluster.lock, released when the process exits. 0 or -1 (printed). */
static int lock_dir(const struct dev_cluster *dc, const char *sub)
{
  char path[DEV_PATH + 16];
  snprintf(path, sizeof path, "%s/cluster.lock", dc->dir);
  int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "medshard dev %s: cannot write to %s: %s\n", sub, dc->dir, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    fprintf(stderr, "medshard dev %s: another `medshard dev` command is working on %s; wait for"
            " it to finish\n", sub, dc->dir);
    close(fd);
    return -1;
  }
  return 0; /* fd stays open (and locked) until the process exits */
}

/* Reads the cluster recorded in the dev dir, after taking its lock when
 * the command changes it. 0 or an exit code (printed). */
static int load(const struct dev_opts *o, struct dev_cluster *dc, bool lock)
{
  struct cli_config cfg;
  char err[800] = "", path[DEV_PATH + 16];
  const char *d = dir_arg(o, &cfg);
  int rc = set_dir(dc, d);
  if (rc == 0) {
    snprintf(path, sizeof path, "%s/" DEV_STATE, dc->dir);
    rc = access(path, F_OK) == 0 ? 0 : -errno;
  }
  if (rc == -ENOENT || rc == -ENOTDIR) {
    fprintf(stderr, "medshard dev %s: no dev cluster in %s (no %s there); start one with"
            " `medshard dev up --dir %s`\n", o->sub, d, DEV_STATE, d);
    return 1;
  }
  if (rc != 0) {
    fprintf(stderr, "medshard dev %s: cannot read %s: %s\n", o->sub, d, msd_strerror(rc));
    return 1;
  }
  if (lock && lock_dir(dc, o->sub) != 0)
    return 1;
  if ((rc = state_read(dc, err, sizeof err)) != 0)
    fprintf(stderr, "medshard dev %s: %s\n", o->sub, err);
  return rc == 0 ? 0 : 1;
}

/* The node named by the positional argument; NULL after printing. *code
 * is the exit code then (2 usage, 1 no such node). */
static struct dev_node *node_arg(const struct dev_opts *o, struct dev_cluster *dc, int *code)
{
  unsigned long id;
  const char *a = o->argv[o->argi];
  *code = 2;
  if (cli_parse_ulong(a, 1, UINT32_MAX, &id) != 0) {
    fprintf(stderr, "medshard dev %s: want a node id (a number from 1), got '%s'\n", o->sub, a);
    return NULL;
  }
  if (load(o, dc, true) != 0) {
    *code = 1;
    return NULL;
  }
  struct dev_node *n = find_node(dc, (uint32_t)id);
  if (n == NULL) {
    fprintf(stderr, "medshard dev %s: no node %lu in the dev cluster in %s (its nodes are"
            " 1..%zu)\n", o->sub, id, dc->dir, dc->n);
    *code = 1;
  }
  return n;
}

/* ---- dev up ---- */

/* The low end of the kernel's ephemeral port range (32768 if unknown). */
static unsigned long ephemeral_low(void)
{
  char buf[64];
  unsigned long lo = 32768, hi;
  if (read_small("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof buf) > 0 &&
      sscanf(buf, "%lu %lu", &lo, &hi) != 2)
    lo = 32768;
  return lo;
}

/* Binds a TCP socket on 127.0.0.1:port (0: any). fd or -errno. */
static int bind_port(uint16_t port, uint16_t *got)
{
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  *got = ntohs(a.sin_port);
  return fd;
}

/* n free ports on 127.0.0.1, all different. They come from below the
 * kernel's ephemeral range when there is room, because a port in that
 * range may be taken by some outgoing connection while its node is down
 * and `dev start` could not bind it again. Every socket stays bound until
 * all are chosen; the nodes bind them moments later. */
static int pick_ports(uint16_t *ports, size_t n)
{
  int fds[DEV_MAX_NODES * DEV_PORT_COUNT];
  unsigned long lo = ephemeral_low(), span = lo > 12000 ? lo - 10000 : 0;
  uint32_t r = 0;
  size_t k = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
    r = (uint32_t)getpid();
  for (unsigned long tries = 0; k < n && tries < 4000; tries++) {
    uint16_t want = (uint16_t)(span ? 10000 + (r + tries * 7919) % span : 0), got = 0;
    int fd = bind_port(want, &got);
    if (fd >= 0)
      ports[k] = got, fds[k++] = fd;
  }
  for (size_t i = 0; i < k; i++)
    close(fds[i]);
  return k == n ? 0 : -EADDRINUSE;
}

/* A new cluster in dc->dir: secret, ports and nodes, the state written. */
static int up_fresh(const struct dev_opts *o, struct dev_cluster *dc)
{
  uint8_t raw[32];
  uint16_t ports[DEV_MAX_NODES * DEV_PORT_COUNT];
  char path[DEV_PATH + 16];
  struct stat st;
  for (unsigned long i = 1; i <= o->nodes; i++) {
    snprintf(path, sizeof path, "%s/n%lu", dc->dir, i);
    if (stat(path, &st) == 0) {
      fprintf(stderr, "medshard dev up: %s exists but %s records no dev cluster (no %s); choose"
              " another --dir or remove it\n", path, dc->dir, DEV_STATE);
      return 1;
    }
  }
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw ||
      pick_ports(ports, o->nodes * DEV_PORT_COUNT) != 0) {
    fprintf(stderr, "medshard dev up: cannot pick free ports on " DEV_HOST " or a secret\n");
    return 1;
  }
  cli_hex(raw, sizeof raw, dc->secret);
  dc->k = (unsigned)o->k, dc->m = (unsigned)o->m, dc->n = o->nodes;
  for (size_t i = 0; i < dc->n; i++) {
    struct dev_node *n = &dc->node[i];
    memset(n, 0, sizeof *n);
    n->id = (uint32_t)(i + 1);
    n->voter = i < o->voters;
    for (int p = 0; p < DEV_PORT_COUNT; p++)
      n->port[p] = ports[i * DEV_PORT_COUNT + (size_t)p];
    snprintf(n->dir, sizeof n->dir, "%s/n%" PRIu32, dc->dir, n->id);
    snprintf(n->log, sizeof n->log, "%s/n%" PRIu32 ".log", dc->dir, n->id);
  }
  int rc = state_write(dc);
  if (rc != 0)
    fprintf(stderr, "medshard dev up: cannot write %s/%s: %s\n", dc->dir, DEV_STATE,
            msd_strerror(rc));
  return rc == 0 ? 0 : 1;
}

/* The cluster recorded in dc->dir may start again if none of its nodes
 * runs and the flags do not ask for another shape. 0 or an exit code. */
static int up_existing(const struct dev_opts *o, struct dev_cluster *dc)
{
  char ids[DEV_MAX_NODES * 4] = "";
  size_t live = 0, len = 0;
  for (size_t i = 0; i < dc->n; i++)
    if (running(&dc->node[i], NULL) && ++live)
      len += (size_t)snprintf(ids + len, sizeof ids - len, "%s%" PRIu32, len ? "," : "",
                              dc->node[i].id);
  if (live > 0) {
    fprintf(stderr, "medshard dev up: the dev cluster in %s is running (%zu of %zu nodes: %s);"
            " see `medshard dev status`, or stop it with `medshard dev down`\n", dc->dir, live,
            dc->n, ids);
    return 1;
  }
  if ((o->given & (O_NODES | O_VOTERS | O_EC)) != 0 &&
      (o->nodes != dc->n || o->voters != voters_of(dc) || o->k != dc->k || o->m != dc->m)) {
    fprintf(stderr, "medshard dev up: %s holds a stopped cluster of %zu nodes (%zu voters, --ec"
            " %u+%u); run `medshard dev up` without --nodes/--voters/--ec to start it again, or"
            " remove it first with `medshard dev down --wipe`\n", dc->dir, dc->n, voters_of(dc),
            dc->k, dc->m);
    return 1;
  }
  return 0;
}

/* Stops what a failed start began, keeps the state, shows the logs. */
static int up_failed(struct dev_cluster *dc, const char *why)
{
  uint32_t ids[DEV_MAX_NODES];
  size_t nids;
  fprintf(stderr, "medshard dev up: %s\n", why);
  size_t left = stop_all(dc, ids, &nids);
  state_write(dc);
  for (size_t i = 0; i < dc->n; i++)
    print_tail(dc->node[i].log);
  fprintf(stderr, "medshard dev up: %s; logs and state kept in %s (`medshard dev down --wipe"
          " --dir %s` removes them)\n", left ? "COULD NOT STOP every node it started"
          : "stopped the nodes it started", dc->dir, dc->dir);
  return 1;
}

/* Voters first, then standbys; waits for the cluster; the default bucket. */
static int up_run(struct dev_cluster *dc, uint32_t *leader)
{
  char why[900];
  int rc = write_secret(dc);
  if (rc != 0) {
    snprintf(why, sizeof why, "cannot write %s/secret: %s", dc->dir, msd_strerror(rc));
    return up_failed(dc, why);
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < dc->n; i++) {
      if (dc->node[i].voter != (pass == 0))
        continue;
      if (spawn_node(dc, &dc->node[i], why, sizeof why) != 0)
        return up_failed(dc, why);
      state_write(dc); /* the PID on disk at once: `dev down` finds it */
    }
  if (wait_ready(dc, UP_WAIT_S, leader, why, sizeof why) != 0 ||
      create_bucket(dc, why, sizeof why) != 0)
    return up_failed(dc, why);
  return 0;
}

/* ./medshard.conf for the verbs run from here (docs/dev.md). */
static int write_client_config(const struct dev_cluster *dc)
{
  struct cli_config c;
  memset(&c, 0, sizeof c);
  control_list(dc, c.nodes, sizeof c.nodes);
  snprintf(c.bucket, sizeof c.bucket, DEV_BUCKET);
  snprintf(c.dev_dir, sizeof c.dev_dir, "%s", dc->dir);
  return cli_config_write(CLI_CONFIG_FILE, &c);
}

static void up_print(const struct dev_cluster *dc, uint32_t leader, bool json)
{
  char nodes[1024], cwd[PATH_MAX], conf[PATH_MAX + 32];
  control_list(dc, nodes, sizeof nodes);
  if (getcwd(cwd, sizeof cwd) == NULL)
    snprintf(cwd, sizeof cwd, ".");
  snprintf(conf, sizeof conf, "%s/" CLI_CONFIG_FILE, cwd);
  if (json) {
    printf("{\"ok\":true,\"bucket\":\"" DEV_BUCKET "\",\"ec\":\"%u+%u\",\"nodes\":%zu,"
           "\"voters\":%zu,\"leader\":%" PRIu32 ",\"control\":\"%s\",\"dir\":", dc->k, dc->m,
           dc->n, voters_of(dc), leader, nodes);
    cli_json_str(stdout, dc->dir);
    printf(",\"config\":");
    cli_json_str(stdout, conf);
    printf("}\n");
    return;
  }
  printf("dev cluster up: %zu nodes (%zu voters, %zu standby%s), leader node %" PRIu32 "\n"
         "  control  %s\n  logs     %s/n*.log\n  config   %s"
         " (verbs run here use this cluster)\n  bucket   " DEV_BUCKET " (%u+%u)\n",
         dc->n, voters_of(dc), dc->n - voters_of(dc), dc->n - voters_of(dc) == 1 ? "" : "s",
         leader, nodes, dc->dir, conf, dc->k, dc->m);
}

static int dev_up(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  struct cli_config cfg;
  char err[800];
  uint32_t leader = 0;
  const char *d = dir_arg(o, &cfg);
  int rc = make_dirs(d);
  if (rc == 0 && access(d, W_OK) != 0)
    rc = -errno;
  if (rc == 0)
    rc = set_dir(&dc, d);
  if (rc != 0) {
    fprintf(stderr, "medshard dev up: cannot use %s as the dev dir: %s\n", d, msd_strerror(rc));
    return 1;
  }
  if (lock_dir(&dc, "up") != 0)
    return 1;
  rc = state_read(&dc, err, sizeof err);
  if (rc != 0 && rc != -ENOENT) {
    fprintf(stderr, "medshard dev up: %s\n", err);
    return 1;
  }
  rc = rc == -ENOENT ? up_fresh(o, &dc) : up_existing(o, &dc);
  if (rc != 0 || (rc = up_run(&dc, &leader)) != 0)
    return rc;
  if ((rc = write_client_config(&dc)) != 0) {
    fprintf(stderr, "medshard dev up: the cluster runs, but ./%s cannot be written: %s\n",
            CLI_CONFIG_FILE, msd_strerror(rc));
    return 1;
  }
  up_print(&dc, leader, o->json);
  return 0;
}

/* ---- dev status ---- */

static const char *process_word(const struct dev_node *n, bool alive)
{
  return alive ? "running" : n->pid > 0 ? "exited" : "stopped";
}

static void status_json(const struct dev_node *n, bool alive, const Medshard__ChainHead *h)
{
  char addr[32], head[65];
  printf("{\"id\":%" PRIu32 ",\"role\":\"%s\",\"pid\":%d,\"alive\":%s,\"process\":\"%s\"",
         n->id, n->voter ? "voter" : "standby", (int)n->pid, alive ? "true" : "false",
         process_word(n, alive));
  for (int p = 0; p < DEV_PORT_COUNT; p++) {
    addr_of(n, (enum dev_port)p, addr, sizeof addr);
    printf(",\"%s\":\"%s\"", dev_ports[p].key, addr);
  }
  printf(",\"log\":");
  cli_json_str(stdout, n->log);
  if (h == NULL) {
    printf(",\"reachable\":false,\"raft_state\":\"%s\",\"leader\":null,\"applied\":null,"
           "\"height\":null,\"sealed\":null,\"leaves\":null,\"head\":null,\"alarm\":null}",
           alive ? "unreachable" : "down");
    return;
  }
  cli_hex(h->head.data, h->head.len == 32 ? 32 : 0, head);
  printf(",\"reachable\":true,\"raft_state\":\"%s\",\"leader\":%" PRIu32 ",\"applied\":%" PRIu64
         ",\"height\":%" PRIu64 ",\"sealed\":%" PRIu64 ",\"leaves\":%" PRIu64 ",\"head\":\"%s\","
         "\"alarm\":", h->raft_state, h->leader_id, h->applied, h->height, h->sealed, h->leaves,
         head);
  cli_json_str(stdout, h->alarm);
  printf("}");
}

static void status_row(const struct dev_node *n, bool alive, const Medshard__ChainHead *h)
{
  char addr[32], pid[16] = "-", nums[4][24] = {"-", "-", "-", "-"};
  addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
  if (n->pid > 0)
    snprintf(pid, sizeof pid, "%d", (int)n->pid);
  if (h != NULL) {
    snprintf(nums[0], sizeof nums[0], "%" PRIu32, h->leader_id);
    snprintf(nums[1], sizeof nums[1], "%" PRIu64, h->applied);
    snprintf(nums[2], sizeof nums[2], "%" PRIu64, h->height);
    snprintf(nums[3], sizeof nums[3], "%" PRIu64, h->sealed);
  }
  printf("%-4" PRIu32 "  %-7s  %-7s  %-7s  %-11s  %-6s  %-8s  %-6s  %-6s  %-21s  %s\n", n->id,
         n->voter ? "voter" : "standby", pid, process_word(n, alive),
         h ? h->raft_state : alive ? "unreachable" : "down", nums[0], nums[1], nums[2], nums[3],
         addr, h && h->alarm && h->alarm[0] ? h->alarm : "-");
}

static int dev_status(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  if (load(o, &dc, false) != 0)
    return 1;
  if (o->json) {
    printf("{\"dir\":");
    cli_json_str(stdout, dc.dir);
    printf(",\"bucket\":\"" DEV_BUCKET "\",\"ec\":\"%u+%u\",\"nodes\":[", dc.k, dc.m);
  } else {
    printf("dev cluster in %s: %zu nodes, %zu voters, bucket " DEV_BUCKET " (%u+%u)\n", dc.dir,
           dc.n, voters_of(&dc), dc.k, dc.m);
    printf("NODE  ROLE     PID      PROCESS  RAFT         LEADER  APPLIED   HEIGHT  SEALED"
           "  CONTROL                ALARM\n");
  }
  for (size_t i = 0; i < dc.n; i++) {
    const struct dev_node *n = &dc.node[i];
    Medshard__CtlResponse *r = NULL;
    bool alive = running(n, NULL);
    if (alive && node_head(n, HEAD_MS, &r) != 0)
      r = NULL;
    if (o->json) {
      printf("%s", i ? "," : "");
      status_json(n, alive, r ? r->head : NULL);
    } else {
      status_row(n, alive, r ? r->head : NULL);
    }
    if (r != NULL)
      medshard__ctl_response__free_unpacked(r, NULL);
  }
  if (o->json)
    printf("]}\n");
  return 0;
}

/* ---- dev kill N, dev start N ---- */

/* Waits up to secs for n's process to be gone. */
static bool wait_gone(const struct dev_node *n, int secs)
{
  uint64_t deadline = now_ms() + (uint64_t)secs * 1000;
  while (pid_exists(n->pid, NULL)) {
    if (now_ms() >= deadline)
      return false;
    sleep_ms(50);
  }
  return true;
}

static int dev_kill(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  int code;
  struct dev_node *n = node_arg(o, &dc, &code);
  if (n == NULL)
    return code;
  if (!running(n, NULL)) {
    fprintf(stderr, "medshard dev kill: node %" PRIu32 " is not running%s\n", n->id,
            n->pid > 0 ? " (no medshard node of this cluster has its recorded PID now)" : "");
    return 1;
  }
  pid_t pid = n->pid;
  if (kill(pid, SIGKILL) != 0 || !wait_gone(n, KILL_WAIT_S)) {
    fprintf(stderr, "medshard dev kill: node %" PRIu32 " (pid %d) is still running: %s\n", n->id,
            (int)pid, strerror(errno));
    return 1;
  }
  n->pid = 0;
  int rc = state_write(&dc);
  if (rc != 0)
    fprintf(stderr, "medshard dev kill: cannot record it in %s/%s: %s\n", dc.dir, DEV_STATE,
            msd_strerror(rc));
  if (o->json)
    printf("{\"ok\":true,\"node\":%" PRIu32 ",\"pid\":%d,\"signal\":\"KILL\"}\n", n->id, (int)pid);
  else
    printf("node %" PRIu32 " (pid %d) killed with SIGKILL\n", n->id, (int)pid);
  return rc == 0 ? 0 : 1;
}

/* Waits until the freshly started node answers HEAD. 0, or a failure
 * described in why (the node exited: its pid is set to 0). */
static int wait_answers(struct dev_node *n, char *why, size_t cap)
{
  char how[64], addr[32];
  uint64_t deadline = now_ms() + START_WAIT_S * 1000;
  for (;;) {
    int st;
    Medshard__CtlResponse *r;
    if (!running(n, &st)) {
      describe_exit(st, how, sizeof how);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) %s during start-up", n->id, (int)n->pid, how);
      n->pid = 0;
      return MSD_ESTATE;
    }
    if (node_head(n, HEAD_MS, &r) == 0) {
      medshard__ctl_response__free_unpacked(r, NULL);
      return 0;
    }
    if (now_ms() >= deadline) {
      addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) runs but does not answer on %s after %d s",
               n->id, (int)n->pid, addr, START_WAIT_S);
      return MSD_ETIMEDOUT;
    }
    sleep_ms(200);
  }
}

static int dev_start(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  char why[900];
  int code;
  struct dev_node *n = node_arg(o, &dc, &code);
  if (n == NULL)
    return code;
  if (running(n, NULL)) {
    fprintf(stderr, "medshard dev start: node %" PRIu32 " is already running (pid %d)\n", n->id,
            (int)n->pid);
    return 1;
  }
  int rc = write_secret(&dc);
  if (rc != 0)
    snprintf(why, sizeof why, "cannot write %s/secret: %s", dc.dir, msd_strerror(rc));
  if (rc == 0)
    rc = spawn_node(&dc, n, why, sizeof why);
  if (rc == 0)
    state_write(&dc);
  if (rc == 0)
    rc = wait_answers(n, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "medshard dev start: %s\n", why);
    state_write(&dc);
    print_tail(n->log);
    return 1;
  }
  if (o->json) {
    printf("{\"ok\":true,\"node\":%" PRIu32 ",\"pid\":%d,\"log\":", n->id, (int)n->pid);
    cli_json_str(stdout, n->log);
    printf("}\n");
  } else {
    printf("node %" PRIu32 " started (pid %d); log %s\n", n->id, (int)n->pid, n->log);
  }
  return 0;
}

/* ---- dev down ---- */

/* Whether path is dir/NAME (one level below dir). */
static bool directly_in(const char *dir, const char *path)
{
  size_t len = strlen(dir);
  return strncmp(path, dir, len) == 0 && path[len] == '/' && path[len + 1] != 0 &&
         strchr(path + len + 1, '/') == NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb, (void)flag, (void)ftw;
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* Removes what `dev` made in dc->dir (each node's data dir and log, the
 * secret, the lock, the state file last), then the dir if nothing else is
 * in it: a dev dir given as `.` never takes the user's files with it. */
static int wipe(const struct dev_cluster *dc, bool *dir_gone)
{
  static const char *const files[] = {"secret", "secret.tmp", "cluster.lock", DEV_STATE ".tmp",
                                      DEV_STATE};
  char path[DEV_PATH + 32];
  for (size_t i = 0; i < dc->n; i++) {
    const struct dev_node *n = &dc->node[i];
    if (!directly_in(dc->dir, n->dir) || !directly_in(dc->dir, n->log))
      return MSD_EPARAM; /* a hand-edited state: touch nothing outside the dev dir */
    if (nftw(n->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
      return -errno;
    if (unlink(n->log) != 0 && errno != ENOENT)
      return -errno;
  }
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dc->dir, files[i]);
    if (unlink(path) != 0 && errno != ENOENT)
      return -errno;
  }
  *dir_gone = rmdir(dc->dir) == 0;
  return 0;
}

/* The client config here goes with the cluster it names. */
static bool drop_client_config(const struct dev_cluster *dc)
{
  struct cli_config cfg;
  char err[700];
  return cli_config_read(CLI_CONFIG_FILE, &cfg, err, sizeof err) == 0 &&
         strcmp(cfg.dev_dir, dc->dir) == 0 && unlink(CLI_CONFIG_FILE) == 0;
}

static void down_print(const struct dev_opts *o, const struct dev_cluster *dc,
                       const uint32_t *ids, size_t nids, bool wiped)
{
  if (o->json) {
    printf("{\"ok\":true,\"stopped\":[");
    for (size_t i = 0; i < nids; i++)
      printf("%s%" PRIu32, i ? "," : "", ids[i]);
    printf("],\"wiped\":%s}\n", wiped ? "true" : "false");
    return;
  }
  if (nids == 0)
    printf("no node of the dev cluster in %s was running\n", dc->dir);
  for (size_t i = 0; i < nids; i++)
    printf("%s%" PRIu32 "%s", i ? " " : "stopped nodes ", ids[i], i + 1 == nids ? "\n" : "");
  if (wiped)
    printf("removed the dev cluster's files from %s\n", dc->dir);
}

static int dev_down(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  uint32_t ids[DEV_MAX_NODES];
  size_t nids;
  bool dir_gone = false;
  if (load(o, &dc, true) != 0)
    return 1;
  size_t left = stop_all(&dc, ids, &nids);
  int rc = state_write(&dc);
  if (left > 0) {
    fprintf(stderr, "medshard dev down: %zu node(s) still run after SIGKILL; see `medshard dev"
            " status`%s\n", left, o->wipe ? "; nothing removed" : "");
    return 1;
  }
  if (rc == 0 && o->wipe && (rc = wipe(&dc, &dir_gone)) == 0)
    drop_client_config(&dc);
  if (rc != 0) {
    fprintf(stderr, "medshard dev down: %s %s: %s\n", o->wipe ? "cannot remove the files of"
            : "cannot record the stopped nodes in", dc.dir, msd_strerror(rc));
    return 1;
  }
  down_print(o, &dc, ids, nids, o->wipe);
  if (o->wipe && !dir_gone && !o->json)
    printf("left %s itself: it holds other files\n", dc.dir);
  return 0;
}

/* ---- options and dispatch ---- */

static void dev_usage(FILE *f)
{
  fprintf(f,
          "usage: medshard dev up [--nodes N] [--voters 1|3|5] [--ec K+M] [--dir DIR] [--json]\n"
          "       medshard dev status [--dir DIR] [--json]\n"
          "       medshard dev kill N | start N [--dir DIR] [--json]\n"
          "       medshard dev down [--wipe] [--dir DIR] [--json]\n"
          "A local cluster of `medshard node` processes on " DEV_HOST " (defaults: 6 nodes,\n"
          "3 voters, bucket " DEV_BUCKET " with --ec 4+2). `up` writes ./" CLI_CONFIG_FILE
          ", which other\nverbs run from this directory use. DIR defaults to the dev_dir of ./"
          CLI_CONFIG_FILE ",\nelse " DEV_DEFAULT_DIR ". docs/dev.md has the details.\n");
}

static int parse_ec(const char *s, unsigned long *k, unsigned long *m)
{
  char kb[8], mb[8], extra;
  return sscanf(s, "%7[0-9]+%7[0-9]%c", kb, mb, &extra) == 2 &&
                 cli_parse_ulong(kb, 1, 32, k) == 0 && cli_parse_ulong(mb, 0, 16, m) == 0
             ? 0
             : MSD_EPARAM;
}

/* One option; 0 or an exit code (printed). */
static int dev_flag(struct dev_opts *o, int c, const char *arg)
{
  switch (c) {
  case 'd': o->dir = arg, o->given |= O_DIR; return 0;
  case 'j': o->json = true, o->given |= O_JSON; return 0;
  case 'w': o->wipe = true, o->given |= O_WIPE; return 0;
  case 'n':
    o->given |= O_NODES;
    if (cli_parse_ulong(arg, 1, DEV_MAX_NODES, &o->nodes) == 0)
      return 0;
    fprintf(stderr, "medshard dev: --nodes wants 1..%d, got '%s'\n", DEV_MAX_NODES, arg);
    return 2;
  case 'v':
    o->given |= O_VOTERS;
    if (cli_parse_ulong(arg, 1, 5, &o->voters) == 0 && o->voters != 2 && o->voters != 4)
      return 0;
    fprintf(stderr, "medshard dev: --voters must be 1, 3 or 5 (a Raft majority), got '%s'\n", arg);
    return 2;
  case 'e':
    o->given |= O_EC;
    if (parse_ec(arg, &o->k, &o->m) == 0)
      return 0;
    fprintf(stderr, "medshard dev: --ec must look like K+M with k 1..32 and m 0..16 (e.g. 4+2),"
            " got '%s'\n", arg);
    return 2;
  default:
    return 2;
  }
}

static int parse_opts(int argc, char **argv, struct dev_opts *o)
{
  static const struct option opts[] = {
      {"dir", 1, 0, 'd'},  {"nodes", 1, 0, 'n'}, {"voters", 1, 0, 'v'}, {"ec", 1, 0, 'e'},
      {"json", 0, 0, 'j'}, {"wipe", 0, 0, 'w'},  {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
  o->nodes = 6, o->voters = 3, o->k = 4, o->m = 2;
  optind = 1;
  int c, rc = 0;
  while (rc == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'h') {
      dev_usage(stdout);
      return -1;
    }
    rc = dev_flag(o, c, optarg);
  }
  o->argi = optind;
  o->argc = argc;
  o->argv = argv;
  return rc;
}

/* Shape checks for `dev up`; 0 or 2 (printed). */
static int up_check(const struct dev_opts *o)
{
  if (o->voters > o->nodes) {
    fprintf(stderr, "medshard dev up: --voters %lu needs at least %lu nodes; --nodes is %lu\n",
            o->voters, o->voters, o->nodes);
    return 2;
  }
  if (o->k + o->m > o->nodes) {
    fprintf(stderr, "medshard dev up: --ec %lu+%lu puts each of its %lu shards on its own node,"
            " so it needs --nodes %lu or more; --nodes is %lu\n", o->k, o->m, o->k + o->m,
            o->k + o->m, o->nodes);
    return 2;
  }
  return 0;
}

static const struct {
  const char *name;
  int (*run)(const struct dev_opts *);
  unsigned allowed;
  int nargs;
} dev_subs[] = {
    {"up", dev_up, O_DIR | O_NODES | O_VOTERS | O_EC | O_JSON, 0},
    {"status", dev_status, O_DIR | O_JSON, 0},
    {"kill", dev_kill, O_DIR | O_JSON, 1},
    {"start", dev_start, O_DIR | O_JSON, 1},
    {"down", dev_down, O_DIR | O_JSON | O_WIPE, 0},
};

/* Refuses options the subcommand does not take and a wrong number of
 * positional arguments; 0 or 2 (printed). */
static int check_args(const struct dev_opts *o, unsigned allowed, int nargs)
{
  static const char *const names[] = {"--dir", "--nodes", "--voters", "--ec", "--json", "--wipe"};
  for (unsigned b = 0; b < 6; b++)
    if ((o->given & ~allowed) & (1u << b)) {
      fprintf(stderr, "medshard dev %s: %s does not apply here\n", o->sub, names[b]);
      return 2;
    }
  if (o->argc - o->argi == nargs)
    return 0;
  if (nargs == 1 && o->argi >= o->argc)
    fprintf(stderr, "medshard dev %s: which node? usage: medshard dev %s N\n", o->sub, o->sub);
  else
    fprintf(stderr, "medshard dev %s: unexpected argument '%s'\n", o->sub,
            o->argv[o->argi + nargs]);
  return 2;
}

int cmd_dev(int argc, char **argv)
{
  struct dev_opts o;
  memset(&o, 0, sizeof o);
  o.sub = argc > 1 ? argv[1] : NULL;
  if (o.sub == NULL || strcmp(o.sub, "--help") == 0 || strcmp(o.sub, "help") == 0) {
    dev_usage(o.sub ? stdout : stderr);
    return o.sub ? 0 : 2;
  }
  for (size_t i = 0; i < sizeof dev_subs / sizeof dev_subs[0]; i++) {
    if (strcmp(o.sub, dev_subs[i].name) != 0)
      continue;
    int rc = parse_opts(argc - 1, argv + 1, &o);
    if (rc != 0)
      return rc < 0 ? 0 : rc;
    if ((rc = check_args(&o, dev_subs[i].allowed, dev_subs[i].nargs)) != 0)
      return rc;
    if (strcmp(o.sub, "up") == 0 && (rc = up_check(&o)) != 0)
      return rc;
    return dev_subs[i].run(&o);
  }
  fprintf(stderr, "medshard dev: unknown subcommand '%s' (up, status, kill, start, down)\n", o.sub);
  return 2;
}
