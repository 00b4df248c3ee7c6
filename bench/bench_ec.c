/* `medshard bench ec`: erasure-coding throughput through the striper and
 * destriper, beside the raw ISA-L kernel on the same buffers in the same run.
 * GB/s counts object (data) bytes per second, 10^9 bytes per GB. */
#include <errno.h>
#include <getopt.h>
#include <isa-l/erasure_code.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "common/alloc.h"
#include "common/err.h"
#include "shard/ec.h"
#include "shard/stripe.h"

#define WINDOW 4 /* stripe buffers in flight, for the striper and the raw loop */

struct ec_bench {
  int k, m;
  size_t unit;
  uint64_t size; /* a whole number of stripes */
  unsigned rounds;
  bool json;
  uint64_t nstripes;
  struct ec_codec *codec;
  unsigned char *src;               /* the object */
  unsigned char *shard[EC_N_MAX];   /* its encoded shards, size/k each */
  unsigned char *scratch;           /* WINDOW x (k+m) x unit outputs */
  struct stripe_enc *enc;           /* reused across rounds, like a connection's */
};

typedef double (*bench_fn)(struct ec_bench *b);

/* Runs each function once per round, interleaved so that a noisy neighbour
 * on a shared machine hurts them alike, and keeps each one's best time in
 * best[i]. Returns 0 or the first negative error code. */
static int best_of(struct ec_bench *b, const bench_fn *fns, double *best, int nfns)
{
  for (unsigned r = 0; r < b->rounds; r++)
    for (int i = 0; i < nfns; i++) {
      double t = fns[i](b);
      if (t < 0)
        return (int)t;
      if (r == 0 || t < best[i])
        best[i] = t;
    }
  return 0;
}

static unsigned char *src_chunk(struct ec_bench *b, uint64_t s, int i)
{
  return b->src + (s * (uint64_t)b->k + (uint64_t)i) * b->unit;
}

static unsigned char *scratch_chunk(struct ec_bench *b, uint64_t s, int i)
{
  return b->scratch + ((s % WINDOW) * (uint64_t)(b->k + b->m) + (uint64_t)i) * b->unit;
}

/* The peer: ISA-L's ec_encode_data over the same stripes, parity into a
 * window of buffers the size the striper uses. */
static double run_raw_encode(struct ec_bench *b)
{
  static unsigned char tables[32 * EC_K_MAX * EC_M_MAX];
  unsigned char matrix[EC_N_MAX * EC_K_MAX];
  gf_gen_cauchy1_matrix(matrix, b->k + b->m, b->k);
  ec_init_tables(b->k, b->m, matrix + b->k * b->k, tables);
  unsigned char *data[EC_K_MAX], *par[EC_M_MAX];
  double t0 = bench_now();
  for (uint64_t s = 0; s < b->nstripes; s++) {
    for (int i = 0; i < b->k; i++)
      data[i] = src_chunk(b, s, i);
    for (int j = 0; j < b->m; j++)
      par[j] = scratch_chunk(b, s, b->k + j);
    ec_encode_data((int)b->unit, b->k, b->m, tables, data, par);
  }
  return bench_now() - t0;
}

/* Streams the object through a striper; if keep, copies every chunk into
 * the shard buffers (setup, not timed). Returns seconds or a negative code. */
static double stripe_through(struct ec_bench *b, unsigned flags, bool keep)
{
  struct stripe_enc *enc = b->enc;
  int rc = stripe_enc_reset(enc);
  if (rc != 0)
    return rc;
  double t0 = bench_now();
  uint64_t off = 0;
  bool finished = false;
  while (!finished) {
    if (off < b->size) {
      size_t took = 0;
      rc = stripe_enc_write(enc, b->src + off, (size_t)(b->size - off), flags, &took);
      off += took;
    } else {
      rc = stripe_enc_finish(enc);
      finished = rc == 0;
    }
    if (rc != 0 && rc != MSD_EWINDOW)
      break;
    struct stripe *st;
    while ((st = stripe_enc_next(enc)) != NULL) {
      for (int i = 0; keep && i < b->k + b->m; i++)
        memcpy(b->shard[i] + st->index * b->unit, st->chunk[i], b->unit);
      stripe_enc_release(enc, st);
    }
  }
  double t = bench_now() - t0;
  return finished ? t : rc;
}

static double run_striper_zero_copy(struct ec_bench *b) { return stripe_through(b, STRIPE_BORROW, false); }
static double run_striper_copy(struct ec_bench *b) { return stripe_through(b, 0, false); }

/* Decode tables for rebuilding data shards 0 and 1 from shards 2..k+1 (the
 * first k survivors), computed with ISA-L directly for the raw peer. */
static int raw_decode_tables(const struct ec_bench *b, unsigned char *tables)
{
  int k = b->k;
  unsigned char matrix[EC_N_MAX * EC_K_MAX], sub[EC_K_MAX * EC_K_MAX], inv[EC_K_MAX * EC_K_MAX];
  gf_gen_cauchy1_matrix(matrix, k + b->m, k);
  memcpy(sub, matrix + 2 * k, (size_t)(k * k)); /* rows 2..k+1 */
  if (gf_invert_matrix(sub, inv, k) != 0)
    return MSD_ESINGULAR;
  ec_init_tables(k, 2, inv, tables); /* rows 0 and 1 of the inverse */
  return 0;
}

