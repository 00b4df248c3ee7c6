/* Opening and closing a store, and its metadata-only calls: stat, list,
 * delete (tombstones) and usage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

int store__fail(struct store *s, int rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
  va_end(ap);
  return rc;
}

const char *store_errmsg(const struct store *s)
{
  return s->errmsg;
}

void store__id_text(const struct store_id *id, char out[48])
{
  for (int i = 0; i < STORE_OID_BYTES; i++)
    snprintf(out + 2 * i, 3, "%02x", id->oid[i]);
  snprintf(out + 32, 16, "/%" PRIu32, id->index);
}

bool store_uses_io_uring(const struct store *s)
{
  return !ring_is_fallback(s->ring);
}

/* A directory may become a store only if it is missing or empty, so that
 * pointing a node at the wrong path never scribbles over someone's files. */
static int prepare_dir(struct store *s, bool create)
{
  if (create && mkdir(s->dir, 0700) != 0 && errno != EEXIST)
    return store__fail(s, -errno, "cannot create %s: %s", s->dir, strerror(errno));
  s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->dirfd < 0 && (errno == ENOTDIR || errno == ENOENT))
    return store__fail(s, MSD_ENOTSTORE, "%s is not a medshard store: %s", s->dir,
                       strerror(errno));
  if (s->dirfd < 0)
    return store__fail(s, -errno, "%s: %s", s->dir, strerror(errno));
  struct stat st;
  bool is_store = fstatat(s->dirfd, "index", &st, 0) == 0;
  if (!is_store && create) {
    int fd = dup(s->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    int entries = 0;
    while (d && (de = readdir(d)) != NULL)
      entries += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    if (d)
      closedir(d);
    if (entries > 0)
      return store__fail(s, MSD_ENOTSTORE,
                         "%s is not empty and not a medshard store; use an empty directory",
                         s->dir);
  }
  if (!is_store && !create)
    return store__fail(s, MSD_ENOTSTORE, "%s is not a medshard store (no index/)", s->dir);
  s->lockfd = openat(s->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lockfd < 0)
    return store__fail(s, -errno, "%s/LOCK: %s", s->dir, strerror(errno));
  if (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0)
    return store__fail(s, errno == EWOULDBLOCK ? MSD_ELOCKED : -errno,
                       "%s is already open in another process (LOCK is held)", s->dir);
  if (mkdirat(s->dirfd, "seg", 0700) != 0 && errno != EEXIST)
    return store__fail(s, -errno, "%s/seg: %s", s->dir, strerror(errno));
  s->segdirfd = openat(s->dirfd, "seg", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->segdirfd < 0)
    return store__fail(s, -errno, "%s/seg: %s", s->dir, strerror(errno));
  return 0;
}

static void fill_defaults(struct store_opts *o)
{
  if (o->segment_size == 0)
    o->segment_size = STORE_SEGMENT_DEFAULT;
  if (o->segment_size < ((uint64_t)1 << 20))
    o->segment_size = (uint64_t)1 << 20;
  if (o->io_buffers == 0)
    o->io_buffers = 16;
  if (o->io_buffers < 3)
    o->io_buffers = 3; /* a writer, a read, a new segment */
  if (o->max_writers == 0 || o->max_writers > o->io_buffers - 2)
    o->max_writers = o->io_buffers - 2;
  if (o->reserve_bytes == 0)
    o->reserve_bytes = (uint64_t)1 << 30;
}

int store_open(const char *dir, const struct store_opts *opts, struct store **out)
{
  if (dir == NULL || out == NULL)
    return MSD_EPARAM;
  struct store *s = msd_calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  s->dirfd = s->segdirfd = s->lockfd = s->act_fd = s->act_dfd = -1;
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    s->fds[i].fd = s->fds[i].dfd = -1;
  s->o = opts ? *opts : (struct store_opts){0};
  fill_defaults(&s->o);
  int rc = -ENOMEM;
  s->dir = msd_malloc(strlen(dir) + 1);
  if (s->dir == NULL)
    goto fail;
  strcpy(s->dir, dir);
  struct ring_opts ro = {.nbufs = s->o.io_buffers, .buf_size = EXTENT_MAX + REC_ROOM,
                         .fallback = s->o.fallback_io};
  rc = ring_create(&ro, &s->ring);
  if (rc == 0)
    rc = prepare_dir(s, s->o.create);
  if (rc == 0)
    rc = store__index_open(s, s->o.create);
  if (rc == 0)
    rc = store__segs_recover(s);
  if (rc != 0)
    goto fail;
  *out = s;
  return 0;
fail:
  /* Keep the message for the caller: errors are reported by code here. */
  store_close(s);
  return rc;
}

