/* The Merkle hash cache (merkletree.h): leaf hashes persisted append-only
 * after a 16-byte header, and one in-memory array per level holding the
 * root of every complete, aligned perfect subtree, from which any RFC 6962
 * range root needed by a proof is assembled in O(log n) reads. */
#include "chain-anchor/merkletree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"

#define MT_MAGIC "MSDMTREE"
#define MT_VERSION 1
#define MT_HEADER 16
#define MT_LEVELS 64
#define MT_FIRST_CAP 16
#define MT_SIZE_MAX (UINT64_MAX >> 1) /* as merkle_compact: proofs stay < 64 hashes */
/* Leaves held back before one pwrite: one syscall per leaf would cost more
 * than the hashing at 10^6 leaves, and nothing is durable before
 * merkle_tree_sync anyway. */
#define MT_BATCH 256

/* Why only leaves reach the file: every upper level is a pure function of
 * the leaves, so persisting it would double the writes and add a second
 * thing that a torn write could leave inconsistent. Rebuilding costs n - 1
 * node hashes at open (a fraction of a second at 10^6 leaves) and keeps
 * recovery to "cut the torn tail, truncate to the caller's size". */
struct merkle_tree {
  int fd;
  bool poisoned;    /* a write or fsync failed: refuse further changes */
  uint64_t size;    /* leaves in memory */
  uint64_t written; /* leaves [0, written) are in the file, which ends there */
  /* level[l][i] = root of leaves [i * 2^l, (i + 1) * 2^l); level l holds
   * size >> l entries, room for cap[l]. */
  uint8_t (*level[MT_LEVELS])[MERKLE_HASH];
  size_t cap[MT_LEVELS];
};

/* ---- memory ---- */

/* Makes room for `need` entries at level l, keeping the size >> l in use.
 * Not msd_grow: open needs room for n leaves at once, not for one more. */
static int reserve(struct merkle_tree *t, int l, uint64_t need)
{
  if (need <= t->cap[l])
    return 0;
  uint64_t ncap = t->cap[l] ? 2 * (uint64_t)t->cap[l] : MT_FIRST_CAP;
  if (ncap < need)
    ncap = need;
  if (ncap > SIZE_MAX / MERKLE_HASH)
    return -ENOMEM; /* UNTESTED: 32-bit hosts only */
  uint8_t(*q)[MERKLE_HASH] = msd_malloc((size_t)ncap * MERKLE_HASH);
  if (q == NULL)
    return -ENOMEM;
  uint64_t used = t->size >> l;
  if (used > 0)
    memcpy(q, t->level[l], (size_t)used * MERKLE_HASH);
  msd_free(t->level[l]);
  t->level[l] = q;
  t->cap[l] = (size_t)ncap;
  return 0;
}

static void destroy(struct merkle_tree *t)
{
  for (int l = 0; l < MT_LEVELS; l++)
    msd_free(t->level[l]);
  msd_free(t);
}

/* Fills levels 1.. from the n leaves at level 0 (t->size still 0). */
static int build_levels(struct merkle_tree *t, uint64_t n)
{
  for (int l = 1; l < MT_LEVELS && (n >> l) > 0; l++) {
    int rc = reserve(t, l, n >> l);
    if (rc != 0)
      return rc;
    for (uint64_t i = 0; i < (n >> l); i++)
      merkle_node_hash(t->level[l - 1][2 * i], t->level[l - 1][2 * i + 1], t->level[l][i]);
  }
  return 0;
}

/* ---- file ---- */

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
  const uint8_t *p = buf;
  while (len > 0) {
    if (msd_fault_hit())
      return -EIO;
    ssize_t n = pwrite(fd, p, len, off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? -errno : -EIO; /* UNTESTED: pwrite of 0 bytes */
    /* A short write (disk nearly full, a signal) resubmits the rest. */
    p += n, len -= (size_t)n, off += n;
  }
  return 0;
}

/* Writes the leaves appended since the last flush; poisons on failure, since
 * the file may now hold part of them (STYLE.md: no retry). */
