/* The offline proof verifier and the trusted keys file (proof.h). It trusts
 * nothing in the bundle but what the keys vouch for: the bundle's leaf,
 * path and header are only evidence, checked by hashing. */
#include "chain-anchor/proof.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain-anchor/merkle.h"
#include "common/alloc.h"
#include "common/err.h"
#include "proto/medshard.pb-c.h"

#define KEYS_MAGIC "medshard-keys"
#define KEYS_VERSION 1
#define KEYS_TOKENS 5 /* node <id> <role> <hex> plus one to catch extras */

__attribute__((format(printf, 4, 5))) static int keys_error(int rc, char *err, size_t err_cap,
                                                            const char *fmt, ...)
{
  if (err != NULL && err_cap > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_cap, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* Splits line [p, end) into blank-separated tokens, stopping at a '#'
 * that starts a token (a trailing comment). Returns the count (at most
 * KEYS_TOKENS; more tokens count as KEYS_TOKENS). */
static int tokenize(const char *p, const char *end, const char *tok[], size_t tlen[])
{
  int n = 0;
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t'))
      p++;
    if (p == end || *p == '#' || n == KEYS_TOKENS)
      return n;
    tok[n] = p;
    while (p < end && *p != ' ' && *p != '\t')
      p++;
    tlen[n] = (size_t)(p - tok[n]);
    n++;
  }
}

static bool token_is(const char *tok, size_t len, const char *word)
{
  return len == strlen(word) && memcmp(tok, word, len) == 0;
}

static int hex_nibble(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* A decimal node id 1..2^32-1, digits only. */
static bool parse_id(const char *tok, size_t len, uint32_t *id)
{
  uint64_t v = 0;
  if (len == 0 || len > 10)
    return false;
  for (size_t i = 0; i < len; i++) {
    if (tok[i] < '0' || tok[i] > '9')
      return false;
    v = v * 10 + (uint64_t)(tok[i] - '0');
  }
  if (v == 0 || v > UINT32_MAX)
    return false;
  *id = (uint32_t)v;
  return true;
}

static bool parse_key(const char *tok, size_t len, uint8_t pk[BLOCK_PUBKEY_BYTES])
{
  if (len != 2 * BLOCK_PUBKEY_BYTES)
    return false;
  for (size_t i = 0; i < BLOCK_PUBKEY_BYTES; i++) {
    int hi = hex_nibble(tok[2 * i]), lo = hex_nibble(tok[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    pk[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

static int parse_header(const char *p, const char *end, char *err, size_t err_cap)
{
  const char *tok[KEYS_TOKENS];
  size_t tlen[KEYS_TOKENS];
  int n = tokenize(p, end, tok, tlen);
  if (n < 1 || !token_is(tok[0], tlen[0], KEYS_MAGIC))
    return keys_error(MSD_EDECODE, err, err_cap,
                      "line 1: not a trusted keys file (it must start with \"" KEYS_MAGIC
                      " %d\")", KEYS_VERSION);
  if (n != 2 || !token_is(tok[1], tlen[1], "1"))
    return keys_error(MSD_EVERSION, err, err_cap,
                      "line 1: unsupported keys file version \"%.*s\"; this build reads \""
                      KEYS_MAGIC " %d\"", n >= 2 ? (int)tlen[1] : 0, n >= 2 ? tok[1] : "",
                      KEYS_VERSION);
  return 0;
}

/* One "node <id> voter|standby <hex>" line into *k. */
static int parse_node(const char *p, const char *end, size_t line, struct chain_key *k, char *err,
                      size_t err_cap)
{
  const char *tok[KEYS_TOKENS];
  size_t tlen[KEYS_TOKENS];
  int n = tokenize(p, end, tok, tlen);
  if (n != 4 || !token_is(tok[0], tlen[0], "node"))
    return keys_error(MSD_EDECODE, err, err_cap,
                      "line %zu: expected \"node <id> voter|standby <64 hex digits>\"", line);
  if (!parse_id(tok[1], tlen[1], &k->node_id))
    return keys_error(MSD_EDECODE, err, err_cap,
                      "line %zu: node id \"%.*s\" is not a number from 1 to 4294967295", line,
                      (int)tlen[1], tok[1]);
  if (token_is(tok[2], tlen[2], "voter"))
    k->voter = true;
  else if (token_is(tok[2], tlen[2], "standby"))
    k->voter = false;
  else
    return keys_error(MSD_EDECODE, err, err_cap,
                      "line %zu: role \"%.*s\" of node %" PRIu32 " must be voter or standby",
                      line, (int)tlen[2], tok[2], k->node_id);
  if (!parse_key(tok[3], tlen[3], k->pk))
    return keys_error(MSD_EDECODE, err, err_cap,
                      "line %zu: the key of node %" PRIu32 " must be 64 hex digits (an Ed25519"
                      " public key)", line, k->node_id);
  return 0;
}

int chain_keys_parse(const char *text, struct chain_key *keys, size_t cap, size_t *n, char *err,
                     size_t err_cap)
{
  if (err != NULL && err_cap > 0)
    err[0] = '\0';
  if (text == NULL || n == NULL || (keys == NULL && cap > 0))
    return keys_error(MSD_EPARAM, err, err_cap, "no keys text or output");
  *n = 0;
  const char *p = text;
  for (size_t line = 1; *p != '\0' || line == 1; line++) {
    const char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
    const char *next = nl ? nl + 1 : end;
    if (end > p && end[-1] == '\r')
      end--;
    const char *q = p;
    while (q < end && (*q == ' ' || *q == '\t'))
      q++;
    int rc = 0;
    if (line == 1) {
      rc = parse_header(p, end, err, err_cap);
    } else if (q < end && *q != '#') {
      struct chain_key k;
      rc = parse_node(p, end, line, &k, err, err_cap);
      for (size_t i = 0; rc == 0 && i < *n; i++) {
        if (keys[i].node_id == k.node_id)
          rc = keys_error(MSD_EDECODE, err, err_cap, "line %zu: node %" PRIu32 " is listed twice",
                          line, k.node_id);
        else if (memcmp(keys[i].pk, k.pk, BLOCK_PUBKEY_BYTES) == 0)
          rc = keys_error(MSD_EDECODE, err, err_cap,
                          "line %zu: node %" PRIu32 " has the same key as node %" PRIu32, line,
                          k.node_id, keys[i].node_id);
      }
      if (rc == 0 && *n == cap)
        rc = keys_error(MSD_ESHORT, err, err_cap, "line %zu: more than %zu keys", line, cap);
      if (rc == 0)
        keys[(*n)++] = k;
    }
    if (rc != 0)
      return rc;
    p = next;
  }
  return 0;
}

int chain_keys_format(const struct chain_key *keys, size_t n, char *out, size_t cap, size_t *len)
{
  if ((keys == NULL && n > 0) || out == NULL || len == NULL)
    return MSD_EPARAM;
  size_t used = 0;
  int w = snprintf(out, cap, KEYS_MAGIC " %d\n", KEYS_VERSION);
  for (size_t i = 0; w >= 0; i++) {
    used += (size_t)w;
    if (used >= cap)
      return MSD_ESHORT;
    if (i == n)
      break;
    if (keys[i].node_id == 0)
      return MSD_EPARAM;
    char hex[2 * BLOCK_PUBKEY_BYTES + 1];
    for (size_t j = 0; j < BLOCK_PUBKEY_BYTES; j++)
      snprintf(hex + 2 * j, 3, "%02x", keys[i].pk[j]);
    w = snprintf(out + used, cap - used, "node %" PRIu32 " %s %s\n", keys[i].node_id,
                 keys[i].voter ? "voter" : "standby", hex);
  }
  *len = used;
  return 0;
}

__attribute__((format(printf, 3, 4))) static int fail(struct chain_proof_report *rep, int rc,
                                                      const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rep->reason, sizeof rep->reason, fmt, ap);
  va_end(ap);
  return rc;
}

/* Distinct voter keys among the trusted ones. */
static uint32_t count_voters(const struct chain_key *keys, size_t nkeys)
{
  uint32_t v = 0;
  for (size_t i = 0; i < nkeys; i++) {
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++)
      seen = keys[j].voter && memcmp(keys[j].pk, keys[i].pk, BLOCK_PUBKEY_BYTES) == 0;
    v += keys[i].voter && !seen;
  }
  return v;
}

/* Cosignatures that verify under distinct trusted voter keys. A key
 * counts once however many cosignatures (or ids) carry it. */
static int count_cosigs(const Medshard__ProofBundle *pb, const uint8_t hash[BLOCK_HASH],
                        const struct chain_key *keys, size_t nkeys, uint32_t *valid)
{
  bool *used = msd_calloc(nkeys ? nkeys : 1, sizeof *used);
  if (used == NULL)
    return -ENOMEM;
  *valid = 0;
  for (size_t c = 0; c < pb->n_cosigs; c++) {
    const Medshard__BlockCosig *s = pb->cosigs[c];
    if (s->signature.len != BLOCK_SIG_BYTES)
      continue;
    for (size_t i = 0; i < nkeys; i++) {
      if (!keys[i].voter || keys[i].node_id != s->node_id || used[i] ||
          !block_cosig_valid(hash, keys[i].pk, s->signature.data))
        continue;
      /* Mark every entry with this key, so a key listed under two ids
       * still counts once. */
      for (size_t j = 0; j < nkeys; j++)
        used[j] = used[j] || memcmp(keys[j].pk, keys[i].pk, BLOCK_PUBKEY_BYTES) == 0;
      (*valid)++;
      break;
    }
  }
  msd_free(used);
  return 0;
}

/* Checks the leaf and its path against the decoded header. */
static int check_inclusion(const Medshard__ProofBundle *pb, const struct block_header *h,
                           struct chain_proof_report *rep)
{
  uint8_t path[MERKLE_PROOF_MAX][MERKLE_HASH], leaf_hash[MERKLE_HASH];
  if (pb->n_path > MERKLE_PROOF_MAX)
    return fail(rep, MSD_EDECODE, "the inclusion path has %zu hashes; no tree needs more than %d",
                pb->n_path, MERKLE_PROOF_MAX);
  for (size_t i = 0; i < pb->n_path; i++) {
    if (pb->path[i].len != MERKLE_HASH)
      return fail(rep, MSD_EDECODE, "hash %zu of the inclusion path is %zu bytes, not %d", i,
                  pb->path[i].len, MERKLE_HASH);
    memcpy(path[i], pb->path[i].data, MERKLE_HASH);
  }
  if (pb->leaf_index >= h->size_after)
    return fail(rep, MSD_ECORRUPT,
                "leaf %" PRIu64 " is not in block %" PRIu64 ", whose tree holds %" PRIu64
                " leaves", pb->leaf_index, h->height, h->size_after);
  merkle_leaf_hash(pb->leaf.data, pb->leaf.len, leaf_hash);
  if (!merkle_verify_inclusion(pb->leaf_index, h->size_after, leaf_hash,
                               (const uint8_t(*)[MERKLE_HASH])path, (int)pb->n_path, h->root))
    return fail(rep, MSD_ECORRUPT,
                "the inclusion path of leaf %" PRIu64 " does not lead to the root of block %"
                PRIu64 " (tree of %" PRIu64 " leaves): the leaf, path or header was altered",
                pb->leaf_index, h->height, h->size_after);
  return 0;
}

static int verify(const Medshard__ProofBundle *pb, const struct chain_key *keys, size_t nkeys,
                  struct chain_proof_report *rep)
{
  struct block_header h;
  if (pb->format_version != 1)
    return fail(rep, MSD_EVERSION, "proof bundle format version %" PRIu32 " is not supported"
                " (this build reads version 1)", pb->format_version);
  rep->leaf_index = pb->leaf_index;
  int rc = anchor_decode(pb->leaf.data, pb->leaf.len, &rep->leaf);
  if (rc != 0)
    return fail(rep, rc, "the anchor leaf in the bundle is malformed: %s", msd_strerror(rc));
  rc = block_decode(pb->block_header.data, pb->block_header.len, &h);
  if (rc != 0)
    return fail(rep, rc, "the block header in the bundle is malformed: %s", msd_strerror(rc));
  rep->height = h.height;
  rep->tree_size = h.size_after;
  rc = check_inclusion(pb, &h, rep);
  if (rc != 0)
    return rc;
  uint8_t hash[BLOCK_HASH];
  block_hash(&h, hash);
  rep->voters = count_voters(keys, nkeys);
  rc = count_cosigs(pb, hash, keys, nkeys, &rep->valid_cosigs);
  if (rc != 0)
    return fail(rep, rc, "verifying cosignatures: %s", msd_strerror(rc));
  if (rep->voters == 0)
    return fail(rep, MSD_EBADSIG, "the trusted keys list no voter, so no block can be sealed");
  if (rep->valid_cosigs <= rep->voters / 2)
    return fail(rep, MSD_EBADSIG,
                "block %" PRIu64 " has %" PRIu32 " valid cosignature(s) from the %" PRIu32
                " trusted voter(s); it needs more than half: wrong keys file, or a forged block",
                h.height, rep->valid_cosigs, rep->voters);
  return 0;
}

int chain_proof_verify(const uint8_t *bundle, size_t len, const struct chain_key *keys,
                       size_t nkeys, struct chain_proof_report *rep)
{
  if (rep == NULL)
    return MSD_EPARAM;
  memset(rep, 0, sizeof *rep);
  if ((bundle == NULL && len > 0) || (keys == NULL && nkeys > 0))
    return fail(rep, MSD_EPARAM, "no bundle or no keys");
  Medshard__ProofBundle *pb = medshard__proof_bundle__unpack(NULL, len, bundle);
  if (pb == NULL)
    return fail(rep, MSD_EDECODE, "the bundle (%zu bytes) is not a ProofBundle message", len);
  int rc = verify(pb, keys, nkeys, rep);
  medshard__proof_bundle__free_unpacked(pb, NULL);
  return rc;
}
