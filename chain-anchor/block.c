/* Block headers, their hash, and Ed25519 cosignatures (see block.h). */
#include "chain-anchor/block.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "chain-anchor/hash.h"
#include "common/err.h"

#define BLOCK_TAG "medshard/block/v1"

static uint8_t *put64(uint8_t *p, uint64_t v)
{
  for (int i = 7; i >= 0; i--)
    *p++ = (uint8_t)(v >> (8 * i));
  return p;
}

static uint64_t get64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

void block_encode(const struct block_header *h, uint8_t out[BLOCK_HEADER_BYTES])
{
  uint8_t *p = out;
  *p++ = BLOCK_VERSION;
  p = put64(p, h->height);
  memcpy(p, h->prev_hash, BLOCK_HASH), p += BLOCK_HASH;
  p = put64(p, h->size_before);
  p = put64(p, h->size_after);
  memcpy(p, h->root, BLOCK_HASH), p += BLOCK_HASH;
  p = put64(p, h->raft_term);
  p = put64(p, h->raft_index);
  p = put64(p, h->timestamp_ms);
  put64(p, h->epoch);
}

int block_decode(const uint8_t *buf, size_t len, struct block_header *out)
{
  if (buf == NULL || out == NULL)
    return MSD_EPARAM;
  if (len >= 1 && buf[0] != BLOCK_VERSION)
    return MSD_EVERSION;
  if (len != BLOCK_HEADER_BYTES)
    return MSD_EDECODE;
  struct block_header h;
  const uint8_t *p = buf + 1;
  h.height = get64(p), p += 8;
  memcpy(h.prev_hash, p, BLOCK_HASH), p += BLOCK_HASH;
  h.size_before = get64(p), p += 8;
  h.size_after = get64(p), p += 8;
  memcpy(h.root, p, BLOCK_HASH), p += BLOCK_HASH;
  h.raft_term = get64(p), p += 8;
  h.raft_index = get64(p), p += 8;
  h.timestamp_ms = get64(p), p += 8;
  h.epoch = get64(p);
  if (h.size_after < h.size_before)
    return MSD_EDECODE;
  *out = h;
  return 0;
}

void block_hash(const struct block_header *h, uint8_t out[BLOCK_HASH])
{
  uint8_t buf[sizeof BLOCK_TAG - 1 + BLOCK_HEADER_BYTES];
  memcpy(buf, BLOCK_TAG, sizeof BLOCK_TAG - 1);
  block_encode(h, buf + sizeof BLOCK_TAG - 1);
  hash_sha256(buf, sizeof buf, NULL, 0, out);
}

int block_keypair(uint8_t pk[BLOCK_PUBKEY_BYTES], uint8_t sk[BLOCK_SECKEY_BYTES])
{
  if (sodium_init() < 0)
    return -ENOMEM; /* UNTESTED: libsodium fails only without entropy */
  crypto_sign_keypair(pk, sk);
  return 0;
}

void block_cosign(const uint8_t hash[BLOCK_HASH], const uint8_t sk[BLOCK_SECKEY_BYTES],
                  uint8_t sig[BLOCK_SIG_BYTES])
{
  crypto_sign_detached(sig, NULL, hash, BLOCK_HASH, sk);
}

bool block_cosig_valid(const uint8_t hash[BLOCK_HASH], const uint8_t pk[BLOCK_PUBKEY_BYTES],
                       const uint8_t sig[BLOCK_SIG_BYTES])
{
  return crypto_sign_verify_detached(sig, hash, BLOCK_HASH, pk) == 0;
}
