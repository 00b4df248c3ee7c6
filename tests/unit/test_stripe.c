/* Tests for shard/stripe: streaming striping with arbitrary write splits and
 * a bounded window, and destriping from any k shards. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "shard/stripe.h"
#include "testutil.h"

/* How the source is cut into writes. */
enum split { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

/* rt_case.flags beside STRIPE_BORROW: feed through stripe_enc_reserve and
 * _commit (bytes copied into the reserved spans) instead of _write. */
#define RT_RESERVE 0x100u

struct rt_case {
  int k, m;
  size_t unit;
  uint64_t size;
  unsigned window;
  enum split split;
  unsigned flags;
};

/* Everything one round trip produces. */
struct rt_run {
  struct rt_case c;
  struct stripe_geom g;
  struct ec_codec *codec;
  unsigned char *src;
  unsigned char *shard[EC_N_MAX];
  uint64_t stripes_seen;
  unsigned max_held;
  bool ok;
};

static size_t next_piece(const struct rt_case *c, struct test_rng *r, uint64_t left)
{
  uint64_t n = left;
  if (c->split == SPLIT_BYTES)
    n = 1;
  else if (c->split == SPLIT_RANDOM) {
    /* Mix tiny, stripe-scale and multi-MiB writes. */
    switch (test_rng_below(r, 3)) {
    case 0: n = 1 + test_rng_below(r, 17); break;
    case 1: n = 1 + test_rng_below(r, 3 * (uint64_t)c->k * c->unit); break;
    default: n = 1 + test_rng_below(r, 8u << 20); break;
    }
  }
  return (size_t)(n < left ? n : left);
}

/* Takes a stripe: checks it and copies its chunks to the shard streams. */
static void collect(struct rt_run *run, const struct stripe *st)
{
  const struct rt_case *c = &run->c;
  if (st->index != run->stripes_seen || st->data_len != stripe_data_len(&run->g, st->index))
    run->ok = false;
  run->stripes_seen++;
  for (int i = 0; i < c->k + c->m; i++)
    memcpy(run->shard[i] + st->index * c->unit, st->chunk[i], c->unit);
}

/* Drains ready stripes, holding up to `window` of them and releasing them in
 * random order, as a pipelined sender would. */
static void drain(struct rt_run *run, struct stripe_enc *enc, struct stripe **held,
                  unsigned *nheld, struct test_rng *r, bool all)
{
  struct stripe *st;
  while ((st = stripe_enc_next(enc)) != NULL) {
    collect(run, st);
    held[(*nheld)++] = st;
    if (*nheld > run->max_held)
      run->max_held = *nheld;
  }
  unsigned keep = all ? 0 : (unsigned)test_rng_below(r, *nheld + 1);
  while (*nheld > keep) {
    unsigned j = (unsigned)test_rng_below(r, *nheld);
    stripe_enc_release(enc, held[j]);
    held[j] = held[--*nheld];
  }
}

/* One piece through a reservation of 1-3 spans, as a receiver would: the
 * bytes copied into the spans, then committed. *took as for _write;
 * MSD_EWINDOW when no span was free. */
static int feed_reserved(struct stripe_enc *enc, const unsigned char *p, size_t piece,
                         struct test_rng *r, size_t *took)
{
  struct stripe_span sp[3];
  unsigned n = 0;
  int rc = stripe_enc_reserve(enc, sp, 1 + (unsigned)test_rng_below(r, 3), &n);
  size_t done = 0;
  for (unsigned i = 0; rc == 0 && i < n && done < piece; i++) {
    size_t c = sp[i].len < piece - done ? sp[i].len : piece - done;
    memcpy(sp[i].p, p + done, c);
    done += c;
  }
  *took = done;
  if (rc == 0)
    rc = stripe_enc_commit(enc, done);
  return rc == 0 && done < piece ? MSD_EWINDOW : rc;
}

static void encode_all(struct rt_run *run, struct test_rng *r)
{
  const struct rt_case *c = &run->c;
  struct stripe_enc *enc;
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(run->codec, c->unit, c->window, &enc), 0);
  struct stripe *held[STRIPE_WINDOW_MAX];
  unsigned nheld = 0;
  uint64_t off = 0;
  for (int guard = 0; guard < 100000000; guard++) {
    int rc;
    if (off < c->size) {
      size_t took = 0, piece = next_piece(c, r, c->size - off);
      if (c->flags & RT_RESERVE)
        rc = feed_reserved(enc, run->src + off, piece, r, &took);
      else
        rc = stripe_enc_write(enc, run->src + off, piece, c->flags, &took);
      off += took;
      if (rc != 0 && rc != MSD_EWINDOW)
        run->ok = false;
      if (rc == 0 && took != piece)
        run->ok = false;
    } else {
      rc = stripe_enc_finish(enc);
      if (rc == 0) {
        drain(run, enc, held, &nheld, r, true);
        break;
      }
    }
    drain(run, enc, held, &nheld, r, false);
  }
  CU_ASSERT_EQUAL(stripe_enc_size(enc), c->size);
  CU_ASSERT_EQUAL(stripe_enc_finish(enc), MSD_ESTATE);
  size_t took = 9;
  CU_ASSERT_EQUAL(stripe_enc_write(enc, run->src, c->size ? 1 : 0, 0, &took), MSD_ESTATE);
  CU_ASSERT_EQUAL(took, 0);
  stripe_enc_destroy(enc);
}

