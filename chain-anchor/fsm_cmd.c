/* The FSM's command handlers: each checks its command against the state,
 * and either changes the state (and anchors a leaf) or records why it was
 * rejected. Rejections are outcomes, never apply failures: a committed
 * entry must apply identically on every node. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/fsm_int.h"
#include "common/err.h"

/* Records a rejection: the outcome's code and a sentence. Returns 0 (the
 * command applied, as a rejection). */
__attribute__((format(printf, 4, 5))) static int reject(Medshard__Outcome *out, int code,
                                                        char *msg, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, 256, fmt, ap);
  va_end(ap);
  out->code = code;
  return 0;
}

static bool policy_ok(const Medshard__ErasurePolicy *p)
{
  return p != NULL && p->k >= 1 && p->k <= 32 && p->m <= 16 && p->k + p->m <= ANCHOR_SHARDS_MAX &&
         p->unit >= 4096 && p->unit <= (64u << 20) && p->unit % 64 == 0;
}

/* Bucket names as S3 allows them: 3-63 of [a-z0-9.-], starting and ending
 * with a letter or digit. */
static bool bucket_name_ok(const char *s)
{
  size_t n = s ? strlen(s) : 0;
  if (n < 3 || n > 63)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && ((c != '.' && c != '-') || i == 0 || i == n - 1))
      return false;
  }
  return true;
}

static bool node_known(struct fsm_txn *x, uint32_t id)
{
  uint8_t k[4];
  MDB_val v;
  for (unsigned i = 0; i < x->nknown; i++)
    if (x->known_nodes[i] == id)
      return true;
  fsm__be(k, id, 4);
  if (fsm__get(x->txn, x->f, T_NODES, k, 4, &v) != 0)
    return false;
  if (x->nknown < sizeof x->known_nodes / sizeof x->known_nodes[0])
    x->known_nodes[x->nknown++] = id;
  return true;
}

/* The bucket's k and m; MSD_ENOTFOUND when it does not exist. */
static int bucket_policy(struct fsm_txn *x, const char *bucket, uint32_t *k, uint32_t *m)
{
  MDB_val v;
  if (x->policy_bucket[0] == 0 || strcmp(x->policy_bucket, bucket) != 0) {
    if (fsm__get(x->txn, x->f, T_BUCKETS, bucket, strlen(bucket), &v) != 0)
      return MSD_ENOTFOUND;
    Medshard__Bucket *b = medshard__bucket__unpack(NULL, v.mv_size, v.mv_data);
    if (b == NULL || b->policy == NULL) {
      medshard__bucket__free_unpacked(b, NULL);
      return MSD_ECORRUPT; /* UNTESTED: our own record does not decode */
    }
    x->policy_k = b->policy->k;
    x->policy_m = b->policy->m;
    medshard__bucket__free_unpacked(b, NULL);
    snprintf(x->policy_bucket, sizeof x->policy_bucket, "%s",
             strlen(bucket) < sizeof x->policy_bucket ? bucket : "");
  }
  *k = x->policy_k;
  *m = x->policy_m;
  return 0;
}

static int shard_index_put(struct fsm_txn *x, uint32_t node, const uint8_t id[16], uint32_t index,
                           bool add)
{
  uint8_t k[21];
  if (node == 0)
    return 0;
  fsm__be(k, node, 4);
  memcpy(k + 4, id, 16);
  k[20] = (uint8_t)index;
  return add ? fsm__put(x, T_NODE_SHARDS, k, sizeof k, "", 0) : fsm__del(x, T_NODE_SHARDS, k, sizeof k);
}

