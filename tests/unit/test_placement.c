/* Tests for shard/placement over 100,000 random object ids: weight shares,
 * zone rule, movement on add and remove, determinism and bad input. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "shard/ec.h"
#include "shard/placement.h"
#include "testutil.h"

#define OBJECTS 100000

static void random_oid(struct test_rng *r, uint8_t oid[PLACE_OID_BYTES])
{
  uint64_t a = test_rng_next(r), b = test_rng_next(r);
  memcpy(oid, &a, 8);
  memcpy(oid + 8, &b, 8);
}

/* Places OBJECTS objects; out[o * n + i] is shard i's node. */
static uint32_t *place_many(const struct place_map *pm, int n, uint64_t seed)
{
  struct test_rng r = test_rng_for(seed);
  uint32_t *out = msd_malloc((size_t)OBJECTS * (size_t)n * sizeof *out);
  void *scratch = msd_aligned_alloc(8, place_scratch_size(pm));
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  CU_ASSERT_PTR_NOT_NULL_FATAL(scratch);
  for (int o = 0; o < OBJECTS; o++) {
    uint8_t oid[PLACE_OID_BYTES];
    random_oid(&r, oid);
    CU_ASSERT_EQUAL_FATAL(place_select(pm, oid, out + (size_t)o * (size_t)n, scratch), 0);
  }
  msd_free(scratch);
  return out;
}

static int node_index(const struct place_node *nodes, size_t count, uint32_t id)
{
  for (size_t i = 0; i < count; i++)
    if (nodes[i].id == id)
      return (int)i;
  return -1;
}

/* Every node's share of placements within +-10% of its weight share. */
static void check_shares(const struct place_node *nodes, size_t count, int k, int m)
{
  struct place_map *pm;
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, count, k, m, &pm), 0);
  int n = k + m;
  uint32_t *out = place_many(pm, n, 41);
  double hits[64] = {0}, wsum = 0;
  for (size_t i = 0; i < count; i++)
    wsum += nodes[i].weight;
  for (size_t p = 0; p < (size_t)OBJECTS * (size_t)n; p++)
    hits[node_index(nodes, count, out[p])]++;
  for (size_t i = 0; i < count; i++) {
    double want = nodes[i].weight / wsum, got = hits[i] / ((double)OBJECTS * n);
    if (fabs(got / want - 1) > 0.10) {
      printf("\n  node %u weight %.1f: share %.4f, weight share %.4f\n", nodes[i].id,
             nodes[i].weight, got, want);
      CU_FAIL("share outside +-10% of weight share");
    }
  }
  msd_free(out);
  place_map_destroy(pm);
}

/* Weights 1, 2, 3: without calibration the heavy nodes would fall ~10%
 * short (a node cannot take two shards of one object). 8+3 needs 24 nodes
 * for a weight-3 node's share (11 x 3/48) to stay below one per object. */
static void test_shares_follow_weights(void)
{
  struct place_node nodes[24];
  for (int i = 0; i < 24; i++)
    nodes[i] = (struct place_node){(uint32_t)i + 1, 0, 1.0 + i % 3};
  check_shares(nodes, 12, 4, 2);
  check_shares(nodes, 24, 8, 3);
}

static void test_shares_follow_weights_with_zones(void)
{
  struct place_node nodes[12];
  for (int i = 0; i < 12; i++)
    nodes[i] = (struct place_node){(uint32_t)i + 101, (uint32_t)i / 3, 1.0 + i % 3};
  check_shares(nodes, 12, 4, 2);
}

/* Smallest per-zone maximum any placement could achieve. */
static int best_zone_cap(const int *zone_size, int zones, int n)
{
  for (int c = 1;; c++) {
    int fit = 0;
    for (int z = 0; z < zones; z++)
      fit += zone_size[z] < c ? zone_size[z] : c;
    if (fit >= n)
      return c;
  }
}