/* Destripes from a random choice of k shards and compares with the source. */
static void decode_all(struct rt_run *run, struct test_rng *r)
{
  const struct rt_case *c = &run->c;
  int n = c->k + c->m;
  uint64_t lost = 0;
  int nlost = (int)test_rng_below(r, (uint64_t)c->m + 1);
  while (__builtin_popcountll(lost) < nlost)
    lost |= 1ull << test_rng_below(r, (uint64_t)n);
  unsigned char *out = msd_malloc((size_t)c->k * c->unit);
  CU_ASSERT_PTR_NOT_NULL_FATAL(out);
  for (uint64_t s = 0; s < stripe_count(&run->g); s++) {
    unsigned char *chunk[EC_N_MAX];
    for (int i = 0; i < n; i++)
      chunk[i] = (lost & (1ull << i)) ? NULL : run->shard[i] + s * c->unit;
    size_t len = 0;
    memset(out, 0xee, (size_t)c->k * c->unit);
    if (stripe_decode(run->codec, &run->g, s, chunk, out, &len) != 0 ||
        len != stripe_data_len(&run->g, s) ||
        memcmp(out, run->src + s * (uint64_t)c->k * c->unit, len) != 0) {
      printf("\n  stripe %llu of %d+%d unit %zu size %llu lost 0x%llx differs\n",
             (unsigned long long)s, c->k, c->m, c->unit, (unsigned long long)c->size,
             (unsigned long long)lost);
      run->ok = false;
      break;
    }
  }
  msd_free(out);
}

/* Padding bytes of the last stripe's data chunks must be zeros. */
static bool padding_is_zero(const struct rt_run *run)
{
  const struct rt_case *c = &run->c;
  uint64_t sw = (uint64_t)c->k * c->unit, total = stripe_count(&run->g) * sw;
  for (uint64_t p = c->size; p < total; p++) {
    uint64_t s = p / sw, in = p % sw;
    if (run->shard[in / c->unit][s * c->unit + in % c->unit] != 0)
      return false;
  }
  return true;
}

