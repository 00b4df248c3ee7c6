/* The store's LMDB index: meta, shard entries and segment accounting.
 * LMDB commits are durable when they return (it fsyncs), which is what
 * makes a seal durable after the data's fdatasync. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

#define INDEX_MAP_SIZE ((size_t)64 << 30) /* address space only; the file grows as used */

static int mdb_rc(int rc)
{
  if (rc == 0)
    return 0;
  if (rc > 0)
    return -rc; /* LMDB passes errno values through */
  if (rc == MDB_MAP_FULL)
    return MSD_EDISKFULL;
  return MSD_ECORRUPT;
}

void store__key(const struct store_id *id, uint8_t key[20])
{
  memcpy(key, id->oid, STORE_OID_BYTES);
  /* Big-endian index so a cursor walks an object's shards in order. */
  key[16] = (uint8_t)(id->index >> 24), key[17] = (uint8_t)(id->index >> 16);
  key[18] = (uint8_t)(id->index >> 8), key[19] = (uint8_t)id->index;
}

void store__key_id(const uint8_t key[20], struct store_id *id)
{
  memcpy(id->oid, key, STORE_OID_BYTES);
  id->index = (uint32_t)key[16] << 24 | (uint32_t)key[17] << 16 | (uint32_t)key[18] << 8 | key[19];
}

static int meta_load(struct store *s, MDB_txn *txn, bool create)
{
  MDB_val k = {4, "meta"}, v;
  int rc = mdb_get(txn, s->dbi_meta, &k, &v);
  if (rc == MDB_NOTFOUND && create) {
    memset(&s->meta, 0, sizeof s->meta);
    s->meta.version = IDX_VERSION;
    s->meta.next_seg = 1;
    s->meta.next_seq = 1;
    if (getrandom(s->meta.uuid, sizeof s->meta.uuid, 0) != sizeof s->meta.uuid)
      return -errno;
    return store__meta_put(s, txn);
  }
  if (rc == MDB_NOTFOUND)
    return store__fail(s, MSD_ENOTSTORE, "%s: index has no store metadata", s->dir);
  if (rc != 0)
    return mdb_rc(rc);
  if (v.mv_size != sizeof s->meta)
    return store__fail(s, MSD_ECORRUPT, "%s: store metadata has %zu bytes, expected %zu",
                       s->dir, v.mv_size, sizeof s->meta);
  memcpy(&s->meta, v.mv_data, sizeof s->meta);
  if (s->meta.version != IDX_VERSION)
    return store__fail(s, MSD_EVERSION, "%s: index format version %u, this build reads %u",
                       s->dir, s->meta.version, IDX_VERSION);
  return 0;
}

int store__index_open(struct store *s, bool create)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/index", s->dir);
  struct stat st;
  if (stat(path, &st) != 0) {
    if (!create)
      return store__fail(s, MSD_ENOTSTORE, "%s is not a medshard store (no index/)", s->dir);
    if (mkdir(path, 0700) != 0)
      return store__fail(s, -errno, "cannot create %s: %s", path, strerror(errno));
  }
  int rc = mdb_env_create(&s->env);
  if (rc == 0)
    rc = mdb_env_set_maxdbs(s->env, 4);
  if (rc == 0)
    rc = mdb_env_set_mapsize(s->env, INDEX_MAP_SIZE);
  if (rc == 0)
    rc = mdb_env_open(s->env, path, MDB_NOTLS, 0600);
  if (rc != 0)
    return store__fail(s, mdb_rc(rc), "%s: cannot open the index: %s", path, mdb_strerror(rc));

  MDB_txn *txn;
  rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc != 0)
    return store__fail(s, mdb_rc(rc), "%s: %s", path, mdb_strerror(rc));
  unsigned flags = create ? MDB_CREATE : 0;
  rc = mdb_dbi_open(txn, "meta", flags, &s->dbi_meta);
  if (rc == 0)
    rc = mdb_dbi_open(txn, "shards", flags, &s->dbi_shards);
  if (rc == 0)
    rc = mdb_dbi_open(txn, "segs", flags | MDB_INTEGERKEY, &s->dbi_segs);
  if (rc == MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return store__fail(s, MSD_ENOTSTORE, "%s is not a medshard store (index has no tables)",
                       s->dir);
  }
  rc = rc ? mdb_rc(rc) : meta_load(s, txn, create);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return store__commit(s, txn, "opening the index");
}

void store__index_close(struct store *s)
{
  if (s->env)
    mdb_env_close(s->env);
  s->env = NULL;
}

int store__commit(struct store *s, MDB_txn *txn, const char *what)
{
  int rc = mdb_txn_commit(txn);
  if (rc == 0)
    return 0;
  /* LMDB could not make the transaction durable: the same rule as a failed
   * fdatasync, no retry (the state of the file is unknown). */
  s->poisoned = mdb_rc(rc);
  return store__fail(s, MSD_EPOISONED, "%s: index commit failed while %s: %s", s->dir, what,
                     mdb_strerror(rc));
}

