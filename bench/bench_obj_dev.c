/* The cluster of `medshard bench put|get`: a dev cluster in the run's temp
 * dir, driven by running this same binary's `dev up|status|kill|start|down`
 * (the dev code lives in cli/, which bench/ cannot link), and a guard
 * process that tears it down whenever this process ends, interrupted or
 * not: nodes started by `dev` run in their own sessions and would outlive
 * us otherwise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_obj_int.h"
#include "common/err.h"

#define DOWN_TRIES 90     /* guard: `dev down` retried once a second (an interrupted
                             `dev up` holds the dev dir's lock for up to 60 s) */
#define TAIL_BYTES 1500
#define OUT_CAP (64u << 10)

/* ---- running `medshard dev ...` ---- */

/* The child of run_dev: only async-signal-safe calls until exec. */
static _Noreturn void dev_child(const char *cwd, int outfd, char *const argv[])
{
  int nul = open("/dev/null", O_RDWR);
  if (chdir(cwd) != 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(outfd >= 0 ? outfd : nul, 1) < 0)
    _exit(127);
  execv("/proc/self/exe", argv);
  _exit(127);
}

/* Runs `medshard dev ARGS` in cwd, its stdout into out (cap bytes, NUL-
 * terminated; NULL: discarded), its stderr ours. Its exit code (0..255),
 * or -errno when it could not run. */
static int run_dev(const char *cwd, char *out, size_t cap, char *const argv[])
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return -errno;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0)
    dev_child(cwd, p[1], argv);
  int rc = pid < 0 ? -errno : 0;
  close(p[1]);
  size_t have = 0;
  char sink[4096];
  for (ssize_t n = 1; pid > 0 && n > 0;) {
    char *dst = out != NULL && have + 1 < cap ? out + have : sink;
    size_t room = dst == sink ? sizeof sink : cap - 1 - have;
    n = read(p[0], dst, room);
    if (n > 0 && dst != sink)
      have += (size_t)n;
    if (n < 0 && errno == EINTR)
      n = 1;
  }
  close(p[0]);
  if (out != NULL)
    out[have] = 0;
  int st;
  while (pid > 0 && waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return -errno;
  if (rc == 0)
    rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return rc;
}

/* `dev SUB [ID] --dir DIR [extra]`, output captured into out. */
static int dev_verb(const struct obj_cluster *c, const char *sub, uint32_t id, const char *extra,
                    char *out, size_t cap)
{
  char ids[16], dir[sizeof c->dev_dir];
  char *argv[10];
  int a = 0;
  snprintf(ids, sizeof ids, "%" PRIu32, id);
  snprintf(dir, sizeof dir, "%s", c->dev_dir);
  argv[a++] = "medshard", argv[a++] = "dev", argv[a++] = (char *)sub;
  if (id != 0)
    argv[a++] = ids;
  argv[a++] = "--dir", argv[a++] = dir, argv[a++] = "--json";
  if (extra != NULL)
    argv[a++] = (char *)extra;
  argv[a] = NULL;
  return run_dev(c->tmp, out, cap, argv);
}

/* ---- the guard ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
  (void)sb, (void)flag, (void)ftw;
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* Own cluster: `dev down` (--wipe unless --keep), retried while another
 * `dev` command (an interrupted `dev up`) still holds the dev dir. */
static int guard_down(const struct obj_cluster *c)
{
  char state[sizeof c->dev_dir + 16];
  snprintf(state, sizeof state, "%s/cluster.ini", c->dev_dir);
  int rc = 0;
  for (int i = 0; i < DOWN_TRIES && access(state, F_OK) == 0; i++) {
    rc = dev_verb(c, "down", 0, c->keep ? NULL : "--wipe", NULL, 0);
    if (rc == 0)
      break;
    sleep(1);
  }
  if (rc != 0)
    fprintf(stderr, "medshard bench: could not stop the dev cluster in %s (`medshard dev down"
            " --wipe --dir %s` exited %d); stop it by hand\n", c->dev_dir, c->dev_dir, rc);
  return rc;
}