/* The anchor leaf of a manifest (kind PUT or MOVE; DELETE drops the map). */
static int leaf_of(struct fsm_txn *x, const Medshard__Manifest *m, enum anchor_kind kind,
                   uint8_t *buf, size_t *len)
{
  struct anchor_leaf a = {.kind = kind, .version = m->version, .size = m->size};
  memcpy(a.object_id, m->object_id.data, ANCHOR_ID_BYTES);
  int rc = anchor_key_tag_with(&x->f->tag_key, m->bucket, m->key, a.key_tag);
  if (rc != 0)
    return rc;
  anchor_commitment(m->salt.data, m->sha256.data, a.commitment);
  if (kind != ANCHOR_DELETE) {
    const Medshard__ShardMap *sm = m->shard_map;
    a.k = (uint8_t)sm->policy->k;
    a.m = (uint8_t)sm->policy->m;
    a.unit = sm->policy->unit;
    a.nshards = (uint8_t)sm->n_shards;
    for (size_t i = 0; i < sm->n_shards; i++) {
      a.shard[i].node_id = sm->shards[i]->node_id;
      memcpy(a.shard[i].digest, sm->shards[i]->digest.data, ANCHOR_DIGEST);
    }
  }
  return anchor_encode(&a, buf, ANCHOR_ENCODED_MAX, len);
}

/* Anchors the manifest's leaf and fills its anchor reference and the
 * outcome's. */
static int anchor_manifest(struct fsm_txn *x, Medshard__Manifest *m, enum anchor_kind kind,
                           Medshard__Outcome *out, uint8_t leaf_hash[MERKLE_HASH])
{
  uint8_t leaf[ANCHOR_ENCODED_MAX];
  size_t len;
  uint64_t index;
  int rc = leaf_of(x, m, kind, leaf, &len);
  if (rc == 0)
    rc = fsm__append_leaf(x, leaf, len, &index, leaf_hash);
  if (rc != 0)
    return rc;
  out->anchor->leaf_index = index;
  out->anchor->leaf_hash.data = leaf_hash;
  out->anchor->leaf_hash.len = MERKLE_HASH;
  out->version = m->version;
  if (kind != ANCHOR_DELETE)
    m->anchor = out->anchor;
  return 0;
}

static int create_bucket(struct fsm_txn *x, const Medshard__CreateBucket *c, Medshard__Outcome *out,
                         char *msg)
{
  Medshard__Bucket *b = c->bucket;
  MDB_val v;
  if (b == NULL || !bucket_name_ok(b->name))
    return reject(out, MSD_EPARAM, msg, "bucket name must be 3-63 characters of a-z, 0-9, '.' and"
                  " '-', starting and ending with a letter or digit");
  if (!policy_ok(b->policy))
    return reject(out, MSD_EEC_PARAMS, msg, "bucket %s: %s", b->name, msd_strerror(MSD_EEC_PARAMS));
  if (fsm__get(x->txn, x->f, T_BUCKETS, b->name, strlen(b->name), &v) == 0)
    return reject(out, MSD_EEXIST, msg, "bucket %s already exists", b->name);
  Medshard__Bucket copy = *b;
  Medshard__ErasurePolicy pol = *b->policy;
  pol.format_version = 1;
  copy.format_version = 1;
  copy.policy = &pol;
  copy.created_ms = x->now_ms;
  snprintf(msg, 256, "bucket %s created (%" PRIu32 "+%" PRIu32 ")", b->name, pol.k, pol.m);
  return fsm__put_msg(x, T_BUCKETS, b->name, strlen(b->name), &copy.base);
}

/* Checks a PutObject manifest against its bucket; NULL if it is sound. */
static const char *manifest_problem(struct fsm_txn *x, const Medshard__Manifest *m, uint32_t k,
                                    uint32_t mm)
{
  const Medshard__ShardMap *sm = m->shard_map;
  if (m->object_id.len != 16 || m->sha256.len != 32 || m->salt.len != 32)
    return "object id, SHA-256 and salt must be 16, 32 and 32 bytes";
  if (m->key == NULL || m->key[0] == 0 || strlen(m->key) > 1024)
    return "key must be 1-1024 bytes";
  if (sm == NULL || sm->policy == NULL || sm->policy->k != k || sm->policy->m != mm ||
      !policy_ok(sm->policy) || sm->size != m->size)
    return "shard map does not match the bucket's erasure policy or the object size";
  if (sm->n_shards != sm->policy->k + sm->policy->m)
    return "shard map must list exactly k+m shards";
  for (size_t i = 0; i < sm->n_shards; i++) {
    const Medshard__ShardLocation *s = sm->shards[i];
    if (s->index != i || s->digest.len != ANCHOR_DIGEST)
      return "shard map entries must be in index order with 16-byte digests";
    if (s->node_id != 0 && !node_known(x, s->node_id))
      return "shard map names a node that is not in the cluster map";
  }
  return NULL;
}

