/* Streaming striper and destriper (see stripe.h). The encoder owns `window`
 * stripe buffers; each cycles FREE -> FILLING -> READY -> TAKEN -> FREE, or
 * FREE -> RESERVED -> FILLING when a caller reserves several stripes ahead
 * to receive bytes into them (stripe_enc_reserve). */
#include "shard/stripe.h"

#include <errno.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_TAKEN, SLOT_RESERVED };

struct stripe_slot {
  struct stripe st;     /* first: stripe_enc_release maps back by cast */
  enum slot_state state;
  unsigned char *buf;   /* (k+m) x unit, 64-byte aligned */
};

struct stripe_enc {
  struct ec_codec *codec;
  int k, m;
  size_t unit;
  unsigned window;
  bool finished;
  uint64_t size;        /* bytes accepted */
  uint64_t next_index;  /* index of the next stripe to start */
  struct stripe_slot *filling;
  size_t fill;          /* bytes in the filling stripe */
  bool borrowed;        /* slot buffers are the caller's (stripe_enc_create_in) */
  bool reserving;       /* a reservation is open (stripe_enc_reserve) */
  /* RESERVED slots, in the order they follow the filling one. */
  struct stripe_slot **reserved;
  unsigned nreserved;
  /* READY stripes in index order, a ring of `window` entries. */
  struct stripe_slot **ready;
  unsigned ready_head, ready_count;
  struct stripe_slot slots[];
};

int stripe_check_unit(size_t unit)
{
  if (unit < STRIPE_UNIT_MIN || unit > STRIPE_UNIT_MAX || unit % STRIPE_UNIT_ALIGN)
    return MSD_EUNIT;
  return 0;
}

int stripe_geom_init(struct stripe_geom *g, int k, int m, size_t unit, uint64_t size)
{
  if (g == NULL)
    return MSD_EPARAM;
  int rc = ec_check_params(k, m);
  if (rc == 0)
    rc = stripe_check_unit(unit);
  if (rc != 0)
    return rc;
  g->k = k;
  g->m = m;
  g->unit = unit;
  g->size = size;
  return 0;
}

uint64_t stripe_count(const struct stripe_geom *g)
{
  uint64_t sw = (uint64_t)g->k * g->unit;
  return g->size / sw + (g->size % sw != 0);
}

uint64_t stripe_shard_size(const struct stripe_geom *g)
{
  return stripe_count(g) * g->unit;
}

size_t stripe_data_len(const struct stripe_geom *g, uint64_t index)
{
  uint64_t sw = (uint64_t)g->k * g->unit;
  uint64_t start = index * sw;
  if (index >= stripe_count(g))
    return 0;
  uint64_t left = g->size - start;
  return (size_t)(left < sw ? left : sw);
}

/* Both constructors: slot buffers from mem when given, else allocated. */
static int enc_create(struct ec_codec *codec, size_t unit, unsigned window, uint8_t *mem,
                      size_t mem_len, struct stripe_enc **out)
{
  if (codec == NULL || out == NULL || window == 0 || window > STRIPE_WINDOW_MAX)
    return MSD_EPARAM;
  int rc = stripe_check_unit(unit);
  if (rc != 0)
    return rc;
  size_t bytes = (size_t)(ec_k(codec) + ec_m(codec)) * unit;
  if (mem != NULL && (mem_len / bytes < window || (uintptr_t)mem % 64 != 0))
    return MSD_EPARAM;

  struct stripe_enc *s = msd_calloc(1, sizeof *s + window * sizeof s->slots[0]);
  if (s == NULL)
    return -ENOMEM;
  s->codec = codec;
  s->k = ec_k(codec);
  s->m = ec_m(codec);
  s->unit = unit;
  s->window = window;
  s->borrowed = mem != NULL;
  s->ready = msd_calloc(window, sizeof *s->ready);
  s->reserved = msd_calloc(window, sizeof *s->reserved);
  if (s->ready == NULL || s->reserved == NULL)
    goto fail;
  for (unsigned i = 0; i < window; i++) {
    s->slots[i].buf = mem ? mem + (size_t)i * bytes : msd_aligned_alloc(64, bytes);
    if (s->slots[i].buf == NULL)
      goto fail;
  }
  *out = s;
  return 0;

fail:
  stripe_enc_destroy(s);
  return -ENOMEM;
}

int stripe_enc_create(struct ec_codec *codec, size_t unit, unsigned window,
                      struct stripe_enc **out)
{
  return enc_create(codec, unit, window, NULL, 0, out);
}

int stripe_enc_create_in(struct ec_codec *codec, size_t unit, unsigned window, void *mem,
                         size_t mem_len, struct stripe_enc **out)
{
  if (mem == NULL)
    return MSD_EPARAM;
  return enc_create(codec, unit, window, mem, mem_len, out);
}

