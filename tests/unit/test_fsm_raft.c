/* The chain FSM under libraft 0.15 (chain-anchor/raftfsm.h): the binding
 * driven by hand as libraft drives it, then seeded random runs of a
 * raft_fixture cluster (leader kills, partitions, disk faults, snapshots,
 * client retries) that must end with identical state on every node. */
#include <inttypes.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "chain-anchor/chainfile.h"
#include "chain-anchor/raftfsm.h"
#include "common/alloc.h"
#include "common/err.h"
#include "fsm_util.h"

/* raftfsm.c as libraft 0.15 drives it, without a cluster: a stand-in raft
 * whose last_applied we advance as libraft does (also over barrier and
 * configuration entries, which never reach the FSM). */
#define REPLAY_N 40
#define REPLAY_SNAP 22

static int rf_apply(struct chain_raft_fsm *rf, struct raft *r, uint8_t *const *entry,
                    const size_t *len, raft_index from, raft_index to)
{
  for (raft_index i = from; i <= to; i++) {
    if (entry[i] != NULL) {
      struct raft_buffer b = {.base = entry[i], .len = len[i]};
      void *result = (void *)1;
      int rc = rf->fsm.apply(&rf->fsm, &b, &result);
      if (rc != 0 || result != NULL)
        return rc != 0 ? rc : -1;
    }
    r->last_applied = i;
  }
  return 0;
}

/* A log of REPLAY_N entries (puts, a cut every 5th, a barrier every 7th),
 * the snapshot taken at REPLAY_SNAP and the digest at the end. */
struct replay_log {
  uint8_t *entry[REPLAY_N + 1], *snap;
  size_t len[REPLAY_N + 1], snap_len;
  uint64_t cut_at[REPLAY_N + 1]; /* height of the block entry i cuts */
  uint8_t digest[32];
};

