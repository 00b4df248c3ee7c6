/* Tests for shard/range: random ranges against a byte-by-byte brute-force
 * map, clipping at the end, and reassembly from the spans. */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "shard/range.h"
#include "testutil.h"

/* Where object byte p lives, computed the slow way: walk the stripes. */
static void brute_locate(const struct stripe_geom *g, uint64_t p, int *shard, uint64_t *off)
{
  uint64_t stripe = 0, base = 0;
  while (base + (uint64_t)g->k * g->unit <= p)
    base += (uint64_t)g->k * g->unit, stripe++;
  *shard = (int)((p - base) / g->unit);
  *off = stripe * g->unit + (p - base) % g->unit;
}

/* Checks r against the brute-force map: one span per touched shard, each
 * covering exactly the offsets the range's bytes occupy. */
static bool matches_brute_force(const struct stripe_geom *g, const struct range_map *r)
{
  uint64_t lo[EC_K_MAX], hi[EC_K_MAX], count[EC_K_MAX] = {0};
  for (uint64_t p = r->off; p < r->off + r->len; p++) {
    int s;
    uint64_t o;
    brute_locate(g, p, &s, &o);
    if (count[s] == 0 || o < lo[s])
      lo[s] = o;
    if (count[s] == 0 || o > hi[s])
      hi[s] = o;
    count[s]++;
  }
  int touched = 0;
  for (int s = 0; s < g->k; s++)
    touched += count[s] > 0;
  if (touched != r->nspans)
    return false;
  for (int j = 0; j < r->nspans; j++) {
    const struct range_span *sp = &r->span[j];
    int s = sp->shard;
    if (j > 0 && sp->shard <= r->span[j - 1].shard)
      return false;
    /* count == extent means the shard's bytes are one contiguous run. */
    if (count[s] != sp->len || lo[s] != sp->shard_off || hi[s] - lo[s] + 1 != sp->len)
      return false;
  }
  return true;
}

/* Lays the object out into shard streams (data shards only). */
static void layout(const struct stripe_geom *g, const unsigned char *src, unsigned char **shard)
{
  for (uint64_t p = 0; p < g->size; p++) {
    int s;
    uint64_t o;
    brute_locate(g, p, &s, &o);
    shard[s][o] = src[p];
  }
}

static void test_random_ranges_match_brute_force(void)
{
  struct test_rng r = test_rng_for(31);
  int bad = 0, ranges = 0;
  for (int geo = 0; geo < 40; geo++) {
    struct stripe_geom g;
    int k = 1 + (int)test_rng_below(&r, 8);
    size_t unit = 4096u * (1 + test_rng_below(&r, 2));
    uint64_t size = test_rng_below(&r, 3 * (uint64_t)k * unit + 2) + 1;
    CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, k, 2, unit, size), 0);
    unsigned char *src = msd_malloc(size), *shard[EC_K_MAX];
    test_rng_fill(&r, src, size);
    for (int i = 0; i < k; i++)
      shard[i] = msd_calloc(1, stripe_shard_size(&g));
    layout(&g, src, shard);
    for (int t = 0; t < 15; t++, ranges++) {
      uint64_t off = test_rng_below(&r, size), len = test_rng_below(&r, size - off + unit);
      struct range_map m;
      CU_ASSERT_EQUAL_FATAL(range_map(&g, off, len, &m), 0);
      CU_ASSERT_EQUAL(m.clipped, off + len > size);
      if (!matches_brute_force(&g, &m) && bad++ == 0)
        printf("\n  k=%d unit=%zu size=%llu off=%llu len=%llu\n", k, unit,
               (unsigned long long)size, (unsigned long long)off, (unsigned long long)len);
      /* Reassemble the range from just its spans. */
      const unsigned char *bufs[EC_K_MAX];
      for (int j = 0; j < m.nspans; j++)
        bufs[j] = shard[m.span[j].shard] + m.span[j].shard_off;
      unsigned char *out = msd_malloc(m.len + 1);
      CU_ASSERT_EQUAL(range_assemble(&g, &m, bufs, out), 0);
      CU_ASSERT(memcmp(out, src + m.off, m.len) == 0);
      msd_free(out);
    }
    for (int i = 0; i < k; i++)
      msd_free(shard[i]);
    msd_free(src);
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT(ranges >= 500);
}

static void test_clipping_and_errors(void)
{
  struct stripe_geom g;
  struct range_map m;
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 4, 2, 4096, 10000), 0);
  CU_ASSERT_EQUAL(range_map(&g, 9000, 5000, &m), 0);
  CU_ASSERT(m.clipped);
  CU_ASSERT_EQUAL(m.len, 1000);
  CU_ASSERT_EQUAL(range_map(&g, 10, UINT64_MAX, &m), 0); /* off + len overflows */
  CU_ASSERT(m.clipped);
  CU_ASSERT_EQUAL(m.len, 9990);
  CU_ASSERT_EQUAL(range_map(&g, 10000, 1, &m), MSD_ERANGE);
  CU_ASSERT_EQUAL(range_map(&g, 20000, 0, &m), MSD_ERANGE);
  CU_ASSERT_EQUAL(range_map(&g, 10000, 0, &m), 0);
  CU_ASSERT_EQUAL(m.nspans, 0);
  CU_ASSERT_FALSE(m.clipped);
  CU_ASSERT_EQUAL(range_map(&g, 0, 1, NULL), MSD_EPARAM);
  /* One byte inside chunk 2 of stripe 0: one span, in shard 2. */
  CU_ASSERT_EQUAL(range_map(&g, 2 * 4096 + 5, 1, &m), 0);
  CU_ASSERT_EQUAL(m.nspans, 1);
  CU_ASSERT_EQUAL(m.span[0].shard, 2);
  CU_ASSERT_EQUAL(m.span[0].shard_off, 5);
  CU_ASSERT_EQUAL(m.first_stripe, 0);
  CU_ASSERT_EQUAL(m.last_stripe, 0);
  /* Empty object. */
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 4, 2, 4096, 0), 0);
  CU_ASSERT_EQUAL(range_map(&g, 0, 10, &m), MSD_ERANGE);
  CU_ASSERT_EQUAL(range_map(&g, 0, 0, &m), 0);
}

const struct test_case range_tests[] = {
    {"random ranges match brute force", test_random_ranges_match_brute_force},
    {"clipping and errors", test_clipping_and_errors},
    {NULL, NULL}};