void store_close(struct store *s)
{
  if (s == NULL)
    return;
  if (s->ring != NULL)
    store__quiesce(s);
  if (s->env != NULL && !s->poisoned)
    store__checkpoint(s); /* if it fails, the next open replays the seals */
  store__pending_free(s);
  msd_free(s->dirty);
  store__segs_close(s);
  store__index_close(s);
  ring_destroy(s->ring);
  if (s->segdirfd >= 0)
    close(s->segdirfd);
  if (s->lockfd >= 0)
    close(s->lockfd); /* releases the flock */
  if (s->dirfd >= 0)
    close(s->dirfd);
  msd_free(s->dir);
  msd_free(s);
}

int store_stat(struct store *s, const struct store_id *id, struct store_shard_info *out)
{
  if (s == NULL || id == NULL || out == NULL)
    return MSD_EPARAM;
  struct shard_entry e;
  int rc = store__lookup(s, id, &e);
  char name[48];
  store__id_text(id, name);
  if (rc == 0 && e.h.state == IDX_STATE_TOMBSTONE)
    rc = MSD_EDELETED;
  if (rc != 0) {
    msd_free(e.ext);
    return store__fail(s, rc, "shard %s: %s", name, msd_strerror(rc));
  }
  out->size = e.h.size;
  memcpy(out->digest, e.h.digest, sizeof out->digest);
  out->extents = e.h.nextents;
  out->seq = e.h.seq;
  msd_free(e.ext);
  return 0;
}

struct list_ctx {
  int (*fn)(void *ctx, const struct store_id *id, const struct store_shard_info *info);
  void *ctx;
};

static int list_one(void *ctx, const struct store_id *id, const struct shard_entry *e, int drc)
{
  struct list_ctx *l = ctx;
  if (drc != 0 || e->h.state != IDX_STATE_SEALED)
    return 0; /* scrub reports undecodable entries */
  struct store_shard_info info = {e->h.size, {0}, e->h.nextents, e->h.seq};
  memcpy(info.digest, e->h.digest, sizeof info.digest);
  return l->fn(l->ctx, id, &info);
}

int store_list(struct store *s, int (*fn)(void *ctx, const struct store_id *id,
                                          const struct store_shard_info *info),
               void *ctx)
{
  if (s == NULL || fn == NULL)
    return MSD_EPARAM;
  int rc = store__checkpoint(s);
  struct list_ctx l = {fn, ctx};
  return rc != 0 ? rc : store__each_shard(s, list_one, &l);
}

/* Positions cur on the first key after `after` (NULL: the first key). */
static int cursor_after(MDB_cursor *cur, const struct store_id *after, MDB_val *k, MDB_val *v)
{
  if (after == NULL)
    return mdb_cursor_get(cur, k, v, MDB_FIRST);
  uint8_t key[20];
  store__key(after, key);
  MDB_val want = {sizeof key, key};
  *k = want;
  int c = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
  if (c == 0 && k->mv_size == sizeof key && memcmp(k->mv_data, key, sizeof key) == 0)
    c = mdb_cursor_get(cur, k, v, MDB_NEXT);
  return c;
}

