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
#define REC_LEAF 1
#define REC_BLOCK 2
#define REC_PAYLOAD_MAX 4096

struct chain_file {
  int fd;
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
  cf->fd = fd;
  *out = cf;
  return 0;
}

void chain_file_close(struct chain_file *cf)
{
  if (cf == NULL)
    return;
  close(cf->fd);
  msd_free(cf);
}

static int append(struct chain_file *cf, uint8_t kind, const uint8_t *payload, size_t len)
{
  if (cf == NULL || payload == NULL || len == 0 || len > REC_PAYLOAD_MAX)
    return MSD_EPARAM;
  uint8_t rec[5 + REC_PAYLOAD_MAX + 8];
  rec[0] = kind;
  for (int i = 0; i < 4; i++)
    rec[1 + i] = (uint8_t)(len >> (8 * (3 - i)));
  memcpy(rec + 5, payload, len);
  uint64_t sum = XXH3_64bits(rec, 5 + len);
  for (int i = 0; i < 8; i++)
    rec[5 + len + (size_t)i] = (uint8_t)(sum >> (8 * (7 - i)));
  size_t total = 5 + len + 8;
  /* One write per record: O_APPEND makes it land whole at the end. */
  ssize_t n = write(cf->fd, rec, total);
  return n == (ssize_t)total ? 0 : n < 0 ? -errno : -EIO;
}

int chain_append_leaf(struct chain_file *cf, const uint8_t *leaf, size_t len)
{
  return append(cf, REC_LEAF, leaf, len);
}

int chain_append_block(struct chain_file *cf, const struct block_header *h)
{
  uint8_t buf[BLOCK_HEADER_BYTES];
  if (h == NULL)
    return MSD_EPARAM;
  block_encode(h, buf);
  return append(cf, REC_BLOCK, buf, sizeof buf);
}

int chain_file_sync(struct chain_file *cf)
{
  return fdatasync(cf->fd) == 0 ? 0 : -errno;
}

struct walk {
  struct chain_verify_report *rep;
  struct merkle_compact tree;
  uint8_t prev[BLOCK_HASH];
  uint64_t last_size;
};

static int fail(struct walk *w, uint64_t off, const char *reason)
{
  w->rep->bad_offset = off;
  w->rep->bad_block = w->rep->blocks + 1; /* the block that covers (or is) the record */
  snprintf(w->rep->reason, sizeof w->rep->reason, "%s", reason);
  return MSD_ECORRUPT;
}

static int check_block(struct walk *w, const uint8_t *payload, size_t len, uint64_t off)
{
  struct block_header h;
  uint8_t root[MERKLE_HASH];
  if (block_decode(payload, len, &h) != 0)
    return fail(w, off, "malformed block header");
  merkle_compact_root(&w->tree, root);
  const char *why = h.height != w->rep->blocks + 1           ? "height out of sequence"
                    : memcmp(h.prev_hash, w->prev, BLOCK_HASH) ? "previous hash does not match"
                    : h.size_before != w->last_size           ? "tree size before does not match"
                    : h.size_after != w->tree.size            ? "tree size after does not match"
                    : memcmp(h.root, root, MERKLE_HASH)       ? "root does not match its leaves"
                                                              : NULL;
  if (why != NULL)
    return fail(w, off, why);
  block_hash(&h, w->prev);
  w->last_size = h.size_after;
  w->rep->blocks++;
  return 0;
}

static int check_record(struct walk *w, uint8_t kind, const uint8_t *payload, size_t len,
                        uint64_t off)
{
  if (kind == REC_BLOCK)
    return check_block(w, payload, len, off);
  if (kind != REC_LEAF)
    return fail(w, off, "unknown record kind");
  struct anchor_leaf a;
  if (anchor_decode(payload, len, &a) != 0)
    return fail(w, off, "malformed anchor leaf");
  uint8_t lh[MERKLE_HASH];
  merkle_leaf_hash(payload, len, lh);
  if (merkle_compact_append(&w->tree, lh) != 0)
    return fail(w, off, "tree full"); /* UNTESTED: 2^63 leaves */
  w->rep->leaves++;
  return 0;
}

int chain_verify(const char *path, struct chain_verify_report *rep)
{
  if (path == NULL || rep == NULL)
    return MSD_EPARAM;
  memset(rep, 0, sizeof *rep);
  struct walk w = {.rep = rep};
  merkle_compact_init(&w.tree);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -errno;
  uint8_t hdr[CF_HEADER], rec[5 + REC_PAYLOAD_MAX + 8];
  int rc = 0;
  if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr || header_check(hdr) != 0)
    rc = fail(&w, 0, "not a version 1 chain file");
  uint64_t off = CF_HEADER;
  while (rc == 0) {
    size_t got = fread(rec, 1, 5, f);
    if (got == 0 && feof(f))
      break;
    size_t len = got == 5 ? (size_t)rec[1] << 24 | (size_t)rec[2] << 16 | (size_t)rec[3] << 8 | rec[4]
                          : 0;
    if (got != 5 || len == 0 || len > REC_PAYLOAD_MAX || fread(rec + 5, 1, len + 8, f) != len + 8) {
      rc = fail(&w, off, "truncated or oversized record");
      break;
    }
    uint64_t sum = 0;
    for (int i = 0; i < 8; i++)
      sum = sum << 8 | rec[5 + len + (size_t)i];
    if (sum != XXH3_64bits(rec, 5 + len)) {
      rc = fail(&w, off, "record checksum mismatch");
      break;
    }
    rc = check_record(&w, rec[0], rec + 5, len, off);
    off += 5 + len + 8;
  }
  fclose(f);
  memcpy(rep->head, w.prev, BLOCK_HASH);
  merkle_compact_root(&w.tree, rep->root);
  return rc;
}