static void replay_snapshot(struct chain_raft_fsm *rf, struct replay_log *lg)
{
  struct raft_buffer *bufs;
  unsigned n;
  CU_ASSERT_EQUAL_FATAL(rf->fsm.snapshot(&rf->fsm, &bufs, &n), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  lg->snap_len = bufs[0].len;
  lg->snap = malloc(lg->snap_len);
  memcpy(lg->snap, bufs[0].base, lg->snap_len);
  /* Version 2: the buffers stay the FSM's until finalize frees them. */
  CU_ASSERT_EQUAL(rf->fsm.snapshot_finalize(&rf->fsm, &bufs, &n), 0);
  CU_ASSERT_PTR_NULL(bufs);
  CU_ASSERT_EQUAL(n, 0);
}

/* Applies the log through the binding as it is built. */
static void replay_build(struct env *e, struct replay_log *lg)
{
  static struct raft fake;
  struct chain_raft_fsm rf;
  struct cmd *c = malloc(sizeof *c);
  memset(lg, 0, sizeof *lg);
  memset(&fake, 0, sizeof fake);
  fake.last_applied = e->index; /* entry 1 was applied directly */
  chain_raft_fsm_init(&rf, e->f);
  chain_raft_fsm_bind(&rf, &fake);
  CU_ASSERT_EQUAL(rf.fsm.version, 2);
  for (raft_index i = 2; i <= REPLAY_N; i++) {
    Medshard__Command *cp = NULL;
    struct block_header h;
    uint8_t rid[16];
    char key[32];
    new_rid(e, rid);
    if (i % 7 != 0) { /* else a barrier: no FSM call, but the index moves on */
      snprintf(key, sizeof key, "rp/%u", (unsigned)(i % 6));
      if (i % 5 == 0 && chain_fsm_next_block(e->f, &h) == 0) {
        cp = cmd_cut(c, rid, &h, 2, 1000 + i);
        lg->cut_at[i] = h.height;
      } else {
        cp = put_cmd_for(c, rid, e, key);
      }
      lg->entry[i] = pack_batch(&cp, 1, 1000 + i, &lg->len[i], false);
    }
    CU_ASSERT_EQUAL_FATAL(rf_apply(&rf, &fake, lg->entry, lg->len, i, i), 0);
    if (i == REPLAY_SNAP)
      replay_snapshot(&rf, lg);
  }
  free(c);
  digest_of(e->f, lg->digest);
}

/* Each block records the index of the entry that cut it. */
static void replay_check_blocks(struct chain_fsm *f, const struct replay_log *lg)
{
  struct chain_head h;
  chain_fsm_head(f, &h);
  CU_ASSERT_EQUAL(h.applied, REPLAY_N);
  CU_ASSERT(h.height >= 3);
  for (raft_index i = 2; i <= REPLAY_N; i++) {
    if (lg->cut_at[i] == 0)
      continue;
    Medshard__BlockRecord *r = block_of(f, lg->cut_at[i]);
    struct block_header bh;
    CU_ASSERT_FATAL(r != NULL && block_decode(r->header.data, r->header.len, &bh) == 0);
    CU_ASSERT_EQUAL(bh.raft_index, i);
    medshard__block_record__free_unpacked(r, NULL);
  }
}

/* libraft's start on f: restore the snapshot (raft_malloc'ed, taken by
 * restore), then apply the log after it. */
static void replay_start(struct chain_fsm *f, const struct replay_log *lg, bool fresh)
{
  static struct raft fake;
  struct chain_raft_fsm rf;
  memset(&fake, 0, sizeof fake);
  chain_raft_fsm_init(&rf, f);
  chain_raft_fsm_bind(&rf, &fake);
  struct raft_buffer rb = {.base = raft_malloc(lg->snap_len), .len = 10};
  memcpy(rb.base, lg->snap, lg->snap_len);
  /* Truncated: refused, and the buffer stays the caller's (libraft's). */
  CU_ASSERT_EQUAL(rf.fsm.restore(&rf.fsm, &rb), RAFT_CORRUPT);
  rb.len = lg->snap_len;
  CU_ASSERT_EQUAL(rf.fsm.restore(&rf.fsm, &rb), 0);
  struct chain_head h;
  chain_fsm_head(f, &h);
  CU_ASSERT_EQUAL(h.applied, fresh ? REPLAY_SNAP : REPLAY_N);
  fake.last_applied = REPLAY_SNAP;
  CU_ASSERT_EQUAL(rf_apply(&rf, &fake, lg->entry, lg->len, REPLAY_SNAP + 1, REPLAY_N), 0);
  uint8_t d[32];
  digest_of(f, d);
  CU_ASSERT_EQUAL(memcmp(d, lg->digest, 32), 0);
}

static void test_raftfsm_replay(void)
{
  struct env e, n;
  struct replay_log lg;
  env_setup(&e, 18, true);
  replay_build(&e, &lg);
  replay_check_blocks(e.f, &lg);
  /* A restart: the snapshot is older than the state (ignored) and the log
   * after it is already applied (skipped). */
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  replay_start(e.f, &lg, false);
  /* A new node: the snapshot, then the rest of the log. */
  env_setup(&n, 19, false);
  replay_start(n.f, &lg, true);
  replay_check_blocks(n.f, &lg);
  for (raft_index i = 0; i <= REPLAY_N; i++)
    free(lg.entry[i]);
  free(lg.snap);
  env_close(&n);
  env_close(&e);
}

/* ---- suite (b): the FSM under libraft's raft_fixture ---- */

#define MAXN 5
#define PUT_BATCH 8
#define COSIGN_CAP 16

enum { P_TODO = 1, P_PENDING, P_ACKED };
enum { S_SETUP, S_PUTS, S_CUT, S_COSIGN };

/* A client request: its command is rebuilt from the seed and the attempt
 * number on every try, so a retry carries the first one's request id. */
struct put_req {
  uint64_t seed;
  uint8_t state, attempts;
  int8_t acked_by; /* the leader whose apply callback said 0, or -1 */
};

struct rnode {
  struct chain_fsm *fsm;
  struct chain_raft_fsm rf;
  char dir[4096];
  uint8_t pk[BLOCK_PUBKEY_BYTES], sk[BLOCK_SECKEY_BYTES];
  /* raftfsm.c's callbacks, wrapped to count and to check the index. */
  int (*apply)(struct raft_fsm *, const struct raft_buffer *, void **);
  int (*snapshot)(struct raft_fsm *, struct raft_buffer *[], unsigned *);
  int (*restore)(struct raft_fsm *, struct raft_buffer *);
  unsigned applies, index_mismatch, snapshots, restores, dup_puts;
  unsigned failures; /* callbacks that failed: none may (see lost()) */
};

struct cut_ack {
  uint8_t rid[16];
  uint64_t index; /* where raft_apply put the entry */
  unsigned leader;
};

struct rcluster {
  struct raft_fixture f;
  unsigned n;
  struct rnode node[MAXN];
  struct test_rng rng;
  struct put_req *puts;
  size_t nputs, putcap;
  struct cut_ack *cuts;
  size_t ncuts, cutcap;
  uint8_t setup_rid[MAXN + 1][16];
  unsigned inflight, submits, refused, failed_cbs, retries, kills, faults;
};

struct submit {
  struct raft_apply req;
  struct rcluster *c;
  int kind;
  unsigned leader; /* the server raft_apply ran on */
  uint32_t put[PUT_BATCH];
  unsigned nput;
  uint8_t rid[16];
};

static struct rnode *rnode_of(struct raft_fsm *fsm)
{
  return (struct rnode *)(void *)((char *)fsm->data - offsetof(struct rnode, rf));
}

/* Entry `index` of a raft log (a ring of entries after `offset`). */
static const struct raft_entry *log_entry(const struct raft_log *l, raft_index index)
{
  size_t n = l->back >= l->front ? l->back - l->front : l->size - l->front + l->back;
  if (index <= l->offset || index - l->offset > n)
    return NULL;
  return &l->entries[(l->front + (size_t)(index - l->offset - 1)) % l->size];
}

/* raftfsm.c derives the entry's index as raft_last_applied() + 1 because
 * libraft 0.15 does not pass it: check that the buffer being applied is
 * the log entry at exactly that index. */
static int counting_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
  struct rnode *nd = rnode_of(fsm);
  struct raft *r = nd->rf.raft;
  const struct raft_entry *e = log_entry(&r->log, raft_last_applied(r) + 1);
  if (e == NULL || e->type != RAFT_COMMAND || &e->buf != buf)
    nd->index_mismatch++;
  Medshard__CommandBatch *b = medshard__command_batch__unpack(NULL, buf->len, buf->base);
  for (size_t i = 0; b != NULL && i < b->n_commands; i++) {
    const Medshard__Command *cmd = b->commands[i];
    if (cmd->body_case == MEDSHARD__COMMAND__BODY_PUT_OBJECT && cmd->request_id.len == 16 &&
        outcome_code(nd->fsm, cmd->request_id.data) != NO_OUTCOME)
      nd->dup_puts++; /* a retry of a put that had committed after all */
  }
  medshard__command_batch__free_unpacked(b, NULL);
  nd->applies++;
  int rc = nd->apply(fsm, buf, result);
  nd->failures += rc != 0;
  return rc;
}

