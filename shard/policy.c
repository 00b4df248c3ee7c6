/* Erasure policy parsing and shard-map wire encoding (see policy.h). This is
 * the only file in shard/ that sees protobuf-c types. */
#include "shard/policy.h"

#include <string.h>

#include "common/err.h"
#include "proto/medshard.pb-c.h"
#include "shard/stripe.h"

static int parse_int(const char *s, const char **end, int *out)
{
  if (*s < '0' || *s > '9')
    return MSD_EPOLICY;
  long v = 0;
  while (*s >= '0' && *s <= '9' && v < 1000)
    v = v * 10 + (*s++ - '0');
  if (*s >= '0' && *s <= '9')
    return MSD_EEC_PARAMS; /* absurdly many digits */
  *out = (int)v;
  *end = s;
  return 0;
}

int shard_policy_parse(const char *text, struct shard_policy *p)
{
  if (text == NULL || p == NULL)
    return MSD_EPARAM;
  int k, m;
  const char *s = text;
  int rc = parse_int(s, &s, &k);
  if (rc != 0)
    return rc;
  if (*s++ != '+')
    return MSD_EPOLICY;
  rc = parse_int(s, &s, &m);
  if (rc != 0)
    return rc;
  if (*s != '\0')
    return MSD_EPOLICY;
  rc = ec_check_params(k, m);
  if (rc != 0)
    return rc;
  p->k = k;
  p->m = m;
  return 0;
}

int shard_policy_check(const struct shard_policy *p)
{
  if (p == NULL)
    return MSD_EPARAM;
  int rc = ec_check_params(p->k, p->m);
  return rc != 0 ? rc : stripe_check_unit(p->unit);
}

int shard_map_encode(const struct shard_map *map, uint8_t *buf, size_t cap, size_t *len)
{
  if (map == NULL || buf == NULL || len == NULL)
    return MSD_EPARAM;
  int rc = shard_policy_check(&map->policy);
  if (rc != 0)
    return rc;

  Medshard__ErasurePolicy pol = MEDSHARD__ERASURE_POLICY__INIT;
  pol.format_version = SHARD_FORMAT_VERSION;
  pol.k = (uint32_t)map->policy.k;
  pol.m = (uint32_t)map->policy.m;
  pol.unit = map->policy.unit;

  int n = map->policy.k + map->policy.m;
  Medshard__ShardLocation locs[EC_N_MAX];
  Medshard__ShardLocation *ptrs[EC_N_MAX];
  for (int i = 0; i < n; i++) {
    medshard__shard_location__init(&locs[i]);
    locs[i].index = (uint32_t)i;
    locs[i].node_id = map->shard[i].node_id;
    locs[i].digest.len = SHARD_DIGEST_BYTES;
    locs[i].digest.data = (uint8_t *)map->shard[i].digest;
    ptrs[i] = &locs[i];
  }
  Medshard__ShardMap msg = MEDSHARD__SHARD_MAP__INIT;
  msg.format_version = SHARD_FORMAT_VERSION;
  msg.policy = &pol;
  msg.size = map->size;
  msg.n_shards = (size_t)n;
  msg.shards = ptrs;

  size_t need = medshard__shard_map__get_packed_size(&msg);
  if (need > cap)
    return MSD_ESHORT;
  *len = medshard__shard_map__pack(&msg, buf);
  return 0;
}

static int map_from_msg(const Medshard__ShardMap *msg, struct shard_map *out)
{
  if (msg->policy == NULL)
    return MSD_EDECODE;
  if (msg->format_version != SHARD_FORMAT_VERSION ||
      msg->policy->format_version != SHARD_FORMAT_VERSION)
    return MSD_EVERSION;
  struct shard_map map;
  memset(&map, 0, sizeof map);
  if (msg->policy->k > EC_K_MAX || msg->policy->m > EC_M_MAX)
    return MSD_EEC_PARAMS;
  map.policy.k = (int)msg->policy->k;
  map.policy.m = (int)msg->policy->m;
  map.policy.unit = msg->policy->unit;
  int rc = shard_policy_check(&map.policy);
  if (rc != 0)
    return rc;
  if (msg->n_shards != (size_t)(map.policy.k + map.policy.m))
    return MSD_EDECODE;
  for (size_t i = 0; i < msg->n_shards; i++) {
    const Medshard__ShardLocation *l = msg->shards[i];
    if (l->index != i || l->digest.len != SHARD_DIGEST_BYTES)
      return MSD_EDECODE;
    map.shard[i].node_id = l->node_id;
    memcpy(map.shard[i].digest, l->digest.data, SHARD_DIGEST_BYTES);
  }
  map.size = msg->size;
  *out = map;
  return 0;
}

int shard_map_decode(const uint8_t *buf, size_t len, struct shard_map *map)
{
  if (buf == NULL || map == NULL)
    return MSD_EPARAM;
  Medshard__ShardMap *msg = medshard__shard_map__unpack(NULL, len, buf);
  if (msg == NULL)
    return MSD_EDECODE;
  int rc = map_from_msg(msg, map);
  medshard__shard_map__free_unpacked(msg, NULL);
  return rc;
}
