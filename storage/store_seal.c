/* Sealing: a batch of shards made durable (their last extents, their seal
 * records, one fdatasync per segment they touch) and then visible (the
 * pending table, checkpointed into LMDB now and then). Seals submitted
 * together run as one batch from the write queue (store_async.c), each
 * stage's I/O in flight without blocking the caller's loop: the tails,
 * then a barrier until no extent flush is in flight, then the write and
 * fdatasyncs that make the batch durable. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

struct seal_seg {
  uint64_t id;
  struct ring_req fsync;
};

enum seal_stage { STAGE_TAILS, STAGE_BARRIER, STAGE_SYNC };

struct seal_batch {
  struct store *s;
  size_t n;
  struct store_writer **ws;
  int *res;
  bool *tail;
  struct shard_entry *ents;
  struct seal_seg *segs;
  size_t nsegs;
  unsigned char *sealbuf;
  struct ring_req sealreq;
  uint64_t seal_seg;
  enum seal_stage stage;
  bool one;         /* the single-write path (seal_one_fits) */
  unsigned pending; /* ring requests of the stage still in flight */
  int err;          /* a failure to report once they have completed */
};

/* The distinct segments a batch writes to: its shards' extents and the
 * segment holding the seal records. */
static int collect_segs(struct seal_batch *b)
{
  size_t cap = 1, count = 0;
  for (size_t i = 0; i < b->n; i++)
    cap += b->res[i] == 0 ? b->ws[i]->next : 0;
  b->segs = msd_calloc(cap, sizeof *b->segs);
  if (b->segs == NULL)
    return -ENOMEM;
  b->segs[count++].id = b->seal_seg;
  for (size_t i = 0; i < b->n; i++)
    for (uint32_t j = 0; b->res[i] == 0 && j < b->ws[i]->next; j++) {
      size_t k = 0;
      while (k < count && b->segs[k].id != b->ws[i]->ext[j].seg)
        k++;
      if (k == count)
        b->segs[count++].id = b->ws[i]->ext[j].seg;
    }
  b->nsegs = count;
  return 0;
}

/* -EEXIST if the shard is already sealed here: shards are immutable. */
static int check_new(struct store *s, const struct store_writer *w)
{
  struct shard_entry old;
  int rc = store__lookup(s, &w->id, &old);
  bool exists = rc == 0 && old.h.state == IDX_STATE_SEALED;
  msd_free(old.ext);
  if (exists) {
    char name[48];
    store__id_text(&w->id, name);
    return store__fail(s, -EEXIST, "shard %s is already sealed in %s; shards are immutable",
                       name, s->dir);
  }
  return rc == MSD_ENOSHARD || rc == 0 ? 0 : rc;
}

static void entry_of(struct store *s, const struct store_writer *w, struct shard_entry *e)
{
  e->h = (struct idx_shard){IDX_VERSION, IDX_STATE_SEALED, 0, w->next, w->flushed,
                            s->meta.next_seq++, {0}};
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&w->digest));
  memcpy(e->h.digest, c.digest, sizeof e->h.digest);
  e->ext = w->ext;
}

/* Builds the batch's seal records into one buffer and reserves their place. */
static int build_seals(struct seal_batch *b)
{
  struct store *s = b->s;
  uint64_t total = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->res[i] == 0) {
      entry_of(s, b->ws[i], &b->ents[i]);
      total += rec_seal_size(b->ws[i]->next);
    }
  b->sealbuf = msd_aligned_alloc(4096, total);
  if (b->sealbuf == NULL)
    return -ENOMEM;
  uint64_t at = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->res[i] == 0) {
      rec_seal_build(b->sealbuf + at, &b->ws[i]->id, &b->ents[i]);
      at += rec_seal_size(b->ws[i]->next);
    }
  int fd;
  uint64_t off;
  int rc = store__seg_reserve(s, total, false, &fd, &b->seal_seg, &off, NULL);
  b->sealreq = (struct ring_req){.op = RING_OP_WRITE, .fd = fd, .buf = b->sealbuf, .len = total,
                                 .off = off, .buf_index = -1};
  return rc;
}