void stripe_enc_destroy(struct stripe_enc *s)
{
  if (s == NULL)
    return;
  for (unsigned i = 0; i < s->window && !s->borrowed; i++)
    msd_free(s->slots[i].buf);
  msd_free(s->ready);
  msd_free(s->reserved);
  msd_free(s);
}

uint64_t stripe_enc_size(const struct stripe_enc *s)
{
  return s->size;
}

int stripe_enc_reset(struct stripe_enc *s)
{
  if (s == NULL)
    return MSD_EPARAM;
  for (unsigned i = 0; i < s->window; i++)
    if (s->slots[i].state == SLOT_TAKEN)
      return MSD_ESTATE;
  for (unsigned i = 0; i < s->window; i++)
    s->slots[i].state = SLOT_FREE;
  s->finished = false;
  s->size = s->next_index = 0;
  s->filling = NULL;
  s->fill = 0;
  s->reserving = false;
  s->nreserved = 0;
  s->ready_head = s->ready_count = 0;
  return 0;
}

static struct stripe_slot *slot_take_free(struct stripe_enc *s)
{
  for (unsigned i = 0; i < s->window; i++)
    if (s->slots[i].state == SLOT_FREE)
      return &s->slots[i];
  return NULL;
}

/* Points the slot's chunks at its own buffer (data first, then parity). */
static void slot_point_own(struct stripe_enc *s, struct stripe_slot *slot)
{
  for (int i = 0; i < s->k + s->m; i++)
    slot->st.chunk[i] = slot->buf + (size_t)i * s->unit;
}

/* Encodes a full (or padded) stripe and queues it, in index order. */
static void slot_publish(struct stripe_enc *s, struct stripe_slot *slot, size_t data_len)
{
  /* Cannot fail: the codec, pointers and unit were validated at create. */
  (void)ec_encode(s->codec, s->unit, slot->st.chunk, slot->st.chunk + s->k);
  slot->st.index = s->next_index++;
  slot->st.data_len = data_len;
  slot->state = SLOT_READY;
  s->ready[(s->ready_head + s->ready_count++) % s->window] = slot;
}

int stripe_enc_write(struct stripe_enc *s, const void *buf, size_t len, unsigned flags,
                     size_t *consumed)
{
  if (s == NULL || consumed == NULL || (buf == NULL && len > 0) || (flags & ~STRIPE_BORROW))
    return MSD_EPARAM;
  *consumed = 0;
  if (s->finished || s->reserving)
    return MSD_ESTATE;

  const unsigned char *p = buf;
  size_t sw = (size_t)s->k * s->unit;
  while (len > 0) {
    if (s->filling == NULL) {
      struct stripe_slot *slot = slot_take_free(s);
      if (slot == NULL)
        return MSD_EWINDOW;
      slot_point_own(s, slot);
      if ((flags & STRIPE_BORROW) && len >= sw) {
        /* Zero-copy: the data chunks are the caller's bytes. */
        for (int i = 0; i < s->k; i++)
          slot->st.chunk[i] = (unsigned char *)p + (size_t)i * s->unit;
        slot_publish(s, slot, sw);
        p += sw, len -= sw, *consumed += sw, s->size += sw;
        continue;
      }
      slot->state = SLOT_FILLING;
      s->filling = slot;
      s->fill = 0;
    }
    size_t n = sw - s->fill < len ? sw - s->fill : len;
    memcpy(s->filling->buf + s->fill, p, n);
    s->fill += n;
    p += n, len -= n, *consumed += n, s->size += n;
    if (s->fill == sw) {
      slot_publish(s, s->filling, sw);
      s->filling = NULL;
    }
  }
  return 0;
}

/* A free slot, pointed at its own buffer and marked `state`; NULL if none. */
static struct stripe_slot *slot_claim(struct stripe_enc *s, enum slot_state state)
{
  struct stripe_slot *slot = slot_take_free(s);
  if (slot != NULL) {
    slot_point_own(s, slot);
    slot->state = state;
  }
  return slot;
}

int stripe_enc_reserve(struct stripe_enc *s, struct stripe_span *out, unsigned max, unsigned *n)
{
  if (s == NULL || n == NULL || (out == NULL && max > 0))
    return MSD_EPARAM;
  *n = 0;
  if (s->finished)
    return MSD_ESTATE;
  s->reserving = true;
  size_t sw = (size_t)s->k * s->unit;
  if (max == 0)
    return 0;
  if (s->filling == NULL) {
    if ((s->filling = slot_claim(s, SLOT_FILLING)) == NULL)
      return 0;
    s->fill = 0;
  }
  out[(*n)++] = (struct stripe_span){s->filling->buf + s->fill, sw - s->fill};
  for (unsigned i = 0; *n < max; i++) {
    if (i == s->nreserved) {
      struct stripe_slot *slot = slot_claim(s, SLOT_RESERVED);
      if (slot == NULL)
        break;
      s->reserved[s->nreserved++] = slot;
    }
    out[(*n)++] = (struct stripe_span){s->reserved[i]->buf, sw};
  }
  return 0;
}

