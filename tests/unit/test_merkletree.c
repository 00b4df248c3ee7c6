/* Tests of the Merkle hash cache (chain-anchor/merkletree.h), run by
 * test_chain: its roots and proofs against the O(n) leaf-source functions of
 * merkle.h on seeded random trees, its file across reopen, rollback, a torn
 * tail and bad headers, its fault paths, and a tree of a million leaves. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain-anchor/merkle.h"
#include "chain-anchor/merkletree.h"
#include "common/alloc.h"
#include "common/err.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define MT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MT_ASAN 1
#endif
#endif

typedef uint8_t hash_t[MERKLE_HASH];

/* ---- fixture and references ---- */

struct fixture {
  char dir[4096];
  char path[4200];
};

static void fixture_init(struct fixture *f)
{
  snprintf(f->dir, sizeof f->dir, "%s", test_tmpdir());
  snprintf(f->path, sizeof f->path, "%s/tree", f->dir);
}

static void fixture_done(struct fixture *f)
{
  test_tmpdir_remove(f->dir);
}

static int array_get(void *ctx, uint64_t i, uint8_t out[MERKLE_HASH])
{
  memcpy(out, ((const hash_t *)ctx)[i], MERKLE_HASH);
  return 0;
}

/* n random leaf hashes; the caller frees them with msd_free. */
static hash_t *random_leaves(struct test_rng *r, size_t n)
{
  hash_t *l = msd_malloc(n * sizeof *l);
  if (l != NULL)
    test_rng_fill(r, (unsigned char *)l, n * sizeof *l);
  return l;
}

/* Appends leaves[from, to) to t, recording the compact-range root of every
 * size reached in roots[size] (roots has room for to + 1). */
static void append_range(struct merkle_tree *t, const hash_t *leaves, size_t from, size_t to,
                         hash_t *roots)
{
  struct merkle_compact c;
  merkle_compact_init(&c);
  for (size_t i = 0; i < from; i++)
    merkle_compact_append(&c, leaves[i]);
  merkle_compact_root(&c, roots[from]);
  for (size_t i = from; i < to; i++) {
    CU_ASSERT_EQUAL(merkle_tree_append(t, leaves[i]), 0);
    merkle_compact_append(&c, leaves[i]);
    merkle_compact_root(&c, roots[i + 1]);
  }
}

/* The number of sizes s in [0, n] whose cached root differs from roots[s]. */
static size_t roots_differing(const struct merkle_tree *t, const hash_t *roots, size_t n)
{
  size_t bad = 0;
  for (size_t s = 0; s <= n; s++) {
    hash_t got;
    bad += merkle_tree_root(t, s, got) != 0 || memcmp(got, roots[s], MERKLE_HASH) != 0;
  }
  return bad;
}

/* 0 if the cache's inclusion proof equals the reference's and verifies. */
static int check_inclusion(const struct merkle_tree *t, const hash_t *leaves, uint64_t index,
                           uint64_t size, const uint8_t root[MERKLE_HASH])
{
  struct merkle_source src = {.get = array_get, .ctx = (void *)leaves};
  hash_t got[MERKLE_PROOF_MAX], want[MERKLE_PROOF_MAX];
  int ng = -1, nw = -2;
  if (merkle_tree_inclusion(t, index, size, got, &ng) != 0 ||
      merkle_inclusion_proof(&src, index, size, want, &nw) != 0 || ng != nw)
    return 1;
  if (memcmp(got, want, (size_t)ng * MERKLE_HASH) != 0)
    return 2;
  return merkle_verify_inclusion(index, size, leaves[index], got, ng, root) ? 0 : 3;
}

/* 0 if the cache's consistency proof equals the reference's and verifies. */
static int check_consistency(const struct merkle_tree *t, const hash_t *leaves, uint64_t s1,
                             uint64_t s2, const uint8_t r1[MERKLE_HASH],
                             const uint8_t r2[MERKLE_HASH])
{
  struct merkle_source src = {.get = array_get, .ctx = (void *)leaves};
  hash_t got[MERKLE_PROOF_MAX], want[MERKLE_PROOF_MAX];
  int ng = -1, nw = -2;
  if (merkle_tree_consistency(t, s1, s2, got, &ng) != 0 ||
      merkle_consistency_proof(&src, s1, s2, want, &nw) != 0 || ng != nw)
    return 1;
  if (memcmp(got, want, (size_t)ng * MERKLE_HASH) != 0)
    return 2;
  return merkle_verify_consistency(s1, s2, r1, r2, got, ng) ? 0 : 3;
}

