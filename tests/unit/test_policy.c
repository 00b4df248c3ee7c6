/* Tests for shard/policy: "K+M" parsing and the versioned shard-map
 * encoding, including malformed and future-version input. */
#include <string.h>

#include "common/err.h"
#include "proto/medshard.pb-c.h"
#include "shard/policy.h"
#include "testutil.h"

static void test_parse(void)
{
  struct shard_policy p = {0, 0, 4096};
  CU_ASSERT_EQUAL(shard_policy_parse("4+2", &p), 0);
  CU_ASSERT_EQUAL(p.k, 4);
  CU_ASSERT_EQUAL(p.m, 2);
  CU_ASSERT_EQUAL(p.unit, 4096);
  CU_ASSERT_EQUAL(shard_policy_parse("32+16", &p), 0);
  CU_ASSERT_EQUAL(shard_policy_parse("10+0", &p), 0);
  static const char *const bad_form[] = {"", "4", "4+", "+2", "4-2", "4+2x", "a+b", " 4+2", "4++2"};
  for (size_t i = 0; i < sizeof bad_form / sizeof bad_form[0]; i++)
    CU_ASSERT_EQUAL(shard_policy_parse(bad_form[i], &p), MSD_EPOLICY);
  static const char *const bad_range[] = {"0+2", "33+1", "4+17", "40+9", "99999999999+1"};
  for (size_t i = 0; i < sizeof bad_range / sizeof bad_range[0]; i++)
    CU_ASSERT_EQUAL(shard_policy_parse(bad_range[i], &p), MSD_EEC_PARAMS);
  CU_ASSERT_EQUAL(p.k, 10); /* untouched by failures */
  CU_ASSERT_EQUAL(shard_policy_parse(NULL, &p), MSD_EPARAM);
}

static struct shard_map sample_map(void)
{
  struct shard_map map;
  memset(&map, 0, sizeof map);
  map.policy = (struct shard_policy){4, 2, 1 << 20};
  map.size = 123456789;
  for (int i = 0; i < 6; i++) {
    map.shard[i].node_id = i == 3 ? 0 : (uint32_t)(10 + i); /* shard 3 is a hole */
    memset(map.shard[i].digest, 0x11 * (i + 1), SHARD_DIGEST_BYTES);
  }
  return map;
}

static void test_map_round_trip(void)
{
  struct shard_map in = sample_map(), out;
  uint8_t buf[SHARD_MAP_ENCODED_MAX];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(shard_map_encode(&in, buf, sizeof buf, &len), 0);
  memset(&out, 0xff, sizeof out);
  CU_ASSERT_EQUAL_FATAL(shard_map_decode(buf, len, &out), 0);
  CU_ASSERT(memcmp(&in, &out, sizeof in) == 0);
  CU_ASSERT_EQUAL(shard_map_encode(&in, buf, len - 1, &len), MSD_ESHORT);
}

static void test_map_rejects_bad_input(void)
{
  struct shard_map in = sample_map(), out = sample_map();
  out.size = 7;
  uint8_t buf[SHARD_MAP_ENCODED_MAX];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(shard_map_encode(&in, buf, sizeof buf, &len), 0);
  /* Every truncation is either a clean decode error or (never) a success
   * that silently changed the map. */
  for (size_t cut = 0; cut < len; cut++) {
    int rc = shard_map_decode(buf, cut, &out);
    CU_ASSERT(rc != 0);
  }
  CU_ASSERT_EQUAL(out.size, 7); /* untouched */
  uint8_t junk[64];
  memset(junk, 0xff, sizeof junk);
  CU_ASSERT_EQUAL(shard_map_decode(junk, sizeof junk, &out), MSD_EDECODE);

  /* A future format version is refused, not misread. */
  Medshard__ErasurePolicy pol = MEDSHARD__ERASURE_POLICY__INIT;
  pol.format_version = 2, pol.k = 4, pol.m = 2, pol.unit = 4096;
  Medshard__ShardMap msg = MEDSHARD__SHARD_MAP__INIT;
  msg.format_version = 2;
  msg.policy = &pol;
  len = medshard__shard_map__pack(&msg, buf);
  CU_ASSERT_EQUAL(shard_map_decode(buf, len, &out), MSD_EVERSION);
  /* Right version, wrong shard count. */
  msg.format_version = pol.format_version = SHARD_FORMAT_VERSION;
  len = medshard__shard_map__pack(&msg, buf);
  CU_ASSERT_EQUAL(shard_map_decode(buf, len, &out), MSD_EDECODE);
  /* Out-of-range policy. */
  pol.k = 200;
  len = medshard__shard_map__pack(&msg, buf);
  CU_ASSERT_EQUAL(shard_map_decode(buf, len, &out), MSD_EEC_PARAMS);
  pol.k = 4, pol.unit = 4100;
  len = medshard__shard_map__pack(&msg, buf);
  CU_ASSERT_EQUAL(shard_map_decode(buf, len, &out), MSD_EUNIT);
  CU_ASSERT_EQUAL(out.size, 7);
}

const struct test_case policy_tests[] = {
    {"parse K+M", test_parse},
    {"shard map round trip", test_map_round_trip},
    {"shard map rejects bad input", test_map_rejects_bad_input},
    {NULL, NULL}};