static double run_raw_decode(struct ec_bench *b)
{
  static unsigned char tables[32 * EC_K_MAX * 2];
  if (raw_decode_tables(b, tables) != 0)
    return MSD_ESINGULAR;
  unsigned char *src[EC_K_MAX], *dst[2];
  double t0 = bench_now();
  for (uint64_t s = 0; s < b->nstripes; s++) {
    for (int i = 0; i < b->k; i++)
      src[i] = b->shard[i + 2] + s * b->unit;
    dst[0] = scratch_chunk(b, s, 0);
    dst[1] = scratch_chunk(b, s, 1);
    ec_encode_data((int)b->unit, b->k, 2, tables, src, dst);
  }
  return bench_now() - t0;
}

/* The destriper with data shards 0 and 1 lost: decodes them and reassembles
 * each stripe's object bytes into a window of output buffers. */
static double run_destriper(struct ec_bench *b)
{
  struct stripe_geom g;
  int rc = stripe_geom_init(&g, b->k, b->m, b->unit, b->size);
  if (rc != 0)
    return rc;
  unsigned char *chunk[EC_N_MAX];
  double t0 = bench_now();
  for (uint64_t s = 0; s < b->nstripes; s++) {
    for (int i = 0; i < b->k + b->m; i++)
      chunk[i] = i < 2 ? NULL : b->shard[i] + s * b->unit;
    size_t len;
    rc = stripe_decode(b->codec, &g, s, chunk, scratch_chunk(b, s, 0), &len);
    if (rc != 0)
      return rc;
  }
  return bench_now() - t0;
}

/* Self-check before timing anything: the destriper's output must be the
 * object, or the figures would measure a bug. */
static int check_roundtrip(struct ec_bench *b)
{
  struct stripe_geom g;
  int rc = stripe_geom_init(&g, b->k, b->m, b->unit, b->size);
  unsigned char *chunk[EC_N_MAX];
  for (uint64_t s = 0; rc == 0 && s < b->nstripes; s++) {
    for (int i = 0; i < b->k + b->m; i++)
      chunk[i] = i < 2 && b->m >= 2 ? NULL : b->shard[i] + s * b->unit;
    size_t len;
    rc = stripe_decode(b->codec, &g, s, chunk, scratch_chunk(b, s, 0), &len);
    if (rc == 0 && memcmp(scratch_chunk(b, s, 0), src_chunk(b, s, 0), len) != 0)
      rc = MSD_EDECODE;
  }
  return rc;
}

static int parse_args(int argc, char **argv, struct ec_bench *b)
{
  static const struct option opts[] = {
      {"k", required_argument, NULL, 'k'},     {"m", required_argument, NULL, 'm'},
      {"unit", required_argument, NULL, 'u'},  {"size", required_argument, NULL, 's'},
      {"rounds", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
  uint64_t v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'j') {
      b->json = true;
      continue;
    }
    if (c == 'h' || c == '?')
      return c == 'h' ? 1 : MSD_EPARAM;
    if (bench_parse_size(optarg, &v) != 0 || v > (1ull << 40)) {
      const struct option *o = opts;
      while (o->val != c)
        o++;
      fprintf(stderr, "medshard bench ec: --%s %s: not a size (try 4096, 64K, 1M)\n",
              o->name, optarg);
      return MSD_EPARAM;
    }
    switch (c) {
    case 'k': b->k = v > 1000 ? 1000 : (int)v; break;
    case 'm': b->m = v > 1000 ? 1000 : (int)v; break;
    case 'u': b->unit = (size_t)v; break;
    case 's': b->size = v; break;
    case 'r': b->rounds = v == 0 ? 1 : v > 100 ? 100 : (unsigned)v; break;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "medshard bench ec: unexpected argument '%s'\n", argv[optind]);
    return MSD_EPARAM;
  }
  return 0;
}

static void usage(FILE *f)
{
  fprintf(f, "usage: medshard bench ec [--k K] [--m M] [--unit BYTES] [--size BYTES]\n"
             "                        [--rounds N] [--json]\n"
             "Encodes and decodes --size bytes (default 256M) through the striper and\n"
             "the destriper (2 data shards lost) beside raw ISA-L on the same buffers.\n"
             "Defaults: --k 4 --m 2 --unit 1M --rounds 5 (best of).\n");
}

static void bench_free(struct ec_bench *b)
{
  for (int i = 0; i < EC_N_MAX; i++)
    msd_free(b->shard[i]);
  msd_free(b->scratch);
  msd_free(b->src);
  stripe_enc_destroy(b->enc);
  ec_destroy(b->codec);
}

/* Validates the parameters with the library's own checks (so the messages
 * match what users of the API see) and allocates the buffers. */