static off_t file_length(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- against the reference ---- */

/* Every size, index and size pair of a 70-leaf tree: all the shapes the
 * RFC's recursion takes for small trees. */
static void test_small_tree_exhaustive(void)
{
  enum { N = 70 };
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(91);
  hash_t *leaves = random_leaves(&r, N), roots[N + 1];
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  append_range(t, leaves, 0, N, roots);
  CU_ASSERT_EQUAL(roots_differing(t, roots, N), 0);
  int bad = 0;
  for (uint64_t s = 1; s <= N; s++)
    for (uint64_t i = 0; i < s; i++)
      bad += check_inclusion(t, leaves, i, s, roots[s]) != 0;
  CU_ASSERT_EQUAL(bad, 0);
  for (uint64_t s2 = 1; s2 <= N; s2++)
    for (uint64_t s1 = 1; s1 <= s2; s1++)
      bad += check_consistency(t, leaves, s1, s2, roots[s1], roots[s2]) != 0;
  CU_ASSERT_EQUAL(bad, 0);
  merkle_tree_close(t);
  msd_free(leaves);
  fixture_done(&f);
}

/* Seeded random trees of a few thousand leaves: every root, and random
 * proofs (with the edges: last leaf, sizes equal, powers of two). */
static void test_random_trees_against_reference(void)
{
  struct test_rng r = test_rng_for(92);
  for (int tree = 0; tree < 4; tree++) {
    struct fixture f;
    fixture_init(&f);
    size_t n = 1000 + (size_t)test_rng_below(&r, 3000);
    hash_t *leaves = random_leaves(&r, n), *roots = msd_malloc((n + 1) * sizeof(hash_t));
    struct merkle_tree *t;
    CU_ASSERT_FATAL(leaves != NULL && roots != NULL);
    CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
    append_range(t, leaves, 0, n, roots);
    CU_ASSERT_EQUAL(merkle_tree_size(t), n);
    CU_ASSERT_EQUAL(roots_differing(t, roots, n), 0);
    int bad = 0;
    for (int k = 0; k < 100; k++) {
      /* 1024: a power of two, when the tree has that many (n may be less). */
      uint64_t s = k == 0 ? n : k == 1 && n >= 1024 ? 1024 : 1 + test_rng_below(&r, n);
      uint64_t i = k % 3 == 0 ? s - 1 : test_rng_below(&r, s);
      bad += check_inclusion(t, leaves, i, s, roots[s]) != 0;
      uint64_t s1 = k % 5 == 0 ? s : k % 7 == 0 ? 512 : 1 + test_rng_below(&r, s);
      if (s1 > s)
        s1 = s;
      bad += check_consistency(t, leaves, s1, s, roots[s1], roots[s]) != 0;
    }
    if (bad != 0)
      printf("\n  tree of %zu leaves: %d proofs differ\n", n, bad);
    CU_ASSERT_EQUAL(bad, 0);
    merkle_tree_close(t);
    msd_free(roots);
    msd_free(leaves);
    fixture_done(&f);
  }
}

/* ---- the file ---- */

/* Reopening gives the same leaves, so the same roots and proofs, both after
 * merkle_tree_sync and after a plain close (which flushes). */
static void test_reopen_identical(void)
{
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(93);
  size_t n = 1500 + (size_t)test_rng_below(&r, 500);
  hash_t *leaves = random_leaves(&r, n), *roots = msd_malloc((n + 1) * sizeof(hash_t));
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL && roots != NULL);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(file_length(f.path), 16); /* the header, published whole */
  append_range(t, leaves, 0, n / 2, roots);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  CU_ASSERT_EQUAL(file_length(f.path), (off_t)(16 + 32 * (n / 2)));
  merkle_tree_close(t);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), n / 2);
  append_range(t, leaves, n / 2, n, roots);
  merkle_tree_close(t); /* no sync: close writes the pending leaves */
  CU_ASSERT_EQUAL(file_length(f.path), (off_t)(16 + 32 * n));
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), n);
  CU_ASSERT_EQUAL(roots_differing(t, roots, n), 0);
  CU_ASSERT_EQUAL(check_inclusion(t, leaves, 0, n, roots[n]), 0);
  CU_ASSERT_EQUAL(check_consistency(t, leaves, n / 3, n, roots[n / 3], roots[n]), 0);
  merkle_tree_close(t);
  uint8_t hdr[16];
  int fd = open(f.path, O_RDONLY);
  CU_ASSERT_EQUAL(pread(fd, hdr, sizeof hdr, 0), 16);
  close(fd);
  CU_ASSERT(memcmp(hdr, "MSDMTREE\0\0\0\1\0\0\0\0", 16) == 0);
  msd_free(roots);
  msd_free(leaves);
  fixture_done(&f);
}

