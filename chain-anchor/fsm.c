/* The FSM's lifecycle and its apply loop (fsm.h). State lives in
 * <dir>/meta (LMDB), <dir>/chain (chain file) and <dir>/tree (hash cache).
 * LMDB runs with MDB_NOSYNC: the Raft log is the durable record and the
 * meta's applied index says which entries the state already holds, so a
 * process crash replays the rest; chain_fsm_snapshot syncs everything
 * before Raft may drop log entries. */
#include "chain-anchor/fsm_int.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"

static const char *const table_name[T_COUNT] = {"meta",     "buckets", "names",
                                                "objects",  "nodes",   "requests",
                                                "blocks",   "leaves",  "node_shards",
                                                "entries"};

void fsm__be(uint8_t *p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++)
    p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

uint64_t fsm__get_be(const uint8_t *p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v = v << 8 | p[i];
  return v;
}

static int mdb_rc(int rc)
{
  if (rc == 0)
    return 0;
  if (rc == MDB_NOTFOUND)
    return MSD_ENOTFOUND;
  if (rc == MDB_MAP_FULL)
    return MSD_EDISKFULL;
  return rc > 0 ? -rc : MSD_ECORRUPT; /* LMDB: errno values or its own codes */
}

int fsm__get(MDB_txn *txn, const struct chain_fsm *f, enum fsm_table t, const void *key,
             size_t klen, MDB_val *val)
{
  MDB_val k = {klen, (void *)key};
  return mdb_rc(mdb_get(txn, f->dbi[t], &k, val));
}

int fsm__put(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen, const void *val,
             size_t vlen)
{
  MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
  return mdb_rc(mdb_put(x->txn, x->f->dbi[t], &k, &v, 0));
}

int fsm__append(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen,
                const void *val, size_t vlen)
{
  MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
  return mdb_rc(mdb_put(x->txn, x->f->dbi[t], &k, &v, MDB_APPEND));
}

int fsm__del(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen)
{
  MDB_val k = {klen, (void *)key};
  int rc = mdb_rc(mdb_del(x->txn, x->f->dbi[t], &k, NULL));
  return rc == MSD_ENOTFOUND ? 0 : rc;
}

int fsm__put_msg(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen,
                 const ProtobufCMessage *msg)
{
  size_t n = protobuf_c_message_get_packed_size(msg);
  MDB_val k = {klen, (void *)key}, v = {n, NULL};
  /* MDB_RESERVE: pack straight into the page LMDB gives us. */
  int rc = mdb_rc(mdb_put(x->txn, x->f->dbi[t], &k, &v, MDB_RESERVE));
  if (rc == 0)
    protobuf_c_message_pack(msg, v.mv_data);
  return rc;
}

uint32_t fsm__count_voters(MDB_txn *txn, const struct chain_fsm *f)
{
  MDB_cursor *c;
  MDB_val k, v;
  uint32_t n = 0;
  if (mdb_cursor_open(txn, f->dbi[T_NODES], &c) != 0)
    return 0; /* UNTESTED: the table exists from open */
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, v.mv_size, v.mv_data);
    n += ni != NULL && ni->role == MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER;
    medshard__node_info__free_unpacked(ni, NULL);
  }
  mdb_cursor_close(c);
  return n;
}

int fsm__copy_out(const MDB_val *v, uint8_t **buf, size_t *len)
{
  *buf = msd_malloc(v->mv_size ? v->mv_size : 1);
  if (*buf == NULL)
    return -ENOMEM;
  memcpy(*buf, v->mv_data, v->mv_size);
  *len = v->mv_size;
  return 0;
}

size_t fsm__name_key(const char *bucket, const char *key, uint8_t out[FSM_NAME_KEY_MAX])
{
  size_t b = bucket ? strlen(bucket) : 0, k = key ? strlen(key) : 0;
  if (b == 0 || b > 63 || k == 0 || k > 1024)
    return 0;
  memcpy(out, bucket, b);
  out[b] = 0;
  if (b + 1 + k < FSM_NAME_KEY_MAX) {
    memcpy(out + b + 1, key, k);
    return b + 1 + k;
  }
  /* S3 allows 1024-byte keys but LMDB refuses keys over 511 bytes, and a
   * refused put would fail the apply (and poison every node). Keeping the
   * key's first bytes keeps names roughly in order for listings. */
  size_t keep = FSM_NAME_KEY_MAX - b - 1 - 32;
  memcpy(out + b + 1, key, keep);
  unsigned int n = 32;
  if (!EVP_Digest(key, k, out + b + 1 + keep, &n, EVP_sha256(), NULL))
    return 0; /* UNTESTED: SHA-256 does not fail */
  return FSM_NAME_KEY_MAX;
}

