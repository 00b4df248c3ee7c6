/* Segment files: creation, the open-file cache, rolling the active segment,
 * and recovery on open (torn tails truncated, unsealed files removed). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "storage/store_int.h"

static void seg_name(uint64_t id, char out[32])
{
  snprintf(out, 32, "%016" PRIx64 ".seg", id);
}

/* Caches an open segment fd in the least recently used slot. */
static void fd_cache_put(struct store *s, uint64_t id, int fd)
{
  unsigned victim = 0;
  for (unsigned i = 0; i < SEG_FD_CACHE; i++) {
    if (s->fds[i].fd < 0) {
      victim = i;
      break;
    }
    if (s->fds[i].used < s->fds[victim].used)
      victim = i;
  }
  if (s->fds[victim].fd >= 0)
    close(s->fds[victim].fd);
  s->fds[victim].id = id;
  s->fds[victim].fd = fd;
  s->fds[victim].used = ++s->fd_tick;
}

int store__seg_fd(struct store *s, uint64_t id, int *fd)
{
  if (s->act_fd >= 0 && id == s->act_id) {
    *fd = s->act_fd;
    return 0;
  }
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    if (s->fds[i].fd >= 0 && s->fds[i].id == id) {
      s->fds[i].used = ++s->fd_tick;
      *fd = s->fds[i].fd;
      return 0;
    }
  char name[32];
  seg_name(id, name);
  int f = openat(s->segdirfd, name, O_RDWR | O_CLOEXEC);
  if (f < 0)
    return store__fail(s, -errno, "%s/seg/%s: %s", s->dir, name, strerror(errno));
  fd_cache_put(s, id, f);
  *fd = f;
  return 0;
}

void store__segs_close(struct store *s)
{
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    if (s->fds[i].fd >= 0 && s->fds[i].fd != s->act_fd)
      close(s->fds[i].fd);
  if (s->act_fd >= 0)
    close(s->act_fd);
  s->act_fd = -1;
}

int store__check_space(struct store *s, uint64_t bytes)
{
  struct statvfs v;
  if (fstatvfs(s->dirfd, &v) != 0)
    return store__fail(s, -errno, "%s: statvfs: %s", s->dir, strerror(errno));
  uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
  if (avail < s->o.reserve_bytes || avail - s->o.reserve_bytes < bytes)
    return store__fail(s, MSD_EDISKFULL,
                       "%s: disk full: %" PRIu64 " bytes free, %" PRIu64
                       " reserved, %" PRIu64 " needed; free space or lower the reserve",
                       s->dir, avail, s->o.reserve_bytes, bytes);
  return 0;
}

/* Creates segment `id` durably: header written and synced, then the
 * directory synced, so an index entry can never point at a missing file. */
static int seg_create(struct store *s, uint64_t id, int *out)
{
  char name[32];
  seg_name(id, name);
  int fd = openat(s->segdirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return store__fail(s, -errno, "%s/seg/%s: cannot create: %s", s->dir, name, strerror(errno));
  int idx;
  unsigned char *buf = ring_buf_get(s->ring, &idx);
  if (buf == NULL) {
    close(fd);
    unlinkat(s->segdirfd, name, 0);
    return store__fail(s, MSD_ENOBUFS, "%s: no I/O buffer to create a segment", s->dir);
  }
  memset(buf, 0, SEG_HEADER_SIZE);
  seg_header_fill((struct seg_header *)buf, id, s->meta.uuid);
  struct ring_req w = {.op = RING_OP_WRITE, .fd = fd, .buf = buf, .len = SEG_HEADER_SIZE,
                       .buf_index = idx};
  struct ring_req f = {.op = RING_OP_FSYNC, .fd = fd, .buf_index = -1};
  struct ring_req d = {.op = RING_OP_FSYNC, .fd = s->segdirfd, .buf_index = -1};
  ring_queue_linked(s->ring, &w, &f);
  int rc = ring_drain(s->ring);
  if (rc == 0 && (w.res || f.res) == 0) {
    ring_queue(s->ring, &d);
    rc = ring_drain(s->ring);
  }
  ring_buf_put(s->ring, idx);
  if (rc == 0)
    rc = w.res ? w.res : f.res ? f.res : d.res;
  if (rc != 0) {
    close(fd);
    s->poisoned = rc;
    return store__fail(s, MSD_EPOISONED, "%s/seg/%s: creating failed: %s", s->dir, name,
                       msd_strerror(rc));
  }
  *out = fd;
  return 0;
}

int store__seg_reserve(struct store *s, uint64_t bytes, int *fd, uint64_t *seg, uint64_t *off)
{
  if (s->act_fd < 0 || (s->act_off > SEG_HEADER_SIZE && s->act_off + bytes > s->o.segment_size)) {
    int rc = store__check_space(s, bytes + SEG_HEADER_SIZE);
    if (rc != 0)
      return rc;
    int nfd;
    uint64_t id = s->meta.next_seg;
    rc = seg_create(s, id, &nfd);
    if (rc != 0)
      return rc;
    s->meta.next_seg++; /* persisted by the next index commit */
    if (s->act_fd >= 0)
      fd_cache_put(s, s->act_id, s->act_fd); /* still needed for reads and fsync */
    s->act_fd = nfd;
    s->act_id = id;
    s->act_off = SEG_HEADER_SIZE;
  } else {
    int rc = store__check_space(s, bytes);
    if (rc != 0)
      return rc;
  }
  *fd = s->act_fd;
  *seg = s->act_id;
  *off = s->act_off;
  s->act_off += bytes;
  return 0;
}

/* Removes segment files the index does not know: they were created, or
 * written by shards that never sealed, before a crash. */
static int remove_orphans(struct store *s, MDB_txn *txn, int *removed)
{
  int dfd = dup(s->segdirfd);
  DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
  if (d == NULL) {
    if (dfd >= 0)
      close(dfd);
    return store__fail(s, -errno, "%s/seg: %s", s->dir, strerror(errno));
  }
  int rc = 0;
  struct dirent *de;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    uint64_t id;
    char tail[8];
    if (sscanf(de->d_name, "%16" SCNx64 "%7s", &id, tail) != 2 || strcmp(tail, ".seg") != 0)
      continue;
    struct idx_seg seg;
    int g = store__seg_get(s, txn, id, &seg);
    if (g == MDB_NOTFOUND) {
      msd_log(MSD_LOG_INFO, "%s: removing unsealed segment %s", s->dir, de->d_name);
      if (unlinkat(s->segdirfd, de->d_name, 0) != 0)
        rc = store__fail(s, -errno, "%s/seg/%s: %s", s->dir, de->d_name, strerror(errno));
      (*removed)++;
    } else if (g != 0) {
      rc = g;
    }
    if (id >= s->meta.next_seg)
      s->meta.next_seg = id + 1;
  }
  closedir(d);
  return rc;
}

