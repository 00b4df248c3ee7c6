/* RFC 6962 / 9162 Merkle tree hashing, compact ranges and proofs (merkle.h).
 * Generation follows the RFC's recursive definitions (PATH, SUBPROOF) over a
 * leaf source; verification is the RFC 9162 iterative algorithm, which needs
 * only the proof. */
#include "chain-anchor/merkle.h"

#include <string.h>

#include "chain-anchor/hash.h"
#include "common/err.h"

void merkle_leaf_hash(const void *data, size_t len, uint8_t out[MERKLE_HASH])
{
  static const uint8_t prefix = 0x00;
  hash_sha256(&prefix, 1, data, len, out);
}

void merkle_node_hash(const uint8_t left[MERKLE_HASH], const uint8_t right[MERKLE_HASH],
                      uint8_t out[MERKLE_HASH])
{
  uint8_t buf[1 + 2 * MERKLE_HASH];
  buf[0] = 0x01;
  memcpy(buf + 1, left, MERKLE_HASH);
  memcpy(buf + 1 + MERKLE_HASH, right, MERKLE_HASH);
  hash_sha256(buf, sizeof buf, NULL, 0, out); /* out may alias left or right: buf holds copies */
}

static void empty_root(uint8_t out[MERKLE_HASH])
{
  hash_sha256("", 0, NULL, 0, out);
}

void merkle_compact_init(struct merkle_compact *c)
{
  memset(c, 0, sizeof *c);
}

int merkle_compact_append(struct merkle_compact *c, const uint8_t leaf_hash[MERKLE_HASH])
{
  if (c->count >= MERKLE_PROOF_MAX || c->size >= (UINT64_MAX >> 1))
    return MSD_EPARAM;
  memcpy(c->hash[c->count++], leaf_hash, MERKLE_HASH);
  /* Each trailing one bit of the old size is a perfect subtree of the same
   * size as the one just completed: merge them pairwise. */
  for (uint64_t s = c->size; s & 1; s >>= 1) {
    merkle_node_hash(c->hash[c->count - 2], c->hash[c->count - 1], c->hash[c->count - 2]);
    c->count--;
  }
  c->size++;
  return 0;
}

void merkle_compact_root(const struct merkle_compact *c, uint8_t out[MERKLE_HASH])
{
  if (c->count == 0) {
    empty_root(out);
    return;
  }
  uint8_t r[MERKLE_HASH];
  memcpy(r, c->hash[c->count - 1], MERKLE_HASH);
  for (int i = c->count - 2; i >= 0; i--)
    merkle_node_hash(c->hash[i], r, r);
  memcpy(out, r, MERKLE_HASH);
}

/* The largest power of two strictly below n (n >= 2): RFC 6962's split. */
static uint64_t split(uint64_t n)
{
  return (uint64_t)1 << (63 - __builtin_clzll(n - 1));
}

int merkle_range_root(const struct merkle_source *src, uint64_t begin, uint64_t end,
                      uint8_t out[MERKLE_HASH])
{
  if (begin > end)
    return MSD_ERANGE;
  if (end == begin) {
    empty_root(out);
    return 0;
  }
  if (src->range != NULL)
    return src->range(src->ctx, begin, end, out);
  if (end - begin == 1)
    return src->get(src->ctx, begin, out);
  uint64_t k = split(end - begin);
  uint8_t left[MERKLE_HASH], right[MERKLE_HASH];
  int rc = merkle_range_root(src, begin, begin + k, left);
  if (rc == 0)
    rc = merkle_range_root(src, begin + k, end, right);
  if (rc == 0)
    merkle_node_hash(left, right, out);
  return rc;
}

static int push(const struct merkle_source *src, uint64_t begin, uint64_t end,
                uint8_t proof[][MERKLE_HASH], int *len)
{
  if (*len >= MERKLE_PROOF_MAX)
    return MSD_EPARAM; /* UNTESTED: needs a tree of 2^64 leaves */
  return merkle_range_root(src, begin, end, proof[(*len)++]);
}

/* PATH(m, D[begin:end)): deeper levels first, so the proof runs leaf to root. */
static int path(const struct merkle_source *src, uint64_t m, uint64_t begin, uint64_t end,
                uint8_t proof[][MERKLE_HASH], int *len)
{
  uint64_t n = end - begin;
  if (n == 1)
    return 0;
  uint64_t k = split(n);
  int rc = m < k ? path(src, m, begin, begin + k, proof, len)
                 : path(src, m - k, begin + k, end, proof, len);
  if (rc == 0)
    rc = m < k ? push(src, begin + k, end, proof, len) : push(src, begin, begin + k, proof, len);
  return rc;
}

