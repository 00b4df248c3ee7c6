/* The node daemon's lifecycle (node.h): key, FSM, libraft on raft_uv, the
 * control listener, and one tick timer that drives the leader's duties
 * (barrier, block cutting, adding joined nodes to Raft) and every node's
 * own (joining the cluster map, cosigning blocks). */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain-anchor/node_int.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/log.h"

#define TICK_MS 20
#define RESEND_MS 1000

void node_config_defaults(struct node_config *c)
{
  memset(c, 0, sizeof *c);
  c->weight = 1;
  snprintf(c->zone, sizeof c->zone, "default");
  c->cut_anchors = 1000;
  c->cut_ms = 200;
  c->election_ms = 1000;
  c->heartbeat_ms = 100;
  c->snapshot_threshold = 4096;
  c->snapshot_trailing = 1024;
  c->orphan_grace_s = 3600;
  c->sweep_interval_s = 600;
}

int node_peer_parse(const char *text, struct node_peer *p)
{
  char buf[3 * NODE_ADDR_MAX];
  if (text == NULL || strlen(text) >= sizeof buf)
    return MSD_EPARAM;
  snprintf(buf, sizeof buf, "%s", text);
  char *a = strchr(buf, ','), *b = a ? strchr(a + 1, ',') : NULL;
  if (a == NULL || b == NULL)
    return MSD_EPARAM;
  *a = *b = 0;
  char *end;
  unsigned long id = strtoul(buf, &end, 10);
  if (*end != 0 || id == 0 || id > UINT32_MAX || strlen(a + 1) >= NODE_ADDR_MAX ||
      strlen(b + 1) >= NODE_ADDR_MAX || strchr(a + 1, ':') == NULL || strchr(b + 1, ':') == NULL)
    return MSD_EPARAM;
  p->id = (uint32_t)id;
  snprintf(p->raft, sizeof p->raft, "%s", a + 1);
  snprintf(p->control, sizeof p->control, "%s", b + 1);
  return 0;
}

static int hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
  size_t n = strlen(hex);
  if (n % 2 != 0 || n / 2 > cap || n == 0)
    return MSD_EPARAM;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      return MSD_EPARAM;
    out[i] = (uint8_t)v;
  }
  *len = n / 2;
  return 0;
}

static int set_uint(const char *v, unsigned *out)
{
  char *end;
  unsigned long x = strtoul(v, &end, 10);
  if (*v == 0 || *end != 0 || x > 100000000ul)
    return MSD_EPARAM;
  *out = (unsigned)x;
  return 0;
}

/* inih handler: one key. Returns 1 to continue, 0 to report the line. */
static int ini_key(void *user, const char *section, const char *key, const char *v)
{
  struct node_config *c = user;
  unsigned u;
  (void)section;
  if (strcmp(key, "id") == 0)
    return set_uint(v, &u) == 0 && u > 0 ? (c->node_id = u, 1) : 0;
  if (strcmp(key, "dir") == 0)
    return strlen(v) < sizeof c->dir ? (snprintf(c->dir, sizeof c->dir, "%s", v), 1) : 0;
  if (strcmp(key, "raft") == 0)
    return strlen(v) < NODE_ADDR_MAX ? (snprintf(c->raft_address, NODE_ADDR_MAX, "%s", v), 1) : 0;
  if (strcmp(key, "control") == 0)
    return strlen(v) < NODE_ADDR_MAX ? (snprintf(c->control_address, NODE_ADDR_MAX, "%s", v), 1) : 0;
  if (strcmp(key, "data") == 0)
    return strlen(v) < NODE_ADDR_MAX ? (snprintf(c->data_address, NODE_ADDR_MAX, "%s", v), 1) : 0;
  if (strcmp(key, "join") == 0)
    return strlen(v) < NODE_ADDR_MAX ? (snprintf(c->join, NODE_ADDR_MAX, "%s", v), 1) : 0;
  if (strcmp(key, "zone") == 0)
    return strlen(v) < sizeof c->zone ? (snprintf(c->zone, sizeof c->zone, "%s", v), 1) : 0;
  if (strcmp(key, "secret") == 0)
    return hex_decode(v, c->secret, sizeof c->secret, &c->secret_len) == 0;
  if (strcmp(key, "peer") == 0)
    return c->npeers < NODE_PEERS_MAX && node_peer_parse(v, &c->peers[c->npeers]) == 0
               ? (c->npeers++, 1)
               : 0;
  unsigned *field = strcmp(key, "weight") == 0               ? &c->weight
                    : strcmp(key, "cut_anchors") == 0        ? &c->cut_anchors
                    : strcmp(key, "cut_ms") == 0             ? &c->cut_ms
                    : strcmp(key, "election_ms") == 0        ? &c->election_ms
                    : strcmp(key, "heartbeat_ms") == 0       ? &c->heartbeat_ms
                    : strcmp(key, "snapshot_threshold") == 0 ? &c->snapshot_threshold
                    : strcmp(key, "snapshot_trailing") == 0  ? &c->snapshot_trailing
                    : strcmp(key, "orphan_grace") == 0       ? &c->orphan_grace_s
                    : strcmp(key, "sweep_interval") == 0     ? &c->sweep_interval_s
                                                             : NULL;
  return field != NULL && set_uint(v, field) == 0;
}

