/* Chain file writer and verifier (see chainfile.h). Each record is
 * kind (1) | length (4, big-endian) | payload | XXH3-64 of kind..payload (8),
 * after a 16-byte file header. */
#include "chain-anchor/chainfile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "chain-anchor/anchor.h"
#include "common/alloc.h"
#include "common/err.h"

#define CF_MAGIC "MSDCHAIN"
#define CF_VERSION 1
#define CF_HEADER 16
#define REC_LEAF CHAIN_REC_LEAF
#define REC_BLOCK CHAIN_REC_BLOCK
#define REC_PAYLOAD_MAX CHAIN_PAYLOAD_MAX
#define REC_OVERHEAD 13 /* kind 1 + length 4 + checksum 8 */

#define PEND_MAX (1u << 20) /* buffered appends are written at 1 MiB at the latest */

struct chain_file {
  int fd;
  uint64_t size;    /* bytes in the file and the buffer; every append lands here */
  uint64_t written; /* bytes in the file; the rest is in pend */
  bool buffered;
  uint8_t *pend;
  size_t pend_len, pend_cap;
};

/* The 16-byte file header: magic, version (4, big-endian), 4 zero bytes. */
static int header_check(const uint8_t hdr[CF_HEADER])
{
  static const uint8_t zero[4] = {0};
  if (memcmp(hdr, CF_MAGIC, 8) != 0)
    return MSD_ENOTSTORE;
  if (memcmp(hdr + 8, zero, 3) != 0 || hdr[11] != CF_VERSION || memcmp(hdr + 12, zero, 4) != 0)
    return MSD_EVERSION;
  return 0;
}

int chain_file_open(const char *path, int create, struct chain_file **out)
{
  if (path == NULL || out == NULL)
    return MSD_EPARAM;
  int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0)
    return -errno;
  uint8_t hdr[CF_HEADER];
  ssize_t n = pread(fd, hdr, sizeof hdr, 0);
  int rc = 0;
  if (n == 0 && create) {
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, CF_MAGIC, 8);
    hdr[11] = CF_VERSION;
    if (write(fd, hdr, sizeof hdr) != (ssize_t)sizeof hdr || fsync(fd) != 0)
      rc = -errno;
  } else {
    rc = n == (ssize_t)sizeof hdr ? header_check(hdr) : MSD_ENOTSTORE;
  }
  struct chain_file *cf = rc == 0 ? msd_calloc(1, sizeof *cf) : NULL;
  if (rc == 0 && cf == NULL)
    rc = -ENOMEM;
  if (rc != 0) {
    close(fd);
    return rc;
  }
  off_t end = lseek(fd, 0, SEEK_END);
  if (end < 0) { /* UNTESTED: lseek on a regular file we just opened */
    rc = -errno;
    close(fd);
    msd_free(cf);
    return rc;
  }
  cf->fd = fd;
  cf->size = cf->written = (uint64_t)end;
  *out = cf;
  return 0;
}

void chain_file_close(struct chain_file *cf)
{
  if (cf == NULL)
    return;
  close(cf->fd);
  msd_free(cf->pend);
  msd_free(cf);
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++)
    p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v = v << 8 | p[i];
  return v;
}

/* Writes everything at or after `written` in one write: O_APPEND makes it
 * land whole at the end. A short write is cut back so the file still ends
 * on a record boundary, and the records stay buffered. */
static int write_out(struct chain_file *cf, const uint8_t *buf, size_t len)
{
  ssize_t n = write(cf->fd, buf, len);
  if (n == (ssize_t)len) {
    cf->written += len;
    return 0;
  }
  int rc = n < 0 ? -errno : -EIO;
  if (ftruncate(cf->fd, (off_t)cf->written) != 0) /* UNTESTED: needs a failing disk */
    rc = -errno;
  return rc;
}

int chain_file_flush(struct chain_file *cf)
{
  if (cf == NULL || cf->pend_len == 0)
    return 0;
  int rc = write_out(cf, cf->pend, cf->pend_len);
  if (rc == 0)
    cf->pend_len = 0;
  return rc;
}

void chain_file_buffer(struct chain_file *cf, bool on)
{
  cf->buffered = on;
}

/* Room for `more` buffered bytes, flushing first when the buffer is full. */
static int make_room(struct chain_file *cf, size_t more)
{
  if (cf->pend_len + more > PEND_MAX) {
    int rc = chain_file_flush(cf);
    if (rc != 0)
      return rc;
  }
  if (cf->pend_len + more <= cf->pend_cap)
    return 0;
  size_t cap = cf->pend_cap ? cf->pend_cap : 65536;
  while (cap < cf->pend_len + more)
    cap *= 2;
  uint8_t *p = msd_malloc(cap);
  if (p == NULL)
    return -ENOMEM;
  if (cf->pend_len > 0)
    memcpy(p, cf->pend, cf->pend_len);
  msd_free(cf->pend);
  cf->pend = p;
  cf->pend_cap = cap;
  return 0;
}

