/* Weighted rendezvous placement with zones (see placement.h).
 *
 * Each node scores an object with ln(u) / w, where u in (0,1] comes from a
 * keyed XXH3 of (object id, node id) and w is the node's effective weight;
 * the highest score wins. Taking the best k+m distinct nodes is the
 * "exponential race" order: adding a node moves only the shards it wins,
 * removing one moves only the shards it held.
 *
 * Two effects skew shares away from weights when several distinct nodes are
 * drawn per object: heavy nodes cannot be drawn twice (Ceph's "multi-pick
 * anomaly"), and zone caps throttle crowded zones. place_map_create corrects
 * both by calibration: it places a fixed, deterministic sample of object ids,
 * compares each node's share with its target, and scales effective weights
 * until the shares match within sampling noise. Nodes already within noise
 * keep their weight, so a symmetric cluster is left exactly as configured
 * and membership changes cause no spurious movement. */
#include "shard/placement.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <xxhash.h>

#include "common/alloc.h"
#include "common/err.h"
#include "shard/ec.h"

#define PLACE_HASH_SEED 0x6d656473686172ull /* "medshar" */
#define CALIB_SAMPLES 50000
#define CALIB_ROUNDS 16
#define CALIB_TOL_MIN 0.02  /* relative share error always tolerated */
#define CALIB_TOL_SIGMA 4.5 /* and this many standard errors of the sample */

struct place_map {
  int k, m, n;
  size_t count;
  uint32_t nzones;   /* distinct zones among all nodes */
  uint32_t base_cap; /* ceil(n / nzones) */
  uint32_t *ids;
  uint32_t *zone_idx; /* dense zone index per node */
  double *weight;     /* configured */
  double *eff;        /* calibrated */
};

/* Scratch layout: scores[count] then zone_count[nzones]. */
size_t place_scratch_size(const struct place_map *pm)
{
  return pm->count * sizeof(double) + pm->nzones * sizeof(uint32_t);
}

double place_effective_weight(const struct place_map *pm, size_t idx)
{
  return idx < pm->count ? pm->eff[idx] : 0.0;
}

static double node_score(const uint8_t oid[PLACE_OID_BYTES], uint32_t id, double w)
{
  if (w <= 0)
    return -INFINITY;
  uint8_t key[PLACE_OID_BYTES + 4];
  memcpy(key, oid, PLACE_OID_BYTES);
  for (int i = 0; i < 4; i++)
    key[PLACE_OID_BYTES + i] = (uint8_t)(id >> (8 * i)); /* little-endian */
  uint64_t h = XXH3_64bits_withSeed(key, sizeof key, PLACE_HASH_SEED);
  double u = (double)((h >> 11) + 1) * 0x1p-53; /* (0, 1] */
  return log(u) / w;
}

/* The selection core, shared with calibration: writes node indices (not
 * ids) to out_idx, using the current effective weights. */
static int select_idx(const struct place_map *pm, const uint8_t oid[PLACE_OID_BYTES],
                      uint32_t *out_idx, void *scratch)
{
  double *score = scratch;
  uint32_t *zcount = (uint32_t *)(score + pm->count);
  memset(zcount, 0, pm->nzones * sizeof *zcount);
  for (size_t i = 0; i < pm->count; i++)
    score[i] = node_score(oid, pm->ids[i], pm->eff[i]);

  uint32_t cap = pm->base_cap;
  for (int pick = 0; pick < pm->n;) {
    size_t best = pm->count;
    for (size_t i = 0; i < pm->count; i++) {
      if (score[i] == -INFINITY || zcount[pm->zone_idx[i]] >= cap)
        continue;
      if (best == pm->count || score[i] > score[best])
        best = i;
    }
    if (best == pm->count) {
      /* Every zone with nodes left is at the cap: zones are too small for
       * an even spread, so let each take one more (water-filling). */
      if (cap >= (uint32_t)pm->n)
        return MSD_ENODES; /* UNTESTED: create checked eligible >= n */
      cap++;
      continue;
    }
    out_idx[pick++] = (uint32_t)best;
    zcount[pm->zone_idx[best]]++;
    score[best] = -INFINITY;
  }
  return 0;
}

