/* CUnit runner for the chain FSM (chain-anchor/fsm.h), the offline proof
 * verifier (proof.h) and the libraft binding (raftfsm.h): first hand-built
 * command batches applied at increasing Raft indexes, then seeded random
 * runs of a raft_fixture cluster (leader kills, partitions, disk faults,
 * snapshots, client retries) that must end with identical state everywhere. */
#include <fcntl.h>
#include <inttypes.h>
#include <raft.h>
#include <raft/fixture.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"
#include "chain-anchor/chainfile.h"
#include "chain-anchor/fsm.h"
#include "chain-anchor/merkle.h"
#include "chain-anchor/proof.h"
#include "chain-anchor/raftfsm.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/medshard.pb-c.h"
#include "testutil.h"

#define K 2
#define M 1
#define NSHARDS (K + M)
#define NO_OUTCOME 1 /* outcome_code(): no outcome recorded */

static const uint8_t secret[] = "medshard test cluster secret";

/* ---- command builders: one struct holds a command and everything it
 * points at (so it must not be copied once built) ---- */

struct cmd {
  Medshard__Command c;
  uint8_t rid[16];
  Medshard__ErasurePolicy pol;
  Medshard__Bucket bucket;
  Medshard__CreateBucket cb;
  Medshard__ShardLocation loc[NSHARDS], *locp[NSHARDS];
  Medshard__ShardMap sm;
  Medshard__Manifest man;
  Medshard__PutObject put;
  uint8_t oid[16], sha[32], salt[32], dig[NSHARDS][16];
  char bname[64], key[1100];
  Medshard__DeleteObject del;
  Medshard__UpdateShards upd;
  Medshard__NodeInfo ni;
  Medshard__NodeJoin join;
  uint8_t pk[BLOCK_PUBKEY_BYTES];
  Medshard__CutBlock cut;
  uint8_t prev[BLOCK_HASH], root[MERKLE_HASH];
  Medshard__Cosign cos;
  uint8_t sig[BLOCK_SIG_BYTES];
};

static void cmd_init(struct cmd *c, const uint8_t *rid)
{
  memset(c, 0, sizeof *c);
  medshard__command__init(&c->c);
  if (rid != NULL) {
    memcpy(c->rid, rid, 16);
    c->c.request_id = (ProtobufCBinaryData){16, c->rid};
  }
}

static Medshard__Command *cmd_bucket(struct cmd *c, const uint8_t *rid, const char *name,
                                     uint32_t k, uint32_t m)
{
  cmd_init(c, rid);
  medshard__erasure_policy__init(&c->pol);
  c->pol = (Medshard__ErasurePolicy){c->pol.base, 1, k, m, 4096};
  medshard__bucket__init(&c->bucket);
  snprintf(c->bname, sizeof c->bname, "%s", name);
  c->bucket.format_version = 1;
  c->bucket.name = c->bname;
  c->bucket.owner = (char *)"radiology";
  c->bucket.policy = &c->pol;
  medshard__create_bucket__init(&c->cb);
  c->cb.bucket = &c->bucket;
  c->c.body_case = MEDSHARD__COMMAND__BODY_CREATE_BUCKET;
  c->c.create_bucket = &c->cb;
  return &c->c;
}

/* A valid 2+1 PutObject with random id, content hash, salt and digests. */
static Medshard__Command *cmd_put(struct cmd *c, const uint8_t *rid, struct test_rng *r,
                                  const char *bucket, const char *key, const uint32_t nodes[NSHARDS])
{
  cmd_init(c, rid);
  test_rng_fill(r, c->oid, sizeof c->oid);
  test_rng_fill(r, c->sha, sizeof c->sha);
  test_rng_fill(r, c->salt, sizeof c->salt);
  test_rng_fill(r, &c->dig[0][0], sizeof c->dig);
  medshard__erasure_policy__init(&c->pol);
  c->pol.format_version = 1;
  c->pol.k = K;
  c->pol.m = M;
  c->pol.unit = 4096;
  for (unsigned i = 0; i < NSHARDS; i++) {
    medshard__shard_location__init(&c->loc[i]);
    c->loc[i].index = i;
    c->loc[i].node_id = nodes[i];
    c->loc[i].digest = (ProtobufCBinaryData){16, c->dig[i]};
    c->locp[i] = &c->loc[i];
  }
  medshard__shard_map__init(&c->sm);
  c->sm.format_version = 1;
  c->sm.policy = &c->pol;
  c->sm.size = 10000;
  c->sm.n_shards = NSHARDS;
  c->sm.shards = c->locp;
  snprintf(c->bname, sizeof c->bname, "%s", bucket);
  snprintf(c->key, sizeof c->key, "%s", key);
  medshard__manifest__init(&c->man);
  c->man.format_version = 1;
  c->man.object_id = (ProtobufCBinaryData){16, c->oid};
  c->man.bucket = c->bname;
  c->man.key = c->key;
  c->man.size = 10000;
  c->man.sha256 = (ProtobufCBinaryData){32, c->sha};
  c->man.salt = (ProtobufCBinaryData){32, c->salt};
  c->man.content_type = (char *)"application/dicom";
  c->man.shard_map = &c->sm;
  medshard__put_object__init(&c->put);
  c->put.manifest = &c->man;
  c->c.body_case = MEDSHARD__COMMAND__BODY_PUT_OBJECT;
  c->c.put_object = &c->put;
  return &c->c;
}

static Medshard__Command *cmd_delete(struct cmd *c, const uint8_t *rid, const char *bucket,
                                     const char *key)
{
  cmd_init(c, rid);
  snprintf(c->bname, sizeof c->bname, "%s", bucket);
  snprintf(c->key, sizeof c->key, "%s", key);
  medshard__delete_object__init(&c->del);
  c->del.bucket = c->bname;
  c->del.key = c->key;
  c->c.body_case = MEDSHARD__COMMAND__BODY_DELETE_OBJECT;
  c->c.delete_object = &c->del;
  return &c->c;
}

/* Moves shard `index` of object `oid` to `node`, claiming digest `dig`. */
static Medshard__Command *cmd_move(struct cmd *c, const uint8_t *rid, const uint8_t oid[16],
                                   uint32_t index, uint32_t node, const uint8_t dig[16])
{
  cmd_init(c, rid);
  memcpy(c->oid, oid, 16);
  memcpy(c->dig[0], dig, 16);
  medshard__shard_location__init(&c->loc[0]);
  c->loc[0].index = index;
  c->loc[0].node_id = node;
  c->loc[0].digest = (ProtobufCBinaryData){16, c->dig[0]};
  c->locp[0] = &c->loc[0];
  medshard__update_shards__init(&c->upd);
  c->upd.object_id = (ProtobufCBinaryData){16, c->oid};
  c->upd.n_shards = 1;
  c->upd.shards = c->locp;
  c->c.body_case = MEDSHARD__COMMAND__BODY_UPDATE_SHARDS;
  c->c.update_shards = &c->upd;
  return &c->c;
}

static Medshard__Command *cmd_join(struct cmd *c, const uint8_t *rid, uint32_t id,
                                   const uint8_t pk[BLOCK_PUBKEY_BYTES], bool voter)
{
  cmd_init(c, rid);
  memcpy(c->pk, pk, sizeof c->pk);
  medshard__node_info__init(&c->ni);
  c->ni.format_version = 1;
  c->ni.node_id = id;
  c->ni.public_key = (ProtobufCBinaryData){BLOCK_PUBKEY_BYTES, c->pk};
  c->ni.raft_address = (char *)"127.0.0.1:7000";
  c->ni.zone = (char *)"a";
  c->ni.weight = 1;
  c->ni.role = voter ? MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER : MEDSHARD__NODE_ROLE__NODE_ROLE_STANDBY;
  medshard__node_join__init(&c->join);
  c->join.node = &c->ni;
  c->c.body_case = MEDSHARD__COMMAND__BODY_NODE_JOIN;
  c->c.node_join = &c->join;
  return &c->c;
}