/* Everything the run leaves behind, given the nodes still killed. */
static int guard_teardown(const struct obj_cluster *c, const uint32_t *down, size_t ndown)
{
  int rc = 0;
  if (c->own)
    rc = guard_down(c);
  for (size_t i = 0; !c->own && i < ndown; i++)
    if (dev_verb(c, "start", down[i], NULL, NULL, 0) != 0) {
      fprintf(stderr, "medshard bench: node %" PRIu32 " of %s was killed for the degraded GET and"
              " does not start again: `medshard dev start %" PRIu32 " --dir %s`\n", down[i],
              c->dev_dir, down[i], c->dev_dir);
      rc = 1;
    }
  if (c->fio_dir[0] != 0 && nftw(c->fio_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 &&
      errno != ENOENT)
    rc = 1;
  if (c->own && c->keep) {
    fprintf(stderr, "medshard bench: kept %s (the cluster is stopped; `medshard dev up --dir"
            " %s` starts it again)\n", c->tmp, c->dev_dir);
    return rc;
  }
  if (rc == 0 && rmdir(c->tmp) != 0) {
    fprintf(stderr, "medshard bench: left %s: %s\n", c->tmp, strerror(errno));
    rc = 1;
  }
  return rc;
}

/* One line from the run: "kill N" (about to kill node N), "start N"
 * (restarted it) or "end" (finished normally). */
static void guard_line(const char *line, uint32_t *down, size_t *ndown, bool *ended)
{
  unsigned long id;
  if (strcmp(line, "end") == 0)
    *ended = true;
  else if (sscanf(line, "kill %lu", &id) == 1 && *ndown < OBJ_MAX_DOWN * 4)
    down[(*ndown)++] = (uint32_t)id;
  else if (sscanf(line, "start %lu", &id) == 1)
    for (size_t i = 0; i < *ndown; i++)
      if (down[i] == id)
        down[i--] = down[--*ndown];
}

static _Noreturn void guard_main(const struct obj_cluster *c, int rfd)
{
  /* The terminal's Ctrl-C reaches the whole process group: this process
   * must live through it to do its work (and its `dev down` child, which
   * inherits the ignored signals, too). */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  uint32_t down[OBJ_MAX_DOWN * 4];
  size_t ndown = 0, have = 0;
  bool ended = false;
  char buf[256];
  for (;;) {
    ssize_t n = read(rfd, buf + have, sizeof buf - 1 - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    have += (size_t)n;
    buf[have] = 0;
    for (char *nl; (nl = strchr(buf, '\n')) != NULL;) {
      *nl = 0;
      guard_line(buf, down, &ndown, &ended);
      have -= (size_t)(nl + 1 - buf);
      memmove(buf, nl + 1, have + 1);
    }
    if (have == sizeof buf - 1)
      have = 0; /* UNTESTED: the run writes short lines only */
  }
  if (!ended)
    fprintf(stderr, "medshard bench: interrupted; %s\n",
            c->own ? "stopping the dev cluster and removing its files"
                   : "restarting the nodes it killed and removing its files");
  _exit(guard_teardown(c, down, ndown) == 0 ? 0 : 1);
}

static void guard_say(struct obj_cluster *c, const char *what, uint32_t id)
{
  char line[64];
  int len = id ? snprintf(line, sizeof line, "%s %" PRIu32 "\n", what, id)
               : snprintf(line, sizeof line, "%s\n", what);
  if (c->guard_fd >= 0 && write(c->guard_fd, line, (size_t)len) != len)
    fprintf(stderr, "medshard bench: the guard process is gone: %s\n", strerror(errno));
}

/* ---- the cluster ---- */

int obj_cluster_prepare(struct obj_cluster *c, const char *parent, const char *dev_dir,
                        bool own, bool keep)
{
  memset(c, 0, sizeof *c);
  c->own = own, c->keep = keep, c->guard_fd = -1;
  if (parent == NULL)
    parent = getenv("TMPDIR");
  if (parent == NULL || *parent == 0)
    parent = "/tmp";
  /* Room below it for "/dev/n32/raft/..." within raft_uv's path limit. */
  if ((size_t)snprintf(c->tmp, sizeof c->tmp, "%s/medshard-bench-obj-XXXXXX", parent) >= 300) {
    fprintf(stderr, "medshard bench: directory name too long: %s\n", parent);
    return -ENAMETOOLONG;
  }
  if (mkdtemp(c->tmp) == NULL) {
    int rc = -errno;
    fprintf(stderr, "medshard bench: cannot create a directory in %s: %s\n", parent,
            msd_strerror(rc));
    return rc;
  }
  if (own)
    snprintf(c->dev_dir, sizeof c->dev_dir, "%s/dev", c->tmp);
  else if (dev_dir != NULL && realpath(dev_dir, c->dev_dir) == NULL)
    snprintf(c->dev_dir, sizeof c->dev_dir, "%s", dev_dir);
  snprintf(c->fio_dir, sizeof c->fio_dir, "%s/fio", c->tmp);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    int rc = -errno;
    fprintf(stderr, "medshard bench: pipe: %s\n", msd_strerror(rc));
    rmdir(c->tmp);
    return rc;
  }
  fflush(stdout);
  fflush(stderr);
  c->guard = fork();
  if (c->guard == 0) {
    close(p[1]);
    guard_main(c, p[0]);
  }
  close(p[0]);
  if (c->guard < 0) {
    int rc = -errno;
    fprintf(stderr, "medshard bench: fork: %s\n", msd_strerror(rc));
    close(p[1]);
    rmdir(c->tmp);
    return rc;
  }
  c->guard_fd = p[1];
  return 0;
}

int obj_cluster_up(struct obj_cluster *c, unsigned nodes, unsigned k, unsigned m)
{
  static char out[OUT_CAP];
  char n[16], ec[32];
  snprintf(n, sizeof n, "%u", nodes);
  snprintf(ec, sizeof ec, "%u+%u", k, m);
  char *argv[] = {"medshard", "dev", "up", "--dir", c->dev_dir, "--nodes", n, "--ec", ec,
                  "--json", NULL};
  int rc = run_dev(c->tmp, out, sizeof out, argv);
  const char *at = rc == 0 ? strstr(out, "\"control\":\"") : NULL;
  if (at == NULL) {
    fprintf(stderr, "medshard bench: `medshard dev up --dir %s --nodes %s --ec %s` failed (%s"
            " %d)\n", c->dev_dir, n, ec, rc < 0 ? "error" : "exit code", rc);
    return rc != 0 ? rc : MSD_EDECODE;
  }
  at += strlen("\"control\":\"");
  size_t len = strcspn(at, "\"");
  snprintf(c->control, sizeof c->control, "%.*s", (int)len, at);
  return 0;
}

static bool has(const char *p, size_t span, const char *needle)
{
  return memmem(p, span, needle, strlen(needle)) != NULL;
}

int obj_cluster_roles(struct obj_cluster *c, struct obj_node_role *roles, size_t cap, size_t *n)
{
  static char out[OUT_CAP];
  static const char id_key[] = "{\"id\":";
  int rc = dev_verb(c, "status", 0, NULL, out, sizeof out);
  *n = 0;
  if (rc != 0) {
    fprintf(stderr, "medshard bench: `medshard dev status --dir %s` exited %d\n", c->dev_dir, rc);
    return rc;
  }
  for (const char *p = strstr(out, id_key), *next; p != NULL && *n < cap; p = next) {
    next = strstr(p + 1, id_key);
    size_t span = next ? (size_t)(next - p) : strlen(p);
    struct obj_node_role *r = &roles[(*n)++];
    r->id = (uint32_t)strtoul(p + strlen(id_key), NULL, 10);
    const char *pid = memmem(p, span, "\"pid\":", 6);
    r->pid = pid != NULL ? (pid_t)strtol(pid + 6, NULL, 10) : 0;
    r->voter = has(p, span, "\"role\":\"voter\"");
    r->leader = has(p, span, "\"raft_state\":\"leader\"");
    r->alive = has(p, span, "\"alive\":true");
  }
  return *n > 0 ? 0 : MSD_EDECODE;
}

int obj_cluster_kill(struct obj_cluster *c, uint32_t id)
{
  guard_say(c, "kill", id);
  int rc = dev_verb(c, "kill", id, NULL, NULL, 0);
  if (rc != 0)
    fprintf(stderr, "medshard bench: `medshard dev kill %" PRIu32 " --dir %s` exited %d\n", id,
            c->dev_dir, rc);
  return rc;
}

int obj_cluster_start(struct obj_cluster *c, uint32_t id)
{
  int rc = dev_verb(c, "start", id, NULL, NULL, 0);
  if (rc == 0)
    guard_say(c, "start", id);
  else
    fprintf(stderr, "medshard bench: `medshard dev start %" PRIu32 " --dir %s` exited %d\n", id,
            c->dev_dir, rc);
  return rc;
}

double obj_proc_cpu_s(pid_t pid)
{
  char path[64], buf[1024];
  snprintf(path, sizeof path, pid ? "/proc/%d/stat" : "/proc/self/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0)
    close(fd);
  if (n <= 0)
    return -1;
  buf[n] = 0;
  /* Fields after "(comm)": state is the 3rd, utime the 14th, stime the 15th. */
  const char *p = strrchr(buf, ')');
  unsigned long long ut, st;
  if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                          &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double obj_machine_busy_s(void)
{
  char buf[512];
  int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0)
    close(fd);
  unsigned long long v[8] = {0};
  if (n <= 0)
    return -1;
  buf[n] = 0;
  if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
             &v[4], &v[5], &v[6], &v[7]) != 8)
    return -1;
  /* user nice system idle iowait irq softirq steal: all but idle and iowait */
  return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

void obj_cluster_log_tails(const struct obj_cluster *c)
{
  DIR *d = c->own ? opendir(c->dev_dir) : NULL;
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
    size_t len = strlen(e->d_name);
    if (e->d_name[0] != 'n' || len < 5 || strcmp(e->d_name + len - 4, ".log") != 0)
      continue;
    char path[sizeof c->dev_dir + 300], buf[TAIL_BYTES + 1];
    snprintf(path, sizeof path, "%s/%s", c->dev_dir, e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t end = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    ssize_t got = end >= 0 ? pread(fd, buf, TAIL_BYTES, end > TAIL_BYTES ? end - TAIL_BYTES : 0)
                           : -1;
    if (fd >= 0)
      close(fd);
    buf[got > 0 ? got : 0] = 0;
    fprintf(stderr, "== last lines of %s\n%s\n", path, buf);
  }
  if (d != NULL)
    closedir(d);
}

int obj_cluster_finish(struct obj_cluster *c)
{
  if (c->guard <= 0)
    return 0;
  guard_say(c, "end", 0);
  close(c->guard_fd);
  c->guard_fd = -1;
  int st;
  while (waitpid(c->guard, &st, 0) < 0)
    if (errno != EINTR)
      return 1; /* UNTESTED: the guard is our child */
  c->guard = 0;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
