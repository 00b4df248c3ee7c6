/* Read-only views of the FSM's state (fsm.h): the head, manifests,
 * listings, blocks, nodes, proofs and the state digest. Every query runs in
 * its own LMDB read transaction and copies what it returns. */
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/fsm_int.h"
#include "common/alloc.h"
#include "common/err.h"

static int rd_begin(const struct chain_fsm *f, MDB_txn **txn)
{
  if (f->poisoned)
    return f->poisoned;
  return mdb_txn_begin(f->env, NULL, MDB_RDONLY, txn) == 0 ? 0 : MSD_ECORRUPT;
}

/* Copies the value at key of table t out. */
static int lookup(const struct chain_fsm *f, enum fsm_table t, const void *key, size_t klen,
                  uint8_t **buf, size_t *len)
{
  MDB_txn *txn;
  MDB_val v;
  int rc = rd_begin(f, &txn);
  if (rc != 0)
    return rc;
  rc = fsm__get(txn, f, t, key, klen, &v);
  if (rc == 0)
    rc = fsm__copy_out(&v, buf, len);
  mdb_txn_abort(txn);
  return rc;
}

static uint32_t voters(const struct chain_fsm *f)
{
  MDB_txn *txn;
  if (rd_begin(f, &txn) != 0)
    return 0;
  uint32_t n = fsm__count_voters(txn, f);
  mdb_txn_abort(txn);
  return n;
}

void chain_fsm_head(const struct chain_fsm *f, struct chain_head *out)
{
  const Medshard__ChainMeta *m = f->meta;
  memset(out, 0, sizeof *out);
  out->applied = m->applied;
  out->leaves = m->leaves;
  out->height = m->height;
  out->last_size = m->last_size;
  out->sealed = m->sealed;
  out->epoch = m->epoch;
  out->voters = voters(f);
  if (m->head.len == BLOCK_HASH)
    memcpy(out->head, m->head.data, BLOCK_HASH);
  if (merkle_tree_root(f->tree, m->leaves, out->root) != 0)
    memset(out->root, 0, sizeof out->root); /* UNTESTED: the tree matches meta after open */
  snprintf(out->alarm, sizeof out->alarm, "%s",
           f->poisoned ? "state poisoned by a failed write; restart the node"
                       : (m->alarm ? m->alarm : ""));
}

int chain_fsm_next_block(const struct chain_fsm *f, struct block_header *h)
{
  const Medshard__ChainMeta *m = f->meta;
  if (f->poisoned || m->leaves == m->last_size)
    return MSD_ESTATE;
  memset(h, 0, sizeof *h);
  h->height = m->height + 1;
  if (m->head.len == BLOCK_HASH)
    memcpy(h->prev_hash, m->head.data, BLOCK_HASH);
  h->size_before = m->last_size;
  h->size_after = m->leaves;
  h->epoch = m->epoch;
  return merkle_tree_root(f->tree, h->size_after, h->root);
}

static bool has_cosig(const Medshard__BlockRecord *r, uint32_t node_id)
{
  for (size_t i = 0; i < r->n_cosigs; i++)
    if (r->cosigs[i]->node_id == node_id)
      return true;
  return false;
}

size_t chain_fsm_unsigned(const struct chain_fsm *f, uint32_t node_id, uint64_t *heights,
                          uint8_t (*hashes)[BLOCK_HASH], size_t cap)
{
  MDB_txn *txn;
  size_t n = 0;
  if (rd_begin(f, &txn) != 0)
    return 0;
  for (uint64_t h = f->meta->sealed + 1; h <= f->meta->height && n < cap; h++) {
    uint8_t k[8];
    MDB_val v;
    fsm__be(k, h, 8);
    if (fsm__get(txn, f, T_BLOCKS, k, 8, &v) != 0)
      break; /* UNTESTED: every height up to meta.height has a record */
    Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, v.mv_size, v.mv_data);
    if (r != NULL && !r->sealed && !has_cosig(r, node_id) && r->hash.len == BLOCK_HASH) {
      heights[n] = h;
      memcpy(hashes[n++], r->hash.data, BLOCK_HASH);
    }
    medshard__block_record__free_unpacked(r, NULL);
  }
  mdb_txn_abort(txn);
  return n;
}