static Medshard__Command *cmd_cut(struct cmd *c, const uint8_t *rid, const struct block_header *h,
                                  uint64_t term, uint64_t now)
{
  cmd_init(c, rid);
  memcpy(c->prev, h->prev_hash, BLOCK_HASH);
  memcpy(c->root, h->root, MERKLE_HASH);
  medshard__cut_block__init(&c->cut);
  c->cut.height = h->height;
  c->cut.prev_hash = (ProtobufCBinaryData){BLOCK_HASH, c->prev};
  c->cut.size_before = h->size_before;
  c->cut.size_after = h->size_after;
  c->cut.root = (ProtobufCBinaryData){MERKLE_HASH, c->root};
  c->cut.raft_term = term;
  c->cut.timestamp_ms = now;
  c->cut.epoch = h->epoch;
  c->c.body_case = MEDSHARD__COMMAND__BODY_CUT_BLOCK;
  c->c.cut_block = &c->cut;
  return &c->c;
}

static Medshard__Command *cmd_cosign(struct cmd *c, const uint8_t *rid, uint64_t height,
                                     uint32_t node, const uint8_t sig[BLOCK_SIG_BYTES])
{
  cmd_init(c, rid);
  memcpy(c->sig, sig, sizeof c->sig);
  medshard__cosign__init(&c->cos);
  c->cos.height = height;
  c->cos.node_id = node;
  c->cos.signature = (ProtobufCBinaryData){BLOCK_SIG_BYTES, c->sig};
  c->c.body_case = MEDSHARD__COMMAND__BODY_COSIGN;
  c->c.cosign = &c->cos;
  return &c->c;
}

/* An encoded CommandBatch in malloc (raft == false) or raft_malloc memory. */
static uint8_t *pack_batch(Medshard__Command **cs, size_t n, uint64_t ts, size_t *len, bool raft)
{
  Medshard__CommandBatch b = MEDSHARD__COMMAND_BATCH__INIT;
  b.format_version = 1;
  b.timestamp_ms = ts;
  b.n_commands = n;
  b.commands = cs;
  *len = medshard__command_batch__get_packed_size(&b);
  uint8_t *buf = raft ? raft_malloc(*len + 1) : malloc(*len + 1);
  if (buf != NULL)
    medshard__command_batch__pack(&b, buf);
  return buf;
}

/* ---- reading the state back ---- */

static Medshard__Outcome *outcome_of(struct chain_fsm *f, const uint8_t rid[16])
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_outcome(f, rid, 16, &buf, &len) != 0)
    return NULL;
  Medshard__Outcome *o = medshard__outcome__unpack(NULL, len, buf);
  msd_free(buf);
  return o;
}

static int outcome_code(struct chain_fsm *f, const uint8_t rid[16])
{
  Medshard__Outcome *o = outcome_of(f, rid);
  int code = o == NULL ? NO_OUTCOME : o->code;
  medshard__outcome__free_unpacked(o, NULL);
  return code;
}

static Medshard__Manifest *manifest_of(struct chain_fsm *f, const char *bucket, const char *key)
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_manifest(f, bucket, key, &buf, &len) != 0)
    return NULL;
  Medshard__Manifest *m = medshard__manifest__unpack(NULL, len, buf);
  msd_free(buf);
  return m;
}

static Medshard__Manifest *manifest_by_id(struct chain_fsm *f, const uint8_t id[16])
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_manifest_by_id(f, id, &buf, &len) != 0)
    return NULL;
  Medshard__Manifest *m = medshard__manifest__unpack(NULL, len, buf);
  msd_free(buf);
  return m;
}

static Medshard__BlockRecord *block_of(struct chain_fsm *f, uint64_t height)
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_block(f, height, &buf, &len) != 0)
    return NULL;
  Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, len, buf);
  msd_free(buf);
  return r;
}

/* What the chain file holds, walked record by record. */
struct scan {
  uint64_t leaves, blocks, kind[4], bad;
  struct anchor_leaf last;
};

static int scan_record(void *ctx, uint8_t kind, const uint8_t *p, size_t len, uint64_t off)
{
  (void)off;
  struct scan *s = ctx;
  if (kind == CHAIN_REC_BLOCK) {
    s->blocks++;
  } else if (anchor_decode(p, len, &s->last) == 0 && s->last.kind >= 1 && s->last.kind <= 3) {
    s->leaves++;
    s->kind[s->last.kind]++;
  } else {
    s->bad++;
  }
  return 0;
}

static void scan_chain(struct chain_fsm *f, struct scan *s)
{
  memset(s, 0, sizeof *s);
  CU_ASSERT_EQUAL(chain_file_scan(chain_fsm_chain_path(f), scan_record, s, NULL), 0);
  CU_ASSERT_EQUAL(s->bad, 0);
}

static void digest_of(struct chain_fsm *f, uint8_t out[32])
{
  memset(out, 0, 32);
  CU_ASSERT_EQUAL(chain_fsm_digest(f, out), 0);
}

static bool same_head(const struct chain_head *a, const struct chain_head *b)
{
  return a->applied == b->applied && a->leaves == b->leaves && a->height == b->height &&
         a->last_size == b->last_size && a->sealed == b->sealed && a->epoch == b->epoch &&
         a->voters == b->voters && memcmp(a->head, b->head, BLOCK_HASH) == 0 &&
         memcmp(a->root, b->root, MERKLE_HASH) == 0 && strcmp(a->alarm, b->alarm) == 0;
}

static int fsm_open_dir(const char *dir, struct chain_fsm **f)
{
  struct chain_fsm_config cfg = {.dir = dir, .secret = secret, .secret_len = sizeof secret - 1,
                                 .map_bytes = 64u << 20};
  return chain_fsm_open(&cfg, f);
}

/* ---- suite (a): one FSM driven directly ---- */

struct env {
  char dir[4096];
  struct chain_fsm *f;
  uint64_t index, now;
  uint8_t pk[3][BLOCK_PUBKEY_BYTES], sk[3][BLOCK_SECKEY_BYTES];
  uint32_t nodes[NSHARDS];
  struct test_rng rng;
};

static int env_apply(struct env *e, Medshard__Command **cs, size_t n)
{
  size_t len;
  uint8_t *buf = pack_batch(cs, n, e->now += 7, &len, false);
  int rc = chain_fsm_apply(e->f, ++e->index, buf, len);
  free(buf);
  return rc;
}

static void env_apply1(struct env *e, Medshard__Command *c)
{
  CU_ASSERT_EQUAL_FATAL(env_apply(e, &c, 1), 0);
}

static void new_rid(struct env *e, uint8_t rid[16])
{
  test_rng_fill(&e->rng, rid, 16);
}

/* A fresh FSM; with `cluster`, three voters joined and bucket "scans"
 * (2+1) created. */
static void env_setup(struct env *e, uint64_t salt, bool cluster)
{
  memset(e, 0, sizeof *e);
  snprintf(e->dir, sizeof e->dir, "%s", test_tmpdir());
  e->rng = test_rng_for(salt);
  e->now = 1700000000000ull;
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e->dir, &e->f), 0);
  for (unsigned i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL_FATAL(block_keypair(e->pk[i], e->sk[i]), 0);
    e->nodes[i] = i + 1;
  }
  if (!cluster)
    return;
  struct cmd c[4];
  Medshard__Command *cs[4];
  uint8_t rid[4][16];
  for (unsigned i = 0; i < 4; i++)
    new_rid(e, rid[i]);
  for (unsigned i = 0; i < 3; i++)
    cs[i] = cmd_join(&c[i], rid[i], i + 1, e->pk[i], true);
  cs[3] = cmd_bucket(&c[3], rid[3], "scans", K, M);
  CU_ASSERT_EQUAL_FATAL(env_apply(e, cs, 4), 0);
  for (unsigned i = 0; i < 4; i++)
    CU_ASSERT_EQUAL_FATAL(outcome_code(e->f, rid[i]), 0);
}

static void env_close(struct env *e)
{
  chain_fsm_close(e->f);
  e->f = NULL;
  test_tmpdir_remove(e->dir);
}

/* Puts bucket/key; returns the outcome code and fills oid. */
static int env_put(struct env *e, const char *key, uint8_t oid[16])
{
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16];
  new_rid(e, rid);
  env_apply1(e, cmd_put(c, rid, &e->rng, "scans", key, e->nodes));
  if (oid != NULL)
    memcpy(oid, c->oid, 16);
  free(c);
  return outcome_code(e->f, rid);
}

