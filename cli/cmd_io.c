/* `medshard put` and `medshard get`: objects in and out through the client
 * API (cluster/client.h), with a progress line on stderr when it is a
 * terminal and --json for scripts. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cluster/client.h"
#include "common/err.h"
#include "common/sock.h"

/* ---- progress ---- */

struct progress {
  bool on;
  uint64_t done, total; /* total 0: unknown */
  int64_t t0, shown;
};

static void progress_init(struct progress *p, uint64_t total)
{
  *p = (struct progress){.on = isatty(STDERR_FILENO) == 1, .total = total, .t0 = msd_now_ms()};
}

static void progress_show(struct progress *p, bool last)
{
  int64_t now = msd_now_ms();
  if (!p->on || (!last && now - p->shown < 200))
    return;
  p->shown = now;
  double secs = (double)(now - p->t0) / 1000.0, mib = (double)p->done / 1048576.0;
  double rate = secs > 0 ? (double)p->done / 1e6 / secs : 0;
  if (p->total > 0)
    fprintf(stderr, "\r%10.1f / %.1f MiB %3d%% %8.1f MB/s", mib, (double)p->total / 1048576.0,
            (int)(100.0 * (double)p->done / (double)p->total), rate);
  else
    fprintf(stderr, "\r%10.1f MiB %8.1f MB/s", mib, rate);
  if (last)
    fputc('\n', stderr);
}

/* ---- shared ---- */

/* Splits "BUCKET/KEY" at the first '/'. */
static int split_name(const char *verb, const char *name, char *bucket, size_t cap,
                      const char **key)
{
  const char *slash = strchr(name, '/');
  if (slash == NULL || slash == name || slash[1] == 0 || (size_t)(slash - name) >= cap) {
    fprintf(stderr, "medshard %s: '%s' is not BUCKET/KEY\n", verb, name);
    return 2;
  }
  snprintf(bucket, cap, "%.*s", (int)(slash - name), name);
  *key = slash + 1;
  return 0;
}

static struct msd_client *open_cluster(const char *verb, const char *flag)
{
  const char *nodes = cli_cluster(flag, verb);
  if (nodes == NULL)
    return NULL;
  struct msd_client *c;
  struct msd_error e = {0};
  if (msd_client_open(nodes, &c, &e) != 0) {
    fprintf(stderr, "medshard %s: %s\n", verb, e.msg);
    return NULL;
  }
  return c;
}

static void print_manifest_json(const Medshard__Manifest *m, uint64_t off, uint64_t len)
{
  char hex[129];
  printf("{\"bucket\":");
  cli_json_str(stdout, m->bucket ? m->bucket : "");
  printf(",\"key\":");
  cli_json_str(stdout, m->key ? m->key : "");
  printf(",\"object_id\":\"%s\"", cli_hex(m->object_id.data, m->object_id.len, hex));
  printf(",\"version\":%" PRIu64 ",\"size\":%" PRIu64, m->version, m->size);
  printf(",\"sha256\":\"%s\"", cli_hex(m->sha256.data, m->sha256.len, hex));
  if (m->anchor != NULL)
    printf(",\"anchor\":{\"leaf_index\":%" PRIu64 ",\"leaf_hash\":\"%s\"}", m->anchor->leaf_index,
           cli_hex(m->anchor->leaf_hash.data, m->anchor->leaf_hash.len, hex));
  printf(",\"holes\":[");
  const Medshard__ShardMap *sm = m->shard_map;
  for (size_t i = 0, n = 0; sm != NULL && i < sm->n_shards; i++)
    if (sm->shards[i]->node_id == 0)
      printf("%s%zu", n++ ? "," : "", i);
  printf("]");
  if (len != UINT64_MAX)
    printf(",\"offset\":%" PRIu64 ",\"length\":%" PRIu64, off, len);
  printf("}\n");
}

/* ---- put ---- */

struct put_src {
  int fd;
  struct progress pr;
};

static ssize_t read_body(void *ctx, void *buf, size_t cap)
{
  struct put_src *s = ctx;
  for (;;) {
    ssize_t n = read(s->fd, buf, cap);
    if (n >= 0) {
      s->pr.done += (uint64_t)n;
      progress_show(&s->pr, false);
      return n;
    }
    if (errno != EINTR)
      return -errno;
  }
}

