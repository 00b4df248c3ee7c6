/* Writing shards: a writer fills one I/O buffer, writes each full 1 MiB
 * extent as a record, and seal makes a batch of shards durable (writes,
 * then linked fdatasync per segment) and visible (one index commit). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

/* I/O buffers kept back from writers for segment creation and reads. */
#define BUFS_KEPT_BACK 2

struct store_writer {
  struct store *s;
  struct store_id id;
  unsigned char *buf; /* pool buffer: REC_ROOM bytes of header space, then data */
  int buf_index;
  size_t fill;        /* data bytes in buf */
  uint64_t flushed;   /* shard bytes already in records */
  XXH3_state_t digest;
  struct idx_extent *ext;
  uint32_t next; /* extents used */
  size_t cap;
  int failed;
  struct ring_req req;
};

static int poisoned(struct store *s)
{
  return store__fail(s, MSD_EPOISONED, "%s: %s (first failure: %s)", s->dir,
                     msd_strerror(MSD_EPOISONED), msd_strerror(s->poisoned));
}

int store_write_begin(struct store *s, const struct store_id *id, struct store_writer **out)
{
  if (s == NULL || id == NULL || out == NULL)
    return MSD_EPARAM;
  if (s->poisoned)
    return poisoned(s);
  if (ring_buf_free(s->ring) <= BUFS_KEPT_BACK)
    return store__fail(s, MSD_ENOBUFS, "%s: all %u I/O buffers are in use by open writers",
                       s->dir, s->o.io_buffers);
  struct store_writer *w = msd_calloc(1, sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  w->s = s;
  w->id = *id;
  w->buf = ring_buf_get(s->ring, &w->buf_index);
  XXH3_128bits_reset(&w->digest);
  *out = w;
  return 0;
}

void store_write_abort(struct store_writer *w)
{
  if (w == NULL)
    return;
  ring_buf_put(w->s->ring, w->buf_index);
  msd_free(w->ext);
  msd_free(w);
}

static int add_extent(struct store_writer *w, const struct idx_extent *x)
{
  if (msd_grow(&w->ext, &w->cap, w->next, sizeof *w->ext, 4) != 0)
    return -ENOMEM;
  w->ext[w->next++] = *x;
  return 0;
}

/* Turns the buffered data into a record with a place in a segment and
 * prepares (does not queue) the write request for it. */
static int prepare_flush(struct store_writer *w)
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
    rc = add_extent(w, &x);
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
static int write_failed(struct store *s, const struct store_writer *w, int res)
{
  char name[48];
  store__id_text(&w->id, name);
  if (!s->poisoned)
    s->poisoned = res;
  return store__fail(s, MSD_EPOISONED, "%s: writing shard %s failed: %s; store poisoned",
                     s->dir, name, msd_strerror(res));
}

int store_write(struct store_writer *w, const void *buf, size_t len)
{
  if (w == NULL || (buf == NULL && len > 0))
    return MSD_EPARAM;
  struct store *s = w->s;
  if (w->failed)
    return w->failed;
  if (s->poisoned)
    return w->failed = poisoned(s);
  XXH3_128bits_update(&w->digest, buf, len);
  const unsigned char *p = buf;
  while (len > 0) {
    /* A full buffer is written only when more bytes arrive, so that a
     * shard's last extent can go out with its seal record (seal_one). */
    if (w->fill == EXTENT_MAX) {
      int rc = prepare_flush(w);
      if (rc != 0)
        return w->failed = rc;
      ring_queue(s->ring, &w->req);
      rc = ring_drain(s->ring);
      if (rc != 0 || w->req.res != 0)
        return w->failed = write_failed(s, w, rc ? rc : w->req.res);
    }
    size_t n = EXTENT_MAX - w->fill < len ? EXTENT_MAX - w->fill : len;
    memcpy(w->buf + REC_ROOM + w->fill, p, n);
    w->fill += n, p += n, len -= n;
  }
  return 0;
}

struct seal_seg {
  uint64_t id;
  struct ring_req fsync;
};

/* The distinct segments a batch writes to: its shards' extents and the
 * segment holding the seal records. */
static int collect_segs(struct store_writer **ws, size_t n, const int *res, uint64_t seal_seg,
                        struct seal_seg **out, size_t *nsegs)
{
  size_t cap = 1, count = 0;
  for (size_t i = 0; i < n; i++)
    cap += res[i] == 0 ? ws[i]->next : 0;
  struct seal_seg *segs = msd_calloc(cap, sizeof *segs);
  if (segs == NULL)
    return -ENOMEM;
  segs[count++].id = seal_seg;
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; res[i] == 0 && j < ws[i]->next; j++) {
      size_t k = 0;
      while (k < count && segs[k].id != ws[i]->ext[j].seg)
        k++;
      if (k == count)
        segs[count++].id = ws[i]->ext[j].seg;
    }
  *out = segs;
  *nsegs = count;
  return 0;
}

