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

void store__seg_name(uint64_t id, char out[32])
{
  snprintf(out, 32, "%016" PRIx64 ".seg", id);
}

/* Caches an open segment fd in the least recently used slot. */
void store__fd_cache_put(struct store *s, uint64_t id, int fd)
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
  if (s->fds[victim].dfd >= 0)
    close(s->fds[victim].dfd);
  s->fds[victim].id = id;
  s->fds[victim].fd = fd;
  s->fds[victim].dfd = -1;
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
  store__seg_name(id, name);
  int f = openat(s->segdirfd, name, O_RDWR | O_CLOEXEC);
  if (f < 0)
    return store__fail(s, -errno, "%s/seg/%s: %s", s->dir, name, strerror(errno));
  store__fd_cache_put(s, id, f);
  *fd = f;
  return 0;
}

/* Opens segment `id` with O_DIRECT, and proves DIRECT_ALIGN is enough for
 * this device by reading the (aligned) segment header through it: a device
 * with larger logical blocks, or a filesystem without O_DIRECT (tmpfs),
 * gets -1 and the page cache path instead of failed writes. */
static int open_direct(struct store *s, uint64_t id, int flags)
{
  char name[32];
  store__seg_name(id, name);
  int dfd = openat(s->segdirfd, name, flags | O_DIRECT | O_CLOEXEC);
  if (dfd < 0)
    return -1;
  _Alignas(DIRECT_ALIGN) unsigned char probe[DIRECT_ALIGN];
  if (pread(dfd, probe, DIRECT_ALIGN, 0) != DIRECT_ALIGN) {
    close(dfd);
    return -1;
  }
  return dfd;
}

/* Opens the active segment a second time with O_DIRECT for full-extent
 * writes and reads. */
void store__seg_open_direct(struct store *s)
{
  if (s->act_dfd >= 0)
    close(s->act_dfd);
  s->act_dfd = -1;
  if (s->act_fd >= 0 && !s->o.fallback_io)
    s->act_dfd = open_direct(s, s->act_id, O_RDWR);
}

int store__seg_dfd(struct store *s, uint64_t id)
{
  int fd;
  if (s->act_fd >= 0 && id == s->act_id)
    return s->act_dfd;
  if (s->o.fallback_io || store__seg_fd(s, id, &fd) != 0)
    return -1;
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    if (s->fds[i].fd == fd) {
      if (s->fds[i].dfd == -1) {
        s->fds[i].dfd = open_direct(s, id, O_RDONLY);
        if (s->fds[i].dfd < 0)
          s->fds[i].dfd = -2;
      }
      return s->fds[i].dfd >= 0 ? s->fds[i].dfd : -1;
    }
  return -1; /* UNTESTED: store__seg_fd just cached it */
}

void store__segs_close(struct store *s)
{
  if (s->act_dfd >= 0)
    close(s->act_dfd);
  s->act_dfd = -1;
  for (unsigned i = 0; i < SEG_FD_CACHE; i++)
    if (s->fds[i].fd >= 0 && s->fds[i].fd != s->act_fd) {
      close(s->fds[i].fd);
      if (s->fds[i].dfd >= 0)
        close(s->fds[i].dfd);
    }
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
  if (s->o.capacity_bytes && s->seg_bytes + bytes > s->o.capacity_bytes)
    return store__fail(s, MSD_EDISKFULL,
                       "%s: store full: %" PRIu64 " of its %" PRIu64 " bytes of capacity used, %"
                       PRIu64 " more needed; delete and compact, or raise the capacity",
                       s->dir, s->seg_bytes, s->o.capacity_bytes, bytes);
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
  store__seg_name(id, name);
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

static uint64_t align_up(uint64_t v)
{
  return (v + DIRECT_ALIGN - 1) & ~(uint64_t)(DIRECT_ALIGN - 1);
}

int store__seg_reserve(struct store *s, uint64_t bytes, bool direct, int *fd, uint64_t *seg,
                       uint64_t *off, bool *direct_out)
{
  if (direct)
    bytes = align_up(bytes);
  uint64_t start = direct ? align_up(s->act_off) : s->act_off;
  if (s->act_fd < 0 || (s->act_off > SEG_HEADER_SIZE && start + bytes > s->o.segment_size)) {
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
      store__fd_cache_put(s, s->act_id, s->act_fd); /* still needed for reads and fsync */
    s->act_fd = nfd;
    s->act_id = id;
    s->act_off = SEG_HEADER_SIZE;
    s->seg_bytes += SEG_HEADER_SIZE;
    store__seg_open_direct(s);
  } else {
    int rc = store__check_space(s, bytes);
    if (rc != 0)
      return rc;
  }
  bool dio = direct && s->act_dfd >= 0;
  uint64_t start_off = s->act_off; /* alignment padding counts as used */
  if (dio)
    s->act_off = align_up(s->act_off); /* SEG_HEADER_SIZE is aligned too */
  *fd = dio ? s->act_dfd : s->act_fd;
  *seg = s->act_id;
  *off = s->act_off;
  s->seg_bytes += s->act_off + bytes - start_off;
  s->act_off += bytes;
  store__seg_dirty(s, s->act_id, s->act_off);
  if (direct_out)
    *direct_out = dio;
  return 0;
}

