/* The object load of `medshard bench put|get`: bodies generated on the fly
 * from a counter-based PRNG and streamed through msd_put's read callback,
 * whole GETs into a sink that touches (sums) every byte and checks it, and
 * the small-object ingest from several client threads. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/bench_obj_int.h"
#include "cluster/client.h"
#include "common/alloc.h"
#include "common/err.h"

#define SMALL_ERRORS_SHOWN 5

/* ---- bodies ---- */

/* splitmix64 of word `i` of object `seed`: every word on its own, so the
 * generator keeps no state between chunks and vectorises. */
static inline uint64_t body_word(uint64_t seed, uint64_t i)
{
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void obj_body_fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
  while (len > 0 && off % 8 != 0) { /* an unaligned head: byte by byte */
    uint64_t w = body_word(seed, off / 8);
    *buf++ = ((const uint8_t *)&w)[off % 8];
    off++, len--;
  }
  uint64_t i = off / 8;
  size_t words = len / 8;
  for (size_t j = 0; j < words; j++) {
    uint64_t w = body_word(seed, i + j);
    memcpy(buf + 8 * j, &w, 8);
  }
  if (len % 8 != 0) {
    uint64_t w = body_word(seed, i + words);
    memcpy(buf + 8 * words, &w, len % 8);
  }
}

uint64_t obj_body_sum(uint64_t seed, uint64_t size)
{
  uint64_t sum = 0, words = size / 8;
  for (uint64_t i = 0; i < words; i++)
    sum += body_word(seed, i);
  if (size % 8 != 0) {
    uint64_t w = body_word(seed, words), tail = 0;
    memcpy(&tail, &w, size % 8);
    sum += tail;
  }
  return sum;
}

struct body {
  uint64_t seed, size, pos;
};

static ssize_t body_read(void *ctx, void *buf, size_t cap)
{
  struct body *b = ctx;
  size_t n = b->size - b->pos < cap ? (size_t)(b->size - b->pos) : cap;
  obj_body_fill(b->seed, b->pos, buf, n);
  b->pos += n;
  return (ssize_t)n;
}

/* Sums the bytes of a GET as little-endian words at 8-aligned object
 * offsets, whatever the chunk boundaries, so the total equals
 * obj_body_sum when the bytes are the body's. */
struct sink {
  uint64_t next, sum;
  uint8_t carry[8];
  size_t ncarry;
};

static int sink_write(void *ctx, uint64_t off, const void *buf, size_t len)
{
  struct sink *s = ctx;
  const uint8_t *p = buf;
  if (off != s->next)
    return MSD_EFRAME; /* a whole read arrives in order */
  s->next += len;
  if (s->ncarry > 0) {
    size_t t = 8 - s->ncarry < len ? 8 - s->ncarry : len;
    memcpy(s->carry + s->ncarry, p, t);
    s->ncarry += t, p += t, len -= t;
    if (s->ncarry < 8)
      return 0;
    uint64_t w;
    memcpy(&w, s->carry, 8);
    s->sum += w;
    s->ncarry = 0;
  }
  uint64_t a = 0, b = 0; /* two chains: the loads, not the adds, set the pace */
  for (; len >= 16; p += 16, len -= 16) {
    uint64_t x, y;
    memcpy(&x, p, 8);
    memcpy(&y, p + 8, 8);
    a += x, b += y;
  }
  s->sum += a + b;
  if (len >= 8) {
    uint64_t x;
    memcpy(&x, p, 8);
    s->sum += x;
    p += 8, len -= 8;
  }
  memcpy(s->carry, p, len);
  s->ncarry = len;
  return 0;
}

static uint64_t sink_total(struct sink *s)
{
  if (s->ncarry > 0) {
    memset(s->carry + s->ncarry, 0, 8 - s->ncarry);
    uint64_t w;
    memcpy(&w, s->carry, 8);
    s->sum += w;
    s->ncarry = 0;
  }
  return s->sum;
}

/* ---- one big object ---- */

int obj_put(struct msd_client *c, const char *bucket, const char *key, uint64_t seed,
            uint64_t size, double *secs, Medshard__Manifest **m)
{
  struct body b = {.seed = seed, .size = size};
  struct msd_put_opts po = {.has_size = true, .size = size};
  struct msd_error e = {0};
  double t0 = bench_now();
  int rc = msd_put(c, bucket, key, &po, body_read, &b, m, &e);
  *secs = bench_now() - t0;
  if (rc != 0)
    fprintf(stderr, "medshard bench: PUT %s/%s (%" PRIu64 " bytes) failed: %s\n", bucket, key,
            size, e.msg);
  return rc;
}

