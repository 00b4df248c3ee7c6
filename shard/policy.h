/* Erasure policies ("4+2" with a stripe unit) and shard maps as plain C
 * structs, with their versioned protobuf encoding (docs/FORMATS.md). */
#ifndef MSD_SHARD_POLICY_H
#define MSD_SHARD_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "shard/ec.h"

#define SHARD_FORMAT_VERSION 1
#define SHARD_DIGEST_BYTES 16 /* XXH3-128, big-endian */

struct shard_policy {
  int k, m;
  uint32_t unit;
};

/* Parses "K+M" (e.g. "4+2") into p->k, p->m, leaving p->unit untouched.
 * Returns 0, MSD_EPOLICY (not of that form) or MSD_EEC_PARAMS. */
int shard_policy_parse(const char *text, struct shard_policy *p);

/* 0 if k, m and unit are all in range; else MSD_EEC_PARAMS or MSD_EUNIT. */
int shard_policy_check(const struct shard_policy *p);

struct shard_loc {
  uint32_t node_id; /* 0 = hole, awaiting repair */
  uint8_t digest[SHARD_DIGEST_BYTES];
};

struct shard_map {
  struct shard_policy policy;
  uint64_t size;
  struct shard_loc shard[EC_N_MAX]; /* k + m entries used */
};

/* Upper bound of an encoded shard map, for sizing buffers. */
#define SHARD_MAP_ENCODED_MAX 2048

/* Encodes into buf[0..cap); *len gets the encoded size. Returns 0,
 * MSD_ESHORT if cap is too small, or the policy check's error. */
int shard_map_encode(const struct shard_map *map, uint8_t *buf, size_t cap, size_t *len);

/* Decodes and validates (version, policy, exactly k+m shards in index
 * order, 16-byte digests). Returns 0, MSD_EDECODE, MSD_EVERSION, or the
 * policy check's error; *map is untouched on failure. */
int shard_map_decode(const uint8_t *buf, size_t len, struct shard_map *map);

#endif