int chain_fsm_outcome(const struct chain_fsm *f, const uint8_t *request_id, size_t id_len,
                      uint8_t **buf, size_t *len)
{
  if (id_len == 0 || id_len > 64)
    return MSD_EPARAM;
  return lookup(f, T_REQUESTS, request_id, id_len, buf, len);
}

int chain_fsm_manifest(const struct chain_fsm *f, const char *bucket, const char *key,
                       uint8_t **buf, size_t *len)
{
  uint8_t nk[FSM_NAME_KEY_MAX];
  size_t nlen = fsm__name_key(bucket, key, nk);
  if (nlen == 0)
    return MSD_EPARAM;
  MDB_txn *txn;
  MDB_val v;
  int rc = rd_begin(f, &txn);
  if (rc != 0)
    return rc;
  rc = fsm__get(txn, f, T_NAMES, nk, nlen, &v);
  if (rc == 0 && (v.mv_size != 25 || ((const uint8_t *)v.mv_data)[24] != 0))
    rc = MSD_ENOTFOUND; /* deleted: a tombstone keeps the version counter */
  uint8_t id[16];
  if (rc == 0) {
    memcpy(id, v.mv_data, 16);
    rc = fsm__get(txn, f, T_OBJECTS, id, 16, &v);
  }
  if (rc == 0)
    rc = fsm__copy_out(&v, buf, len);
  mdb_txn_abort(txn);
  return rc;
}

int chain_fsm_manifest_by_id(const struct chain_fsm *f, const uint8_t id[16], uint8_t **buf,
                             size_t *len)
{
  return lookup(f, T_OBJECTS, id, 16, buf, len);
}

int chain_fsm_bucket(const struct chain_fsm *f, const char *name, uint8_t **buf, size_t *len)
{
  if (name == NULL || name[0] == 0 || strlen(name) > 64)
    return MSD_EPARAM;
  return lookup(f, T_BUCKETS, name, strlen(name), buf, len);
}

int chain_fsm_block(const struct chain_fsm *f, uint64_t height, uint8_t **buf, size_t *len)
{
  uint8_t k[8];
  fsm__be(k, height, 8);
  return lookup(f, T_BLOCKS, k, 8, buf, len);
}

int chain_fsm_node(const struct chain_fsm *f, uint32_t node_id, uint8_t **buf, size_t *len)
{
  uint8_t k[4];
  fsm__be(k, node_id, 4);
  return lookup(f, T_NODES, k, 4, buf, len);
}

int chain_fsm_nodes(const struct chain_fsm *f, uint8_t **buf, size_t *len)
{
  MDB_txn *txn;
  MDB_cursor *c;
  MDB_val k, v;
  size_t total = 0, cap = 0;
  uint8_t *out = NULL;
  int rc = rd_begin(f, &txn);
  if (rc != 0)
    return rc;
  if (mdb_cursor_open(txn, f->dbi[T_NODES], &c) != 0) {
    mdb_txn_abort(txn);
    return MSD_ECORRUPT; /* UNTESTED */
  }
  for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0 && rc == 0;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    while (rc == 0 && total + 4 + v.mv_size > cap)
      rc = msd_grow(&out, &cap, cap, 1, 4096);
    if (rc == 0) {
      fsm__be(out + total, v.mv_size, 4);
      memcpy(out + total + 4, v.mv_data, v.mv_size);
      total += 4 + v.mv_size;
    }
  }
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  if (rc != 0) {
    msd_free(out);
    return rc;
  }
  *buf = out != NULL ? out : msd_malloc(1);
  *len = total;
  return *buf == NULL ? -ENOMEM : 0;
}

/* A LIST in progress (chain_fsm_list): what every listed name key starts
 * with, which name to step over, and the page being built. */
