/* `medshard node`: runs a node daemon from a config file and/or flags
 * (flags win). docs/node.md lists the keys. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "chain-anchor/node.h"
#include "cli/cli.h"
#include "common/err.h"
#include "cluster/coord.h"
#include "cluster/sweep.h"
#include "common/fs.h"
#include "net/dataplane.h"

static void node_usage(FILE *f)
{
  fprintf(f,
          "usage: medshard node [--config FILE] [--id N] [--dir DIR] [--raft HOST:PORT]\n"
          "                     [--control HOST:PORT] [--peer ID,RAFT,CONTROL ...]\n"
          "                     [--secret HEX | --secret-file FILE] [--join HOST:PORT]\n"
          "                     [--zone Z] [--cut-anchors N] [--cut-ms T] [--data HOST:PORT]\n"
          "                     [--orphan-grace SECONDS] [--sweep-interval SECONDS]\n"
          "Runs a storage node: Raft voter (if listed in --peer) or standby, the chain\n"
          "FSM and the control plane; with --data also the data plane (shard store in\n"
          "DIR/store, shard RPCs on an io_uring loop) and the orphan sweep, which deletes\n"
          "sealed shards no manifest names once sealed over --orphan-grace ago (default\n"
          "3600), a pass every --sweep-interval (default 600). Stops cleanly on\n"
          "SIGTERM/SIGINT.\n");
}

static int read_secret_file(const char *path, struct node_config *c)
{
  char hex[160];
  FILE *f = fopen(path, "r");
  if (f == NULL || fgets(hex, sizeof hex, f) == NULL) {
    if (f)
      fclose(f);
    fprintf(stderr, "medshard node: cannot read secret file %s\n", path);
    return 2;
  }
  fclose(f);
  hex[strcspn(hex, "\r\n")] = 0;
  if (cli_hex_decode(hex, c->secret, sizeof c->secret, &c->secret_len) != 0) {
    fprintf(stderr, "medshard node: %s must hold the cluster secret as hex\n", path);
    return 2;
  }
  return 0;
}

/* A string flag into its fixed-size field; a value that does not fit is
 * refused (an address cut short would bind or join somewhere else). 0 or 2
 * (printed). */
static int copy_flag(char *dst, size_t cap, const char *flag, const char *arg)
{
  size_t len = strlen(arg);
  if (len >= cap) {
    fprintf(stderr, "medshard node: %s value is longer than %zu bytes\n", flag, cap - 1);
    return 2;
  }
  memcpy(dst, arg, len + 1);
  return 0;
}

/* A number of seconds in 1..max into *out; 0 or 2 (printed). */
static int seconds_flag(const char *flag, const char *arg, unsigned long max, unsigned *out)
{
  unsigned long v;
  if (cli_parse_ulong(arg, 1, max, &v) != 0) {
    fprintf(stderr, "medshard node: %s wants a whole number of seconds, 1..%lu, got '%s'\n", flag,
            max, arg);
    return 2;
  }
  *out = (unsigned)v;
  return 0;
}

/* Applies one flag; 0 or an exit code. */
static int node_flag(int opt, const char *arg, struct node_config *c)
{
  char err[256];
  unsigned long v;
  switch (opt) {
  case 'c':
    if (node_config_load(arg, c, err, sizeof err) != 0) {
      fprintf(stderr, "medshard node: %s\n", err);
      return 2;
    }
    return 0;
  case 'i':
    return cli_parse_ulong(arg, 1, UINT32_MAX, &v) == 0 ? (c->node_id = (uint32_t)v, 0) : 2;
  case 'd':
    return copy_flag(c->dir, sizeof c->dir, "--dir", arg);
  case 'r':
    return copy_flag(c->raft_address, sizeof c->raft_address, "--raft", arg);
  case 'C':
    return copy_flag(c->control_address, sizeof c->control_address, "--control", arg);
  case 'j':
    return copy_flag(c->join, sizeof c->join, "--join", arg);
  case 'D':
    return copy_flag(c->data_address, sizeof c->data_address, "--data", arg);
  case 'z':
    return copy_flag(c->zone, sizeof c->zone, "--zone", arg);
  case 'p':
    if (c->npeers >= NODE_PEERS_MAX || node_peer_parse(arg, &c->peers[c->npeers]) != 0) {
      fprintf(stderr, "medshard node: --peer wants ID,RAFT_HOST:PORT,CONTROL_HOST:PORT, got '%s'\n",
              arg);
      return 2;
    }
    c->npeers++;
    return 0;
  case 's':
    return cli_hex_decode(arg, c->secret, sizeof c->secret, &c->secret_len) == 0 ? 0 : 2;
  case 'S':
    return read_secret_file(arg, c);
  case 'n':
    return cli_parse_ulong(arg, 1, 1000000, &v) == 0 ? (c->cut_anchors = (unsigned)v, 0) : 2;
  case 't':
    return cli_parse_ulong(arg, 1, 3600000, &v) == 0 ? (c->cut_ms = (unsigned)v, 0) : 2;
  case 'g':
    return seconds_flag("--orphan-grace", arg, NODE_GRACE_MAX_S, &c->orphan_grace_s);
  case 'w':
    return seconds_flag("--sweep-interval", arg, NODE_INTERVAL_MAX_S, &c->sweep_interval_s);
  default:
    return 2;
  }
}

