/* Reading shards back with every block verified, and the scrubber. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "storage/store_int.h"

/* One extent's part of a read: where its header and needed blocks land. */
struct read_part {
  const struct idx_extent *x;
  unsigned char *buf; /* pool buffer: blocks at REC_ROOM, header just before */
  unsigned char *hdr;
  uint64_t need; /* bytes the read must return when header and blocks are one read */
  int buf_index;
  uint32_t b0, nblocks;
  struct ring_req hreq, dreq;
};

static int read_err(struct store *s, const struct store_id *id, const struct idx_extent *x,
                    int rc, uint64_t shard_off)
{
  char name[48];
  store__id_text(id, name);
  if (rc == MSD_ECHECKSUM)
    return store__fail(s, rc,
                       "checksum mismatch in shard %s at offset %" PRIu64
                       " (segment %016" PRIx64 " of %s): the copy here is corrupt; "
                       "rebuild it from the other shards",
                       name, shard_off, x->seg, s->dir);
  return store__fail(s, rc, "shard %s: record at segment %016" PRIx64 " offset %" PRIu64
                     " in %s is unreadable: %s",
                     name, x->seg, x->rec_off, s->dir, msd_strerror(rc));
}

/* Queues the header and block reads of one extent part. */
static int queue_part(struct store *s, struct read_part *p, uint64_t from, uint64_t to)
{
  const struct idx_extent *x = p->x;
  int fd;
  int rc = store__seg_fd(s, x->seg, &fd);
  if (rc != 0)
    return rc;
  p->b0 = (uint32_t)(from / STORE_BLOCK);
  p->nblocks = rec_blocks(to) - p->b0;
  uint64_t start = (uint64_t)p->b0 * STORE_BLOCK;
  uint64_t stop = (uint64_t)(p->b0 + p->nblocks) * STORE_BLOCK;
  if (stop > x->len)
    stop = x->len;
  uint64_t hl = rec_hdr_len(x->len);
  p->hdr = p->buf + REC_ROOM - hl; /* so the blocks land at REC_ROOM */
  p->need = hl + stop;
  int dfd = hl == REC_ROOM && start == 0 && x->rec_off % DIRECT_ALIGN == 0
                ? store__seg_dfd(s, x->seg)
                : -1;
  if (dfd >= 0) {
    /* A full extent written with O_DIRECT: read it the same way, skipping
     * the page cache's copy. The length is rounded up to the alignment; the
     * record may be the file's last, so the tail can come back short. */
    uint64_t len = (p->need + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
    p->hreq = (struct ring_req){.op = RING_OP_READ, .fd = dfd, .buf = p->hdr, .len = len,
                                .off = x->rec_off, .buf_index = p->buf_index};
    p->dreq.len = 0;
    ring_queue(s->ring, &p->hreq);
    return 0;
  }
  if (start == 0) {
    /* Header and blocks are adjacent on disk: one read. */
    p->hreq = (struct ring_req){.op = RING_OP_READ, .fd = fd, .buf = p->hdr,
                                .len = hl + stop, .off = x->rec_off, .buf_index = p->buf_index};
    p->dreq.len = 0;
    ring_queue(s->ring, &p->hreq);
    return 0;
  }
  p->hreq = (struct ring_req){.op = RING_OP_READ, .fd = fd, .buf = p->hdr, .len = hl,
                              .off = x->rec_off, .buf_index = p->buf_index};
  p->dreq = (struct ring_req){.op = RING_OP_READ, .fd = fd, .buf = p->buf + REC_ROOM,
                              .len = stop - start, .off = x->rec_off + hl + start,
                              .buf_index = p->buf_index};
  ring_queue(s->ring, &p->hreq);
  ring_queue(s->ring, &p->dreq);
  return 0;
}

static int check_part(struct store *s, const struct store_id *id, const struct read_part *p)
{
  const struct idx_extent *x = p->x;
  bool two = p->dreq.len > 0;
  int rc = p->hreq.res ? p->hreq.res : two ? p->dreq.res : 0;
  if (rc == 0 && (two ? p->hreq.done != p->hreq.len || p->dreq.done != p->dreq.len
                      : p->hreq.done < p->need))
    rc = MSD_ECORRUPT; /* the segment ends early */
  if (rc == 0)
    rc = rec_check_header(p->hdr, id, x->shard_off, x->len);
  if (rc != 0)
    return read_err(s, id, x, rc, x->shard_off);
  long bad = rec_check_blocks(p->hdr, x->len, p->b0, p->nblocks, p->buf + REC_ROOM);
  if (bad >= 0)
    return read_err(s, id, x, MSD_ECHECKSUM, x->shard_off + (uint64_t)bad * STORE_BLOCK);
  return 0;
}

/* Parts read at once by one read: a 1 MiB read spans two extents at most,
 * so this only matters for the blocking reads of tools and tests. */
#define READ_PARTS 8

/* An asynchronous read (store_read_submit). */
struct store_read_op {
  struct store_op op;
  struct store *s;
  struct store_id id;
  struct shard_entry e;
  uint64_t off, end; /* the shard bytes to return */
  unsigned char *out;
  size_t *got;
  uint32_t next;     /* the next extent to read */
  struct read_part parts[READ_PARTS];
  unsigned nparts, pending;
  int err;
  struct store_read_op *wait_next;
};

unsigned store__read_bufs(const struct store *s)
{
  unsigned keep = s->o.max_writers - s->writers + 1; /* writers' claims, a new segment */
  unsigned nfree = ring_buf_free(s->ring);
  return nfree > keep ? nfree - keep : 0;
}

struct store_read_op *store__read_next_waiting(struct store_read_op *r)
{
  return r->wait_next;
}

void store__read_wait(struct store_read_op *r)
{
  struct store *s = r->s;
  r->wait_next = NULL;
  if (s->rwait_tail != NULL)
    s->rwait_tail->wait_next = r;
  else
    s->rwait_head = r;
  s->rwait_tail = r;
}

static void read_release(struct store_op *op)
{
  struct store_read_op *r = (struct store_read_op *)op;
  msd_free(r->e.ext);
  msd_free(r);
}

static void read_finish(struct store_read_op *r, int rc)
{
  r->s->stats.reads++;
  if (rc == 0)
    *r->got = (size_t)(r->end - r->off);
  store__op_finish(r->s, &r->op, rc);
}

static bool more_to_read(const struct store_read_op *r)
{
  return r->next < r->e.h.nextents && r->e.ext[r->next].shard_off < r->end;
}

/* Checks the batch that just completed and copies its bytes out. */
static int read_batch_done(struct store_read_op *r)
{
  struct store *s = r->s;
  int rc = r->err;
  for (unsigned j = 0; j < r->nparts; j++) {
    struct read_part *p = &r->parts[j];
    if (rc == 0)
      rc = check_part(s, &r->id, p);
    if (rc == 0) {
      uint64_t lo = r->off > p->x->shard_off ? r->off : p->x->shard_off;
      uint64_t hi = r->end < p->x->shard_off + p->x->len ? r->end : p->x->shard_off + p->x->len;
      uint64_t in = lo - p->x->shard_off - (uint64_t)p->b0 * STORE_BLOCK;
      memcpy(r->out + (lo - r->off), p->buf + REC_ROOM + in, (size_t)(hi - lo));
    }
    ring_buf_put(s->ring, p->buf_index);
    s->read_bufs--;
  }
  if (rc != 0 && r->op.why[0] == 0)
    snprintf(r->op.why, sizeof r->op.why, "%s", s->errmsg);
  r->nparts = 0;
  return rc;
}

static void read_io_done(struct ring_req *req)
{
  struct store_read_op *r = req->ctx;
  if (--r->pending > 0)
    return;
  int rc = read_batch_done(r);
  if (rc != 0 || !more_to_read(r))
    read_finish(r, rc);
  else if (!store__read_resume(r))
    store__read_wait(r);
}

static int queue_one(struct store_read_op *r, struct read_part *p)
{
  uint64_t from = r->off > p->x->shard_off ? r->off - p->x->shard_off : 0;
  uint64_t to = r->end - p->x->shard_off < p->x->len ? r->end - p->x->shard_off : p->x->len;
  int rc = queue_part(r->s, p, from, to);
  if (rc != 0)
    return rc;
  p->hreq.cb = p->dreq.cb = read_io_done;
  p->hreq.ctx = p->dreq.ctx = r;
  r->pending += p->dreq.len > 0 ? 2 : 1;
  return 0;
}

bool store__read_resume(struct store_read_op *r)
{
  struct store *s = r->s;
  unsigned avail = store__read_bufs(s);
  if (avail == 0)
    return false;
  while (r->err == 0 && more_to_read(r) && r->nparts < READ_PARTS && avail > 0) {
    struct read_part *p = &r->parts[r->nparts];
    p->x = &r->e.ext[r->next];
    p->buf = ring_buf_get(s->ring, &p->buf_index);
    s->read_bufs++;
    avail--;
    r->nparts++;
    r->next++;
    int rc = queue_one(r, p);
    if (rc != 0) /* its buffer goes back with the batch; none of its I/O is queued */
      r->err = read_err(s, &r->id, p->x, rc, p->x->shard_off);
  }
  if (r->pending == 0) /* UNTESTED: the first part's segment would not open */
    read_finish(r, read_batch_done(r));
  return true;
}

/* The shard's extents, checked against the requested range. */
static int read_lookup(struct store_read_op *r, size_t len)
{
  struct store *s = r->s;
  char name[48];
  store__id_text(&r->id, name);
  int rc = store__lookup(s, &r->id, &r->e);
  if (rc == 0 && r->e.h.state == IDX_STATE_TOMBSTONE)
    rc = MSD_EDELETED;
  if (rc == 0 && r->off > r->e.h.size)
    return store__fail(s, MSD_ERANGE, "shard %s: read at offset %" PRIu64 " is past its end (%"
                       PRIu64 " bytes)", name, r->off, r->e.h.size);
  if (rc != 0)
    return store__fail(s, rc, "shard %s in %s: %s", name, s->dir, msd_strerror(rc));
  r->end = len < r->e.h.size - r->off ? r->off + len : r->e.h.size;
  while (r->next < r->e.h.nextents &&
         r->e.ext[r->next].shard_off + r->e.ext[r->next].len <= r->off)
    r->next++;
  return 0;
}

int store_read_submit(struct store *s, const struct store_id *id, uint64_t off, void *buf,
                      size_t len, size_t *got, store_cb cb, void *ctx)
{
  if (s == NULL || id == NULL || got == NULL || (buf == NULL && len > 0) || cb == NULL)
    return MSD_EPARAM;
  *got = 0;
  struct store_read_op *r = msd_calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  *r = (struct store_read_op){.op = {.cb = cb, .ctx = ctx, .release = read_release}, .s = s,
                              .id = *id, .off = off, .out = buf, .got = got};
  int rc = read_lookup(r, len);
  if (rc != 0 || !more_to_read(r))
    read_finish(r, rc);
  else
    store__read_wait(r); /* starts from store_poll, when buffers allow */
  return 0;
}

int store_read(struct store *s, const struct store_id *id, uint64_t off, void *buf, size_t len,
               size_t *got)
{
  if (s == NULL)
    return MSD_EPARAM;
  struct store_sync sw = {.s = s};
  int rc = store_read_submit(s, id, off, buf, len, got, store__sync_cb, &sw);
  if (rc == 0)
    rc = store__wait(s, &sw.done);
  return rc != 0 ? rc : sw.rc;
}

int store__rec_read_verified(struct store *s, const struct store_id *id,
                             const struct idx_extent *x, unsigned char *buf, int buf_index,
                             uint64_t *bad_off)
{
  int fd;
  *bad_off = x->shard_off;
  int rc = store__seg_fd(s, x->seg, &fd);
  if (rc != 0)
    return rc;
  struct ring_req r = {.op = RING_OP_READ, .fd = fd, .buf = buf, .len = rec_size(x->len),
                       .off = x->rec_off, .buf_index = buf_index};
  ring_queue(s->ring, &r);
  rc = ring_drain(s->ring);
  if (rc == 0)
    rc = r.res;
  if (rc == 0 && r.done != r.len)
    rc = MSD_ECORRUPT;
  if (rc == 0)
    rc = rec_check_header(buf, id, x->shard_off, x->len);
  if (rc != 0)
    return read_err(s, id, x, rc, x->shard_off);
  long bad = rec_check_blocks(buf, x->len, 0, rec_blocks(x->len), buf + rec_hdr_len(x->len));
  if (bad >= 0) {
    *bad_off = x->shard_off + (uint64_t)bad * STORE_BLOCK;
    return read_err(s, id, x, MSD_ECHECKSUM, *bad_off);
  }
  return 0;
}

static int report_bad(struct store_scrub_report *rep, const struct store_id *id, int code,
                      uint64_t off)
{
  if (msd_grow(&rep->bad, &rep->bad_cap, rep->nbad, sizeof *rep->bad, 8) != 0)
    return -ENOMEM;
  rep->bad[rep->nbad++] = (struct store_bad_shard){*id, code, off};
  return 0;
}

/* Sleeps as long as needed to keep `bytes` since t0 at or under `rate`. */
static void throttle(uint64_t t0, uint64_t bytes, uint64_t rate)
{
  if (rate == 0)
    return;
  uint64_t due = t0 + bytes * 1000000000ull / rate;
  uint64_t now = msd_now_ns();
  if (due > now) {
    uint64_t ns = due - now;
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
  }
}

/* Verifies one shard: every record, then the whole-shard digest. */
static int scrub_shard(struct store *s, const struct store_id *id, const struct shard_entry *e,
                       unsigned char *buf, int idx, struct store_scrub_report *rep, uint64_t t0,
                       uint64_t rate)
{
  XXH3_state_t st;
  XXH3_128bits_reset(&st);
  for (uint32_t i = 0; i < e->h.nextents; i++) {
    const struct idx_extent *x = &e->ext[i];
    uint64_t bad_off;
    int rc = store__rec_read_verified(s, id, x, buf, idx, &bad_off);
    if (rc != 0)
      return report_bad(rep, id, rc, bad_off);
    XXH3_128bits_update(&st, buf + rec_hdr_len(x->len), (size_t)x->len);
    rep->bytes += x->len;
    throttle(t0, rep->bytes, rate);
  }
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
  if (memcmp(c.digest, e->h.digest, sizeof c.digest) != 0)
    return report_bad(rep, id, MSD_ECHECKSUM, UINT64_MAX);
  return 0;
}

struct scrub_ctx {
  struct store *s;
  unsigned char *buf;
  int idx;
  struct store_scrub_report *rep;
  uint64_t t0, rate;
};

static int scrub_one(void *ctx, const struct store_id *id, const struct shard_entry *e, int drc)
{
  struct scrub_ctx *c = ctx;
  if (drc != 0)
    return report_bad(c->rep, id, drc, 0);
  if (e->h.state != IDX_STATE_SEALED)
    return 0;
  c->rep->shards++;
  return scrub_shard(c->s, id, e, c->buf, c->idx, c->rep, c->t0, c->rate);
}

int store_scrub(struct store *s, uint64_t rate, struct store_scrub_report *rep)
{
  if (s == NULL || rep == NULL)
    return MSD_EPARAM;
  memset(rep, 0, sizeof *rep);
  int rc = store__checkpoint(s);
  if (rc != 0 && rc != MSD_EPOISONED)
    return rc;
  struct scrub_ctx c = {s, NULL, 0, rep, msd_now_ns(), rate};
  c.buf = ring_buf_get(s->ring, &c.idx);
  if (c.buf == NULL)
    return store__fail(s, MSD_ENOBUFS, "%s: no free I/O buffer to scrub with", s->dir);
  rc = store__each_shard(s, scrub_one, &c);
  ring_buf_put(s->ring, c.idx);
  if (rep->nbad > 0)
    msd_log(MSD_LOG_WARN, "%s: scrub found %zu bad shard(s) among %" PRIu64, s->dir, rep->nbad,
            rep->shards);
  return rc;
}

void store_scrub_free(struct store_scrub_report *rep)
{
  if (rep == NULL)
    return;
  msd_free(rep->bad);
  rep->bad = NULL;
  rep->nbad = rep->bad_cap = 0;
}