static int put_object(struct fsm_txn *x, const Medshard__PutObject *p, Medshard__Outcome *out,
                      uint8_t leaf_hash[MERKLE_HASH], char *msg)
{
  Medshard__Manifest *m = p->manifest;
  MDB_val v;
  uint8_t nk[FSM_NAME_KEY_MAX];
  if (m == NULL || m->bucket == NULL || m->key == NULL)
    return reject(out, MSD_EPARAM, msg, "PutObject without a manifest");
  uint32_t k, mm;
  int rc = bucket_policy(x, m->bucket, &k, &mm);
  if (rc == MSD_ENOTFOUND)
    return reject(out, MSD_ENOTFOUND, msg, "bucket %s does not exist", m->bucket);
  if (rc != 0)
    return rc;
  const char *why = manifest_problem(x, m, k, mm);
  if (why != NULL)
    return reject(out, MSD_EPARAM, msg, "%s/%s: %s", m->bucket, m->key, why);
  if (fsm__get(x->txn, x->f, T_OBJECTS, m->object_id.data, 16, &v) == 0)
    return reject(out, MSD_EEXIST, msg, "%s/%s: object id already used", m->bucket, m->key);
  size_t nlen = fsm__name_key(m->bucket, m->key, nk);
  if (nlen == 0)
    return MSD_EPARAM; /* UNTESTED: the bucket exists and the key was checked */
  uint64_t version = 1;
  if (fsm__get(x->txn, x->f, T_NAMES, nk, nlen, &v) == 0 && v.mv_size == 25)
    version = fsm__get_be((const uint8_t *)v.mv_data + 16, 8) + 1;
  Medshard__Manifest copy = *m;
  copy.format_version = 1;
  copy.version = version;
  copy.created_ms = x->now_ms;
  copy.deleted = false;
  out->created_ms = x->now_ms;
  rc = anchor_manifest(x, &copy, ANCHOR_PUT, out, leaf_hash);
  uint8_t name_val[25];
  memcpy(name_val, m->object_id.data, 16);
  fsm__be(name_val + 16, version, 8);
  name_val[24] = 0;
  if (rc == 0)
    rc = fsm__put_msg(x, T_OBJECTS, m->object_id.data, 16, &copy.base);
  if (rc == 0)
    rc = fsm__put(x, T_NAMES, nk, nlen, name_val, sizeof name_val);
  for (size_t i = 0; rc == 0 && i < m->shard_map->n_shards; i++)
    rc = shard_index_put(x, m->shard_map->shards[i]->node_id, m->object_id.data, (uint32_t)i, true);
  snprintf(msg, 256, "%s/%s version %" PRIu64 " anchored", m->bucket, m->key, version);
  return rc;
}

/* Loads the manifest of object `id` (caller frees). */
static int load_manifest(struct fsm_txn *x, const uint8_t id[16], Medshard__Manifest **m)
{
  MDB_val v;
  int rc = fsm__get(x->txn, x->f, T_OBJECTS, id, 16, &v);
  if (rc != 0)
    return rc;
  *m = medshard__manifest__unpack(NULL, v.mv_size, v.mv_data);
  return *m == NULL ? MSD_ECORRUPT : 0;
}

