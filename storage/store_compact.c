/* Compaction: copy the live records out of a mostly-dead segment, switch the
 * index over durably, and only then delete the old file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "storage/store_int.h"

struct move {
  struct store_id id;
  uint64_t shard_off; /* identifies the extent */
  uint64_t seg, rec_off, len; /* new home */
};

struct moves {
  struct move *v;
  size_t n, cap;
};

static int moves_add(struct moves *m, const struct move *mv)
{
  if (msd_grow(&m->v, &m->cap, m->n, sizeof *m->v, 64) != 0)
    return -ENOMEM;
  m->v[m->n++] = *mv;
  return 0;
}

/* The segment (other than the active one) with the lowest live fraction
 * below threshold; 0 if none. */
static uint64_t pick_victim(struct store *s, MDB_txn *txn, double threshold, struct idx_seg *out)
{
  MDB_cursor *cur;
  uint64_t best = 0;
  double best_frac = threshold;
  if (mdb_cursor_open(txn, s->dbi_segs, &cur) != 0)
    return 0;
  MDB_val k, v;
  for (int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST); c == 0;
       c = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint64_t id;
    struct idx_seg seg;
    if (k.mv_size != sizeof id || v.mv_size != sizeof seg)
      continue;
    memcpy(&id, k.mv_data, sizeof id);
    memcpy(&seg, v.mv_data, sizeof seg);
    if (s->act_fd >= 0 && id == s->act_id)
      continue;
    uint64_t used = seg.end > SEG_HEADER_SIZE ? seg.end - SEG_HEADER_SIZE : 0;
    double frac = used ? (double)seg.live / (double)used : 0.0;
    if (frac < best_frac) {
      best = id, best_frac = frac, *out = seg;
    }
  }
  mdb_cursor_close(cur);
  return best;
}

/* Copies one verified record to the active segment. */
static int copy_record(struct store *s, const struct store_id *id, const struct idx_extent *x,
                       unsigned char *buf, int idx, struct moves *m)
{
  uint64_t bad;
  int rc = store__rec_read_verified(s, id, x, buf, idx, &bad);
  if (rc != 0)
    return rc; /* never copy damage forward: scrub and repair come first */
  struct move mv = {*id, x->shard_off, 0, 0, x->len};
  int fd;
  rc = store__seg_reserve(s, rec_size(x->len), false, &fd, &mv.seg, &mv.rec_off, NULL);
  if (rc != 0)
    return rc;
  struct ring_req w = {.op = RING_OP_WRITE, .fd = fd, .buf = buf, .len = rec_size(x->len),
                       .off = mv.rec_off, .buf_index = idx};
  ring_queue(s->ring, &w);
  rc = ring_drain(s->ring);
  if (rc == 0)
    rc = w.res;
  if (rc != 0) {
    s->poisoned = rc;
    return store__fail(s, MSD_EPOISONED, "%s: compaction write failed: %s", s->dir,
                       msd_strerror(rc));
  }
  return moves_add(m, &mv);
}

struct copy_ctx {
  struct store *s;
  uint64_t victim;
  unsigned char *buf;
  int idx;
  struct moves *m;
};

static int copy_one(void *ctx, const struct store_id *id, const struct shard_entry *e, int drc)
{
  struct copy_ctx *c = ctx;
  int rc = 0;
  for (uint32_t i = 0; drc == 0 && rc == 0 && i < e->h.nextents; i++)
    if (e->ext[i].seg == c->victim)
      rc = copy_record(c->s, id, &e->ext[i], c->buf, c->idx, c->m);
  return rc;
}

/* Copies every live record of `victim` and returns the moves. */
static int copy_live(struct store *s, uint64_t victim, struct moves *m)
{
  struct copy_ctx c = {s, victim, NULL, 0, m};
  c.buf = ring_buf_get(s->ring, &c.idx);
  if (c.buf == NULL)
    return store__fail(s, MSD_ENOBUFS, "%s: no free I/O buffer to compact with", s->dir);
  int rc = store__each_shard(s, copy_one, &c);
  ring_buf_put(s->ring, c.idx);
  return rc;
}