static void roundtrip(const struct rt_case *c, struct test_rng *r)
{
  struct rt_run run = {.c = *c, .ok = true};
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&run.g, c->k, c->m, c->unit, c->size), 0);
  CU_ASSERT_EQUAL_FATAL(ec_create(c->k, c->m, &run.codec), 0);
  run.src = msd_malloc(c->size ? c->size : 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(run.src);
  test_rng_fill(r, run.src, c->size);
  for (int i = 0; i < c->k + c->m; i++) {
    run.shard[i] = msd_malloc(stripe_shard_size(&run.g) + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(run.shard[i]);
  }
  encode_all(&run, r);
  CU_ASSERT_EQUAL(run.stripes_seen, stripe_count(&run.g));
  CU_ASSERT(run.max_held <= c->window);
  CU_ASSERT(padding_is_zero(&run));
  decode_all(&run, r);
  if (!run.ok)
    printf("\n  round trip failed: %d+%d unit %zu size %llu window %u split %d flags %u\n",
           c->k, c->m, c->unit, (unsigned long long)c->size, c->window, c->split, c->flags);
  CU_ASSERT(run.ok);
  for (int i = 0; i < c->k + c->m; i++)
    msd_free(run.shard[i]);
  msd_free(run.src);
  ec_destroy(run.codec);
}

static void test_geometry(void)
{
  struct stripe_geom g;
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 4, 2, 4096, 0), 0);
  CU_ASSERT_EQUAL(stripe_count(&g), 0);
  CU_ASSERT_EQUAL(stripe_shard_size(&g), 0);
  CU_ASSERT_EQUAL(stripe_data_len(&g, 0), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 4, 2, 4096, 4 * 4096 + 1), 0);
  CU_ASSERT_EQUAL(stripe_count(&g), 2);
  CU_ASSERT_EQUAL(stripe_shard_size(&g), 2 * 4096);
  CU_ASSERT_EQUAL(stripe_data_len(&g, 0), 4 * 4096);
  CU_ASSERT_EQUAL(stripe_data_len(&g, 1), 1);
  CU_ASSERT_EQUAL(stripe_data_len(&g, 2), 0);
}

/* The edge sizes from the issue, each with whole, byte-by-byte and random
 * writes, both copying and zero-copy. */
static void test_edge_sizes(void)
{
  struct test_rng r = test_rng_for(21);
  const size_t u = 4096;
  const int k = 4, m = 2;
  const uint64_t sw = 4 * u; /* k x unit */
  const uint64_t sizes[] = {0, 1, u - 1, u, sw - 1, sw, sw + 1, 3 * sw + 7};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (int split = SPLIT_WHOLE; split <= SPLIT_RANDOM; split++)
      for (unsigned f = 0; f < 3; f++) {
        unsigned flags = f == 2 ? RT_RESERVE : f;
        if (split == SPLIT_BYTES && sizes[i] > 2 * sw)
          continue;
        struct rt_case c = {k, m, u, sizes[i], 1 + (unsigned)test_rng_below(&r, 3),
                            (enum split)split, flags};
        roundtrip(&c, &r);
      }
}

static void test_random_large_sizes(void)
{
  struct test_rng r = test_rng_for(22);
  static const int km[][2] = {{4, 2}, {6, 3}, {8, 3}, {10, 4}, {3, 0}};
  for (int t = 0; t < 12; t++) {
    const int *p = km[test_rng_below(&r, 5)];
    struct rt_case c = {p[0], p[1], 4096u << test_rng_below(&r, 5),
                        test_rng_below(&r, 24u << 20), 1 + (unsigned)test_rng_below(&r, 6),
                        SPLIT_RANDOM, t % 3 == 2 ? RT_RESERVE : (unsigned)test_rng_below(&r, 2)};
    roundtrip(&c, &r);
  }
}

/* Zero-copy: whole stripes are encoded from the caller's bytes in place. */
static void test_borrow_is_zero_copy(void)
{
  struct ec_codec *codec;
  struct stripe_enc *enc;
  CU_ASSERT_EQUAL_FATAL(ec_create(4, 2, &codec), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, 4096, 2, &enc), 0);
  static unsigned char src[2 * 4 * 4096];
  size_t took;
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, sizeof src, STRIPE_BORROW, &took), 0);
  CU_ASSERT_EQUAL(took, sizeof src);
  struct stripe *st = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_PTR_EQUAL(st->chunk[0], src);
  CU_ASSERT_PTR_EQUAL(st->chunk[3], src + 3 * 4096);
  stripe_enc_release(enc, st);
  stripe_enc_destroy(enc);
  ec_destroy(codec);
}

/* A full window refuses more bytes (memory stays bounded) until a stripe is
 * released; nothing is lost across the pause. */