struct list_walk {
  const struct chain_fsm *f;
  MDB_txn *txn;
  const char *prefix;
  size_t plen, blen;
  uint8_t match[FSM_NAME_KEY_MAX]; /* bucket \0 and the prefix bytes every name key keeps */
  size_t mlen;
  uint8_t skip[FSM_NAME_KEY_MAX];  /* start_after's name key; slen 0: none */
  size_t slen;
  uint8_t *out;
  size_t len, cap, max_bytes;
  uint32_t count, limit;
  uint8_t last_id[16];             /* object id of the last name examined */
  bool unlisted;                   /* ... and that name was not listed */
};

/* LMDB's default key order: bytes, then the shorter first. */
static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
  int c = memcmp(a, b, alen < blen ? alen : blen);
  return c != 0 ? c : (alen > blen) - (alen < blen);
}

static int list_setup(struct list_walk *w, const struct chain_fsm *f, const char *bucket,
                      const char *prefix, const char *start_after)
{
  memset(w, 0, sizeof *w);
  w->f = f;
  w->prefix = prefix != NULL ? prefix : "";
  w->plen = strlen(w->prefix);
  w->blen = bucket != NULL ? strlen(bucket) : 0;
  if (w->blen == 0 || w->blen > 63 || w->plen > 1024)
    return MSD_EPARAM;
  /* A name key too long for LMDB keeps only the key's first bytes
   * (fsm__name_key): only those can narrow the cursor's range. */
  size_t kept = FSM_NAME_KEY_MAX - w->blen - 1 - 32;
  memcpy(w->match, bucket, w->blen + 1);
  memcpy(w->match + w->blen + 1, w->prefix, w->plen < kept ? w->plen : kept);
  w->mlen = w->blen + 1 + (w->plen < kept ? w->plen : kept);
  if (start_after != NULL && start_after[0] != 0 &&
      (w->slen = fsm__name_key(bucket, start_after, w->skip)) == 0)
    return MSD_EPARAM;
  return 0;
}

/* Appends one encoded manifest to the page; MSD_ESHORT if it would take
 * the page past max_bytes. The 4-byte length before each is also an upper
 * bound on what protobuf spends on a repeated field's tag and length, so a
 * page of max_bytes fits a response of that many bytes of manifests. */
static int page_add(struct list_walk *w, const void *msg, size_t n)
{
  if (w->len + 4 + n > w->max_bytes)
    return MSD_ESHORT;
  while (w->len + 4 + n > w->cap)
    if (msd_grow(&w->out, &w->cap, w->cap, 1, 4096) != 0)
      return -ENOMEM;
  fsm__be(w->out + w->len, n, 4);
  memcpy(w->out + w->len + 4, msg, n);
  w->len += 4 + n;
  return 0;
}

/* Whether name key k of object id starts with the whole prefix: the cursor
 * range checked the bytes the key keeps; a hashed name key (exactly
 * FSM_NAME_KEY_MAX bytes) under a longer prefix needs the manifest's key. */
static int name_matches(struct list_walk *w, const MDB_val *k, const uint8_t *id, bool *yes)
{
  size_t head = w->blen + 1;
  *yes = true;
  if (w->mlen == head + w->plen)
    return 0;
  if (k->mv_size < FSM_NAME_KEY_MAX) {
    *yes = k->mv_size >= head + w->plen &&
           memcmp((const uint8_t *)k->mv_data + head, w->prefix, w->plen) == 0;
    return 0;
  }
  MDB_val v;
  int rc = fsm__get(w->txn, w->f, T_OBJECTS, id, 16, &v);
  Medshard__Manifest *m = rc == 0 ? medshard__manifest__unpack(NULL, v.mv_size, v.mv_data) : NULL;
  if (m == NULL)
    return MSD_ECORRUPT; /* UNTESTED: every name has its manifest */
  *yes = m->key != NULL && strncmp(m->key, w->prefix, w->plen) == 0;
  medshard__manifest__free_unpacked(m, NULL);
  return 0;
}