static void test_zone_rule_never_broken(void)
{
  struct test_rng r = test_rng_for(42);
  int violations = 0, configs = 0;
  for (int t = 0; t < 40; t++) {
    int zones = 1 + (int)test_rng_below(&r, 8), zone_size[8], count = 0;
    struct place_node nodes[40];
    for (int z = 0; z < zones; z++) {
      zone_size[z] = 1 + (int)test_rng_below(&r, 5);
      for (int j = 0; j < zone_size[z]; j++, count++)
        nodes[count] = (struct place_node){(uint32_t)(1000 + count), (uint32_t)z * 7 + 3,
                                           0.5 + (double)test_rng_below(&r, 6) / 2};
    }
    int k = 1 + (int)test_rng_below(&r, 8), m = (int)test_rng_below(&r, 4);
    if (k + m > count)
      k = count - m > 0 ? count - m : 1, m = count - k;
    struct place_map *pm;
    CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, (size_t)count, k, m, &pm), 0);
    configs++;
    int cap = best_zone_cap(zone_size, zones, k + m);
    void *scratch = msd_aligned_alloc(8, place_scratch_size(pm));
    for (int o = 0; o < 2000; o++) {
      uint8_t oid[PLACE_OID_BYTES];
      uint32_t out[EC_N_MAX];
      int per_zone[8] = {0};
      random_oid(&r, oid);
      CU_ASSERT_EQUAL_FATAL(place_select(pm, oid, out, scratch), 0);
      for (int i = 0; i < k + m; i++) {
        per_zone[(nodes[node_index(nodes, (size_t)count, out[i])].zone - 3) / 7]++;
        for (int j = 0; j < i; j++)
          if (out[i] == out[j])
            violations++; /* not distinct */
      }
      for (int z = 0; z < zones; z++)
        if (per_zone[z] > cap || (cap <= m && per_zone[z] > m))
          violations++;
    }
    msd_free(scratch);
    place_map_destroy(pm);
  }
  CU_ASSERT_EQUAL(violations, 0);
  CU_ASSERT_EQUAL(configs, 40);
}

/* Counts shards whose node changes between two placements of the same
 * objects, with stable re-assignment, split by whether the old node was
 * `gone` (0 = none). */
struct moves {
  uint64_t total, from_gone, others;
};

static struct moves count_moves(const uint32_t *before, const uint32_t *after, int n,
                                uint32_t gone)
{
  struct moves mv = {0};
  for (int o = 0; o < OBJECTS; o++) {
    const uint32_t *a = before + (size_t)o * (size_t)n, *b = after + (size_t)o * (size_t)n;
    uint32_t remapped[EC_N_MAX];
    int moved = place_remap(a, b, n, remapped);
    CU_ASSERT_FATAL(moved >= 0);
    int changed = 0;
    for (int i = 0; i < n; i++) {
      if (remapped[i] == a[i])
        continue;
      changed++;
      mv.total++;
      if (a[i] == gone)
        mv.from_gone++;
      else
        mv.others++;
    }
    CU_ASSERT_EQUAL(moved, changed);
  }
  return mv;
}

static void add_one_node(uint32_t zones)
{
  struct place_node nodes[13];
  for (int i = 0; i < 13; i++)
    nodes[i] = (struct place_node){(uint32_t)i + 1, (uint32_t)i % zones, 1.0};
  struct place_map *before, *after;
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 12, 4, 2, &before), 0);
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 13, 4, 2, &after), 0);
  uint32_t *a = place_many(before, 6, 43), *b = place_many(after, 6, 43);
  struct moves mv = count_moves(a, b, 6, 0);
  double moved = (double)mv.total / (OBJECTS * 6.0), ideal = 1.0 / 13;
  printf("\n    zones=%u: moved %.4f of placements, ideal %.4f (%.2fx) ", zones, moved, ideal,
         moved / ideal);
  CU_ASSERT(moved <= 1.2 * ideal);
  CU_ASSERT(moved >= 0.8 * ideal); /* the new node must actually receive shards */
  msd_free(a), msd_free(b);
  place_map_destroy(before), place_map_destroy(after);
}

static void test_adding_a_node_moves_near_ideal(void)
{
  add_one_node(1);
  add_one_node(4);
}

