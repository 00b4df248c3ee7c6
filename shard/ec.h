/* Reed-Solomon erasure codec over GF(2^8) on ISA-L, with a Cauchy generator
 * matrix so that every k x k submatrix is invertible: any k of the k+m shards
 * rebuild the others. Pure computation: the kernels never allocate. */
#ifndef MSD_SHARD_EC_H
#define MSD_SHARD_EC_H

#include <stddef.h>
#include <stdint.h>

#define EC_K_MAX 32
#define EC_M_MAX 16
#define EC_N_MAX 48 /* k + m */

/* Decode tables are cached for this many erasure patterns (LRU). */
#define EC_CACHE_SLOTS 16

struct ec_codec;

/* 0 if (k, m) is supported: 1 <= k <= 32, 0 <= m <= 16, k + m <= 48;
 * MSD_EEC_PARAMS otherwise. */
int ec_check_params(int k, int m);

/* Creates a codec for k data + m parity shards. On success *out is owned by
 * the caller (free with ec_destroy). Returns MSD_EEC_PARAMS or -ENOMEM.
 * A codec is not thread-safe (ec_decode updates its table cache): give each
 * thread its own; creating one costs a few microseconds. */
int ec_create(int k, int m, struct ec_codec **out);
void ec_destroy(struct ec_codec *c);

int ec_k(const struct ec_codec *c);
int ec_m(const struct ec_codec *c);

/* The (k+m) x k generator matrix, row-major: identity on top, Cauchy rows
 * 1/(i XOR j) below. Borrowed; valid until ec_destroy. */
const unsigned char *ec_matrix(const struct ec_codec *c);

/* Computes the m parity shards of `len` bytes each from the k data shards.
 * data[0..k-1] and parity[0..m-1] are caller buffers of at least len bytes
 * and must not overlap. len may be any value up to INT_MAX (ISA-L's limit).
 * Returns 0, MSD_EPARAM for NULL pointers, MSD_ESHORT if len > INT_MAX. */
int ec_encode(const struct ec_codec *c, size_t len, unsigned char *const data[],
              unsigned char *const parity[]);

/* Rebuilds shards from any k available ones. shards[0..k+m-1] are caller
 * buffers of len bytes; bit i of `avail` says shards[i] holds valid bytes,
 * bit i of `want` asks for shards[i] to be rebuilt in place (data or parity).
 * Pointers for shards in neither mask may be NULL. want must not intersect
 * avail. Returns 0; MSD_ETOO_MANY_ERASURES when fewer than k shards are
 * available (nothing is written); MSD_EPARAM for bad masks or NULL buffers. */
int ec_decode(struct ec_codec *c, size_t len, unsigned char *const shards[],
              uint64_t avail, uint64_t want);

/* Cache statistics, for tests and metrics. */
struct ec_cache_stats {
  uint64_t hits;
  uint64_t misses;
};
void ec_cache_stats(const struct ec_codec *c, struct ec_cache_stats *out);

#endif
