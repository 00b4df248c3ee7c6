/* The ISA-L erasure codec behind ec.h: encode tables built once per codec,
 * decode tables built per erasure pattern and kept in a small LRU cache. */
#include "shard/ec.h"

#include <errno.h>
#include <isa-l/erasure_code.h>
#include <limits.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

/* ISA-L expands each matrix coefficient into a 32-byte multiplication table. */
#define EC_TBL_BYTES 32

/* Why: ISA-L's AVX-512 kernels (gf_*vect_dot_prod_avx512, ISA-L 2.30) return
 * with the upper halves of the vector registers still dirty. Until something
 * clears them, every legacy-SSE instruction this thread runs pays a
 * transition penalty, and the coordinator runs plenty right after an encode:
 * libxxhash's SSE2 XXH3 over the stripe's chunks went from 15 GB/s to 4 GB/s
 * (1.5 GiB in 0.40 s instead of 0.11 s on this project's dev VM) and
 * OpenSSL's SHA-NI SHA-256 lost about 10%. One vzeroupper per call ends it.
 * It lives in a function of its own (never inlined) because a function
 * entry is a point where no vector value is live, so clearing the upper
 * halves cannot corrupt anything the compiler keeps there; and it runs only
 * on CPUs with AVX (elsewhere the instruction would fault, and ISA-L never
 * touched those registers anyway). */
#if defined(__x86_64__)
__attribute__((noinline)) static void ec_clear_upper(void)
{
  if (__builtin_cpu_supports("avx"))
    __asm__ volatile("vzeroupper" ::: "memory");
}
#else
static void ec_clear_upper(void) {}
#endif

struct ec_cache_slot {
  uint64_t src_mask;  /* the k shards decoded from; 0 = empty slot */
  uint64_t want_mask; /* the shards rebuilt */
  uint64_t last_used; /* LRU clock */
  unsigned char *tables;
};

struct ec_codec {
  int k, m;
  unsigned char matrix[EC_N_MAX * EC_K_MAX];
  unsigned char *enc_tables; /* EC_TBL_BYTES * k * m */
  uint64_t clock;
  struct ec_cache_stats stats;
  struct ec_cache_slot cache[EC_CACHE_SLOTS];
};

int ec_check_params(int k, int m)
{
  if (k < 1 || k > EC_K_MAX || m < 0 || m > EC_M_MAX || k + m > EC_N_MAX)
    return MSD_EEC_PARAMS;
  return 0;
}

int ec_create(int k, int m, struct ec_codec **out)
{
  int rc = ec_check_params(k, m);
  if (rc != 0)
    return rc;
  if (out == NULL)
    return MSD_EPARAM;

  struct ec_codec *c = msd_calloc(1, sizeof *c);
  if (c == NULL)
    goto fail;
  c->k = k;
  c->m = m;
  gf_gen_cauchy1_matrix(c->matrix, k + m, k);

  size_t tbl = (size_t)EC_TBL_BYTES * (size_t)k * (size_t)(m ? m : 1);
  c->enc_tables = msd_aligned_alloc(64, tbl);
  if (c->enc_tables == NULL)
    goto fail_codec;
  if (m > 0)
    ec_init_tables(k, m, c->matrix + k * k, c->enc_tables);

  for (int i = 0; i < EC_CACHE_SLOTS; i++) {
    c->cache[i].tables = msd_aligned_alloc(64, tbl);
    if (c->cache[i].tables == NULL)
      goto fail_cache;
  }
  *out = c;
  return 0;

fail_cache:
  for (int i = 0; i < EC_CACHE_SLOTS; i++)
    msd_free(c->cache[i].tables);
  msd_free(c->enc_tables);
fail_codec:
  msd_free(c);
fail:
  return -ENOMEM;
}

void ec_destroy(struct ec_codec *c)
{
  if (c == NULL)
    return;
  for (int i = 0; i < EC_CACHE_SLOTS; i++)
    msd_free(c->cache[i].tables);
  msd_free(c->enc_tables);
  msd_free(c);
}

int ec_k(const struct ec_codec *c) { return c->k; }
int ec_m(const struct ec_codec *c) { return c->m; }
const unsigned char *ec_matrix(const struct ec_codec *c) { return c->matrix; }

void ec_cache_stats(const struct ec_codec *c, struct ec_cache_stats *out)
{
  *out = c->stats;
}

int ec_encode(const struct ec_codec *c, size_t len, unsigned char *const data[],
              unsigned char *const parity[])
{
  if (c == NULL || data == NULL || (c->m > 0 && parity == NULL))
    return MSD_EPARAM;
  if (len > INT_MAX)
    return MSD_ESHORT;
  for (int i = 0; i < c->k; i++)
    if (data[i] == NULL)
      return MSD_EPARAM;
  for (int i = 0; i < c->m; i++)
    if (parity[i] == NULL)
      return MSD_EPARAM;
  if (c->m == 0 || len == 0)
    return 0;
  /* ISA-L's prototype is not const-correct; it only reads data and tables. */
  ec_encode_data((int)len, c->k, c->m, c->enc_tables, (unsigned char **)data,
                 (unsigned char **)parity);
  ec_clear_upper();
  return 0;
}