static int counting_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
  struct rnode *nd = rnode_of(fsm);
  int rc = nd->snapshot(fsm, bufs, n);
  nd->snapshots += rc == 0;
  nd->failures += rc != 0;
  return rc;
}

static int counting_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
  struct rnode *nd = rnode_of(fsm);
  int rc = nd->restore(fsm, buf);
  nd->restores += rc == 0;
  nd->failures += rc != 0;
  return rc;
}

/* libraft 0.15's fixture stores persisted entries from position 0 and
 * truncates by absolute index: after an InstallSnapshot (which drops them
 * all) a later truncate reads past its array (ASan: heap-buffer-overflow in
 * ioMethodTruncate). Nothing reloads that copy (servers never restart in
 * the fixture), so dropping all of it keeps the fixture sound. */
static int (*fixture_truncate)(struct raft_io *, raft_index);

static int truncate_all(struct raft_io *io, raft_index index)
{
  (void)index;
  return fixture_truncate(io, 1);
}

static void rcluster_start(struct rcluster *c, unsigned n, uint64_t salt)
{
  memset(c, 0, sizeof *c);
  c->n = n;
  c->rng = test_rng_for(salt);
  for (unsigned i = 0; i <= n; i++)
    test_rng_fill(&c->rng, c->setup_rid[i], 16);
  CU_ASSERT_EQUAL_FATAL(raft_fixture_initialize(&c->f), 0);
  for (unsigned i = 0; i < n; i++) {
    struct rnode *nd = &c->node[i];
    snprintf(nd->dir, sizeof nd->dir, "%s", test_tmpdir());
    CU_ASSERT_EQUAL_FATAL(fsm_open_dir(nd->dir, &nd->fsm), 0);
    CU_ASSERT_EQUAL_FATAL(block_keypair(nd->pk, nd->sk), 0);
    chain_raft_fsm_init(&nd->rf, nd->fsm);
    nd->apply = nd->rf.fsm.apply;
    nd->snapshot = nd->rf.fsm.snapshot;
    nd->restore = nd->rf.fsm.restore;
    nd->rf.fsm.apply = counting_apply;
    nd->rf.fsm.snapshot = counting_snapshot;
    nd->rf.fsm.restore = counting_restore;
    CU_ASSERT_EQUAL_FATAL(raft_fixture_grow(&c->f, &nd->rf.fsm), 0);
    fixture_truncate = c->f.servers[i].io.truncate;
    c->f.servers[i].io.truncate = truncate_all;
    struct raft *r = raft_fixture_get(&c->f, i);
    chain_raft_fsm_bind(&nd->rf, r);
    /* Small, so that snapshots, log compaction and InstallSnapshot (and
     * with them chain_fsm_restore) happen many times per run. */
    raft_set_snapshot_threshold(r, 24);
    raft_set_snapshot_trailing(r, 6);
  }
  struct raft_configuration conf;
  CU_ASSERT_EQUAL_FATAL(raft_fixture_configuration(&c->f, n, &conf), 0);
  CU_ASSERT_EQUAL_FATAL(raft_fixture_bootstrap(&c->f, &conf), 0);
  raft_configuration_close(&conf);
  CU_ASSERT_EQUAL_FATAL(raft_fixture_start(&c->f), 0);
}