/* Cuts the next block from the FSM's own view; returns the outcome code. */
static int env_cut(struct env *e)
{
  struct block_header h;
  struct cmd c;
  uint8_t rid[16];
  if (chain_fsm_next_block(e->f, &h) != 0)
    return MSD_ESTATE;
  new_rid(e, rid);
  env_apply1(e, cmd_cut(&c, rid, &h, 3, e->now));
  return outcome_code(e->f, rid);
}

/* Node `who` (0-based) cosigns block `height` with its real key. */
static int env_cosign(struct env *e, unsigned who, uint64_t height)
{
  Medshard__BlockRecord *r = block_of(e->f, height);
  CU_ASSERT_PTR_NOT_NULL_FATAL(r);
  uint8_t sig[BLOCK_SIG_BYTES], rid[16];
  block_cosign(r->hash.data, e->sk[who], sig);
  medshard__block_record__free_unpacked(r, NULL);
  struct cmd c;
  new_rid(e, rid);
  env_apply1(e, cmd_cosign(&c, rid, height, who + 1, sig));
  return outcome_code(e->f, rid);
}

static void test_bucket_create_and_duplicate(void)
{
  struct env e;
  env_setup(&e, 1, false);
  struct cmd c;
  uint8_t rid[16], *buf;
  size_t len;
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "scans", K, M));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_bucket(e.f, "scans", &buf, &len), 0);
  Medshard__Bucket *b = medshard__bucket__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_EQUAL(b->policy->k, K);
  CU_ASSERT_EQUAL(b->created_ms, e.now); /* the batch's leader time */
  medshard__bucket__free_unpacked(b, NULL);

  /* A second create (another policy) is refused and changes nothing. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "scans", 4, 2));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_bucket(e.f, "scans", &buf, &len), 0);
  b = medshard__bucket__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_EQUAL(b->policy->k, K);
  CU_ASSERT_EQUAL(b->policy->m, M);
  medshard__bucket__free_unpacked(b, NULL);

  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "Bad_Name", K, M));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "wide", 40, 10));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEC_PARAMS);
  CU_ASSERT_EQUAL(chain_fsm_bucket(e.f, "wide", &buf, &len), MSD_ENOTFOUND);
  env_close(&e);
}

static void test_node_join(void)
{
  struct env e;
  env_setup(&e, 2, false);
  struct cmd c;
  uint8_t rid[16], *buf;
  size_t len;
  struct chain_head h0, h1;
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h0);
  CU_ASSERT_EQUAL(h0.voters, 1);
  CU_ASSERT_EQUAL(h0.epoch, 1);

  /* Same id, another key: refused, the member keeps its key. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[1], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_node(e.f, 1, &buf, &len), 0);
  Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_FATAL(ni != NULL && ni->public_key.len == BLOCK_PUBKEY_BYTES);
  CU_ASSERT_EQUAL(memcmp(ni->public_key.data, e.pk[0], BLOCK_PUBKEY_BYTES), 0);
  CU_ASSERT_EQUAL(ni->status, MEDSHARD__NODE_STATUS__NODE_STATUS_UP);
  medshard__node_info__free_unpacked(ni, NULL);

  /* Same id, same key: a no-op that succeeds (a retried join). */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.epoch, h0.epoch);
  CU_ASSERT_EQUAL(h1.voters, 1);

  /* Another id with a member's key would let one key count twice. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 7, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL(chain_fsm_node(e.f, 7, &buf, &len), MSD_ENOTFOUND);

  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 0, e.pk[2], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 2, e.pk[1], false));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.voters, 1); /* a standby is no voter */
  CU_ASSERT_EQUAL(h1.epoch, 2);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_nodes(e.f, &buf, &len), 0);
  CU_ASSERT(len > 8);
  uint32_t first = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  CU_ASSERT(first + 4 < len);
  msd_free(buf);
  env_close(&e);
}

static void test_put_versions_and_retry(void)
{
  struct env e;
  env_setup(&e, 3, true);
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16], oid1[16];
  struct chain_head h;

  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "nosuch", "a", e.nodes));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 0);

  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "ct/1.dcm", e.nodes));
  memcpy(oid1, c->oid, 16);
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->version, 1);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 0);
  CU_ASSERT_EQUAL(o->anchor->leaf_hash.len, MERKLE_HASH);
  Medshard__Manifest *m = manifest_of(e.f, "scans", "ct/1.dcm");
  CU_ASSERT_FATAL(m != NULL && m->anchor != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  CU_ASSERT_EQUAL(m->created_ms, e.now);
  CU_ASSERT_EQUAL(memcmp(m->anchor->leaf_hash.data, o->anchor->leaf_hash.data, MERKLE_HASH), 0);
  medshard__manifest__free_unpacked(m, NULL);
  m = manifest_by_id(e.f, oid1);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  CU_ASSERT_STRING_EQUAL(m->key, "ct/1.dcm");
  medshard__manifest__free_unpacked(m, NULL);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);

  /* The outcome's leaf hash is the hash of the leaf in the chain file. */
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_PUT], 1);
  CU_ASSERT_EQUAL(memcmp(s.last.object_id, oid1, 16), 0);
  CU_ASSERT_EQUAL(s.last.version, 1);
  CU_ASSERT_EQUAL(s.last.nshards, NSHARDS);

  /* A retry in a later entry (same request id, even with another body) is a
   * no-op that keeps the first outcome. */
  uint8_t first_rid[16];
  memcpy(first_rid, rid, 16);
  env_apply1(&e, cmd_put(c, first_rid, &e.rng, "scans", "ct/1.dcm", e.nodes));
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);
  Medshard__Outcome *o2 = outcome_of(e.f, first_rid);
  CU_ASSERT_FATAL(o2 != NULL && o2->anchor != NULL);
  CU_ASSERT_EQUAL(o2->anchor->leaf_index, o->anchor->leaf_index);
  CU_ASSERT_EQUAL(o2->version, 1);
  medshard__outcome__free_unpacked(o2, NULL);
  medshard__outcome__free_unpacked(o, NULL);

  /* The same id twice in one batch applies once too. */
  struct cmd *c2 = malloc(sizeof *c2);
  Medshard__Command *pair[2];
  new_rid(&e, rid);
  pair[0] = cmd_put(c, rid, &e.rng, "scans", "ct/2.dcm", e.nodes);
  pair[1] = cmd_put(c2, rid, &e.rng, "scans", "ct/2.dcm", e.nodes);
  CU_ASSERT_EQUAL(env_apply(&e, pair, 2), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);

  /* A second put of a key is version 2; the first version stays readable
   * by id. */
  uint8_t oid2[16];
  CU_ASSERT_EQUAL(env_put(&e, "ct/1.dcm", oid2), 0);
  m = manifest_of(e.f, "scans", "ct/1.dcm");
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 2);
  CU_ASSERT_EQUAL(memcmp(m->object_id.data, oid2, 16), 0);
  medshard__manifest__free_unpacked(m, NULL);
  m = manifest_by_id(e.f, oid1);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  medshard__manifest__free_unpacked(m, NULL);

  /* Reusing an object id is refused. */
  new_rid(&e, rid);
  cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", e.nodes);
  memcpy(c->oid, oid1, 16);
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  /* A shard on a node outside the cluster map, a wrong shard count. */
  uint32_t stranger[NSHARDS] = {1, 2, 9};
  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", stranger));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", e.nodes);
  c->sm.n_shards = 2;
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 3);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  free(c2);
  free(c);
  env_close(&e);
}

/* S3 keys reach 1024 bytes but LMDB keys stop at 511: long names must
 * neither poison the FSM nor collide. */