static int flush(struct merkle_tree *t)
{
  if (t->written == t->size)
    return 0;
  int rc = write_all(t->fd, t->level[0][t->written], (size_t)(t->size - t->written) * MERKLE_HASH,
                     (off_t)(MT_HEADER + t->written * MERKLE_HASH));
  if (rc != 0) {
    t->poisoned = true;
    return rc;
  }
  t->written = t->size;
  return 0;
}

static void header_make(uint8_t hdr[MT_HEADER])
{
  memset(hdr, 0, MT_HEADER);
  memcpy(hdr, MT_MAGIC, 8);
  hdr[11] = MT_VERSION; /* version, 4 bytes big-endian, then 4 reserved zero bytes */
}

static int header_check(const uint8_t hdr[MT_HEADER])
{
  static const uint8_t zero[4] = {0};
  if (memcmp(hdr, MT_MAGIC, 8) != 0)
    return MSD_ENOTSTORE;
  if (memcmp(hdr + 8, zero, 3) != 0 || hdr[11] != MT_VERSION || memcmp(hdr + 12, zero, 4) != 0)
    return MSD_EVERSION;
  return 0;
}

/* fsync of the directory holding path, so a rename into it is durable. */
static int sync_parent(const char *path, char *scratch)
{
  strcpy(scratch, path);
  char *slash = strrchr(scratch, '/');
  const char *dir = scratch;
  if (slash == NULL)
    dir = ".";
  else if (slash == scratch)
    dir = "/";
  else
    *slash = '\0';
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* Creates the file with its header by atomic publish (write path.tmp, fsync,
 * rename, fsync the directory): a crash leaves no file or a whole header,
 * never a short file that open would refuse as not a cache. Assumes one
 * owner per path, as the lock taken by open does. */
static int create_file(const char *path)
{
  size_t plen = strlen(path);
  char *tmp = msd_malloc(plen + 5);
  if (tmp == NULL)
    return -ENOMEM;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  uint8_t hdr[MT_HEADER];
  header_make(hdr);
  int rc = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = -errno;
    goto out_free;
  }
  rc = write_all(fd, hdr, sizeof hdr, 0);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  close(fd);
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0)
    goto out_unlink;
  rc = sync_parent(path, tmp); /* tmp is as long as path: reuse it */
  goto out_free;

out_unlink:
  unlink(tmp);
out_free:
  msd_free(tmp);
  return rc;
}

/* Reads the n leaf hashes after the header into level 0 (t->size still 0). */
static int load_leaves(struct merkle_tree *t, uint64_t n)
{
  if (n == 0)
    return 0;
  int rc = reserve(t, 0, n);
  if (rc != 0)
    return rc;
  uint8_t *p = (uint8_t *)t->level[0];
  size_t left = (size_t)n * MERKLE_HASH;
  off_t off = MT_HEADER;
  while (left > 0) {
    ssize_t got = pread(t->fd, p, left, off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return got < 0 ? -errno : -EIO; /* UNTESTED: file shrank under us */
    p += got, left -= (size_t)got, off += got;
  }
  return 0;
}

/* Checks the header, cuts a torn tail and returns the number of whole leaf
 * hashes in *n. */
static int check_file(int fd, uint64_t *n)
{
  struct stat st;
  uint8_t hdr[MT_HEADER];
  if (fstat(fd, &st) != 0)
    return -errno;
  if (st.st_size < MT_HEADER)
    return MSD_ENOTSTORE;
  ssize_t got = pread(fd, hdr, sizeof hdr, 0);
  if (got != (ssize_t)sizeof hdr)
    return got < 0 ? -errno : MSD_ENOTSTORE; /* UNTESTED: read error or race */
  int rc = header_check(hdr);
  if (rc != 0)
    return rc;
  uint64_t body = (uint64_t)st.st_size - MT_HEADER;
  *n = body / MERKLE_HASH;
  if (*n > MT_SIZE_MAX)
    return MSD_ENOTSTORE; /* UNTESTED: a file of 2^68 bytes */
  /* A crash in the middle of a batch write can leave part of the last hash.
   * No caller recorded a size covering it (sizes are recorded only after
   * merkle_tree_sync, which returns once whole hashes are durable), so it is
   * garbage: cut it. Not synced here: appends rewrite those bytes at their
   * own offsets, and the next open would cut them again. */
  if (body % MERKLE_HASH != 0 && ftruncate(fd, (off_t)(MT_HEADER + *n * MERKLE_HASH)) != 0)
    return -errno;
  return 0;
}

int merkle_tree_open(const char *path, struct merkle_tree **out)
{
  if (path == NULL || out == NULL || *path == '\0')
    return MSD_EPARAM;
  struct merkle_tree *t = NULL;
  int rc = 0;
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    rc = create_file(path);
    if (rc != 0)
      return rc;
    fd = open(path, O_RDWR | O_CLOEXEC);
  }
  if (fd < 0)
    return -errno;
  /* Two writers appending to one file would interleave leaves: lock it. */
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK ? MSD_ELOCKED : -errno;
    goto err_close;
  }
  uint64_t n = 0;
  rc = check_file(fd, &n);
  if (rc != 0)
    goto err_close;
  t = msd_calloc(1, sizeof *t);
  if (t == NULL) {
    rc = -ENOMEM;
    goto err_close;
  }
  t->fd = fd;
  rc = load_leaves(t, n);
  if (rc == 0)
    rc = build_levels(t, n);
  if (rc != 0)
    goto err_free;
  t->size = t->written = n;
  *out = t;
  return 0;