static void test_window_bounds_memory(void)
{
  struct ec_codec *codec;
  struct stripe_enc *enc;
  CU_ASSERT_EQUAL_FATAL(ec_create(2, 1, &codec), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, 4096, 2, &enc), 0);
  static unsigned char src[5 * 2 * 4096];
  size_t took;
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, sizeof src, 0, &took), MSD_EWINDOW);
  CU_ASSERT_EQUAL(took, 2 * 2 * 4096);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, 1, 0, &took), MSD_EWINDOW);
  CU_ASSERT_EQUAL(took, 0);
  struct stripe *a = stripe_enc_next(enc), *b = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_PTR_NULL(stripe_enc_next(enc));
  stripe_enc_release(enc, b);
  stripe_enc_release(enc, b); /* a double release is ignored */
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, 2 * 4096 + 1, 0, &took), MSD_EWINDOW);
  CU_ASSERT_EQUAL(took, 2 * 4096); /* stripe 2 filled b's slot; no slot for the byte */
  stripe_enc_release(enc, a);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, 1, 0, &took), 0);
  CU_ASSERT_EQUAL(took, 1);
  CU_ASSERT_EQUAL(stripe_enc_finish(enc), 0);
  struct stripe *c = stripe_enc_next(enc), *d = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(c->index, 2);
  CU_ASSERT_EQUAL(d->index, 3);
  CU_ASSERT_EQUAL(d->data_len, 1);
  stripe_enc_release(enc, c);
  stripe_enc_release(enc, d);
  stripe_enc_destroy(enc);
  ec_destroy(codec);
}

/* Reserved spans are the window's own memory; bytes count only once
 * committed, buffers they did not reach go back, a stripe filled exactly
 * is not followed by an empty one, and _write/_finish wait for the commit. */
static void test_reserve_commit(void)
{
  struct ec_codec *codec;
  struct stripe_enc *enc;
  CU_ASSERT_EQUAL_FATAL(ec_create(2, 1, &codec), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, 4096, 3, &enc), 0);
  const size_t sw = 2 * 4096;
  struct stripe_span sp[4];
  unsigned n;
  size_t took;
  CU_ASSERT_EQUAL(stripe_enc_commit(enc, 0), MSD_ESTATE); /* nothing open */
  CU_ASSERT_EQUAL(stripe_enc_reserve(enc, sp, 4, &n), 0);
  CU_ASSERT_EQUAL(n, 3); /* the whole window */
  CU_ASSERT_EQUAL(sp[0].len, sw);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, "x", 1, 0, &took), MSD_ESTATE);
  CU_ASSERT_EQUAL(stripe_enc_finish(enc), MSD_ESTATE);
  CU_ASSERT_EQUAL(stripe_enc_commit(enc, 3 * sw + 1), MSD_EPARAM);
  memset(sp[0].p, 5, sw);
  memset(sp[1].p, 6, 10);
  CU_ASSERT_EQUAL(stripe_enc_commit(enc, sw + 10), 0);
  CU_ASSERT_EQUAL(stripe_enc_size(enc), sw + 10);
  struct stripe *a = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  CU_ASSERT_PTR_EQUAL(a->chunk[0], sp[0].p);
  CU_ASSERT_PTR_NULL(stripe_enc_next(enc));
  /* The third buffer came back: with a held, two spans are left. */
  unsigned char *second = sp[1].p;
  CU_ASSERT_EQUAL(stripe_enc_reserve(enc, sp, 4, &n), 0);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_PTR_EQUAL(sp[0].p, second + 10);
  CU_ASSERT_EQUAL(sp[0].len, sw - 10);
  memset(sp[0].p, 6, sw - 10);
  CU_ASSERT_EQUAL(stripe_enc_commit(enc, sw - 10), 0); /* stripe 1 filled exactly */
  CU_ASSERT_EQUAL(stripe_enc_reserve(enc, sp, 1, &n), 0); /* then PUT_END, say */
  CU_ASSERT_EQUAL(stripe_enc_commit(enc, 0), 0);
  CU_ASSERT_EQUAL(stripe_enc_finish(enc), 0);
  struct stripe *b = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_EQUAL(b->index, 1);
  CU_ASSERT_EQUAL(b->chunk[0][0], 6);
  CU_ASSERT_PTR_NULL(stripe_enc_next(enc)); /* no empty stripe 2 */
  CU_ASSERT_EQUAL(stripe_enc_reserve(enc, sp, 1, &n), MSD_ESTATE);
  stripe_enc_release(enc, a);
  stripe_enc_release(enc, b);
  stripe_enc_destroy(enc);
  ec_destroy(codec);
}