/* Rollback: truncation cuts memory and file; new leaves after it give the
 * roots of the new sequence; extra leaves past a recorded size (a crash
 * after append, before the caller recorded) are cut on recovery. */
static void test_truncate_then_reappend(void)
{
  enum { N = 1000, CUT = 700, MORE = 333 };
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(94);
  hash_t *leaves = random_leaves(&r, CUT + MORE), *old = random_leaves(&r, N);
  hash_t *roots = msd_malloc((N + MORE + 1) * sizeof(hash_t));
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL && old != NULL && roots != NULL);
  memcpy(old, leaves, CUT * sizeof(hash_t)); /* old and new agree up to CUT */
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  append_range(t, old, 0, N, roots);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, N + 1), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, CUT), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), CUT);
  CU_ASSERT_EQUAL(file_length(f.path), 16 + 32 * CUT);
  hash_t h;
  CU_ASSERT_EQUAL(merkle_tree_root(t, CUT + 1, h), MSD_ERANGE);
  CU_ASSERT_EQUAL(roots_differing(t, roots, CUT), 0);
  append_range(t, leaves, CUT, CUT + MORE, roots);
  CU_ASSERT_EQUAL(roots_differing(t, roots, CUT + MORE), 0);
  CU_ASSERT_EQUAL(check_inclusion(t, leaves, CUT + 5, CUT + MORE, roots[CUT + MORE]), 0);
  CU_ASSERT_EQUAL(check_consistency(t, leaves, N - 1, CUT + MORE, roots[N - 1],
                                    roots[CUT + MORE]), 0);
  /* Truncating inside leaves not yet written leaves the file alone. */
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  CU_ASSERT_EQUAL(merkle_tree_append(t, old[0]), 0);
  CU_ASSERT_EQUAL(merkle_tree_append(t, old[1]), 0);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, CUT + MORE + 1), 0);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  CU_ASSERT_EQUAL(file_length(f.path), 16 + 32 * (CUT + MORE + 1));
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, CUT + MORE), 0);
  merkle_tree_close(t);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), CUT + MORE);
  CU_ASSERT_EQUAL(roots_differing(t, roots, CUT + MORE), 0);
  /* The caller recorded CUT + MORE; the file has more after a "crash". */
  for (int i = 0; i < 50; i++)
    merkle_tree_append(t, old[i]);
  merkle_tree_close(t);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), CUT + MORE + 50);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, CUT + MORE), 0);
  CU_ASSERT_EQUAL(roots_differing(t, roots, CUT + MORE), 0);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, 0), 0);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 0), 0); /* SHA-256("") */
  CU_ASSERT_EQUAL(merkle_tree_append(t, leaves[0]), 0);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 1), 0);
  merkle_tree_close(t);
  msd_free(roots);
  msd_free(old);
  msd_free(leaves);
  fixture_done(&f);
}