static void test_long_keys(void)
{
  struct env e;
  env_setup(&e, 4, true);
  static const size_t lens[] = {1, 400, 503, 504, 505, 506, 600, 1000, 1024};
  enum { NLENS = sizeof lens / sizeof lens[0] };
  char key[2][1025];
  uint8_t oid[2 * NLENS][16];
  for (size_t i = 0; i < NLENS; i++) {
    for (int v = 0; v < 2; v++) {
      /* Two keys per length that differ only in their last byte. */
      memset(key[v], 'k', lens[i]);
      key[v][lens[i]] = '\0';
      key[v][lens[i] - 1] = (char)('0' + v);
      CU_ASSERT_EQUAL(env_put(&e, key[v], oid[2 * i + (size_t)v]), 0);
    }
  }
  for (size_t i = 0; i < NLENS; i++) {
    for (int v = 0; v < 2; v++) {
      memset(key[v], 'k', lens[i]);
      key[v][lens[i]] = '\0';
      key[v][lens[i] - 1] = (char)('0' + v);
      Medshard__Manifest *m = manifest_of(e.f, "scans", key[v]);
      CU_ASSERT_FATAL(m != NULL);
      CU_ASSERT_EQUAL(m->version, 1);
      CU_ASSERT_EQUAL(memcmp(m->object_id.data, oid[2 * i + (size_t)v], 16), 0);
      CU_ASSERT_STRING_EQUAL(m->key, key[v]);
      medshard__manifest__free_unpacked(m, NULL);
    }
  }
  struct chain_head h;
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2 * NLENS);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  /* Still writable (not poisoned), deletable by its long name. */
  uint8_t rid[16];
  struct cmd c;
  memset(key[0], 'k', 1024);
  key[0][1024] = '\0';
  key[0][1023] = '0';
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", key[0]));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  CU_ASSERT_PTR_NULL(manifest_of(e.f, "scans", key[0]));
  key[0][1023] = '1';
  Medshard__Manifest *m = manifest_of(e.f, "scans", key[0]);
  CU_ASSERT_PTR_NOT_NULL(m);
  medshard__manifest__free_unpacked(m, NULL);
  env_close(&e);
}

static void test_delete(void)
{
  struct env e;
  env_setup(&e, 5, true);
  uint8_t oid[16], rid[16];
  struct cmd c;
  struct chain_head h;
  CU_ASSERT_EQUAL(env_put(&e, "mr/7", oid), 0);
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "mr/7"));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 1);
  medshard__outcome__free_unpacked(o, NULL);
  uint8_t *buf;
  size_t len;
  CU_ASSERT_EQUAL(chain_fsm_manifest(e.f, "scans", "mr/7", &buf, &len), MSD_ENOTFOUND);
  Medshard__Manifest *m = manifest_by_id(e.f, oid);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT(m->deleted);
  medshard__manifest__free_unpacked(m, NULL);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_DELETE], 1);
  CU_ASSERT_EQUAL(s.last.kind, ANCHOR_DELETE);
  CU_ASSERT_EQUAL(memcmp(s.last.object_id, oid, 16), 0);
  CU_ASSERT_EQUAL(s.last.nshards, 0);

  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "mr/7"));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "never"));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);
  /* The tombstone keeps the version counter. */
  CU_ASSERT_EQUAL(env_put(&e, "mr/7", NULL), 0);
  m = manifest_of(e.f, "scans", "mr/7");
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 2);
  CU_ASSERT(!m->deleted);
  medshard__manifest__free_unpacked(m, NULL);
  env_close(&e);
}

static void test_update_shards(void)
{
  struct env e;
  env_setup(&e, 6, true);
  uint8_t oid[16], rid[16], bad[16] = {0};
  struct cmd *c = malloc(sizeof *c);
  struct chain_head h;
  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "us/1", e.nodes));
  memcpy(oid, c->oid, 16);
  uint8_t dig1[16];
  memcpy(dig1, c->dig[1], 16);

  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 3, bad));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 9, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 5, 3, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, bad, 1, 3, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  cmd_move(c, rid, oid, 1, 3, dig1);
  c->upd.n_shards = 0;
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);

  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 3, dig1));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 1);
  Medshard__Manifest *m = manifest_by_id(e.f, oid);
  CU_ASSERT_FATAL(m != NULL && m->anchor != NULL);
  CU_ASSERT_EQUAL(m->shard_map->shards[1]->node_id, 3);
  CU_ASSERT_EQUAL(m->shard_map->shards[0]->node_id, 1);
  CU_ASSERT_EQUAL(m->anchor->leaf_index, 1); /* the manifest points at the MOVE leaf */
  CU_ASSERT_EQUAL(memcmp(m->anchor->leaf_hash.data, o->anchor->leaf_hash.data, MERKLE_HASH), 0);
  medshard__manifest__free_unpacked(m, NULL);
  medshard__outcome__free_unpacked(o, NULL);
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_MOVE], 1);
  CU_ASSERT_EQUAL(s.last.kind, ANCHOR_MOVE);
  CU_ASSERT_EQUAL(s.last.shard[1].node_id, 3);
  CU_ASSERT_EQUAL(memcmp(s.last.shard[1].digest, dig1, 16), 0);
  /* Moves of a deleted object are refused. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(c, rid, "scans", "us/1"));
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 2, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  free(c);
  env_close(&e);
}

/* Blocks, cosignatures, seals and what each node still has to sign. */
static void test_blocks_and_cosign(void)
{
  struct env e;
  env_setup(&e, 7, true);
  struct chain_head h;
  struct block_header bh;
  uint64_t heights[8];
  uint8_t hashes[8][BLOCK_HASH];
  CU_ASSERT_EQUAL(chain_fsm_next_block(e.f, &bh), MSD_ESTATE);
  CU_ASSERT_EQUAL(env_put(&e, "b/1", NULL), 0);
  CU_ASSERT_EQUAL(env_put(&e, "b/2", NULL), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_next_block(e.f, &bh), 0);
  CU_ASSERT_EQUAL(bh.height, 1);
  CU_ASSERT_EQUAL(bh.size_before, 0);
  CU_ASSERT_EQUAL(bh.size_after, 2);

  struct cmd c;
  uint8_t rid[16];
  new_rid(&e, rid);
  env_apply1(&e, cmd_cut(&c, rid, &bh, 3, 4242));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL);
  CU_ASSERT_EQUAL(o->code, 0);
  CU_ASSERT_EQUAL(o->height, 1);
  medshard__outcome__free_unpacked(o, NULL);
  uint64_t cut_index = e.index;
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.height, 1);
  CU_ASSERT_EQUAL(h.last_size, 2);
  CU_ASSERT_EQUAL(h.sealed, 0);
  CU_ASSERT_EQUAL(chain_fsm_next_block(e.f, &bh), MSD_ESTATE);
  Medshard__BlockRecord *r = block_of(e.f, 1);
  CU_ASSERT_FATAL(r != NULL);
  struct block_header got;
  CU_ASSERT_EQUAL_FATAL(block_decode(r->header.data, r->header.len, &got), 0);
  CU_ASSERT_EQUAL(got.raft_index, cut_index);
  CU_ASSERT_EQUAL(got.raft_term, 3);
  CU_ASSERT_EQUAL(got.timestamp_ms, 4242);
  CU_ASSERT_EQUAL(r->voters, 3);
  uint8_t hash[BLOCK_HASH];
  block_hash(&got, hash);
  CU_ASSERT_EQUAL(memcmp(hash, r->hash.data, BLOCK_HASH), 0);
  CU_ASSERT_EQUAL(memcmp(hash, h.head, BLOCK_HASH), 0);
  medshard__block_record__free_unpacked(r, NULL);

  /* A second CutBlock for height 1 is stale, not divergence. */
  struct block_header old = got;
  new_rid(&e, rid);
  env_apply1(&e, cmd_cut(&c, rid, &old, 3, 4243));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ESTALE);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  CU_ASSERT_EQUAL(h.height, 1);

  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 1);
  CU_ASSERT_EQUAL(memcmp(hashes[0], hash, BLOCK_HASH), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 1), 0);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 1, heights, hashes, 8), 0);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 1), MSD_EEXIST);
  /* Forged: node 2's id with node 3's key; a stranger; an unknown block. */
  uint8_t sig[BLOCK_SIG_BYTES];
  block_cosign(hash, e.sk[2], sig);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 1, 2, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EBADSIG);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 1, 9, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 5, 3, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 1, 1), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 1);
  r = block_of(e.f, 1);
  CU_ASSERT_FATAL(r != NULL);
  CU_ASSERT(r->sealed);
  CU_ASSERT_EQUAL(r->n_cosigs, 2);
  medshard__block_record__free_unpacked(r, NULL);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 8), 0); /* sealed */

  /* Blocks 2 and 3; 3 sealed before 2: sealed only counts consecutive. */
  CU_ASSERT_EQUAL(env_put(&e, "b/3", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  CU_ASSERT_EQUAL(env_put(&e, "b/4", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 2), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 3), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 1, 3), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.height, 3);
  CU_ASSERT_EQUAL(h.sealed, 1);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 1, heights, hashes, 8), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 2);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 2);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 0), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 2, 2), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 3);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 0);
  struct chain_verify_report rep;
  CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(e.f), &rep), 0);
  CU_ASSERT_EQUAL(rep.blocks, 3);
  CU_ASSERT_EQUAL(rep.leaves, 4);
  CU_ASSERT_EQUAL(memcmp(rep.head, h.head, BLOCK_HASH), 0);
  CU_ASSERT_EQUAL(memcmp(rep.root, h.root, MERKLE_HASH), 0);
  env_close(&e);
}