static void remove_one_node(uint32_t zones)
{
  struct place_node nodes[12];
  for (int i = 0; i < 12; i++)
    nodes[i] = (struct place_node){(uint32_t)i + 1, (uint32_t)i % zones, 1.0};
  struct place_map *before, *after;
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 12, 4, 2, &before), 0);
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 11, 4, 2, &after), 0); /* node 12 gone */
  uint32_t *a = place_many(before, 6, 44), *b = place_many(after, 6, 44);
  struct moves mv = count_moves(a, b, 6, 12);
  double others = (double)mv.others / (double)mv.total;
  printf("\n    zones=%u: %llu moved, %llu from the removed node, others %.4f ", zones,
         (unsigned long long)mv.total, (unsigned long long)mv.from_gone, others);
  CU_ASSERT(mv.from_gone > OBJECTS * 6 / 12 * 9 / 10); /* everything it held */
  CU_ASSERT(others <= 0.05);
  msd_free(a), msd_free(b);
  place_map_destroy(before), place_map_destroy(after);
}

static void test_removing_a_node_moves_only_its_shards(void)
{
  remove_one_node(1);
  remove_one_node(3);
}

static void test_deterministic(void)
{
  struct place_node nodes[9];
  for (int i = 0; i < 9; i++)
    nodes[i] = (struct place_node){(uint32_t)i * 3 + 7, (uint32_t)i % 3, 1.0 + i};
  struct place_map *p1, *p2;
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 9, 4, 2, &p1), 0);
  CU_ASSERT_EQUAL_FATAL(place_map_create(nodes, 9, 4, 2, &p2), 0);
  uint32_t *a = place_many(p1, 6, 45), *b = place_many(p2, 6, 45);
  CU_ASSERT(memcmp(a, b, (size_t)OBJECTS * 6 * sizeof *a) == 0);
  msd_free(a), msd_free(b);
  place_map_destroy(p1), place_map_destroy(p2);
}

static void test_bad_input(void)
{
  struct place_node nodes[6];
  for (int i = 0; i < 6; i++)
    nodes[i] = (struct place_node){(uint32_t)i + 1, 0, 1.0};
  struct place_map *pm = NULL;
  CU_ASSERT_EQUAL(place_map_create(nodes, 5, 4, 2, &pm), MSD_ENODES);
  nodes[0].weight = 0;
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 4, 2, &pm), MSD_ENODES);
  nodes[0].weight = -1;
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 4, 2, &pm), MSD_EPARAM);
  nodes[0].weight = NAN;
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 4, 2, &pm), MSD_EPARAM);
  nodes[0].weight = 1;
  nodes[0].id = 0;
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 4, 2, &pm), MSD_EPARAM);
  nodes[0].id = 2; /* duplicate */
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 4, 2, &pm), MSD_EPARAM);
  nodes[0].id = 1;
  CU_ASSERT_EQUAL(place_map_create(nodes, 6, 0, 2, &pm), MSD_EEC_PARAMS);
  CU_ASSERT_EQUAL(place_map_create(NULL, 6, 4, 2, &pm), MSD_EPARAM);
  CU_ASSERT_PTR_NULL(pm);

  uint32_t cur[3] = {1, 0, 3}, tgt[3] = {4, 1, 5}, out[3];
  CU_ASSERT_EQUAL(place_remap(cur, tgt, 3, out), 2);
  CU_ASSERT_EQUAL(out[0], 1); /* stays at its index */
  CU_ASSERT_EQUAL(out[1], 4);
  CU_ASSERT_EQUAL(out[2], 5);
  uint32_t dup[3] = {4, 4, 5};
  CU_ASSERT_EQUAL(place_remap(cur, dup, 3, out), MSD_EPARAM);
  CU_ASSERT_EQUAL(place_remap(cur, tgt, 0, out), MSD_EPARAM);
}

const struct test_case placement_tests[] = {
    {"shares follow weights", test_shares_follow_weights},
    {"shares follow weights with zones", test_shares_follow_weights_with_zones},
    {"zone rule never broken", test_zone_rule_never_broken},
    {"adding a node moves near the ideal fraction", test_adding_a_node_moves_near_ideal},
    {"removing a node moves only its shards", test_removing_a_node_moves_only_its_shards},
    {"deterministic", test_deterministic},
    {"bad input", test_bad_input},
    {NULL, NULL}};