/* A crash mid-write leaves part of a hash at the end: open cuts it. */
static void test_torn_tail(void)
{
  enum { N = 77 };
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(95);
  hash_t *leaves = random_leaves(&r, N + 1), roots[N + 2];
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  append_range(t, leaves, 0, N, roots);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  merkle_tree_close(t);
  int fd = open(f.path, O_WRONLY | O_APPEND);
  CU_ASSERT_EQUAL(write(fd, leaves[N], 13), 13); /* 13 bytes of the next hash */
  close(fd);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), N);
  CU_ASSERT_EQUAL(file_length(f.path), 16 + 32 * N);
  CU_ASSERT_EQUAL(roots_differing(t, roots, N), 0);
  append_range(t, leaves, N, N + 1, roots);
  merkle_tree_close(t);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), N + 1);
  CU_ASSERT_EQUAL(roots_differing(t, roots, N + 1), 0);
  merkle_tree_close(t);
  msd_free(leaves);
  fixture_done(&f);
}

static int open_bytes(const char *path, const void *bytes, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ssize_t n = write(fd, bytes, len);
  close(fd);
  if (n != (ssize_t)len)
    return 1;
  struct merkle_tree *t = NULL;
  int rc = merkle_tree_open(path, &t);
  merkle_tree_close(t);
  return rc;
}

/* Files that are not version 1 caches are refused, and left as they were. */
static void test_bad_header(void)
{
  struct fixture f;
  fixture_init(&f);
  uint8_t good[16 + 32] = "MSDMTREE\0\0\0\1\0\0\0\0";
  uint8_t b[sizeof good];
  CU_ASSERT_EQUAL(open_bytes(f.path, good, sizeof good), 0);
  memcpy(b, good, sizeof b);
  memcpy(b, "MSDCHAIN", 8); /* a chain file is not a cache */
  CU_ASSERT_EQUAL(open_bytes(f.path, b, sizeof b), MSD_ENOTSTORE);
  CU_ASSERT_EQUAL(file_length(f.path), (off_t)sizeof b);
  memcpy(b, good, sizeof b);
  b[11] = 2;
  CU_ASSERT_EQUAL(open_bytes(f.path, b, sizeof b), MSD_EVERSION);
  b[11] = 1, b[15] = 1; /* reserved bytes a later version may use */
  CU_ASSERT_EQUAL(open_bytes(f.path, b, sizeof b), MSD_EVERSION);
  CU_ASSERT_EQUAL(open_bytes(f.path, good, 9), MSD_ENOTSTORE);
  CU_ASSERT_EQUAL(open_bytes(f.path, good, 0), MSD_ENOTSTORE);
  struct merkle_tree *t = NULL;
  CU_ASSERT_EQUAL(merkle_tree_open(f.dir, &t), -EISDIR);
  char missing[4300];
  snprintf(missing, sizeof missing, "%s/no/such/dir", f.dir);
  CU_ASSERT_EQUAL(merkle_tree_open(missing, &t), -ENOENT);
  CU_ASSERT_EQUAL(merkle_tree_open(NULL, &t), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_open("", &t), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_open(f.path, NULL), MSD_EPARAM);
  CU_ASSERT_PTR_NULL(t);
  /* One writer per file. */
  snprintf(f.path, sizeof f.path, "%s/locked", f.dir);
  struct merkle_tree *u = NULL;
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_open(f.path, &u), MSD_ELOCKED);
  merkle_tree_close(t);
  CU_ASSERT_EQUAL(merkle_tree_open(f.path, &u), 0);
  merkle_tree_close(u);
  fixture_done(&f);
}

/* Out-of-range sizes and indices, and NULLs, are refused with no output. */
static void test_bad_arguments(void)
{
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(96);
  hash_t *leaves = random_leaves(&r, 10), roots[11], p[MERKLE_PROOF_MAX];
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  append_range(t, leaves, 0, 10, roots);
  int n = 99;
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, 10, 10, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, 3, 11, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, 0, 0, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(NULL, 0, 1, p, &n), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, 0, 1, NULL, &n), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, 0, 1, p, NULL), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_consistency(t, 0, 5, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_consistency(t, 6, 5, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_consistency(t, 5, 11, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_consistency(NULL, 1, 2, p, &n), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_consistency(t, 10, 10, p, &n), 0);
  CU_ASSERT_EQUAL(n, 0); /* equal sizes: the empty proof */
  CU_ASSERT_EQUAL(merkle_tree_root(t, 11, p[0]), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_tree_root(NULL, 0, p[0]), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_root(t, 0, NULL), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_append(t, NULL), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_append(NULL, leaves[0]), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_truncate(NULL, 0), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_sync(NULL), MSD_EPARAM);
  CU_ASSERT_EQUAL(merkle_tree_size(NULL), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), 10);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 10), 0);
  merkle_tree_close(t);
  merkle_tree_close(NULL);
  msd_free(leaves);
  fixture_done(&f);
}