static void rcluster_stop(struct rcluster *c)
{
  raft_fixture_close(&c->f); /* fails what is still in flight: callbacks run */
  for (unsigned i = 0; i < c->n; i++) {
    chain_fsm_close(c->node[i].fsm);
    test_tmpdir_remove(c->node[i].dir);
  }
  free(c->puts);
  free(c->cuts);
}

/* The live server in leader state with the highest term, or -1. Not the
 * fixture's "stable" leader: a leader cut off from its followers still
 * takes submissions, and their failure (RAFT_LEADERSHIPLOST) is what makes
 * clients retry. */
static int leader_of(struct rcluster *c)
{
  int l = -1;
  raft_term best = 0;
  for (unsigned i = 0; i < c->n; i++) {
    struct raft *r = raft_fixture_get(&c->f, i);
    if (raft_fixture_alive(&c->f, i) && raft_state(r) == RAFT_LEADER && r->current_term > best) {
      best = r->current_term;
      l = (int)i;
    }
  }
  return l;
}

/* libraft 0.15 can commit an entry that is not on a majority (a follower
 * answers a heartbeat with its whole last index, stale entries included,
 * and the leader counts them as matching). A server that later sees the
 * real entry at an index it committed shuts itself down ("conflicting terms
 * ... -> shutdown"): RAFT_UNAVAILABLE for good, which the fixture cannot
 * restart. Such a server is "lost": the rest must still agree, and libraft
 * may lose at most a minority. */
static bool lost(struct rcluster *c, unsigned i)
{
  return raft_state(raft_fixture_get(&c->f, i)) == RAFT_UNAVAILABLE;
}

static unsigned n_lost(struct rcluster *c)
{
  unsigned k = 0;
  for (unsigned i = 0; i < c->n; i++)
    k += lost(c, i);
  return k;
}

/* The first server that is not lost: the state every other must match. */
static unsigned reference(struct rcluster *c)
{
  unsigned i = 0;
  while (i + 1 < c->n && lost(c, i))
    i++;
  return i;
}

static bool has_leader(struct raft_fixture *f, void *arg)
{
  (void)f;
  return leader_of(arg) >= 0;
}

/* Steps until some server leads (the fixture's own "stable leader" needs
 * every live server to follow it, which a lost server never does). */
static int step_until_leader(struct rcluster *c, unsigned max_ms)
{
  raft_fixture_step_until(&c->f, has_leader, c, max_ms);
  return leader_of(c);
}

static void put_rid(uint64_t seed, uint8_t rid[16])
{
  struct test_rng r = {seed};
  test_rng_fill(&r, rid, 16);
}

/* Every other retry carries a new object id and shard map under the same
 * request id: applied twice, it would anchor a second PUT leaf (the same
 * object id would instead hide behind the "object id already used" check). */
static Medshard__Command *put_cmd(struct rcluster *c, struct cmd *cm, uint64_t seed,
                                  unsigned attempt)
{
  struct test_rng r = {seed};
  uint8_t rid[16];
  char key[48];
  uint32_t nodes[NSHARDS];
  test_rng_fill(&r, rid, 16);
  if (attempt % 2 == 1)
    r.s ^= 0x9e3779b97f4a7c15ull * attempt;
  /* 40 keys, so most puts make new versions of an existing key. */
  snprintf(key, sizeof key, "study-%02u/img.dcm", (unsigned)(seed % 40));
  for (unsigned i = 0; i < NSHARDS; i++)
    nodes[i] = 1 + (uint32_t)test_rng_below(&r, c->n);
  return cmd_put(cm, rid, &r, "scans", key, nodes);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
  (void)result;
  struct submit *s = req->data;
  struct rcluster *c = s->c;
  for (unsigned i = 0; i < s->nput; i++) {
    struct put_req *p = &c->puts[s->put[i]];
    /* A failure does not mean it did not commit: the retry must not
     * apply twice. */
    p->state = status == 0 ? P_ACKED : p->state == P_ACKED ? P_ACKED : P_TODO;
    if (status == 0)
      p->acked_by = (int8_t)s->leader;
  }
  c->failed_cbs += status != 0;
  if (status == 0 && s->kind == S_CUT &&
      msd_grow(&c->cuts, &c->cutcap, c->ncuts, sizeof *c->cuts, 64) == 0) {
    memcpy(c->cuts[c->ncuts].rid, s->rid, 16);
    c->cuts[c->ncuts].leader = s->leader;
    c->cuts[c->ncuts++].index = req->index;
  }
  c->inflight--;
  free(s);
}

