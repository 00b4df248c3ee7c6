/* Recovery on open. The LMDB index is a checkpoint; seal records written
 * after it live in the segments. Open therefore (1) removes segment files
 * that are stale (compacted away, or created and never used), (2) scans each
 * segment past its checkpointed end for seal records, (3) accepts a seal
 * only if every extent it names is present and intact, (4) indexes the
 * accepted seals, and (5) truncates each segment after the last byte the
 * index now vouches for: torn records and shards that never sealed vanish. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "storage/store_int.h"

#define SEAL_PAYLOAD_MAX ((uint64_t)64 << 20)

struct rseg {
  uint64_t id;
  int fd;
  uint64_t size;    /* file size */
  uint64_t end;     /* checkpointed end (SEG_HEADER_SIZE for new files) */
  uint64_t scanned; /* bytes of well-formed records from the start */
  uint64_t keep;    /* new end after replay */
  bool indexed;
};

struct seal {
  struct store_id id;
  struct shard_entry e;
  uint64_t seg, off, size;
};

struct recovery {
  struct rseg *seg;
  size_t nseg;
  struct seal *seal;
  size_t nseal, seal_cap;
};

static struct rseg *find_seg(struct recovery *r, uint64_t id)
{
  for (size_t i = 0; i < r->nseg; i++)
    if (r->seg[i].id == id)
      return &r->seg[i];
  return NULL;
}

static int cmp_seg(const void *a, const void *b)
{
  const struct rseg *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Lists seg/, removing stale files: those the index does not know whose id
 * is below the checkpointed next id (compaction victims, orphans). */
static int list_segments(struct store *s, MDB_txn *txn, struct recovery *r)
{
  int dfd = dup(s->segdirfd);
  DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
  if (d == NULL)
    return store__fail(s, -errno, "%s/seg: %s", s->dir, strerror(errno));
  size_t cap = 0;
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    uint64_t id;
    char tail[8];
    if (sscanf(de->d_name, "%16" SCNx64 "%7s", &id, tail) != 2 || strcmp(tail, ".seg") != 0)
      continue;
    struct idx_seg seg;
    int g = store__seg_get(s, txn, id, &seg);
    if (g != 0 && g != MDB_NOTFOUND) {
      rc = g;
      break;
    }
    if (g == MDB_NOTFOUND && id < s->meta.next_seg) {
      msd_log(MSD_LOG_INFO, "%s: removing stale segment %s", s->dir, de->d_name);
      unlinkat(s->segdirfd, de->d_name, 0);
      continue;
    }
    if ((rc = msd_grow(&r->seg, &cap, r->nseg, sizeof *r->seg, 16)) != 0)
      break;
    r->seg[r->nseg++] = (struct rseg){id, -1, 0, seg.end, 0, seg.end, g == 0};
  }
  closedir(d);
  if (rc == 0 && r->nseg > 1)
    qsort(r->seg, r->nseg, sizeof *r->seg, cmp_seg);
  return rc;
}

/* Every segment the index knows must exist, with at least `end` bytes. */
static int check_indexed(struct store *s, MDB_txn *txn, struct recovery *r)
{
  MDB_cursor *cur;
  if (mdb_cursor_open(txn, s->dbi_segs, &cur) != 0)
    return MSD_ECORRUPT;
  MDB_val k, v;
  int rc = 0;
  for (int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && c == 0;
       c = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint64_t id;
    if (k.mv_size != sizeof id) {
      rc = MSD_ECORRUPT;
      break;
    }
    memcpy(&id, k.mv_data, sizeof id);
    char name[32];
    store__seg_name(id, name);
    if (find_seg(r, id) == NULL)
      rc = store__fail(s, MSD_ECORRUPT, "%s/seg/%s: indexed segment is missing", s->dir, name);
  }
  mdb_cursor_close(cur);
  return rc;
}

static int open_segment(struct store *s, struct rseg *g)
{
  char name[32];
  store__seg_name(g->id, name);
  g->fd = openat(s->segdirfd, name, O_RDWR | O_CLOEXEC);
  struct seg_header h;
  struct stat st;
  if (g->fd < 0 || fstat(g->fd, &st) != 0)
    return store__fail(s, -errno, "%s/seg/%s: %s", s->dir, name, strerror(errno));
  g->size = (uint64_t)st.st_size;
  int rc = pread(g->fd, &h, sizeof h, 0) == (ssize_t)sizeof h
               ? seg_header_check(&h, g->id, s->meta.uuid)
               : MSD_ECORRUPT;
  if (rc != 0 && !g->indexed) {
    g->keep = 0; /* a segment torn while being created: drop it */
    return 0;
  }
  if (rc != 0)
    return store__fail(s, rc, "%s/seg/%s: bad segment header (%s)", s->dir, name,
                       msd_strerror(rc));
  if (g->size < g->end)
    return store__fail(s, MSD_ECORRUPT,
                       "%s/seg/%s: %" PRIu64 " bytes, but the index has sealed data up to %" PRIu64,
                       s->dir, name, g->size, g->end);
  return 0;
}