/* A CutBlock whose root (or previous hash) differs from the node's own
 * raises the alarm, durably; the entry still counts as applied. */
static void test_divergence_alarm(void)
{
  for (int what = 0; what < 2; what++) {
    struct env e;
    env_setup(&e, 8, true);
    CU_ASSERT_EQUAL(env_put(&e, "d/1", NULL), 0);
    struct block_header bh;
    CU_ASSERT_EQUAL_FATAL(chain_fsm_next_block(e.f, &bh), 0);
    if (what == 0)
      bh.root[5] ^= 1;
    else
      bh.prev_hash[0] ^= 1;
    struct cmd c;
    uint8_t rid[16];
    new_rid(&e, rid);
    env_apply1(&e, cmd_cut(&c, rid, &bh, 1, 1));
    CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EDIVERGED);
    struct chain_head h;
    chain_fsm_head(e.f, &h);
    CU_ASSERT_NOT_EQUAL(h.alarm[0], '\0');
    CU_ASSERT_EQUAL(h.height, 0);
    CU_ASSERT_EQUAL(h.applied, e.index);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.alarm, "block 1"));
    chain_fsm_close(e.f);
    CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
    struct chain_head h2;
    chain_fsm_head(e.f, &h2);
    CU_ASSERT_STRING_EQUAL(h2.alarm, h.alarm);
    env_close(&e);
  }
}

/* Replays below the applied index and malformed entries. */
static void test_replay_and_malformed(void)
{
  struct env a, b;
  env_setup(&a, 9, true);
  env_setup(&b, 9, false);
  memcpy(b.pk, a.pk, sizeof a.pk);
  memcpy(b.sk, a.sk, sizeof a.sk);
  /* b gets the same history as a: the same seed gives the same rids. */
  b.rng = test_rng_for(9);
  {
    struct cmd c[4];
    Medshard__Command *cs[4];
    uint8_t rid[4][16];
    for (unsigned i = 0; i < 4; i++)
      new_rid(&b, rid[i]);
    for (unsigned i = 0; i < 3; i++)
      cs[i] = cmd_join(&c[i], rid[i], i + 1, b.pk[i], true);
    cs[3] = cmd_bucket(&c[3], rid[3], "scans", K, M);
    CU_ASSERT_EQUAL_FATAL(env_apply(&b, cs, 4), 0);
  }
  uint8_t da[32], db[32];
  CU_ASSERT_EQUAL(env_put(&a, "r/1", NULL), 0);
  CU_ASSERT_EQUAL(env_put(&b, "r/1", NULL), 0);
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);

  /* Re-applying indexes at or below applied changes nothing. */
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16];
  test_rng_fill(&a.rng, rid, 16);
  Medshard__Command *cp = cmd_put(c, rid, &a.rng, "scans", "r/2", a.nodes);
  size_t len;
  uint8_t *buf = pack_batch(&cp, 1, 5, &len, false);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, a.index, buf, len), 0);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, 1, buf, len), 0);
  free(buf);
  uint8_t d2[32];
  digest_of(a.f, d2);
  CU_ASSERT_EQUAL(memcmp(da, d2, 32), 0);
  CU_ASSERT_EQUAL(outcome_code(a.f, rid), NO_OUTCOME);

  /* Garbage at the next index counts as applied and does nothing else:
   * the same as an empty batch at that index. */
  struct chain_head ha, hb;
  uint8_t junk[100];
  test_rng_fill(&a.rng, junk, sizeof junk);
  junk[0] = 0xff; /* not a valid protobuf tag */
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, ++a.index, junk, sizeof junk), 0);
  CU_ASSERT_EQUAL(env_apply(&b, NULL, 0), 0);
  chain_fsm_head(a.f, &ha);
  chain_fsm_head(b.f, &hb);
  CU_ASSERT_EQUAL(ha.applied, a.index);
  CU_ASSERT(same_head(&ha, &hb));
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  /* A batch of another format version is skipped the same way. */
  Medshard__CommandBatch vb = MEDSHARD__COMMAND_BATCH__INIT;
  vb.format_version = 2;
  vb.n_commands = 1;
  vb.commands = &cp;
  len = medshard__command_batch__get_packed_size(&vb);
  buf = malloc(len);
  medshard__command_batch__pack(&vb, buf);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, ++a.index, buf, len), 0);
  free(buf);
  CU_ASSERT_EQUAL(env_apply(&b, NULL, 0), 0);
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  CU_ASSERT_EQUAL(outcome_code(a.f, rid), NO_OUTCOME);
  /* An over-long request id is refused rather than applied unrecorded. */
  uint8_t long_id[65];
  memset(long_id, 7, sizeof long_id);
  cmd_put(c, NULL, &a.rng, "scans", "r/3", a.nodes);
  c->c.request_id = (ProtobufCBinaryData){sizeof long_id, long_id};
  env_apply1(&a, &c->c);
  chain_fsm_head(a.f, &ha);
  CU_ASSERT_EQUAL(ha.leaves, 1);
  free(c);
  env_close(&a);
  env_close(&b);
}

/* The state after a fixed history with a few sealed blocks: for the
 * proof, reopen and snapshot tests. */
static void build_history(struct env *e, int puts)
{
  for (int i = 0; i < puts; i++) {
    char key[32];
    snprintf(key, sizeof key, "h/%d", i % 5);
    CU_ASSERT_EQUAL(env_put(e, key, NULL), 0);
    if (i % 4 == 3) {
      CU_ASSERT_EQUAL(env_cut(e), 0);
      struct chain_head h;
      chain_fsm_head(e->f, &h);
      CU_ASSERT_EQUAL(env_cosign(e, 0, h.height), 0);
      CU_ASSERT_EQUAL(env_cosign(e, 2, h.height), 0);
    }
  }
}

/* tmpl with every "%s" replaced by hex (no printf: the format is data). */
static void subst_key(const char *tmpl, const char *hex, char *out, size_t cap)
{
  size_t o = 0;
  for (const char *p = tmpl; *p != '\0' && o + 1 < cap; p++) {
    if (p[0] == '%' && p[1] == 's') {
      o += (size_t)snprintf(out + o, cap - o, "%s", hex);
      p++;
    } else {
      out[o++] = *p;
    }
  }
  out[o < cap ? o : cap - 1] = '\0';
}

