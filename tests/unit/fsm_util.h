/* Helpers for the chain FSM tests (test_fsm.c, test_fsm_raft.c): builders
 * for hand-made commands and batches, readers that decode what the FSM
 * returns, and a one-FSM test environment in a temporary directory. */
#ifndef MSD_TESTS_FSM_UTIL_H
#define MSD_TESTS_FSM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"
#include "chain-anchor/fsm.h"
#include "proto/medshard.pb-c.h"
#include "testutil.h"

#define K 2
#define M 1
#define NSHARDS (K + M)
#define NO_OUTCOME 1 /* outcome_code(): no outcome recorded */

/* One command and everything it points at: build it in place, never copy
 * it once built. Each builder fills c and returns &c->c; rid (16 bytes, or
 * NULL for none) is copied. */
struct cmd {
  Medshard__Command c;
  uint8_t rid[16];
  Medshard__ErasurePolicy pol;
  Medshard__Bucket bucket;
  Medshard__CreateBucket cb;
  Medshard__ShardLocation loc[NSHARDS], *locp[NSHARDS];
  Medshard__ShardMap sm;
  Medshard__Manifest man;
  Medshard__PutObject put;
  uint8_t oid[16], sha[32], salt[32], dig[NSHARDS][16];
  char bname[64], key[1100];
  Medshard__DeleteObject del;
  Medshard__UpdateShards upd;
  Medshard__NodeInfo ni;
  Medshard__NodeJoin join;
  uint8_t pk[BLOCK_PUBKEY_BYTES];
  Medshard__CutBlock cut;
  uint8_t prev[BLOCK_HASH], root[MERKLE_HASH];
  Medshard__Cosign cos;
  uint8_t sig[BLOCK_SIG_BYTES];
};

Medshard__Command *cmd_bucket(struct cmd *c, const uint8_t *rid, const char *name, uint32_t k,
                              uint32_t m);
/* A valid 2+1 PutObject with random object id, content hash, salt and
 * shard digests drawn from r. */
Medshard__Command *cmd_put(struct cmd *c, const uint8_t *rid, struct test_rng *r,
                           const char *bucket, const char *key, const uint32_t nodes[NSHARDS]);
Medshard__Command *cmd_delete(struct cmd *c, const uint8_t *rid, const char *bucket,
                              const char *key);
/* Moves shard `index` of object `oid` to `node`, claiming digest `dig`. */
Medshard__Command *cmd_move(struct cmd *c, const uint8_t *rid, const uint8_t oid[16],
                            uint32_t index, uint32_t node, const uint8_t dig[16]);
Medshard__Command *cmd_join(struct cmd *c, const uint8_t *rid, uint32_t id,
                            const uint8_t pk[BLOCK_PUBKEY_BYTES], bool voter);
/* Not reentrant: the NodeState lives in a static. */
Medshard__Command *cmd_state(struct cmd *c, const uint8_t *rid, uint32_t id,
                             Medshard__NodeStatus status);
Medshard__Command *cmd_cut(struct cmd *c, const uint8_t *rid, const struct block_header *h,
                           uint64_t term, uint64_t now);
Medshard__Command *cmd_cosign(struct cmd *c, const uint8_t *rid, uint64_t height, uint32_t node,
                              const uint8_t sig[BLOCK_SIG_BYTES]);
/* An encoded CommandBatch in malloc (raft == false) or raft_malloc memory. */
uint8_t *pack_batch(Medshard__Command **cs, size_t n, uint64_t ts, size_t *len, bool raft);

/* Decoded query results (NULL if absent); free with the protobuf-c
 * free_unpacked of their type. */
Medshard__Outcome *outcome_of(struct chain_fsm *f, const uint8_t rid[16]);
int outcome_code(struct chain_fsm *f, const uint8_t rid[16]); /* or NO_OUTCOME */
Medshard__Manifest *manifest_of(struct chain_fsm *f, const char *bucket, const char *key);
Medshard__Manifest *manifest_by_id(struct chain_fsm *f, const uint8_t id[16]);
Medshard__BlockRecord *block_of(struct chain_fsm *f, uint64_t height);

/* What the chain file holds, walked record by record. */
struct scan {
  uint64_t leaves, blocks, kind[4], bad;
  struct anchor_leaf last;
};
void scan_chain(struct chain_fsm *f, struct scan *s);

void digest_of(struct chain_fsm *f, uint8_t out[32]);
bool same_head(const struct chain_head *a, const struct chain_head *b);
/* Opens an FSM in dir with the test cluster secret and a small map. */
int fsm_open_dir(const char *dir, struct chain_fsm **f);

/* One FSM applied to directly, at increasing Raft indexes. */
struct env {
  char dir[4096];
  struct chain_fsm *f;
  uint64_t index, now;
  uint8_t pk[3][BLOCK_PUBKEY_BYTES], sk[3][BLOCK_SECKEY_BYTES];
  uint32_t nodes[NSHARDS];
  struct test_rng rng;
};

/* A fresh FSM in a temporary directory with three key pairs; with
 * `cluster`, three voters joined and bucket "scans" (2+1) created at
 * index 1. */
void env_setup(struct env *e, uint64_t salt, bool cluster);
void env_close(struct env *e);
/* Applies the commands as one batch at the next index. */
int env_apply(struct env *e, Medshard__Command **cs, size_t n);
void env_apply1(struct env *e, Medshard__Command *c);
void new_rid(struct env *e, uint8_t rid[16]);
/* Puts scans/key; the outcome code; fills oid (may be NULL). */
int env_put(struct env *e, const char *key, uint8_t oid[16]);
Medshard__Command *put_cmd_for(struct cmd *c, const uint8_t rid[16], struct env *e,
                               const char *key);
/* Cuts the next block from the FSM's own view; the outcome code. */
int env_cut(struct env *e);
/* Node `who` (0-based) cosigns block `height` with its real key. */
int env_cosign(struct env *e, unsigned who, uint64_t height);

/* The raft suites (test_fsm_raft.c). */
extern const struct test_case fsm_raft_tests[];

#endif
