/* The transparency-log Merkle tree of RFC 6962 / RFC 9162: leaf and node
 * hashing, the compact range the chain FSM keeps (O(log n) hashes), and
 * inclusion and consistency proofs with their verifiers. SHA-256 throughout. */
#ifndef MSD_CHAIN_MERKLE_H
#define MSD_CHAIN_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH 32
#define MERKLE_PROOF_MAX 64 /* hashes in any proof for a tree of < 2^63 leaves */

/* SHA-256(0x00 || data): the hash of one leaf. */
void merkle_leaf_hash(const void *data, size_t len, uint8_t out[MERKLE_HASH]);

/* SHA-256(0x01 || left || right): the hash of an interior node. */
void merkle_node_hash(const uint8_t left[MERKLE_HASH], const uint8_t right[MERKLE_HASH],
                      uint8_t out[MERKLE_HASH]);

/* The compact range of a tree of `size` leaves: the roots of the perfect
 * subtrees that cover [0, size), largest (leftmost) first, one per set bit
 * of size. Appending is O(log n) and keeps nothing else. */
struct merkle_compact {
  uint64_t size;
  int count;
  uint8_t hash[MERKLE_PROOF_MAX][MERKLE_HASH];
};

void merkle_compact_init(struct merkle_compact *c);
/* Appends one leaf (its leaf hash). MSD_EPARAM once the tree is full. */
int merkle_compact_append(struct merkle_compact *c, const uint8_t leaf_hash[MERKLE_HASH]);
/* The tree head: right-fold of the subtree roots; SHA-256("") when empty. */
void merkle_compact_root(const struct merkle_compact *c, uint8_t out[MERKLE_HASH]);

/* Where proof generation reads leaf hashes from (the chain file, an array):
 * get() fills the hash of leaf i and returns 0, or an error code. */
struct merkle_source {
  int (*get)(void *ctx, uint64_t index, uint8_t out[MERKLE_HASH]);
  void *ctx;
  /* Optional: MTH(D[begin:end)) for begin < end, when the source can do
   * better than hashing up from the leaves (merkletree.h keeps every
   * subtree). NULL: computed from `get`. */
  int (*range)(void *ctx, uint64_t begin, uint64_t end, uint8_t out[MERKLE_HASH]);
};

/* MTH(D[begin:end)) of RFC 6962, from the source. O(end - begin) hashes. */
int merkle_range_root(const struct merkle_source *src, uint64_t begin, uint64_t end,
                      uint8_t out[MERKLE_HASH]);

/* The audit path of leaf `index` in the tree of the first `size` leaves,
 * leaf to root, into proof[0..*len). MSD_ERANGE if index >= size. */
int merkle_inclusion_proof(const struct merkle_source *src, uint64_t index, uint64_t size,
                           uint8_t proof[][MERKLE_HASH], int *len);

/* The proof that the tree of `size2` leaves extends that of `size1`
 * (0 < size1 <= size2). MSD_ERANGE otherwise. */
int merkle_consistency_proof(const struct merkle_source *src, uint64_t size1, uint64_t size2,
                             uint8_t proof[][MERKLE_HASH], int *len);

/* True if the proof shows leaf_hash at `index` in the tree of `size`
 * leaves whose head is `root`. */
bool merkle_verify_inclusion(uint64_t index, uint64_t size, const uint8_t leaf_hash[MERKLE_HASH],
                             const uint8_t proof[][MERKLE_HASH], int len,
                             const uint8_t root[MERKLE_HASH]);

/* True if the proof shows the tree (size2, root2) extends (size1, root1).
 * Equal sizes need equal roots and an empty proof; size1 0 needs an empty
 * proof. */
bool merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[MERKLE_HASH],
                               const uint8_t root2[MERKLE_HASH],
                               const uint8_t proof[][MERKLE_HASH], int len);

#endif
