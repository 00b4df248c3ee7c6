/* Anchor leaves: the canonical, versioned bytes appended to the Merkle log
 * for every PUT, DELETE or shard move, and the two keyed digests they carry
 * instead of names and content (docs/FORMATS.md, "Anchor leaf"). */
#ifndef MSD_CHAIN_ANCHOR_H
#define MSD_CHAIN_ANCHOR_H

#include <stddef.h>
#include <stdint.h>

#define ANCHOR_VERSION 1
#define ANCHOR_ID_BYTES 16
#define ANCHOR_HASH 32
#define ANCHOR_DIGEST 16   /* XXH3-128 of a shard */
#define ANCHOR_SHARDS_MAX 48
/* 1+1+16+32+8+8+32+1+1+4+1 header bytes + 20 per shard */
#define ANCHOR_ENCODED_MAX (105 + 20 * ANCHOR_SHARDS_MAX)

enum anchor_kind { ANCHOR_PUT = 1, ANCHOR_DELETE = 2, ANCHOR_MOVE = 3 };

struct anchor_shard {
  uint32_t node_id; /* 0 = hole awaiting repair */
  uint8_t digest[ANCHOR_DIGEST];
};

struct anchor_leaf {
  enum anchor_kind kind;
  uint8_t object_id[ANCHOR_ID_BYTES];
  uint8_t key_tag[ANCHOR_HASH];    /* HMAC-SHA256(cluster secret, bucket "/" key) */
  uint64_t version;                /* object version */
  uint64_t size;
  uint8_t commitment[ANCHOR_HASH]; /* see anchor_commitment */
  uint8_t k, m;
  uint32_t unit;
  uint8_t nshards;                 /* k + m for PUT and MOVE; DELETE has k, m,
                                      unit and nshards all 0 */
  struct anchor_shard shard[ANCHOR_SHARDS_MAX];
};

/* Canonical encoding: fixed-width big-endian fields, the shard list
 * length-prefixed. Returns 0 and *len, MSD_ESHORT, or MSD_EPARAM for a leaf
 * that breaks the structural rules anchor_decode enforces. */
int anchor_encode(const struct anchor_leaf *a, uint8_t *buf, size_t cap, size_t *len);

/* Decodes exactly len bytes: unknown version (MSD_EVERSION), unknown kind,
 * a shard count that does not match the kind and k+m, k = 0, a unit that is
 * not a positive multiple of 64, truncation or trailing bytes
 * (MSD_EDECODE). *a untouched on error. */
int anchor_decode(const uint8_t *buf, size_t len, struct anchor_leaf *a);

/* SHA-256("medshard/content/v1" || salt || file_sha256): what the chain
 * records instead of the file's hash, so that someone holding a file cannot
 * test whether it is stored here; erasing the salt unlinks the anchor. */
void anchor_commitment(const uint8_t salt[ANCHOR_HASH], const uint8_t file_sha256[ANCHOR_HASH],
                       uint8_t out[ANCHOR_HASH]);

/* HMAC-SHA256(secret, bucket "/" key): names (which may hold patient
 * identifiers) never reach the chain. 0 or MSD_EPARAM. */
int anchor_key_tag(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
                   uint8_t out[ANCHOR_HASH]);

/* The same under a precomputed key (the FSM tags every PutObject). */
struct hash_hmac;
int anchor_key_tag_with(const struct hash_hmac *h, const char *bucket, const char *key,
                        uint8_t out[ANCHOR_HASH]);

#endif
