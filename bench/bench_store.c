/* `medshard bench store --dir DIR`: sequential shard writes (each sealed on
 * its own) and cold reads for 1 MiB, 64 KiB and 4 KiB shards, beside fio
 * (io_uring engine, direct I/O, fdatasync after every write, same block size
 * and directory) run in the same invocation, and the ratio. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/alloc.h"
#include "common/err.h"
#include "storage/store.h"

struct store_bench {
  const char *dir;
  uint64_t bytes; /* per shard size and phase */
  unsigned rounds;
  bool fallback, json, fio;
};

struct phase {
  size_t shard;
  uint64_t count;
  double write_s, read_s;
  double fio_write_bps, fio_read_bps; /* 0 = not measured */
};

/* Drops the page cache for the store's segments so reads come from disk. */
static void drop_cache(const char *store_dir)
{
  char path[4200];
  snprintf(path, sizeof path, "%s/seg", store_dir);
  DIR *d = opendir(path);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    char f[4600];
    snprintf(f, sizeof f, "%s/%s", path, de->d_name);
    int fd = open(f, O_RDONLY);
    if (fd >= 0) {
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
  }
  if (d)
    closedir(d);
}

static void remove_tree(const char *dir)
{
  pid_t pid = fork();
  if (pid == 0) {
    execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
    _exit(127);
  }
  if (pid > 0)
    waitpid(pid, NULL, 0);
}

static void shard_id(struct store_id *id, uint64_t n)
{
  memset(id, 0, sizeof *id);
  memcpy(id->oid, &n, sizeof n);
}

static int run_store(const struct store_bench *b, struct phase *p, unsigned char *buf)
{
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/medshard-bench-store", b->dir);
  remove_tree(dir);
  struct store_opts o = {.create = true, .fallback_io = b->fallback, .reserve_bytes = 1};
  struct store *s;
  int rc = store_open(dir, &o, &s);
  if (rc != 0) {
    fprintf(stderr, "medshard bench store: %s: %s\n", dir, msd_strerror(rc));
    return rc;
  }
  double t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < p->count; i++) {
    struct store_id id;
    struct store_writer *w;
    shard_id(&id, i);
    rc = store_write_begin(s, &id, &w);
    if (rc == 0 && (rc = store_write(w, buf, p->shard)) != 0)
      store_write_abort(w);
    else if (rc == 0)
      rc = store_seal(w);
  }
  p->write_s = bench_now() - t0;
  drop_cache(dir);
  t0 = bench_now();
  for (uint64_t i = 0; rc == 0 && i < p->count; i++) {
    struct store_id id;
    size_t got;
    shard_id(&id, i);
    rc = store_read(s, &id, 0, buf, p->shard, &got);
  }
  p->read_s = bench_now() - t0;
  if (rc != 0)
    fprintf(stderr, "medshard bench store: %s\n", store_errmsg(s));
  store_close(s);
  remove_tree(dir);
  return rc;
}

