/* CUnit runner for storage/: the store API on the io_uring path and again on
 * the pread/pwrite fallback, corruption, disk-full, many small shards, the
 * asynchronous calls (test_storage_async.c) on both paths, and the crash
 * harness (test_storage_crash.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/ring.h"
#include "storage/store.h"
#include "storage_util.h"
#include "testutil.h"

static const size_t sizes[] = {0, 1, 4095, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1,
                               (7 << 19) + 13};

static void test_write_seal_read(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(store_uses_io_uring(s), !su_fallback);
  struct test_rng r = test_rng_for(51);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    struct store_id id;
    su_id(&id, i, (uint32_t)i % 6);
    size_t piece = 1 + test_rng_below(&r, 300000);
    CU_ASSERT_EQUAL(su_put(s, &id, sizes[i], piece), 0);
  }
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    struct store_id id;
    su_id(&id, i, (uint32_t)i % 6);
    CU_ASSERT(su_check(s, &id, sizes[i]));
    struct store_shard_info info;
    CU_ASSERT_EQUAL(store_stat(s, &id, &info), 0);
    CU_ASSERT_EQUAL(info.size, sizes[i]);
  }
  store_close(s);
  /* Everything survives a reopen. */
  s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    struct store_id id;
    su_id(&id, i, (uint32_t)i % 6);
    CU_ASSERT(su_check(s, &id, sizes[i]));
  }
  store_close(s);
  test_tmpdir_remove(dir);
}