/* Publishes the sealed shards to readers; the writers' extents move over. */
static int publish(struct seal_batch *b)
{
  struct store *s = b->s;
  for (size_t i = 0; i < b->n; i++)
    if (b->res[i] == 0) {
      if (store__pending_put(s, &b->ws[i]->id, &b->ents[i]) == 0)
        b->ws[i]->ext = NULL; /* now owned by the pending table */
      else
        b->res[i] = -ENOMEM; /* UNTESTED: durable, and replayed on the next open */
    }
  return s->npend >= CHECKPOINT_SEALS ? store__checkpoint(s) : 0;
}

static void seal_release(struct store_op *op)
{
  store__writer_free((struct store_writer *)((char *)op - offsetof(struct store_writer, op)));
}

/* Hands every writer's result to the ready list and frees the batch. */
static void batch_end(struct seal_batch *b, int rc)
{
  struct store *s = b->s;
  for (size_t i = 0; i < b->n; i++) {
    struct store_writer *w = b->ws[i];
    if (rc != 0 && b->res[i] == 0)
      b->res[i] = rc;
    w->op.release = seal_release;
    store__op_finish(s, &w->op, b->res[i]);
  }
  msd_free(b->sealbuf);
  msd_free(b->segs);
  msd_free(b);
  s->seal_running = false;
}

static void batch_io_done(struct ring_req *req);

static void queue_io(struct seal_batch *b, struct ring_req *r)
{
  r->cb = batch_io_done;
  r->ctx = b;
  b->pending++;
}

/* Queues the segments' fdatasyncs; the first is linked after `head` (a
 * write that must complete first: the kernel orders the pair). */
static int queue_syncs(struct seal_batch *b, struct ring_req *head)
{
  for (size_t k = 0; k < b->nsegs; k++) {
    int fd;
    int rc = store__seg_fd(b->s, b->segs[k].id, &fd);
    if (rc != 0)
      return rc;
    b->segs[k].fsync = (struct ring_req){.op = RING_OP_FSYNC, .fd = fd, .buf_index = -1};
    queue_io(b, &b->segs[k].fsync);
    if (k == 0) {
      queue_io(b, head);
      ring_queue_linked(b->s->ring, head, &b->segs[k].fsync);
    } else {
      ring_queue(b->s->ring, &b->segs[k].fsync);
    }
  }
  return 0;
}

/* The first I/O failure of the stage that just ended, or 0. */
static int stage_result(struct seal_batch *b, struct ring_req *head)
{
  int rc = head->res;
  for (size_t k = 0; rc == 0 && k < b->nsegs; k++)
    rc = b->segs[k].fsync.res;
  return rc;
}

/* Waits (store_async.c's kick calls store__seal_proceed) until no extent
 * flush is in flight. Why: recovery keeps a segment's records only up to
 * the first torn one, so the write whose fdatasync acknowledges these
 * seals must come after every record reserved before it has completed. */
static void barrier_enter(struct seal_batch *b)
{
  b->stage = STAGE_BARRIER;
  b->s->seal_wait = b;
  if (b->s->flushes_running > 0)
    b->s->stats.barrier_waits++;
}

/* Why two rounds in the general path: an fdatasync covers only writes that
 * completed before it started, so the tails complete first (then the
 * barrier); then the seal records' write is linked to its segment's
 * fdatasync, beside plain fdatasyncs of the other segments the shards'
 * extents are in. Runs from ring callbacks: it reserves nothing. */
static void batch_advance(struct seal_batch *b)
{
  int rc = b->err;
  if (rc == 0 && b->stage == STAGE_TAILS) {
    for (size_t i = 0; rc == 0 && i < b->n; i++)
      if (b->res[i] == 0 && b->tail[i] && b->ws[i]->req.res != 0)
        rc = b->ws[i]->req.res;
    if (rc == 0) {
      barrier_enter(b);
      return;
    }
  } else if (rc == 0) {
    rc = stage_result(b, b->one ? &b->ws[0]->req : &b->sealreq);
  }
  if (rc != 0 && rc != MSD_EPOISONED)
    rc = store__write_failed(b->s, b->ws[0], rc);
  if (rc == 0)
    rc = publish(b);
  batch_end(b, rc);
}