/* Hands back the RESERVED slots from index `from` on (those before it took
 * bytes), and a FILLING one that got no byte (an empty filling stripe would
 * otherwise be published by finish), and closes the reservation. */
static void unreserve(struct stripe_enc *s, unsigned from)
{
  for (unsigned i = from; i < s->nreserved; i++)
    s->reserved[i]->state = SLOT_FREE;
  s->nreserved = 0;
  if (s->filling != NULL && s->fill == 0) {
    s->filling->state = SLOT_FREE;
    s->filling = NULL;
  }
  s->reserving = false;
}

int stripe_enc_commit(struct stripe_enc *s, size_t len)
{
  if (s == NULL)
    return MSD_EPARAM;
  if (!s->reserving)
    return MSD_ESTATE;
  size_t sw = (size_t)s->k * s->unit;
  size_t room = s->filling ? sw - s->fill + (size_t)s->nreserved * sw : 0;
  if (len > room)
    return MSD_EPARAM;
  unsigned next = 0;
  while (len > 0) {
    size_t n = sw - s->fill < len ? sw - s->fill : len;
    s->fill += n;
    s->size += n;
    len -= n;
    if (s->fill == sw) {
      slot_publish(s, s->filling, sw);
      s->filling = NULL;
      if (next < s->nreserved) { /* the next reserved stripe takes over */
        s->filling = s->reserved[next++];
        s->filling->state = SLOT_FILLING;
        s->fill = 0;
      }
    }
  }
  unreserve(s, next);
  return 0;
}

int stripe_enc_finish(struct stripe_enc *s)
{
  if (s == NULL)
    return MSD_EPARAM;
  if (s->finished || s->reserving)
    return MSD_ESTATE;
  if (s->filling != NULL) {
    size_t sw = (size_t)s->k * s->unit;
    memset(s->filling->buf + s->fill, 0, sw - s->fill);
    slot_publish(s, s->filling, s->fill);
    s->filling = NULL;
  }
  s->finished = true;
  return 0;
}

struct stripe *stripe_enc_next(struct stripe_enc *s)
{
  if (s == NULL || s->ready_count == 0)
    return NULL;
  struct stripe_slot *slot = s->ready[s->ready_head];
  s->ready_head = (s->ready_head + 1) % s->window;
  s->ready_count--;
  slot->state = SLOT_TAKEN;
  return &slot->st;
}

void stripe_enc_release(struct stripe_enc *s, struct stripe *st)
{
  if (s == NULL || st == NULL)
    return;
  struct stripe_slot *slot = (struct stripe_slot *)st;
  if (slot < s->slots || slot >= s->slots + s->window || slot->state != SLOT_TAKEN)
    return; /* not one of ours, or released twice: ignore rather than corrupt */
  slot->state = SLOT_FREE;
}

int stripe_decode(struct ec_codec *codec, const struct stripe_geom *g, uint64_t index,
                  unsigned char *const chunk[], unsigned char *out, size_t *out_len)
{
  if (codec == NULL || g == NULL || chunk == NULL || out == NULL || out_len == NULL ||
      ec_k(codec) != g->k || ec_m(codec) != g->m)
    return MSD_EPARAM;
  if (index >= stripe_count(g))
    return MSD_ERANGE;

  int k = g->k, n = g->k + g->m;
  unsigned char *shards[EC_N_MAX];
  uint64_t avail = 0, want = 0;
  for (int i = 0; i < n; i++) {
    shards[i] = chunk[i];
    if (chunk[i] != NULL)
      avail |= 1ull << i;
    else if (i < k) {
      shards[i] = out + (size_t)i * g->unit;
      want |= 1ull << i;
    }
  }
  int rc = ec_decode(codec, g->unit, shards, avail, want);
  if (rc != 0)
    return rc;

  size_t len = stripe_data_len(g, index);
  for (int i = 0; i < k; i++) {
    size_t off = (size_t)i * g->unit;
    if (chunk[i] == NULL || chunk[i] == out + off || off >= len)
      continue;
    size_t piece = len - off < g->unit ? len - off : g->unit;
    memcpy(out + off, chunk[i], piece);
  }
  *out_len = len;
  return 0;
}
