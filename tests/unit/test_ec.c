/* Tests for shard/ec: the ISA-L codec against a naive GF(2^8) reference,
 * every erasure pattern for small codes, seeded random ones for large. */
#include <errno.h>
#include <isa-l/erasure_code.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "shard/ec.h"
#include "testutil.h"

/* GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1 (0x11d), bit by bit. */
static unsigned char ref_mul(unsigned char a, unsigned char b)
{
  unsigned p = 0, x = a;
  for (; b; b >>= 1) {
    if (b & 1)
      p ^= x;
    x <<= 1;
    if (x & 0x100)
      x ^= 0x11d;
  }
  return (unsigned char)p;
}

static unsigned char ref_inv(unsigned char a)
{
  for (unsigned b = 1; b < 256; b++)
    if (ref_mul(a, (unsigned char)b) == 1)
      return (unsigned char)b;
  return 0;
}

/* A set of k+m shard buffers of len bytes with random data, encoded. */
struct shards {
  int k, m;
  size_t len;
  unsigned char *buf[EC_N_MAX];
  unsigned char *orig[EC_N_MAX];
};

static void shards_init(struct shards *s, struct ec_codec *c, size_t len, struct test_rng *r)
{
  s->k = ec_k(c), s->m = ec_m(c), s->len = len;
  for (int i = 0; i < s->k + s->m; i++) {
    s->buf[i] = msd_malloc(len);
    s->orig[i] = msd_malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->buf[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->orig[i]);
    if (i < s->k)
      test_rng_fill(r, s->buf[i], len);
  }
  CU_ASSERT_EQUAL_FATAL(ec_encode(c, len, s->buf, s->buf + s->k), 0);
  for (int i = 0; i < s->k + s->m; i++)
    memcpy(s->orig[i], s->buf[i], len);
}

static void shards_free(struct shards *s)
{
  for (int i = 0; i < s->k + s->m; i++)
    msd_free(s->buf[i]), msd_free(s->orig[i]);
}

/* Erases the shards in `lost` (scribbles over them), decodes, and checks
 * every shard is byte-identical to the original. Returns true if so. */
static bool erase_and_decode(struct ec_codec *c, struct shards *s, uint64_t lost)
{
  int n = s->k + s->m;
  uint64_t all = (1ull << n) - 1;
  for (int i = 0; i < n; i++)
    if (lost & (1ull << i))
      memset(s->buf[i], 0xa5, s->len);
  if (ec_decode(c, s->len, s->buf, all & ~lost, lost) != 0)
    return false;
  for (int i = 0; i < n; i++)
    if (memcmp(s->buf[i], s->orig[i], s->len) != 0)
      return false;
  return true;
}

static void test_matrix_is_cauchy(void)
{
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(10, 4, &c), 0);
  const unsigned char *a = ec_matrix(c);
  for (int i = 0; i < 14; i++)
    for (int j = 0; j < 10; j++) {
      unsigned char want = i < 10 ? (i == j) : ref_inv((unsigned char)(i ^ j));
      CU_ASSERT_EQUAL(a[i * 10 + j], want);
    }
  ec_destroy(c);
}

/* ISA-L's parity must equal the naive sum of products, for odd lengths that
 * exercise the SIMD kernels' tails. */
static void test_encode_matches_naive_reference(void)
{
  static const int km[][2] = {{1, 1}, {4, 2}, {6, 3}, {8, 3}, {10, 4}, {17, 5}, {32, 16}};
  static const size_t lens[] = {1, 15, 31, 32, 33, 63, 64, 65, 100, 1000, 4095, 4097};
  struct test_rng r = test_rng_for(1);
  for (size_t t = 0; t < sizeof km / sizeof km[0]; t++) {
    struct ec_codec *c;
    CU_ASSERT_EQUAL_FATAL(ec_create(km[t][0], km[t][1], &c), 0);
    const unsigned char *a = ec_matrix(c);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
      struct shards s;
      shards_init(&s, c, lens[l], &r);
      for (int p = 0; p < s.m; p++)
        for (size_t x = 0; x < s.len; x++) {
          unsigned char acc = 0;
          for (int j = 0; j < s.k; j++)
            acc ^= ref_mul(a[(s.k + p) * s.k + j], s.buf[j][x]);
          if (acc != s.buf[s.k + p][x]) {
            CU_FAIL("parity differs from the naive GF(2^8) reference");
            printf("\n  k=%d m=%d len=%zu parity %d byte %zu\n", s.k, s.m, s.len, p, x);
            p = s.m;
            break;
          }
        }
      shards_free(&s);
    }
    ec_destroy(c);
  }
}