/* raft_apply on node l; on refusal the buffer stays ours. */
static void submit(struct rcluster *c, int l, struct submit *s, Medshard__Command **cs, size_t n)
{
  size_t len;
  uint8_t *buf = pack_batch(cs, n, raft_fixture_time(&c->f), &len, true);
  struct raft_buffer rb = {.base = buf, .len = len};
  s->c = c;
  s->leader = (unsigned)l;
  s->req.data = s;
  c->submits++;
  if (s->kind == S_PUTS && test_rng_below(&c->rng, 50) == 0) {
    /* A disk fault on the leader's own log append, the one I/O failure
     * libraft 0.15 survives (elsewhere it turns the server unavailable for
     * good): raft_apply refuses the entry and the client retries. */
    raft_fixture_io_fault(&c->f, (unsigned)l, 0, 1);
    c->faults++;
  }
  int rv = raft_apply(raft_fixture_get(&c->f, (unsigned)l), &s->req, &rb, 1, apply_cb);
  for (unsigned i = 0; i < s->nput; i++)
    if (c->puts[s->put[i]].state != P_ACKED)
      c->puts[s->put[i]].state = rv == 0 ? P_PENDING : P_TODO;
  if (rv != 0) {
    raft_free(buf);
    c->refused++;
    free(s);
    return;
  }
  c->inflight++;
}

/* Up to 8 puts: first the ones to retry, then (with `fresh`) new ones. */
static void submit_puts(struct rcluster *c, int l, bool fresh)
{
  struct submit *s = calloc(1, sizeof *s);
  struct cmd *cm = malloc(PUT_BATCH * sizeof *cm);
  Medshard__Command *cs[PUT_BATCH];
  unsigned want = 1 + (unsigned)test_rng_below(&c->rng, PUT_BATCH);
  s->kind = S_PUTS;
  for (size_t i = 0; i < c->nputs && s->nput < want; i++)
    if (c->puts[i].state == P_TODO)
      s->put[s->nput++] = (uint32_t)i;
  while (fresh && s->nput < want &&
         msd_grow(&c->puts, &c->putcap, c->nputs, sizeof *c->puts, 256) == 0) {
    c->puts[c->nputs] = (struct put_req){.seed = test_rng_next(&c->rng), .state = P_TODO,
                                         .acked_by = -1};
    s->put[s->nput++] = (uint32_t)c->nputs++;
  }
  for (unsigned i = 0; i < s->nput; i++) {
    struct put_req *p = &c->puts[s->put[i]];
    c->retries += p->attempts > 0;
    cs[i] = put_cmd(c, &cm[i], p->seed, p->attempts++);
  }
  if (s->nput > 0)
    submit(c, l, s, cs, s->nput);
  else
    free(s);
  free(cm);
}

/* The leader's CutBlock: its own next block, its term, the fixture time. */
static void submit_cut(struct rcluster *c, int l)
{
  struct block_header h;
  if (chain_fsm_next_block(c->node[l].fsm, &h) != 0)
    return;
  struct submit *s = calloc(1, sizeof *s);
  struct cmd cm;
  s->kind = S_CUT;
  test_rng_fill(&c->rng, s->rid, 16);
  Medshard__Command *cp = cmd_cut(&cm, s->rid, &h, raft_fixture_get(&c->f, (unsigned)l)->current_term,
                                  raft_fixture_time(&c->f));
  submit(c, l, s, &cp, 1);
}

/* Every live node cosigns what its own state says it has not signed. */
static void submit_cosigns(struct rcluster *c, int l)
{
  struct cmd *cm = malloc(MAXN * COSIGN_CAP * sizeof *cm);
  Medshard__Command *cs[MAXN * COSIGN_CAP];
  size_t n = 0;
  for (unsigned i = 0; i < c->n; i++) {
    if (!raft_fixture_alive(&c->f, i) || lost(c, i))
      continue;
    uint64_t heights[COSIGN_CAP];
    uint8_t hashes[COSIGN_CAP][BLOCK_HASH], sig[BLOCK_SIG_BYTES];
    size_t k = chain_fsm_unsigned(c->node[i].fsm, i + 1, heights, hashes, COSIGN_CAP);
    for (size_t j = 0; j < k; j++) {
      block_cosign(hashes[j], c->node[i].sk, sig);
      cs[n] = cmd_cosign(&cm[n], NULL, heights[j], i + 1, sig);
      n++;
    }
  }
  if (n > 0) {
    struct submit *s = calloc(1, sizeof *s);
    s->kind = S_COSIGN;
    submit(c, l, s, cs, n);
  }
  free(cm);
}