/* fdatasync every segment the moves wrote to. */
static int sync_targets(struct store *s, const struct moves *m)
{
  uint64_t done[8];
  int nd = 0, rc = 0;
  for (size_t i = 0; rc == 0 && i < m->n; i++) {
    int k = 0;
    while (k < nd && done[k] != m->v[i].seg)
      k++;
    if (k < nd)
      continue;
    int fd;
    rc = store__seg_fd(s, m->v[i].seg, &fd);
    struct ring_req f = {.op = RING_OP_FSYNC, .fd = fd, .buf_index = -1};
    if (rc == 0) {
      ring_queue(s->ring, &f);
      rc = ring_drain(s->ring);
    }
    if (rc == 0 && (rc = f.res) != 0)
      s->poisoned = rc;
    if (nd < 8)
      done[nd++] = m->v[i].seg;
  }
  return rc;
}

/* Points the index at the new copies and forgets the victim, atomically. */
static int switch_index(struct store *s, uint64_t victim, const struct moves *m)
{
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
  if (rc != 0)
    return MSD_ECORRUPT;
  for (size_t i = 0; rc == 0 && i < m->n; i++) {
    const struct move *mv = &m->v[i];
    struct shard_entry e;
    rc = store__entry_get(s, txn, &mv->id, &e);
    for (uint32_t j = 0; rc == 0 && j < e.h.nextents; j++)
      if (e.ext[j].seg == victim && e.ext[j].shard_off == mv->shard_off) {
        e.ext[j].seg = mv->seg;
        e.ext[j].rec_off = mv->rec_off;
      }
    if (rc == 0)
      rc = store__entry_put(s, txn, &mv->id, &e);
    msd_free(e.ext);
    struct idx_seg seg;
    int g = rc ? rc : store__seg_get(s, txn, mv->seg, &seg);
    if (g != 0 && g != MDB_NOTFOUND)
      rc = g;
    if (rc == 0) {
      seg.live += rec_size(mv->len);
      if (mv->rec_off + rec_size(mv->len) > seg.end)
        seg.end = mv->rec_off + rec_size(mv->len);
      rc = store__seg_put(s, txn, mv->seg, &seg);
    }
  }
  MDB_val k = {sizeof victim, &victim};
  if (rc == 0)
    rc = mdb_del(txn, s->dbi_segs, &k, NULL) == 0 ? 0 : MSD_ECORRUPT;
  if (rc == 0)
    rc = store__meta_put(s, txn);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return store__commit(s, txn, "compacting");
}

static void forget_fd(struct store *s, uint64_t id)
{
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    if (s->fds[i].fd >= 0 && s->fds[i].id == id) {
      close(s->fds[i].fd);
      if (s->fds[i].dfd >= 0)
        close(s->fds[i].dfd);
      s->fds[i].fd = -1;
    }
}

int store_compact_step(struct store *s, double threshold, uint64_t *freed)
{
  if (s == NULL || freed == NULL || !(threshold >= 0 && threshold <= 1))
    return MSD_EPARAM;
  *freed = 0;
  if (s->poisoned)
    return store__fail(s, MSD_EPOISONED, "%s: %s", s->dir, msd_strerror(MSD_EPOISONED));
  int rc = store__checkpoint(s);
  if (rc != 0)
    return rc;
  MDB_txn *txn;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
    return MSD_ECORRUPT;
  struct idx_seg seg = {0};
  uint64_t victim = pick_victim(s, txn, threshold, &seg);
  mdb_txn_abort(txn);
  if (victim == 0)
    return 0;

  struct moves m = {0};
  rc = copy_live(s, victim, &m);
  if (rc == 0)
    rc = sync_targets(s, &m);
  if (rc == 0)
    rc = switch_index(s, victim, &m);
  msd_free(m.v);
  if (rc != 0)
    return rc;
  /* The index no longer points into the victim: deleting it is safe, and a
   * crash before the unlink leaves an orphan that the next open removes. */
  forget_fd(s, victim);
  char name[32];
  snprintf(name, sizeof name, "%016" PRIx64 ".seg", victim);
  if (unlinkat(s->segdirfd, name, 0) != 0 || fsync(s->segdirfd) != 0)
    msd_log(MSD_LOG_WARN, "%s/seg/%s: cannot remove after compaction: %s", s->dir, name,
            strerror(errno));
  *freed = seg.end;
  s->seg_bytes = s->seg_bytes > seg.end ? s->seg_bytes - seg.end : 0;
  return 0;
}