/* What runs beside the control loop when the node has a data port, each
 * on threads of its own. */
struct node_data {
  struct coord *co;
  struct dataplane *dp;
  struct sweep *sw;
};

static void data_stop(struct node_data *d)
{
  sweep_stop(d->sw);     /* it talks to the data port */
  dataplane_stop(d->dp); /* no new requests reach the coordinator after this */
  coord_stop(d->co);
}

/* The coordinator, the data plane (shard store in DIR/store) and the
 * orphan sweep. 0 or 1 (printed). */
static int data_start(const struct node_config *c, struct node_data *d)
{
  char store[600];
  snprintf(store, sizeof store, "%s/store", c->dir);
  struct coord_opts co_opts = {.control = c->control_address, .node_id = c->node_id};
  if (coord_start(&co_opts, &d->co) != 0) {
    fprintf(stderr, "medshard node: cannot start the coordinator's threads\n");
    return 1;
  }
  struct dataplane_opts o = {.listen = c->data_address, .store_dir = store, .take = coord_take,
                             .take_ctx = d->co};
  int rc = msd_mkdirs(c->dir, 0700);
  if (rc != 0)
    fprintf(stderr, "medshard node: cannot create %s: %s\n", c->dir, strerror(-rc));
  if (rc == 0 && (rc = dataplane_start(&o, &d->dp)) != 0)
    d->dp = NULL;
  struct sweep_opts so = {.control = c->control_address, .data = c->data_address,
                          .node_id = c->node_id, .grace_s = c->orphan_grace_s,
                          .interval_s = c->sweep_interval_s};
  if (rc == 0 && (rc = sweep_start(&so, &d->sw)) != 0) {
    d->sw = NULL;
    fprintf(stderr, "medshard node: cannot start the orphan sweep's thread\n");
  }
  if (rc != 0)
    data_stop(d);
  return rc != 0 ? 1 : 0;
}

int cmd_node(int argc, char **argv)
{
  static const struct option opts[] = {
      {"config", 1, 0, 'c'}, {"id", 1, 0, 'i'},        {"dir", 1, 0, 'd'},
      {"raft", 1, 0, 'r'},   {"control", 1, 0, 'C'},   {"peer", 1, 0, 'p'},
      {"secret", 1, 0, 's'}, {"secret-file", 1, 0, 'S'}, {"join", 1, 0, 'j'},
      {"zone", 1, 0, 'z'},   {"cut-anchors", 1, 0, 'n'}, {"cut-ms", 1, 0, 't'},
      {"data", 1, 0, 'D'},   {"orphan-grace", 1, 0, 'g'}, {"sweep-interval", 1, 0, 'w'},
      {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
  struct node_config c;
  node_config_defaults(&c);
  optind = 1;
  int opt;
  while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (opt == 'h') {
      node_usage(stdout);
      return 0;
    }
    int rc = opt == '?' ? 2 : node_flag(opt, optarg, &c);
    if (rc != 0) {
      if (strchr("cpSrCjDzgw?", opt) == NULL) /* the others said what is wrong */
        fprintf(stderr, "medshard node: bad value '%s'\n", optarg);
      node_usage(stderr);
      return rc;
    }
  }
  char err[256];
  if (node_config_check(&c, err, sizeof err) != 0) {
    fprintf(stderr, "medshard node: %s\n", err);
    return 2;
  }
  struct node_data d = {0};
  if (c.data_address[0] != 0 && data_start(&c, &d) != 0)
    return 1;
  int rc = node_run(&c); /* the control loop, on this thread until SIGTERM/SIGINT */
  data_stop(&d);
  return rc;
}