/* Every pattern of up to m erasures (data and parity mixed) decodes. */
static void exhaustive(int k, int m, size_t len)
{
  struct test_rng r = test_rng_for((uint64_t)(k * 100 + m));
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(k, m, &c), 0);
  struct shards s;
  shards_init(&s, c, len, &r);
  int n = k + m, patterns = 0, bad = 0;
  for (uint64_t lost = 1; lost < (1ull << n); lost++) {
    if (__builtin_popcountll(lost) > m)
      continue;
    patterns++;
    if (!erase_and_decode(c, &s, lost) && bad++ == 0)
      printf("\n  %d+%d: pattern 0x%llx failed\n", k, m, (unsigned long long)lost);
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT(patterns > 0);
  shards_free(&s);
  ec_destroy(c);
}

static void test_every_pattern_4_2(void) { exhaustive(4, 2, 1021); }
static void test_every_pattern_6_3(void) { exhaustive(6, 3, 777); }
static void test_every_pattern_8_3(void) { exhaustive(8, 3, 4099); }

static void random_patterns(int k, int m, int rounds)
{
  struct test_rng r = test_rng_for((uint64_t)(k * 1000 + m));
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(k, m, &c), 0);
  int n = k + m, bad = 0;
  for (int t = 0; t < rounds; t++) {
    struct shards s;
    shards_init(&s, c, 1 + test_rng_below(&r, 3000), &r);
    int nerase = 1 + (int)test_rng_below(&r, (uint64_t)m);
    uint64_t lost = 0;
    while (__builtin_popcountll(lost) < nerase)
      lost |= 1ull << test_rng_below(&r, (uint64_t)n);
    if (!erase_and_decode(c, &s, lost) && bad++ == 0)
      printf("\n  %d+%d: pattern 0x%llx len %zu failed\n", k, m, (unsigned long long)lost, s.len);
    shards_free(&s);
  }
  CU_ASSERT_EQUAL(bad, 0);
  ec_destroy(c);
}

static void test_random_patterns_10_4(void) { random_patterns(10, 4, 300); }
static void test_random_patterns_16_4(void) { random_patterns(16, 4, 200); }
static void test_random_patterns_32_16(void) { random_patterns(32, 16, 100); }

/* More than m erasures is an error and writes nothing into the buffers. */
static void test_too_many_erasures_is_an_error(void)
{
  struct test_rng r = test_rng_for(7);
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(4, 2, &c), 0);
  struct shards s;
  shards_init(&s, c, 512, &r);
  int checked = 0;
  for (uint64_t lost = 1; lost < 64; lost++) {
    if (__builtin_popcountll(lost) != 3)
      continue;
    for (int i = 0; i < 6; i++)
      if (lost & (1ull << i))
        memset(s.buf[i], 0x5a, s.len);
    CU_ASSERT_EQUAL(ec_decode(c, s.len, s.buf, 63 & ~lost, lost), MSD_ETOO_MANY_ERASURES);
    for (int i = 0; i < 6; i++)
      if (lost & (1ull << i))
        CU_ASSERT_EQUAL(s.buf[i][0], 0x5a);
    checked++;
  }
  CU_ASSERT_EQUAL(checked, 20);
  shards_free(&s);
  ec_destroy(c);
}

static void test_decode_tables_are_cached(void)
{
  struct test_rng r = test_rng_for(9);
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(6, 3, &c), 0);
  struct shards s;
  shards_init(&s, c, 256, &r);
  struct ec_cache_stats st;
  CU_ASSERT(erase_and_decode(c, &s, 0x3));
  CU_ASSERT(erase_and_decode(c, &s, 0x3));
  ec_cache_stats(c, &st);
  CU_ASSERT_EQUAL(st.misses, 1);
  CU_ASSERT_EQUAL(st.hits, 1);
  /* More patterns than slots: eviction must keep results correct. */
  int ok = 0, total = 0;
  for (uint64_t lost = 1; lost < 512; lost++)
    if (__builtin_popcountll(lost) <= 3) {
      total++;
      ok += erase_and_decode(c, &s, lost);
    }
  CU_ASSERT_EQUAL(ok, total);
  CU_ASSERT(erase_and_decode(c, &s, 0x3));
  shards_free(&s);
  ec_destroy(c);
}