static void test_range_reads(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id id;
  su_id(&id, 7, 2);
  size_t len = (3 << 20) + 12345;
  CU_ASSERT_EQUAL_FATAL(su_put(s, &id, len, 100000), 0);
  unsigned char *want = msd_malloc(len), *got = msd_malloc(len);
  su_content(&id, want, len);
  struct test_rng r = test_rng_for(52);
  int bad = 0;
  for (int t = 0; t < 300; t++) {
    uint64_t off = test_rng_below(&r, len + 1);
    size_t n = (size_t)test_rng_below(&r, t % 3 == 0 ? 300 : 1500000);
    size_t g = 0;
    int rc = store_read(s, &id, off, got, n, &g);
    size_t expect = n < len - off ? n : len - off;
    if (rc != 0 || g != expect || memcmp(got, want + off, g) != 0)
      bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
  size_t g = 9;
  CU_ASSERT_EQUAL(store_read(s, &id, len, got, 10, &g), 0); /* at the end: empty */
  CU_ASSERT_EQUAL(g, 0);
  CU_ASSERT_EQUAL(store_read(s, &id, len + 1, got, 10, &g), MSD_ERANGE);
  CU_ASSERT(strstr(store_errmsg(s), "past its end") != NULL);
  msd_free(want);
  msd_free(got);
  store_close(s);
  test_tmpdir_remove(dir);
}

struct list_ctx {
  int n;
  uint64_t bytes;
};

static int count_shard(void *ctx, const struct store_id *id, const struct store_shard_info *i)
{
  struct list_ctx *c = ctx;
  (void)id;
  c->n++;
  c->bytes += i->size;
  return 0;
}

static void test_delete_list_and_usage(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(su_put_many(s, 0, 10, 1, 10000, 10000), 0);
  struct store_id id;
  su_id(&id, 3, 0);
  CU_ASSERT_EQUAL(store_delete(s, &id), 0);
  CU_ASSERT_EQUAL(store_delete(s, &id), MSD_EDELETED);
  size_t g;
  unsigned char b[16];
  CU_ASSERT_EQUAL(store_read(s, &id, 0, b, 16, &g), MSD_EDELETED);
  struct list_ctx c = {0, 0};
  CU_ASSERT_EQUAL(store_list(s, count_shard, &c), 0);
  CU_ASSERT_EQUAL(c.n, 9);
  CU_ASSERT_EQUAL(c.bytes, 90000);
  struct store_usage u;
  CU_ASSERT_EQUAL(store_usage(s, &u), 0);
  CU_ASSERT(u.live_bytes >= 90000 && u.live_bytes < 100000);
  CU_ASSERT(u.segment_bytes >= u.live_bytes + 10000);
  CU_ASSERT(u.fs_free > 0);
  /* A tombstone survives a reopen. */
  store_close(s);
  s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(store_read(s, &id, 0, b, 16, &g), MSD_EDELETED);
  /* A deleted id may be written again; a sealed one may not. */
  CU_ASSERT_EQUAL(su_put(s, &id, 5, 5), 0);
  CU_ASSERT(su_check(s, &id, 5));
  CU_ASSERT_EQUAL(su_put(s, &id, 5, 5), -EEXIST);
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Collects what store_list / store_list_from report, in order. */
struct ids {
  struct store_id id[64];
  uint64_t seq[64];
  size_t n, stop_at; /* stop_at: return 1 after that many (0: never) */
};

static int collect(void *ctx, const struct store_id *id, const struct store_shard_info *i)
{
  struct ids *c = ctx;
  if (c->n < 64)
    c->id[c->n] = *id, c->seq[c->n] = i->seq;
  c->n++;
  return c->stop_at != 0 && c->n % c->stop_at == 0 ? 1 : 0;
}

/* Pages of store_list_from, whatever their bounds, add up to store_list:
 * the same shards in the same order, tombstones skipped but counted
 * against the page's work bound, and the cursor moving on past them. */
static void test_list_pages(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  uint64_t before = store_last_seq(s);
  CU_ASSERT_EQUAL(su_put_many(s, 0, 30, 1, 1000, 1000), 0);
  CU_ASSERT(store_last_seq(s) >= before + 30);
  CU_ASSERT_EQUAL(su_delete_many(s, 10, 20, 1), 0); /* ten tombstones among them */
  struct ids all = {.n = 0};
  CU_ASSERT_EQUAL(store_list(s, collect, &all), 0);
  CU_ASSERT_EQUAL_FATAL(all.n, 20);
  for (size_t i = 0; i < all.n; i++)
    CU_ASSERT(all.seq[i] > before && all.seq[i] <= store_last_seq(s));
  static const size_t bounds[][2] = {{1, 0}, {3, 0}, {7, 2}, {100, 5}, {100, 0}};
  for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
    struct ids got = {.n = 0, .stop_at = bounds[b][1]};
    struct store_id last;
    bool more = true, first = true;
    int pages = 0, rc = 0;
    while (more && pages < 200 && rc == 0) {
      rc = store_list_from(s, first ? NULL : &last, bounds[b][0], collect, &got, &last, &more);
      rc = rc > 0 ? 0 : rc;
      first = false;
      pages++;
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_FALSE(more);
    CU_ASSERT_EQUAL(got.n, all.n);
    CU_ASSERT_EQUAL(memcmp(got.id, all.id, all.n * sizeof all.id[0]), 0);
    if (bounds[b][0] == 1 && bounds[b][1] == 0)
      CU_ASSERT_EQUAL(pages, 30); /* one entry examined per page, tombstones too */
  }
  /* After the last shard: nothing, no more. After a cursor that names no
   * shard: the ones that sort after it. */
  struct ids none = {.n = 0};
  bool more = true;
  struct store_id last = all.id[all.n - 1], after;
  CU_ASSERT_EQUAL(store_list_from(s, &all.id[all.n - 1], 10, collect, &none, &last, &more), 0);
  CU_ASSERT_EQUAL(none.n, 0);
  CU_ASSERT_FALSE(more);
  after = all.id[4];
  after.index = 7; /* su_put_many writes index 0 only */
  struct ids tail = {.n = 0};
  CU_ASSERT_EQUAL(store_list_from(s, &after, 1000, collect, &tail, &last, &more), 0);
  CU_ASSERT_EQUAL(tail.n, all.n - 5);
  CU_ASSERT_EQUAL(store_list_from(s, NULL, 0, collect, &tail, &last, &more), MSD_EPARAM);
  store_close(s);
  test_tmpdir_remove(dir);
}

static void test_unsealed_is_invisible(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id a, b;
  su_id(&a, 1, 0);
  su_id(&b, 2, 0);
  struct store_writer *w;
  CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &a, &w), 0);
  static unsigned char buf[3 << 20];
  CU_ASSERT_EQUAL(store_write(w, buf, sizeof buf), 0); /* three extents on disk */
  struct store_shard_info info;
  CU_ASSERT_EQUAL(store_stat(s, &a, &info), MSD_ENOSHARD);
  CU_ASSERT_EQUAL(su_put(s, &b, 1000, 1000), 0);
  store_write_abort(w);
  CU_ASSERT_EQUAL(store_stat(s, &a, &info), MSD_ENOSHARD);
  CU_ASSERT(su_check(s, &b, 1000));
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Garbage past the sealed end of a segment (a torn append) is cut on open. */
static void test_torn_tail_truncated(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id id;
  su_id(&id, 1, 1);
  CU_ASSERT_EQUAL(su_put(s, &id, 200000, 4096), 0);
  store_close(s);
  char seg[4200];
  snprintf(seg, sizeof seg, "%s/seg/0000000000000001.seg", dir);
  struct stat st0, st1;
  CU_ASSERT_EQUAL_FATAL(stat(seg, &st0), 0);
  int fd = open(seg, O_WRONLY | O_APPEND);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL(write(fd, "torn record bytes", 17), 17);
  close(fd);
  s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(stat(seg, &st1), 0);
  CU_ASSERT_EQUAL(st1.st_size, st0.st_size);
  CU_ASSERT(su_check(s, &id, 200000));
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Flips one byte in a shard's data: its read fails naming it, scrub lists
 * exactly it, and every other shard is unaffected. */
static void test_corruption_detected(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id ids[8];
  for (int i = 0; i < 8; i++) {
    su_id(&ids[i], (uint64_t)i, 0);
    CU_ASSERT_EQUAL(su_put(s, &ids[i], 300000, 300000), 0);
  }
  store_close(s);
  /* Find shard 5's extent record by its header (magic, kind 1, object id)
   * and flip a byte inside its second 64 KiB block. */
  char seg[4200];
  snprintf(seg, sizeof seg, "%s/seg/0000000000000001.seg", dir);
  int fd = open(seg, O_RDWR);
  CU_ASSERT_FATAL(fd >= 0);
  struct stat st;
  CU_ASSERT_FATAL(fstat(fd, &st) == 0);
  unsigned char *img = msd_malloc((size_t)st.st_size);
  CU_ASSERT_EQUAL_FATAL(pread(fd, img, (size_t)st.st_size, 0), st.st_size);
  const unsigned char magic_kind[8] = {0x4d, 0x53, 0x44, 0x52, 1, 0, 1, 0};
  off_t rec = -1;
  for (off_t o = 4096; o + 64 <= st.st_size && rec < 0; o++)
    if (memcmp(img + o, magic_kind, 8) == 0 && memcmp(img + o + 8, ids[5].oid, 16) == 0)
      rec = o;
  msd_free(img);
  CU_ASSERT_FATAL(rec > 0);
  off_t at = rec + 64 + 5 * 8 + 70000; /* header, 5 block checksums, into block 1 */
  unsigned char c;
  CU_ASSERT_EQUAL(pread(fd, &c, 1, at), 1);
  c ^= 0x40;
  CU_ASSERT_EQUAL(pwrite(fd, &c, 1, at), 1);
  close(fd);

  s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  unsigned char buf[1000];
  size_t g;
  CU_ASSERT_EQUAL(store_read(s, &ids[5], 65536, buf, sizeof buf, &g), MSD_ECHECKSUM);
  CU_ASSERT(strstr(store_errmsg(s), "at offset 65536") != NULL);
  CU_ASSERT_EQUAL(store_read(s, &ids[5], 0, buf, sizeof buf, &g), 0); /* block 0 is fine */
  for (int i = 0; i < 8; i++)
    if (i != 5)
      CU_ASSERT(su_check(s, &ids[i], 300000));
  struct store_scrub_report rep;
  CU_ASSERT_EQUAL(store_scrub(s, 0, &rep), 0);
  CU_ASSERT_EQUAL(rep.shards, 8);
  CU_ASSERT_EQUAL_FATAL(rep.nbad, 1);
  CU_ASSERT(memcmp(&rep.bad[0].id, &ids[5], sizeof ids[5]) == 0);
  CU_ASSERT_EQUAL(rep.bad[0].code, MSD_ECHECKSUM);
  CU_ASSERT_EQUAL(rep.bad[0].offset, 65536);
  store_scrub_free(&rep);
  store_close(s);
  test_tmpdir_remove(dir);
}

static void test_scrub_rate_limit(void)
{
  const char *dir = test_tmpdir();
  struct store *s = su_open(dir, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(su_put_many(s, 0, 4, 1, 1 << 20, 1 << 20), 0);
  struct store_scrub_report rep;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  CU_ASSERT_EQUAL(store_scrub(s, 8 << 20, &rep), 0); /* 4 MiB at 8 MiB/s */
  clock_gettime(CLOCK_MONOTONIC, &b);
  double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
  CU_ASSERT(secs >= 0.45); /* a floor only: slow machines may take longer */
  CU_ASSERT_EQUAL(rep.bytes, 4u << 20);
  CU_ASSERT_EQUAL(rep.nbad, 0);
  store_scrub_free(&rep);
  store_close(s);
  test_tmpdir_remove(dir);
}

/* Deleting most shards and compacting frees segments; reads between and
 * after steps stay correct. */
static void test_compaction(void)
{
  const char *dir = test_tmpdir();
  struct store_opts o = {.segment_size = 1 << 20};
  struct store *s = su_open(dir, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  enum { N = 40, LEN = 150000 };
  CU_ASSERT_EQUAL(su_put_many(s, 0, N, 1, LEN, 7000), 0);
  for (uint64_t k = 1; k < 4; k++) /* keep every fourth shard */
    CU_ASSERT_EQUAL(su_delete_many(s, k, N, 4), 0);
  struct store_usage before, after;
  CU_ASSERT_EQUAL(store_usage(s, &before), 0);
  int files_before = su_seg_files(dir), steps = 0, bad = 0;
  uint64_t freed, total = 0;
  do {
    CU_ASSERT_EQUAL_FATAL(store_compact_step(s, 0.5, &freed), 0);
    total += freed;
    bad += su_check_many(s, 0, N, 4, LEN);
  } while (freed > 0 && ++steps < 100);
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT(steps >= 3);
  CU_ASSERT_EQUAL(store_usage(s, &after), 0);
  CU_ASSERT(after.segment_bytes < before.segment_bytes / 2);
  CU_ASSERT_EQUAL(after.live_bytes, before.live_bytes);
  CU_ASSERT(su_seg_files(dir) < files_before);
  CU_ASSERT(total > 0);
  store_close(s);
  s = su_open(dir, &o); /* and the result is durable */
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(su_check_many(s, 0, N, 4, LEN), 0);
  store_close(s);
  test_tmpdir_remove(dir);
}

/* A store with a 3 MiB capacity fills up with a clear error, and the shards
 * sealed before stay readable; deleting and compacting makes room again. */
static void test_disk_full(void)
{
  const char *dir = test_tmpdir();
  struct store_opts o = {.capacity_bytes = 3u << 20, .segment_size = 1 << 20};
  struct store *s = su_open(dir, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  int sealed = 0, rc = 0;
  for (uint64_t i = 0; i < 64 && rc == 0; i++) {
    struct store_id id;
    su_id(&id, i, 0);
    rc = su_put(s, &id, 200000, 200000);
    sealed += rc == 0;
  }
  CU_ASSERT_EQUAL(rc, MSD_EDISKFULL);
  CU_ASSERT(strstr(store_errmsg(s), "store full") != NULL);
  CU_ASSERT(sealed >= 10 && sealed < 16);
  CU_ASSERT_EQUAL(su_check_many(s, 0, (uint64_t)sealed, 1, 200000), 0);
  struct store_usage u;
  CU_ASSERT_EQUAL(store_usage(s, &u), 0);
  CU_ASSERT(u.writable < 200000);
  CU_ASSERT_EQUAL(su_delete_many(s, 0, (uint64_t)sealed, 1), 0);
  uint64_t freed;
  for (int i = 0; i < 10; i++)
    CU_ASSERT_EQUAL(store_compact_step(s, 0.5, &freed), 0);
  struct store_id again;
  su_id(&again, 1000, 0);
  CU_ASSERT_EQUAL(su_put(s, &again, 200000, 200000), 0);
  store_close(s);

  /* The free-space reserve: asking to keep more than the disk has refuses
   * the first write, before it touches the disk. */
  o = (struct store_opts){.reserve_bytes = UINT64_MAX / 2};
  s = su_open(dir, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL(su_put(s, &again, 2u << 20, 1u << 20), MSD_EDISKFULL);
  CU_ASSERT(strstr(store_errmsg(s), "disk full") != NULL);
  CU_ASSERT(su_check(s, &again, 200000));
  store_close(s);
  test_tmpdir_remove(dir);
}

/* An I/O failure during seal poisons the store: it refuses writes from then
 * on, while reads of sealed shards go on working. */
static void test_failed_io_poisons(void)
{
  int poisoned = 0;
  for (int n = 1; n <= 12; n++) {
    const char *dir = test_tmpdir();
    struct store *s = su_open(dir, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct store_id a, b;
    su_id(&a, 1, 0);
    su_id(&b, 2, 0);
    CU_ASSERT_EQUAL(su_put(s, &a, 100000, 100000), 0);
    struct store_writer *w;
    CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &b, &w), 0);
    static unsigned char buf[100000];
    CU_ASSERT_EQUAL(store_write(w, buf, sizeof buf), 0);
    msd_fault_arm(n);
    int rc = store_seal(w);
    msd_fault_arm(0);
    CU_ASSERT(rc == 0 || rc == -ENOMEM || rc == MSD_EPOISONED);
    if (rc == MSD_EPOISONED) {
      poisoned++;
      struct store_writer *w2;
      CU_ASSERT_EQUAL(store_write_begin(s, &b, &w2), MSD_EPOISONED);
      CU_ASSERT(strstr(store_errmsg(s), "refuses writes") != NULL);
      CU_ASSERT(su_check(s, &a, 100000));
    }
    store_close(s);
    test_tmpdir_remove(dir);
  }
  CU_ASSERT(poisoned >= 2); /* the write and the fdatasync */
}

static void test_bad_input(void)
{
  const char *dir = test_tmpdir();
  struct store *s = NULL;
  struct store_opts o = {.fallback_io = su_fallback};
  char path[4200];
  /* A missing directory, a file, and a non-empty non-store directory. */
  snprintf(path, sizeof path, "%s/missing", dir);
  CU_ASSERT_EQUAL(store_open(path, &o, &s), MSD_ENOTSTORE);
  snprintf(path, sizeof path, "%s/file", dir);
  FILE *f = fopen(path, "w");
  fputs("x", f);
  fclose(f);
  CU_ASSERT_EQUAL(store_open(path, &o, &s), MSD_ENOTSTORE);
  o.create = true;
  CU_ASSERT_EQUAL(store_open(dir, &o, &s), MSD_ENOTSTORE); /* holds "file" */
  CU_ASSERT_PTR_NULL(s);

  snprintf(path, sizeof path, "%s/store", dir);
  s = su_open(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct store_id id, other;
  su_id(&id, 1, 3);
  su_id(&other, 1, 4);
  CU_ASSERT_EQUAL(su_put(s, &id, 1000, 1000), 0);
  unsigned char b[8];
  size_t g;
  CU_ASSERT_EQUAL(store_read(s, &other, 0, b, 8, &g), MSD_ENOSHARD); /* wrong index */
  su_id(&other, 99, 3);
  CU_ASSERT_EQUAL(store_read(s, &other, 0, b, 8, &g), MSD_ENOSHARD); /* unknown object */
  CU_ASSERT(strstr(store_errmsg(s), "no such shard") != NULL);
  CU_ASSERT_EQUAL(store_read(s, &id, 0, NULL, 8, &g), MSD_EPARAM);

  /* A second process cannot open it while it is open here. */
  pid_t pid = fork();
  if (pid == 0) {
    struct store *t = NULL;
    int rc = store_open(path, &(struct store_opts){.fallback_io = true}, &t);
    _exit(rc == MSD_ELOCKED ? 0 : 1);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  store_close(s);

  /* A damaged segment header is refused with a clear error. */
  char seg[4300];
  snprintf(seg, sizeof seg, "%s/seg/0000000000000001.seg", path);
  int fd = open(seg, O_RDWR);
  CU_ASSERT_EQUAL(pwrite(fd, "XX", 2, 0), 2);
  close(fd);
  s = NULL;
  o.create = false;
  CU_ASSERT_EQUAL(store_open(path, &o, &s), MSD_ECORRUPT);
  CU_ASSERT_PTR_NULL(s);

  /* So is an index that is not an LMDB file. */
  char idx[4300];
  snprintf(idx, sizeof idx, "%s/index/data.mdb", path);
  fd = open(idx, O_RDWR | O_TRUNC);
  CU_ASSERT_EQUAL(write(fd, "this is not lmdb, just junk bytes..........", 43), 43);
  close(fd);
  CU_ASSERT_EQUAL(store_open(path, &o, &s), MSD_ECORRUPT);
  test_tmpdir_remove(dir);
}

/* The PACS case: 100,000 small shards, few files, all readable and
 * consistent after a reopen. Seals go in batches, as a node does. */
static void small_shards(int count)
{
  const char *dir = test_tmpdir();
  struct store_opts o = {.io_buffers = 130};
  struct store *s = su_open(dir, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  enum { BATCH = 100, LEN = 4096 };
  unsigned char buf[LEN];
  int failed = 0;
  for (int base = 0; base < count; base += BATCH) {
    struct store_writer *w[BATCH];
    int res[BATCH];
    for (int i = 0; i < BATCH; i++) {
      struct store_id id;
      su_id(&id, (uint64_t)(base + i), 0);
      su_content(&id, buf, LEN);
      CU_ASSERT_EQUAL_FATAL(store_write_begin(s, &id, &w[i]), 0);
      CU_ASSERT_EQUAL(store_write(w[i], buf, LEN), 0);
    }
    failed += store_seal_many(w, BATCH, res) != 0;
  }
  CU_ASSERT_EQUAL(failed, 0);
  store_close(s);
  s = su_open(dir, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  struct list_ctx c = {0, 0};
  CU_ASSERT_EQUAL(store_list(s, count_shard, &c), 0);
  CU_ASSERT_EQUAL(c.n, count);
  int bad = 0;
  for (int i = 0; i < count; i++) {
    struct store_id id;
    su_id(&id, (uint64_t)i, 0);
    bad += !su_check(s, &id, LEN);
    if (bad > 3)
      break;
  }
  CU_ASSERT_EQUAL(bad, 0);
  int files = su_seg_files(dir);
  printf("\n    %d shards of 4 KiB in %d segment file(s) ", count, files);
  CU_ASSERT(files <= 2);
  store_close(s);
  test_tmpdir_remove(dir);
}

static void test_many_small_shards(void)
{
  small_shards(su_fallback ? 10000 : 100000);
}

/* Ring engine: a failed write cancels the fdatasync linked to it. */
static void test_ring_link_cancels(void)
{
  struct ring *r;
  struct ring_opts o = {.fallback = su_fallback, .nbufs = 2, .buf_size = 4096};
  CU_ASSERT_EQUAL_FATAL(ring_create(&o, &r), 0);
  const char *dir = test_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/f", dir);
  int fd = open(path, O_RDONLY | O_CREAT, 0600); /* writes will fail: EBADF */
  int idx;
  unsigned char *buf = ring_buf_get(r, &idx);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  struct ring_req w = {.op = RING_OP_WRITE, .fd = fd, .buf = buf, .len = 100, .buf_index = idx};
  struct ring_req f = {.op = RING_OP_FSYNC, .fd = fd, .buf_index = -1};
  ring_queue_linked(r, &w, &f);
  CU_ASSERT_EQUAL(ring_drain(r), 0);
  CU_ASSERT_EQUAL(w.res, -EBADF);
  CU_ASSERT_EQUAL(f.res, -ECANCELED);
  close(fd);
  /* And a read past the end of a file stops short without error. */
  fd = open(path, O_RDWR);
  CU_ASSERT_EQUAL(write(fd, "hello", 5), 5);
  struct ring_req rd = {.op = RING_OP_READ, .fd = fd, .buf = buf, .len = 4096, .buf_index = idx};
  ring_queue(r, &rd);
  CU_ASSERT_EQUAL(ring_drain(r), 0);
  CU_ASSERT_EQUAL(rd.res, 0);
  CU_ASSERT_EQUAL(rd.done, 5);
  CU_ASSERT(memcmp(buf, "hello", 5) == 0);
  close(fd);
  ring_buf_put(r, idx);
  ring_destroy(r);
  test_tmpdir_remove(dir);
}

extern const struct test_case crash_tests[];
extern const struct test_case async_tests[];

static const struct test_case store_tests[] = {
    {"write, seal, read, reopen", test_write_seal_read},
    {"range reads", test_range_reads},
    {"delete, list and usage", test_delete_list_and_usage},
    {"list in pages from a cursor", test_list_pages},
    {"unsealed shards are invisible", test_unsealed_is_invisible},
    {"torn tail is truncated on open", test_torn_tail_truncated},
    {"corruption is detected and scrubbed", test_corruption_detected},
    {"scrub honours its rate limit", test_scrub_rate_limit},
    {"compaction frees space, reads stay correct", test_compaction},
    {"disk full is a clear error", test_disk_full},
    {"failed I/O poisons the store", test_failed_io_poisons},
    {"bad input", test_bad_input},
    {"many small shards", test_many_small_shards},
    {"ring: linked fsync cancelled by failed write", test_ring_link_cancels},
    {NULL, NULL}};

static int on_io_uring(void)
{
  su_fallback = false;
  return 0;
}

static int on_fallback(void)
{
  su_fallback = true;
  return 0;
}

int main(void)
{
  static const char *const names[] = {"store on io_uring", "store on pread/pwrite",
                                      "asynchronous calls on io_uring",
                                      "asynchronous calls on pread/pwrite", "crash harness", NULL};
  static const struct test_case *const suites[] = {store_tests, store_tests, async_tests,
                                                   async_tests, crash_tests};
  static const CU_InitializeFunc inits[] = {on_io_uring, on_fallback, on_io_uring, on_fallback,
                                            on_io_uring};
  return test_run_ex("test_storage", names, suites, inits);
}