/* fio's bandwidth in bytes/s for `rw` with the store's I/O shape, or 0. */
static double run_fio(const struct store_bench *b, const char *rw, size_t bs, uint64_t bytes)
{
  char args[8192];
  snprintf(args, sizeof args,
           "--name=medshard-bench --directory='%s' --ioengine=io_uring --direct=1 "
           "--rw=%s --bs=%zu --size=%" PRIu64 " --fdatasync=%d --numjobs=1 --iodepth=1",
           b->dir, rw, bs, bytes, strcmp(rw, "write") == 0 ? 1 : 0);
  return bench_fio_bw(args, rw);
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs the store and fio alternately, `rounds` times, and keeps each one's
 * median: on a shared machine a noisy neighbour then hurts both alike, and
 * one lucky or unlucky round (fio's 1 MiB reads ranged 571-1617 MB/s here)
 * does not decide the ratio. */
static int median_of(const struct store_bench *b, struct phase *out, unsigned char *buf)
{
  double w[20], r[20], fw[20], fr[20];
  for (unsigned i = 0; i < b->rounds; i++) {
    struct phase p = *out;
    int rc = run_store(b, &p, buf);
    if (rc != 0)
      return rc;
    w[i] = p.write_s, r[i] = p.read_s, fw[i] = fr[i] = 0;
    if (!b->fio)
      continue;
    uint64_t bytes = p.count * p.shard;
    fw[i] = run_fio(b, "write", p.shard, bytes);
    fr[i] = run_fio(b, "read", p.shard, bytes);
    char f[4200];
    snprintf(f, sizeof f, "%s/medshard-bench.0.0", b->dir);
    unlink(f);
  }
  out->write_s = median(w, b->rounds);
  out->read_s = median(r, b->rounds);
  out->fio_write_bps = median(fw, b->rounds);
  out->fio_read_bps = median(fr, b->rounds);
  return 0;
}

static void print_phase(const struct store_bench *b, const struct phase *p, bool first)
{
  double bytes = (double)p->count * (double)p->shard;
  double w = bytes / p->write_s, r = bytes / p->read_s;
  double wr = p->fio_write_bps > 0 ? w / p->fio_write_bps : 0;
  double rr = p->fio_read_bps > 0 ? r / p->fio_read_bps : 0;
  if (b->json) {
    printf("%s{\"shard_bytes\":%zu,\"shards\":%" PRIu64 ",\"write_mbps\":%.1f,"
           "\"write_shards_per_s\":%.0f,\"read_mbps\":%.1f,\"read_shards_per_s\":%.0f,"
           "\"fio_write_mbps\":%.1f,\"write_ratio\":%.3f,\"fio_read_mbps\":%.1f,"
           "\"read_ratio\":%.3f}",
           first ? "" : ",", p->shard, p->count, w / 1e6, (double)p->count / p->write_s, r / 1e6,
           (double)p->count / p->read_s, p->fio_write_bps / 1e6, wr, p->fio_read_bps / 1e6, rr);
    return;
  }
  char fw[32] = "      -", fr[32] = "      -", wrs[16] = "    -", rrs[16] = "    -";
  if (p->fio_write_bps > 0) {
    snprintf(fw, sizeof fw, "%7.1f", p->fio_write_bps / 1e6);
    snprintf(wrs, sizeof wrs, "%5.2f", wr);
  }
  if (p->fio_read_bps > 0) {
    snprintf(fr, sizeof fr, "%7.1f", p->fio_read_bps / 1e6);
    snprintf(rrs, sizeof rrs, "%5.2f", rr);
  }
  printf("  %6zu KiB %8.1f %9.0f %s %s %8.1f %9.0f %s %s\n", p->shard >> 10, w / 1e6,
         (double)p->count / p->write_s, fw, wrs, r / 1e6, (double)p->count / p->read_s, fr, rrs);
}

static int parse(int argc, char **argv, struct store_bench *b)
{
  static const struct option opts[] = {
      {"dir", required_argument, NULL, 'd'},   {"size", required_argument, NULL, 's'},
      {"fallback", no_argument, NULL, 'f'},    {"no-fio", no_argument, NULL, 'n'},
      {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
      {"rounds", required_argument, NULL, 'r'},
      {NULL, 0, NULL, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'd': b->dir = optarg; break;
    case 'f': b->fallback = true; break;
    case 'n': b->fio = false; break;
    case 'j': b->json = true; break;
    case 'h': return 1;
    case 'r': {
      uint64_t v;
      if (bench_parse_size(optarg, &v) != 0 || v < 1 || v > 20) {
        fprintf(stderr, "medshard bench store: --rounds %s: need 1 to 20\n", optarg);
        return MSD_EPARAM;
      }
      b->rounds = (unsigned)v;
      break;
    }
    case 's':
      if (bench_parse_size(optarg, &b->bytes) != 0 || b->bytes < (1u << 20)) {
        fprintf(stderr, "medshard bench store: --size %s: need a size of at least 1M\n",
                optarg);
        return MSD_EPARAM;
      }
      break;
    default: return MSD_EPARAM;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "medshard bench store: unexpected argument '%s'\n", argv[optind]);
    return MSD_EPARAM;
  }
  if (b->dir == NULL) {
    fprintf(stderr, "medshard bench store: --dir DIR is required (a directory on the disk "
                    "to measure)\n");
    return MSD_EPARAM;
  }
  return 0;
}

int bench_store_main(int argc, char **argv)
{
  struct store_bench b = {.bytes = 256u << 20, .rounds = 5, .fio = true};
  int rc = parse(argc, argv, &b);
  if (rc != 0) {
    fprintf(rc > 0 ? stdout : stderr,
            "usage: medshard bench store --dir DIR [--size BYTES] [--rounds N] [--fallback]\n"
            "                            [--no-fio] [--json]\n"
            "Writes --size bytes (default 256M) of 1 MiB shards, a quarter of it in 64 KiB\n"
            "shards and 1/32 in 4 KiB shards, each sealed on its own, reads them back cold,\n"
            "and runs fio with the same block size in DIR for comparison, alternating\n"
            "--rounds times (default 5) and reporting each side's median.\n");
    return rc > 0 ? 0 : 2;
  }
  struct stat st;
  if (stat(b.dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "medshard bench store: --dir %s: not a directory\n", b.dir);
    return 2;
  }
  if (b.fio && system("command -v fio >/dev/null 2>&1") != 0) {
    fprintf(stderr, "medshard bench store: fio is not installed: no peer figures "
                    "(apt-get install fio)\n");
    b.fio = false;
  }
  unsigned char *buf = msd_aligned_alloc(4096, 1u << 20);
  if (buf == NULL)
    return 1;
  bench_fill(buf, 1u << 20, 7);
  struct phase ph[3] = {{1u << 20, b.bytes >> 20, 0, 0, 0, 0},
                        {64u << 10, (b.bytes / 4) >> 16, 0, 0, 0, 0},
                        {4u << 10, (b.bytes / 32) >> 12, 0, 0, 0, 0}};
  if (b.json)
    printf("{\"bench\":\"store\",\"dir\":\"%s\",\"io\":\"%s\",\"phases\":[", b.dir,
           b.fallback ? "pread/pwrite" : "io_uring");
  else
    printf("medshard bench store: %s, %s; each shard written then sealed on its own "
           "(fdatasync), reads cold\n"
           "  shard      write MB/s  shards/s  fio MB/s ratio  read MB/s  shards/s  fio MB/s "
           "ratio\n",
           b.dir, b.fallback ? "pread/pwrite" : "io_uring");
  for (int i = 0; i < 3 && rc == 0; i++) {
    rc = median_of(&b, &ph[i], buf);
    if (rc == 0)
      print_phase(&b, &ph[i], i == 0);
  }
  if (b.json)
    printf("]}\n");
  else
    printf("  (fio: io_uring, direct=1, fdatasync=1 on writes, iodepth 1, same bs and dir;\n"
           "   median of %u alternating rounds each)\n", b.rounds);
  msd_free(buf);
  return rc == 0 ? 0 : 1;
}
