/* Blocks: checkpoints of the Merkle log, hash-chained and cosigned by the
 * nodes with Ed25519 (docs/FORMATS.md, "Block header"). */
#ifndef MSD_CHAIN_BLOCK_H
#define MSD_CHAIN_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOCK_VERSION 1
#define BLOCK_HASH 32
#define BLOCK_HEADER_BYTES 121 /* 1 + 8 + 32 + 8 + 8 + 32 + 4 x 8 */
#define BLOCK_SIG_BYTES 64
#define BLOCK_PUBKEY_BYTES 32
#define BLOCK_SECKEY_BYTES 64

struct block_header {
  uint64_t height;
  uint8_t prev_hash[BLOCK_HASH]; /* zeros for the genesis block */
  uint64_t size_before, size_after; /* Merkle tree sizes */
  uint8_t root[BLOCK_HASH];         /* tree head at size_after */
  uint64_t raft_term, raft_index;
  uint64_t timestamp_ms;            /* chosen by the leader, so all nodes agree */
  uint64_t epoch;                   /* cluster map epoch */
};

/* Canonical bytes: version then fixed-width big-endian fields. */
void block_encode(const struct block_header *h, uint8_t out[BLOCK_HEADER_BYTES]);
/* 0, MSD_EVERSION, or MSD_EDECODE (wrong length, size_after < size_before). */
int block_decode(const uint8_t *buf, size_t len, struct block_header *h);

/* SHA-256("medshard/block/v1" || header bytes exactly as encoded). */
void block_hash(const struct block_header *h, uint8_t out[BLOCK_HASH]);

/* A node's Ed25519 key pair (libsodium). 0 or -ENOMEM if libsodium cannot
 * initialise. */
int block_keypair(uint8_t pk[BLOCK_PUBKEY_BYTES], uint8_t sk[BLOCK_SECKEY_BYTES]);

/* Cosignature: Ed25519 over the block hash. */
void block_cosign(const uint8_t hash[BLOCK_HASH], const uint8_t sk[BLOCK_SECKEY_BYTES],
                  uint8_t sig[BLOCK_SIG_BYTES]);
bool block_cosig_valid(const uint8_t hash[BLOCK_HASH], const uint8_t pk[BLOCK_PUBKEY_BYTES],
                       const uint8_t sig[BLOCK_SIG_BYTES]);

#endif
