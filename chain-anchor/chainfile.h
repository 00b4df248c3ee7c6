/* The chain file: an append-only file of anchor leaves and block headers, in
 * the order the FSM applied them, and its verifier, which re-walks it from
 * genesis and detects a change to any byte (docs/FORMATS.md, "Chain file"). */
#ifndef MSD_CHAIN_CHAINFILE_H
#define MSD_CHAIN_CHAINFILE_H

#include <stddef.h>
#include <stdint.h>

#include "chain-anchor/block.h"
#include "chain-anchor/merkle.h"

struct chain_file;

/* Opens (or creates, with create != 0) the chain file at path for appending.
 * *out is owned by the caller (chain_file_close). 0, MSD_ENOTSTORE (not a
 * chain file), MSD_EVERSION, -errno. */
int chain_file_open(const char *path, int create, struct chain_file **out);
void chain_file_close(struct chain_file *cf);

/* Appends records; they are durable after chain_file_sync. */
int chain_append_leaf(struct chain_file *cf, const uint8_t *leaf, size_t len);
int chain_append_block(struct chain_file *cf, const struct block_header *h);
int chain_file_sync(struct chain_file *cf);

struct chain_verify_report {
  uint64_t leaves, blocks;
  uint8_t head[BLOCK_HASH];     /* hash of the last block */
  uint8_t root[MERKLE_HASH];    /* tree head over all leaves */
  /* On failure: */
  uint64_t bad_offset;          /* byte offset of the offending record */
  uint64_t bad_block;           /* height of the block that fails (or would cover it) */
  char reason[160];
};

/* Re-walks the file from genesis: every record's checksum, every leaf into
 * the Merkle tree, and for each block its height, previous hash, sizes and
 * root. 0 if the whole chain holds; MSD_ECORRUPT with the report's
 * bad_block, bad_offset and reason otherwise. */
int chain_verify(const char *path, struct chain_verify_report *rep);

#endif