static int bench_setup(struct ec_bench *b)
{
  int rc = ec_check_params(b->k, b->m);
  if (rc == 0)
    rc = stripe_check_unit(b->unit);
  if (rc != 0) {
    fprintf(stderr, "medshard bench ec: k=%d m=%d unit=%zu: %s\n", b->k, b->m, b->unit,
            msd_strerror(rc));
    return rc;
  }
  uint64_t sw = (uint64_t)b->k * b->unit;
  b->nstripes = b->size / sw + (b->size % sw != 0);
  if (b->nstripes == 0)
    b->nstripes = 1;
  b->size = b->nstripes * sw;
  rc = ec_create(b->k, b->m, &b->codec);
  if (rc == 0)
    rc = stripe_enc_create(b->codec, b->unit, WINDOW, &b->enc);
  if (rc != 0)
    goto fail;
  b->src = msd_aligned_alloc(64, b->size);
  b->scratch = msd_aligned_alloc(64, WINDOW * (size_t)(b->k + b->m) * b->unit);
  rc = (b->src && b->scratch) ? 0 : -ENOMEM;
  for (int i = 0; rc == 0 && i < b->k + b->m; i++)
    if ((b->shard[i] = msd_aligned_alloc(64, b->nstripes * b->unit)) == NULL)
      rc = -ENOMEM;
  if (rc != 0)
    goto fail;
  bench_fill(b->src, b->size, 42);
  /* Touch the output window now so no timed run pays its page faults. */
  memset(b->scratch, 0, WINDOW * (size_t)(b->k + b->m) * b->unit);
  double t = stripe_through(b, 0, true);
  rc = t < 0 ? (int)t : check_roundtrip(b);
  if (rc == 0)
    return 0;
fail:
  fprintf(stderr, "medshard bench ec: setup failed: %s\n", msd_strerror(rc));
  return rc;
}

struct ec_results {
  double raw_enc, zc_enc, copy_enc, raw_dec, dec;
};

static void print_results(const struct ec_bench *b, const struct ec_results *r)
{
  double g_raw = bench_gbps(b->size, r->raw_enc), g_zc = bench_gbps(b->size, r->zc_enc);
  double g_copy = bench_gbps(b->size, r->copy_enc);
  double g_rdec = bench_gbps(b->size, r->raw_dec), g_dec = bench_gbps(b->size, r->dec);
  if (b->json) {
    printf("{\"bench\":\"ec\",\"k\":%d,\"m\":%d,\"unit\":%zu,\"bytes\":%llu,\"rounds\":%u,"
           "\"raw_encode_gbps\":%.3f,\"striper_encode_gbps\":%.3f,\"encode_ratio\":%.3f,"
           "\"striper_copy_encode_gbps\":%.3f",
           b->k, b->m, b->unit, (unsigned long long)b->size, b->rounds, g_raw, g_zc,
           g_zc / g_raw, g_copy);
    if (b->m >= 2)
      printf(",\"raw_decode_gbps\":%.3f,\"destriper_decode_gbps\":%.3f,\"decode_ratio\":%.3f",
             g_rdec, g_dec, g_dec / g_rdec);
    printf("}\n");
    return;
  }
  printf("medshard bench ec: k=%d m=%d unit=%zu, %.1f MiB object, best of %u rounds\n", b->k,
         b->m, b->unit, (double)b->size / (1 << 20), b->rounds);
  printf("  encode  raw ISA-L ec_encode_data     %8.2f GB/s\n", g_raw);
  printf("          striper, zero-copy          %8.2f GB/s   ratio %.2f\n", g_zc, g_zc / g_raw);
  printf("          striper, copying input      %8.2f GB/s   ratio %.2f\n", g_copy,
         g_copy / g_raw);
  if (b->m >= 2) {
    printf("  decode  raw ISA-L, 2 data erasures  %8.2f GB/s\n", g_rdec);
    printf("          destriper, 2 data erasures  %8.2f GB/s   ratio %.2f\n", g_dec,
           g_dec / g_rdec);
  }
  printf("  (GB/s = 10^9 object bytes per second)\n");
}

int bench_ec_main(int argc, char **argv)
{
  struct ec_bench b = {.k = 4, .m = 2, .unit = STRIPE_UNIT_DEFAULT, .size = 256ull << 20,
                       .rounds = 5};
  int rc = parse_args(argc, argv, &b);
  if (rc != 0) {
    usage(rc > 0 ? stdout : stderr);
    return rc > 0 ? 0 : 2;
  }
  if (bench_setup(&b) != 0) {
    bench_free(&b);
    return 1;
  }
  static const bench_fn enc_fns[] = {run_raw_encode, run_striper_zero_copy, run_striper_copy};
  static const bench_fn dec_fns[] = {run_raw_decode, run_destriper};
  double t[5] = {0};
  rc = best_of(&b, enc_fns, t, 3);
  if (rc == 0 && b.m >= 2)
    rc = best_of(&b, dec_fns, t + 3, 2);
  if (rc != 0) {
    fprintf(stderr, "medshard bench ec: run failed: %s\n", msd_strerror(rc));
    bench_free(&b);
    return 1;
  }
  struct ec_results r = {t[0], t[1], t[2], t[3], t[4]};
  print_results(&b, &r);
  bench_free(&b);
  return 0;
}
