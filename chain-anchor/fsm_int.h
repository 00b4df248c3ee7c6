/* Internals shared by the FSM's files: the handle, its LMDB tables and the
 * small LMDB helpers every command handler uses. */
#ifndef MSD_CHAIN_FSM_INT_H
#define MSD_CHAIN_FSM_INT_H

#include <limits.h>
#include <lmdb.h>

#include "chain-anchor/chainfile.h"
#include "chain-anchor/fsm.h"
#include "chain-anchor/hash.h"
#include "chain-anchor/merkletree.h"
#include "proto/medshard.pb-c.h"

/* LMDB tables, in the fixed order chain_fsm_digest walks them. */
enum fsm_table {
  T_META,        /* "meta" -> ChainMeta */
  T_BUCKETS,     /* name -> Bucket */
  T_NAMES,       /* bucket \0 key -> object id (16) | version (8) | deleted (1) */
  T_OBJECTS,     /* object id -> Manifest */
  T_NODES,       /* node id (4, BE) -> NodeInfo */
  T_REQUESTS,    /* request id -> Outcome */
  T_BLOCKS,      /* height (8, BE) -> BlockRecord */
  T_LEAVES,      /* leaf index (8, BE) -> chain file offset (8, BE) */
  T_NODE_SHARDS, /* node id (4) | object id (16) | shard index (1) -> "" */
  T_ENTRIES,     /* Raft index (8, BE) -> XXH3-128 of the entry (16), recent ones */
  T_COUNT
};

struct chain_fsm {
  MDB_env *env;
  MDB_dbi dbi[T_COUNT];
  struct chain_file *cf;
  struct merkle_tree *tree;
  char dir[PATH_MAX - 64];
  char chain_path[PATH_MAX];
  uint8_t secret[64];
  size_t secret_len;
  struct hash_hmac tag_key; /* the secret, ready for name tags */
  uint64_t map_bytes;
  Medshard__ChainMeta *meta; /* committed meta, decoded (owned) */
  int poisoned;              /* a failed commit or write: refuse everything */
};

/* One apply in progress: the transaction and the working meta. */
struct fsm_txn {
  struct chain_fsm *f;
  MDB_txn *txn;
  Medshard__ChainMeta meta;  /* working copy; bytes fields point at head */
  uint8_t head[BLOCK_HASH];
  char alarm[160];
  uint64_t index;            /* Raft index being applied */
  uint64_t now_ms;           /* leader's timestamp of the batch */
  /* Lookups a run of PutObjects repeats; any other command clears them
   * (apply_command), so they never outlive a change to nodes or buckets. */
  uint32_t known_nodes[16];
  unsigned nknown;
  char policy_bucket[256];   /* "" or the bucket whose policy follows */
  uint32_t policy_k, policy_m;
};

/* Big-endian helpers for table keys. */
void fsm__be(uint8_t *p, uint64_t v, int bytes);
uint64_t fsm__get_be(const uint8_t *p, int bytes);

/* get/put of raw values in table t; get returns MSD_ENOTFOUND if absent. */
int fsm__get(MDB_txn *txn, const struct chain_fsm *f, enum fsm_table t, const void *key,
             size_t klen, MDB_val *val);
int fsm__put(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen, const void *val,
             size_t vlen);
/* fsm__put of a key above every key in the table (LMDB's fast append). */
int fsm__append(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen,
                const void *val, size_t vlen);
int fsm__del(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen);
/* Packs a protobuf message and puts it. */
int fsm__put_msg(struct fsm_txn *x, enum fsm_table t, const void *key, size_t klen,
                 const ProtobufCMessage *msg);
/* Voters in the cluster map as txn sees it. */
uint32_t fsm__count_voters(MDB_txn *txn, const struct chain_fsm *f);
/* Copies a value out into a msd_malloc'ed buffer. */
int fsm__copy_out(const MDB_val *v, uint8_t **buf, size_t *len);

/* The names table key of bucket/key (bucket 1-63 bytes, key 1-1024), into
 * out; its length, or 0 if either name is out of range. LMDB keys are at
 * most 511 bytes, so bucket \0 key is used as is only below that length; a
 * longer name becomes bucket \0 <its first bytes> <SHA-256 of the key>,
 * exactly FSM_NAME_KEY_MAX bytes, so the two forms never collide. */
#define FSM_NAME_KEY_MAX 511
size_t fsm__name_key(const char *bucket, const char *key, uint8_t out[FSM_NAME_KEY_MAX]);

/* Appends an anchor leaf to the chain file and tree and records its offset;
 * *index receives its leaf index and hash fills the RFC 6962 leaf hash. */
int fsm__append_leaf(struct fsm_txn *x, const uint8_t *leaf, size_t len, uint64_t *index,
                     uint8_t hash[MERKLE_HASH]);

/* Applies one command; fills the outcome (code, message, anchor...).
 * Returns non-zero only for I/O failures. */
int fsm__command(struct fsm_txn *x, const Medshard__Command *cmd, Medshard__Outcome *out,
                 uint8_t leaf_hash[MERKLE_HASH], char *msg, size_t msg_cap);

/* Opens LMDB + chain file + tree in f->dir (used by open and restore). */
int fsm__open_state(struct chain_fsm *f);
void fsm__close_state(struct chain_fsm *f);

#endif
