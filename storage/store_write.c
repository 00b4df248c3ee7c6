/* Writing shards: a writer fills one I/O buffer and each full 1 MiB extent
 * goes out as a record through the store's write queue (store_async.c),
 * so the event loop never waits for it; several writers' flushes may be in
 * flight at once. Sealing is store_seal.c. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

int store__poisoned(struct store *s)
{
  return store__fail(s, MSD_EPOISONED, "%s: %s (first failure: %s)", s->dir,
                     msd_strerror(MSD_EPOISONED), msd_strerror(s->poisoned));
}

/* A writer holds a buffer of its own; max_writers of them at most, and one
 * buffer always stays free for creating a segment. */
int store_write_begin(struct store *s, const struct store_id *id, struct store_writer **out)
{
  if (s == NULL || id == NULL || out == NULL)
    return MSD_EPARAM;
  if (s->poisoned)
    return store__poisoned(s);
  if (s->writers >= s->o.max_writers || ring_buf_free(s->ring) < 2)
    return store__fail(s, MSD_ENOBUFS, "%s: all %u writer buffers are in use by open writers",
                       s->dir, s->o.max_writers);
  struct store_writer *w = msd_calloc(1, sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  w->s = s;
  w->id = *id;
  w->buf = ring_buf_get(s->ring, &w->buf_index);
  XXH3_128bits_reset(&w->digest);
  s->writers++;
  *out = w;
  return 0;
}

void store__writer_free(struct store_writer *w)
{
  w->s->writers--;
  ring_buf_put(w->s->ring, w->buf_index);
  msd_free(w->ext);
  msd_free(w);
}

void store_write_abort(struct store_writer *w)
{
  if (w == NULL)
    return;
  if (w->flush == FLUSH_QUEUED && store__wq_remove(w->s, &w->wop))
    w->flush = FLUSH_NONE; /* never started: its callback never runs */
  if (w->flush == FLUSH_RUNNING || w->in_ready || w->in_cb) {
    /* Freed when its I/O completes, or when its completion is released. */
    w->aborted = true;
    w->op.cancelled = true;
    return;
  }
  store__writer_free(w);
}

int store__add_extent(struct store_writer *w, const struct idx_extent *x)
{
  if (msd_grow(&w->ext, &w->cap, w->next, sizeof *w->ext, 4) != 0)
    return -ENOMEM;
  w->ext[w->next++] = *x;
  return 0;
}

int store__prepare_flush(struct store_writer *w)
{
  struct store *s = w->s;
  unsigned char *data = w->buf + REC_ROOM;
  uint64_t bytes = rec_size(w->fill);
  struct idx_extent x = {0, 0, w->flushed, w->fill};
  int fd;
  /* A full extent's record starts exactly at the (4 KiB aligned) buffer,
   * as O_DIRECT needs; partial ones go through the page cache. */
  bool full = w->fill == EXTENT_MAX, dio = false;
  int rc = store__seg_reserve(s, bytes, full, &fd, &x.seg, &x.rec_off, &dio);
  if (rc == 0)
    rc = store__add_extent(w, &x);
  if (rc != 0)
    return rc;
  rec_build(data, w->fill, &w->id, w->flushed, s->meta.next_seq++);
  if (dio) {
    uint64_t padded = (bytes + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
    memset(data - rec_hdr_len(w->fill) + bytes, 0, (size_t)(padded - bytes));
    bytes = padded;
  }
  w->req = (struct ring_req){.op = RING_OP_WRITE, .fd = fd,
                             .buf = data - rec_hdr_len(w->fill), .len = bytes,
                             .off = x.rec_off, .buf_index = w->buf_index};
  w->flushed += w->fill;
  w->fill = 0;
  return 0;
}

/* A failed data write leaves the segment in an unknown state: poison. */
int store__write_failed(struct store *s, const struct store_writer *w, int res)
{
  char name[48];
  store__id_text(&w->id, name);
  if (!s->poisoned)
    s->poisoned = res;
  return store__fail(s, MSD_EPOISONED, "%s: writing shard %s failed: %s; store poisoned",
                     s->dir, name, msd_strerror(res));
}

/* ---- the write operation ---- */

/* Runs store_write_submit's callback; the writer is free for the next
 * operation before it, and may be aborted from it. */
static void write_cb(void *ctx, int rc, const char *why)
{
  struct store_writer *w = ctx;
  w->busy = false;
  w->in_ready = false;
  w->in_cb = true;
  w->user_cb(w->user_ctx, rc, why);
  w->in_cb = false;
}

static void write_release(struct store_op *op)
{
  struct store_writer *w = (struct store_writer *)((char *)op - offsetof(struct store_writer, op));
  w->in_ready = false;
  if (w->aborted)
    store__writer_free(w);
}

static void write_end(struct store_writer *w, int rc)
{
  w->in_ready = true;
  w->op.cb = write_cb;
  w->op.ctx = w;
  w->op.release = write_release;
  store__op_finish(w->s, &w->op, rc);
}

/* Copies what is left of the submitted bytes. A full buffer is written
 * only when more bytes arrive, so that a shard's last extent can go out
 * with its seal record (store_seal.c). */
static void write_more(struct store_writer *w)
{
  while (w->left > 0) {
    if (w->fill == EXTENT_MAX) {
      w->wop = (struct store_wop){.kind = WOP_FLUSH, .owner = w};
      w->flush = FLUSH_QUEUED;
      store__wq_push(w->s, &w->wop);
      return; /* goes on in flush_done */
    }
    size_t n = EXTENT_MAX - w->fill < w->left ? EXTENT_MAX - w->fill : w->left;
    memcpy(w->buf + REC_ROOM + w->fill, w->src, n);
    w->fill += n, w->src += n, w->left -= n;
  }
  write_end(w, 0);
}

static void flush_done(struct ring_req *req)
{
  struct store_writer *w = req->ctx;
  struct store *s = w->s;
  w->flush = FLUSH_NONE;
  s->flushes_running--; /* a seal at the barrier may go on (store_async.c) */
  if (w->aborted) {
    store__writer_free(w);
    return;
  }
  if (req->res != 0) {
    w->failed = store__write_failed(s, w, req->res);
    write_end(w, w->failed);
    return;
  }
  write_more(w);
}

void store__flush_start(struct store *s, struct store_wop *wop)
{
  struct store_writer *w = wop->owner;
  int rc = s->poisoned ? store__poisoned(s) : store__prepare_flush(w);
  if (rc != 0) {
    w->flush = FLUSH_NONE;
    w->failed = rc;
    write_end(w, rc);
    return;
  }
  w->flush = FLUSH_RUNNING;
  s->flushes_running++;
  s->stats.flushes++;
  w->req.cb = flush_done;
  w->req.ctx = w;
  ring_queue(s->ring, &w->req);
}

int store_write_submit(struct store_writer *w, const void *buf, size_t len, store_cb cb,
                       void *ctx)
{
  if (w == NULL || (buf == NULL && len > 0) || cb == NULL)
    return MSD_EPARAM;
  struct store *s = w->s;
  if (w->busy || w->aborted)
    return MSD_ESTATE;
  if (w->failed)
    return w->failed;
  if (s->poisoned)
    return w->failed = store__poisoned(s);
  XXH3_128bits_update(&w->digest, buf, len);
  w->busy = true;
  w->op = (struct store_op){0};
  w->user_cb = cb;
  w->user_ctx = ctx;
  w->src = buf;
  w->left = len;
  write_more(w);
  return 0;
}

int store_write(struct store_writer *w, const void *buf, size_t len)
{
  if (w == NULL)
    return MSD_EPARAM;
  struct store_sync sw = {.s = w->s};
  int rc = store_write_submit(w, buf, len, store__sync_cb, &sw);
  if (rc == 0)
    rc = store__wait(w->s, &sw.done);
  return rc != 0 ? rc : sw.rc;
}