/* Reset reuses the buffers for a new object, but never under a stripe the
 * caller still holds. */
static void test_reset_starts_a_new_object(void)
{
  struct ec_codec *codec;
  struct stripe_enc *enc;
  CU_ASSERT_EQUAL_FATAL(ec_create(2, 1, &codec), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, 4096, 2, &enc), 0);
  static unsigned char src[3 * 4096];
  memset(src, 7, sizeof src);
  size_t took;
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, sizeof src, 0, &took), 0);
  struct stripe *st = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(stripe_enc_reset(enc), MSD_ESTATE);
  stripe_enc_release(enc, st);
  CU_ASSERT_EQUAL(stripe_enc_reset(enc), 0);
  CU_ASSERT_EQUAL(stripe_enc_size(enc), 0);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, src, 10, 0, &took), 0);
  CU_ASSERT_EQUAL(stripe_enc_finish(enc), 0);
  st = stripe_enc_next(enc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(st->index, 0);
  CU_ASSERT_EQUAL(st->data_len, 10);
  CU_ASSERT_EQUAL(st->chunk[0][10], 0); /* padding, not the old object's bytes */
  CU_ASSERT_PTR_NULL(stripe_enc_next(enc));
  stripe_enc_release(enc, st);
  stripe_enc_destroy(enc);
  ec_destroy(codec);
}

/* An encoder over caller memory puts its stripes inside that memory, and
 * encodes what the allocating one does; unfit memory is refused. */
static void test_create_in_uses_caller_memory(void)
{
  struct ec_codec *codec;
  struct stripe_enc *a, *b;
  enum { UNIT = 4096, WIN = 2, BYTES = WIN * 3 * UNIT };
  static _Alignas(64) unsigned char arena[BYTES + 64];
  CU_ASSERT_EQUAL_FATAL(ec_create(2, 1, &codec), 0);
  CU_ASSERT_EQUAL(stripe_enc_create_in(codec, UNIT, WIN, arena, BYTES - 1, &b), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_create_in(codec, UNIT, WIN, arena + 1, BYTES, &b), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_create_in(codec, UNIT, WIN, NULL, BYTES, &b), MSD_EPARAM);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create_in(codec, UNIT, WIN, arena, BYTES, &b), 0);
  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, UNIT, WIN, &a), 0);
  static unsigned char src[2 * UNIT + 100];
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (unsigned char)(i * 31 + 7);
  size_t took;
  struct stripe_enc *enc[2] = {a, b};
  struct stripe *st[2][2];
  for (int e = 0; e < 2; e++) {
    CU_ASSERT_EQUAL(stripe_enc_write(enc[e], src, sizeof src, 0, &took), 0);
    CU_ASSERT_EQUAL(stripe_enc_finish(enc[e]), 0);
    st[e][0] = stripe_enc_next(enc[e]);
    st[e][1] = stripe_enc_next(enc[e]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st[e][1]);
  }
  for (int s = 0; s < 2; s++)
    for (int c = 0; c < 3; c++) {
      CU_ASSERT(st[1][s]->chunk[c] >= arena && st[1][s]->chunk[c] + UNIT <= arena + BYTES);
      CU_ASSERT(memcmp(st[0][s]->chunk[c], st[1][s]->chunk[c], UNIT) == 0);
    }
  for (int e = 0; e < 2; e++) {
    stripe_enc_release(enc[e], st[e][0]);
    stripe_enc_release(enc[e], st[e][1]);
    stripe_enc_destroy(enc[e]); /* must not free the arena (ASan would say) */
  }
  ec_destroy(codec);
}

