/* Byte-range math: which bytes of which data shards hold a range of the
 * object, so a range read fetches only the chunks it covers. */
#ifndef MSD_SHARD_RANGE_H
#define MSD_SHARD_RANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "shard/ec.h"
#include "shard/stripe.h"

/* A contiguous run of one data shard's bytes. */
struct range_span {
  int shard;          /* data shard index, 0..k-1 */
  uint64_t shard_off; /* offset inside the shard */
  uint64_t len;
};

/* The minimal set of spans for a range: within one shard the bytes a range
 * covers are always contiguous, so there is at most one span per data shard
 * (k spans), sorted by shard index. */
struct range_map {
  uint64_t off, len;    /* the range after clipping to the object's size */
  bool clipped;         /* true if the request ran past the end */
  uint64_t first_stripe, last_stripe; /* stripes touched (for degraded reads) */
  int nspans;
  struct range_span span[EC_K_MAX];
};

/* Maps [off, off + len) of the object described by g. A range running past
 * the end is clipped to it (out->clipped set). An empty range (len 0, or
 * after clipping) yields no spans. Returns 0, MSD_EPARAM, or MSD_ERANGE when
 * off is past the end (off >= size with len > 0). */
int range_map(const struct stripe_geom *g, uint64_t off, uint64_t len, struct range_map *out);

/* Copies the mapped range into out (r->len bytes) from span_buf[j], which
 * holds the bytes of r->span[j]. Buffers are borrowed for the call. */
int range_assemble(const struct stripe_geom *g, const struct range_map *r,
                   const unsigned char *const span_buf[], unsigned char *out);

#endif