static int load_meta(struct chain_fsm *f)
{
  MDB_txn *txn;
  MDB_val v;
  int rc = mdb_rc(mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn));
  if (rc != 0)
    return rc;
  rc = fsm__get(txn, f, T_META, "meta", 4, &v);
  Medshard__ChainMeta *m = NULL;
  if (rc == 0) {
    m = medshard__chain_meta__unpack(NULL, v.mv_size, v.mv_data);
    rc = m == NULL ? MSD_ECORRUPT : m->format_version != 1 ? MSD_EVERSION : 0;
  } else if (rc == MSD_ENOTFOUND) {
    /* A fresh state: an all-zero meta (head 32 zero bytes). */
    static const Medshard__ChainMeta empty = MEDSHARD__CHAIN_META__INIT;
    uint8_t tmp[64];
    size_t n = medshard__chain_meta__pack(&empty, tmp);
    m = medshard__chain_meta__unpack(NULL, n, tmp);
    rc = m == NULL ? -ENOMEM : 0;
  }
  mdb_txn_abort(txn);
  if (rc != 0) {
    if (m != NULL)
      medshard__chain_meta__free_unpacked(m, NULL);
    return rc;
  }
  if (f->meta != NULL)
    medshard__chain_meta__free_unpacked(f->meta, NULL);
  f->meta = m;
  return 0;
}

static int open_lmdb(struct chain_fsm *f)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/meta", f->dir);
  if (mkdir(path, 0700) != 0 && errno != EEXIST)
    return -errno;
  int rc = mdb_rc(mdb_env_create(&f->env));
  if (rc != 0)
    return rc;
  mdb_env_set_maxdbs(f->env, T_COUNT);
  mdb_env_set_mapsize(f->env, f->map_bytes);
  rc = mdb_rc(mdb_env_open(f->env, path, MDB_NOSYNC | MDB_NOTLS, 0600));
  /* Table keys (fsm__name_key) are laid out for LMDB's default limit; a
   * build with a smaller one would refuse some of them. */
  if (rc == 0 && mdb_env_get_maxkeysize(f->env) < FSM_NAME_KEY_MAX)
    rc = MSD_ESTATE; /* UNTESTED: needs an LMDB built with MDB_MAXKEYSIZE < 511 */
  MDB_txn *txn = NULL;
  if (rc == 0)
    rc = mdb_rc(mdb_txn_begin(f->env, NULL, 0, &txn));
  for (int t = 0; rc == 0 && t < T_COUNT; t++)
    rc = mdb_rc(mdb_dbi_open(txn, table_name[t], MDB_CREATE, &f->dbi[t]));
  if (txn != NULL)
    rc = rc == 0 ? mdb_rc(mdb_txn_commit(txn)) : (mdb_txn_abort(txn), rc);
  return rc;
}

/* Rebuilds the hash cache from the chain file's leaves (after a restore, or
 * when the cache lost leaves the chain file has). */
static int tree_add_leaf(void *ctx, uint8_t kind, const uint8_t *payload, size_t len, uint64_t off)
{
  (void)off;
  struct chain_fsm *f = ctx;
  if (kind != CHAIN_REC_LEAF)
    return 0;
  uint8_t h[MERKLE_HASH];
  merkle_leaf_hash(payload, len, h);
  return merkle_tree_append(f->tree, h);
}

/* Cuts chain file and tree back to the committed meta: records of an apply
 * whose transaction never committed (a crash mid-apply) are dropped. */
static int roll_back_to_meta(struct chain_fsm *f)
{
  uint64_t bytes = f->meta->chain_bytes ? f->meta->chain_bytes : chain_file_size(f->cf);
  if (f->meta->chain_bytes == 0 && f->meta->applied == 0)
    bytes = 16; /* nothing committed yet: just the file header */
  if (chain_file_size(f->cf) < bytes)
    return MSD_ECORRUPT; /* the chain lost committed records: not rollback */
  int rc = chain_file_truncate(f->cf, bytes);
  if (rc != 0)
    return rc;
  uint64_t want = f->meta->leaves;
  if (merkle_tree_size(f->tree) > want)
    return merkle_tree_truncate(f->tree, want);
  if (merkle_tree_size(f->tree) < want) {
    rc = merkle_tree_truncate(f->tree, 0);
    if (rc == 0)
      rc = chain_file_scan(f->chain_path, tree_add_leaf, f, NULL);
    if (rc == 0 && merkle_tree_size(f->tree) != want)
      rc = MSD_ECORRUPT;
  }
  return rc;
}