static int delete_object(struct fsm_txn *x, const Medshard__DeleteObject *d, Medshard__Outcome *out,
                         uint8_t leaf_hash[MERKLE_HASH], char *msg)
{
  uint8_t nk[FSM_NAME_KEY_MAX], name_val[25];
  MDB_val v;
  size_t nlen = fsm__name_key(d->bucket, d->key, nk);
  if (nlen == 0 || fsm__get(x->txn, x->f, T_NAMES, nk, nlen, &v) != 0 || v.mv_size != 25 ||
      ((const uint8_t *)v.mv_data)[24] != 0)
    return reject(out, MSD_ENOTFOUND, msg, "%s/%s does not exist", d->bucket ? d->bucket : "",
                  d->key ? d->key : "");
  memcpy(name_val, v.mv_data, 25);
  Medshard__Manifest *m;
  int rc = load_manifest(x, name_val, &m);
  if (rc != 0)
    return rc;
  m->deleted = true;
  rc = anchor_manifest(x, m, ANCHOR_DELETE, out, leaf_hash);
  for (size_t i = 0; rc == 0 && i < m->shard_map->n_shards; i++)
    rc = shard_index_put(x, m->shard_map->shards[i]->node_id, name_val, (uint32_t)i, false);
  if (rc == 0)
    rc = fsm__put_msg(x, T_OBJECTS, name_val, 16, &m->base);
  name_val[24] = 1; /* tombstone: keeps the version counter */
  if (rc == 0)
    rc = fsm__put(x, T_NAMES, nk, nlen, name_val, sizeof name_val);
  snprintf(msg, 256, "%s/%s version %" PRIu64 " deleted", d->bucket, d->key, m->version);
  medshard__manifest__free_unpacked(m, NULL);
  return rc;
}

static const char *update_problem(struct fsm_txn *x, const Medshard__UpdateShards *u,
                                  const Medshard__Manifest *m)
{
  if (m->deleted)
    return "object is deleted";
  if (u->n_shards == 0)
    return "no shards to move";
  for (size_t i = 0; i < u->n_shards; i++) {
    const Medshard__ShardLocation *s = u->shards[i];
    if (s->index >= m->shard_map->n_shards)
      return "shard index out of range";
    const ProtobufCBinaryData *d = &m->shard_map->shards[s->index]->digest;
    /* A moved or rebuilt shard holds the same bytes: its digest cannot change. */
    if (s->digest.len != d->len || memcmp(s->digest.data, d->data, d->len) != 0)
      return "shard digest differs from the shard map";
    if (s->node_id != 0 && !node_known(x, s->node_id))
      return "node is not in the cluster map";
  }
  return NULL;
}

static int update_shards(struct fsm_txn *x, const Medshard__UpdateShards *u, Medshard__Outcome *out,
                         uint8_t leaf_hash[MERKLE_HASH], char *msg)
{
  Medshard__Manifest *m;
  if (u->object_id.len != 16 || load_manifest(x, u->object_id.data, &m) != 0)
    return reject(out, MSD_ENOTFOUND, msg, "UpdateShards: no such object");
  const char *why = update_problem(x, u, m);
  int rc = 0;
  if (why != NULL) {
    reject(out, MSD_EPARAM, msg, "UpdateShards on %s/%s: %s", m->bucket, m->key, why);
    goto done;
  }
  /* anchor_manifest points m->anchor at the outcome's reference: keep the
   * decoded one to free with the message. */
  Medshard__AnchorRef *own_anchor = m->anchor;
  for (size_t i = 0; rc == 0 && i < u->n_shards; i++) {
    Medshard__ShardLocation *cur = m->shard_map->shards[u->shards[i]->index];
    rc = shard_index_put(x, cur->node_id, u->object_id.data, cur->index, false);
    cur->node_id = u->shards[i]->node_id;
    if (rc == 0)
      rc = shard_index_put(x, cur->node_id, u->object_id.data, cur->index, true);
  }
  if (rc == 0)
    rc = anchor_manifest(x, m, ANCHOR_MOVE, out, leaf_hash);
  if (rc == 0)
    rc = fsm__put_msg(x, T_OBJECTS, u->object_id.data, 16, &m->base);
  m->anchor = own_anchor;
  snprintf(msg, 256, "%s/%s: %zu shard(s) moved", m->bucket, m->key, u->n_shards);
done:
  medshard__manifest__free_unpacked(m, NULL);
  return rc;
}

/* The member that already has this Ed25519 key (0 if none): one key under
 * two ids would count twice towards sealing a block. */
static uint32_t key_holder(struct fsm_txn *x, const uint8_t pk[BLOCK_PUBKEY_BYTES])
{
  MDB_cursor *c;
  MDB_val k, v;
  uint32_t found = 0;
  if (mdb_cursor_open(x->txn, x->f->dbi[T_NODES], &c) != 0)
    return 0; /* UNTESTED */
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && found == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
    if (ni != NULL && ni->public_key.len == BLOCK_PUBKEY_BYTES &&
        memcmp(ni->public_key.data, pk, BLOCK_PUBKEY_BYTES) == 0)
      found = ni->node_id;
    medshard__node_info__free_unpacked(ni, NULL);
  }
  mdb_cursor_close(c);
  return found;
}