int node_config_load(const char *path, struct node_config *c, char *err, size_t err_cap)
{
  int line = ini_parse(path, ini_key, c);
  if (line == 0)
    return 0;
  if (line < 0)
    snprintf(err, err_cap, "cannot read config file %s", path);
  else
    snprintf(err, err_cap, "%s line %d: unknown key or bad value", path, line);
  return MSD_EPARAM;
}

int node_config_check(const struct node_config *c, char *err, size_t err_cap)
{
  const char *why = c->node_id == 0                     ? "node id missing (id = N, N > 0)"
                    : c->dir[0] == 0                    ? "data dir missing (dir = PATH)"
                    : strchr(c->raft_address, ':') == NULL ? "raft address missing (raft = HOST:PORT)"
                    : strchr(c->control_address, ':') == NULL
                        ? "control address missing (control = HOST:PORT)"
                    : c->secret_len < 16 ? "cluster secret missing or under 16 bytes (secret = HEX)"
                    : c->npeers == 0 && c->join[0] == 0
                        ? "need the bootstrap voters (peer = ID,RAFT,CONTROL) or join = HOST:PORT"
                    : c->npeers != 0 && c->npeers != 1 && c->npeers != 3 && c->npeers != 5
                        ? "bootstrap voters must number 1, 3 or 5"
                    : c->cut_anchors == 0 || c->cut_ms == 0 ? "cut_anchors and cut_ms must be > 0"
                    : c->orphan_grace_s == 0 || c->orphan_grace_s > NODE_GRACE_MAX_S
                        ? "orphan_grace must be 1..31536000 seconds (default 3600)"
                    : c->sweep_interval_s == 0 || c->sweep_interval_s > NODE_INTERVAL_MAX_S
                        ? "sweep_interval must be 1..604800 seconds (default 600)"
                                                             : NULL;
  if (why == NULL)
    return 0;
  snprintf(err, err_cap, "%s", why);
  return MSD_EPARAM;
}

/* Loads the node's Ed25519 key, generating it (0600) on first start. */
static int load_key(struct node *n)
{
  char path[600];
  snprintf(path, sizeof path, "%s/node.key", n->cfg.dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t got = read(fd, n->sk, sizeof n->sk);
    close(fd);
    if (got != (ssize_t)sizeof n->sk) {
      msd_log(MSD_LOG_ERROR, "node key %s is damaged (%zd bytes); restore it from backup", path, got);
      return MSD_ECORRUPT;
    }
    memcpy(n->pk, n->sk + 32, sizeof n->pk); /* libsodium keeps the public key in sk[32..64) */
    return 0;
  }
  if (errno != ENOENT)
    return -errno;
  int rc = block_keypair(n->pk, n->sk);
  if (rc != 0)
    return rc;
  char tmp[620];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  /* Atomic publish: a crash never leaves a half-written key. */
  rc = write(fd, n->sk, sizeof n->sk) == (ssize_t)sizeof n->sk && fsync(fd) == 0 ? 0 : -EIO;
  close(fd);
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc == 0)
    msd_log(MSD_LOG_INFO, "node %u: generated Ed25519 key %s", n->cfg.node_id, path);
  return rc;
}

