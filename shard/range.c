/* Range math (see range.h). An object byte at offset p lives in stripe
 * s = p / (k*unit), data chunk i = (p mod k*unit) / unit, at shard offset
 * s*unit + p mod unit. Within one shard those offsets grow with p, so the
 * bytes of a contiguous range form one contiguous run per shard. */
#include "shard/range.h"

#include <string.h>

#include "common/err.h"

struct pos {
  uint64_t stripe;
  int shard;
  uint64_t shard_off;
};

static struct pos locate(const struct stripe_geom *g, uint64_t p)
{
  uint64_t sw = (uint64_t)g->k * g->unit;
  uint64_t in = p % sw;
  struct pos r = {p / sw, (int)(in / g->unit), 0};
  r.shard_off = r.stripe * g->unit + in % g->unit;
  return r;
}

int range_map(const struct stripe_geom *g, uint64_t off, uint64_t len, struct range_map *out)
{
  if (g == NULL || out == NULL)
    return MSD_EPARAM;
  memset(out, 0, sizeof *out);
  if (len > 0 && off >= g->size)
    return MSD_ERANGE;
  if (off > g->size)
    return MSD_ERANGE;
  out->off = off;
  out->len = len;
  if (len > g->size - off) {
    out->len = g->size - off;
    out->clipped = true;
  }
  if (out->len == 0)
    return 0;

  uint64_t end = out->off + out->len; /* exclusive */
  struct pos a = locate(g, out->off), b = locate(g, end - 1);
  out->first_stripe = a.stripe;
  out->last_stripe = b.stripe;

  /* Shard i's first byte in range: in stripe a if chunk i starts or ends
   * inside the range there, else at the start of chunk i of stripe a+1.
   * Its last byte likewise from stripe b backwards. */
  for (int i = 0; i < g->k; i++) {
    uint64_t first, last;
    if (i == a.shard)
      first = a.shard_off;
    else if (i > a.shard)
      first = a.stripe * g->unit;
    else
      first = (a.stripe + 1) * g->unit;
    if (i == b.shard)
      last = b.shard_off;
    else if (i < b.shard)
      last = b.stripe * g->unit + g->unit - 1;
    else if (b.stripe > 0)
      last = (b.stripe - 1) * g->unit + g->unit - 1;
    else
      continue;
    if (last + 1 <= first)
      continue;
    struct range_span *sp = &out->span[out->nspans++];
    sp->shard = i;
    sp->shard_off = first;
    sp->len = last + 1 - first;
  }
  return 0;
}

int range_assemble(const struct stripe_geom *g, const struct range_map *r,
                   const unsigned char *const span_buf[], unsigned char *out)
{
  if (g == NULL || r == NULL || (r->len > 0 && (span_buf == NULL || out == NULL)))
    return MSD_EPARAM;
  int by_shard[EC_K_MAX];
  for (int i = 0; i < g->k; i++)
    by_shard[i] = -1;
  for (int j = 0; j < r->nspans; j++)
    by_shard[r->span[j].shard] = j;

  uint64_t p = r->off, end = r->off + r->len;
  while (p < end) {
    struct pos at = locate(g, p);
    uint64_t piece = g->unit - at.shard_off % g->unit;
    if (piece > end - p)
      piece = end - p;
    int j = by_shard[at.shard];
    if (j < 0 || span_buf[j] == NULL)
      return MSD_EPARAM; /* the spans do not belong to this range */
    const struct range_span *sp = &r->span[j];
    memcpy(out + (p - r->off), span_buf[j] + (at.shard_off - sp->shard_off), (size_t)piece);
    p += piece;
  }
  return 0;
}