static void test_keys_file(void)
{
  struct chain_key keys[4], back[4];
  size_t n, len;
  char text[1024], err[160];
  for (uint32_t i = 0; i < 3; i++) {
    uint8_t sk[BLOCK_SECKEY_BYTES];
    keys[i].node_id = i + 1;
    keys[i].voter = i != 2;
    CU_ASSERT_EQUAL(block_keypair(keys[i].pk, sk), 0);
  }
  CU_ASSERT_EQUAL_FATAL(chain_keys_format(keys, 3, text, sizeof text, &len), 0);
  CU_ASSERT_EQUAL(strlen(text), len);
  CU_ASSERT_EQUAL(strncmp(text, "medshard-keys 1\n", 16), 0);
  CU_ASSERT_EQUAL_FATAL(chain_keys_parse(text, back, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(n, 3);
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(back[i].node_id, keys[i].node_id);
    CU_ASSERT_EQUAL(back[i].voter, keys[i].voter);
    CU_ASSERT_EQUAL(memcmp(back[i].pk, keys[i].pk, BLOCK_PUBKEY_BYTES), 0);
  }
  CU_ASSERT_EQUAL(chain_keys_parse(text, back, 2, &n, err, sizeof err), MSD_ESHORT);
  CU_ASSERT_EQUAL(chain_keys_format(keys, 3, text, 40, &len), MSD_ESHORT);

  /* Comments, blank lines, CRLF and upper-case hex are fine. */
  char hex[65];
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02X", keys[0].pk[i]);
  snprintf(text, sizeof text, "medshard-keys 1\r\n# cluster A\n\n   \nnode 9 voter %s  # ok\r\n",
           hex);
  CU_ASSERT_EQUAL_FATAL(chain_keys_parse(text, back, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(back[0].node_id, 9);
  CU_ASSERT(back[0].voter);
  CU_ASSERT_EQUAL(memcmp(back[0].pk, keys[0].pk, BLOCK_PUBKEY_BYTES), 0);

  struct {
    const char *text;
    int rc;
    const char *in_err;
  } bad[] = {
      {"", MSD_EDECODE, "line 1"},
      {"medshard-keys 2\n", MSD_EVERSION, "line 1"},
      {"# comment first\nmedshard-keys 1\n", MSD_EDECODE, "line 1"},
      {"medshard-keys 1\nnode 1 voter abc\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\n\nnode x voter %s\n", MSD_EDECODE, "line 3"},
      {"medshard-keys 1\nnode 0 voter %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 leader %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 voter %s extra\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 voter %s\nnode 1 standby %s\n", MSD_EDECODE, "line 3"},
      {"medshard-keys 1\nnode 1 voter %s\nnode 2 standby %s\n", MSD_EDECODE, "same key"},
      {"medshard-keys 1\nkey 1 voter %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 4294967296 voter %s\n", MSD_EDECODE, "line 2"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    subst_key(bad[i].text, hex, text, sizeof text);
    err[0] = '\0';
    int rc = chain_keys_parse(text, back, 4, &n, err, sizeof err);
    CU_ASSERT_EQUAL(rc, bad[i].rc);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].in_err));
    if (rc != bad[i].rc || strstr(err, bad[i].in_err) == NULL)
      printf("\n  keys case %zu: rc %d, error \"%s\"\n", i, rc, err);
  }
}

static void test_proofs(void)
{
  struct env e;
  env_setup(&e, 10, true);
  build_history(&e, 12);
  CU_ASSERT_EQUAL(env_put(&e, "uncut", NULL), 0);
  struct chain_head h;
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL_FATAL(h.height, 3);
  CU_ASSERT_EQUAL(h.sealed, 3);
  CU_ASSERT_EQUAL(h.leaves, 13);
  struct chain_verify_report vr;
  CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(e.f), &vr), 0);

  struct chain_key keys[3], wrong[3];
  for (uint32_t i = 0; i < 3; i++) {
    keys[i] = (struct chain_key){.node_id = i + 1, .voter = true};
    memcpy(keys[i].pk, e.pk[i], BLOCK_PUBKEY_BYTES);
    uint8_t sk[BLOCK_SECKEY_BYTES];
    wrong[i] = (struct chain_key){.node_id = i + 1, .voter = true};
    CU_ASSERT_EQUAL(block_keypair(wrong[i].pk, sk), 0);
  }
  uint8_t *buf;
  size_t len;
  struct chain_proof_report rep;
  for (uint64_t i = 0; i < 12; i++) {
    CU_ASSERT_EQUAL_FATAL(chain_fsm_proof(e.f, i, &buf, &len), 0);
    int rc = chain_proof_verify(buf, len, keys, 3, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
      printf("\n  leaf %" PRIu64 ": %s\n", i, rep.reason);
    CU_ASSERT_EQUAL(rep.leaf_index, i);
    CU_ASSERT_EQUAL(rep.height, i / 4 + 1);
    CU_ASSERT_EQUAL(rep.tree_size, (i / 4 + 1) * 4);
    CU_ASSERT_EQUAL(rep.valid_cosigs, 2);
    CU_ASSERT_EQUAL(rep.voters, 3);
    CU_ASSERT_EQUAL(rep.leaf.kind, ANCHOR_PUT);
    CU_ASSERT_EQUAL(chain_proof_verify(buf, len, wrong, 3, &rep), MSD_EBADSIG);
    CU_ASSERT_NOT_EQUAL(rep.reason[0], '\0');
    msd_free(buf);
  }
  CU_ASSERT_EQUAL(chain_fsm_proof(e.f, 12, &buf, &len), MSD_ENOTFOUND); /* not cut yet */
  CU_ASSERT_EQUAL(chain_fsm_proof(e.f, 13, &buf, &len), MSD_ENOTFOUND);

  CU_ASSERT_EQUAL_FATAL(chain_fsm_proof(e.f, 5, &buf, &len), 0);
  /* Only the keys that signed, as standbys: no voter, no seal. A list of
   * five voters of which two signed: 2 of 5 is no majority. */
  struct chain_key mixed[5];
  memcpy(mixed, keys, sizeof keys);
  mixed[3] = wrong[0];
  mixed[3].node_id = 4;
  mixed[4] = wrong[1];
  mixed[4].node_id = 5;
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len, mixed, 5, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 2);
  CU_ASSERT_EQUAL(rep.voters, 5);
  mixed[0].voter = mixed[2].voter = false;
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len, mixed, 3, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 0);
  /* One key trusted under two ids counts once: node 1's signature copied
   * as node 2's must not make 2 of 3. */
  struct chain_key same[4] = {keys[0], keys[0], wrong[1], wrong[2]};
  same[1].node_id = 2;
  same[2].node_id = 3;
  same[3].node_id = 4;
  Medshard__ProofBundle *pb = medshard__proof_bundle__unpack(NULL, len, buf);
  CU_ASSERT_FATAL(pb != NULL && pb->n_cosigs == 2 && pb->cosigs[0]->node_id == 1);
  Medshard__BlockCosig twin = *pb->cosigs[0], *two[2] = {pb->cosigs[0], &twin};
  twin.node_id = 2;
  pb->cosigs[1]->node_id = 3;
  Medshard__BlockCosig **own = pb->cosigs;
  pb->cosigs = two;
  size_t flen = medshard__proof_bundle__get_packed_size(pb);
  uint8_t *forged = malloc(flen);
  medshard__proof_bundle__pack(pb, forged);
  pb->cosigs = own;
  medshard__proof_bundle__free_unpacked(pb, NULL);
  CU_ASSERT_EQUAL(chain_proof_verify(forged, flen, same, 4, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 1);
  CU_ASSERT_EQUAL(rep.voters, 3);
  same[1].pk[0] ^= 1; /* a distinct (wrong) key for node 2: still 1 valid of 4 */
  CU_ASSERT_EQUAL(chain_proof_verify(forged, flen, same, 4, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.voters, 4);
  free(forged);

  /* Any single flipped bit fails, with a sentence saying why. */
  struct test_rng rng = test_rng_for(11);
  uint8_t *copy = malloc(len);
  size_t passed = 0, first = 0;
  for (size_t pos = 0; pos < len; pos++) {
    memcpy(copy, buf, len);
    copy[pos] ^= (uint8_t)(1u << test_rng_below(&rng, 8));
    int rc = chain_proof_verify(copy, len, keys, 3, &rep);
    if (rc == 0 && passed++ == 0)
      first = pos;
    if (rc != 0 && rep.reason[0] == '\0')
      passed++;
  }
  CU_ASSERT_EQUAL(passed, 0);
  if (passed != 0)
    printf("\n  %zu flipped bundles verified, first at byte %zu of %zu\n", passed, first, len);
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len - 1, keys, 3, &rep) != 0, 1);
  free(copy);
  msd_free(buf);
  env_close(&e);
}

static void test_reopen(void)
{
  struct env e;
  env_setup(&e, 12, true);
  build_history(&e, 9);
  struct chain_head h1, h2;
  uint8_t d1[32], d2[32];
  chain_fsm_head(e.f, &h1);
  digest_of(e.f, d1);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  CU_ASSERT_EQUAL(env_put(&e, "after", NULL), 0);
  env_close(&e);
}

