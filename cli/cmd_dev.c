/* `medshard dev up|status|kill|start|down`: a local cluster of `medshard
 * node` processes on 127.0.0.1 for development and tests. This file holds
 * the verbs; the state file lives in dev_state.c, the processes in
 * dev_proc.c, and docs/dev.md describes both and the client config. */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "chain-anchor/node.h"
#include "cli/cli.h"
#include "cli/dev_int.h"
#include "common/err.h"
#include "common/sock.h"

#define DEV_DEFAULT_DIR "./var/dev"
#define DEV_UNIT (1u << 20)
#define UP_WAIT_S 60    /* dev up: leader elected and every node in the map */
#define START_WAIT_S 15 /* dev start: the node answers on its control port */
#define HEAD_MS 1000

/* Options by bit, so each subcommand can refuse the ones it does not take. */
enum { O_DIR = 1, O_NODES = 2, O_VOTERS = 4, O_EC = 8, O_JSON = 16, O_WIPE = 32, O_GRACE = 64,
       O_INTERVAL = 128 };

struct dev_opts {
  const char *sub, *dir;
  unsigned long nodes, voters, k, m;
  unsigned long orphan_grace, sweep_interval; /* seconds; 0: not given */
  unsigned given; /* O_* bits */
  bool json, wipe;
  int argi, argc;
  char **argv;
};

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
  dev__addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
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
  dev__addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
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
      dev__addr_of(&dc->node[i], DEV_PORT_CONTROL, addr, sizeof addr);
      snprintf(why, cap, "node %" PRIu32 " does not answer on %s", dc->node[i].id, addr);
      return false;
    }
    if (*leader == 0)
      *leader = r->head->leader_id;
    medshard__ctl_response__free_unpacked(r, NULL);
  }
  const struct dev_node *l = dev__find_node(dc, *leader);
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
  uint64_t deadline = dev__now_ms() + (uint64_t)secs * 1000;
  for (;;) {
    for (size_t i = 0; i < dc->n; i++) {
      int st;
      if (dev__running(&dc->node[i], &st))
        continue;
      dev__describe_exit(st, how, sizeof how);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) %s during start-up", dc->node[i].id,
               (int)dc->node[i].pid, how);
      dc->node[i].pid = 0;
      return MSD_ESTATE;
    }
    if (cluster_ready(dc, leader, last, sizeof last))
      return 0;
    if (dev__now_ms() >= deadline) {
      snprintf(why, cap, "the cluster is not ready after %d s: %s", secs, last);
      return MSD_ETIMEDOUT;
    }
    dev__sleep_ms(250);
  }
}

/* Every node coordinates PUTs from its own copy of the chain state, so
 * `up` returns only once each node has applied the bucket. */
static int wait_bucket_everywhere(const struct dev_cluster *dc, char *why, size_t cap)
{
  int64_t until = msd_now_ms() + 30000;
  for (size_t i = 0; i < dc->n; i++) {
    char addr[64];
    dev__addr_of(&dc->node[i], DEV_PORT_CONTROL, addr, sizeof addr);
    for (;;) {
      Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
      Medshard__CtlResponse *r;
      req.op = MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET;
      req.bucket = (char *)DEV_BUCKET;
      int rc = ctl_call_any(addr, &req, 2000, &r, NULL, NULL);
      if (rc == 0) {
        rc = r->code;
        medshard__ctl_response__free_unpacked(r, NULL);
      }
      if (rc == 0)
        break;
      if (msd_now_ms() > until) {
        snprintf(why, cap, "node %" PRIu32 " has not applied bucket " DEV_BUCKET " in 30 s: %s",
                 dc->node[i].id, msd_strerror(rc));
        return rc;
      }
      usleep(50000);
    }
  }
  return 0;
}

/* Creates the default bucket; one that exists already (a restarted
 * cluster) is fine. */
