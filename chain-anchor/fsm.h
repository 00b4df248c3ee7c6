/* The side-chain's deterministic state machine: every node applies the same
 * committed Raft entries (batches of commands) in the same order into its
 * LMDB metadata (buckets, manifests, cluster map, block records), its chain
 * file and its Merkle hash cache. Queries read the local state (follower
 * reads). Not thread-safe: one thread owns a chain_fsm. */
#ifndef MSD_CHAIN_FSM_H
#define MSD_CHAIN_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain-anchor/block.h"
#include "chain-anchor/merkle.h"

struct chain_fsm;

struct chain_fsm_config {
  const char *dir;        /* state directory; created if missing */
  const uint8_t *secret;  /* cluster secret for key tags (HMAC key) */
  size_t secret_len;
  uint64_t map_bytes;     /* LMDB map size; 0 = 16 GiB (sparse) */
};

/* Opens the state in cfg->dir, rolling the chain file and hash cache back
 * to what the last committed LMDB transaction recorded. *out is owned by the
 * caller (chain_fsm_close). 0, MSD_ECORRUPT (state inconsistent beyond
 * rollback: wipe the directory and let Raft restore it), -errno. */
int chain_fsm_open(const struct chain_fsm_config *cfg, struct chain_fsm **out);
void chain_fsm_close(struct chain_fsm *f);

/* Applies the committed entry at Raft `index` (an encoded CommandBatch) in
 * one LMDB transaction. Entries at or below the applied index are skipped
 * (the log is replayed after a restart). A malformed entry is logged and
 * counted as applied: a committed entry never fails. Non-zero only for an
 * I/O failure, after which the FSM is poisoned and refuses everything. */
int chain_fsm_apply(struct chain_fsm *f, uint64_t index, const uint8_t *buf, size_t len);

/* Where the chain stands on this node. */
struct chain_head {
  uint64_t applied;             /* Raft index */
  uint64_t leaves;              /* Merkle tree size */
  uint64_t height;              /* last block */
  uint64_t last_size;           /* its size_after */
  uint64_t sealed;              /* every block <= sealed has a voter majority */
  uint64_t epoch;               /* cluster map epoch */
  uint32_t voters;              /* voters in the cluster map */
  uint8_t head[BLOCK_HASH];     /* hash of the last block (zeros before one) */
  uint8_t root[MERKLE_HASH];    /* tree head over all leaves */
  char alarm[160];              /* non-empty after divergence: writes halt */
};
void chain_fsm_head(const struct chain_fsm *f, struct chain_head *out);

/* The header of the next block if cut now (at every leaf applied so far);
 * MSD_ESTATE when there is nothing to cut. For the leader's CutBlock. */
int chain_fsm_next_block(const struct chain_fsm *f, struct block_header *h);

/* Unsealed blocks that node `node_id` has not cosigned, lowest first: up to
 * `cap` heights with their hashes. Returns how many (0 on error). Derived
 * from the state, so a node that restarts still cosigns what it missed. */
size_t chain_fsm_unsigned(const struct chain_fsm *f, uint32_t node_id, uint64_t *heights,
                          uint8_t (*hashes)[BLOCK_HASH], size_t cap);

/* Queries. Each returns the encoded protobuf message in *buf (msd_malloc'ed;
 * the caller frees with msd_free) and *len; MSD_ENOTFOUND if absent. */
int chain_fsm_outcome(const struct chain_fsm *f, const uint8_t *request_id, size_t id_len,
                      uint8_t **buf, size_t *len);                       /* Outcome */
int chain_fsm_manifest(const struct chain_fsm *f, const char *bucket, const char *key,
                       uint8_t **buf, size_t *len);                      /* Manifest */
int chain_fsm_manifest_by_id(const struct chain_fsm *f, const uint8_t id[16], uint8_t **buf,
                             size_t *len);                               /* Manifest */
int chain_fsm_bucket(const struct chain_fsm *f, const char *name, uint8_t **buf,
                     size_t *len);                                       /* Bucket */
int chain_fsm_block(const struct chain_fsm *f, uint64_t height, uint8_t **buf,
                    size_t *len);                                        /* BlockRecord */
int chain_fsm_node(const struct chain_fsm *f, uint32_t node_id, uint8_t **buf,
                   size_t *len);                                         /* NodeInfo */
/* Every node of the cluster map as encoded NodeInfo messages, concatenated
 * with a 4-byte big-endian length before each. */
int chain_fsm_nodes(const struct chain_fsm *f, uint8_t **buf, size_t *len);
/* Listing (CTL_OP_LIST). Most manifests in one call, and most names one
 * call examines (deleted ones included): the node answers on its control
 * loop, so a page must stay cheap however many tombstones a bucket holds. */
#define CHAIN_LIST_MAX 1000
#define CHAIN_LIST_SCAN_MAX 10000
/* One page of bucket's objects whose keys start with `prefix` (NULL or ""
 * for all) and come after `start_after` (NULL or "": from the first), in
 * the names table's order: byte order of the keys, except that keys too
 * long to be stored whole (fsm__name_key) and sharing their first
 * 478 - len(bucket) bytes come in a fixed order of their hashes. Deleted
 * objects are skipped. Returns up to `limit` (0 = CHAIN_LIST_MAX, capped at
 * it) encoded Manifests in *buf, each preceded by its length (4 bytes,
 * big-endian), at most max_bytes in all; *buf is msd_malloc'ed, the caller
 * frees it. *truncated says more names may follow: resume with the last
 * manifest's key as start_after. A page that the scan limit cut short in a
 * run of names it did not list ends with a marker: a Manifest with only
 * format_version, bucket, key and deleted = true, naming where to resume,
 * never to be shown as an object. 0; MSD_ENOTFOUND (no such bucket);
 * MSD_EPARAM (bucket, prefix or start_after out of range); MSD_ESHORT (one
 * manifest alone exceeds max_bytes). */
int chain_fsm_list(const struct chain_fsm *f, const char *bucket, const char *prefix,
                   const char *start_after, uint32_t limit, size_t max_bytes, uint8_t **buf,
                   size_t *len, bool *truncated);
/* The offline proof bundle for leaf `index` against the first block that
 * covers it (ProofBundle). MSD_ENOTFOUND until such a block is cut. */
int chain_fsm_proof(const struct chain_fsm *f, uint64_t index, uint8_t **buf, size_t *len);

/* Raw chain file bytes [off, off + cap) for remote verification. */
int chain_fsm_chain_bytes(const struct chain_fsm *f, uint64_t off, uint8_t *buf, size_t cap,
                          size_t *len);

/* SHA-256 over every LMDB record (tables in a fixed order, keys sorted),
 * the chain file and the tree root: equal on nodes with equal state. */
int chain_fsm_digest(const struct chain_fsm *f, uint8_t out[32]);

/* Raft snapshot: the LMDB metadata and the chain file in one versioned
 * buffer (docs/FORMATS.md "FSM snapshot"), msd_malloc'ed, caller frees.
 * Makes the state durable first, so Raft may then drop the log before it. */
int chain_fsm_snapshot(struct chain_fsm *f, uint8_t **buf, size_t *len);
/* Replaces the state with a snapshot's after verifying its chain file from
 * genesis; a snapshot no newer than the local state is ignored. 0,
 * MSD_EDECODE, MSD_EVERSION, MSD_ECORRUPT (state unchanged), -errno. */
int chain_fsm_restore(struct chain_fsm *f, const uint8_t *buf, size_t len);

/* Path of the chain file (for chain_verify). */
const char *chain_fsm_chain_path(const struct chain_fsm *f);

#endif