static bool setup_done(struct rcluster *c)
{
  for (unsigned i = 0; i < c->n; i++)
    for (unsigned j = 0; j <= c->n; j++)
      if (outcome_code(c->node[i].fsm, c->setup_rid[j]) != 0)
        return false;
  return true;
}

/* Each node joins with its own key; bucket "scans". */
static void rcluster_setup(struct rcluster *c)
{
  for (int attempt = 0; attempt < 30 && !setup_done(c); attempt++) {
    int l = step_until_leader(c, 10000);
    if (l >= 0) {
      struct cmd *cm = malloc((MAXN + 1) * sizeof *cm);
      Medshard__Command *cs[MAXN + 1];
      for (unsigned i = 0; i < c->n; i++)
        cs[i] = cmd_join(&cm[i], c->setup_rid[i], i + 1, c->node[i].pk, true);
      cs[c->n] = cmd_bucket(&cm[c->n], c->setup_rid[c->n], "scans", K, M);
      struct submit *s = calloc(1, sizeof *s);
      s->kind = S_SETUP;
      submit(c, l, s, cs, c->n + 1);
      free(cm);
    }
    raft_fixture_step_until_elapsed(&c->f, 1000);
  }
  CU_ASSERT_FATAL(setup_done(c));
}

static void heal(struct rcluster *c)
{
  for (unsigned i = 0; i < c->n; i++) {
    if (!raft_fixture_alive(&c->f, i))
      raft_fixture_revive(&c->f, i);
    raft_fixture_io_fault(&c->f, i, -1, 0);
    for (unsigned j = 0; j < c->n; j++)
      if (i != j)
        raft_fixture_reconnect(&c->f, i, j);
  }
}

/* A follower misses more entries than the leader keeps after a snapshot,
 * so it must catch up by InstallSnapshot (chain_fsm_restore). */
static void force_install_snapshot(struct rcluster *c)
{
  heal(c);
  int l = step_until_leader(c, 10000);
  CU_ASSERT_FATAL(l >= 0);
  unsigned lag = ((unsigned)l + 1) % c->n;
  while (lost(c, lag) && lag != (unsigned)l)
    lag = (lag + 1) % c->n;
  /* Without the lagging server a majority must remain, or nothing commits
   * and nothing needs a snapshot. */
  if (lag == (unsigned)l || c->n - n_lost(c) - 1 <= c->n / 2)
    return;
  unsigned before = c->node[lag].restores, snaps = 0;
  for (unsigned i = 0; i < c->n; i++)
    snaps += c->node[i].snapshots;
  raft_fixture_kill(&c->f, lag);
  /* Until the others have each taken two snapshots since the kill (the
   * second drops every entry the lagging server lacks, since trailing <
   * threshold), however often leadership moves; bounded. */
  for (int i = 0; i < 800; i++) {
    unsigned now = 0;
    for (unsigned j = 0; j < c->n; j++)
      now += c->node[j].snapshots;
    if (i >= 80 && now >= snaps + 2 * (c->n - 1))
      break;
    if ((l = leader_of(c)) >= 0)
      submit_puts(c, l, true);
    raft_fixture_step_until_elapsed(&c->f, 30);
  }
  raft_fixture_revive(&c->f, lag);
  /* libraft may take a while to retry an InstallSnapshot it lost. */
  for (int i = 0; i < 60 && c->node[lag].restores == before && !lost(c, lag); i++)
    raft_fixture_step_until_elapsed(&c->f, 500);
  CU_ASSERT(c->node[lag].restores > before || lost(c, lag));
}

