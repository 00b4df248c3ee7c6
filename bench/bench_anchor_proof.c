/* Proof figures for `medshard bench anchor --nodes N`: inclusion proofs in an
 * on-disk Merkle hash cache of 10^6 leaves with a full proof bundle at that
 * size (signed by fresh keys, so it verifies exactly as a cluster's would),
 * and a real bundle fetched from the running cluster. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_anchor_int.h"
#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"
#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "chain-anchor/merkletree.h"
#include "chain-anchor/proof.h"
#include "common/alloc.h"
#include "common/err.h"

#define PROOF_SAMPLES 1000u /* random leaves whose proofs are timed */
#define VERIFY_ROUNDS 101u  /* chain_proof_verify calls per median */
#define VERIFY_BATCHES 5u   /* medians per bundle; the lowest is reported */

static uint64_t rng_next(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* A PUT leaf of a 2+1 object with random fields, as the cluster writes. */
static int make_leaf(uint8_t *buf, size_t cap, size_t *len)
{
  struct anchor_leaf a;
  memset(&a, 0, sizeof a);
  a.kind = ANCHOR_PUT;
  bench_fill(a.object_id, sizeof a.object_id, 1);
  bench_fill(a.key_tag, sizeof a.key_tag, 2);
  bench_fill(a.commitment, sizeof a.commitment, 3);
  a.version = 1;
  a.size = 4096;
  a.k = 2;
  a.m = 1;
  a.unit = 1 << 20;
  a.nshards = 3;
  for (unsigned i = 0; i < 3; i++) {
    a.shard[i].node_id = i + 1;
    bench_fill(a.shard[i].digest, ANCHOR_DIGEST, 10 + i);
  }
  return anchor_encode(&a, buf, cap, len);
}

/* Appends `leaves` leaves: pseudo-random hashes, except `leaf_hash` at the
 * sampled indexes (sorted), so a bundle can be made for any of them. */
static int build_tree(struct merkle_tree *t, uint64_t leaves, const uint64_t *samples,
                      unsigned nsamples, const uint8_t leaf_hash[MERKLE_HASH])
{
  uint8_t h[MERKLE_HASH];
  unsigned next = 0;
  for (uint64_t i = 0; i < leaves; i++) {
    bool sampled = next < nsamples && samples[next] == i;
    if (sampled)
      memcpy(h, leaf_hash, MERKLE_HASH);
    else
      bench_fill(h, MERKLE_HASH, i);
    while (next < nsamples && samples[next] == i)
      next++;
    int rc = merkle_tree_append(t, h);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Times generation and verification of every sampled leaf's proof. */
static int time_paths(const struct merkle_tree *t, uint64_t leaves, const uint64_t *samples,
                      unsigned n, const uint8_t leaf_hash[MERKLE_HASH], struct ba_proof_local *out)
{
  uint8_t root[MERKLE_HASH], path[MERKLE_PROOF_MAX][MERKLE_HASH];
  double *gen = msd_calloc(n, sizeof *gen), *ver = msd_calloc(n, sizeof *ver);
  int rc = gen && ver ? merkle_tree_root(t, leaves, root) : -ENOMEM;
  for (unsigned i = 0; rc == 0 && i < n; i++) {
    int len;
    double t0 = bench_now();
    rc = merkle_tree_inclusion(t, samples[i], leaves, path, &len);
    double t1 = bench_now();
    bool ok = rc == 0 && merkle_verify_inclusion(samples[i], leaves, leaf_hash,
                                                 (const uint8_t(*)[MERKLE_HASH])path, len, root);
    double t2 = bench_now();
    if (rc == 0 && !ok)
      rc = MSD_ECORRUPT;
    gen[i] = (t1 - t0) * 1e6;
    ver[i] = (t2 - t1) * 1e6;
    if (rc == 0 && len > (int)out->path_hashes)
      out->path_hashes = (unsigned)len;
  }
  out->gen_us = rc == 0 ? ba_median(gen, n) : 0;
  out->verify_us = rc == 0 ? ba_median(ver, n) : 0;
  out->path_bytes = (size_t)out->path_hashes * MERKLE_HASH;
  msd_free(gen);
  msd_free(ver);
  return rc;
}

/* A cosigned bundle for leaf `index` of the tree, with `voters` fresh key
 * pairs as its trusted keys, into *out. */
static int make_bundle(const struct merkle_tree *t, uint64_t index, const uint8_t *leaf,
                       size_t leaf_len, unsigned voters, struct ba_bundle *out)
{
  uint64_t size = merkle_tree_size(t);
  /* Plausible values; the verifier reads only size_after and root, and
   * every field is fixed-width, so the bundle's size does not depend on them. */
  struct block_header h = {.height = 1000, .size_before = size > 1000 ? size - 1000 : 0,
                           .size_after = size, .raft_term = 3,
                           .raft_index = 20000, .timestamp_ms = 1790000000000ull, .epoch = 3};
  uint8_t hdr[BLOCK_HEADER_BYTES], hash[BLOCK_HASH], path[MERKLE_PROOF_MAX][MERKLE_HASH];
  uint8_t sk[BLOCK_SECKEY_BYTES], sig[BA_MAX_NODES][BLOCK_SIG_BYTES];
  Medshard__BlockCosig cs[BA_MAX_NODES], *csp[BA_MAX_NODES];
  ProtobufCBinaryData items[MERKLE_PROOF_MAX];
  int n;
  struct chain_key *keys = out->keys = msd_calloc(voters, sizeof *keys);
  bench_fill(h.prev_hash, BLOCK_HASH, 4);
  int rc = keys == NULL ? -ENOMEM : merkle_tree_root(t, h.size_after, h.root);
  if (rc == 0)
    rc = merkle_tree_inclusion(t, index, h.size_after, path, &n);
  block_encode(&h, hdr);
  block_hash(&h, hash);
  for (unsigned i = 0; rc == 0 && i < voters; i++) {
    keys[i] = (struct chain_key){.node_id = i + 1, .voter = true};
    if ((rc = block_keypair(keys[i].pk, sk)) != 0)
      break;
    block_cosign(hash, sk, sig[i]);
    medshard__block_cosig__init(&cs[i]);
    cs[i].node_id = i + 1;
    cs[i].signature = (ProtobufCBinaryData){BLOCK_SIG_BYTES, sig[i]};
    csp[i] = &cs[i];
  }
  if (rc != 0)
    return rc;
  Medshard__ProofBundle pb = MEDSHARD__PROOF_BUNDLE__INIT;
  pb.format_version = 1;
  pb.leaf = (ProtobufCBinaryData){leaf_len, (uint8_t *)leaf};
  pb.leaf_index = index;
  for (int i = 0; i < n; i++)
    items[i] = (ProtobufCBinaryData){MERKLE_HASH, path[i]};
  pb.path = items;
  pb.n_path = (size_t)n;
  pb.block_header = (ProtobufCBinaryData){BLOCK_HEADER_BYTES, hdr};
  pb.cosigs = csp;
  pb.n_cosigs = voters;
  out->nkeys = out->cosigs = voters;
  out->leaf = index;
  out->path_hashes = (unsigned)n;
  out->len = medshard__proof_bundle__get_packed_size(&pb);
  out->bytes = msd_malloc(out->len);
  if (out->bytes == NULL)
    return -ENOMEM;
  medshard__proof_bundle__pack(&pb, out->bytes);
  return 0;
}

/* Median µs of `rounds` chain_proof_verify calls on b. */
static int median_verify(struct ba_bundle *b, unsigned rounds, double *us)
{
  double t[VERIFY_ROUNDS];
  struct chain_proof_report rep;
  for (unsigned i = 0; i < rounds; i++) {
    double t0 = bench_now();
    int rc = chain_proof_verify(b->bytes, b->len, b->keys, b->nkeys, &rep);
    t[i] = (bench_now() - t0) * 1e6;
    if (rc != 0) {
      fprintf(stderr, "bench anchor: the proof bundle of leaf %" PRIu64 " does not verify: %s\n",
              b->leaf, rep.reason);
      return rc;
    }
  }
  b->height = rep.height;
  b->tree_size = rep.tree_size;
  b->voters = rep.voters;
  *us = ba_median(t, rounds);
  return 0;
}

int ba_bundles_time(struct ba_bundle *const *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    b[i]->verify_us = 0;
  for (unsigned r = 0; r < VERIFY_BATCHES; r++) {
    for (size_t i = 0; i < n; i++) {
      double us;
      int rc = median_verify(b[i], VERIFY_ROUNDS, &us);
      if (rc != 0)
        return rc;
      if (r == 0 || us < b[i]->verify_us)
        b[i]->verify_us = us;
    }
  }
  return 0;
}

void ba_bundle_free(struct ba_bundle *b)
{
  msd_free(b->bytes);
  msd_free(b->keys);
  b->bytes = NULL;
  b->keys = NULL;
}

/* n sorted random leaf indexes below leaves, the last leaf among them. */
static unsigned pick_samples(uint64_t leaves, uint64_t *samples, unsigned n)
{
  uint64_t seed;
  if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
    seed = (uint64_t)bench_now(); /* UNTESTED */
  n = leaves < n ? (unsigned)leaves : n;
  samples[0] = leaves - 1;
  for (unsigned i = 1; i < n; i++)
    samples[i] = rng_next(&seed) % leaves;
  qsort(samples, n, sizeof *samples, cmp_u64);
  return n;
}

int ba_proof_local(const char *dir, uint64_t leaves, unsigned voters, struct ba_proof_local *out)
{
  char path[600];
  uint8_t leaf[ANCHOR_ENCODED_MAX], leaf_hash[MERKLE_HASH];
  uint64_t samples[PROOF_SAMPLES];
  size_t leaf_len = 0;
  struct merkle_tree *t = NULL;
  memset(out, 0, sizeof *out);
  out->leaves = leaves;
  out->samples = pick_samples(leaves, samples, PROOF_SAMPLES);
  snprintf(path, sizeof path, "%s/proof-tree", dir);
  int rc = make_leaf(leaf, sizeof leaf, &leaf_len);
  merkle_leaf_hash(leaf, leaf_len, leaf_hash);
  if (rc == 0)
    rc = merkle_tree_open(path, &t);
  double t0 = bench_now();
  if (rc == 0)
    rc = build_tree(t, leaves, samples, out->samples, leaf_hash);
  out->build_s = bench_now() - t0;
  if (rc == 0)
    rc = time_paths(t, leaves, samples, out->samples, leaf_hash, out);
  /* A random sampled leaf, not the last: its path is the full depth. */
  if (rc == 0)
    rc = make_bundle(t, samples[out->samples / 2], leaf, leaf_len, voters, &out->bundle);
  if (rc != 0) {
    fprintf(stderr, "bench anchor: proofs at %" PRIu64 " leaves in %s: %s\n", leaves, path,
            msd_strerror(rc));
    ba_bundle_free(&out->bundle);
  }
  merkle_tree_close(t);
  unlink(path);
  return rc;
}

/* ---- a bundle from the cluster ---- */

/* One request to the first node of the comma-separated list that answers
 * (a node that stopped mid-run must not cost the figure). */
static int call(const char *addrs, Medshard__CtlRequest *q, Medshard__CtlResponse **resp,
                uint8_t **payload, size_t *plen)
{
  int rc = ctl_call_any(addrs, q, 10000, resp, payload, plen);
  if (rc == 0 && (*resp)->code != 0) {
    rc = (*resp)->code;
    medshard__ctl_response__free_unpacked(*resp, NULL);
    if (payload != NULL)
      msd_free(*payload);
  }
  return rc;
}


int ba_proof_cluster(const char *addr, uint64_t leaf, struct ba_bundle *out)
{
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r = NULL;
  memset(out, 0, sizeof *out);
  out->leaf = leaf;
  q.op = MEDSHARD__CTL_OP__CTL_OP_GET_PROOF;
  q.leaf_index = leaf;
  out->keys = msd_calloc(64, sizeof *out->keys);
  int rc = out->keys == NULL ? -ENOMEM : ctl_fetch_keys(addr, out->keys, 64, &out->nkeys);
  if (rc == 0 && (rc = call(addr, &q, &r, &out->bytes, &out->len)) == 0)
    medshard__ctl_response__free_unpacked(r, NULL);
  Medshard__ProofBundle *pb =
      rc == 0 ? medshard__proof_bundle__unpack(NULL, out->len, out->bytes) : NULL;
  if (pb != NULL) {
    out->path_hashes = (unsigned)pb->n_path;
    out->cosigs = (unsigned)pb->n_cosigs;
    medshard__proof_bundle__free_unpacked(pb, NULL);
  }
  if (rc != 0) {
    fprintf(stderr, "bench anchor: proof of leaf %" PRIu64 " from %s: %s\n", leaf, addr,
            msd_strerror(rc));
    ba_bundle_free(out);
  }
  return rc;
}
