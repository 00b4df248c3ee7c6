/* Placement: which k+m distinct nodes receive the shards of a new object.
 * Weighted rendezvous hashing (straw2-style) with failure domains (zones).
 * Placement only picks targets for writes, repairs and rebalancing; where
 * shards are is recorded in shard maps and never recomputed from here. */
#ifndef MSD_SHARD_PLACEMENT_H
#define MSD_SHARD_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#define PLACE_NODES_MAX 4096
#define PLACE_OID_BYTES 16

/* A candidate node. id must be non-zero (0 marks a hole in shard maps) and
 * unique; weight is its relative capacity (0 = takes no new shards). */
struct place_node {
  uint32_t id;
  uint32_t zone;
  double weight;
};

struct place_map;

/* Builds the placement map for objects of k+m shards over `nodes` (copied).
 * Calibrates per-node effective weights so each node's share of placements
 * matches its weight share despite distinct-node and zone constraints (see
 * placement.c); this costs O(samples x nodes x (k+m)), tens of milliseconds
 * for a few dozen nodes, so build a map once per cluster-map epoch.
 * Returns 0, MSD_EEC_PARAMS, MSD_EPARAM (bad id, duplicate id, negative or
 * non-finite weight, too many nodes), MSD_ENODES (fewer than k+m nodes with
 * weight > 0), -ENOMEM. *out is owned by the caller (place_map_destroy). */
int place_map_create(const struct place_node *nodes, size_t count, int k, int m,
                     struct place_map **out);
void place_map_destroy(struct place_map *pm);

/* Bytes of scratch memory place_select needs for this map. */
size_t place_scratch_size(const struct place_map *pm);

/* Chooses k+m distinct nodes for object `oid`: out[i] is the node id for
 * shard i. Deterministic for the same map and oid. No zone receives more
 * shards than the smallest cap the zones allow (the fewest-possible maximum
 * per zone); that is at most m whenever the zones' sizes permit.
 * `scratch` is caller memory of place_scratch_size bytes, 8-byte aligned;
 * the map itself is only read, so threads may share it. */
int place_select(const struct place_map *pm, const uint8_t oid[PLACE_OID_BYTES],
                 uint32_t *out, void *scratch);

/* Stable re-assignment for rebalancing: given the current shard -> node list
 * and a newly selected target list (both n entries), writes to out the
 * target set with every node that stays keeping its current shard index, so
 * only shards whose node leaves the set move. Returns the number of moved
 * shards, or MSD_EPARAM. */
int place_remap(const uint32_t *current, const uint32_t *target, int n, uint32_t *out);

/* The calibrated weight used for node `idx` (in creation order), for
 * diagnostics; equal to the configured weight when no correction was needed. */
double place_effective_weight(const struct place_map *pm, size_t idx);

#endif
