/* The physical limits `medshard bench put|get` prints beside its figures,
 * measured in the same run: fio sequential writes and reads on the data
 * directory's filesystem, laid out as the cluster lays out one object's
 * shards (k+m files written at once, k read back), and one loopback TCP
 * stream between two threads. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_obj_int.h"
#include "common/alloc.h"
#include "common/err.h"

#define MIB (1u << 20)
#define FIO_NAME "medshard-bench-obj"

bool obj_fio_present(void)
{
  return system("command -v fio >/dev/null 2>&1") == 0;
}

/* fio's aggregate bandwidth (bytes/s) for `rw` over `jobs` jobs of
 * job_bytes each, or 0. The flags are `bench store`'s (io_uring engine,
 * O_DIRECT, 1 MiB blocks, iodepth 1); writes end with one fsync per file,
 * as a shard's seal ends its O_DIRECT appends with one fdatasync. */
static double run_fio(const char *dir, const char *rw, unsigned jobs, uint64_t job_bytes)
{
  char args[8192];
  snprintf(args, sizeof args,
           "--name=" FIO_NAME " --directory='%s' --ioengine=io_uring --direct=1 --rw=%s"
           " --bs=1M --size=%" PRIu64 " --numjobs=%u --iodepth=1 --end_fsync=%d --group_reporting",
           dir, rw, job_bytes, jobs, strcmp(rw, "write") == 0);
  return bench_fio_bw(args, rw);
}

static void fio_cleanup(const char *dir, unsigned jobs)
{
  char path[4200];
  for (unsigned j = 0; j < jobs; j++) {
    snprintf(path, sizeof path, "%s/" FIO_NAME ".%u.0", dir, j);
    unlink(path);
  }
}

int obj_fio(const char *dir, unsigned k, unsigned m, uint64_t bytes, struct obj_limits *out)
{
  out->fio_write_bps = out->fio_read_bps = 0;
  out->write_jobs = k + m, out->read_jobs = k;
  /* Each job is one shard of a `bytes` object: ceil(bytes / k), whole MiB. */
  out->job_bytes = (bytes / k + MIB - 1) / MIB * MIB;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    int rc = -errno;
    fprintf(stderr, "medshard bench: cannot make %s for fio: %s\n", dir, msd_strerror(rc));
    return rc;
  }
  out->fio_write_bps = run_fio(dir, "write", k + m, out->job_bytes);
  if (out->fio_write_bps > 0)
    out->fio_read_bps = run_fio(dir, "read", k, out->job_bytes);
  fio_cleanup(dir, k + m);
  if (out->fio_write_bps > 0 && out->fio_read_bps > 0)
    return 0;
  fprintf(stderr, "medshard bench: fio in %s gave no %s figure (run it by hand: fio --name=x"
          " --directory=%s --rw=write --bs=1M --size=64M --direct=1 --ioengine=io_uring)\n", dir,
          out->fio_write_bps > 0 ? "read" : "write", dir);
  return MSD_ESTATE;
}

/* ---- loopback TCP ---- */

struct loop_rx {
  int lfd;
  uint64_t bytes, got;
  double t_end;
  int rc;
};

static void *loop_receiver(void *arg)
{
  struct loop_rx *rx = arg;
  uint8_t *buf = msd_malloc(MIB);
  int fd = accept(rx->lfd, NULL, NULL);
  rx->rc = fd < 0 ? -errno : buf == NULL ? -ENOMEM : 0;
  while (rx->rc == 0 && rx->got < rx->bytes) {
    ssize_t n = recv(fd, buf, MIB, 0);
    if (n > 0)
      rx->got += (uint64_t)n;
    else if (n == 0)
      rx->rc = -ECONNRESET;
    else if (errno != EINTR)
      rx->rc = -errno;
  }
  rx->t_end = bench_now();
  if (fd >= 0)
    close(fd);
  msd_free(buf);
  return NULL;
}

/* A listening socket on 127.0.0.1 and a connection to it. */
static int loop_sockets(int *lfd, int *cfd)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  *lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*lfd < 0 || *cfd < 0 || bind(*lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(*lfd, 1) != 0 || getsockname(*lfd, (struct sockaddr *)&sa, &len) != 0 ||
      connect(*cfd, (struct sockaddr *)&sa, sizeof sa) != 0)
    return -errno;
  return 0;
}

static int loop_send(int fd, const uint8_t *buf, uint64_t bytes)
{
  for (uint64_t sent = 0; sent < bytes;) {
    size_t want = bytes - sent < MIB ? (size_t)(bytes - sent) : MIB;
    ssize_t n = send(fd, buf, want, MSG_NOSIGNAL);
    if (n > 0)
      sent += (uint64_t)n;
    else if (n < 0 && errno != EINTR)
      return -errno;
  }
  return 0;
}

int obj_loopback(uint64_t bytes, struct obj_limits *out)
{
  struct loop_rx rx = {.bytes = bytes};
  int cfd, rc = loop_sockets(&rx.lfd, &cfd);
  uint8_t *buf = msd_malloc(MIB);
  pthread_t th;
  bool started = false;
  out->loopback_bps = 0;
  out->loop_bytes = bytes;
  if (rc == 0 && buf == NULL)
    rc = -ENOMEM;
  if (rc == 0 && pthread_create(&th, NULL, loop_receiver, &rx) != 0)
    rc = -EAGAIN;
  started = rc == 0;
  double t0 = bench_now();
  if (rc == 0) {
    bench_fill(buf, MIB, 11);
    rc = loop_send(cfd, buf, bytes);
  }
  if (cfd >= 0)
    close(cfd); /* the receiver sees the end if the send failed */
  if (started)
    pthread_join(th, NULL);
  if (rc == 0)
    rc = rx.rc;
  if (rc == 0)
    out->loopback_bps = (double)bytes / (rx.t_end - t0);
  else
    fprintf(stderr, "medshard bench: loopback TCP: %s\n", msd_strerror(rc));
  if (rx.lfd >= 0)
    close(rx.lfd);
  msd_free(buf);
  return rc;
}