static int append(struct chain_file *cf, uint8_t kind, const uint8_t *payload, size_t len,
                  uint64_t *off)
{
  if (cf == NULL || payload == NULL || len == 0 || len > REC_PAYLOAD_MAX)
    return MSD_EPARAM;
  uint8_t rec[5 + REC_PAYLOAD_MAX + 8];
  rec[0] = kind;
  put_be(rec + 1, len, 4);
  memcpy(rec + 5, payload, len);
  put_be(rec + 5 + len, XXH3_64bits(rec, 5 + len), 8);
  size_t total = len + REC_OVERHEAD;
  int rc = cf->buffered ? make_room(cf, total) : write_out(cf, rec, total);
  if (rc != 0)
    return rc;
  if (cf->buffered) {
    memcpy(cf->pend + cf->pend_len, rec, total);
    cf->pend_len += total;
  }
  if (off != NULL)
    *off = cf->size;
  cf->size += total;
  return 0;
}

int chain_append_leaf(struct chain_file *cf, const uint8_t *leaf, size_t len, uint64_t *off)
{
  return append(cf, REC_LEAF, leaf, len, off);
}

int chain_append_block(struct chain_file *cf, const struct block_header *h, uint64_t *off)
{
  uint8_t buf[BLOCK_HEADER_BYTES];
  if (h == NULL)
    return MSD_EPARAM;
  block_encode(h, buf);
  return append(cf, REC_BLOCK, buf, sizeof buf, off);
}

int chain_file_sync(struct chain_file *cf)
{
  int rc = chain_file_flush(cf);
  return rc != 0 ? rc : fdatasync(cf->fd) == 0 ? 0 : -errno;
}

uint64_t chain_file_size(const struct chain_file *cf)
{
  return cf->size;
}

int chain_file_truncate(struct chain_file *cf, uint64_t size)
{
  if (cf == NULL || size < CF_HEADER || size > cf->size)
    return MSD_EPARAM;
  if (size >= cf->written) { /* only buffered records go */
    cf->pend_len = (size_t)(size - cf->written);
    cf->size = size;
    return 0;
  }
  if (ftruncate(cf->fd, (off_t)size) != 0)
    return -errno; /* UNTESTED: needs a failing disk */
  cf->size = cf->written = size;
  cf->pend_len = 0;
  return 0;
}

/* Up to len bytes at off, from the file and then the buffer. */
static ssize_t read_at(const struct chain_file *cf, uint8_t *buf, size_t len, uint64_t off)
{
  size_t got = 0;
  while (got < len && off + got < cf->written) {
    size_t want = (size_t)(cf->written - (off + got) < len - got ? cf->written - (off + got)
                                                                 : len - got);
    ssize_t n = pread(cf->fd, buf + got, want, (off_t)(off + got));
    if (n <= 0)
      return n < 0 ? -1 : (ssize_t)got; /* UNTESTED: file shrank under us */
    got += (size_t)n;
  }
  if (got < len && off + got >= cf->written && off + got < cf->size) {
    size_t at = (size_t)(off + got - cf->written);
    size_t n = cf->pend_len - at < len - got ? cf->pend_len - at : len - got;
    memcpy(buf + got, cf->pend + at, n);
    got += n;
  }
  return (ssize_t)got;
}

int chain_read_record(const struct chain_file *cf, uint64_t off, uint8_t *kind, uint8_t *buf,
                      size_t cap, size_t *len)
{
  uint8_t rec[REC_PAYLOAD_MAX + REC_OVERHEAD];
  if (cf == NULL || off < CF_HEADER || off + REC_OVERHEAD > cf->size)
    return MSD_EPARAM;
  size_t want = (size_t)(cf->size - off < sizeof rec ? cf->size - off : sizeof rec);
  ssize_t n = read_at(cf, rec, want, off);
  if (n < 0)
    return -errno;
  size_t plen = (size_t)get_be(rec + 1, 4);
  if ((size_t)n < 5 || plen == 0 || plen > REC_PAYLOAD_MAX || plen + REC_OVERHEAD > (size_t)n ||
      get_be(rec + 5 + plen, 8) != XXH3_64bits(rec, 5 + plen))
    return MSD_ECORRUPT;
  if (plen > cap)
    return MSD_ESHORT;
  *kind = rec[0];
  memcpy(buf, rec + 5, plen);
  *len = plen;
  return 0;
}

int chain_file_read(const struct chain_file *cf, uint64_t off, uint8_t *buf, size_t cap,
                    size_t *len)
{
  if (cf == NULL || buf == NULL || len == NULL || off > cf->size)
    return MSD_ERANGE;
  size_t want = cf->size - off < cap ? (size_t)(cf->size - off) : cap;
  ssize_t got = read_at(cf, buf, want, off);
  if (got != (ssize_t)want)
    return got < 0 ? -errno : MSD_ECORRUPT; /* UNTESTED: file shrank under us */
  *len = want;
  return 0;
}