/* A failed allocation changes nothing; a failed write or fdatasync poisons
 * the handle (no retry) but leaves the tree readable. */
static void test_faults(void)
{
  enum { N = 300 };
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(97);
  hash_t *leaves = random_leaves(&r, N), roots[N + 1], h;
  struct merkle_tree *t;
  CU_ASSERT_FATAL(leaves != NULL);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  append_range(t, leaves, 0, N, roots); /* the expected roots */
  merkle_tree_close(t);
  /* A fresh tree, so that appends allocate each level's arrays. */
  snprintf(f.path, sizeof f.path, "%s/faults", f.dir);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  int nomem = 0, other = 0;
  for (size_t i = 0; i < 250; i++) { /* below the first batch write */
    msd_fault_arm(1);
    int rc = merkle_tree_append(t, leaves[i]);
    msd_fault_arm(0);
    if (rc == -ENOMEM) {
      nomem++;
      other += merkle_tree_size(t) != i || roots_differing(t, roots, i) != 0;
      rc = merkle_tree_append(t, leaves[i]);
    }
    other += rc != 0;
  }
  CU_ASSERT(nomem >= 8); /* the first entry of each level, then doublings */
  CU_ASSERT_EQUAL(other, 0);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 250), 0);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  msd_fault_arm(1); /* nothing pending: the fault hits fdatasync */
  CU_ASSERT_EQUAL(merkle_tree_sync(t), -EIO);
  msd_fault_arm(0);
  CU_ASSERT_EQUAL(merkle_tree_append(t, leaves[250]), MSD_EPOISONED);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), MSD_EPOISONED);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, 1), MSD_EPOISONED);
  CU_ASSERT_EQUAL(merkle_tree_root(t, 250, h), 0);
  CU_ASSERT(memcmp(h, roots[250], MERKLE_HASH) == 0);
  merkle_tree_close(t);
  /* The leaves synced before the failure survive it. A failed batch write
   * refuses the leaf that would have followed it. */
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), 250);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 250), 0);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, 0), 0);
  for (size_t i = 0; i < 256; i++)
    merkle_tree_append(t, leaves[i]);
  msd_fault_arm(1); /* 256 pending: this append writes them first */
  CU_ASSERT_EQUAL(merkle_tree_append(t, leaves[256]), -EIO);
  msd_fault_arm(0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), 256);
  CU_ASSERT_EQUAL(merkle_tree_append(t, leaves[256]), MSD_EPOISONED);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 256), 0);
  merkle_tree_close(t);
  /* A failed rollback keeps the leaves it could not be sure it cut. */
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), 0); /* the failed batch never reached the file */
  for (size_t i = 0; i < 10; i++)
    merkle_tree_append(t, leaves[i]);
  CU_ASSERT_EQUAL(merkle_tree_sync(t), 0);
  msd_fault_arm(1);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, 5), -EIO);
  msd_fault_arm(0);
  CU_ASSERT_EQUAL(merkle_tree_size(t), 10);
  CU_ASSERT_EQUAL(merkle_tree_truncate(t, 5), MSD_EPOISONED);
  CU_ASSERT_EQUAL(roots_differing(t, roots, 10), 0);
  merkle_tree_close(t);
  msd_free(leaves);
  fixture_done(&f);
}

/* ---- scale ---- */

#ifdef MT_ASAN
#define BIG_N 300007u /* ASan slows the appends and merkle.c ~3x */
#else
#define BIG_N 1000000u
#endif