/* Several hundred seeded random steps of client load and faults. */
static void chaos(struct rcluster *c, unsigned steps)
{
  unsigned max_dead = (c->n - 1) / 2;
  for (unsigned step = 0; step < steps; step++) {
    if (step % (steps / 3) == steps / 6)
      force_install_snapshot(c);
    int l = leader_of(c);
    unsigned dead = 0, dice = (unsigned)test_rng_below(&c->rng, 100);
    unsigned a = (unsigned)test_rng_below(&c->rng, c->n), b = (unsigned)test_rng_below(&c->rng, c->n);
    for (unsigned i = 0; i < c->n; i++)
      dead += !raft_fixture_alive(&c->f, i) || lost(c, i);
    /* Mostly the leader; sometimes a follower. */
    unsigned victim = l >= 0 && test_rng_below(&c->rng, 4) != 0 ? (unsigned)l : a;
    if (dice < 45) {
      if (l >= 0)
        submit_puts(c, l, true);
    } else if (dice < 55) {
      if (l >= 0)
        submit_cut(c, l);
    } else if (dice < 65) {
      if (l >= 0)
        submit_cosigns(c, l);
    } else if (dice < 69) {
      if (dead < max_dead && raft_fixture_alive(&c->f, victim)) {
        raft_fixture_kill(&c->f, victim);
        c->kills++;
      }
    } else if (dice < 76) {
      if (!raft_fixture_alive(&c->f, a))
        raft_fixture_revive(&c->f, a);
    } else if (dice < 80) {
      if (a != b) {
        raft_fixture_disconnect(&c->f, a, b);
        raft_fixture_disconnect(&c->f, b, a);
      }
    } else if (dice < 88) {
      if (a != b) {
        raft_fixture_reconnect(&c->f, a, b);
        raft_fixture_reconnect(&c->f, b, a);
      }
    }
    raft_fixture_step_until_elapsed(&c->f, 10 + (unsigned)test_rng_below(&c->rng, 150));
  }
}

static bool converged(struct rcluster *c, bool report)
{
  struct chain_head h0, h;
  const char *why = NULL;
  chain_fsm_head(c->node[reference(c)].fsm, &h0);
  if (n_lost(c) > (c->n - 1) / 2)
    why = "libraft shut down a majority of the servers";
  if (why == NULL && c->inflight > 0)
    why = "submissions in flight";
  for (size_t i = 0; why == NULL && i < c->nputs; i++)
    if (c->puts[i].state != P_ACKED)
      why = "unacknowledged puts";
  if (why == NULL && (h0.leaves != h0.last_size || h0.sealed != h0.height))
    why = "leaves not cut or blocks not sealed";
  for (unsigned i = 0; why == NULL && i < c->n; i++) {
    if (lost(c, i))
      continue;
    chain_fsm_head(c->node[i].fsm, &h);
    if (!same_head(&h, &h0))
      why = "heads differ";
    else if (raft_last_applied(raft_fixture_get(&c->f, i)) != h.applied)
      why = "raft's last applied index differs from the FSM's";
  }
  if (why != NULL && report) {
    printf("\n  not converged: %s (inflight %u)\n", why, c->inflight);
    for (unsigned i = 0; i < c->n; i++) {
      struct raft *r = raft_fixture_get(&c->f, i);
      chain_fsm_head(c->node[i].fsm, &h);
      printf("  node %u: state %d term %" PRIu64 " commit %" PRIu64 " raft applied %" PRIu64
             " | fsm applied %" PRIu64 " leaves %" PRIu64 "/%" PRIu64 " height %" PRIu64
             " sealed %" PRIu64 " alarm \"%s\"\n", i, raft_state(r), (uint64_t)r->current_term,
             (uint64_t)r->commit_index, (uint64_t)raft_last_applied(r), h.applied, h.last_size,
             h.leaves, h.height, h.sealed, h.alarm);
    }
  }
  return why == NULL;
}

/* Heals everything, then retries, cuts and cosigns until every node holds
 * the same fully cut and sealed chain. */
static void settle(struct rcluster *c)
{
  heal(c);
  for (int round = 0; round < 200 && !converged(c, false); round++) {
    int l = step_until_leader(c, 5000);
    if (l >= 0) {
      submit_puts(c, l, false);
      submit_cut(c, l);
    }
    raft_fixture_step_until_elapsed(&c->f, 200);
    if ((l = leader_of(c)) >= 0)
      submit_cosigns(c, l);
    raft_fixture_step_until_elapsed(&c->f, 200);
  }
}

