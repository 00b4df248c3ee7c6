/* The control plane of a medshard node (DESIGN §7, §8): libraft with its
 * libuv backend on the node's data dir, the chain FSM, and the control-plane
 * listener on the same libuv loop serving submit, manifests, chain head,
 * blocks, proofs and raw chain bytes. `medshard node` runs one. */
#ifndef MSD_CHAIN_NODE_H
#define MSD_CHAIN_NODE_H

#include <stddef.h>
#include <stdint.h>

#define NODE_PEERS_MAX 16
#define NODE_ADDR_MAX 64

/* A bootstrap voter: its id and both addresses. */
struct node_peer {
  uint32_t id;
  char raft[NODE_ADDR_MAX];    /* host:port of its Raft transport */
  char control[NODE_ADDR_MAX]; /* host:port of its control plane */
};

struct node_config {
  uint32_t node_id;                   /* > 0, unique in the cluster */
  char dir[512];                      /* data dir: raft/, chain/, node.key */
  char raft_address[NODE_ADDR_MAX];   /* host:port to bind Raft on */
  char control_address[NODE_ADDR_MAX];/* host:port to bind the control plane on */
  char data_address[NODE_ADDR_MAX];   /* host:port of the data plane ("" = none);
                                         announced in NodeJoin, served by net/ */
  char zone[32];
  uint32_t weight;
  struct node_peer peers[NODE_PEERS_MAX]; /* the bootstrap voters (3 or 5) */
  size_t npeers;
  char join[NODE_ADDR_MAX];           /* control address of a member, for a
                                         node that is not a bootstrap voter */
  uint8_t secret[64];                 /* cluster secret (key tags) */
  size_t secret_len;
  unsigned cut_anchors;               /* cut a block every N anchors ... */
  unsigned cut_ms;                    /* ... or T ms, whichever first */
  unsigned election_ms, heartbeat_ms;
  unsigned snapshot_threshold, snapshot_trailing; /* Raft entries */
  unsigned orphan_grace_s;            /* the orphan sweep (cluster/sweep.h): only shards */
  unsigned sweep_interval_s;          /* sealed this long ago; seconds between passes */
};

#define NODE_GRACE_MAX_S 31536000u    /* a year */
#define NODE_INTERVAL_MAX_S 604800u   /* a week */

/* Defaults for everything but ids, addresses, dir and secret. */
void node_config_defaults(struct node_config *c);

/* Loads an INI config file (docs/node.md) into c. 0, or MSD_EPARAM with a
 * sentence naming the file, line and key in err. */
int node_config_load(const char *path, struct node_config *c, char *err, size_t err_cap);

/* Parses "ID,RAFT_HOST:PORT,CONTROL_HOST:PORT" into a peer. */
int node_peer_parse(const char *text, struct node_peer *p);

/* Checks a config is complete and consistent. 0 or MSD_EPARAM with err. */
int node_config_check(const struct node_config *c, char *err, size_t err_cap);

/* Runs the node until SIGTERM or SIGINT. Returns the process exit code
 * (0 after a clean stop). Logs why it stops. */
int node_run(const struct node_config *c);

#endif
