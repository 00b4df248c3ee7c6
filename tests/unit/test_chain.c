/* CUnit runner for chain-anchor/: the Merkle log against the published
 * RFC 6962 test vectors (as used by Certificate Transparency) and against a
 * naive recomputation for thousands of leaves. */
#include <openssl/sha.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

#include <openssl/hmac.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"
#include "chain-anchor/chainfile.h"
#include "chain-anchor/hash.h"
#include "chain-anchor/merkle.h"
#include "common/alloc.h"
#include "common/err.h"
#include "testutil.h"

/* ---- the CT / RFC 6962 vectors ---- */

static const char *const leaf_hex[] = {"", "00", "10", "2021", "3031", "40414243",
                                       "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
static const char *const root_hex[] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
static const char *const empty_hex =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct vector {
  uint64_t a, b; /* inclusion: leaf (1-based), size; consistency: size1, size2 */
  int n;
  const char *proof[3];
};

static const struct vector inclusion[] = {
    {1, 8, 3, {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6, 8, 3, {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {3, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
    {2, 5, 3, {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
    {1, 1, 0, {NULL}},
};

static const struct vector consistency[] = {
    {1, 1, 0, {NULL}},
    {1, 8, 3, {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6, 8, 3, {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2, 5, 2, {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
               "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
    {6, 7, 3, {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
               "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

static size_t unhex(const char *h, uint8_t *out)
{
  size_t n = strlen(h) / 2;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    out[i] = (uint8_t)v;
  }
  return n;
}

/* Leaf hashes of the vector leaves, as a merkle_source. */
static uint8_t vec_leaf[8][MERKLE_HASH];

static int array_get(void *ctx, uint64_t i, uint8_t out[MERKLE_HASH])
{
  memcpy(out, ((const uint8_t(*)[MERKLE_HASH])ctx)[i], MERKLE_HASH);
  return 0;
}

static void load_vectors(void)
{
  for (int i = 0; i < 8; i++) {
    uint8_t data[16];
    size_t n = unhex(leaf_hex[i], data);
    merkle_leaf_hash(data, n, vec_leaf[i]);
  }
}

static void test_roots_match_vectors(void)
{
  load_vectors();
  struct merkle_compact c;
  merkle_compact_init(&c);
  uint8_t root[MERKLE_HASH], want[MERKLE_HASH];
  merkle_compact_root(&c, root);
  unhex(empty_hex, want);
  CU_ASSERT(memcmp(root, want, MERKLE_HASH) == 0);
  struct merkle_source src = {.get = array_get, .ctx = vec_leaf};
  for (int i = 0; i < 8; i++) {
    CU_ASSERT_EQUAL(merkle_compact_append(&c, vec_leaf[i]), 0);
    merkle_compact_root(&c, root);
    unhex(root_hex[i], want);
    CU_ASSERT(memcmp(root, want, MERKLE_HASH) == 0);
    CU_ASSERT_EQUAL(merkle_range_root(&src, 0, (uint64_t)i + 1, root), 0);
    CU_ASSERT(memcmp(root, want, MERKLE_HASH) == 0);
  }
}

/* Every single-bit change to a valid proof, and the wrong index or size,
 * must be rejected. */
static int inclusion_mutants_accepted(uint64_t idx, uint64_t size, const uint8_t *leaf,
                                      uint8_t proof[][MERKLE_HASH], int n, const uint8_t *root)
{
  int bad = 0;
  for (int i = 0; i < n; i++)
    for (int bit = 0; bit < 8; bit += 3) {
      proof[i][bit] ^= (uint8_t)(1u << bit);
      bad += merkle_verify_inclusion(idx, size, leaf, proof, n, root);
      proof[i][bit] ^= (uint8_t)(1u << bit);
    }
  bad += idx + 1 < size && merkle_verify_inclusion(idx + 1, size, leaf, proof, n, root);
  bad += merkle_verify_inclusion(idx, size * 2, leaf, proof, n, root);
  bad += n > 0 && merkle_verify_inclusion(idx, size, leaf, proof, n - 1, root);
  return bad;
}

static void test_inclusion_vectors(void)
{
  load_vectors();
  struct merkle_source src = {.get = array_get, .ctx = vec_leaf};
  for (size_t t = 0; t < sizeof inclusion / sizeof inclusion[0]; t++) {
    const struct vector *v = &inclusion[t];
    uint8_t want[MERKLE_PROOF_MAX][MERKLE_HASH], got[MERKLE_PROOF_MAX][MERKLE_HASH], root[32];
    for (int i = 0; i < v->n; i++)
      unhex(v->proof[i], want[i]);
    int n;
    CU_ASSERT_EQUAL_FATAL(merkle_inclusion_proof(&src, v->a - 1, v->b, got, &n), 0);
    CU_ASSERT_EQUAL(n, v->n);
    CU_ASSERT(memcmp(got, want, (size_t)v->n * MERKLE_HASH) == 0);
    unhex(root_hex[v->b - 1], root);
    CU_ASSERT(merkle_verify_inclusion(v->a - 1, v->b, vec_leaf[v->a - 1], want, v->n, root));
    CU_ASSERT_EQUAL(inclusion_mutants_accepted(v->a - 1, v->b, vec_leaf[v->a - 1], want, v->n,
                                               root), 0);
  }
}

static void test_consistency_vectors(void)
{
  load_vectors();
  struct merkle_source src = {.get = array_get, .ctx = vec_leaf};
  for (size_t t = 0; t < sizeof consistency / sizeof consistency[0]; t++) {
    const struct vector *v = &consistency[t];
    uint8_t want[MERKLE_PROOF_MAX][MERKLE_HASH], got[MERKLE_PROOF_MAX][MERKLE_HASH];
    uint8_t r1[32], r2[32];
    for (int i = 0; i < v->n; i++)
      unhex(v->proof[i], want[i]);
    int n;
    CU_ASSERT_EQUAL_FATAL(merkle_consistency_proof(&src, v->a, v->b, got, &n), 0);
    CU_ASSERT_EQUAL(n, v->n);
    CU_ASSERT(memcmp(got, want, (size_t)v->n * MERKLE_HASH) == 0);
    unhex(root_hex[v->a - 1], r1);
    unhex(root_hex[v->b - 1], r2);
    CU_ASSERT(merkle_verify_consistency(v->a, v->b, r1, r2, want, v->n));
    int accepted = 0;
    for (int i = 0; i < v->n; i++) {
      want[i][0] ^= 16;
      accepted += merkle_verify_consistency(v->a, v->b, r1, r2, want, v->n);
      want[i][0] ^= 16;
    }
    if (v->n > 0) {
      accepted += merkle_verify_consistency(v->a, v->b, r2, r1, want, v->n); /* swapped */
      accepted += merkle_verify_consistency(v->a, v->b, r1, r2, want, v->n - 1);
      accepted += merkle_verify_consistency(v->a + 1, v->b, r1, r2, want, v->n);
    }
    CU_ASSERT_EQUAL(accepted, 0);
  }
  /* The edge rules of RFC 9162. */
  uint8_t a[32], b[32], none[1][32];
  unhex(root_hex[0], a);
  unhex(root_hex[1], b);
  CU_ASSERT(merkle_verify_consistency(0, 5, a, b, none, 0));
  CU_ASSERT(merkle_verify_consistency(3, 3, a, a, none, 0));
  CU_ASSERT_FALSE(merkle_verify_consistency(3, 3, a, b, none, 0));
  CU_ASSERT_FALSE(merkle_verify_consistency(2, 1, a, b, none, 0));
  CU_ASSERT_FALSE(merkle_verify_consistency(1, 2, a, b, none, 0));
  int n;
  uint8_t p[MERKLE_PROOF_MAX][MERKLE_HASH];
  struct merkle_source src2 = {.get = array_get, .ctx = vec_leaf};
  CU_ASSERT_EQUAL(merkle_consistency_proof(&src2, 0, 5, p, &n), MSD_ERANGE);
  CU_ASSERT_EQUAL(merkle_inclusion_proof(&src2, 5, 5, p, &n), MSD_ERANGE);
}

/* ---- randomized checks against a naive tree ---- */

static void naive_leaf(uint64_t i, uint8_t out[32])
{
  uint8_t buf[9] = {0};
  memcpy(buf + 1, &i, 8); /* 0x00 || 8-byte leaf data */
  SHA256(buf, sizeof buf, out);
}

/* MTH by the RFC's recursive definition, with its own split. */
static void naive_mth(uint64_t b, uint64_t e, uint8_t out[32])
{
  if (e - b == 1) {
    naive_leaf(b, out);
    return;
  }
  uint64_t k = 1;
  while (2 * k < e - b)
    k *= 2;
  uint8_t buf[65];
  buf[0] = 1;
  naive_mth(b, b + k, buf + 1);
  naive_mth(b + k, e, buf + 33);
  SHA256(buf, sizeof buf, out);
}

static int naive_get(void *ctx, uint64_t i, uint8_t out[MERKLE_HASH])
{
  (void)ctx;
  naive_leaf(i, out);
  return 0;
}

static void test_random_trees_against_naive(void)
{
  struct test_rng r = test_rng_for(61);
  struct merkle_source src = {.get = naive_get, .ctx = NULL};
  struct merkle_compact c;
  merkle_compact_init(&c);
  int bad = 0;
  uint8_t roots[3001][32];
  naive_mth(0, 1, roots[1]);
  for (uint64_t n = 1; n <= 3000; n++) {
    uint8_t leaf[32], root[32];
    naive_leaf(n - 1, leaf);
    merkle_compact_append(&c, leaf);
    merkle_compact_root(&c, root);
    naive_mth(0, n, roots[n]);
    bad += memcmp(root, roots[n], 32) != 0;
  }
  CU_ASSERT_EQUAL(bad, 0);
  for (int t = 0; t < 1000; t++) {
    uint64_t n = 1 + test_rng_below(&r, 3000), i = test_rng_below(&r, n);
    uint8_t proof[MERKLE_PROOF_MAX][32], leaf[32];
    int len;
    naive_leaf(i, leaf);
    CU_ASSERT_EQUAL_FATAL(merkle_inclusion_proof(&src, i, n, proof, &len), 0);
    bad += !merkle_verify_inclusion(i, n, leaf, proof, len, roots[n]);
    if (len > 0) {
      proof[test_rng_below(&r, (uint64_t)len)][7] ^= 1;
      bad += merkle_verify_inclusion(i, n, leaf, proof, len, roots[n]);
    }
    uint64_t m = 1 + test_rng_below(&r, n);
    CU_ASSERT_EQUAL_FATAL(merkle_consistency_proof(&src, m, n, proof, &len), 0);
    bad += !merkle_verify_consistency(m, n, roots[m], roots[n], proof, len);
    if (len > 0) {
      proof[test_rng_below(&r, (uint64_t)len)][3] ^= 2;
      bad += merkle_verify_consistency(m, n, roots[m], roots[n], proof, len);
    }
  }
  CU_ASSERT_EQUAL(bad, 0);
}

/* ---- anchor leaves ---- */

static struct anchor_leaf sample_anchor(struct test_rng *r)
{
  struct anchor_leaf a;
  memset(&a, 0, sizeof a);
  a.kind = ANCHOR_PUT;
  test_rng_fill(r, a.object_id, sizeof a.object_id);
  test_rng_fill(r, a.key_tag, sizeof a.key_tag);
  a.version = 3;
  a.size = 123456789012ull;
  test_rng_fill(r, a.commitment, sizeof a.commitment);
  a.k = 4, a.m = 2, a.unit = 1 << 20, a.nshards = 6;
  for (int i = 0; i < 6; i++) {
    a.shard[i].node_id = (uint32_t)(100 + i);
    test_rng_fill(r, a.shard[i].digest, sizeof a.shard[i].digest);
  }
  return a;
}

static void test_anchor_round_trip_and_canonical(void)
{
  struct test_rng r = test_rng_for(71);
  struct anchor_leaf a = sample_anchor(&r), b;
  uint8_t buf[ANCHOR_ENCODED_MAX + 8];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(anchor_encode(&a, buf, sizeof buf, &len), 0);
  CU_ASSERT_EQUAL(len, 105 + 6 * 20);
  CU_ASSERT_EQUAL(buf[0], ANCHOR_VERSION);
  CU_ASSERT_EQUAL_FATAL(anchor_decode(buf, len, &b), 0);
  CU_ASSERT(memcmp(&a, &b, sizeof a) == 0);
  /* Re-encoding the decoded leaf gives the same bytes: one encoding only. */
  uint8_t again[ANCHOR_ENCODED_MAX];
  size_t len2;
  CU_ASSERT_EQUAL(anchor_encode(&b, again, sizeof again, &len2), 0);
  CU_ASSERT(len2 == len && memcmp(buf, again, len) == 0);
  /* Every truncation and any trailing byte is refused, leaving b alone. */
  int accepted = 0;
  for (size_t cut = 0; cut < len; cut++)
    accepted += anchor_decode(buf, cut, &b) == 0;
  buf[len] = 0;
  accepted += anchor_decode(buf, len + 1, &b) == 0;
  CU_ASSERT_EQUAL(accepted, 0);
  buf[0] = 2;
  CU_ASSERT_EQUAL(anchor_decode(buf, len, &b), MSD_EVERSION);
  buf[0] = ANCHOR_VERSION;
  buf[1] = 9; /* unknown kind */
  CU_ASSERT_EQUAL(anchor_decode(buf, len, &b), MSD_EDECODE);
  buf[1] = ANCHOR_DELETE; /* a delete may not carry shards */
  CU_ASSERT_EQUAL(anchor_decode(buf, len, &b), MSD_EDECODE);
  CU_ASSERT_EQUAL(anchor_encode(&a, buf, len - 1, &len2), MSD_ESHORT);
  a.nshards = 5; /* != k + m */
  CU_ASSERT_EQUAL(anchor_encode(&a, buf, sizeof buf, &len2), MSD_EPARAM);
  struct anchor_leaf del = {.kind = ANCHOR_DELETE};
  CU_ASSERT_EQUAL(anchor_encode(&del, buf, sizeof buf, &len2), 0);
  CU_ASSERT_EQUAL(len2, 105);
  CU_ASSERT_EQUAL(anchor_decode(buf, len2, &b), 0);
  CU_ASSERT_EQUAL(b.kind, ANCHOR_DELETE);
}

static void test_commitment_and_key_tag(void)
{
  uint8_t salt[32], salt2[32], file[32], c1[32], c2[32], c3[32];
  memset(salt, 1, 32), memset(salt2, 2, 32), memset(file, 7, 32);
  anchor_commitment(salt, file, c1);
  anchor_commitment(salt, file, c2);
  anchor_commitment(salt2, file, c3);
  CU_ASSERT(memcmp(c1, c2, 32) == 0);
  CU_ASSERT(memcmp(c1, c3, 32) != 0); /* a new salt unlinks the commitment */
  CU_ASSERT(memcmp(c1, file, 32) != 0);

  /* The key tag is HMAC-SHA256 over "bucket/key" (checked with OpenSSL's
   * one-shot HMAC over the joined string). */
  const uint8_t secret[] = "cluster secret";
  uint8_t tag[32], want[32];
  unsigned n = 32;
  CU_ASSERT_EQUAL(anchor_key_tag(secret, sizeof secret - 1, "ct-scans", "patient/123.dcm", tag), 0);
  HMAC(EVP_sha256(), secret, (int)sizeof secret - 1, (const uint8_t *)"ct-scans/patient/123.dcm",
       24, want, &n);
  CU_ASSERT(memcmp(tag, want, 32) == 0);
  uint8_t other[32];
  anchor_key_tag(secret, sizeof secret - 1, "ct-scans", "patient/124.dcm", other);
  CU_ASSERT(memcmp(tag, other, 32) != 0);
  CU_ASSERT_EQUAL(anchor_key_tag(secret, 0, "b", "k", tag), MSD_EPARAM);
  char long_key[1100];
  memset(long_key, 'x', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = 0;
  CU_ASSERT_EQUAL(anchor_key_tag(secret, 4, "b", long_key, tag), MSD_EPARAM);
}

/* hash.h against OpenSSL's one-shot functions, keys short, of a block and
 * longer than a block (RFC 2104 hashes those first), in this thread and
 * another (each has its own context). */
static void *hash_checks(void *arg)
{
  uint8_t msg[300], key[100], got[32], want[32];
  unsigned n;
  int *bad = arg;
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 7 + 1);
  for (size_t i = 0; i < sizeof key; i++)
    key[i] = (uint8_t)(i * 13 + 5);
  static const size_t lens[] = {0, 1, 55, 64, 65, 300};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t split = lens[i] / 3;
    hash_sha256(msg, split, msg + split, lens[i] - split, got);
    SHA256(msg, lens[i], want);
    *bad += memcmp(got, want, 32) != 0;
    static const size_t klens[] = {1, 32, 64, 65, 100};
    for (size_t k = 0; k < sizeof klens / sizeof klens[0]; k++) {
      struct hash_hmac h;
      if (hash_hmac_init(&h, key, klens[k]) != 0) {
        (*bad)++;
        continue;
      }
      *bad += hash_hmac(&h, msg, split, msg + split, lens[i] - split, got) != 0;
      HMAC(EVP_sha256(), key, (int)klens[k], msg, lens[i], want, &n);
      *bad += memcmp(got, want, 32) != 0;
      hash_hmac_free(&h);
    }
  }
  return NULL;
}

static void test_hash_matches_openssl(void)
{
  int bad = 0, bad_thread = 0;
  hash_checks(&bad);
  pthread_t t;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, hash_checks, &bad_thread), 0);
  pthread_join(t, NULL);
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(bad_thread, 0);
  /* The precomputed key gives the same tags as the one-shot path. */
  struct hash_hmac h;
  uint8_t a[32], b[32];
  const uint8_t secret[] = "cluster secret";
  CU_ASSERT_EQUAL_FATAL(hash_hmac_init(&h, secret, sizeof secret - 1), 0);
  CU_ASSERT_EQUAL(anchor_key_tag_with(&h, "ct", "x/1.dcm", a), 0);
  CU_ASSERT_EQUAL(anchor_key_tag(secret, sizeof secret - 1, "ct", "x/1.dcm", b), 0);
  CU_ASSERT(memcmp(a, b, 32) == 0);
  hash_hmac_free(&h);
}

/* ---- blocks and cosignatures ---- */

static void test_block_round_trip_and_hash(void)
{
  struct block_header h = {7, {0}, 100, 164, {0}, 3, 9001, 1790000000000ull, 2}, g;
  memset(h.prev_hash, 0xab, 32);
  memset(h.root, 0xcd, 32);
  uint8_t buf[BLOCK_HEADER_BYTES + 1], h1[32], h2[32];
  block_encode(&h, buf);
  CU_ASSERT_EQUAL(buf[0], BLOCK_VERSION);
  CU_ASSERT_EQUAL_FATAL(block_decode(buf, BLOCK_HEADER_BYTES, &g), 0);
  CU_ASSERT(memcmp(&h, &g, sizeof h) == 0);
  CU_ASSERT_EQUAL(block_decode(buf, BLOCK_HEADER_BYTES - 1, &g), MSD_EDECODE);
  CU_ASSERT_EQUAL(block_decode(buf, BLOCK_HEADER_BYTES + 1, &g), MSD_EDECODE);
  /* The last field ends the encoding exactly (no unwritten tail is hashed). */
  uint8_t full[BLOCK_HEADER_BYTES];
  memset(full, 0xee, sizeof full);
  block_encode(&h, full);
  CU_ASSERT_EQUAL(memcmp(full, buf, BLOCK_HEADER_BYTES), 0);
  buf[0] = 9;
  CU_ASSERT_EQUAL(block_decode(buf, BLOCK_HEADER_BYTES, &g), MSD_EVERSION);
  /* Any changed field changes the hash. */
  block_hash(&h, h1);
  g = h;
  g.raft_index++;
  block_hash(&g, h2);
  CU_ASSERT(memcmp(h1, h2, 32) != 0);
  g = h;
  g.prev_hash[31] ^= 1;
  block_hash(&g, h2);
  CU_ASSERT(memcmp(h1, h2, 32) != 0);
  g = h;
  g.size_after = 99; /* shrinking tree */
  block_encode(&g, buf);
  CU_ASSERT_EQUAL(block_decode(buf, BLOCK_HEADER_BYTES, &g), MSD_EDECODE);
}

static void test_cosignatures(void)
{
  uint8_t pk[32], sk[64], pk2[32], sk2[64], sig[64], hash[32];
  CU_ASSERT_EQUAL_FATAL(block_keypair(pk, sk), 0);
  CU_ASSERT_EQUAL_FATAL(block_keypair(pk2, sk2), 0);
  struct block_header h = {1, {0}, 0, 10, {0}, 1, 12, 5, 1};
  block_hash(&h, hash);
  block_cosign(hash, sk, sig);
  CU_ASSERT(block_cosig_valid(hash, pk, sig));
  CU_ASSERT_FALSE(block_cosig_valid(hash, pk2, sig)); /* wrong key */
  sig[10] ^= 1;
  CU_ASSERT_FALSE(block_cosig_valid(hash, pk, sig)); /* forged */
  sig[10] ^= 1;
  hash[0] ^= 1;
  CU_ASSERT_FALSE(block_cosig_valid(hash, pk, sig)); /* another block */
}

/* ---- the chain file ---- */

/* Writes a chain of `blocks` blocks with 1..8 random anchors each. */
static void build_chain(const char *path, int blocks, struct test_rng *r)
{
  struct chain_file *cf;
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 1, &cf), 0);
  struct merkle_compact tree;
  merkle_compact_init(&tree);
  uint8_t prev[32] = {0};
  for (int b = 1; b <= blocks; b++) {
    struct block_header h = {(uint64_t)b, {0}, tree.size, 0, {0}, 2, (uint64_t)(10 * b), 1000, 1};
    memcpy(h.prev_hash, prev, 32);
    int n = 1 + (int)test_rng_below(r, 8);
    for (int i = 0; i < n; i++) {
      struct anchor_leaf a = sample_anchor(r);
      uint8_t buf[ANCHOR_ENCODED_MAX], lh[32];
      size_t len;
      CU_ASSERT_EQUAL_FATAL(anchor_encode(&a, buf, sizeof buf, &len), 0);
      CU_ASSERT_EQUAL_FATAL(chain_append_leaf(cf, buf, len, NULL), 0);
      merkle_leaf_hash(buf, len, lh);
      merkle_compact_append(&tree, lh);
    }
    h.size_after = tree.size;
    merkle_compact_root(&tree, h.root);
    CU_ASSERT_EQUAL_FATAL(chain_append_block(cf, &h, NULL), 0);
    block_hash(&h, prev);
  }
  CU_ASSERT_EQUAL(chain_file_sync(cf), 0);
  chain_file_close(cf);
}

static void test_chain_file_verifies(void)
{
  struct test_rng r = test_rng_for(81);
  const char *dir = test_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/chain", dir);
  build_chain(path, 12, &r);
  struct chain_verify_report rep;
  int rc = chain_verify(path, &rep);
  if (rc != 0)
    printf("\n  chain_verify: %s at offset %llu (block %llu)\n", rep.reason,
           (unsigned long long)rep.bad_offset, (unsigned long long)rep.bad_block);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(rep.blocks, 12);
  CU_ASSERT(rep.leaves >= 12);
  /* Appending after a reopen continues the same chain. */
  struct chain_file *cf;
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 0, &cf), 0);
  chain_file_close(cf);
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);
  /* Not a chain file. */
  char other[4200];
  snprintf(other, sizeof other, "%s/other", dir);
  FILE *f = fopen(other, "w");
  fputs("definitely not a chain file", f);
  fclose(f);
  CU_ASSERT_EQUAL(chain_file_open(other, 0, &cf), MSD_ENOTSTORE);
  CU_ASSERT_EQUAL(chain_verify(other, &rep), MSD_ECORRUPT);
  test_tmpdir_remove(dir);
}

/* Buffered appends: sizes and reads include them before they reach the
 * file; a truncate drops them; a flush writes them in place. */
static void test_chain_file_buffered(void)
{
  const char *dir = test_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/chain", dir);
  struct chain_file *cf;
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 1, &cf), 0);
  uint8_t leaf[100], buf[200], kind;
  size_t len;
  uint64_t off[3];
  memset(leaf, 0xab, sizeof leaf);
  CU_ASSERT_EQUAL(chain_append_leaf(cf, leaf, 10, &off[0]), 0); /* unbuffered */
  chain_file_buffer(cf, true);
  CU_ASSERT_EQUAL(chain_append_leaf(cf, leaf, 20, &off[1]), 0);
  CU_ASSERT_EQUAL(chain_append_leaf(cf, leaf, 30, &off[2]), 0);
  struct stat st;
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL((uint64_t)st.st_size, off[1]); /* only the first is on disk */
  CU_ASSERT_EQUAL(chain_read_record(cf, off[2], &kind, buf, sizeof buf, &len), 0);
  CU_ASSERT_EQUAL(len, 30);
  uint8_t all[400];
  size_t got;
  CU_ASSERT_EQUAL(chain_file_read(cf, off[0], all, sizeof all, &got), 0);
  CU_ASSERT_EQUAL(got, chain_file_size(cf) - off[0]); /* spans file and buffer */
  CU_ASSERT_EQUAL(chain_file_truncate(cf, off[2]), 0); /* drops the third */
  CU_ASSERT_EQUAL(chain_read_record(cf, off[2], &kind, buf, sizeof buf, &len), MSD_EPARAM);
  CU_ASSERT_EQUAL(chain_append_leaf(cf, leaf, 40, &off[2]), 0);
  CU_ASSERT_EQUAL(chain_file_flush(cf), 0);
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL((uint64_t)st.st_size, chain_file_size(cf));
  chain_file_close(cf);
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 0, &cf), 0);
  CU_ASSERT_EQUAL(chain_read_record(cf, off[2], &kind, buf, sizeof buf, &len), 0);
  CU_ASSERT_EQUAL(len, 40);
  CU_ASSERT_EQUAL(chain_read_record(cf, off[1], &kind, buf, sizeof buf, &len), 0);
  CU_ASSERT_EQUAL(len, 20);
  chain_file_close(cf);
  test_tmpdir_remove(dir);
}

/* Flipping any single byte of the file makes verification fail. */
static void test_chain_detects_any_changed_byte(void)
{
  struct test_rng r = test_rng_for(82);
  const char *dir = test_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/chain", dir);
  build_chain(path, 4, &r);
  struct chain_verify_report pristine;
  CU_ASSERT_EQUAL_FATAL(chain_verify(path, &pristine), 0); /* or the flips prove nothing */
  FILE *f = fopen(path, "r+b");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  int missed = 0;
  for (long at = 0; at < size; at++) {
    int c;
    fseek(f, at, SEEK_SET);
    c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x20, f);
    fflush(f);
    struct chain_verify_report rep;
    if (chain_verify(path, &rep) == 0) {
      if (missed++ == 0)
        printf("\n  flipped byte %ld went unnoticed\n", at);
    } else if (rep.bad_block < 1 || rep.bad_block > 5) {
      missed++;
    }
    fseek(f, at, SEEK_SET);
    fputc(c, f);
    fflush(f);
  }
  fclose(f);
  CU_ASSERT_EQUAL(missed, 0);
  CU_ASSERT(size > 500);
  test_tmpdir_remove(dir);
}

