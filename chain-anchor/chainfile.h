/* The chain file: an append-only file of anchor leaves and block headers, in
 * the order the FSM applied them, and its verifier, which re-walks it from
 * genesis and detects a change to any byte (docs/FORMATS.md, "Chain file"). */
#ifndef MSD_CHAIN_CHAINFILE_H
#define MSD_CHAIN_CHAINFILE_H

#include <stdbool.h>
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

/* Appends records; they are durable after chain_file_sync. *off (may be
 * NULL) receives the record's byte offset, for chain_read_record. */
int chain_append_leaf(struct chain_file *cf, const uint8_t *leaf, size_t len, uint64_t *off);
int chain_append_block(struct chain_file *cf, const struct block_header *h, uint64_t *off);
int chain_file_sync(struct chain_file *cf);

/* With buffering on, appends collect in memory (up to 1 MiB) and reach the
 * file at chain_file_flush, chain_file_sync, or when the buffer fills: one
 * write per Raft entry instead of one per leaf. Reads and sizes include
 * buffered records; chain_file_truncate can drop them. Off by default. */
void chain_file_buffer(struct chain_file *cf, bool on);
int chain_file_flush(struct chain_file *cf);

/* Bytes in the file (header included): where the next record will go. */
uint64_t chain_file_size(const struct chain_file *cf);

/* Cuts the file back to `size` bytes, a record boundary the caller recorded
 * (the FSM rolls back records of a transaction that never committed). */
int chain_file_truncate(struct chain_file *cf, uint64_t size);

#define CHAIN_REC_LEAF 1
#define CHAIN_REC_BLOCK 2
#define CHAIN_PAYLOAD_MAX 4096

/* Reads the record at `off` into buf (cap >= its payload): *kind and *len.
 * MSD_ECORRUPT if its checksum fails, MSD_ESHORT if cap is too small. */
int chain_read_record(const struct chain_file *cf, uint64_t off, uint8_t *kind, uint8_t *buf,
                      size_t cap, size_t *len);

/* Raw bytes [off, off + cap) of the file, clipped at its end (*len). */
int chain_file_read(const struct chain_file *cf, uint64_t off, uint8_t *buf, size_t cap,
                    size_t *len);

/* Calls fn for every record of the file at path in order; stops at the
 * first non-zero return (passed back) or bad record (MSD_ECORRUPT), or
 * MSD_ENOTSTORE for a file that is not a chain file. *stop (may be NULL)
 * receives the offset of the record it stopped at, or the file size. */
int chain_file_scan(const char *path,
                    int (*fn)(void *ctx, uint8_t kind, const uint8_t *payload, size_t len,
                              uint64_t off),
                    void *ctx, uint64_t *stop);

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
 * root (a block may close the tree at a size below the leaves already
 * written before it: leaves committed while the leader cut it). 0 if the whole chain holds; MSD_ECORRUPT with the report's
 * bad_block, bad_offset and reason otherwise. */
int chain_verify(const char *path, struct chain_verify_report *rep);

#endif