static int node_join(struct fsm_txn *x, const Medshard__NodeJoin *j, Medshard__Outcome *out, char *msg)
{
  const Medshard__NodeInfo *n = j->node;
  uint8_t k[4];
  MDB_val v;
  if (n == NULL || n->node_id == 0 || n->public_key.len != BLOCK_PUBKEY_BYTES)
    return reject(out, MSD_EPARAM, msg, "NodeJoin needs a node id > 0 and a 32-byte Ed25519 key");
  fsm__be(k, n->node_id, 4);
  if (fsm__get(x->txn, x->f, T_NODES, k, 4, &v) == 0) {
    Medshard__NodeInfo *old = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
    bool same = old != NULL && old->public_key.len == n->public_key.len &&
                memcmp(old->public_key.data, n->public_key.data, n->public_key.len) == 0;
    medshard__node_info__free_unpacked(old, NULL);
    if (same) {
      snprintf(msg, 256, "node %" PRIu32 " is already a member", n->node_id);
      return 0;
    }
    return reject(out, MSD_EEXIST, msg, "node id %" PRIu32 " is taken by a node with another key",
                  n->node_id);
  }
  uint32_t holder = key_holder(x, n->public_key.data);
  if (holder != 0)
    return reject(out, MSD_EEXIST, msg, "node %" PRIu32 ": its public key already belongs to node %"
                  PRIu32, n->node_id, holder);
  Medshard__NodeInfo copy = *n;
  copy.format_version = 1;
  copy.status = MEDSHARD__NODE_STATUS__NODE_STATUS_UP;
  if (copy.role != MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER)
    copy.role = MEDSHARD__NODE_ROLE__NODE_ROLE_STANDBY;
  x->meta.epoch++;
  snprintf(msg, 256, "node %" PRIu32 " joined", n->node_id);
  return fsm__put_msg(x, T_NODES, k, 4, &copy.base);
}

static int node_state(struct fsm_txn *x, const Medshard__NodeState *s, Medshard__Outcome *out, char *msg)
{
  uint8_t k[4];
  MDB_val v;
  fsm__be(k, s->node_id, 4);
  if (s->status < MEDSHARD__NODE_STATUS__NODE_STATUS_UP || s->status > MEDSHARD__NODE_STATUS__NODE_STATUS_OUT)
    return reject(out, MSD_EPARAM, msg, "unknown node status %d", (int)s->status);
  if (fsm__get(x->txn, x->f, T_NODES, k, 4, &v) != 0)
    return reject(out, MSD_ENOTFOUND, msg, "node %" PRIu32 " is not in the cluster map", s->node_id);
  Medshard__NodeInfo *n = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
  if (n == NULL)
    return MSD_ECORRUPT; /* UNTESTED: our own record does not decode */
  n->status = s->status;
  x->meta.epoch++;
  int rc = fsm__put_msg(x, T_NODES, k, 4, &n->base);
  medshard__node_info__free_unpacked(n, NULL);
  snprintf(msg, 256, "node %" PRIu32 " state changed", s->node_id);
  return rc;
}


/* Why a CutBlock that is next in line disagrees with this node's state;
 * NULL if it agrees. */
static const char *cut_divergence(struct fsm_txn *x, const Medshard__CutBlock *c)
{
  uint8_t root[MERKLE_HASH];
  if (c->prev_hash.len != BLOCK_HASH || memcmp(c->prev_hash.data, x->head, BLOCK_HASH) != 0)
    return "previous hash differs from this node's head";
  if (c->size_before != x->meta.last_size || c->size_after > x->meta.leaves)
    return "tree sizes differ from this node's tree";
  if (c->root.len != MERKLE_HASH || merkle_tree_root(x->f->tree, c->size_after, root) != 0 ||
      memcmp(c->root.data, root, MERKLE_HASH) != 0)
    return "root differs from this node's tree";
  return NULL;
}