static int add_seal(struct recovery *r, const struct seal *sl)
{
  if (msd_grow(&r->seal, &r->seal_cap, r->nseal, sizeof *r->seal, 64) != 0)
    return -ENOMEM;
  r->seal[r->nseal++] = *sl;
  return 0;
}

/* Reads the record at pos; returns its total size, or 0 if it is not a
 * well-formed record (a torn tail). Seal records are collected. */
static uint64_t scan_record(struct recovery *r, struct rseg *g, uint64_t pos)
{
  struct rec_header h;
  if (pos + sizeof h > g->size || pread(g->fd, &h, sizeof h, (off_t)pos) != (ssize_t)sizeof h)
    return 0;
  if (h.magic != REC_MAGIC || h.version != REC_VERSION)
    return 0;
  bool extent = h.kind == REC_KIND_EXTENT;
  if ((!extent && h.kind != REC_KIND_SEAL) || (extent && h.len > EXTENT_MAX) ||
      (!extent && h.len > SEAL_PAYLOAD_MAX))
    return 0;
  uint64_t extra = extent ? 8ull * h.nblocks : h.len; /* what the checksum covers */
  uint64_t total = sizeof h + (extent ? extra + h.len : extra);
  if (pos + total > g->size)
    return 0;
  unsigned char *buf = msd_malloc(sizeof h + extra + 1);
  if (buf == NULL || pread(g->fd, buf, sizeof h + extra, (off_t)pos) != (ssize_t)(sizeof h + extra)) {
    msd_free(buf);
    return 0;
  }
  uint64_t ok = 0;
  if (extent) {
    struct store_id id = {{0}, h.index};
    memcpy(id.oid, h.oid, sizeof id.oid);
    ok = rec_check_header(buf, &id, h.shard_off, h.len) == 0 ? total : 0;
  } else {
    struct seal sl = {.seg = g->id, .off = pos, .size = total};
    if (rec_seal_parse(&h, buf + sizeof h, &sl.id, &sl.e) == 0) {
      ok = total;
      if (add_seal(r, &sl) != 0) {
        msd_free(sl.e.ext);
        ok = 0;
      }
    }
  }
  msd_free(buf);
  return ok;
}

/* True if [pos, next DIRECT_ALIGN boundary) is all zeros: the padding
 * before an aligned O_DIRECT record. The gap can be a single byte, so all
 * of it is checked and nothing past it (that is the next record). */
static bool at_padding(const struct rseg *g, uint64_t pos)
{
  uint64_t next = (pos + DIRECT_ALIGN) & ~(uint64_t)(DIRECT_ALIGN - 1);
  unsigned char gap[DIRECT_ALIGN];
  if (pos % DIRECT_ALIGN == 0 || next > g->size)
    return false;
  size_t n = (size_t)(next - pos);
  if (pread(g->fd, gap, n, (off_t)pos) != (ssize_t)n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (gap[i] != 0)
      return false;
  return true;
}

static void scan_segment(struct recovery *r, struct rseg *g)
{
  uint64_t pos = g->end, good = g->end;
  while (pos < g->size) {
    uint64_t n = scan_record(r, g, pos);
    if (n > 0) {
      pos = good = pos + n;
      continue;
    }
    if (!at_padding(g, pos))
      break;
    pos = (pos + DIRECT_ALIGN) & ~(uint64_t)(DIRECT_ALIGN - 1); /* the next boundary */
  }
  g->scanned = good;
}

/* A seal counts only if every extent it names is a whole, matching record
 * in a segment that survives: otherwise it was never acknowledged. */
static bool seal_is_whole(struct recovery *r, const struct seal *sl)
{
  for (uint32_t i = 0; i < sl->e.h.nextents; i++) {
    const struct idx_extent *x = &sl->e.ext[i];
    struct rseg *g = find_seg(r, x->seg);
    if (g == NULL || g->fd < 0 || x->rec_off + rec_size(x->len) > g->size ||
        (x->rec_off + rec_size(x->len) > g->end && x->rec_off + rec_size(x->len) > g->scanned))
      return false;
    uint64_t hl = rec_hdr_len(x->len);
    unsigned char hdr[REC_ROOM];
    if (pread(g->fd, hdr, hl, (off_t)x->rec_off) != (ssize_t)hl ||
        rec_check_header(hdr, &sl->id, x->shard_off, x->len) != 0)
      return false;
  }
  return true;
}

static int replay_one(struct store *s, MDB_txn *txn, struct recovery *r, struct seal *sl)
{
  struct shard_entry old;
  int rc = store__entry_get(s, txn, &sl->id, &old);
  bool newer = rc == MSD_ENOSHARD || (rc == 0 && old.h.seq < sl->e.h.seq);
  msd_free(old.ext);
  if (rc != 0 && rc != MSD_ENOSHARD)
    return rc;
  if (newer) {
    rc = store__entry_put(s, txn, &sl->id, &sl->e);
    if (rc == 0)
      rc = store__account(s, txn, &sl->e);
  }
  for (uint32_t i = 0; rc == 0 && i < sl->e.h.nextents; i++) {
    struct rseg *g = find_seg(r, sl->e.ext[i].seg);
    uint64_t e = sl->e.ext[i].rec_off + rec_size(sl->e.ext[i].len);
    if (e > g->keep)
      g->keep = e;
  }
  struct rseg *g = find_seg(r, sl->seg);
  if (sl->off + sl->size > g->keep)
    g->keep = sl->off + sl->size;
  if (sl->e.h.seq >= s->meta.next_seq)
    s->meta.next_seq = sl->e.h.seq + 1;
  return rc;
}

/* Indexes the whole seals and sets each segment's new end, in one commit. */
static int replay(struct store *s, struct recovery *r, int *replayed)
{
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc != 0)
    return MSD_ECORRUPT;
  rc = 0;
  for (size_t i = 0; rc == 0 && i < r->nseal; i++)
    if (seal_is_whole(r, &r->seal[i])) {
      rc = replay_one(s, txn, r, &r->seal[i]);
      (*replayed)++;
    }
  for (size_t i = 0; rc == 0 && i < r->nseg; i++) {
    struct rseg *g = &r->seg[i];
    if (g->id >= s->meta.next_seg)
      s->meta.next_seg = g->id + 1;
    if (g->keep <= SEG_HEADER_SIZE && !g->indexed)
      continue; /* nothing sealed in it: dropped below */
    struct idx_seg seg;
    int got = store__seg_get(s, txn, g->id, &seg);
    if (got != 0 && got != MDB_NOTFOUND)
      rc = got;
    else {
      seg.end = g->keep;
      rc = store__seg_put(s, txn, g->id, &seg);
    }
  }
  if (rc == 0)
    rc = store__meta_put(s, txn);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return store__commit(s, txn, "replaying seal records");
}