static void test_no_parity_code(void)
{
  struct test_rng r = test_rng_for(11);
  struct ec_codec *c;
  CU_ASSERT_EQUAL_FATAL(ec_create(3, 0, &c), 0);
  struct shards s;
  shards_init(&s, c, 100, &r);
  CU_ASSERT_EQUAL(ec_decode(c, s.len, s.buf, 0x7, 0), 0);
  CU_ASSERT_EQUAL(ec_decode(c, s.len, s.buf, 0x6, 0x1), MSD_ETOO_MANY_ERASURES);
  shards_free(&s);
  ec_destroy(c);
}

static void test_bad_parameters(void)
{
  static const int bad[][2] = {{0, 2}, {-1, 2}, {33, 0}, {4, 17}, {4, -1}, {32, 17}, {40, 9}};
  struct ec_codec *c = NULL;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(ec_create(bad[i][0], bad[i][1], &c), MSD_EEC_PARAMS);
    CU_ASSERT_PTR_NULL(c);
  }
  CU_ASSERT_EQUAL(ec_check_params(32, 16), 0);
  CU_ASSERT_EQUAL(ec_create(4, 2, NULL), MSD_EPARAM);

  CU_ASSERT_EQUAL_FATAL(ec_create(4, 2, &c), 0);
  unsigned char b[6][64] = {{0}};
  unsigned char *p[6] = {b[0], b[1], b[2], b[3], b[4], b[5]};
  unsigned char *withnull[6] = {b[0], NULL, b[2], b[3], b[4], b[5]};
  CU_ASSERT_EQUAL(ec_encode(c, 64, NULL, p + 4), MSD_EPARAM);
  CU_ASSERT_EQUAL(ec_encode(c, 64, withnull, p + 4), MSD_EPARAM);
  CU_ASSERT_EQUAL(ec_encode(c, (size_t)INT_MAX + 1, p, p + 4), MSD_ESHORT);
  CU_ASSERT_EQUAL(ec_decode(c, 64, p, 0x3f, 0x01), MSD_EPARAM);  /* want overlaps avail */
  CU_ASSERT_EQUAL(ec_decode(c, 64, p, 0x7f, 0), MSD_EPARAM);     /* shard 6 does not exist */
  CU_ASSERT_EQUAL(ec_decode(c, 64, withnull, 0x3c, 0x02), MSD_EPARAM); /* NULL target */
  CU_ASSERT_EQUAL(ec_decode(c, 64, NULL, 0x3c, 0x03), MSD_EPARAM);
  ec_destroy(c);
  ec_destroy(NULL);
}

/* Every allocation in ec_create may fail: each failure is -ENOMEM and
 * leaks nothing (the sanitizer run checks the leaks). */
static void test_create_survives_allocation_failures(void)
{
  int failures = 0;
  for (int n = 1; n < 64; n++) {
    struct ec_codec *c = NULL;
    msd_fault_arm(n);
    int rc = ec_create(8, 3, &c);
    msd_fault_arm(0);
    if (rc == 0) {
      ec_destroy(c);
      break;
    }
    CU_ASSERT_EQUAL(rc, -ENOMEM);
    failures++;
  }
  CU_ASSERT(failures >= 2 + EC_CACHE_SLOTS);
}

const struct test_case ec_tests[] = {
    {"generator matrix is identity over Cauchy", test_matrix_is_cauchy},
    {"encode matches naive GF(2^8) reference", test_encode_matches_naive_reference},
    {"every erasure pattern 4+2", test_every_pattern_4_2},
    {"every erasure pattern 6+3", test_every_pattern_6_3},
    {"every erasure pattern 8+3", test_every_pattern_8_3},
    {"random patterns 10+4", test_random_patterns_10_4},
    {"random patterns 16+4", test_random_patterns_16_4},
    {"random patterns 32+16", test_random_patterns_32_16},
    {"more than m erasures is an error", test_too_many_erasures_is_an_error},
    {"decode tables are cached", test_decode_tables_are_cached},
    {"k+0 code", test_no_parity_code},
    {"bad parameters", test_bad_parameters},
    {"create survives allocation failures", test_create_survives_allocation_failures},
    {NULL, NULL}};