/* Leaf i of the big tree, made on demand: 32 MB of leaves need no array. */
static void big_leaf(uint64_t seed, uint64_t i, uint8_t out[MERKLE_HASH])
{
  struct test_rng r = {seed ^ (i * 0xd1342543de82ef95ull)};
  test_rng_fill(&r, out, MERKLE_HASH);
}

static int big_get(void *ctx, uint64_t i, uint8_t out[MERKLE_HASH])
{
  big_leaf(*(const uint64_t *)ctx, i, out);
  return 0;
}

/* A million leaves: 1,000 random inclusion proofs and 100 consistency
 * proofs verify against the compact-range head, and one of each equals the
 * O(n) reference. */
static void test_million_leaves(void)
{
  struct fixture f;
  fixture_init(&f);
  struct test_rng r = test_rng_for(98);
  uint64_t seed = test_rng_next(&r);
  struct merkle_tree *t;
  struct merkle_compact c;
  hash_t leaf, root, root1, p[MERKLE_PROOF_MAX], q[MERKLE_PROOF_MAX];
  merkle_compact_init(&c);
  CU_ASSERT_EQUAL_FATAL(merkle_tree_open(f.path, &t), 0);
  int bad = 0;
  for (uint64_t i = 0; i < BIG_N; i++) {
    big_leaf(seed, i, leaf);
    bad += merkle_tree_append(t, leaf) != 0;
    merkle_compact_append(&c, leaf);
  }
  CU_ASSERT_EQUAL(bad, 0);
  merkle_compact_root(&c, root);
  CU_ASSERT_EQUAL(merkle_tree_root(t, BIG_N, root1), 0);
  CU_ASSERT(memcmp(root, root1, MERKLE_HASH) == 0);
  int n, m;
  for (int k = 0; k < 1000; k++) {
    uint64_t i = k == 0 ? BIG_N - 1 : test_rng_below(&r, BIG_N);
    big_leaf(seed, i, leaf);
    bad += merkle_tree_inclusion(t, i, BIG_N, p, &n) != 0 ||
           !merkle_verify_inclusion(i, BIG_N, leaf, p, n, root);
  }
  CU_ASSERT_EQUAL(bad, 0);
  for (int k = 0; k < 100; k++) {
    uint64_t s1 = 1 + test_rng_below(&r, BIG_N);
    bad += merkle_tree_root(t, s1, root1) != 0 ||
           merkle_tree_consistency(t, s1, BIG_N, p, &n) != 0 ||
           !merkle_verify_consistency(s1, BIG_N, root1, root, p, n);
  }
  CU_ASSERT_EQUAL(bad, 0);
  struct merkle_source src = {.get = big_get, .ctx = &seed};
  uint64_t i = test_rng_below(&r, BIG_N), s1 = 1 + test_rng_below(&r, BIG_N);
  CU_ASSERT_EQUAL(merkle_tree_inclusion(t, i, BIG_N, p, &n), 0);
  CU_ASSERT_EQUAL(merkle_inclusion_proof(&src, i, BIG_N, q, &m), 0);
  CU_ASSERT(n == m && memcmp(p, q, (size_t)n * MERKLE_HASH) == 0);
  CU_ASSERT_EQUAL(merkle_tree_consistency(t, s1, BIG_N, p, &n), 0);
  CU_ASSERT_EQUAL(merkle_consistency_proof(&src, s1, BIG_N, q, &m), 0);
  CU_ASSERT(n == m && memcmp(p, q, (size_t)n * MERKLE_HASH) == 0);
  merkle_tree_close(t);
  fixture_done(&f);
}

const struct test_case merkletree_tests[] = {
    {"small tree: every root and proof equals merkle.h's", test_small_tree_exhaustive},
    {"random trees against the leaf-source reference", test_random_trees_against_reference},
    {"reopen gives identical roots", test_reopen_identical},
    {"truncate, re-append, recover past a recorded size", test_truncate_then_reappend},
    {"a torn tail is cut on open", test_torn_tail},
    {"bad headers and a second writer are refused", test_bad_header},
    {"bad arguments", test_bad_arguments},
    {"failed allocation, write and fdatasync", test_faults},
    {"a million leaves: proofs verify", test_million_leaves},
    {NULL, NULL}};