/* A forger who rewrites a leaf *and* its record checksum is still caught by
 * the block's root, and the report names that block. */
static void test_chain_detects_rewritten_leaf(void)
{
  const char *dir = test_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/chain", dir);
  struct chain_file *cf;
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 1, &cf), 0);
  struct test_rng r = test_rng_for(83);
  struct anchor_leaf a = sample_anchor(&r);
  uint8_t buf[ANCHOR_ENCODED_MAX], lh[32];
  size_t len;
  anchor_encode(&a, buf, sizeof buf, &len);
  struct merkle_compact t;
  merkle_compact_init(&t);
  merkle_leaf_hash(buf, len, lh);
  merkle_compact_append(&t, lh);
  struct block_header h = {1, {0}, 0, 1, {0}, 1, 1, 1, 1};
  merkle_compact_root(&t, h.root);
  chain_append_leaf(cf, buf, len, NULL);
  chain_append_block(cf, &h, NULL);
  chain_file_close(cf);
  /* Rewrite: a different size in the leaf, with a fresh record checksum. */
  a.size++;
  anchor_encode(&a, buf, sizeof buf, &len);
  struct chain_file *forged;
  char fpath[4200];
  snprintf(fpath, sizeof fpath, "%s/forged", dir);
  CU_ASSERT_EQUAL_FATAL(chain_file_open(fpath, 1, &forged), 0);
  chain_append_leaf(forged, buf, len, NULL);
  chain_append_block(forged, &h, NULL); /* the original, honest header */
  chain_file_close(forged);
  struct chain_verify_report rep;
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);
  CU_ASSERT_EQUAL(chain_verify(fpath, &rep), MSD_ECORRUPT);
  CU_ASSERT_EQUAL(rep.bad_block, 1);
  CU_ASSERT_STRING_EQUAL(rep.reason, "root does not match its leaves");
  test_tmpdir_remove(dir);
}