/* Lists one name (key k, names table value v) if it is live and matches. */
static int list_name(struct list_walk *w, const MDB_val *k, const MDB_val *v)
{
  const uint8_t *nv = v->mv_data;
  if (v->mv_size != 25)
    return MSD_ECORRUPT; /* UNTESTED: the FSM writes 25-byte values */
  memcpy(w->last_id, nv, 16);
  w->unlisted = true;
  if (nv[24] != 0)
    return 0; /* deleted: the tombstone only keeps the version counter */
  bool yes;
  int rc = name_matches(w, k, nv, &yes);
  if (rc != 0 || !yes)
    return rc;
  MDB_val m;
  rc = fsm__get(w->txn, w->f, T_OBJECTS, nv, 16, &m);
  if (rc == MSD_ENOTFOUND)
    rc = MSD_ECORRUPT; /* UNTESTED: every name has its manifest */
  if (rc == 0)
    rc = page_add(w, m.mv_data, m.mv_size);
  if (rc == 0) {
    w->count++;
    w->unlisted = false;
  }
  return rc;
}

/* Ends a page that the scan limit cut short after names it did not list
 * with a marker naming the last of them (fsm.h), so the next page starts
 * past them instead of scanning them again. */
static int list_marker(struct list_walk *w)
{
  MDB_val v;
  uint8_t buf[1280]; /* 63-byte bucket, 1024-byte key and a few tags */
  int rc = fsm__get(w->txn, w->f, T_OBJECTS, w->last_id, 16, &v);
  Medshard__Manifest *m = rc == 0 ? medshard__manifest__unpack(NULL, v.mv_size, v.mv_data) : NULL;
  if (m == NULL)
    return MSD_ECORRUPT; /* UNTESTED: every name has its manifest */
  Medshard__Manifest mk = MEDSHARD__MANIFEST__INIT;
  mk.format_version = 1;
  mk.bucket = m->bucket;
  mk.key = m->key;
  mk.deleted = true;
  size_t n = medshard__manifest__get_packed_size(&mk);
  rc = n > sizeof buf ? MSD_ECORRUPT : 0; /* UNTESTED: names are bounded on put */
  if (rc == 0)
    medshard__manifest__pack(&mk, buf);
  if (rc == 0)
    rc = page_add(w, buf, n);
  if (rc == MSD_ESHORT && w->count > 0)
    rc = 0; /* no room: the page's last manifest is where to resume */
  medshard__manifest__free_unpacked(m, NULL);
  return rc;
}

/* Walks the names table from the later of the prefix and start_after. */
static int list_run(struct list_walk *w, bool *truncated)
{
  MDB_cursor *c;
  MDB_val k, v;
  bool from_skip = w->slen > 0 && name_cmp(w->skip, w->slen, w->match, w->mlen) > 0;
  k = from_skip ? (MDB_val){w->slen, w->skip} : (MDB_val){w->mlen, w->match};
  if (mdb_cursor_open(w->txn, w->f->dbi[T_NAMES], &c) != 0)
    return MSD_ECORRUPT; /* UNTESTED */
  int rc = 0, scanned = 0;
  for (int r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && r == 0;
       r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (k.mv_size < w->mlen || memcmp(k.mv_data, w->match, w->mlen) != 0)
      break; /* past the bucket or the prefix: nothing more to list */
    if (k.mv_size == w->slen && memcmp(k.mv_data, w->skip, w->slen) == 0)
      continue;
    if (w->count == w->limit || scanned++ == CHAIN_LIST_SCAN_MAX) {
      *truncated = true;
      break;
    }
    rc = list_name(w, &k, &v);
    if (rc == MSD_ESHORT && w->count > 0) {
      rc = 0; /* the page is full */
      w->unlisted = false;
      *truncated = true;
      break;
    }
  }
  mdb_cursor_close(c);
  if (rc == 0 && *truncated && w->unlisted)
    rc = list_marker(w);
  return rc;
}