/* Checks one indexed segment and cuts anything past what the index vouches
 * for: a torn record, or records of shards that never sealed. */
static int recover_one(struct store *s, uint64_t id, const struct idx_seg *seg)
{
  char name[32];
  seg_name(id, name);
  int fd = openat(s->segdirfd, name, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return store__fail(s, MSD_ECORRUPT, "%s/seg/%s: indexed segment is missing: %s", s->dir,
                       name, strerror(errno));
  struct seg_header h;
  struct stat st;
  int rc = 0;
  if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || fstat(fd, &st) != 0)
    rc = store__fail(s, MSD_ECORRUPT, "%s/seg/%s: cannot read the header", s->dir, name);
  else if ((rc = seg_header_check(&h, id, s->meta.uuid)) != 0)
    rc = store__fail(s, rc, "%s/seg/%s: bad segment header (%s)", s->dir, name,
                     msd_strerror(rc));
  else if ((uint64_t)st.st_size < seg->end)
    rc = store__fail(s, MSD_ECORRUPT, "%s/seg/%s: %lld bytes, but the index has sealed data up "
                     "to %" PRIu64, s->dir, name, (long long)st.st_size, seg->end);
  else if ((uint64_t)st.st_size > seg->end) {
    msd_log(MSD_LOG_INFO, "%s: truncating %s from %lld to %" PRIu64 " bytes (unsealed tail)",
            s->dir, name, (long long)st.st_size, seg->end);
    if (ftruncate(fd, (off_t)seg->end) != 0 || fdatasync(fd) != 0)
      rc = store__fail(s, -errno, "%s/seg/%s: truncate: %s", s->dir, name, strerror(errno));
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  /* The newest segment with room becomes the active one. */
  if (id >= s->act_id || s->act_fd < 0) {
    if (s->act_fd >= 0)
      fd_cache_put(s, s->act_id, s->act_fd);
    s->act_fd = fd, s->act_id = id, s->act_off = seg->end;
  } else {
    fd_cache_put(s, id, fd);
  }
  return 0;
}

int store__segs_recover(struct store *s)
{
  MDB_txn *txn;
  MDB_cursor *cur;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc != 0)
    return store__fail(s, MSD_ECORRUPT, "%s: %s", s->dir, mdb_strerror(rc));
  int removed = 0;
  rc = remove_orphans(s, txn, &removed);
  if (rc == 0 && removed > 0 && fsync(s->segdirfd) != 0)
    rc = -errno;
  if (rc == 0 && mdb_cursor_open(txn, s->dbi_segs, &cur) == 0) {
    MDB_val k, v;
    int c = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0 && c == 0) {
      struct idx_seg seg;
      uint64_t id;
      if (k.mv_size != sizeof id || v.mv_size != sizeof seg) {
        rc = store__fail(s, MSD_ECORRUPT, "%s: corrupt segment entry in the index", s->dir);
        break;
      }
      memcpy(&id, k.mv_data, sizeof id);
      memcpy(&seg, v.mv_data, sizeof seg);
      rc = recover_one(s, id, &seg);
      c = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  /* A full active segment takes no more records: the next write rolls. */
  return rc;
}