int fsm__open_state(struct chain_fsm *f)
{
  char path[PATH_MAX];
  int rc = open_lmdb(f);
  if (rc == 0)
    rc = load_meta(f);
  if (rc == 0)
    rc = chain_file_open(f->chain_path, 1, &f->cf);
  if (rc == 0)
    chain_file_buffer(f->cf, true); /* written once per entry, in commit() */
  snprintf(path, sizeof path, "%s/tree", f->dir);
  if (rc == 0)
    rc = merkle_tree_open(path, &f->tree);
  if (rc == 0)
    rc = roll_back_to_meta(f);
  if (rc != 0)
    fsm__close_state(f);
  return rc;
}

void fsm__close_state(struct chain_fsm *f)
{
  if (f->env != NULL)
    mdb_env_close(f->env);
  f->env = NULL;
  chain_file_close(f->cf);
  f->cf = NULL;
  merkle_tree_close(f->tree);
  f->tree = NULL;
}

int chain_fsm_open(const struct chain_fsm_config *cfg, struct chain_fsm **out)
{
  if (cfg == NULL || cfg->dir == NULL || out == NULL || cfg->secret_len > 64 ||
      strlen(cfg->dir) >= sizeof ((struct chain_fsm *)0)->dir)
    return MSD_EPARAM;
  if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST)
    return -errno;
  struct chain_fsm *f = msd_calloc(1, sizeof *f);
  if (f == NULL)
    return -ENOMEM;
  snprintf(f->dir, sizeof f->dir, "%s", cfg->dir);
  snprintf(f->chain_path, sizeof f->chain_path, "%s/chain", cfg->dir);
  if (cfg->secret_len > 0)
    memcpy(f->secret, cfg->secret, cfg->secret_len);
  f->secret_len = cfg->secret_len;
  f->map_bytes = cfg->map_bytes ? cfg->map_bytes : (uint64_t)16 << 30;
  int rc = f->secret_len > 0 ? hash_hmac_init(&f->tag_key, f->secret, f->secret_len) : 0;
  if (rc == 0)
    rc = fsm__open_state(f);
  if (rc != 0) {
    if (f->meta != NULL)
      medshard__chain_meta__free_unpacked(f->meta, NULL);
    hash_hmac_free(&f->tag_key);
    msd_free(f);
    return rc;
  }
  *out = f;
  return 0;
}

void chain_fsm_close(struct chain_fsm *f)
{
  if (f == NULL)
    return;
  fsm__close_state(f);
  if (f->meta != NULL)
    medshard__chain_meta__free_unpacked(f->meta, NULL);
  hash_hmac_free(&f->tag_key);
  msd_free(f);
}

const char *chain_fsm_chain_path(const struct chain_fsm *f)
{
  return f->chain_path;
}

int fsm__append_leaf(struct fsm_txn *x, const uint8_t *leaf, size_t len, uint64_t *index,
                     uint8_t hash[MERKLE_HASH])
{
  uint64_t off;
  int rc = chain_append_leaf(x->f->cf, leaf, len, &off);
  if (rc != 0)
    return rc;
  merkle_leaf_hash(leaf, len, hash);
  rc = merkle_tree_append(x->f->tree, hash);
  if (rc != 0)
    return rc;
  *index = x->meta.leaves++;
  uint8_t k[8], v[8];
  fsm__be(k, *index, 8);
  fsm__be(v, off, 8);
  return fsm__append(x, T_LEAVES, k, 8, v, 8);
}

/* Applies one command and records its outcome under its request id; a
 * request id seen before makes the command a no-op. */