static bool is_voter_peer(const struct node *n)
{
  for (size_t i = 0; i < n->cfg.npeers; i++)
    if (n->cfg.peers[i].id == n->cfg.node_id)
      return true;
  return false;
}

/* The control address of the leader, or "" when unknown. */
static void leader_addr(struct node *n, char *addr, size_t cap)
{
  Medshard__CtlResponse r = MEDSHARD__CTL_RESPONSE__INIT;
  node__leader_hint(n, &r, addr, cap);
  if (addr[0] == 0 && n->cfg.join[0] != 0 && r.leader_id == 0)
    snprintf(addr, cap, "%s", n->cfg.join);
}

/* Our own command: straight into the batch on the leader, else forwarded. */
static void own_command(struct node *n, Medshard__Command *cmd, bool is_cut)
{
  int code;
  const char *why;
  if (node__can_write(n, &code, &why)) {
    node__submit(n, NULL, 0, &cmd, 1, is_cut);
    return;
  }
  char addr[NODE_ADDR_MAX];
  leader_addr(n, addr, sizeof addr);
  if (addr[0] != 0 && !is_cut && raft_state(&n->raft) != RAFT_LEADER)
    node__fwd_push(n, addr, &cmd, 1);
}

/* A node whose data directory was wiped with its key comes back with a
 * new key under an id the cluster map gives another key: its NodeJoin
 * and every cosignature are refused. Say so loudly, once, and show it in
 * `chain head` (node->key_problem). */
static void check_own_key(struct node *n, const uint8_t *rec, size_t len)
{
  Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, len, rec);
  bool same = ni != NULL && ni->public_key.len == sizeof n->pk &&
              memcmp(ni->public_key.data, n->pk, sizeof n->pk) == 0;
  medshard__node_info__free_unpacked(ni, NULL);
  if (same || ni == NULL || n->key_problem[0] != 0)
    return;
  snprintf(n->key_problem, sizeof n->key_problem,
           "node %u: the cluster map holds another public key for this id, so this node's"
           " cosignatures are refused; restore its node.key, or remove it and join under a new"
           " id", n->cfg.node_id);
  msd_log(MSD_LOG_ERROR, "%s", n->key_problem);
}

static void tick_join(struct node *n, uint64_t now)
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_node(n->fsm, n->cfg.node_id, &buf, &len) == 0) {
    check_own_key(n, buf, len);
    msd_free(buf);
    return;
  }
  if (now - n->join_sent_ms < RESEND_MS)
    return;
  n->join_sent_ms = now;
  Medshard__NodeInfo ni = MEDSHARD__NODE_INFO__INIT;
  Medshard__NodeJoin j = MEDSHARD__NODE_JOIN__INIT;
  Medshard__Command cmd = MEDSHARD__COMMAND__INIT;
  ni.format_version = 1;
  ni.node_id = n->cfg.node_id;
  ni.public_key = (ProtobufCBinaryData){sizeof n->pk, n->pk};
  ni.raft_address = n->cfg.raft_address;
  ni.control_address = n->cfg.control_address;
  ni.data_address = n->cfg.data_address;
  ni.zone = n->cfg.zone;
  ni.weight = n->cfg.weight;
  ni.role = is_voter_peer(n) ? MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER
                             : MEDSHARD__NODE_ROLE__NODE_ROLE_STANDBY;
  j.node = &ni;
  cmd.body_case = MEDSHARD__COMMAND__BODY_NODE_JOIN;
  cmd.node_join = &j;
  own_command(n, &cmd, false);
}

/* Cosigns every unsealed block this node has not signed: the FSM checked
 * the block's root against this node's own tree before accepting it. */