static int copy_file(const char *from, const char *to)
{
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  int rc = in && out ? 0 : -1;
  while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
    rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
  if (in)
    fclose(in);
  if (out)
    fclose(out);
  return rc;
}

/* Chain file (and hash cache) records past what LMDB committed are what a
 * crash mid-apply leaves: open cuts them off. */
static void test_crash_rollback(void)
{
  struct env e;
  env_setup(&e, 13, true);
  build_history(&e, 6);
  struct chain_head h1, h2;
  uint8_t d1[32], d2[32];
  chain_fsm_head(e.f, &h1);
  digest_of(e.f, d1);
  char path[4200];
  snprintf(path, sizeof path, "%s", chain_fsm_chain_path(e.f));
  chain_fsm_close(e.f);

  /* 1: junk records appended to the chain file. */
  struct chain_file *cf;
  uint8_t junk[200];
  test_rng_fill(&e.rng, junk, sizeof junk);
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 0, &cf), 0);
  uint64_t committed = chain_file_size(cf);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(chain_append_leaf(cf, junk, sizeof junk - (size_t)i, NULL), 0);
  chain_file_close(cf);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  struct stat st;
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL((uint64_t)st.st_size, committed);
  struct chain_verify_report rep;
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);

  /* 2: LMDB lost the last transaction but the chain file and hash cache
   * kept its records: keep a copy of the LMDB, apply, put it back. */
  char meta[4200], saved[4200];
  snprintf(meta, sizeof meta, "%s/meta/data.mdb", e.dir);
  snprintf(saved, sizeof saved, "%s/saved.mdb", e.dir);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(copy_file(meta, saved), 0);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  uint64_t index = e.index, now = e.now;
  struct test_rng rng = e.rng;
  CU_ASSERT_EQUAL(env_put(&e, "lost", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  uint8_t d3[32];
  digest_of(e.f, d3);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(copy_file(saved, meta), 0);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);
  CU_ASSERT_EQUAL(rep.leaves, h1.leaves);
  /* Raft replays the entries: the same state as before the "crash". */
  e.index = index;
  e.now = now;
  e.rng = rng;
  CU_ASSERT_EQUAL(env_put(&e, "lost", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  digest_of(e.f, d2);
  CU_ASSERT_EQUAL(memcmp(d3, d2, 32), 0);
  env_close(&e);
}

static void test_snapshot_restore(void)
{
  struct env a, b, c;
  env_setup(&a, 14, true);
  build_history(&a, 10);
  uint8_t *snap, da[32], db[32];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(chain_fsm_snapshot(a.f, &snap, &len), 0);

  /* Into a fresh FSM: the same state, and the same after the next entry. */
  env_setup(&b, 15, false);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_restore(b.f, snap, len), 0);
  struct chain_head ha, hb;
  chain_fsm_head(a.f, &ha);
  chain_fsm_head(b.f, &hb);
  CU_ASSERT(same_head(&ha, &hb));
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  uint8_t da0[32];
  memcpy(da0, da, 32);
  struct cmd *cm = malloc(sizeof *cm);
  uint8_t rid[16];
  new_rid(&a, rid);
  Medshard__Command *cp = cmd_put(cm, rid, &a.rng, "scans", "next", a.nodes);
  size_t blen;
  uint8_t *batch = pack_batch(&cp, 1, 99, &blen, false);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, a.index + 1, batch, blen), 0);
  CU_ASSERT_EQUAL(chain_fsm_apply(b.f, a.index + 1, batch, blen), 0);
  free(batch);
  free(cm);
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  /* An older snapshot is ignored (a restart reloading its own). */
  CU_ASSERT_EQUAL(chain_fsm_restore(b.f, snap, len), 0);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);

  /* A flipped byte in the chain part: refused, the target unchanged. */
  env_setup(&c, 16, true);
  CU_ASSERT_EQUAL(env_put(&c, "older", NULL), 0);
  uint8_t dc[32], dc2[32];
  struct chain_head hc, hc2;
  digest_of(c.f, dc);
  chain_fsm_head(c.f, &hc);
  uint64_t lmdb_len = 0;
  for (int i = 0; i < 8; i++)
    lmdb_len = lmdb_len << 8 | snap[24 + i];
  CU_ASSERT_FATAL(40 + lmdb_len + 100 < len);
  uint8_t *bad = malloc(len);
  struct test_rng rng = test_rng_for(17);
  for (int trial = 0; trial < 8; trial++) {
    memcpy(bad, snap, len);
    size_t pos = 40 + lmdb_len + 16 + test_rng_below(&rng, len - 40 - lmdb_len - 16);
    bad[pos] ^= (uint8_t)(1u << test_rng_below(&rng, 8));
    CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_ECORRUPT);
    digest_of(c.f, dc2);
    chain_fsm_head(c.f, &hc2);
    CU_ASSERT_EQUAL(memcmp(dc, dc2, 32), 0);
    CU_ASSERT(same_head(&hc, &hc2));
  }
  memcpy(bad, snap, len);
  bad[0] ^= 1;
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_EDECODE);
  memcpy(bad, snap, len);
  bad[11] = 2;
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_EVERSION);
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, snap, len - 1), MSD_EDECODE);
  /* The target still works, and takes the intact snapshot. */
  CU_ASSERT_EQUAL(env_put(&c, "still", NULL), 0);
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, snap, len), 0);
  chain_fsm_head(c.f, &hc2);
  CU_ASSERT(same_head(&ha, &hc2));
  digest_of(c.f, dc2);
  CU_ASSERT_EQUAL(memcmp(da0, dc2, 32), 0);
  free(bad);
  msd_free(snap);
  env_close(&a);
  env_close(&b);
  env_close(&c);
}

/* ---- suite (b): the FSM under libraft's raft_fixture ---- */

#define MAXN 5
#define PUT_BATCH 8
#define COSIGN_CAP 16

enum { P_TODO = 1, P_PENDING, P_ACKED };
enum { S_SETUP, S_PUTS, S_CUT, S_COSIGN };

/* A client request: its command is rebuilt from the seed on every try, so a
 * retry carries the same request id (and object id) as the first. */
struct put_req {
  uint64_t seed;
  uint8_t state, attempts;
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
};

struct cut_ack {
  uint8_t rid[16];
  uint64_t index; /* where raft_apply put the entry */
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
  unsigned inflight, submits, refused, failed_cbs, retries, kills, faults, cut_subs;
};

struct submit {
  struct raft_apply req;
  struct rcluster *c;
  int kind;
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
  return nd->apply(fsm, buf, result);
}

static int counting_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
  struct rnode *nd = rnode_of(fsm);
  int rc = nd->snapshot(fsm, bufs, n);
  nd->snapshots += rc == 0;
  return rc;
}