static int apply_command(struct fsm_txn *x, const Medshard__Command *cmd)
{
  MDB_val seen;
  if (cmd->request_id.len > 64) {
    /* Such an id could be neither recorded nor looked up (chain_fsm_outcome
     * takes 1-64 bytes), so a retry would apply twice: refuse it. */
    msd_log(MSD_LOG_INFO, "chain: entry %" PRIu64 ": command with a %zu-byte request id (at most"
            " 64) ignored", x->index, cmd->request_id.len);
    return 0;
  }
  bool has_id = cmd->request_id.len > 0;
  if (has_id && fsm__get(x->txn, x->f, T_REQUESTS, cmd->request_id.data, cmd->request_id.len,
                         &seen) == 0)
    return 0;
  if (cmd->body_case != MEDSHARD__COMMAND__BODY_PUT_OBJECT) {
    x->nknown = 0;
    x->policy_bucket[0] = 0;
  }
  Medshard__Outcome out = MEDSHARD__OUTCOME__INIT;
  Medshard__AnchorRef ref = MEDSHARD__ANCHOR_REF__INIT;
  uint8_t leaf_hash[MERKLE_HASH];
  char msg[256] = "";
  out.anchor = &ref;
  int rc = fsm__command(x, cmd, &out, leaf_hash, msg, sizeof msg);
  if (rc != 0)
    return rc;
  if (ref.leaf_hash.len == 0)
    out.anchor = NULL;
  out.message = msg;
  if (out.code != 0)
    msd_log(MSD_LOG_INFO, "chain: entry %" PRIu64 ": command rejected: %s", x->index, msg);
  return has_id ? fsm__put_msg(x, T_REQUESTS, cmd->request_id.data, cmd->request_id.len,
                               &out.base)
                : 0;
}

/* Commits the transaction. *committed tells the caller whether LMDB holds
 * the entry: only then may the chain file and tree keep its records. */
static int commit(struct fsm_txn *x, bool *committed)
{
  x->meta.applied = x->index;
  x->meta.chain_bytes = chain_file_size(x->f->cf);
  x->meta.head.data = x->head;
  x->meta.head.len = BLOCK_HASH;
  x->meta.alarm = x->alarm;
  *committed = false;
  /* The records go to the file before LMDB names its new length, so a
   * crash in between leaves only bytes that open() cuts back. */
  int rc = chain_file_flush(x->f->cf);
  if (rc == 0)
    rc = fsm__put_msg(x, T_META, "meta", 4, &x->meta.base);
  if (rc == 0) {
    rc = mdb_rc(mdb_txn_commit(x->txn));
    *committed = rc == 0;
  } else {
    mdb_txn_abort(x->txn);
  }
  x->txn = NULL;
  return rc == 0 ? load_meta(x->f) : rc;
}

static void begin_meta(struct fsm_txn *x)
{
  const Medshard__ChainMeta *m = x->f->meta;
  x->meta = *m;
  memset(x->head, 0, sizeof x->head);
  if (m->head.len == BLOCK_HASH)
    memcpy(x->head, m->head.data, BLOCK_HASH);
  snprintf(x->alarm, sizeof x->alarm, "%s", m->alarm ? m->alarm : "");
  x->meta.format_version = 1;
}

/* Entries whose hash is kept: more than libraft replays after a restart
 * (everything after its last snapshot: threshold plus trailing). */
#define ENTRY_WINDOW 16384

static void entry_hash(const uint8_t *buf, size_t len, uint8_t out[16])
{
  XXH128_hash_t h = XXH3_128bits(buf, len);
  fsm__be(out, h.high64, 8);
  fsm__be(out + 8, h.low64, 8);
}

/* Remembers the entry's hash and forgets the one ENTRY_WINDOW back. */
static int record_entry(struct fsm_txn *x, const uint8_t *buf, size_t len)
{
  uint8_t k[8], v[16];
  entry_hash(buf, len, v);
  fsm__be(k, x->index, 8);
  int rc = fsm__put(x, T_ENTRIES, k, 8, v, 16);
  if (rc == 0 && x->index > ENTRY_WINDOW) {
    fsm__be(k, x->index - ENTRY_WINDOW, 8);
    rc = fsm__del(x, T_ENTRIES, k, 8);
  }
  return rc;
}

/* Sets the persistent alarm (if none is set yet) without applying. */
static int raise_alarm(struct chain_fsm *f, const char *why)
{
  struct fsm_txn x = {.f = f};
  int rc = mdb_rc(mdb_txn_begin(f->env, NULL, 0, &x.txn));
  if (rc != 0)
    return rc;
  begin_meta(&x);
  if (x.alarm[0] == 0)
    snprintf(x.alarm, sizeof x.alarm, "%s", why);
  x.meta.head.data = x.head;
  x.meta.head.len = BLOCK_HASH;
  x.meta.alarm = x.alarm;
  rc = fsm__put_msg(&x, T_META, "meta", 4, &x.meta.base);
  if (rc == 0)
    rc = mdb_rc(mdb_txn_commit(x.txn));
  else
    mdb_txn_abort(x.txn);
  return rc == 0 ? load_meta(f) : rc;
}