static void print_put(const Medshard__Manifest *m)
{
  char hex[129];
  printf("stored %s/%s version %" PRIu64 ": %" PRIu64 " bytes, sha256 %s\n", m->bucket, m->key,
         m->version, m->size, cli_hex(m->sha256.data, m->sha256.len, hex));
  printf("  object %s", cli_hex(m->object_id.data, m->object_id.len, hex));
  if (m->anchor != NULL)
    printf(", anchor leaf %" PRIu64 " (%s)", m->anchor->leaf_index,
           cli_hex(m->anchor->leaf_hash.data, m->anchor->leaf_hash.len, hex));
  printf("\n");
  const Medshard__ShardMap *sm = m->shard_map;
  for (size_t i = 0; sm != NULL && i < sm->n_shards; i++)
    if (sm->shards[i]->node_id == 0)
      printf("  shard %zu is a hole: a target failed during the write; repair will rebuild it\n",
             i);
}

static void put_usage(FILE *f)
{
  fprintf(f, "usage: medshard put FILE|- BUCKET/KEY [--content-type TYPE] [--node ADDRS] [--json]\n"
             "Stores FILE (or standard input) as BUCKET/KEY, erasure-coded across the cluster,\n"
             "and anchors it on the chain. Prints the version, SHA-256 and anchor reference.\n");
}