static void tick_cosign(struct node *n, uint64_t now)
{
  uint64_t heights[64];
  uint8_t hashes[64][BLOCK_HASH];
  size_t k = chain_fsm_unsigned(n->fsm, n->cfg.node_id, heights, hashes, 64);
  if (k == 0 || (heights[k - 1] <= n->cosigned_height && now - n->cosign_sent_ms < RESEND_MS))
    return;
  Medshard__Cosign cs[64];
  Medshard__Command cmd[64], *ptr[64];
  uint8_t sig[64][BLOCK_SIG_BYTES];
  for (size_t i = 0; i < k; i++) {
    block_cosign(hashes[i], n->sk, sig[i]);
    medshard__cosign__init(&cs[i]);
    cs[i].height = heights[i];
    cs[i].node_id = n->cfg.node_id;
    cs[i].signature = (ProtobufCBinaryData){BLOCK_SIG_BYTES, sig[i]};
    medshard__command__init(&cmd[i]);
    cmd[i].body_case = MEDSHARD__COMMAND__BODY_COSIGN;
    cmd[i].cosign = &cs[i];
    ptr[i] = &cmd[i];
  }
  int code;
  const char *why;
  if (node__can_write(n, &code, &why)) {
    node__submit(n, NULL, 0, ptr, k, false);
  } else if (raft_state(&n->raft) != RAFT_LEADER) {
    char addr[NODE_ADDR_MAX];
    leader_addr(n, addr, sizeof addr);
    if (addr[0] != 0)
      node__fwd_push(n, addr, ptr, k);
  }
  n->cosigned_height = heights[k - 1];
  n->cosign_sent_ms = now;
}

/* The leader closes a block every cut_anchors leaves or cut_ms, once every
 * bootstrap voter is in the cluster map (so sealing counts them all). */
static void tick_cut(struct node *n, uint64_t now)
{
  struct chain_head h;
  struct block_header b;
  chain_fsm_head(n->fsm, &h);
  uint64_t pending = h.leaves - h.last_size;
  if (n->cut_inflight || pending == 0 || h.voters < n->cfg.npeers)
    return;
  if (pending < n->cfg.cut_anchors && now - n->last_cut_ms < n->cfg.cut_ms)
    return;
  if (chain_fsm_next_block(n->fsm, &b) != 0)
    return;
  Medshard__CutBlock cb = MEDSHARD__CUT_BLOCK__INIT;
  Medshard__Command cmd = MEDSHARD__COMMAND__INIT;
  cb.height = b.height;
  cb.prev_hash = (ProtobufCBinaryData){BLOCK_HASH, b.prev_hash};
  cb.size_before = b.size_before;
  cb.size_after = b.size_after;
  cb.root = (ProtobufCBinaryData){MERKLE_HASH, b.root};
  cb.raft_term = n->raft.current_term;
  cb.timestamp_ms = now;
  cb.epoch = b.epoch;
  cmd.body_case = MEDSHARD__COMMAND__BODY_CUT_BLOCK;
  cmd.cut_block = &cb;
  n->cut_inflight = true;
  n->last_cut_ms = now;
  own_command(n, &cmd, true);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
  struct node *n = req->data;
  n->barrier_pending = false;
  if (status == 0) {
    n->ready_term = n->barrier_term;
    msd_log(MSD_LOG_INFO, "node %u: leader for term %" PRIu64 ", serving writes", n->cfg.node_id,
            (uint64_t)n->ready_term);
  }
}

/* libraft 0.15 does not append a no-op for a new leader: a barrier makes
 * sure everything from earlier terms is applied before we serve. */
static void tick_leadership(struct node *n)
{
  if (raft_state(&n->raft) != RAFT_LEADER) {
    n->ready_term = 0;
    if (n->pending != NULL)
      node__fail_pending(n, MSD_ENOTLEADER, "leadership lost");
    return;
  }
  if (n->ready_term == n->raft.current_term || n->barrier_pending)
    return;
  n->barrier.data = n;
  n->barrier_term = n->raft.current_term;
  if (raft_barrier(&n->raft, &n->barrier, barrier_cb) == 0)
    n->barrier_pending = true;
}

static void change_cb(struct raft_change *req, int status)
{
  struct node *n = req->data;
  n->change_pending = false;
  if (status != 0)
    msd_log(MSD_LOG_WARN, "node %u: membership change failed: %s", n->cfg.node_id,
            raft_strerror(status));
}

/* Nodes in the cluster map that Raft does not know yet join as standbys
 * (non-voting): add them, then assign the role. One change at a time. */
