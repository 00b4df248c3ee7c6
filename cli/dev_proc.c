/* The node processes of a `medshard dev` cluster: starting `medshard node`
 * detached, telling from /proc whether a recorded PID is still that node,
 * waiting until every thread of a stopped node is gone, and stopping them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/dev_int.h"

#define TAIL_LINES 15

uint64_t dev__now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void dev__sleep_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

ssize_t dev__read_small(const char *path, char *buf, size_t cap)
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
    char *paren = dev__read_small(path, buf, sizeof buf) > 0 ? strrchr(buf, ')') : NULL;
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
  ssize_t len = dev__read_small(path, buf, sizeof buf);
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
 * process with a live thread. For the waits after a signal, once
 * dev__running() said the PID was the node. *status: a child's wait status, else -1. */
static bool pid_exists(pid_t pid, int *status)
{
  if (status)
    *status = -1;
  int c = pid > 0 ? child_state(pid, status) : 0;
  return c == 1 || (c == -1 && kill(pid, 0) == 0 && any_thread_alive(pid));
}

/* Whether n's process runs: a child of ours that has not exited, or
 * is_node_process. *status as for pid_exists. */
bool dev__running(const struct dev_node *n, int *status)
{
  if (status)
    *status = -1;
  int c = n->pid > 0 ? child_state(n->pid, status) : 0;
  return c == 1 || (c == -1 && is_node_process(n));
}

void dev__describe_exit(int st, char *out, size_t cap)
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
    if (dev__running(&dc->node[i], NULL))
      return &dc->node[i];
  }
  return first;
}

struct node_argv {
  const char *v[64];
  char id[16], secret[DEV_PATH + 16], addr[DEV_PORT_COUNT][32], join[32], grace[24],
      interval[24];
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
    dev__addr_of(n, (enum dev_port)p, a->addr[p], sizeof a->addr[p]);
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
    dev__addr_of(join_target(dc), DEV_PORT_CONTROL, a->join, sizeof a->join);
    a->v[k++] = "--join", a->v[k++] = a->join;
  }
  if (dc->orphan_grace != 0) {
    snprintf(a->grace, sizeof a->grace, "%lu", dc->orphan_grace);
    a->v[k++] = "--orphan-grace", a->v[k++] = a->grace;
  }
  if (dc->sweep_interval != 0) {
    snprintf(a->interval, sizeof a->interval, "%lu", dc->sweep_interval);
    a->v[k++] = "--sweep-interval", a->v[k++] = a->interval;
  }
  a->v[k] = NULL;
}

/* Starts node n detached, output appended to its log; sets n->pid. */
int dev__spawn_node(const struct dev_cluster *dc, struct dev_node *n, char *why, size_t cap)
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
    if (!dev__running(n, NULL)) {
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
  uint64_t deadline = dev__now_ms() + (uint64_t)secs * 1000;
  for (;;) {
    size_t left = 0;
    for (size_t i = 0; i < dc->n; i++)
      if (pid_exists(dc->node[i].pid, NULL))
        left++;
      else
        dc->node[i].pid = 0;
    if (left == 0 || dev__now_ms() >= deadline)
      return left;
    dev__sleep_ms(100);
  }
}

/* SIGTERM to every node that runs, a bounded wait, then SIGKILL for the
 * stragglers. ids gets who was running; returns how many still run. */
size_t dev__stop_all(struct dev_cluster *dc, uint32_t *ids, size_t *nids)
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
void dev__print_tail(const char *path)
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

/* Waits up to secs for n's process to be gone. */
bool dev__wait_gone(const struct dev_node *n, int secs)
{
  uint64_t deadline = dev__now_ms() + (uint64_t)secs * 1000;
  while (pid_exists(n->pid, NULL)) {
    if (dev__now_ms() >= deadline)
      return false;
    dev__sleep_ms(50);
  }
  return true;
}