static void batch_io_done(struct ring_req *req)
{
  struct seal_batch *b = req->ctx;
  if (--b->pending == 0)
    batch_advance(b);
}

/* Tail plus seal record of at least this many bytes go out as one O_DIRECT
 * write padded to DIRECT_ALIGN (padding then costs at most 1/16). */
#define SEAL_DIRECT_MIN ((uint64_t)64 << 10)

/* Whether one shard can seal with a single aligned write linked to one
 * fdatasync: its last extent and seal record fit in its buffer, so there
 * are no page-cache pages to write back and the fdatasync is just the
 * device flush (as fio's is). 1 if so (or res[0] failed), 0 to take the
 * general path. */
static int seal_one_fits(struct seal_batch *b)
{
  struct store_writer *w = b->ws[0];
  struct store *s = b->s;
  uint64_t total = rec_hdr_len(w->fill) + w->fill + rec_seal_size(w->next + 1);
  uint64_t padded = (total + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
  if (w->failed || s->poisoned || w->fill == 0 || total < SEAL_DIRECT_MIN ||
      padded > ring_buf_size(s->ring))
    return 0;
  b->res[0] = check_new(s, w);
  return 1;
}

/* After the barrier: the single write and its fdatasync. */
static int seal_one_queue(struct seal_batch *b)
{
  struct store_writer *w = b->ws[0];
  struct store *s = b->s;
  uint64_t hl = rec_hdr_len(w->fill), rsz = hl + w->fill;
  uint64_t total = rsz + rec_seal_size(w->next + 1);
  uint64_t padded = (total + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
  struct idx_extent x = {0, 0, w->flushed, w->fill};
  int fd;
  int rc = store__seg_reserve(s, padded, true, &fd, &x.seg, &x.rec_off, NULL);
  if (rc == 0)
    rc = store__add_extent(w, &x);
  if (rc != 0)
    return rc;
  /* Move the data so the record starts at the aligned buffer start. */
  if (hl != REC_ROOM)
    memmove(w->buf + hl, w->buf + REC_ROOM, w->fill);
  rec_build(w->buf + hl, w->fill, &w->id, w->flushed, s->meta.next_seq++);
  w->flushed += w->fill;
  w->fill = 0;
  entry_of(s, w, &b->ents[0]);
  rec_seal_build(w->buf + rsz, &w->id, &b->ents[0]);
  memset(w->buf + total, 0, (size_t)(padded - total));
  w->req = (struct ring_req){.op = RING_OP_WRITE, .fd = fd, .buf = w->buf, .len = padded,
                             .off = x.rec_off, .buf_index = w->buf_index};
  b->seal_seg = x.seg;
  rc = collect_segs(b);
  return rc != 0 ? rc : queue_syncs(b, &w->req); /* write, then make it durable */
}

/* After the barrier: the seal records and the fdatasyncs. */
static int seal_general_queue(struct seal_batch *b)
{
  int rc = build_seals(b);
  if (rc == 0)
    rc = collect_segs(b);
  return rc != 0 ? rc : queue_syncs(b, &b->sealreq);
}

void store__seal_proceed(struct store *s)
{
  struct seal_batch *b = s->seal_wait;
  s->seal_wait = NULL;
  if (s->flushes_running > 0)
    s->stats.seal_overlaps++; /* UNTESTED: kick calls this only once they drained */
  b->stage = STAGE_SYNC;
  int rc = b->one ? seal_one_queue(b) : seal_general_queue(b);
  if (rc == 0)
    return;
  if (b->pending > 0) { /* UNTESTED: a segment fd that would not open */
    b->err = rc; /* fails once what was queued has completed */
    return;
  }
  if (b->one) {
    b->res[0] = rc;
    rc = 0;
  }
  batch_end(b, rc);
}

/* Starts the general path: checks, then the tails' writes. */
static void seal_general(struct seal_batch *b)
{
  struct store *s = b->s;
  bool some = false;
  for (size_t i = 0; i < b->n; i++) {
    struct store_writer *w = b->ws[i];
    b->res[i] = w->failed ? w->failed : s->poisoned ? store__poisoned(s) : check_new(s, w);
    if (b->res[i] == 0 && w->fill > 0) {
      b->res[i] = store__prepare_flush(w);
      b->tail[i] = b->res[i] == 0;
    }
    /* Each failure's own sentence, before another one overwrites it. */
    if (w->failed)
      snprintf(w->op.why, sizeof w->op.why, "shard %u of an object could not be written "
               "earlier: %s", w->id.index, msd_strerror(w->failed));
    else if (b->res[i] != 0)
      snprintf(w->op.why, sizeof w->op.why, "%s", s->errmsg);
    some |= b->res[i] == 0;
  }
  if (!some) {
    batch_end(b, 0);
    return;
  }
  b->stage = STAGE_TAILS;
  for (size_t i = 0; i < b->n; i++)
    if (b->res[i] == 0 && b->tail[i]) {
      queue_io(b, &b->ws[i]->req);
      ring_queue(s->ring, &b->ws[i]->req);
    }
  if (b->pending == 0)
    barrier_enter(b);
}

static struct seal_batch *batch_new(struct store *s, struct store_wop **wops, size_t n)
{
  size_t bytes = sizeof(struct seal_batch) + n * (sizeof(struct store_writer *) + sizeof(int) +
                                                  sizeof(bool) + sizeof(struct shard_entry));
  struct seal_batch *b = msd_calloc(1, bytes + 16);
  if (b == NULL)
    return NULL;
  b->s = s;
  b->n = n;
  b->ents = (struct shard_entry *)(b + 1);
  b->ws = (struct store_writer **)(b->ents + n);
  b->res = (int *)(b->ws + n);
  b->tail = (bool *)(b->res + n);
  for (size_t i = 0; i < n; i++)
    b->ws[i] = wops[i]->owner;
  return b;
}

void store__seal_start(struct store *s, struct store_wop **wops, size_t n)
{
  s->stats.seals += n;
  s->stats.seal_batches++;
  s->seal_running = true;
  struct seal_batch *b = batch_new(s, wops, n);
  if (b == NULL) { /* UNTESTED: out of memory */
    for (size_t i = 0; i < n; i++) {
      struct store_writer *w = wops[i]->owner;
      w->op.release = seal_release;
      store__op_finish(s, &w->op, -ENOMEM);
    }
    s->seal_running = false;
    return;
  }
  if (n == 1 && seal_one_fits(b)) {
    b->one = true;
    if (b->res[0] != 0)
      batch_end(b, 0); /* res[0] says why */
    else
      barrier_enter(b);
    return;
  }
  seal_general(b);
}

int store_seal_submit(struct store_writer *w, store_cb cb, void *ctx)
{
  if (w == NULL || cb == NULL)
    return MSD_EPARAM;
  if (w->busy || w->aborted)
    return MSD_ESTATE;
  w->busy = true;
  w->op = (struct store_op){.cb = cb, .ctx = ctx};
  w->wop = (struct store_wop){.kind = WOP_SEAL, .owner = w};
  store__wq_push(w->s, &w->wop);
  return 0;
}

int store_seal_many(struct store_writer **ws, size_t n, int *results)
{
  if (ws == NULL || n == 0)
    return MSD_EPARAM;
  struct store *s = ws[0]->s;
  struct store_sync *sw = msd_calloc(n, sizeof *sw);
  if (sw == NULL) {
    for (size_t i = 0; i < n; i++)
      store_write_abort(ws[i]);
    return -ENOMEM;
  }
  int any = 0;
  for (size_t i = 0; i < n; i++) {
    sw[i].s = s;
    int rc = store_seal_submit(ws[i], store__sync_cb, &sw[i]);
    if (rc != 0) { /* UNTESTED: a blocking caller has no write under way */
      sw[i] = (struct store_sync){.s = s, .done = true, .rc = rc};
      store_write_abort(ws[i]);
    }
  }
  for (size_t i = 0; i < n; i++) {
    int rc = store__wait(s, &sw[i].done);
    if (rc == 0)
      rc = sw[i].rc;
    if (results != NULL)
      results[i] = rc;
    if (any == 0)
      any = rc;
  }
  msd_free(sw);
  return any;
}

int store_seal(struct store_writer *w)
{
  return store_seal_many(&w, 1, NULL);
}