static int create_bucket(const struct dev_cluster *dc, char *why, size_t cap)
{
  char nodes[1024];
  Medshard__CtlResponse *r;
  dev__control_list(dc, nodes, sizeof nodes);
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
  return rc == MSD_EEXIST ? 0 : wait_bucket_everywhere(dc, why, cap);
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

/* Reads the cluster recorded in the dev dir, after taking its lock when
 * the command changes it. 0 or an exit code (printed). */
static int load(const struct dev_opts *o, struct dev_cluster *dc, bool lock)
{
  struct cli_config cfg;
  char err[800] = "", path[DEV_PATH + 16];
  const char *d = dir_arg(o, &cfg);
  int rc = dev__set_dir(dc, d);
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
  if (lock && dev__lock_dir(dc, o->sub) != 0)
    return 1;
  if ((rc = dev__state_read(dc, err, sizeof err)) != 0)
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
  struct dev_node *n = dev__find_node(dc, (uint32_t)id);
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
  if (dev__read_small("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof buf) > 0 &&
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
  dc->orphan_grace = o->orphan_grace, dc->sweep_interval = o->sweep_interval;
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
  int rc = dev__state_write(dc);
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
    if (dev__running(&dc->node[i], NULL) && ++live)
      len += (size_t)snprintf(ids + len, sizeof ids - len, "%s%" PRIu32, len ? "," : "",
                              dc->node[i].id);
  if (live > 0) {
    fprintf(stderr, "medshard dev up: the dev cluster in %s is running (%zu of %zu nodes: %s);"
            " see `medshard dev status`, or stop it with `medshard dev down`\n", dc->dir, live,
            dc->n, ids);
    return 1;
  }
  if ((o->given & (O_NODES | O_VOTERS | O_EC)) != 0 &&
      (o->nodes != dc->n || o->voters != dev__voters_of(dc) || o->k != dc->k || o->m != dc->m)) {
    fprintf(stderr, "medshard dev up: %s holds a stopped cluster of %zu nodes (%zu voters, --ec"
            " %u+%u); run `medshard dev up` without --nodes/--voters/--ec to start it again, or"
            " remove it first with `medshard dev down --wipe`\n", dc->dir, dc->n,
            dev__voters_of(dc), dc->k, dc->m);
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
  size_t left = dev__stop_all(dc, ids, &nids);
  dev__state_write(dc);
  for (size_t i = 0; i < dc->n; i++)
    dev__print_tail(dc->node[i].log);
  fprintf(stderr, "medshard dev up: %s; logs and state kept in %s (`medshard dev down --wipe"
          " --dir %s` removes them)\n", left ? "COULD NOT STOP every node it started"
          : "stopped the nodes it started", dc->dir, dc->dir);
  return 1;
}

/* Voters first, then standbys; waits for the cluster; the default bucket. */
static int up_run(struct dev_cluster *dc, uint32_t *leader)
{
  char why[900];
  int rc = dev__write_secret(dc);
  if (rc != 0) {
    snprintf(why, sizeof why, "cannot write %s/secret: %s", dc->dir, msd_strerror(rc));
    return up_failed(dc, why);
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < dc->n; i++) {
      if (dc->node[i].voter != (pass == 0))
        continue;
      if (dev__spawn_node(dc, &dc->node[i], why, sizeof why) != 0)
        return up_failed(dc, why);
      dev__state_write(dc); /* the PID on disk at once: `dev down` finds it */
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
  dev__control_list(dc, c.nodes, sizeof c.nodes);
  snprintf(c.bucket, sizeof c.bucket, DEV_BUCKET);
  snprintf(c.dev_dir, sizeof c.dev_dir, "%s", dc->dir);
  return cli_config_write(CLI_CONFIG_FILE, &c);
}

static void up_print(const struct dev_cluster *dc, uint32_t leader, bool json)
{
  char nodes[1024], cwd[PATH_MAX], conf[PATH_MAX + 32];
  dev__control_list(dc, nodes, sizeof nodes);
  if (getcwd(cwd, sizeof cwd) == NULL)
    snprintf(cwd, sizeof cwd, ".");
  snprintf(conf, sizeof conf, "%s/" CLI_CONFIG_FILE, cwd);
  if (json) {
    printf("{\"ok\":true,\"bucket\":\"" DEV_BUCKET "\",\"ec\":\"%u+%u\",\"nodes\":%zu,"
           "\"voters\":%zu,\"leader\":%" PRIu32 ",\"control\":\"%s\",\"dir\":", dc->k, dc->m,
           dc->n, dev__voters_of(dc), leader, nodes);
    cli_json_str(stdout, dc->dir);
    printf(",\"config\":");
    cli_json_str(stdout, conf);
    printf("}\n");
    return;
  }
  size_t voters = dev__voters_of(dc);
  printf("dev cluster up: %zu nodes (%zu voters, %zu standby%s), leader node %" PRIu32 "\n"
         "  control  %s\n  logs     %s/n*.log\n  config   %s"
         " (verbs run here use this cluster)\n  bucket   " DEV_BUCKET " (%u+%u)\n",
         dc->n, voters, dc->n - voters, dc->n - voters == 1 ? "" : "s", leader, nodes, dc->dir,
         conf, dc->k, dc->m);
}

static int dev_up(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  struct cli_config cfg;
  char err[800];
  uint32_t leader = 0;
  const char *d = dir_arg(o, &cfg);
  int rc = dev__make_dirs(d);
  if (rc == 0 && access(d, W_OK) != 0)
    rc = -errno;
  if (rc == 0)
    rc = dev__set_dir(&dc, d);
  if (rc != 0) {
    fprintf(stderr, "medshard dev up: cannot use %s as the dev dir: %s\n", d, msd_strerror(rc));
    return 1;
  }
  if (dev__lock_dir(&dc, "up") != 0)
    return 1;
  rc = dev__state_read(&dc, err, sizeof err);
  if (rc != 0 && rc != -ENOENT) {
    fprintf(stderr, "medshard dev up: %s\n", err);
    return 1;
  }
  rc = rc == -ENOENT ? up_fresh(o, &dc) : up_existing(o, &dc);
  if (rc == 0 && (o->given & O_GRACE)) /* a restart takes new sweep settings */
    dc.orphan_grace = o->orphan_grace;
  if (rc == 0 && (o->given & O_INTERVAL))
    dc.sweep_interval = o->sweep_interval;
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
    dev__addr_of(n, (enum dev_port)p, addr, sizeof addr);
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
  dev__addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
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
           dc.n, dev__voters_of(&dc), dc.k, dc.m);
    printf("NODE  ROLE     PID      PROCESS  RAFT         LEADER  APPLIED   HEIGHT  SEALED"
           "  CONTROL                ALARM\n");
  }
  for (size_t i = 0; i < dc.n; i++) {
    const struct dev_node *n = &dc.node[i];
    Medshard__CtlResponse *r = NULL;
    bool alive = dev__running(n, NULL);
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

static int dev_kill(const struct dev_opts *o)
{
  static struct dev_cluster dc;
  int code;
  struct dev_node *n = node_arg(o, &dc, &code);
  if (n == NULL)
    return code;
  if (!dev__running(n, NULL)) {
    fprintf(stderr, "medshard dev kill: node %" PRIu32 " is not running%s\n", n->id,
            n->pid > 0 ? " (no medshard node of this cluster has its recorded PID now)" : "");
    return 1;
  }
  pid_t pid = n->pid;
  if (kill(pid, SIGKILL) != 0 || !dev__wait_gone(n, KILL_WAIT_S)) {
    fprintf(stderr, "medshard dev kill: node %" PRIu32 " (pid %d) is still running: %s\n", n->id,
            (int)pid, strerror(errno));
    return 1;
  }
  n->pid = 0;
  int rc = dev__state_write(&dc);
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
  uint64_t deadline = dev__now_ms() + START_WAIT_S * 1000;
  for (;;) {
    int st;
    Medshard__CtlResponse *r;
    if (!dev__running(n, &st)) {
      dev__describe_exit(st, how, sizeof how);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) %s during start-up", n->id, (int)n->pid, how);
      n->pid = 0;
      return MSD_ESTATE;
    }
    if (node_head(n, HEAD_MS, &r) == 0) {
      medshard__ctl_response__free_unpacked(r, NULL);
      return 0;
    }
    if (dev__now_ms() >= deadline) {
      dev__addr_of(n, DEV_PORT_CONTROL, addr, sizeof addr);
      snprintf(why, cap, "node %" PRIu32 " (pid %d) runs but does not answer on %s after %d s",
               n->id, (int)n->pid, addr, START_WAIT_S);
      return MSD_ETIMEDOUT;
    }
    dev__sleep_ms(200);
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
  if (dev__running(n, NULL)) {
    fprintf(stderr, "medshard dev start: node %" PRIu32 " is already running (pid %d)\n", n->id,
            (int)n->pid);
    return 1;
  }
  int rc = dev__write_secret(&dc);
  if (rc != 0)
    snprintf(why, sizeof why, "cannot write %s/secret: %s", dc.dir, msd_strerror(rc));
  if (rc == 0)
    rc = dev__spawn_node(&dc, n, why, sizeof why);
  if (rc == 0)
    dev__state_write(&dc);
  if (rc == 0)
    rc = wait_answers(n, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "medshard dev start: %s\n", why);
    dev__state_write(&dc);
    dev__print_tail(n->log);
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
  size_t left = dev__stop_all(&dc, ids, &nids);
  int rc = dev__state_write(&dc);
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
          "                       [--orphan-grace SECONDS] [--sweep-interval SECONDS]\n"
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

/* --orphan-grace (c 'g') or --sweep-interval ('i'): seconds in the range
 * `medshard node` takes, which every node then gets. 0 or 2 (printed). */
static int dev_seconds(struct dev_opts *o, int c, const char *arg)
{
  bool grace = c == 'g';
  unsigned long max = grace ? NODE_GRACE_MAX_S : NODE_INTERVAL_MAX_S;
  o->given |= grace ? O_GRACE : O_INTERVAL;
  if (cli_parse_ulong(arg, 1, max, grace ? &o->orphan_grace : &o->sweep_interval) == 0)
    return 0;
  fprintf(stderr, "medshard dev: %s wants a whole number of seconds, 1..%lu, got '%s'\n",
          grace ? "--orphan-grace" : "--sweep-interval", max, arg);
  return 2;
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
  case 'g':
  case 'i':
    return dev_seconds(o, c, arg);
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
      {"json", 0, 0, 'j'}, {"wipe", 0, 0, 'w'},  {"help", 0, 0, 'h'},
      {"orphan-grace", 1, 0, 'g'}, {"sweep-interval", 1, 0, 'i'}, {0, 0, 0, 0}};
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
    {"up", dev_up, O_DIR | O_NODES | O_VOTERS | O_EC | O_JSON | O_GRACE | O_INTERVAL, 0},
    {"status", dev_status, O_DIR | O_JSON, 0},
    {"kill", dev_kill, O_DIR | O_JSON, 1},
    {"start", dev_start, O_DIR | O_JSON, 1},
    {"down", dev_down, O_DIR | O_JSON | O_WIPE, 0},
};

/* Refuses options the subcommand does not take and a wrong number of
 * positional arguments; 0 or 2 (printed). */
static int check_args(const struct dev_opts *o, unsigned allowed, int nargs)
{
  static const char *const names[] = {"--dir",  "--nodes", "--voters",       "--ec",
                                      "--json", "--wipe",  "--orphan-grace", "--sweep-interval"};
  for (unsigned b = 0; b < 8; b++)
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
