/* Anchor leaf encoding and its keyed digests (see anchor.h). */
#include "chain-anchor/anchor.h"

#include <string.h>

#include "chain-anchor/hash.h"
#include "common/err.h"

#define COMMIT_TAG "medshard/content/v1"
#define ANCHOR_NAME_MAX (255 + 1 + 1024) /* bucket "/" key */

static uint8_t *put_be(uint8_t *p, uint64_t v, int bytes)
{
  for (int i = bytes - 1; i >= 0; i--)
    *p++ = (uint8_t)(v >> (8 * i));
  return p;
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v = v << 8 | p[i];
  return v;
}

/* The structural rules both directions enforce. Whether k, m and unit are
 * a policy the codec supports is the writer's business (shard/); the chain
 * depends only on common/ and proto/ (DESIGN.md §2). */
static int check(const struct anchor_leaf *a)
{
  if (a->kind != ANCHOR_PUT && a->kind != ANCHOR_DELETE && a->kind != ANCHOR_MOVE)
    return MSD_EDECODE;
  if (a->kind == ANCHOR_DELETE)
    return a->nshards == 0 && a->k == 0 && a->m == 0 && a->unit == 0 ? 0 : MSD_EDECODE;
  if (a->k == 0 || a->nshards != a->k + a->m || a->nshards > ANCHOR_SHARDS_MAX ||
      a->unit == 0 || a->unit % 64 != 0)
    return MSD_EDECODE;
  return 0;
}

int anchor_encode(const struct anchor_leaf *a, uint8_t *buf, size_t cap, size_t *len)
{
  if (a == NULL || buf == NULL || len == NULL || check(a) != 0)
    return MSD_EPARAM;
  size_t need = 105 + 20u * a->nshards;
  if (cap < need)
    return MSD_ESHORT;
  uint8_t *p = buf;
  *p++ = ANCHOR_VERSION;
  *p++ = (uint8_t)a->kind;
  memcpy(p, a->object_id, ANCHOR_ID_BYTES), p += ANCHOR_ID_BYTES;
  memcpy(p, a->key_tag, ANCHOR_HASH), p += ANCHOR_HASH;
  p = put_be(p, a->version, 8);
  p = put_be(p, a->size, 8);
  memcpy(p, a->commitment, ANCHOR_HASH), p += ANCHOR_HASH;
  *p++ = a->k;
  *p++ = a->m;
  p = put_be(p, a->unit, 4);
  *p++ = a->nshards;
  for (int i = 0; i < a->nshards; i++) {
    p = put_be(p, a->shard[i].node_id, 4);
    memcpy(p, a->shard[i].digest, ANCHOR_DIGEST), p += ANCHOR_DIGEST;
  }
  *len = (size_t)(p - buf);
  return 0;
}

int anchor_decode(const uint8_t *buf, size_t len, struct anchor_leaf *out)
{
  if (buf == NULL || out == NULL)
    return MSD_EPARAM;
  if (len < 105)
    return MSD_EDECODE;
  if (buf[0] != ANCHOR_VERSION)
    return MSD_EVERSION;
  struct anchor_leaf a;
  memset(&a, 0, sizeof a);
  const uint8_t *p = buf + 1;
  a.kind = (enum anchor_kind)*p++;
  memcpy(a.object_id, p, ANCHOR_ID_BYTES), p += ANCHOR_ID_BYTES;
  memcpy(a.key_tag, p, ANCHOR_HASH), p += ANCHOR_HASH;
  a.version = get_be(p, 8), p += 8;
  a.size = get_be(p, 8), p += 8;
  memcpy(a.commitment, p, ANCHOR_HASH), p += ANCHOR_HASH;
  a.k = *p++;
  a.m = *p++;
  a.unit = (uint32_t)get_be(p, 4), p += 4;
  a.nshards = *p++;
  if (a.nshards > ANCHOR_SHARDS_MAX || len != 105 + 20u * a.nshards)
    return MSD_EDECODE; /* truncated, or trailing bytes */
  for (int i = 0; i < a.nshards; i++) {
    a.shard[i].node_id = (uint32_t)get_be(p, 4), p += 4;
    memcpy(a.shard[i].digest, p, ANCHOR_DIGEST), p += ANCHOR_DIGEST;
  }
  if (check(&a) != 0)
    return MSD_EDECODE;
  *out = a;
  return 0;
}

void anchor_commitment(const uint8_t salt[ANCHOR_HASH], const uint8_t file_sha256[ANCHOR_HASH],
                       uint8_t out[ANCHOR_HASH])
{
  uint8_t buf[sizeof COMMIT_TAG - 1 + 2 * ANCHOR_HASH];
  memcpy(buf, COMMIT_TAG, sizeof COMMIT_TAG - 1);
  memcpy(buf + sizeof COMMIT_TAG - 1, salt, ANCHOR_HASH);
  memcpy(buf + sizeof COMMIT_TAG - 1 + ANCHOR_HASH, file_sha256, ANCHOR_HASH);
  hash_sha256(buf, sizeof buf, NULL, 0, out);
}

/* bucket "/" key into name (ANCHOR_NAME_MAX + 1 bytes); its length, or 0
 * when a part is missing or over its limit. */
static size_t tag_name(const char *bucket, const char *key, uint8_t *name)
{
  if (bucket == NULL || key == NULL)
    return 0;
  size_t nb = strlen(bucket), nk = strlen(key);
  if (nb > 255 || nk > 1024)
    return 0; /* S3's limits are 63 and 1024 */
  memcpy(name, bucket, nb);
  name[nb] = '/';
  memcpy(name + nb + 1, key, nk);
  return nb + 1 + nk;
}

int anchor_key_tag_with(const struct hash_hmac *h, const char *bucket, const char *key,
                        uint8_t out[ANCHOR_HASH])
{
  uint8_t name[ANCHOR_NAME_MAX + 1];
  size_t len = tag_name(bucket, key, name);
  if (len == 0)
    return MSD_EPARAM;
  return hash_hmac(h, name, len, NULL, 0, out) == 0 ? 0 : MSD_EPARAM;
}

int anchor_key_tag(const uint8_t *secret, size_t secret_len, const char *bucket, const char *key,
                   uint8_t out[ANCHOR_HASH])
{
  struct hash_hmac h;
  if (secret == NULL || secret_len == 0 || hash_hmac_init(&h, secret, secret_len) != 0)
    return MSD_EPARAM;
  int rc = anchor_key_tag_with(&h, bucket, key, out);
  hash_hmac_free(&h);
  return rc;
}