static void tick_members(struct node *n)
{
  uint8_t *buf;
  size_t len;
  if (n->change_pending || n->ready_term != n->raft.current_term ||
      chain_fsm_nodes(n->fsm, &buf, &len) != 0)
    return;
  for (size_t off = 0; off + 4 <= len && !n->change_pending;) {
    size_t l = (size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 | (size_t)buf[off + 2] << 8 |
               buf[off + 3];
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, l, buf + off + 4);
    off += 4 + l;
    if (ni == NULL)
      continue;
    const struct raft_server *srv = NULL;
    for (unsigned i = 0; i < n->raft.configuration.n; i++)
      if (n->raft.configuration.servers[i].id == ni->node_id)
        srv = &n->raft.configuration.servers[i];
    n->change.data = n;
    int rv = -1;
    if (srv == NULL)
      rv = raft_add(&n->raft, &n->change, ni->node_id, ni->raft_address, change_cb);
    else if (srv->role == RAFT_SPARE)
      rv = raft_assign(&n->raft, &n->change, ni->node_id, RAFT_STANDBY, change_cb);
    if (rv == 0) {
      n->change_pending = true;
      msd_log(MSD_LOG_INFO, "node %u: adding node %u to Raft as a standby", n->cfg.node_id,
              ni->node_id);
    }
    medshard__node_info__free_unpacked(ni, NULL);
  }
  msd_free(buf);
}

static void tick_cb(uv_timer_t *t)
{
  struct node *n = t->data;
  uint64_t now = node__wall_ms();
  struct chain_head h;
  chain_fsm_head(n->fsm, &h);
  if (h.alarm[0] != 0 && !n->alarm_logged) {
    msd_log(MSD_LOG_ERROR, "node %u: ALARM: %s; this node refuses writes until an operator"
            " investigates", n->cfg.node_id, h.alarm);
    n->alarm_logged = true;
  }
  tick_leadership(n);
  tick_join(n, now);
  tick_cosign(n, now);
  if (n->ready_term == n->raft.current_term && raft_state(&n->raft) == RAFT_LEADER) {
    tick_cut(n, now);
    tick_members(n);
  }
}

static void raft_closed_cb(struct raft *r)
{
  struct node *n = r->data;
  uv_close((uv_handle_t *)&n->tick, NULL);
  uv_close((uv_handle_t *)&n->flush, NULL);
}

static void stop_cb(uv_signal_t *s, int signum)
{
  struct node *n = s->data;
  if (n->stopping)
    return;
  msd_log(MSD_LOG_INFO, "node %u: signal %d, stopping", n->cfg.node_id, signum);
  n->stopping = true;
  uv_timer_stop(&n->tick);
  uv_close((uv_handle_t *)&n->sigterm, NULL);
  uv_close((uv_handle_t *)&n->sigint, NULL);
  node__fail_pending(n, MSD_EUNAVAILABLE, "node stopping");
  node__ctl_close_all(n);
  raft_close(&n->raft, raft_closed_cb);
}

static int start_raft(struct node *n)
{
  char path[600];
  snprintf(path, sizeof path, "%s/raft", n->cfg.dir);
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    int rc = -errno;
    msd_log(MSD_LOG_ERROR, "node %u: cannot create %s: %s", n->cfg.node_id, path, strerror(-rc));
    return rc;
  }
  int rc = raft_uv_tcp_init(&n->transport, &n->loop);
  if (rc == 0)
    rc = raft_uv_init(&n->io, &n->loop, path, &n->transport);
  if (rc != 0) {
    msd_log(MSD_LOG_ERROR, "node %u: raft_uv: %s", n->cfg.node_id, raft_strerror(rc));
    return MSD_EPARAM;
  }
  chain_raft_fsm_init(&n->rf, n->fsm);
  rc = raft_init(&n->raft, &n->io, &n->rf.fsm, n->cfg.node_id, n->cfg.raft_address);
  if (rc != 0) {
    msd_log(MSD_LOG_ERROR, "node %u: raft_init: %s", n->cfg.node_id, raft_errmsg(&n->raft));
    return MSD_EPARAM;
  }
  n->raft.data = n;
  chain_raft_fsm_bind(&n->rf, &n->raft);
  raft_set_election_timeout(&n->raft, n->cfg.election_ms);
  raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_ms);
  raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
  raft_set_snapshot_trailing(&n->raft, n->cfg.snapshot_trailing);
  if (n->cfg.npeers > 0 && is_voter_peer(n)) {
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (size_t i = 0; i < n->cfg.npeers; i++)
      raft_configuration_add(&conf, n->cfg.peers[i].id, n->cfg.peers[i].raft, RAFT_VOTER);
    rc = raft_bootstrap(&n->raft, &conf);
    raft_configuration_close(&conf);
    if (rc != 0 && rc != RAFT_CANTBOOTSTRAP) { /* CANTBOOTSTRAP: state exists already */
      msd_log(MSD_LOG_ERROR, "node %u: raft_bootstrap: %s", n->cfg.node_id, raft_strerror(rc));
      return MSD_EPARAM;
    }
  }
  rc = raft_start(&n->raft);
  if (rc != 0) {
    msd_log(MSD_LOG_ERROR, "node %u: raft_start: %s", n->cfg.node_id, raft_errmsg(&n->raft));
    return MSD_EPARAM;
  }
  return 0;
}

