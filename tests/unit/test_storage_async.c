/* The store's asynchronous calls (store.h "asynchronous use"), driven the
 * way the data loop drives them: submit, then store_poll whenever the
 * store's descriptor is readable. Many writers at once with their extent
 * flushes interleaved, seals submitted together going out as one batch,
 * reads beside them, aborts while I/O is in flight, and the errors. Run on
 * io_uring and on the pread/pwrite fallback. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store.h"
#include "storage_util.h"
#include "testutil.h"

/* What one operation's callback saw. */
struct done {
  int calls, rc;
  char why[256];
};

static void on_done(void *ctx, int rc, const char *why)
{
  struct done *d = ctx;
  d->calls++;
  d->rc = rc;
  snprintf(d->why, sizeof d->why, "%s", why ? why : "");
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls the store until every callback in d[0..n) has run once (or 20 s
 * pass), sleeping on its descriptor when it has I/O in flight. */
static bool drive(struct store *s, struct done *d, size_t n)
{
  int64_t until = now_ms() + 20000;
  for (;;) {
    bool busy = store_poll(s);
    size_t finished = 0;
    for (size_t i = 0; i < n; i++)
      finished += d[i].calls > 0;
    if (finished == n)
      return true;
    if (now_ms() > until || !busy)
      return false;
    struct pollfd p = {.fd = store_poll_fd(s), .events = POLLIN};
    if (p.fd >= 0)
      poll(&p, 1, 100);
  }
}

/* Polls until the store has nothing under way (bounded). */
static bool settle(struct store *s)
{
  int64_t until = now_ms() + 20000;
  while (store_poll(s)) {
    if (now_ms() > until)
      return false;
    struct pollfd p = {.fd = store_poll_fd(s), .events = POLLIN};
    if (p.fd >= 0)
      poll(&p, 1, 100);
  }
  return true;
}

#define WRITERS 6

/* Six shards written in interleaved pieces (their full extents flushed as
 * they fill), sealed in one turn, then read back by reads submitted all at
 * once; callbacks never run inside a submit. */
static void test_many_writers(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct test_rng r = test_rng_for(77);
  size_t len[WRITERS];
  unsigned char *src[WRITERS];
  struct store_writer *w[WRITERS];
  struct store_id id[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    su_id(&id[i], 100 + (uint64_t)i, (uint32_t)i);
    len[i] = 1 + test_rng_below(&r, 3u << 20);
    src[i] = msd_malloc(len[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(src[i]);
    su_content(&id[i], src[i], len[i]);
    CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &id[i], &w[i]), 0);
  }
  size_t at[WRITERS] = {0};
  for (bool more = true; more;) {
    struct done d[WRITERS] = {{0}};
    size_t n = 0;
    more = false;
    for (int i = 0; i < WRITERS; i++) {
      size_t piece = 1 + test_rng_below(&r, 700000);
      if (at[i] == len[i])
        continue;
      if (piece > len[i] - at[i])
        piece = len[i] - at[i];
      CU_ASSERT_EQUAL(store_write_submit(w[i], src[i] + at[i], piece, on_done, &d[n]), 0);
      CU_ASSERT_EQUAL(store_write_submit(w[i], src[i], 1, on_done, &d[n]), MSD_ESTATE);
      at[i] += piece;
      more |= at[i] < len[i];
      n++;
    }
    for (size_t j = 0; j < n; j++)
      CU_ASSERT_EQUAL(d[j].calls, 0); /* not from inside the submit */
    CU_ASSERT_FATAL(drive(s, d, n));
    for (size_t j = 0; j < n; j++)
      CU_ASSERT_EQUAL(d[j].rc, 0);
  }
  struct store_io_stats before, after;
  store_io_stats(s, &before);
  struct done sd[WRITERS] = {{0}};
  for (int i = 0; i < WRITERS; i++)
    CU_ASSERT_EQUAL(store_seal_submit(w[i], on_done, &sd[i]), 0);
  CU_ASSERT_FATAL(drive(s, sd, WRITERS));
  store_io_stats(s, &after);
  CU_ASSERT_EQUAL(after.seals - before.seals, WRITERS);
  CU_ASSERT_EQUAL(after.seal_batches - before.seal_batches, 1); /* group commit */
  CU_ASSERT(after.flushes > 0);
  unsigned char *back[WRITERS];
  size_t got[WRITERS];
  struct done rd[WRITERS] = {{0}};
  for (int i = 0; i < WRITERS; i++) {
    CU_ASSERT_EQUAL(sd[i].rc, 0);
    back[i] = msd_malloc(len[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back[i]);
    CU_ASSERT_EQUAL(store_read_submit(s, &id[i], 0, back[i], len[i], &got[i], on_done, &rd[i]), 0);
  }
  CU_ASSERT_FATAL(drive(s, rd, WRITERS));
  for (int i = 0; i < WRITERS; i++) {
    CU_ASSERT_EQUAL(rd[i].rc, 0);
    CU_ASSERT_EQUAL(got[i], len[i]);
    CU_ASSERT(memcmp(back[i], src[i], len[i]) == 0);
    msd_free(back[i]);
    msd_free(src[i]);
  }
  store_close(s);
  s = su_open(dir, NULL); /* the batch is durable */
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  for (int i = 0; i < WRITERS; i++)
    CU_ASSERT(su_check(s, &id[i], len[i]));
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Aborting a writer at each point of a write under way: before its flush
 * starts, once it has started (in flight on io_uring; the fallback does it
 * at once), and once its completion is queued. No callback runs after the
 * abort, nothing leaks (ASan), and nothing becomes visible. */
static void test_abort_under_way(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  size_t big = (3u << 20) / 2; /* fills the buffer, then needs a flush */
  unsigned char *buf = msd_malloc(big);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  memset(buf, 0x5a, big);
  for (int stage = 0; stage < 3; stage++) {
    struct store_id id;
    su_id(&id, 200 + (uint64_t)stage, 0);
    struct store_writer *w;
    CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &id, &w), 0);
    struct done d = {0};
    size_t n = stage == 2 ? 1000 : big; /* stage 2: completes without I/O */
    CU_ASSERT_EQUAL(store_write_submit(w, buf, n, on_done, &d), 0);
    if (stage == 1)
      store_poll(s); /* its flush starts: in flight, or (fallback) done */
    int before = d.calls;
    store_write_abort(w);
    CU_ASSERT(settle(s));
    CU_ASSERT_EQUAL(d.calls, before); /* none after the abort */
    if (stage != 1)
      CU_ASSERT_EQUAL(d.calls, 0);
    struct store_shard_info info;
    CU_ASSERT_EQUAL(store_stat(s, &id, &info), MSD_ENOSHARD);
  }
  /* Every writer buffer came back: as many writers as before can open. */
  struct store_writer *ws[64];
  int opened = 0;
  while (opened < 64 && store_write_begin(s, &(struct store_id){{9}, (uint32_t)opened},
                                          &ws[opened]) == 0)
    opened++;
  CU_ASSERT_EQUAL(opened, 14); /* io_buffers 16 less two */
  for (int i = 0; i < opened; i++)
    store_write_abort(ws[i]);
  msd_free(buf);
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Errors come through the callback with the store's sentence. */
static void test_async_errors(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id id, missing;
  su_id(&id, 300, 1);
  su_id(&missing, 301, 1);
  CU_ASSERT_EQUAL_FATAL(su_put(s, &id, 5000, 5000), 0);
  unsigned char buf[100];
  size_t got = 7;
  struct done d[3] = {{0}};
  CU_ASSERT_EQUAL(store_read_submit(s, &missing, 0, buf, sizeof buf, &got, on_done, &d[0]), 0);
  CU_ASSERT_EQUAL(got, 0);
  CU_ASSERT_EQUAL(store_read_submit(s, &id, 5001, buf, sizeof buf, &got, on_done, &d[1]), 0);
  CU_ASSERT_EQUAL(store_read_submit(s, &id, 5000, buf, sizeof buf, &got, on_done, &d[2]), 0);
  CU_ASSERT_EQUAL(d[0].calls + d[1].calls + d[2].calls, 0);
  CU_ASSERT_FATAL(drive(s, d, 3));
  CU_ASSERT_EQUAL(d[0].rc, MSD_ENOSHARD);
  CU_ASSERT(strstr(d[0].why, "shard") != NULL);
  CU_ASSERT_EQUAL(d[1].rc, MSD_ERANGE);
  CU_ASSERT(strstr(d[1].why, "past its end") != NULL);
  CU_ASSERT_EQUAL(d[2].rc, 0); /* at the very end: zero bytes */
  CU_ASSERT_EQUAL(got, 0);
  CU_ASSERT_EQUAL(store_read_submit(s, &id, 0, NULL, 10, &got, on_done, &d[0]), MSD_EPARAM);
  CU_ASSERT_EQUAL(store_read_submit(s, &id, 0, buf, 10, &got, NULL, NULL), MSD_EPARAM);
  CU_ASSERT_EQUAL(store_write_submit(NULL, buf, 1, on_done, d), MSD_EPARAM);
  CU_ASSERT_EQUAL(store_seal_submit(NULL, on_done, d), MSD_EPARAM);
  /* Sealing a shard that exists fails through the callback. */
  struct store_writer *w;
  CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &id, &w), 0);
  struct done wd = {0}, sd = {0};
  CU_ASSERT_EQUAL(store_write_submit(w, buf, sizeof buf, on_done, &wd), 0);
  CU_ASSERT_FATAL(drive(s, &wd, 1));
  CU_ASSERT_EQUAL(store_seal_submit(w, on_done, &sd), 0);
  CU_ASSERT_FATAL(drive(s, &sd, 1));
  CU_ASSERT_EQUAL(sd.rc, -EEXIST);
  CU_ASSERT(strstr(sd.why, "immutable") != NULL);
  CU_ASSERT(su_check(s, &id, 5000));
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Extent flushes of four writers go out together, and a seal submitted
 * beside them waits at the barrier until none is in flight: the write
 * that makes it durable comes after every record reserved before it. */
static void test_seal_waits_for_flushes(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  enum { FLUSHERS = 4 };
  size_t big = (1u << 20) + 5000, small = 200000; /* small: the one-write seal */
  unsigned char *buf[FLUSHERS + 1];
  struct store_id id[FLUSHERS + 1];
  struct store_writer *w[FLUSHERS + 1];
  for (int i = 0; i <= FLUSHERS; i++) {
    size_t len = i < FLUSHERS ? big : small;
    su_id(&id[i], 400 + (uint64_t)i, 0);
    buf[i] = msd_malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf[i]);
    su_content(&id[i], buf[i], len);
    CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &id[i], &w[i]), 0);
  }
  struct done sw = {0}, sd = {0}, wd[FLUSHERS] = {{0}};
  CU_ASSERT_EQUAL(store_write_submit(w[FLUSHERS], buf[FLUSHERS], small, on_done, &sw), 0);
  CU_ASSERT_FATAL(drive(s, &sw, 1)); /* no flush of its own */
  struct store_io_stats before, after;
  store_io_stats(s, &before);
  /* In one turn: four writes that each need a flush, then the seal. */
  for (int i = 0; i < FLUSHERS; i++)
    CU_ASSERT_EQUAL(store_write_submit(w[i], buf[i], big, on_done, &wd[i]), 0);
  CU_ASSERT_EQUAL(store_seal_submit(w[FLUSHERS], on_done, &sd), 0);
  CU_ASSERT_FATAL(drive(s, wd, FLUSHERS));
  CU_ASSERT_FATAL(drive(s, &sd, 1));
  store_io_stats(s, &after);
  CU_ASSERT_EQUAL(sd.rc, 0);
  CU_ASSERT_EQUAL(after.flushes - before.flushes, FLUSHERS);
  CU_ASSERT(after.barrier_waits > before.barrier_waits); /* it found flushes in flight */
  CU_ASSERT_EQUAL(after.seal_overlaps, 0);
  CU_ASSERT(su_check(s, &id[FLUSHERS], small));
  for (int i = 0; i < FLUSHERS; i++) {
    CU_ASSERT_EQUAL(wd[i].rc, 0);
    struct done d = {0};
    CU_ASSERT_EQUAL(store_seal_submit(w[i], on_done, &d), 0);
    CU_ASSERT_FATAL(drive(s, &d, 1));
    CU_ASSERT_EQUAL(d.rc, 0);
    CU_ASSERT(su_check(s, &id[i], big));
  }
  for (int i = 0; i <= FLUSHERS; i++)
    msd_free(buf[i]);
  store_close(s);
  test_tmpdir_remove(dir);
}

const struct test_case async_tests[] = {
    {"a seal waits for the flushes in flight", test_seal_waits_for_flushes},
    {"many writers, one seal batch, reads beside", test_many_writers},
    {"abort while a write is under way", test_abort_under_way},
    {"errors reach the callback", test_async_errors},
    {NULL, NULL}};