int chain_file_scan(const char *path,
                    int (*fn)(void *ctx, uint8_t kind, const uint8_t *payload, size_t len,
                              uint64_t off),
                    void *ctx, uint64_t *stop)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -errno;
  uint8_t hdr[CF_HEADER], rec[REC_PAYLOAD_MAX + REC_OVERHEAD];
  int rc = 0;
  if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr || header_check(hdr) != 0)
    rc = MSD_ENOTSTORE;
  uint64_t off = CF_HEADER;
  while (rc == 0) {
    size_t got = fread(rec, 1, 5, f);
    if (got == 0 && feof(f))
      break;
    size_t len = got == 5 ? (size_t)get_be(rec + 1, 4) : 0;
    if (got != 5 || len == 0 || len > REC_PAYLOAD_MAX || fread(rec + 5, 1, len + 8, f) != len + 8 ||
        get_be(rec + 5 + len, 8) != XXH3_64bits(rec, 5 + len)) {
      rc = MSD_ECORRUPT;
      break;
    }
    rc = fn(ctx, rec[0], rec + 5, len, off);
    if (rc == 0)
      off += len + REC_OVERHEAD;
  }
  fclose(f);
  if (stop != NULL)
    *stop = rc == MSD_ENOTSTORE ? 0 : off;
  return rc;
}

/* The verifier's state. A block may close the tree below the leaves already
 * read (leaves committed while it was being cut), so the walk keeps the
 * compact range at the last block plus the leaf hashes read since. */
struct walk {
  struct chain_verify_report *rep;
  struct merkle_compact base; /* the tree at the last block's size_after */
  uint8_t (*pending)[MERKLE_HASH];
  size_t npending, cap;
  uint8_t prev[BLOCK_HASH];
  uint64_t off;               /* offset of the record being checked */
};

static int fail(struct walk *w, const char *reason)
{
  w->rep->bad_offset = w->off;
  w->rep->bad_block = w->rep->blocks + 1; /* the block that covers (or is) the record */
  snprintf(w->rep->reason, sizeof w->rep->reason, "%s", reason);
  return MSD_ECORRUPT;
}

static const char *block_mismatch(struct walk *w, const struct block_header *h,
                                  struct merkle_compact *tree)
{
  uint8_t root[MERKLE_HASH];
  if (h->height != w->rep->blocks + 1)
    return "height out of sequence";
  if (memcmp(h->prev_hash, w->prev, BLOCK_HASH) != 0)
    return "previous hash does not match";
  if (h->size_before != w->base.size)
    return "tree size before does not match";
  if (h->size_after < h->size_before || h->size_after - h->size_before > w->npending)
    return "tree size after does not match";
  for (uint64_t i = 0; i < h->size_after - h->size_before; i++)
    merkle_compact_append(tree, w->pending[i]);
  merkle_compact_root(tree, root);
  return memcmp(h->root, root, MERKLE_HASH) != 0 ? "root does not match its leaves" : NULL;
}

static int check_block(struct walk *w, const uint8_t *payload, size_t len)
{
  struct block_header h;
  if (block_decode(payload, len, &h) != 0)
    return fail(w, "malformed block header");
  struct merkle_compact tree = w->base;
  const char *why = block_mismatch(w, &h, &tree);
  if (why != NULL)
    return fail(w, why);
  size_t used = (size_t)(h.size_after - h.size_before);
  memmove(w->pending, w->pending + used, (w->npending - used) * MERKLE_HASH);
  w->npending -= used;
  w->base = tree;
  block_hash(&h, w->prev);
  w->rep->blocks++;
  return 0;
}

static int check_record(void *ctx, uint8_t kind, const uint8_t *payload, size_t len, uint64_t off)
{
  struct walk *w = ctx;
  w->off = off;
  if (kind == REC_BLOCK)
    return check_block(w, payload, len);
  if (kind != REC_LEAF)
    return fail(w, "unknown record kind");
  struct anchor_leaf a;
  if (anchor_decode(payload, len, &a) != 0)
    return fail(w, "malformed anchor leaf");
  if (msd_grow(&w->pending, &w->cap, w->npending, MERKLE_HASH, 1024) != 0)
    return -ENOMEM;
  merkle_leaf_hash(payload, len, w->pending[w->npending++]);
  w->rep->leaves++;
  return 0;
}

int chain_verify(const char *path, struct chain_verify_report *rep)
{
  if (path == NULL || rep == NULL)
    return MSD_EPARAM;
  memset(rep, 0, sizeof *rep);
  struct walk w = {.rep = rep};
  merkle_compact_init(&w.base);
  uint64_t stop = 0;
  int rc = chain_file_scan(path, check_record, &w, &stop);
  if (rc == MSD_ENOTSTORE) {
    w.off = 0;
    rc = fail(&w, "not a version 1 chain file");
  } else if (rc == MSD_ECORRUPT && rep->reason[0] == '\0') {
    w.off = stop;
    rc = fail(&w, "truncated, oversized or checksum-failing record");
  }
  memcpy(rep->head, w.prev, BLOCK_HASH);
  struct merkle_compact all = w.base;
  for (size_t i = 0; i < w.npending; i++)
    merkle_compact_append(&all, w.pending[i]);
  merkle_compact_root(&all, rep->root);
  msd_free(w.pending);
  return rc;
}