/* An entry at or below the applied index is a replay after a restart and
 * changes nothing, but it must be the entry that was applied: a damaged
 * or truncated Raft log, or an entry libraft 0.15 applied without a
 * majority and later replaced, would otherwise diverge silently. */
static int check_replay(struct chain_fsm *f, uint64_t index, const uint8_t *buf, size_t len)
{
  MDB_txn *txn;
  MDB_val v;
  uint8_t k[8], want[16];
  fsm__be(k, index, 8);
  if (mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn) != 0)
    return 0; /* UNTESTED: the check is best effort; the entry changes nothing */
  bool differs = fsm__get(txn, f, T_ENTRIES, k, 8, &v) == 0 && v.mv_size == 16 &&
                 (entry_hash(buf, len, want), memcmp(want, v.mv_data, 16) != 0);
  mdb_txn_abort(txn);
  if (!differs)
    return 0;
  char why[160];
  snprintf(why, sizeof why, "Raft entry %" PRIu64 " differs from the entry this node applied"
           " at that index: its state has diverged", index);
  msd_log(MSD_LOG_ERROR, "chain: %s", why);
  /* The entry itself changes nothing, so libraft must not retry it; if
   * the alarm cannot be written the log line above still says it all. */
  (void)raise_alarm(f, why);
  return 0;
}

int chain_fsm_apply(struct chain_fsm *f, uint64_t index, const uint8_t *buf, size_t len)
{
  if (f->poisoned)
    return f->poisoned;
  if (index <= f->meta->applied)
    return check_replay(f, index, buf, len);
  struct fsm_txn x = {.f = f, .index = index};
  int rc = mdb_rc(mdb_txn_begin(f->env, NULL, 0, &x.txn));
  if (rc != 0)
    goto poison;
  begin_meta(&x);
  Medshard__CommandBatch *b = medshard__command_batch__unpack(NULL, len, buf);
  if (b == NULL || b->format_version != 1) {
    /* The leader appends only batches it encoded, so bytes that do not
     * decode mean this node's copy of the log is damaged, and a newer
     * version means this node is too old to follow. Skipping either would
     * diverge silently: count the entry, halt writes. */
    char why[128];
    if (b == NULL)
      snprintf(why, sizeof why, "does not decode: this node's Raft log is damaged");
    else
      snprintf(why, sizeof why, "is a version %" PRIu32 " command batch; this node reads"
               " version 1 only", b->format_version);
    msd_log(MSD_LOG_ERROR, "chain: Raft entry %" PRIu64 " (%zu bytes) %s", index, len, why);
    if (x.alarm[0] == 0)
      snprintf(x.alarm, sizeof x.alarm, "Raft entry %" PRIu64 " %s", index, why);
  } else {
    x.now_ms = b->timestamp_ms;
    for (size_t i = 0; rc == 0 && i < b->n_commands; i++)
      rc = apply_command(&x, b->commands[i]);
  }
  if (b != NULL)
    medshard__command_batch__free_unpacked(b, NULL);
  if (rc == 0)
    rc = record_entry(&x, buf, len);
  if (rc == 0) {
    bool committed;
    rc = commit(&x, &committed);
    if (rc == 0)
      return 0;
    /* Once LMDB committed, its meta names the new chain length: cutting the
     * chain back to the (stale) decoded meta would lose committed records
     * and make the next open fail. Only poison. */
    if (committed)
      goto poisoned; /* UNTESTED: load_meta fails only on ENOMEM */
  } else {
    mdb_txn_abort(x.txn);
  }
poison:
  /* Nothing of this entry may stay: cut chain and tree back, then refuse
   * everything (libraft would retry a failing apply forever). */
  roll_back_to_meta(f);
poisoned:
  msd_log(MSD_LOG_ERROR, "chain: applying entry %" PRIu64 " failed: %s; state poisoned, restart"
          " the node", index, msd_strerror(rc));
  f->poisoned = rc < 0 ? rc : MSD_EPOISONED;
  return f->poisoned;
}