int cmd_put(int argc, char **argv)
{
  static const struct option opts[] = {{"content-type", 1, 0, 't'}, {"node", 1, 0, 'n'},
                                       {"json", 0, 0, 'j'},         {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *type = NULL, *node = NULL;
  bool json = false;
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (opt == 'h') {
      put_usage(stdout);
      return 0;
    }
    if (opt == '?') {
      put_usage(stderr);
      return 2;
    }
    if (opt == 't')
      type = optarg;
    else if (opt == 'n')
      node = optarg;
    else
      json = true;
  }
  if (argc - optind != 2) {
    put_usage(stderr);
    return 2;
  }
  const char *file = argv[optind], *key;
  char bucket[64];
  if (split_name("put", argv[optind + 1], bucket, sizeof bucket, &key) != 0)
    return 2;
  struct put_src src = {.fd = strcmp(file, "-") == 0 ? STDIN_FILENO : open(file, O_RDONLY)};
  struct stat st;
  if (src.fd < 0 || fstat(src.fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    fprintf(stderr, "medshard put: cannot read %s: %s\n", file,
            src.fd >= 0 ? "it is a directory" : strerror(errno));
    return 1;
  }
  struct msd_put_opts po = {.content_type = type, .has_size = S_ISREG(st.st_mode),
                            .size = (uint64_t)st.st_size};
  progress_init(&src.pr, po.has_size ? po.size : 0);
  struct msd_client *c = open_cluster("put", node);
  int rc = 1;
  if (c != NULL) {
    Medshard__Manifest *m = NULL;
    struct msd_error e = {0};
    rc = msd_put(c, bucket, key, &po, read_body, &src, &m, &e);
    progress_show(&src.pr, true);
    if (rc != 0)
      fprintf(stderr, "medshard put: %s\n", e.msg);
    else if (json)
      print_manifest_json(m, 0, UINT64_MAX);
    else
      print_put(m);
    if (m != NULL)
      medshard__manifest__free_unpacked(m, NULL);
    msd_client_close(c);
    rc = rc != 0;
  }
  if (src.fd != STDIN_FILENO)
    close(src.fd);
  return rc;
}

/* ---- get ---- */

struct get_dst {
  int fd;
  uint64_t next; /* the object offset the next bytes must start at */
  bool first;
  EVP_MD_CTX *sha; /* whole reads: checked here too, end to end */
  struct progress pr;
};

static int write_body(void *ctx, uint64_t off, const void *buf, size_t len)
{
  struct get_dst *d = ctx;
  if (!d->first && off != d->next)
    return MSD_EFRAME; /* bytes out of order: never write them */
  d->first = false;
  d->next = off + len;
  if (d->sha != NULL)
    EVP_DigestUpdate(d->sha, buf, len);
  for (size_t put = 0; put < len;) {
    ssize_t n = write(d->fd, (const uint8_t *)buf + put, len - put);
    if (n < 0 && errno != EINTR)
      return -errno;
    put += n > 0 ? (size_t)n : 0;
  }
  d->pr.done += len;
  progress_show(&d->pr, false);
  return 0;
}

/* "START-END" (inclusive) or "START-" (to the end). */
static int parse_range(const char *s, struct msd_range *r)
{
  char *end;
  errno = 0;
  unsigned long long a = strtoull(s, &end, 10);
  if (end == s || *end != '-' || errno != 0 || s[0] == '-')
    return MSD_EPARAM;
  const char *b_s = end + 1;
  if (*b_s == 0) {
    *r = (struct msd_range){a, UINT64_MAX - a};
    return 0;
  }
  unsigned long long b = strtoull(b_s, &end, 10);
  if (*end != 0 || errno != 0 || b_s[0] == '-' || b < a)
    return MSD_EPARAM;
  *r = (struct msd_range){a, b - a + 1};
  return 0;
}

static void get_usage(FILE *f)
{
  fprintf(f, "usage: medshard get BUCKET/KEY [FILE|-] [--range START-END] [--node ADDRS] [--json]\n"
             "Reads BUCKET/KEY into FILE (default: standard output). --range reads bytes\n"
             "START..END inclusive (START- reads to the end). A failed read leaves no FILE.\n");
}

/* Checks what a whole read gave against the manifest, here as well. */
static int check_whole(struct get_dst *d, const Medshard__Manifest *m)
{
  uint8_t sha[32];
  unsigned n = 0;
  EVP_DigestFinal_ex(d->sha, sha, &n);
  if (m->sha256.len != 32 || memcmp(sha, m->sha256.data, 32) != 0 || d->pr.done != m->size) {
    fprintf(stderr, "medshard get: %s/%s: the bytes received do not match the SHA-256 anchored "
                    "for them\n", m->bucket, m->key);
    return 1;
  }
  return 0;
}

static int get_run(struct msd_client *c, const char *bucket, const char *key,
                   const struct msd_range *r, struct get_dst *d, bool json)
{
  Medshard__Manifest *m = NULL;
  struct msd_error e = {0};
  int rc = msd_get(c, bucket, key, r, write_body, d, &m, &e);
  progress_show(&d->pr, true);
  if (rc != 0)
    fprintf(stderr, "medshard get: %s\n", e.msg);
  else if (r == NULL)
    rc = check_whole(d, m);
  if (rc == 0 && json)
    print_manifest_json(m, r ? r->off : 0, d->pr.done);
  if (m != NULL)
    medshard__manifest__free_unpacked(m, NULL);
  return rc != 0;
}

int cmd_get(int argc, char **argv)
{
  static const struct option opts[] = {{"range", 1, 0, 'r'}, {"node", 1, 0, 'n'},
                                       {"json", 0, 0, 'j'},  {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *node = NULL, *range = NULL;
  bool json = false;
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (opt == 'h') {
      get_usage(stdout);
      return 0;
    }
    if (opt == '?') {
      get_usage(stderr);
      return 2;
    }
    if (opt == 'r')
      range = optarg;
    else if (opt == 'n')
      node = optarg;
    else
      json = true;
  }
  int nargs = argc - optind;
  if (nargs < 1 || nargs > 2) {
    get_usage(stderr);
    return 2;
  }
  const char *key, *file = nargs == 2 ? argv[optind + 1] : "-";
  char bucket[64];
  struct msd_range r;
  if (split_name("get", argv[optind], bucket, sizeof bucket, &key) != 0)
    return 2;
  if (range != NULL && parse_range(range, &r) != 0) {
    fprintf(stderr, "medshard get: --range wants START-END (inclusive) or START-, got '%s'\n",
            range);
    return 2;
  }
  bool to_stdout = strcmp(file, "-") == 0;
  if (json && to_stdout) {
    fprintf(stderr, "medshard get: --json prints to standard output: give a FILE for the data\n");
    return 2;
  }
  struct msd_client *c = open_cluster("get", node);
  if (c == NULL)
    return 1;
  /* A file appears under its name only once complete and checked. */
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.medshard-%d", file, (int)getpid());
  struct get_dst d = {.fd = to_stdout ? STDOUT_FILENO
                                      : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644),
                      .first = true,
                      .sha = range == NULL ? EVP_MD_CTX_new() : NULL};
  int rc = 1;
  if (d.fd < 0)
    fprintf(stderr, "medshard get: cannot write %s: %s\n", file, strerror(errno));
  else if (range == NULL && (d.sha == NULL || !EVP_DigestInit_ex(d.sha, EVP_sha256(), NULL)))
    fprintf(stderr, "medshard get: out of memory\n");
  else {
    progress_init(&d.pr, 0);
    rc = get_run(c, bucket, key, range ? &r : NULL, &d, json);
  }
  if (!to_stdout && d.fd >= 0) {
    if (rc == 0 && (fsync(d.fd) != 0 || close(d.fd) != 0 || rename(tmp, file) != 0)) {
      fprintf(stderr, "medshard get: cannot write %s: %s\n", file, strerror(errno));
      rc = 1;
    } else if (rc != 0) {
      close(d.fd);
    }
    if (rc != 0)
      unlink(tmp);
  }
  EVP_MD_CTX_free(d.sha);
  msd_client_close(c);
  return rc;
}