static int counting_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
  struct rnode *nd = rnode_of(fsm);
  int rc = nd->restore(fsm, buf);
  nd->restores += rc == 0;
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
  }
  c->failed_cbs += status != 0;
  if (status == 0 && s->kind == S_CUT &&
      msd_grow(&c->cuts, &c->cutcap, c->ncuts, sizeof *c->cuts, 64) == 0) {
    memcpy(c->cuts[c->ncuts].rid, s->rid, 16);
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
  s->req.data = s;
  c->submits++;
  if (s->kind == S_PUTS && test_rng_below(&c->rng, 50) == 0 && getenv("NOFAULT") == NULL) {
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
    c->puts[c->nputs] = (struct put_req){.seed = test_rng_next(&c->rng), .state = P_TODO};
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
  c->cut_subs++;
  submit(c, l, s, &cp, 1);
}

/* Every live node cosigns what its own state says it has not signed. */
static void submit_cosigns(struct rcluster *c, int l)
{
  struct cmd *cm = malloc(MAXN * COSIGN_CAP * sizeof *cm);
  Medshard__Command *cs[MAXN * COSIGN_CAP];
  size_t n = 0;
  for (unsigned i = 0; i < c->n; i++) {
    if (!raft_fixture_alive(&c->f, i))
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
    raft_fixture_step_until_has_leader(&c->f, 10000);
    int l = leader_of(c);
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
  raft_fixture_step_until_has_leader(&c->f, 10000);
  int l = leader_of(c);
  if (l < 0) {
    printf("\n  no leader: fixture leader index %u, time %" PRIu64 "\n",
           raft_fixture_leader_index(&c->f), (uint64_t)raft_fixture_time(&c->f));
    for (unsigned i = 0; i < c->n; i++)
      printf("  node %u: alive %d state %d term %" PRIu64 " applied %" PRIu64 "\n", i,
             raft_fixture_alive(&c->f, i), raft_state(raft_fixture_get(&c->f, i)),
             (uint64_t)raft_fixture_get(&c->f, i)->current_term,
             (uint64_t)raft_last_applied(raft_fixture_get(&c->f, i)));
  }
  CU_ASSERT_FATAL(l >= 0);
  unsigned lag = ((unsigned)l + 1) % c->n;
  unsigned before = c->node[lag].restores;
  raft_fixture_kill(&c->f, lag);
  for (int i = 0; i < 80; i++) {
    if ((l = leader_of(c)) >= 0)
      submit_puts(c, l, true);
    raft_fixture_step_until_elapsed(&c->f, 30);
  }
  raft_fixture_revive(&c->f, lag);
  raft_fixture_step_until_elapsed(&c->f, 3000);
  CU_ASSERT(c->node[lag].restores > before);
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
      dead += !raft_fixture_alive(&c->f, i);
    if (dice < 45 && l >= 0) {
      submit_puts(c, l, true);
    } else if (dice < 55 && l >= 0) {
      submit_cut(c, l);
    } else if (dice < 65 && l >= 0) {
      submit_cosigns(c, l);
    } else if (dice < 69 && dead < max_dead) {
      /* Mostly the leader; sometimes a follower. */
      unsigned victim = l >= 0 && test_rng_below(&c->rng, 4) != 0 ? (unsigned)l : a;
      if (raft_fixture_alive(&c->f, victim)) {
        raft_fixture_kill(&c->f, victim);
        c->kills++;
      }
    } else if (dice < 76 && !raft_fixture_alive(&c->f, a)) {
      raft_fixture_revive(&c->f, a);
    } else if (dice < 80 && a != b) {
      raft_fixture_disconnect(&c->f, a, b);
      raft_fixture_disconnect(&c->f, b, a);
    } else if (dice < 88 && a != b) {
      raft_fixture_reconnect(&c->f, a, b);
      raft_fixture_reconnect(&c->f, b, a);
    }
    raft_fixture_step_until_elapsed(&c->f, 10 + (unsigned)test_rng_below(&c->rng, 150));
  }
}

static bool converged(struct rcluster *c, bool report)
{
  struct chain_head h0, h;
  const char *why = NULL;
  chain_fsm_head(c->node[0].fsm, &h0);
  if (c->inflight > 0)
    why = "submissions in flight";
  for (size_t i = 0; why == NULL && i < c->nputs; i++)
    if (c->puts[i].state != P_ACKED)
      why = "unacknowledged puts";
  if (why == NULL && (h0.leaves != h0.last_size || h0.sealed != h0.height))
    why = "leaves not cut or blocks not sealed";
  for (unsigned i = 0; why == NULL && i < c->n; i++) {
    chain_fsm_head(c->node[i].fsm, &h);
    if (!same_head(&h, &h0))
      why = "heads differ";
    else if (raft_last_applied(raft_fixture_get(&c->f, i)) != h.applied)
      why = "raft's last applied index differs from the FSM's";
  }
  if (why != NULL && report)
    printf("\n  not converged: %s (inflight %u, leaves %" PRIu64 "/%" PRIu64 ", sealed %" PRIu64
           "/%" PRIu64 ")\n", why, c->inflight, h0.last_size, h0.leaves, h0.sealed, h0.height);
  return why == NULL;
}

/* Heals everything, then retries, cuts and cosigns until every node holds
 * the same fully cut and sealed chain. */
static void settle(struct rcluster *c)
{
  heal(c);
  for (int round = 0; round < 200 && !converged(c, false); round++) {
    raft_fixture_step_until_has_leader(&c->f, 5000);
    int l = leader_of(c);
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
  chain_fsm_head(c->node[0].fsm, &h0);
  digest_of(c->node[0].fsm, d0);
  CU_ASSERT_EQUAL(h0.alarm[0], '\0');
  unsigned mismatched = 0, applies = 0, snapshots = 0, restores = 0, dups = 0, missing = 0;
  for (unsigned i = 0; i < c->n; i++) {
    struct rnode *nd = &c->node[i];
    chain_fsm_head(nd->fsm, &h);
    CU_ASSERT(same_head(&h, &h0));
    digest_of(nd->fsm, d);
    CU_ASSERT_EQUAL(memcmp(d, d0, 32), 0);
    struct chain_verify_report rep;
    CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(nd->fsm), &rep), 0);
    CU_ASSERT_EQUAL(rep.leaves, h.leaves);
    CU_ASSERT_EQUAL(rep.blocks, h.height);
    /* Every put applied exactly once: one PUT leaf per request id. */
    struct scan s;
    scan_chain(nd->fsm, &s);
    CU_ASSERT_EQUAL(s.kind[ANCHOR_PUT], c->nputs);
    CU_ASSERT_EQUAL(s.leaves, h.leaves);
    for (size_t p = 0; p < c->nputs; p++) {
      uint8_t rid[16];
      put_rid(c->puts[p].seed, rid);
      missing += outcome_code(nd->fsm, rid) != 0;
    }
    mismatched += nd->index_mismatch;
    applies += nd->applies;
    snapshots += nd->snapshots;
    restores += nd->restores;
    dups += nd->dup_puts;
  }
  CU_ASSERT_EQUAL(missing, 0);
  CU_ASSERT_EQUAL(mismatched, 0);
  CU_ASSERT(applies > 0);
  CU_ASSERT(snapshots > 0);
  CU_ASSERT(restores > 0);
  /* Each acknowledged CutBlock that made a block recorded the index raft
   * gave its entry. */
  unsigned cut_blocks = 0;
  for (size_t i = 0; i < c->ncuts; i++) {
    Medshard__Outcome *o = outcome_of(c->node[0].fsm, c->cuts[i].rid);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT(o->code == 0 || o->code == MSD_ESTALE);
    if (o->code == 0) {
      Medshard__BlockRecord *r = block_of(c->node[0].fsm, o->height);
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
         " io faults, %u snapshots, %u restores, applied %" PRIu64 "\n", c->n, c->nputs, c->retries,
         dups, h0.leaves, h0.height, cut_blocks, c->submits, c->refused, c->failed_cbs, c->kills,
         c->faults, snapshots, restores, h0.applied);
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
  raft_run(3, 3000, 31);
}

static void test_raft_five_voters(void)
{
  raft_run(5, 2000, 32);
}

int main(void)
{
  /* Rejected commands are logged at INFO on every node: thousands of lines
   * in the raft runs. MSD_TEST_LOG=1 shows them. */
  msd_log_set_level(getenv("MSD_TEST_LOG") ? MSD_LOG_DEBUG : MSD_LOG_WARN);
  static const struct test_case direct[] = {
      {"bucket create and duplicate", test_bucket_create_and_duplicate},
      {"node join", test_node_join},
      {"put, versions and retries", test_put_versions_and_retry},
      {"keys longer than LMDB's limit", test_long_keys},
      {"delete", test_delete},
      {"update shards", test_update_shards},
      {"blocks, cosignatures, seals", test_blocks_and_cosign},
      {"divergence raises the alarm", test_divergence_alarm},
      {"replays and malformed entries", test_replay_and_malformed},
      {"trusted keys file", test_keys_file},
      {"proof bundles verify offline", test_proofs},
      {"close and reopen", test_reopen},
      {"crash rollback", test_crash_rollback},
      {"snapshot and restore", test_snapshot_restore},
      {NULL, NULL}};
  static const struct test_case raft[] = {
      {"3 voters: faults, snapshots, retries", test_raft_three_voters},
      {"5 voters: faults, snapshots, retries", test_raft_five_voters},
      {NULL, NULL}};
  static const char *const names[] = {"fsm", "fsm under raft_fixture", NULL};
  static const struct test_case *const suites[] = {direct, raft};
  return test_run("test_fsm", names, suites);
}