err_free:
  destroy(t);
err_close:
  close(fd);
  return rc;
}

void merkle_tree_close(struct merkle_tree *t)
{
  if (t == NULL)
    return;
  if (!t->poisoned)
    (void)flush(t); /* best effort, as documented: sync reports errors */
  close(t->fd);     /* also drops the lock */
  destroy(t);
}

/* ---- changes ---- */

int merkle_tree_append(struct merkle_tree *t, const uint8_t leaf_hash[MERKLE_HASH])
{
  if (t == NULL || leaf_hash == NULL)
    return MSD_EPARAM;
  if (t->poisoned)
    return MSD_EPOISONED;
  if (t->size >= MT_SIZE_MAX)
    return MSD_EPARAM; /* UNTESTED: 2^63 leaves */
  /* Write a full batch before touching memory, so that a failed write leaves
   * the tree as it was (and poisoned). */
  int rc = t->size - t->written >= MT_BATCH ? flush(t) : 0;
  /* Leaf idx completes one subtree per trailing one bit of idx: it and its
   * left sibling at each of those levels merge into the level above. Make
   * room at every level first, so an allocation failure changes nothing. */
  uint64_t idx = t->size;
  int top = __builtin_ctzll(~idx);
  for (int l = 0; rc == 0 && l <= top; l++)
    rc = reserve(t, l, (idx >> l) + 1);
  if (rc != 0)
    return rc;
  memcpy(t->level[0][idx], leaf_hash, MERKLE_HASH);
  for (int l = 0; l < top; l++) {
    uint64_t i = idx >> l; /* odd: the right child */
    merkle_node_hash(t->level[l][i - 1], t->level[l][i], t->level[l + 1][i >> 1]);
  }
  t->size = idx + 1;
  return 0;
}

uint64_t merkle_tree_size(const struct merkle_tree *t)
{
  return t == NULL ? 0 : t->size;
}

int merkle_tree_truncate(struct merkle_tree *t, uint64_t size)
{
  if (t == NULL)
    return MSD_EPARAM;
  if (t->poisoned)
    return MSD_EPOISONED;
  if (size > t->size)
    return MSD_ERANGE;
  /* Level l keeps size >> l entries: exactly the complete subtrees of the
   * first `size` leaves, so memory needs nothing but the new size. */
  uint64_t old = t->size;
  t->size = size;
  if (t->written <= size)
    return 0; /* the file ends at `written`: nothing of it to cut */
  /* fsync, not only fdatasync: a rollback that a crash undid would bring
   * back leaves the caller has disowned; this is rare enough to pay for. */
  int rc = 0;
  if (msd_fault_hit())
    rc = -EIO;
  else if (ftruncate(t->fd, (off_t)(MT_HEADER + size * MERKLE_HASH)) != 0 || fsync(t->fd) != 0)
    rc = -errno;
  if (rc != 0) {
    t->poisoned = true;
    t->size = old; /* the file may or may not be cut: keep what was */
    return rc;
  }
  t->written = size;
  return 0;
}