int obj_get(struct msd_client *c, const char *bucket, const char *key, uint64_t size,
            uint64_t sum, double *secs)
{
  struct sink s = {0};
  struct msd_error e = {0};
  double t0 = bench_now();
  int rc = msd_get(c, bucket, key, NULL, sink_write, &s, NULL, &e);
  *secs = bench_now() - t0;
  if (rc != 0) {
    fprintf(stderr, "medshard bench: GET %s/%s failed: %s\n", bucket, key, e.msg);
    return rc;
  }
  if (s.next != size || sink_total(&s) != sum) {
    fprintf(stderr, "medshard bench: GET %s/%s returned %" PRIu64 " bytes that are not the %"
            PRIu64 " bytes stored (word sums differ)\n", bucket, key, s.next, size);
    return MSD_ECHECKSUM;
  }
  return 0;
}

/* ---- small-object ingest ---- */

struct small_run {
  const char *addrs, *bucket, *prefix;
  uint64_t count;
  pthread_mutex_t mu; /* guards everything below */
  uint64_t next, done, failed;
  unsigned started, ready; /* threads that opened their client */
  pthread_cond_t cv;
  bool go;
  double t_start, t_end;
  double *lat_ms;
  size_t nlat;
};

/* A thread has its client (or failed to): the clock starts once every
 * thread is here, so connecting is not part of the ingest time. */
static void small_arrived(struct small_run *r, bool ok)
{
  pthread_mutex_lock(&r->mu);
  r->ready += ok;
  r->started++;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void small_record(struct small_run *r, int rc, const struct msd_error *e, uint64_t i,
                         double ms)
{
  pthread_mutex_lock(&r->mu);
  if (rc == 0) {
    r->done++;
    r->lat_ms[r->nlat++] = ms;
  } else if (++r->failed <= SMALL_ERRORS_SHOWN) {
    fprintf(stderr, "medshard bench: PUT %s/%s%" PRIu64 " failed: %s\n", r->bucket, r->prefix, i,
            e->msg);
  }
  r->t_end = bench_now();
  pthread_mutex_unlock(&r->mu);
}

static bool small_take(struct small_run *r, uint64_t *i)
{
  pthread_mutex_lock(&r->mu);
  while (!r->go)
    pthread_cond_wait(&r->cv, &r->mu);
  bool more = r->next < r->count;
  *i = r->next;
  r->next += more;
  pthread_mutex_unlock(&r->mu);
  return more;
}

static void *small_client(void *arg)
{
  struct small_run *r = arg;
  struct msd_client *c = NULL;
  struct msd_error e = {0};
  int rc = msd_client_open(r->addrs, &c, &e);
  if (rc != 0)
    fprintf(stderr, "medshard bench: small-object client: %s\n", e.msg);
  small_arrived(r, rc == 0);
  char key[96];
  uint64_t i;
  while (rc == 0 && small_take(r, &i)) {
    struct body b = {.seed = 0x5eed0000u + i, .size = OBJ_SMALL};
    struct msd_put_opts po = {.has_size = true, .size = OBJ_SMALL};
    snprintf(key, sizeof key, "%s%" PRIu64, r->prefix, i);
    double t0 = bench_now();
    int put = msd_put(c, r->bucket, key, &po, body_read, &b, NULL, &e);
    small_record(r, put, &e, i, (bench_now() - t0) * 1e3);
  }
  msd_client_close(c);
  return NULL;
}

int obj_small_ingest(const char *addrs, const char *bucket, const char *prefix, uint64_t count,
                     unsigned clients, struct obj_small *out)
{
  struct small_run r = {.addrs = addrs, .bucket = bucket, .prefix = prefix, .count = count};
  pthread_t th[64];
  unsigned n = 0;
  memset(out, 0, sizeof *out);
  r.lat_ms = msd_calloc(count ? count : 1, sizeof *r.lat_ms);
  if (r.lat_ms == NULL)
    return -ENOMEM;
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  while (n < clients && n < 64 && pthread_create(&th[n], NULL, small_client, &r) == 0)
    n++;
  pthread_mutex_lock(&r.mu);
  while (r.started < n)
    pthread_cond_wait(&r.cv, &r.mu);
  r.go = true;
  r.t_start = r.t_end = bench_now();
  pthread_cond_broadcast(&r.cv);
  unsigned ready = r.ready;
  pthread_mutex_unlock(&r.mu);
  for (unsigned i = 0; i < n; i++)
    pthread_join(th[i], NULL);
  out->done = r.done;
  out->p50_ms = obj_median(r.lat_ms, r.nlat); /* sorts */
  out->p99_ms = obj_percentile(r.lat_ms, r.nlat, 99);
  out->failed = r.failed + (r.count - r.next);
  out->wall_s = r.t_end - r.t_start;
  msd_free(r.lat_ms);
  pthread_cond_destroy(&r.cv);
  pthread_mutex_destroy(&r.mu);
  return ready > 0 ? 0 : MSD_EUNAVAILABLE;
}
