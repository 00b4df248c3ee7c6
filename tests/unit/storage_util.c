/* Helpers for the storage tests (see storage_util.h). */
#include "storage_util.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "testutil.h"

bool su_fallback;

struct store *su_open(const char *dir, const struct store_opts *extra)
{
  struct store_opts o = extra ? *extra : (struct store_opts){0};
  o.create = true;
  o.fallback_io = su_fallback;
  if (o.reserve_bytes == 0)
    o.reserve_bytes = 1; /* tests write little; do not demand a free GiB */
  struct store *s = NULL;
  int rc = store_open(dir, &o, &s);
  if (rc != 0)
    printf("\n  store_open(%s): %s\n", dir, msd_strerror(rc));
  return s;
}

void su_id(struct store_id *id, uint64_t n, uint32_t index)
{
  memset(id, 0, sizeof *id);
  memcpy(id->oid, &n, sizeof n);
  id->oid[15] = 0x5a;
  id->index = index;
}

void su_content(const struct store_id *id, unsigned char *buf, size_t len)
{
  uint64_t n;
  memcpy(&n, id->oid, sizeof n);
  struct test_rng r = {n * 1000003u + id->index};
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v = test_rng_next(&r);
    memcpy(buf + i, &v, 8);
  }
  for (; i < len; i++)
    buf[i] = (unsigned char)test_rng_next(&r);
}

int su_put(struct store *s, const struct store_id *id, size_t len, size_t piece)
{
  unsigned char *buf = msd_malloc(len ? len : 1);
  su_content(id, buf, len);
  struct store_writer *w = NULL;
  int rc = store_write_begin(s, id, &w);
  for (size_t off = 0; rc == 0 && off < len; off += piece)
    rc = store_write(w, buf + off, len - off < piece ? len - off : piece);
  if (rc == 0)
    rc = store_seal(w);
  else if (w)
    store_write_abort(w);
  msd_free(buf);
  return rc;
}

bool su_check(struct store *s, const struct store_id *id, size_t len)
{
  unsigned char *want = msd_malloc(len + 1), *got = msd_malloc(len + 1);
  su_content(id, want, len);
  size_t n = 0;
  int rc = store_read(s, id, 0, got, len + 1, &n);
  bool ok = rc == 0 && n == len && memcmp(want, got, len) == 0;
  if (!ok)
    printf("\n  shard check failed: rc=%d (%s) got %zu of %zu\n", rc, store_errmsg(s), n, len);
  msd_free(want);
  msd_free(got);
  return ok;
}

int su_put_many(struct store *s, uint64_t from, uint64_t to, uint64_t step, size_t len,
                size_t piece)
{
  int bad = 0;
  for (uint64_t i = from; i < to; i += step) {
    struct store_id id;
    su_id(&id, i, 0);
    bad += su_put(s, &id, len, piece) != 0;
  }
  return bad;
}

int su_check_many(struct store *s, uint64_t from, uint64_t to, uint64_t step, size_t len)
{
  int bad = 0;
  for (uint64_t i = from; i < to; i += step) {
    struct store_id id;
    su_id(&id, i, 0);
    bad += !su_check(s, &id, len);
  }
  return bad;
}

int su_delete_many(struct store *s, uint64_t from, uint64_t to, uint64_t step)
{
  int bad = 0;
  for (uint64_t i = from; i < to; i += step) {
    struct store_id id;
    su_id(&id, i, 0);
    bad += store_delete(s, &id) != 0;
  }
  return bad;
}

int su_seg_files(const char *dir)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/seg", dir);
  DIR *d = opendir(path);
  int n = 0;
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    n += strstr(de->d_name, ".seg") != NULL;
  if (d)
    closedir(d);
  return n;
}
