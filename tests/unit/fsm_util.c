/* Helpers for the chain FSM tests (fsm_util.h). */
#include "fsm_util.h"

#include <raft.h>
#include <stdio.h>
#include <string.h>

#include "chain-anchor/chainfile.h"
#include "common/alloc.h"
#include "common/err.h"

static const uint8_t secret[] = "medshard test cluster secret";

/* ---- command builders ---- */

static void cmd_init(struct cmd *c, const uint8_t *rid)
{
  memset(c, 0, sizeof *c);
  medshard__command__init(&c->c);
  if (rid != NULL) {
    memcpy(c->rid, rid, 16);
    c->c.request_id = (ProtobufCBinaryData){16, c->rid};
  }
}

Medshard__Command *cmd_bucket(struct cmd *c, const uint8_t *rid, const char *name,
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
Medshard__Command *cmd_put(struct cmd *c, const uint8_t *rid, struct test_rng *r,
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

Medshard__Command *cmd_delete(struct cmd *c, const uint8_t *rid, const char *bucket,
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
Medshard__Command *cmd_move(struct cmd *c, const uint8_t *rid, const uint8_t oid[16],
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

Medshard__Command *cmd_join(struct cmd *c, const uint8_t *rid, uint32_t id,
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

Medshard__Command *cmd_state(struct cmd *c, const uint8_t *rid, uint32_t id,
                                    Medshard__NodeStatus status)
{
  static Medshard__NodeState st; /* one at a time is enough here */
  cmd_init(c, rid);
  medshard__node_state__init(&st);
  st.node_id = id;
  st.status = status;
  c->c.body_case = MEDSHARD__COMMAND__BODY_NODE_STATE;
  c->c.node_state = &st;
  return &c->c;
}

Medshard__Command *cmd_cut(struct cmd *c, const uint8_t *rid, const struct block_header *h,
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

Medshard__Command *cmd_cosign(struct cmd *c, const uint8_t *rid, uint64_t height,
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
uint8_t *pack_batch(Medshard__Command **cs, size_t n, uint64_t ts, size_t *len, bool raft)
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

Medshard__Outcome *outcome_of(struct chain_fsm *f, const uint8_t rid[16])
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_outcome(f, rid, 16, &buf, &len) != 0)
    return NULL;
  Medshard__Outcome *o = medshard__outcome__unpack(NULL, len, buf);
  msd_free(buf);
  return o;
}

int outcome_code(struct chain_fsm *f, const uint8_t rid[16])
{
  Medshard__Outcome *o = outcome_of(f, rid);
  int code = o == NULL ? NO_OUTCOME : o->code;
  medshard__outcome__free_unpacked(o, NULL);
  return code;
}

Medshard__Manifest *manifest_of(struct chain_fsm *f, const char *bucket, const char *key)
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_manifest(f, bucket, key, &buf, &len) != 0)
    return NULL;
  Medshard__Manifest *m = medshard__manifest__unpack(NULL, len, buf);
  msd_free(buf);
  return m;
}

Medshard__Manifest *manifest_by_id(struct chain_fsm *f, const uint8_t id[16])
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_manifest_by_id(f, id, &buf, &len) != 0)
    return NULL;
  Medshard__Manifest *m = medshard__manifest__unpack(NULL, len, buf);
  msd_free(buf);
  return m;
}

Medshard__BlockRecord *block_of(struct chain_fsm *f, uint64_t height)
{
  uint8_t *buf;
  size_t len;
  if (chain_fsm_block(f, height, &buf, &len) != 0)
    return NULL;
  Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, len, buf);
  msd_free(buf);
  return r;
}


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

void scan_chain(struct chain_fsm *f, struct scan *s)
{
  memset(s, 0, sizeof *s);
  CU_ASSERT_EQUAL(chain_file_scan(chain_fsm_chain_path(f), scan_record, s, NULL), 0);
  CU_ASSERT_EQUAL(s->bad, 0);
}

void digest_of(struct chain_fsm *f, uint8_t out[32])
{
  memset(out, 0, 32);
  CU_ASSERT_EQUAL(chain_fsm_digest(f, out), 0);
}

bool same_head(const struct chain_head *a, const struct chain_head *b)
{
  return a->applied == b->applied && a->leaves == b->leaves && a->height == b->height &&
         a->last_size == b->last_size && a->sealed == b->sealed && a->epoch == b->epoch &&
         a->voters == b->voters && memcmp(a->head, b->head, BLOCK_HASH) == 0 &&
         memcmp(a->root, b->root, MERKLE_HASH) == 0 && strcmp(a->alarm, b->alarm) == 0;
}

int fsm_open_dir(const char *dir, struct chain_fsm **f)
{
  struct chain_fsm_config cfg = {.dir = dir, .secret = secret, .secret_len = sizeof secret - 1,
                                 .map_bytes = 64u << 20};
  return chain_fsm_open(&cfg, f);
}

/* ---- one FSM driven directly ---- */

int env_apply(struct env *e, Medshard__Command **cs, size_t n)
{
  size_t len;
  uint8_t *buf = pack_batch(cs, n, e->now += 7, &len, false);
  int rc = chain_fsm_apply(e->f, ++e->index, buf, len);
  free(buf);
  return rc;
}

void env_apply1(struct env *e, Medshard__Command *c)
{
  CU_ASSERT_EQUAL_FATAL(env_apply(e, &c, 1), 0);
}

void new_rid(struct env *e, uint8_t rid[16])
{
  test_rng_fill(&e->rng, rid, 16);
}

/* A fresh FSM; with `cluster`, three voters joined and bucket "scans"
 * (2+1) created. */
void env_setup(struct env *e, uint64_t salt, bool cluster)
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

void env_close(struct env *e)
{
  chain_fsm_close(e->f);
  e->f = NULL;
  test_tmpdir_remove(e->dir);
}

/* Puts bucket/key; returns the outcome code and fills oid. */
int env_put(struct env *e, const char *key, uint8_t oid[16])
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

Medshard__Command *put_cmd_for(struct cmd *c, const uint8_t rid[16], struct env *e,
                                      const char *key)
{
  return cmd_put(c, rid, &e->rng, "scans", key, e->nodes);
}

/* Cuts the next block from the FSM's own view; returns the outcome code. */
int env_cut(struct env *e)
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
int env_cosign(struct env *e, unsigned who, uint64_t height)
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