int merkle_tree_sync(struct merkle_tree *t)
{
  if (t == NULL)
    return MSD_EPARAM;
  if (t->poisoned)
    return MSD_EPOISONED;
  int rc = flush(t);
  if (rc != 0)
    return rc;
  /* fdatasync covers the growing file length too (it is needed to read the
   * data back), so appended leaves are durable on return. */
  rc = msd_fault_hit() ? -EIO : fdatasync(t->fd) == 0 ? 0 : -errno;
  if (rc != 0)
    t->poisoned = true;
  return rc;
}

/* ---- roots and proofs ---- */

/* The largest power of two strictly below n (n >= 2): RFC 6962's split. */
static uint64_t split(uint64_t n)
{
  return (uint64_t)1 << (63 - __builtin_clzll(n - 1));
}

/* MTH(D[begin:end)), begin < end <= size. An aligned power-of-two range is a
 * cached subtree: one read. Otherwise split as RFC 6962 does; the ranges
 * proofs ask for start at a multiple of the power of two at or above their
 * length, so every left half is cached and only the right edge recurses:
 * at most one read per set bit of end - begin. */
static void range_root(const struct merkle_tree *t, uint64_t begin, uint64_t end,
                       uint8_t out[MERKLE_HASH])
{
  uint64_t n = end - begin;
  if ((n & (n - 1)) == 0 && (begin & (n - 1)) == 0) {
    int l = __builtin_ctzll(n);
    memcpy(out, t->level[l][begin >> l], MERKLE_HASH);
    return;
  }
  uint64_t k = split(n);
  uint8_t left[MERKLE_HASH], right[MERKLE_HASH];
  range_root(t, begin, begin + k, left);
  range_root(t, begin + k, end, right);
  merkle_node_hash(left, right, out);
}

/* The tree as a merkle_source, so merkle.c's RFC 6962 proof generators
 * run over its cached subtrees: O(log n) hashes a proof. */
static int source_get(void *ctx, uint64_t index, uint8_t out[MERKLE_HASH])
{
  const struct merkle_tree *t = ctx;
  memcpy(out, t->level[0][index], MERKLE_HASH);
  return 0;
}

static int source_range(void *ctx, uint64_t begin, uint64_t end, uint8_t out[MERKLE_HASH])
{
  range_root(ctx, begin, end, out);
  return 0;
}

static struct merkle_source as_source(const struct merkle_tree *t)
{
  return (struct merkle_source){.get = source_get, .ctx = (void *)t, .range = source_range};
}

int merkle_tree_root(const struct merkle_tree *t, uint64_t size, uint8_t out[MERKLE_HASH])
{
  if (t == NULL || out == NULL)
    return MSD_EPARAM;
  if (size > t->size)
    return MSD_ERANGE;
  if (size == 0) {
    struct merkle_compact empty; /* its root is SHA-256(""), as RFC 6962 says */
    merkle_compact_init(&empty);
    merkle_compact_root(&empty, out);
    return 0;
  }
  range_root(t, 0, size, out);
  return 0;
}

int merkle_tree_inclusion(const struct merkle_tree *t, uint64_t index, uint64_t size,
                          uint8_t proof[][MERKLE_HASH], int *len)
{
  if (len != NULL)
    *len = 0;
  if (t == NULL || proof == NULL || len == NULL)
    return MSD_EPARAM;
  if (index >= size || size > t->size)
    return MSD_ERANGE;
  struct merkle_source src = as_source(t);
  return merkle_inclusion_proof(&src, index, size, proof, len);
}

int merkle_tree_consistency(const struct merkle_tree *t, uint64_t size1, uint64_t size2,
                            uint8_t proof[][MERKLE_HASH], int *len)
{
  if (len != NULL)
    *len = 0;
  if (t == NULL || proof == NULL || len == NULL)
    return MSD_EPARAM;
  if (size1 == 0 || size1 > size2 || size2 > t->size)
    return MSD_ERANGE;
  struct merkle_source src = as_source(t);
  return merkle_consistency_proof(&src, size1, size2, proof, len);
}