static int node_open(struct node *n)
{
  char path[600];
  int rc = msd_mkdirs(n->cfg.dir, 0700); /* `--dir var/n1` in a fresh checkout */
  if (rc != 0) {
    msd_log(MSD_LOG_ERROR, "node %u: cannot create data directory %s: %s", n->cfg.node_id,
            n->cfg.dir, strerror(-rc));
    return rc;
  }
  rc = load_key(n);
  if (rc != 0 && rc != MSD_ECORRUPT) /* a damaged key said so already */
    msd_log(MSD_LOG_ERROR, "node %u: cannot load or create %s/node.key: %s", n->cfg.node_id,
            n->cfg.dir, msd_strerror(rc));
  snprintf(path, sizeof path, "%s/chain", n->cfg.dir);
  struct chain_fsm_config fc = {.dir = path, .secret = n->cfg.secret,
                                .secret_len = n->cfg.secret_len};
  if (rc == 0)
    rc = chain_fsm_open(&fc, &n->fsm);
  if (rc != 0) {
    msd_log(MSD_LOG_ERROR, "node %u: cannot open %s: %s", n->cfg.node_id, n->cfg.dir,
            msd_strerror(rc));
    return rc;
  }
  rc = uv_loop_init(&n->loop);
  if (rc != 0)
    return -rc;
  uv_timer_init(&n->loop, &n->tick);
  uv_timer_init(&n->loop, &n->flush);
  n->tick.data = n->flush.data = n;
  uv_signal_init(&n->loop, &n->sigterm);
  uv_signal_init(&n->loop, &n->sigint);
  n->sigterm.data = n->sigint.data = n;
  return 0;
}

static void close_handle(uv_handle_t *h, void *arg)
{
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int node_run(const struct node_config *c)
{
  struct node *n = msd_calloc(1, sizeof *n);
  if (n == NULL)
    return 1;
  n->cfg = *c;
  /* libuv writes to peers and clients with write(2): a peer that went away
   * (a killed leader, a client that gave up) must cost that connection
   * EPIPE, not the whole node its life. */
  signal(SIGPIPE, SIG_IGN);
  int rc = ctl_auth_key(c->secret, c->secret_len, n->auth_key);
  if (rc == 0)
    rc = node_open(n);
  bool loop = rc == 0;
  if (rc == 0)
    rc = node__ctl_listen(n);
  if (rc == 0)
    rc = start_raft(n);
  if (rc == 0)
    rc = node__fwd_start(n);
  if (rc == 0) {
    uv_signal_start(&n->sigterm, stop_cb, SIGTERM);
    uv_signal_start(&n->sigint, stop_cb, SIGINT);
    uv_timer_start(&n->tick, tick_cb, TICK_MS, TICK_MS);
    msd_log(MSD_LOG_INFO, "node %u: raft %s, control %s, dir %s", c->node_id, c->raft_address,
            c->control_address, c->dir);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    raft_uv_close(&n->io);
    raft_uv_tcp_close(&n->transport);
  }
  node__fwd_stop(n);
  if (loop && rc != 0) {
    /* Start-up failed after the loop existed: close what is open. */
    uv_walk(&n->loop, close_handle, NULL);
    uv_run(&n->loop, UV_RUN_DEFAULT);
  }
  if (loop)
    uv_loop_close(&n->loop);
  chain_fsm_close(n->fsm);
  msd_free(n);
  return rc == 0 ? 0 : 1;
}