/* Cuts every segment after its new end (or removes it), then keeps the fds. */
static int trim(struct store *s, struct recovery *r)
{
  for (size_t i = 0; i < r->nseg; i++) {
    struct rseg *g = &r->seg[i];
    char name[32];
    store__seg_name(g->id, name);
    if (!g->indexed && g->keep <= SEG_HEADER_SIZE) {
      msd_log(MSD_LOG_INFO, "%s: removing segment %s: nothing in it was sealed", s->dir, name);
      if (g->fd >= 0)
        close(g->fd);
      g->fd = -1;
      unlinkat(s->segdirfd, name, 0);
      continue;
    }
    if (g->size > g->keep) {
      msd_log(MSD_LOG_INFO, "%s: truncating %s from %" PRIu64 " to %" PRIu64
              " bytes (unsealed tail)", s->dir, name, g->size, g->keep);
      if (ftruncate(g->fd, (off_t)g->keep) != 0 || fdatasync(g->fd) != 0)
        return store__fail(s, -errno, "%s/seg/%s: truncate: %s", s->dir, name, strerror(errno));
    }
    s->seg_bytes += g->keep;
    if (s->act_fd >= 0)
      store__fd_cache_put(s, s->act_id, s->act_fd);
    s->act_fd = g->fd, s->act_id = g->id, s->act_off = g->keep; /* the newest one last */
    g->fd = -1;
  }
  store__seg_open_direct(s);
  return fsync(s->segdirfd) == 0 ? 0 : -errno;
}

int store__segs_recover(struct store *s)
{
  struct recovery r = {0};
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc != 0)
    return store__fail(s, MSD_ECORRUPT, "%s: %s", s->dir, mdb_strerror(rc));
  rc = list_segments(s, txn, &r);
  if (rc == 0)
    rc = check_indexed(s, txn, &r);
  mdb_txn_abort(txn);
  for (size_t i = 0; rc == 0 && i < r.nseg; i++)
    rc = open_segment(s, &r.seg[i]);
  for (size_t i = 0; rc == 0 && i < r.nseg; i++)
    if (r.seg[i].fd >= 0 && (r.seg[i].indexed || r.seg[i].keep != 0))
      scan_segment(&r, &r.seg[i]);
  for (size_t i = 0; rc == 0 && i < r.nseg; i++)
    if (!r.seg[i].indexed)
      r.seg[i].keep = SEG_HEADER_SIZE; /* until a replayed seal claims bytes in it */
  int replayed = 0;
  if (rc == 0)
    rc = replay(s, &r, &replayed);
  if (rc == 0 && replayed > 0)
    msd_log(MSD_LOG_INFO, "%s: replayed %d seal record(s) past the index checkpoint", s->dir,
            replayed);
  if (rc == 0)
    rc = trim(s, &r);
  for (size_t i = 0; i < r.nseg; i++)
    if (r.seg[i].fd >= 0)
      close(r.seg[i].fd);
  for (size_t i = 0; i < r.nseal; i++)
    msd_free(r.seal[i].e.ext);
  msd_free(r.seal);
  msd_free(r.seg);
  return rc;
}