static const struct test_case chainfile_tests[] = {
    {"a well-formed chain verifies", test_chain_file_verifies},
    {"any changed byte is detected", test_chain_detects_any_changed_byte},
    {"a rewritten leaf is caught by its block", test_chain_detects_rewritten_leaf},
    {"buffered appends", test_chain_file_buffered},
    {NULL, NULL}};

static const struct test_case format_tests[] = {
    {"anchor leaf round trip, canonical form", test_anchor_round_trip_and_canonical},
    {"content commitment and key tag", test_commitment_and_key_tag},
    {"block header round trip and hash", test_block_round_trip_and_hash},
    {"Ed25519 cosignatures", test_cosignatures},
    {"SHA-256 and HMAC helpers match OpenSSL", test_hash_matches_openssl},
    {NULL, NULL}};

static const struct test_case merkle_tests[] = {
    {"roots match RFC 6962 vectors", test_roots_match_vectors},
    {"inclusion proofs match vectors", test_inclusion_vectors},
    {"consistency proofs match vectors", test_consistency_vectors},
    {"random trees against a naive tree", test_random_trees_against_naive},
    {NULL, NULL}};

extern const struct test_case merkletree_tests[]; /* test_merkletree.c */

int main(void)
{
  static const char *const names[] = {"merkle", "formats", "chain file", "merkletree", NULL};
  static const struct test_case *const suites[] = {merkle_tests, format_tests, chainfile_tests,
                                                   merkletree_tests};
  return test_run("test_chain", names, suites);
}