int chain_fsm_list(const struct chain_fsm *f, const char *bucket, const char *prefix,
                   const char *start_after, uint32_t limit, size_t max_bytes, uint8_t **buf,
                   size_t *len, bool *truncated)
{
  struct list_walk w;
  MDB_val v;
  *truncated = false;
  int rc = list_setup(&w, f, bucket, prefix, start_after);
  if (rc != 0)
    return rc;
  w.limit = limit == 0 || limit > CHAIN_LIST_MAX ? CHAIN_LIST_MAX : limit;
  w.max_bytes = max_bytes;
  rc = rd_begin(f, &w.txn);
  if (rc != 0)
    return rc;
  rc = fsm__get(w.txn, f, T_BUCKETS, bucket, w.blen, &v);
  if (rc == 0)
    rc = list_run(&w, truncated);
  mdb_txn_abort(w.txn);
  if (rc == 0 && w.out == NULL && (w.out = msd_malloc(1)) == NULL)
    rc = -ENOMEM;
  if (rc != 0) {
    msd_free(w.out);
    *truncated = false;
    return rc;
  }
  *buf = w.out;
  *len = w.len;
  return 0;
}

/* The first block whose tree covers leaf `index` (binary search). */
static int covering_block(MDB_txn *txn, const struct chain_fsm *f, uint64_t index,
                          Medshard__BlockRecord **out, struct block_header *h)
{
  uint64_t lo = 1, hi = f->meta->height, found = 0;
  while (lo <= hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    uint8_t k[8];
    MDB_val v;
    fsm__be(k, mid, 8);
    if (fsm__get(txn, f, T_BLOCKS, k, 8, &v) != 0)
      return MSD_ECORRUPT; /* UNTESTED */
    Medshard__BlockRecord *r = medshard__block_record__unpack(NULL, v.mv_size, v.mv_data);
    int rc = r == NULL ? MSD_ECORRUPT : block_decode(r->header.data, r->header.len, h);
    medshard__block_record__free_unpacked(r, NULL);
    if (rc != 0)
      return rc;
    if (h->size_after > index)
      found = mid, hi = mid - 1;
    else
      lo = mid + 1;
  }
  if (found == 0)
    return MSD_ENOTFOUND;
  uint8_t k[8];
  MDB_val v;
  fsm__be(k, found, 8);
  if (fsm__get(txn, f, T_BLOCKS, k, 8, &v) != 0)
    return MSD_ECORRUPT; /* UNTESTED */
  *out = medshard__block_record__unpack(NULL, v.mv_size, v.mv_data);
  return *out == NULL ? MSD_ECORRUPT : block_decode((*out)->header.data, (*out)->header.len, h);
}

/* Packs the bundle for leaf `index` given its covering block. */
static int pack_proof(const struct chain_fsm *f, MDB_txn *txn, uint64_t index,
                      Medshard__BlockRecord *r, const struct block_header *h, uint8_t **buf,
                      size_t *len)
{
  uint8_t k[8], leaf[CHAIN_PAYLOAD_MAX], kind, path[MERKLE_PROOF_MAX][MERKLE_HASH];
  ProtobufCBinaryData items[MERKLE_PROOF_MAX];
  MDB_val v;
  size_t leaf_len;
  int n;
  fsm__be(k, index, 8);
  int rc = fsm__get(txn, f, T_LEAVES, k, 8, &v);
  if (rc == 0)
    rc = chain_read_record(f->cf, fsm__get_be(v.mv_data, 8), &kind, leaf, sizeof leaf, &leaf_len);
  if (rc == 0)
    rc = merkle_tree_inclusion(f->tree, index, h->size_after, path, &n);
  if (rc != 0)
    return rc;
  Medshard__ProofBundle pb = MEDSHARD__PROOF_BUNDLE__INIT;
  pb.format_version = 1;
  pb.leaf = (ProtobufCBinaryData){leaf_len, leaf};
  pb.leaf_index = index;
  for (int i = 0; i < n; i++)
    items[i] = (ProtobufCBinaryData){MERKLE_HASH, path[i]};
  pb.path = items;
  pb.n_path = (size_t)n;
  pb.block_header = r->header;
  pb.cosigs = r->cosigs;
  pb.n_cosigs = r->n_cosigs;
  *len = medshard__proof_bundle__get_packed_size(&pb);
  *buf = msd_malloc(*len);
  if (*buf == NULL)
    return -ENOMEM;
  medshard__proof_bundle__pack(&pb, *buf);
  return 0;
}