static void test_bad_input(void)
{
  struct ec_codec *codec;
  struct stripe_enc *enc = NULL;
  struct stripe_geom g;
  CU_ASSERT_EQUAL_FATAL(ec_create(4, 2, &codec), 0);
  const size_t bad_units[] = {0, 64, 4095, 4100, 4096 + 32, (64u << 20) + 64, SIZE_MAX};
  for (size_t i = 0; i < sizeof bad_units / sizeof bad_units[0]; i++) {
    CU_ASSERT_EQUAL(stripe_enc_create(codec, bad_units[i], 2, &enc), MSD_EUNIT);
    CU_ASSERT_EQUAL(stripe_geom_init(&g, 4, 2, bad_units[i], 10), MSD_EUNIT);
  }
  CU_ASSERT_EQUAL(stripe_geom_init(&g, 0, 2, 4096, 10), MSD_EEC_PARAMS);
  CU_ASSERT_EQUAL(stripe_enc_create(codec, 4096, 0, &enc), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_create(codec, 4096, STRIPE_WINDOW_MAX + 1, &enc), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_create(NULL, 4096, 2, &enc), MSD_EPARAM);
  CU_ASSERT_PTR_NULL(enc);

  CU_ASSERT_EQUAL_FATAL(stripe_enc_create(codec, 4096, 2, &enc), 0);
  size_t took;
  CU_ASSERT_EQUAL(stripe_enc_write(enc, NULL, 5, 0, &took), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, "x", 1, 0x80, &took), MSD_EPARAM);
  CU_ASSERT_EQUAL(stripe_enc_write(enc, "x", 1, 0, NULL), MSD_EPARAM);
  stripe_enc_destroy(enc);

  /* Destriping with fewer than k chunks, or past the end. */
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 4, 2, 4096, 5 * 4096), 0);
  static unsigned char buf[6][4096], out[4 * 4096];
  unsigned char *chunk[EC_N_MAX] = {buf[0], NULL, NULL, NULL, buf[4], buf[5]};
  size_t len;
  CU_ASSERT_EQUAL(stripe_decode(codec, &g, 0, chunk, out, &len), MSD_ETOO_MANY_ERASURES);
  chunk[1] = buf[1];
  CU_ASSERT_EQUAL(stripe_decode(codec, &g, 2, chunk, out, &len), MSD_ERANGE);
  CU_ASSERT_EQUAL(stripe_decode(codec, &g, 0, chunk, NULL, &len), MSD_EPARAM);
  CU_ASSERT_EQUAL_FATAL(stripe_geom_init(&g, 6, 3, 4096, 5), 0);
  CU_ASSERT_EQUAL(stripe_decode(codec, &g, 0, chunk, out, &len), MSD_EPARAM); /* wrong codec */
  ec_destroy(codec);
}

static void test_create_survives_allocation_failures(void)
{
  struct ec_codec *codec;
  CU_ASSERT_EQUAL_FATAL(ec_create(4, 2, &codec), 0);
  int failures = 0;
  for (int n = 1; n < 32; n++) {
    struct stripe_enc *enc = NULL;
    msd_fault_arm(n);
    int rc = stripe_enc_create(codec, 4096, 4, &enc);
    msd_fault_arm(0);
    if (rc == 0) {
      stripe_enc_destroy(enc);
      break;
    }
    CU_ASSERT_EQUAL(rc, -ENOMEM);
    failures++;
  }
  CU_ASSERT_EQUAL(failures, 3 + 4);
  ec_destroy(codec);
}

const struct test_case stripe_tests[] = {
    {"geometry", test_geometry},
    {"edge sizes round-trip", test_edge_sizes},
    {"random large sizes and splits", test_random_large_sizes},
    {"borrowed stripes are zero-copy", test_borrow_is_zero_copy},
    {"window bounds memory", test_window_bounds_memory},
    {"reserve and commit", test_reserve_commit},
    {"reset starts a new object", test_reset_starts_a_new_object},
    {"create_in uses caller memory", test_create_in_uses_caller_memory},
    {"bad input", test_bad_input},
    {"create survives allocation failures", test_create_survives_allocation_failures},
    {NULL, NULL}};