static void check_final(struct rcluster *c)
{
  CU_ASSERT_FATAL(converged(c, true));
  struct chain_head h0, h;
  uint8_t d0[32], d[32];
  unsigned ref = reference(c);
  chain_fsm_head(c->node[ref].fsm, &h0);
  digest_of(c->node[ref].fsm, d0);
  CU_ASSERT_EQUAL(h0.alarm[0], '\0');
  unsigned mismatched = 0, applies = 0, snapshots = 0, restores = 0, dups = 0;
  /* Every put has its outcome, but for one that libraft acknowledged from a
   * leader it later shut down (it committed an entry a majority did not
   * hold; see lost()): the only way an acknowledged put may be missing. */
  size_t committed = 0, lost_acks = 0, bad = 0;
  for (size_t p = 0; p < c->nputs; p++) {
    uint8_t rid[16];
    put_rid(c->puts[p].seed, rid);
    int code = outcome_code(c->node[ref].fsm, rid);
    if (code == 0)
      committed++;
    else if (code == NO_OUTCOME && c->puts[p].acked_by >= 0 &&
             lost(c, (unsigned)c->puts[p].acked_by))
      lost_acks++;
    else
      bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
  for (unsigned i = 0; i < c->n; i++) {
    struct rnode *nd = &c->node[i];
    struct chain_verify_report rep;
    /* Even a lost server's chain file must hold together. */
    CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(nd->fsm), &rep), 0);
    mismatched += nd->index_mismatch;
    /* libraft turns a server unavailable when an FSM callback fails too:
     * none did, so a lost server was libraft's own doing. */
    CU_ASSERT_EQUAL(nd->failures, 0);
    if (lost(c, i))
      continue;
    chain_fsm_head(nd->fsm, &h);
    CU_ASSERT(same_head(&h, &h0));
    digest_of(nd->fsm, d);
    CU_ASSERT_EQUAL(memcmp(d, d0, 32), 0);
    CU_ASSERT_EQUAL(rep.leaves, h.leaves);
    CU_ASSERT_EQUAL(rep.blocks, h.height);
    /* Every put applied exactly once: one PUT leaf per request id (and the
     * same outcomes everywhere: the digests cover them). */
    struct scan s;
    scan_chain(nd->fsm, &s);
    CU_ASSERT_EQUAL(s.kind[ANCHOR_PUT], committed);
    CU_ASSERT_EQUAL(s.leaves, h.leaves);
    applies += nd->applies;
    snapshots += nd->snapshots;
    restores += nd->restores;
    dups += nd->dup_puts;
  }
  CU_ASSERT_EQUAL(mismatched, 0);
  CU_ASSERT(applies > 0);
  CU_ASSERT(snapshots > 0);
  CU_ASSERT(restores > 0);
  /* Each acknowledged CutBlock that made a block recorded the index raft
   * gave its entry. */
  unsigned cut_blocks = 0;
  for (size_t i = 0; i < c->ncuts; i++) {
    Medshard__Outcome *o = outcome_of(c->node[ref].fsm, c->cuts[i].rid);
    if (o == NULL && lost(c, c->cuts[i].leader))
      continue; /* acknowledged by a leader libraft shut down, as above */
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT(o->code == 0 || o->code == MSD_ESTALE);
    if (o->code == 0) {
      Medshard__BlockRecord *r = block_of(c->node[ref].fsm, o->height);
      struct block_header bh;
      CU_ASSERT_FATAL(r != NULL && block_decode(r->header.data, r->header.len, &bh) == 0);
      CU_ASSERT_EQUAL(bh.raft_index, c->cuts[i].index);
      medshard__block_record__free_unpacked(r, NULL);
      cut_blocks++;
    }
    medshard__outcome__free_unpacked(o, NULL);
  }
  CU_ASSERT(cut_blocks > 0);
  printf("\n  %u voters: %zu puts (%u retried, %u re-applied as no-ops), %" PRIu64 " leaves, %"
         PRIu64 " blocks (%u checked cuts), %u submissions (%u refused, %u failed), %u kills, %u"
         " io faults, %u snapshots, %u restores, applied %" PRIu64 "; libraft shut down %u"
         " server(s), losing %zu acknowledged put(s)\n", c->n, c->nputs, c->retries, dups,
         h0.leaves, h0.height, cut_blocks, c->submits, c->refused, c->failed_cbs, c->kills,
         c->faults, snapshots, restores, h0.applied, n_lost(c), lost_acks);
}

static void raft_run(unsigned n, unsigned steps, uint64_t salt)
{
  struct rcluster *c = malloc(sizeof *c);
  rcluster_start(c, n, salt);
  rcluster_setup(c);
  chaos(c, steps);
  settle(c);
  check_final(c);
  rcluster_stop(c);
  free(c);
}

static void test_raft_three_voters(void)
{
  raft_run(3, 8000, 31);
}

static void test_raft_five_voters(void)
{
  raft_run(5, 5000, 32);
}

const struct test_case fsm_raft_tests[] = {
    {"binding: indexes, snapshot, restart replay", test_raftfsm_replay},
    {"3 voters: faults, snapshots, retries", test_raft_three_voters},
    {"5 voters: faults, snapshots, retries", test_raft_five_voters},
    {NULL, NULL}};
