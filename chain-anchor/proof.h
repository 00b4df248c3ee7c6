/* Offline verification of an anchor's proof bundle: the leaf, its RFC 6962
 * inclusion path, the block header that covers it and the block's
 * cosignatures, checked against nothing but a file of trusted node keys
 * (docs/FORMATS.md, "Trusted keys file" and "Proof bundle"). No I/O, no
 * cluster access: an auditor can run it anywhere. */
#ifndef MSD_CHAIN_PROOF_H
#define MSD_CHAIN_PROOF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"

/* One trusted node key. Only voters' cosignatures count towards a seal. */
struct chain_key {
  uint32_t node_id;
  bool voter;
  uint8_t pk[BLOCK_PUBKEY_BYTES];
};

/* Parses a NUL-terminated trusted keys file into keys[0..*n) (room for
 * `cap`, owned by the caller; text is only read). The first line must be
 * "medshard-keys 1"; then one "node <id> voter|standby <64 hex digits>" per
 * line, with blank lines and '#' comment lines anywhere after the first.
 * Node ids and keys must be unique. 0; MSD_EVERSION (another version);
 * MSD_EDECODE (a line that is none of these, with err naming the line and
 * what is wrong: err may be NULL); MSD_ESHORT (more than cap keys);
 * MSD_EPARAM. */
int chain_keys_parse(const char *text, struct chain_key *keys, size_t cap, size_t *n, char *err,
                     size_t err_cap);

/* Writes the keys as a file chain_keys_parse reads back (NUL-terminated,
 * *len excludes the NUL) into out (cap bytes, the caller's). 0, MSD_ESHORT
 * (out too small; nothing useful written), MSD_EPARAM. */
int chain_keys_format(const struct chain_key *keys, size_t n, char *out, size_t cap, size_t *len);

/* What chain_proof_verify found; filled as far as it got. */
struct chain_proof_report {
  uint64_t leaf_index, height, tree_size; /* tree_size: the block's size_after */
  uint32_t valid_cosigs, voters;          /* distinct trusted voter keys */
  struct anchor_leaf leaf;
  char reason[160];                       /* a sentence, on failure */
};

/* Verifies an encoded ProofBundle (format_version 1) against the trusted
 * keys: the leaf decodes, the path leads from its leaf hash at leaf_index to
 * the root in the block header at the header's size_after, and more than
 * half of the distinct trusted voter keys cosigned the block's hash. Both
 * inputs are borrowed for the call only. 0; MSD_EDECODE or MSD_EVERSION
 * (malformed bundle, leaf or header); MSD_ECORRUPT (the path does not lead
 * to the header's root); MSD_EBADSIG (too few valid voter cosignatures);
 * MSD_EPARAM. rep->reason says which, in words. */
int chain_proof_verify(const uint8_t *bundle, size_t len, const struct chain_key *keys,
                       size_t nkeys, struct chain_proof_report *rep);

#endif