int merkle_inclusion_proof(const struct merkle_source *src, uint64_t index, uint64_t size,
                           uint8_t proof[][MERKLE_HASH], int *len)
{
  *len = 0;
  if (index >= size)
    return MSD_ERANGE;
  return path(src, index, 0, size, proof, len);
}

/* SUBPROOF(m, D[begin:end), whole): `whole` says D[0:m) is the old tree
 * itself, whose root the verifier already has. */
static int subproof(const struct merkle_source *src, uint64_t m, uint64_t begin, uint64_t end,
                    bool whole, uint8_t proof[][MERKLE_HASH], int *len)
{
  uint64_t n = end - begin;
  if (m == n)
    return whole ? 0 : push(src, begin, end, proof, len);
  uint64_t k = split(n);
  int rc = m <= k ? subproof(src, m, begin, begin + k, whole, proof, len)
                  : subproof(src, m - k, begin + k, end, false, proof, len);
  if (rc == 0)
    rc = m <= k ? push(src, begin + k, end, proof, len) : push(src, begin, begin + k, proof, len);
  return rc;
}

int merkle_consistency_proof(const struct merkle_source *src, uint64_t size1, uint64_t size2,
                             uint8_t proof[][MERKLE_HASH], int *len)
{
  *len = 0;
  if (size1 == 0 || size1 > size2)
    return MSD_ERANGE;
  return subproof(src, size1, 0, size2, true, proof, len);
}

bool merkle_verify_inclusion(uint64_t index, uint64_t size, const uint8_t leaf_hash[MERKLE_HASH],
                             const uint8_t proof[][MERKLE_HASH], int len,
                             const uint8_t root[MERKLE_HASH])
{
  if (index >= size || len < 0 || len > MERKLE_PROOF_MAX)
    return false;
  uint64_t fn = index, sn = size - 1;
  uint8_t r[MERKLE_HASH];
  memcpy(r, leaf_hash, MERKLE_HASH);
  for (int i = 0; i < len; i++) {
    if (sn == 0)
      return false; /* more proof than tree */
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(proof[i], r, r);
      /* A right edge node: climb past the levels where it has no sibling. */
      while (!(fn & 1) && fn != 0)
        fn >>= 1, sn >>= 1;
    } else {
      merkle_node_hash(r, proof[i], r);
    }
    fn >>= 1, sn >>= 1;
  }
  return sn == 0 && memcmp(r, root, MERKLE_HASH) == 0;
}

bool merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[MERKLE_HASH],
                               const uint8_t root2[MERKLE_HASH],
                               const uint8_t proof[][MERKLE_HASH], int len)
{
  if (size1 > size2 || len < 0 || len > MERKLE_PROOF_MAX)
    return false;
  if (size1 == size2)
    return len == 0 && memcmp(root1, root2, MERKLE_HASH) == 0;
  if (size1 == 0)
    return len == 0; /* every tree extends the empty one */
  if (len == 0)
    return false;
  /* When the old tree is a perfect subtree its root starts the path. */
  const uint8_t *first = proof[0];
  int i = 1;
  if ((size1 & (size1 - 1)) == 0)
    first = root1, i = 0;
  uint64_t fn = size1 - 1, sn = size2 - 1;
  while (fn & 1)
    fn >>= 1, sn >>= 1;
  uint8_t fr[MERKLE_HASH], sr[MERKLE_HASH];
  memcpy(fr, first, MERKLE_HASH);
  memcpy(sr, first, MERKLE_HASH);
  for (; i < len; i++) {
    if (sn == 0)
      return false;
    if ((fn & 1) || fn == sn) {
      merkle_node_hash(proof[i], fr, fr);
      merkle_node_hash(proof[i], sr, sr);
      while (!(fn & 1) && fn != 0)
        fn >>= 1, sn >>= 1;
    } else {
      merkle_node_hash(sr, proof[i], sr);
    }
    fn >>= 1, sn >>= 1;
  }
  return sn == 0 && memcmp(fr, root1, MERKLE_HASH) == 0 && memcmp(sr, root2, MERKLE_HASH) == 0;
}