int place_select(const struct place_map *pm, const uint8_t oid[PLACE_OID_BYTES],
                 uint32_t *out, void *scratch)
{
  if (pm == NULL || oid == NULL || out == NULL || scratch == NULL)
    return MSD_EPARAM;
  uint32_t idx[EC_N_MAX];
  int rc = select_idx(pm, oid, idx, scratch);
  if (rc != 0)
    return rc;
  for (int i = 0; i < pm->n; i++)
    out[i] = pm->ids[idx[i]];
  return 0;
}

int place_remap(const uint32_t *current, const uint32_t *target, int n, uint32_t *out)
{
  if (current == NULL || target == NULL || out == NULL || n <= 0 || n > EC_N_MAX)
    return MSD_EPARAM;
  /* Targets must be distinct real nodes; current may hold holes (0) but no
   * node twice, or the one-to-one matching below would not exist. */
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (target[i] == target[j] || (current[i] != 0 && current[i] == current[j]))
        return MSD_EPARAM;
  for (int i = 0; i < n; i++)
    if (target[i] == 0)
      return MSD_EPARAM;
  bool stays[EC_N_MAX] = {false}, placed[EC_N_MAX] = {false};
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < n; j++)
      if (current[i] == target[j]) {
        stays[i] = placed[j] = true;
        break;
      }
  }
  int moved = 0, next = 0;
  for (int i = 0; i < n; i++) {
    if (stays[i]) {
      out[i] = current[i];
      continue;
    }
    while (placed[next])
      next++;
    out[i] = target[next];
    placed[next] = true;
    moved++;
  }
  return moved;
}

/* Per-node target shares: n * w_i / W, water-filled so that no node is asked
 * for more than one shard per object (the excess goes to the others). */
static void calib_targets(const struct place_map *pm, double *target)
{
  bool *full = (bool *)(target + pm->count); /* caller sized for both */
  memset(full, 0, pm->count * sizeof *full);
  for (;;) {
    double wsum = 0;
    int left = pm->n;
    for (size_t i = 0; i < pm->count; i++) {
      if (full[i])
        left--;
      else
        wsum += pm->weight[i];
    }
    bool clamped = false;
    for (size_t i = 0; i < pm->count; i++) {
      if (full[i]) {
        target[i] = 1.0;
        continue;
      }
      target[i] = wsum > 0 ? left * pm->weight[i] / wsum : 0;
      if (target[i] > 1.0) {
        full[i] = clamped = true;
      }
    }
    if (!clamped)
      return;
  }
}