int store_list_from(struct store *s, const struct store_id *after, size_t max,
                    int (*fn)(void *ctx, const struct store_id *id,
                              const struct store_shard_info *info),
                    void *ctx, struct store_id *last, bool *more)
{
  if (s == NULL || fn == NULL || last == NULL || more == NULL || max == 0)
    return MSD_EPARAM;
  *more = false;
  int rc = store__checkpoint(s); /* pending seals are listed too */
  MDB_txn *txn;
  MDB_cursor *cur;
  if (rc == 0 && (rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) == 0 &&
      (rc = mdb_cursor_open(txn, s->dbi_shards, &cur)) != 0)
    mdb_txn_abort(txn);
  if (rc > 0)
    return store__fail(s, MSD_ECORRUPT, "%s: cannot read the index: %s", s->dir, mdb_strerror(rc));
  if (rc != 0)
    return rc;
  struct list_ctx l = {fn, ctx};
  MDB_val k, v;
  size_t seen = 0;
  int c = cursor_after(cur, after, &k, &v);
  for (; rc == 0 && c == 0 && seen < max; c = mdb_cursor_get(cur, &k, &v, MDB_NEXT), seen++) {
    if (k.mv_size != 20) {
      rc = store__fail(s, MSD_ECORRUPT, "%s: corrupt key in the shard index", s->dir);
      break;
    }
    struct shard_entry e;
    store__key_id(k.mv_data, last);
    int drc = store__entry_decode(&v, &e);
    rc = list_one(&l, last, &e, drc);
    msd_free(e.ext);
  }
  /* The loop's step ran after the last entry examined, also when fn
   * stopped the walk, so c says whether an entry follows it. */
  *more = c == 0;
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return rc;
}

uint64_t store_last_seq(const struct store *s)
{
  return s->meta.next_seq > 0 ? s->meta.next_seq - 1 : 0;
}

int store_delete(struct store *s, const struct store_id *id)
{
  if (s == NULL || id == NULL)
    return MSD_EPARAM;
  if (s->poisoned)
    return store__fail(s, MSD_EPOISONED, "%s: %s (%s)", s->dir, msd_strerror(MSD_EPOISONED),
                       msd_strerror(s->poisoned));
  char name[48];
  store__id_text(id, name);
  int cp = store__checkpoint(s);
  if (cp != 0)
    return cp;
  MDB_txn *txn;
  if (mdb_txn_begin(s->env, NULL, 0, &txn) != 0)
    return MSD_ECORRUPT;
  struct shard_entry e;
  int rc = store__entry_get(s, txn, id, &e);
  if (rc == 0 && e.h.state == IDX_STATE_TOMBSTONE)
    rc = MSD_EDELETED;
  /* The records stay until compaction; only the accounting moves. */
  for (uint32_t i = 0; rc == 0 && i < e.h.nextents; i++) {
    struct idx_seg seg;
    rc = store__seg_get(s, txn, e.ext[i].seg, &seg);
    seg.live -= rec_size(e.ext[i].len);
    if (rc == 0)
      rc = store__seg_put(s, txn, e.ext[i].seg, &seg);
  }
  if (rc == 0) {
    e.h.state = IDX_STATE_TOMBSTONE;
    e.h.nextents = 0;
    rc = store__entry_put(s, txn, id, &e);
  }
  msd_free(e.ext);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return store__fail(s, rc, "deleting shard %s: %s", name, msd_strerror(rc));
  }
  return store__commit(s, txn, "writing a tombstone");
}

int store_usage(struct store *s, struct store_usage *out)
{
  if (s == NULL || out == NULL)
    return MSD_EPARAM;
  memset(out, 0, sizeof *out);
  int cp = store__checkpoint(s);
  if (cp != 0 && cp != MSD_EPOISONED)
    return cp;
  struct statvfs v;
  if (fstatvfs(s->dirfd, &v) != 0)
    return -errno;
  out->fs_free = (uint64_t)v.f_bavail * v.f_frsize;
  out->writable = out->fs_free > s->o.reserve_bytes ? out->fs_free - s->o.reserve_bytes : 0;
  if (s->o.capacity_bytes) {
    uint64_t left = s->o.capacity_bytes > s->seg_bytes ? s->o.capacity_bytes - s->seg_bytes : 0;
    out->writable = left < out->writable ? left : out->writable;
  }
  MDB_txn *txn;
  MDB_cursor *cur;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
    return MSD_ECORRUPT;
  MDB_stat ms;
  if (mdb_stat(txn, s->dbi_shards, &ms) == 0)
    out->shards = ms.ms_entries;
  if (mdb_cursor_open(txn, s->dbi_segs, &cur) == 0) {
    MDB_val k, val;
    for (int c = mdb_cursor_get(cur, &k, &val, MDB_FIRST); c == 0;
         c = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
      struct idx_seg seg;
      if (val.mv_size != sizeof seg)
        continue;
      memcpy(&seg, val.mv_data, sizeof seg);
      out->live_bytes += seg.live;
      out->segment_bytes += seg.end;
      out->segments++;
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  return 0;
}