/* Writes the tails and the seal records and makes them durable.
 * Why two rounds: an fdatasync covers only writes that completed before it
 * started, so the tails complete first; then the seal records' write is
 * linked to its segment's fdatasync (the kernel orders that pair), beside
 * plain fdatasyncs of the other segments the shards' extents are in. */
static int write_and_sync(struct store *s, struct store_writer **ws, size_t n, const int *res,
                          const bool *tail, struct ring_req *seal, struct seal_seg *segs,
                          size_t nsegs)
{
  for (size_t i = 0; i < n; i++)
    if (res[i] == 0 && tail[i])
      ring_queue(s->ring, &ws[i]->req);
  int rc = ring_drain(s->ring);
  for (size_t k = 0; rc == 0 && k < nsegs; k++) {
    int fd;
    rc = store__seg_fd(s, segs[k].id, &fd);
    segs[k].fsync = (struct ring_req){.op = RING_OP_FSYNC, .fd = fd, .buf_index = -1};
    if (rc == 0 && k == 0)
      ring_queue_linked(s->ring, seal, &segs[k].fsync);
    else if (rc == 0)
      ring_queue(s->ring, &segs[k].fsync);
  }
  if (rc == 0)
    rc = ring_drain(s->ring);
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (res[i] == 0 && tail[i] && ws[i]->req.res != 0)
      rc = ws[i]->req.res;
  if (rc == 0)
    rc = seal->res;
  for (size_t k = 0; rc == 0 && k < nsegs; k++)
    rc = segs[k].fsync.res;
  return rc;
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
static int build_seals(struct store *s, struct store_writer **ws, size_t n, const int *res,
                       struct shard_entry *ents, unsigned char **buf, struct ring_req *req,
                       uint64_t *seal_seg)
{
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++)
    if (res[i] == 0) {
      entry_of(s, ws[i], &ents[i]);
      total += rec_seal_size(ws[i]->next);
    }
  *buf = msd_aligned_alloc(4096, total);
  if (*buf == NULL)
    return -ENOMEM;
  uint64_t at = 0;
  for (size_t i = 0; i < n; i++)
    if (res[i] == 0) {
      rec_seal_build(*buf + at, &ws[i]->id, &ents[i]);
      at += rec_seal_size(ws[i]->next);
    }
  int fd;
  uint64_t off;
  int rc = store__seg_reserve(s, total, false, &fd, seal_seg, &off, NULL);
  *req = (struct ring_req){.op = RING_OP_WRITE, .fd = fd, .buf = *buf, .len = total,
                           .off = off, .buf_index = -1};
  return rc;
}

/* Publishes the sealed shards to readers; the writers' extents move over. */
static int publish(struct store *s, struct store_writer **ws, size_t n, int *res,
                   struct shard_entry *ents)
{
  for (size_t i = 0; i < n; i++)
    if (res[i] == 0) {
      if (store__pending_put(s, &ws[i]->id, &ents[i]) == 0)
        ws[i]->ext = NULL; /* now owned by the pending table */
      else
        res[i] = -ENOMEM; /* UNTESTED: durable, and replayed on the next open */
    }
  return s->npend >= CHECKPOINT_SEALS ? store__checkpoint(s) : 0;
}

/* Tail plus seal record of at least this many bytes go out as one O_DIRECT
 * write padded to DIRECT_ALIGN (padding then costs at most 1/16). */
#define SEAL_DIRECT_MIN ((uint64_t)64 << 10)

/* Seals one shard whose last extent and seal record fit in its buffer with
 * a single aligned write linked to one fdatasync: no page-cache pages to
 * write back, so the fdatasync is just the device flush (as fio's is).
 * Returns 1 if it applied (rc in *out), 0 to take the general path. */