/* Deterministic sample object ids: splitmix64 of a counter. */
static void calib_oid(uint64_t n, uint8_t oid[PLACE_OID_BYTES])
{
  for (int half = 0; half < 2; half++) {
    uint64_t z = (2 * n + (uint64_t)half + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    memcpy(oid + 8 * half, &z, 8);
  }
}

/* Places the sample with the current effective weights and nudges every node
 * whose share is off by more than sampling noise. Returns true when all
 * nodes are within tolerance. */
static bool calib_round(struct place_map *pm, const double *target, uint64_t *hits,
                        void *scratch)
{
  uint32_t idx[EC_N_MAX];
  memset(hits, 0, pm->count * sizeof *hits);
  for (uint64_t s = 0; s < CALIB_SAMPLES; s++) {
    uint8_t oid[PLACE_OID_BYTES];
    calib_oid(s, oid);
    if (select_idx(pm, oid, idx, scratch) != 0)
      return true; /* UNTESTED: create checked eligible >= n */
    for (int i = 0; i < pm->n; i++)
      hits[idx[i]]++;
  }
  bool settled = true;
  for (size_t i = 0; i < pm->count; i++) {
    if (target[i] <= 0)
      continue;
    double got = (double)hits[i] / CALIB_SAMPLES;
    double sigma = sqrt(target[i] * (1 - target[i]) / CALIB_SAMPLES) / target[i];
    double tol = fmax(CALIB_TOL_MIN, CALIB_TOL_SIGMA * sigma);
    double ratio = got > 0 ? target[i] / got : 2.0;
    if (fabs(ratio - 1) <= tol)
      continue;
    settled = false;
    /* Damped step: shares respond to weights less than linearly near
     * saturation, and overshooting would oscillate. */
    pm->eff[i] *= pow(ratio, 0.8);
  }
  return settled;
}

static int calibrate(struct place_map *pm)
{
  double *target = msd_malloc(pm->count * (sizeof(double) + sizeof(bool)));
  uint64_t *hits = msd_malloc(pm->count * sizeof *hits);
  void *scratch = msd_aligned_alloc(8, place_scratch_size(pm));
  int rc = -ENOMEM;
  if (target == NULL || hits == NULL || scratch == NULL)
    goto out;
  calib_targets(pm, target);
  for (int r = 0; r < CALIB_ROUNDS; r++)
    if (calib_round(pm, target, hits, scratch))
      break;
  rc = 0;
out:
  msd_free(scratch);
  msd_free(hits);
  msd_free(target);
  return rc;
}

static int check_nodes(const struct place_node *nodes, size_t count, int n)
{
  if (nodes == NULL || count > PLACE_NODES_MAX)
    return MSD_EPARAM;
  size_t eligible = 0;
  for (size_t i = 0; i < count; i++) {
    if (nodes[i].id == 0 || !isfinite(nodes[i].weight) || nodes[i].weight < 0)
      return MSD_EPARAM;
    eligible += nodes[i].weight > 0;
    for (size_t j = 0; j < i; j++) /* quadratic, but maps are small */
      if (nodes[i].id == nodes[j].id)
        return MSD_EPARAM;
  }
  return eligible < (size_t)n ? MSD_ENODES : 0;
}

/* Dense zone numbering in first-seen order, and the even-spread cap
 * ceil(n / zones that have an eligible node). */
static void number_zones(struct place_map *pm, const struct place_node *nodes)
{
  pm->nzones = 0;
  for (size_t i = 0; i < pm->count; i++) {
    size_t j = 0;
    while (j < i && nodes[j].zone != nodes[i].zone)
      j++;
    pm->zone_idx[i] = j < i ? pm->zone_idx[j] : pm->nzones++;
  }
  uint32_t live = 0;
  for (uint32_t z = 0; z < pm->nzones; z++) {
    size_t i = 0;
    while (i < pm->count && !(pm->zone_idx[i] == z && pm->weight[i] > 0))
      i++;
    live += i < pm->count;
  }
  pm->base_cap = ((uint32_t)pm->n + live - 1) / live;
}

int place_map_create(const struct place_node *nodes, size_t count, int k, int m,
                     struct place_map **out)
{
  int rc = ec_check_params(k, m);
  if (rc != 0)
    return rc;
  if (out == NULL)
    return MSD_EPARAM;
  rc = check_nodes(nodes, count, k + m);
  if (rc != 0)
    return rc;

  struct place_map *pm = msd_calloc(1, sizeof *pm);
  if (pm == NULL)
    return -ENOMEM;
  pm->k = k;
  pm->m = m;
  pm->n = k + m;
  pm->count = count;
  pm->ids = msd_malloc(count * sizeof *pm->ids);
  pm->zone_idx = msd_malloc(count * sizeof *pm->zone_idx);
  pm->weight = msd_malloc(count * sizeof *pm->weight);
  pm->eff = msd_malloc(count * sizeof *pm->eff);
  if (!pm->ids || !pm->zone_idx || !pm->weight || !pm->eff) {
    rc = -ENOMEM;
    goto fail;
  }
  for (size_t i = 0; i < count; i++) {
    pm->ids[i] = nodes[i].id;
    pm->weight[i] = pm->eff[i] = nodes[i].weight;
  }
  number_zones(pm, nodes);
  rc = calibrate(pm);
  if (rc != 0)
    goto fail;
  *out = pm;
  return 0;

fail:
  place_map_destroy(pm);
  return rc;
}

void place_map_destroy(struct place_map *pm)
{
  if (pm == NULL)
    return;
  msd_free(pm->ids);
  msd_free(pm->zone_idx);
  msd_free(pm->weight);
  msd_free(pm->eff);
  msd_free(pm);
}