static int cut_block(struct fsm_txn *x, const Medshard__CutBlock *c, Medshard__Outcome *out, char *msg)
{
  if (c->height != x->meta.height + 1 || c->size_after <= c->size_before)
    return reject(out, MSD_ESTALE, msg, "CutBlock for height %" PRIu64 " (sizes %" PRIu64 "..%" PRIu64
                  ") but the chain is at height %" PRIu64, c->height, c->size_before,
                  c->size_after, x->meta.height);
  const char *why = cut_divergence(x, c);
  if (why != NULL) {
    /* Divergence is never silent: the alarm persists in the meta and halts
     * writes on this node; the entry still counts as applied. */
    snprintf(x->alarm, sizeof x->alarm, "block %" PRIu64 " (Raft index %" PRIu64 "): %s",
             c->height, x->index, why);
    return reject(out, MSD_EDIVERGED, msg, "DIVERGENCE: %s", x->alarm);
  }
  struct block_header h = {.height = c->height, .size_before = c->size_before,
                           .size_after = c->size_after, .raft_term = c->raft_term,
                           .raft_index = x->index, .timestamp_ms = c->timestamp_ms,
                           .epoch = x->meta.epoch};
  memcpy(h.prev_hash, x->head, BLOCK_HASH);
  memcpy(h.root, c->root.data, MERKLE_HASH);
  uint8_t bytes[BLOCK_HEADER_BYTES], hash[BLOCK_HASH], k[8];
  block_encode(&h, bytes);
  block_hash(&h, hash);
  int rc = chain_append_block(x->f->cf, &h, NULL);
  Medshard__BlockRecord rec = MEDSHARD__BLOCK_RECORD__INIT;
  rec.format_version = 1;
  rec.header = (ProtobufCBinaryData){sizeof bytes, bytes};
  rec.hash = (ProtobufCBinaryData){sizeof hash, hash};
  rec.voters = fsm__count_voters(x->txn, x->f);
  fsm__be(k, h.height, 8);
  if (rc == 0)
    rc = fsm__put_msg(x, T_BLOCKS, k, 8, &rec.base);
  memcpy(x->head, hash, BLOCK_HASH);
  x->meta.height = h.height;
  x->meta.last_size = h.size_after;
  out->height = h.height;
  snprintf(msg, 256, "block %" PRIu64 " cut at tree size %" PRIu64, h.height, h.size_after);
  return rc;
}

/* Advances meta.sealed past every consecutive sealed block. */
static void advance_sealed(struct fsm_txn *x)
{
  for (;;) {
    uint8_t k[8];
    MDB_val v;
    fsm__be(k, x->meta.sealed + 1, 8);
    if (fsm__get(x->txn, x->f, T_BLOCKS, k, 8, &v) != 0)
      return;
    Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, v.mv_size, v.mv_data);
    bool sealed = r != NULL && r->sealed;
    medshard__block_record__free_unpacked(r, NULL);
    if (!sealed)
      return;
    x->meta.sealed++;
  }
}

/* Counts the cosignatures of voters; a block with more than half its
 * voters' signatures is sealed. */
static bool majority(struct fsm_txn *x, const Medshard__BlockRecord *r)
{
  uint32_t n = 0;
  for (size_t i = 0; i < r->n_cosigs; i++) {
    uint8_t k[4];
    MDB_val v;
    fsm__be(k, r->cosigs[i]->node_id, 4);
    if (fsm__get(x->txn, x->f, T_NODES, k, 4, &v) != 0)
      continue; /* UNTESTED: only known nodes' cosignatures are recorded */
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
    n += ni != NULL && ni->role == MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER;
    medshard__node_info__free_unpacked(ni, NULL);
  }
  return r->voters > 0 && n > r->voters / 2;
}

