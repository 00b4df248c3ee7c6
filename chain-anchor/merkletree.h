/* The Merkle hash cache: a file of leaf hashes plus, in memory, the hash of
 * every complete perfect subtree, so the chain daemon serves RFC 6962 roots,
 * inclusion and consistency proofs in O(log n) hash reads instead of the
 * O(n) rehash that merkle.h's leaf-source functions do (docs/FORMATS.md,
 * "Merkle hash cache"). */
#ifndef MSD_CHAIN_MERKLETREE_H
#define MSD_CHAIN_MERKLETREE_H

#include <stdint.h>

#include "chain-anchor/merkle.h"

/* One open cache. Single writer: appends, truncates and syncs must not run
 * concurrently with each other or with reads; reads (size, root, proofs) may
 * run concurrently with one another. */
struct merkle_tree;

/* Opens the cache file at path, creating it (atomically, header only) if it
 * does not exist, and rebuilds the subtree hashes from its leaves. A torn
 * partial hash at the end of the file is cut off. *out is owned by the
 * caller until merkle_tree_close; path is not kept. 0, MSD_EPARAM,
 * MSD_ENOTSTORE (not a cache file), MSD_EVERSION, MSD_ELOCKED (open
 * elsewhere), -ENOMEM, -errno. */
int merkle_tree_open(const char *path, struct merkle_tree **out);

/* Flushes appended leaves (best effort: call merkle_tree_sync first to learn
 * of errors), closes the file and frees t. NULL is a no-op. */
void merkle_tree_close(struct merkle_tree *t);

/* Appends the leaf hash (copied) as leaf number merkle_tree_size(t). It
 * reaches the file in batches and is durable only after merkle_tree_sync.
 * On any error the tree is unchanged. 0, MSD_EPARAM (NULL, or the tree holds
 * 2^63 - 1 leaves), MSD_EPOISONED, -ENOMEM, -errno (the handle is then
 * poisoned). */
int merkle_tree_append(struct merkle_tree *t, const uint8_t leaf_hash[MERKLE_HASH]);

/* The number of leaves appended (durable or not); 0 for NULL. */
uint64_t merkle_tree_size(const struct merkle_tree *t);

/* Drops every leaf from `size` on, in memory and (durably) in the file, so
 * the caller can roll back to a size it recorded. 0, MSD_EPARAM,
 * MSD_ERANGE (size > merkle_tree_size), MSD_EPOISONED, -errno (poisoned). */
int merkle_tree_truncate(struct merkle_tree *t, uint64_t size);

/* Writes the pending leaves and fdatasyncs the file: every leaf appended so
 * far is durable on 0. A failure poisons the handle (no retry: STYLE.md).
 * 0, MSD_EPARAM, MSD_EPOISONED, -errno. */
int merkle_tree_sync(struct merkle_tree *t);

/* The tree head of the first `size` leaves (SHA-256("") for 0) into out.
 * 0, MSD_EPARAM, MSD_ERANGE (size > merkle_tree_size). */
int merkle_tree_root(const struct merkle_tree *t, uint64_t size, uint8_t out[MERKLE_HASH]);

/* The same audit path merkle_inclusion_proof gives for leaf `index` in the
 * tree of the first `size` leaves, into proof[0..*len) (room for
 * MERKLE_PROOF_MAX hashes, owned by the caller). 0, MSD_EPARAM, MSD_ERANGE
 * (index >= size or size > merkle_tree_size). */
int merkle_tree_inclusion(const struct merkle_tree *t, uint64_t index, uint64_t size,
                          uint8_t proof[][MERKLE_HASH], int *len);

/* The same proof merkle_consistency_proof gives that the tree of `size2`
 * leaves extends that of `size1`, into proof[0..*len) (room for
 * MERKLE_PROOF_MAX hashes). 0, MSD_EPARAM, MSD_ERANGE (size1 == 0,
 * size1 > size2 or size2 > merkle_tree_size). */
int merkle_tree_consistency(const struct merkle_tree *t, uint64_t size1, uint64_t size2,
                            uint8_t proof[][MERKLE_HASH], int *len);

#endif