/* Fills `tables` for rebuilding the `want` shards from the `src` shards (k of
 * them, in index order). Row r of the result expresses wanted shard w as a
 * combination of the sources: the inverse of the sources' generator rows
 * maps source bytes back to data bytes, and row w of the generator maps data
 * bytes to shard w. */
static int build_decode_tables(const struct ec_codec *c, uint64_t src, uint64_t want,
                               unsigned char *tables)
{
  int k = c->k;
  unsigned char sub[EC_K_MAX * EC_K_MAX];
  unsigned char inv[EC_K_MAX * EC_K_MAX];
  unsigned char rows[EC_M_MAX * EC_K_MAX];

  int r = 0;
  for (int i = 0; i < k + c->m; i++)
    if (src & (1ull << i))
      memcpy(sub + k * r++, c->matrix + k * i, (size_t)k);
  if (gf_invert_matrix(sub, inv, k) != 0)
    return MSD_ESINGULAR; /* UNTESTED: Cauchy submatrices are invertible */

  int nwant = 0;
  for (int w = 0; w < k + c->m; w++) {
    if (!(want & (1ull << w)))
      continue;
    unsigned char *row = rows + k * nwant++;
    if (w < k) {
      memcpy(row, inv + k * w, (size_t)k);
      continue;
    }
    const unsigned char *gen = c->matrix + k * w;
    for (int j = 0; j < k; j++) {
      unsigned char acc = 0;
      for (int l = 0; l < k; l++)
        acc ^= gf_mul(gen[l], inv[k * l + j]);
      row[j] = acc;
    }
  }
  ec_init_tables(k, nwant, rows, tables);
  return 0;
}

/* Returns the cached tables for (src, want), building them on a miss into the
 * least recently used slot. NULL only if the matrix is singular. */
static const unsigned char *decode_tables(struct ec_codec *c, uint64_t src, uint64_t want)
{
  struct ec_cache_slot *victim = &c->cache[0];
  c->clock++;
  for (int i = 0; i < EC_CACHE_SLOTS; i++) {
    struct ec_cache_slot *s = &c->cache[i];
    if (s->src_mask == src && s->want_mask == want) {
      s->last_used = c->clock;
      c->stats.hits++;
      return s->tables;
    }
    if (s->last_used < victim->last_used)
      victim = s;
  }
  c->stats.misses++;
  victim->src_mask = 0;
  if (build_decode_tables(c, src, want, victim->tables) != 0)
    return NULL;
  victim->src_mask = src;
  victim->want_mask = want;
  victim->last_used = c->clock;
  return victim->tables;
}

int ec_decode(struct ec_codec *c, size_t len, unsigned char *const shards[],
              uint64_t avail, uint64_t want)
{
  if (c == NULL || shards == NULL)
    return MSD_EPARAM;
  int n = c->k + c->m;
  uint64_t all = (n == 64) ? ~0ull : (1ull << n) - 1;
  if ((avail & ~all) || (want & ~all) || (avail & want))
    return MSD_EPARAM;
  if (len > INT_MAX)
    return MSD_ESHORT;
  if (__builtin_popcountll(avail) < c->k)
    return MSD_ETOO_MANY_ERASURES;
  if (want == 0)
    return 0;

  /* Decode from the first k available shards. Data shards come first, so a
   * pattern that lost only parity simply re-encodes from the data. */
  unsigned char *src[EC_K_MAX];
  unsigned char *dst[EC_M_MAX];
  uint64_t src_mask = 0;
  int ns = 0, nd = 0;
  for (int i = 0; i < n; i++) {
    uint64_t bit = 1ull << i;
    if ((avail & bit) && ns < c->k) {
      src_mask |= bit;
      src[ns++] = shards[i];
    } else if (want & bit) {
      dst[nd++] = shards[i];
    }
  }
  for (int i = 0; i < ns; i++)
    if (src[i] == NULL)
      return MSD_EPARAM;
  for (int i = 0; i < nd; i++)
    if (dst[i] == NULL)
      return MSD_EPARAM;

  const unsigned char *tables = decode_tables(c, src_mask, want);
  if (tables == NULL)
    return MSD_ESINGULAR; /* UNTESTED: see build_decode_tables */
  if (len > 0) {
    ec_encode_data((int)len, c->k, nd, (unsigned char *)tables, src, dst);
    ec_clear_upper();
  }
  return 0;
}