int store__meta_put(struct store *s, MDB_txn *txn)
{
  MDB_val k = {4, "meta"}, v = {sizeof s->meta, &s->meta};
  return mdb_rc(mdb_put(txn, s->dbi_meta, &k, &v, 0));
}

int store__entry_decode(const MDB_val *v, struct shard_entry *e)
{
  e->ext = NULL;
  if (v->mv_size < sizeof e->h)
    return MSD_ECORRUPT;
  memcpy(&e->h, v->mv_data, sizeof e->h);
  if (e->h.version != IDX_VERSION ||
      (e->h.state != IDX_STATE_SEALED && e->h.state != IDX_STATE_TOMBSTONE) ||
      v->mv_size != sizeof e->h + (size_t)e->h.nextents * sizeof(struct idx_extent))
    return MSD_ECORRUPT;
  if (e->h.state == IDX_STATE_TOMBSTONE)
    return e->h.nextents == 0 ? 0 : MSD_ECORRUPT;
  e->ext = msd_malloc(e->h.nextents * sizeof *e->ext);
  if (e->ext == NULL)
    return -ENOMEM;
  memcpy(e->ext, (const char *)v->mv_data + sizeof e->h, e->h.nextents * sizeof *e->ext);
  /* Extents must tile the shard in order, or reads would return holes. */
  uint64_t at = 0;
  for (uint32_t i = 0; i < e->h.nextents; i++) {
    if (e->ext[i].shard_off != at || e->ext[i].len == 0 || e->ext[i].len > EXTENT_MAX ||
        e->ext[i].rec_off < SEG_HEADER_SIZE)
      goto corrupt;
    at += e->ext[i].len;
  }
  if (at != e->h.size)
    goto corrupt;
  return 0;
corrupt:
  msd_free(e->ext);
  e->ext = NULL;
  return MSD_ECORRUPT;
}

int store__entry_get(struct store *s, MDB_txn *txn, const struct store_id *id,
                     struct shard_entry *e)
{
  uint8_t key[20];
  store__key(id, key);
  MDB_val k = {sizeof key, key}, v;
  int rc = mdb_get(txn, s->dbi_shards, &k, &v);
  e->ext = NULL;
  if (rc == MDB_NOTFOUND)
    return MSD_ENOSHARD;
  if (rc != 0)
    return mdb_rc(rc);
  return store__entry_decode(&v, e);
}

int store__entry_put(struct store *s, MDB_txn *txn, const struct store_id *id,
                     const struct shard_entry *e)
{
  uint8_t key[20];
  store__key(id, key);
  size_t bytes = sizeof e->h + (size_t)e->h.nextents * sizeof(struct idx_extent);
  MDB_val k = {sizeof key, key}, v = {bytes, NULL};
  int rc = mdb_put(txn, s->dbi_shards, &k, &v, MDB_RESERVE);
  if (rc != 0)
    return mdb_rc(rc);
  memcpy(v.mv_data, &e->h, sizeof e->h);
  if (bytes > sizeof e->h)
    memcpy((char *)v.mv_data + sizeof e->h, e->ext, bytes - sizeof e->h);
  return 0;
}

int store__seg_get(struct store *s, MDB_txn *txn, uint64_t id, struct idx_seg *out)
{
  MDB_val k = {sizeof id, &id}, v;
  int rc = mdb_get(txn, s->dbi_segs, &k, &v);
  if (rc == MDB_NOTFOUND) {
    memset(out, 0, sizeof *out);
    out->version = IDX_VERSION;
    out->end = SEG_HEADER_SIZE;
    return MDB_NOTFOUND;
  }
  if (rc != 0)
    return mdb_rc(rc);
  if (v.mv_size != sizeof *out)
    return MSD_ECORRUPT;
  memcpy(out, v.mv_data, sizeof *out);
  return out->version == IDX_VERSION ? 0 : MSD_ECORRUPT;
}

int store__seg_put(struct store *s, MDB_txn *txn, uint64_t id, const struct idx_seg *seg)
{
  MDB_val k = {sizeof id, &id}, v = {sizeof *seg, (void *)seg};
  return mdb_rc(mdb_put(txn, s->dbi_segs, &k, &v, 0));
}

int store__each_shard(struct store *s, store_entry_fn fn, void *ctx)
{
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc == 0 && (rc = mdb_cursor_open(txn, s->dbi_shards, &cur)) != 0)
    mdb_txn_abort(txn);
  if (rc != 0)
    return store__fail(s, MSD_ECORRUPT, "%s: cannot read the index: %s", s->dir,
                       mdb_strerror(rc));
  MDB_val k, v;
  for (int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && c == 0;
       c = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 20) {
      rc = store__fail(s, MSD_ECORRUPT, "%s: corrupt key in the shard index", s->dir);
      break;
    }
    struct store_id id;
    struct shard_entry e;
    store__key_id(k.mv_data, &id);
    int drc = store__entry_decode(&v, &e);
    rc = fn(ctx, &id, &e, drc);
    msd_free(e.ext);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}
