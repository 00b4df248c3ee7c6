/* The model of a `medshard dev` cluster kept on disk: the dev dir, its lock,
 * and the versioned state file cluster.ini that records every node's ports,
 * data dir, log and PID (docs/dev.md describes the format). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "chain-anchor/node.h"
#include "cli/dev_int.h"
#include "common/err.h"

const struct dev_port_name dev_ports[DEV_PORT_COUNT] = {
    [DEV_PORT_RAFT] = {"raft", "--raft"},
    [DEV_PORT_CONTROL] = {"control", "--control"},
    [DEV_PORT_DATA] = {"data", "--data"},
};

void dev__addr_of(const struct dev_node *n, enum dev_port p, char *out, size_t cap)
{
  snprintf(out, cap, DEV_HOST ":%u", (unsigned)n->port[p]);
}

/* Every node's control address, comma-separated. */
void dev__control_list(const struct dev_cluster *dc, char *out, size_t cap)
{
  size_t len = 0;
  out[0] = 0;
  for (size_t i = 0; i < dc->n && len < cap; i++)
    len += (size_t)snprintf(out + len, cap - len, "%s" DEV_HOST ":%u", i ? "," : "",
                            (unsigned)dc->node[i].port[DEV_PORT_CONTROL]);
}

size_t dev__voters_of(const struct dev_cluster *dc)
{
  size_t v = 0;
  for (size_t i = 0; i < dc->n; i++)
    v += dc->node[i].voter;
  return v;
}

struct dev_node *dev__find_node(struct dev_cluster *dc, uint32_t id)
{
  for (size_t i = 0; i < dc->n; i++)
    if (dc->node[i].id == id)
      return &dc->node[i];
  return NULL;
}

/* mkdir -p. 0 or -errno. */
int dev__make_dirs(const char *path)
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

int dev__state_write(const struct dev_cluster *dc)
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
  if (dc->orphan_grace != 0)
    fprintf(f, "orphan_grace = %lu\n", dc->orphan_grace);
  if (dc->sweep_interval != 0)
    fprintf(f, "sweep_interval = %lu\n", dc->sweep_interval);
  for (size_t i = 0; i < dc->n; i++) {
    const struct dev_node *n = &dc->node[i];
    fprintf(f, "\n[node %" PRIu32 "]\nrole = %s\n", n->id, n->voter ? "voter" : "standby");
    for (int p = 0; p < DEV_PORT_COUNT; p++) {
      dev__addr_of(n, (enum dev_port)p, addr, sizeof addr);
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
        dc->n == DEV_MAX_NODES || dev__find_node(dc, id) != NULL)
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
  if (strcmp(k, "orphan_grace") == 0)
    return cli_parse_ulong(v, 1, NODE_GRACE_MAX_S, &dc->orphan_grace);
  if (strcmp(k, "sweep_interval") == 0)
    return cli_parse_ulong(v, 1, NODE_INTERVAL_MAX_S, &dc->sweep_interval);
  return 0;
}

/* What a complete state lacks, or NULL. */
static const char *state_missing(const struct dev_cluster *dc)
{
  if (strlen(dc->secret) < 32)
    return "no secret (secret = HEX, at least 16 bytes)";
  size_t v = dev__voters_of(dc);
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
int dev__state_read(struct dev_cluster *dc, char *err, size_t cap)
{
  char path[DEV_PATH + 16], line[DEV_PATH + 64];
  unsigned ver = 0, lineno = 1;
  snprintf(path, sizeof path, "%s/" DEV_STATE, dc->dir);
  dc->n = 0;
  dc->secret[0] = 0;
  dc->orphan_grace = dc->sweep_interval = 0;
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
int dev__write_secret(const struct dev_cluster *dc)
{
  char path[DEV_PATH + 16], text[sizeof dc->secret + 2];
  snprintf(path, sizeof path, "%s/secret", dc->dir);
  snprintf(text, sizeof text, "%s\n", dc->secret);
  return cli_write_atomic(path, text, 0600);
}

/* ---- the dev dir ---- */

int dev__set_dir(struct dev_cluster *dc, const char *d)
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
int dev__lock_dir(const struct dev_cluster *dc, const char *sub)
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