/* 0 if the cosignature may be recorded, else a code with *why. */
static int cosig_problem(struct fsm_txn *x, const Medshard__Cosign *c,
                         const Medshard__BlockRecord *r, const char **why)
{
  uint8_t k[4];
  MDB_val v;
  fsm__be(k, c->node_id, 4);
  *why = "signer is not in the cluster map";
  if (fsm__get(x->txn, x->f, T_NODES, k, 4, &v) != 0)
    return MSD_ENOTFOUND;
  *why = "signer already cosigned this block";
  for (size_t i = 0; i < r->n_cosigs; i++)
    if (r->cosigs[i]->node_id == c->node_id)
      return MSD_EEXIST;
  Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
  bool ok = ni != NULL && c->signature.len == BLOCK_SIG_BYTES && r->hash.len == BLOCK_HASH &&
            block_cosig_valid(r->hash.data, ni->public_key.data, c->signature.data);
  medshard__node_info__free_unpacked(ni, NULL);
  *why = "signature does not verify with the signer's key";
  return ok ? 0 : MSD_EBADSIG;
}

static int cosign(struct fsm_txn *x, const Medshard__Cosign *c, Medshard__Outcome *out, char *msg)
{
  uint8_t k[8];
  MDB_val v;
  fsm__be(k, c->height, 8);
  if (fsm__get(x->txn, x->f, T_BLOCKS, k, 8, &v) != 0)
    return reject(out, MSD_ENOTFOUND, msg, "Cosign for unknown block %" PRIu64, c->height);
  Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, v.mv_size, v.mv_data);
  if (r == NULL)
    return MSD_ECORRUPT; /* UNTESTED: our own record does not decode */
  const char *why;
  int rc = cosig_problem(x, c, r, &why);
  if (rc != 0) {
    rc = reject(out, rc, msg, "Cosign of block %" PRIu64 " by node %" PRIu32 ": %s", c->height,
                c->node_id, why);
    goto done;
  }
  Medshard__BlockCosig sig = MEDSHARD__BLOCK_COSIG__INIT, **list;
  sig.node_id = c->node_id;
  sig.signature = c->signature;
  list = realloc(r->cosigs, (r->n_cosigs + 1) * sizeof *list);
  if (list == NULL) {
    rc = -ENOMEM; /* UNTESTED */
    goto done;
  }
  r->cosigs = list;
  r->cosigs[r->n_cosigs++] = &sig;
  r->sealed = r->sealed || majority(x, r);
  rc = fsm__put_msg(x, T_BLOCKS, k, 8, &r->base);
  r->n_cosigs--; /* sig lives on this stack frame */
  if (rc == 0)
    advance_sealed(x);
  snprintf(msg, 256, "block %" PRIu64 " cosigned by node %" PRIu32 "%s", c->height, c->node_id,
           r->sealed ? " (sealed)" : "");
  out->height = c->height;
done:
  medshard__block_record__free_unpacked(r, NULL);
  return rc;
}

int fsm__command(struct fsm_txn *x, const Medshard__Command *cmd, Medshard__Outcome *out,
                 uint8_t leaf_hash[MERKLE_HASH], char *msg, size_t msg_cap)
{
  (void)msg_cap; /* every handler writes at most 256 bytes; the caller's buffer holds them */
  switch (cmd->body_case) {
  case MEDSHARD__COMMAND__BODY_CREATE_BUCKET:
    return create_bucket(x, cmd->create_bucket, out, msg);
  case MEDSHARD__COMMAND__BODY_PUT_OBJECT:
    return put_object(x, cmd->put_object, out, leaf_hash, msg);
  case MEDSHARD__COMMAND__BODY_DELETE_OBJECT:
    return delete_object(x, cmd->delete_object, out, leaf_hash, msg);
  case MEDSHARD__COMMAND__BODY_UPDATE_SHARDS:
    return update_shards(x, cmd->update_shards, out, leaf_hash, msg);
  case MEDSHARD__COMMAND__BODY_NODE_JOIN:
    return node_join(x, cmd->node_join, out, msg);
  case MEDSHARD__COMMAND__BODY_NODE_STATE:
    return node_state(x, cmd->node_state, out, msg);
  case MEDSHARD__COMMAND__BODY_CUT_BLOCK:
    return cut_block(x, cmd->cut_block, out, msg);
  case MEDSHARD__COMMAND__BODY_COSIGN:
    return cosign(x, cmd->cosign, out, msg);
  default:
    return reject(out, MSD_EDECODE, msg, "unknown command");
  }
}