static int seal_one(struct store_writer *w, int *out)
{
  struct store *s = w->s;
  uint64_t hl = rec_hdr_len(w->fill), rsz = hl + w->fill;
  uint64_t total = rsz + rec_seal_size(w->next + 1);
  uint64_t padded = (total + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
  if (w->failed || s->poisoned || w->fill == 0 || total < SEAL_DIRECT_MIN ||
      padded > ring_buf_size(s->ring) || (*out = check_new(s, w)) != 0)
    return *out != 0;
  struct idx_extent x = {0, 0, w->flushed, w->fill};
  int fd;
  int rc = store__seg_reserve(s, padded, true, &fd, &x.seg, &x.rec_off, NULL);
  if (rc == 0)
    rc = add_extent(w, &x);
  if (rc != 0) {
    *out = rc;
    return 1;
  }
  /* Move the data so the record starts at the aligned buffer start. */
  if (hl != REC_ROOM)
    memmove(w->buf + hl, w->buf + REC_ROOM, w->fill);
  rec_build(w->buf + hl, w->fill, &w->id, w->flushed, s->meta.next_seq++);
  w->flushed += w->fill;
  w->fill = 0;
  struct shard_entry e;
  entry_of(s, w, &e);
  rec_seal_build(w->buf + rsz, &w->id, &e);
  memset(w->buf + total, 0, (size_t)(padded - total));
  w->req = (struct ring_req){.op = RING_OP_WRITE, .fd = fd, .buf = w->buf, .len = padded,
                             .off = x.rec_off, .buf_index = w->buf_index};
  struct seal_seg *segs = NULL;
  size_t nsegs = 0;
  int res = 0;
  rc = collect_segs(&w, 1, &res, x.seg, &segs, &nsegs);
  for (size_t k = 0; rc == 0 && k < nsegs; k++) {
    int sfd;
    rc = store__seg_fd(s, segs[k].id, &sfd);
    segs[k].fsync = (struct ring_req){.op = RING_OP_FSYNC, .fd = sfd, .buf_index = -1};
    if (rc == 0 && k == 0)
      ring_queue_linked(s->ring, &w->req, &segs[k].fsync); /* write, then make it durable */
    else if (rc == 0)
      ring_queue(s->ring, &segs[k].fsync);
  }
  if (rc == 0)
    rc = ring_drain(s->ring);
  for (size_t k = 0; rc == 0 && k < nsegs; k++)
    rc = segs[k].fsync.res;
  if (rc == 0)
    rc = w->req.res;
  msd_free(segs);
  if (rc != 0)
    rc = write_failed(s, w, rc);
  if (rc == 0)
    rc = publish(s, &w, 1, &res, &e);
  *out = rc ? rc : res;
  return 1;
}

int store_seal_many(struct store_writer **ws, size_t n, int *results)
{
  if (ws == NULL || n == 0)
    return MSD_EPARAM;
  struct store *s = ws[0]->s;
  int *res = results ? results : msd_calloc(n, sizeof *res);
  bool *tail = msd_calloc(n, sizeof *tail);
  struct shard_entry *ents = msd_calloc(n, sizeof *ents);
  struct seal_seg *segs = NULL;
  unsigned char *sealbuf = NULL;
  struct ring_req sealreq;
  uint64_t seal_seg = 0;
  size_t nsegs = 0;
  int rc = (res && tail && ents) ? 0 : -ENOMEM;
  if (rc == 0 && n == 1 && seal_one(ws[0], &res[0])) {
    rc = res[0];
    goto done;
  }
  for (size_t i = 0; rc == 0 && i < n; i++) {
    res[i] = ws[i]->failed ? ws[i]->failed : s->poisoned ? poisoned(s) : check_new(s, ws[i]);
    if (res[i] == 0 && ws[i]->fill > 0) {
      res[i] = prepare_flush(ws[i]);
      tail[i] = res[i] == 0;
    }
  }
  bool some = false;
  for (size_t i = 0; rc == 0 && i < n; i++)
    some |= res[i] == 0;
  if (rc == 0 && !some)
    goto done; /* every writer had already failed */
  if (rc == 0)
    rc = build_seals(s, ws, n, res, ents, &sealbuf, &sealreq, &seal_seg);
  if (rc == 0)
    rc = collect_segs(ws, n, res, seal_seg, &segs, &nsegs);
  if (rc == 0) {
    int io = write_and_sync(s, ws, n, res, tail, &sealreq, segs, nsegs);
    if (io != 0)
      rc = write_failed(s, ws[0], io);
  }
  if (rc == 0)
    rc = publish(s, ws, n, res, ents);
done:;
  int any = rc;
  for (size_t i = 0; i < n; i++) {
    if (res && rc != 0 && res[i] == 0)
      res[i] = rc;
    if (res && any == 0)
      any = res[i];
    store_write_abort(ws[i]); /* frees the writer; its records stay */
  }
  msd_free(sealbuf);
  msd_free(segs);
  msd_free(ents);
  msd_free(tail);
  if (res != results)
    msd_free(res);
  return any;
}
int store_seal(struct store_writer *w)
{
  return store_seal_many(&w, 1, NULL);
}