int chain_fsm_proof(const struct chain_fsm *f, uint64_t index, uint8_t **buf, size_t *len)
{
  MDB_txn *txn;
  if (index >= f->meta->leaves)
    return MSD_ENOTFOUND;
  int rc = rd_begin(f, &txn);
  if (rc != 0)
    return rc;
  Medshard__BlockRecord *r = NULL;
  struct block_header h;
  rc = covering_block(txn, f, index, &r, &h);
  if (rc == 0)
    rc = pack_proof(f, txn, index, r, &h, buf, len);
  medshard__block_record__free_unpacked(r, NULL);
  mdb_txn_abort(txn);
  return rc;
}

int chain_fsm_chain_bytes(const struct chain_fsm *f, uint64_t off, uint8_t *buf, size_t cap,
                          size_t *len)
{
  if (f->poisoned)
    return f->poisoned;
  return chain_file_read(f->cf, off, buf, cap, len);
}

static int digest_table(MDB_txn *txn, const struct chain_fsm *f, int t, EVP_MD_CTX *ctx)
{
  MDB_cursor *c;
  MDB_val k, v;
  if (mdb_cursor_open(txn, f->dbi[t], &c) != 0)
    return MSD_ECORRUPT; /* UNTESTED */
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    uint8_t lens[12];
    lens[0] = (uint8_t)t;
    fsm__be(lens + 1, k.mv_size, 4);
    fsm__be(lens + 5, v.mv_size, 4);
    EVP_DigestUpdate(ctx, lens, 9);
    EVP_DigestUpdate(ctx, k.mv_data, k.mv_size);
    EVP_DigestUpdate(ctx, v.mv_data, v.mv_size);
  }
  mdb_cursor_close(c);
  return 0;
}

/* The chain file's committed bytes: records the tables do not hold (the
 * leaves themselves, the order of leaves and blocks). */
static int digest_chain(const struct chain_fsm *f, EVP_MD_CTX *ctx)
{
  uint8_t buf[16384];
  uint64_t off = 0, end = f->meta->chain_bytes;
  while (off < end) {
    size_t got, want = end - off < sizeof buf ? (size_t)(end - off) : sizeof buf;
    int rc = chain_file_read(f->cf, off, buf, want, &got);
    if (rc != 0)
      return rc;
    if (got == 0)
      return MSD_ECORRUPT; /* UNTESTED: the file holds meta.chain_bytes after open */
    EVP_DigestUpdate(ctx, buf, got);
    off += got;
  }
  return 0;
}

int chain_fsm_digest(const struct chain_fsm *f, uint8_t out[32])
{
  MDB_txn *txn;
  int rc = rd_begin(f, &txn);
  if (rc != 0)
    return rc;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
    rc = -ENOMEM; /* UNTESTED */
  for (int t = 0; rc == 0 && t < T_COUNT; t++)
    rc = digest_table(txn, f, t, ctx);
  if (rc == 0)
    rc = digest_chain(f, ctx);
  uint8_t root[MERKLE_HASH];
  if (rc == 0)
    rc = merkle_tree_root(f->tree, merkle_tree_size(f->tree), root);
  unsigned int n = 32;
  if (rc == 0 && (!EVP_DigestUpdate(ctx, root, sizeof root) || !EVP_DigestFinal_ex(ctx, out, &n)))
    rc = -ENOMEM; /* UNTESTED */
  EVP_MD_CTX_free(ctx);
  mdb_txn_abort(txn);
  return rc;
}
