/* Shard RPCs (net/shard_rpc.h) served by a real data loop over a real
 * store in a temporary directory, driven by a blocking client on
 * 127.0.0.1: write, seal, stat and read a shard; retries; refusals; a
 * byte corrupted on disk comes back as MSD_ECHECKSUM, never as data. */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/err.h"
#include "net/data_client.h"
#include "net/loop.h"
#include "net/shard_list.h"
#include "net/shard_rpc.h"
#include "proto/medshard.pb-c.h"
#include "testutil.h"

#define BOUND (1u << 20)

struct rig {
  char dir[4096];
  struct store *store;
  struct shard_rpc *rpc;
  struct net_loop *l;
  pthread_t t;
  struct data_client *dc;
};

static void *serve(void *arg)
{
  net_loop_run(arg);
  return NULL;
}

static void rig_up(struct rig *g)
{
  snprintf(g->dir, sizeof g->dir, "%s", test_tmpdir());
  struct store_opts so = {.create = true, .segment_size = 8u << 20, .reserve_bytes = 1u << 20};
  CU_ASSERT_EQUAL_FATAL(store_open(g->dir, &so, &g->store), 0);
  CU_ASSERT_EQUAL_FATAL(shard_rpc_create(g->store, 4, 60000, BOUND, &g->rpc), 0);
  struct net_opts o = {.listen = "127.0.0.1:0", .pool_buffers = 4, .buffer_bytes = BOUND};
  CU_ASSERT_EQUAL_FATAL(net_loop_create(&o, shard_rpc_handle, g->rpc, &g->l), 0);
  shard_rpc_attach(g->rpc, g->l);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&g->t, NULL, serve, g->l), 0);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", net_loop_port(g->l));
  CU_ASSERT_EQUAL_FATAL(data_client_connect(addr, 5000, &g->dc), 0);
}

static void rig_down(struct rig *g)
{
  data_client_close(g->dc);
  net_loop_stop(g->l);
  pthread_join(g->t, NULL);
  net_loop_destroy(g->l);
  shard_rpc_destroy(g->rpc);
  store_close(g->store);
  test_tmpdir_remove(g->dir);
}

/* One request; the response's code (or -1 on a transport failure), its
 * size, and up to cap payload bytes into data. */
static int call(struct rig *g, Medshard__DataRequest *q, const void *payload, size_t plen,
                uint64_t *size, uint8_t *data, size_t cap, size_t *got)
{
  Medshard__DataResponse *r;
  size_t n = 0;
  if (data_client_call(g->dc, q, payload, plen, 10000, &r, data, data ? cap : 0, &n) != 0)
    return -1;
  int code = r->code;
  if (size != NULL)
    *size = r->size;
  if (got != NULL)
    *got = n;
  medshard__data_response__free_unpacked(r, NULL);
  return code;
}

static void fill(uint8_t *b, size_t n, uint64_t salt)
{
  struct test_rng r = test_rng_for(salt);
  test_rng_fill(&r, b, n);
}

static Medshard__DataRequest req(Medshard__DataOp op, uint8_t *oid, uint32_t index)
{
  Medshard__DataRequest q = MEDSHARD__DATA_REQUEST__INIT;
  q.op = op;
  q.object_id = (ProtobufCBinaryData){16, oid};
  q.shard_index = index;
  return q;
}

static void digest_of(const uint8_t *b, size_t n, uint8_t out[16])
{
  XXH128_hash_t h = XXH3_128bits(b, n);
  for (int i = 0; i < 8; i++) {
    out[i] = (uint8_t)(h.high64 >> (56 - 8 * i));
    out[8 + i] = (uint8_t)(h.low64 >> (56 - 8 * i));
  }
}

/* Writes `n` bytes of shard (oid, 2) in appends of `step`, seals it. */
static int write_shard(struct rig *g, uint8_t *oid, const uint8_t *data, size_t n, size_t step)
{
  Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, oid, 2);
  int rc = call(g, &q, NULL, 0, NULL, NULL, 0, NULL);
  for (size_t off = 0; rc == 0 && off < n; off += step) {
    q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND, oid, 2);
    q.offset = off;
    rc = call(g, &q, data + off, n - off < step ? n - off : step, NULL, NULL, 0, NULL);
  }
  uint8_t d[16];
  digest_of(data, n, d);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL, oid, 2);
  q.digest = (ProtobufCBinaryData){16, d};
  return rc == 0 ? call(g, &q, NULL, 0, NULL, NULL, 0, NULL) : rc;
}

static void test_write_seal_read(void)
{
  struct rig g;
  rig_up(&g);
  size_t n = 3u << 20;
  uint8_t *data = malloc(n), *back = malloc(BOUND), oid[16];
  fill(data, n, 7);
  memset(oid, 0x11, sizeof oid);
  CU_ASSERT_EQUAL(write_shard(&g, oid, data, n, BOUND), 0);
  uint64_t size = 0;
  Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT, oid, 2);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, &size, NULL, 0, NULL), 0);
  CU_ASSERT_EQUAL(size, n);
  /* Reads anywhere, clipped to the bound and to the shard's end. */
  static const uint64_t offs[] = {0, 12345, (3u << 20) - 100};
  for (size_t i = 0; i < 3; i++) {
    size_t got = 0;
    q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_READ, oid, 2);
    q.offset = offs[i];
    q.length = 2u << 20;
    CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, back, BOUND, &got), 0);
    size_t want = n - offs[i] < BOUND ? n - offs[i] : BOUND;
    CU_ASSERT_EQUAL(got, want);
    CU_ASSERT_EQUAL(memcmp(back, data + offs[i], want), 0);
  }
  /* Retries: SEAL again with the same digest is fine; OPEN of a sealed
   * shard says so. */
  uint8_t d[16];
  digest_of(data, n, d);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL, oid, 2);
  q.digest = (ProtobufCBinaryData){16, d};
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, oid, 2);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, &size, NULL, 0, NULL), MSD_EEXIST);
  CU_ASSERT_EQUAL(size, n);
  /* Delete, then the shard is gone. */
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE, oid, 2);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_READ, oid, 2);
  q.length = 10;
  size_t got;
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, back, BOUND, &got), MSD_EDELETED);
  free(data);
  free(back);
  rig_down(&g);
}

static void test_refusals(void)
{
  struct rig g;
  rig_up(&g);
  uint8_t oid[16], data[100] = {1};
  memset(oid, 0x22, sizeof oid);
  Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND, oid, 0);
  CU_ASSERT_EQUAL(call(&g, &q, data, 10, NULL, NULL, 0, NULL), MSD_ESTATE); /* not open */
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, oid, 0);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND, oid, 0);
  q.offset = 5; /* a gap */
  uint64_t size = 99;
  CU_ASSERT_EQUAL(call(&g, &q, data, 10, &size, NULL, 0, NULL), MSD_ERANGE);
  CU_ASSERT_EQUAL(size, 0);
  q.offset = 0;
  CU_ASSERT_EQUAL(call(&g, &q, data, sizeof data, &size, NULL, 0, NULL), 0);
  CU_ASSERT_EQUAL(size, sizeof data);
  /* A digest that is not the bytes': the shard is dropped. */
  uint8_t wrong[16] = {0};
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL, oid, 0);
  q.digest = (ProtobufCBinaryData){16, wrong};
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), MSD_ECHECKSUM);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT, oid, 0);
  CU_ASSERT_NOT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  /* A short object id, a payload on a READ, an unknown op. */
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT, oid, 0);
  q.object_id.len = 5;
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), MSD_EPARAM);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_READ, oid, 0);
  CU_ASSERT_EQUAL(call(&g, &q, data, 3, NULL, NULL, 0, NULL), MSD_EPARAM);
  q = req((Medshard__DataOp)99, oid, 0);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), MSD_EPARAM);
  /* More shards open than slots: the fifth is refused, not queued. */
  int refused = 0;
  for (uint32_t i = 10; i < 15; i++) {
    q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, oid, i);
    refused += call(&g, &q, NULL, 0, NULL, NULL, 0, NULL) == MSD_ENOBUFS;
  }
  CU_ASSERT_EQUAL(refused, 1);
  /* ABORT frees a slot. */
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_ABORT, oid, 10);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, oid, 14);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  rig_down(&g);
}

/* Flips one byte of the shard in its segment file (found by a marker). */
static bool corrupt_on_disk(const char *dir, const uint8_t *marker, size_t mlen)
{
  char path[4200];
  snprintf(path, sizeof path, "%s/seg/0000000000000001.seg", dir);
  int fd = open(path, O_RDWR);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0)
    return false;
  uint8_t *img = malloc((size_t)st.st_size);
  bool done = false;
  if (pread(fd, img, (size_t)st.st_size, 0) == st.st_size) {
    for (off_t o = 0; !done && o + (off_t)mlen <= st.st_size; o++) {
      if (memcmp(img + o, marker, mlen) == 0) {
        uint8_t c = img[o + 3] ^ 0x40;
        done = pwrite(fd, &c, 1, o + 3) == 1;
      }
    }
  }
  free(img);
  close(fd);
  return done;
}

static void test_corrupt_shard_is_never_served(void)
{
  struct rig g;
  rig_up(&g);
  size_t n = 200000;
  uint8_t *data = malloc(n), *back = malloc(BOUND), oid[16];
  fill(data, n, 9);
  memcpy(data + 100000, "MEDSHARD-MARKER-0123456789", 26);
  memset(oid, 0x33, sizeof oid);
  CU_ASSERT_EQUAL_FATAL(write_shard(&g, oid, data, n, 65536), 0);
  CU_ASSERT_FATAL(corrupt_on_disk(g.dir, (const uint8_t *)"MEDSHARD-MARKER-0123456789", 26));
  Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_READ, oid, 2);
  q.offset = 0;
  q.length = n;
  size_t got = 0;
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, back, BOUND, &got), MSD_ECHECKSUM);
  CU_ASSERT_EQUAL(got, 0); /* no bytes with the error */
  /* The blocks before the damaged one still read. */
  q.length = 65536;
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, back, BOUND, &got), 0);
  CU_ASSERT_EQUAL(memcmp(back, data, 65536), 0);
  free(data);
  free(back);
  rig_down(&g);
}

#define CLIENTS 4

struct writer_thread {
  struct rig g; /* a copy of the rig with a client of its own */
  int n, rounds, failures;
};

/* One client's shards: each round writes, seals and reads back a shard. */
static void *write_rounds(void *arg)
{
  struct writer_thread *t = arg;
  size_t n = 300000 + 4099 * (size_t)t->n;
  uint8_t *data = malloc(n), *back = malloc(BOUND), oid[16];
  for (int r = 0; data && back && r < t->rounds; r++) {
    fill(data, n, (uint64_t)(t->n * 1000 + r));
    memset(oid, 0x40 + t->n, sizeof oid);
    oid[15] = (uint8_t)r;
    size_t got = 0;
    Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_READ, oid, 2);
    q.length = n;
    if (write_shard(&t->g, oid, data, n, 100000) != 0 ||
        call(&t->g, &q, NULL, 0, NULL, back, BOUND, &got) != 0 || got != n ||
        memcmp(back, data, n) != 0)
      t->failures++;
  }
  free(data);
  free(back);
  return NULL;
}

/* Four clients write and seal at once: while one seal's fdatasync is in
 * flight the loop keeps reading the others' requests, so seals meet in
 * the store's queue and go out together. A loop that waited for the disk
 * would handle them one by one: every batch a single seal. */
static void test_loop_serves_while_disk_works(void)
{
  struct rig g;
  rig_up(&g);
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", net_loop_port(g.l));
  struct writer_thread t[CLIENTS];
  pthread_t th[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    t[i] = (struct writer_thread){.g = g, .n = i, .rounds = 25};
    CU_ASSERT_EQUAL_FATAL(data_client_connect(addr, 5000, &t[i].g.dc), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, write_rounds, &t[i]), 0);
  }
  int failures = 0;
  for (int i = 0; i < CLIENTS; i++) {
    pthread_join(th[i], NULL);
    data_client_close(t[i].g.dc);
    failures += t[i].failures;
  }
  CU_ASSERT_EQUAL(failures, 0);
  net_loop_stop(g.l);
  pthread_join(g.t, NULL); /* the loop's thread is done with the store */
  struct store_io_stats st;
  store_io_stats(g.store, &st);
  printf(" (%llu seals in %llu batches)", (unsigned long long)st.seals,
         (unsigned long long)st.seal_batches);
  CU_ASSERT_EQUAL(st.seals, CLIENTS * 25);
  CU_ASSERT(st.seal_batches < st.seals);
  data_client_close(g.dc);
  g.dc = NULL;
  net_loop_destroy(g.l);
  shard_rpc_destroy(g.rpc);
  store_close(g.store);
  test_tmpdir_remove(g.dir);
}

/* One SHARD_LIST page: its code; the entries appended to out (cap), the
 * store's highest seq, whether more follow and the resume cursor. */
struct listing {
  struct shard_list_entry e[32];
  size_t n;
  uint64_t seq;
  bool more;
  uint8_t cursor[16];
  uint32_t cursor_index;
};

static int list_page(struct rig *g, const uint8_t *after, uint32_t after_index, size_t after_len,
                     uint64_t limit, const void *payload, size_t plen, struct listing *out)
{
  static uint8_t page[BOUND];
  Medshard__DataRequest q = MEDSHARD__DATA_REQUEST__INIT;
  Medshard__DataResponse *r;
  size_t got = 0;
  q.op = MEDSHARD__DATA_OP__DATA_OP_SHARD_LIST;
  q.object_id = (ProtobufCBinaryData){after_len, (uint8_t *)after};
  q.shard_index = after_index;
  q.length = limit;
  if (data_client_call(g->dc, &q, payload, plen, 10000, &r, page, sizeof page, &got) != 0)
    return -1;
  int code = r->code, n = code == 0 ? shard_list_count(page, got) : 0;
  CU_ASSERT(n >= 0);
  for (int i = 0; i < n && out->n < 32; i++)
    shard_list_entry(page, (size_t)i, &out->e[out->n++]);
  out->seq = r->seq;
  out->more = r->more;
  CU_ASSERT(!r->more || r->object_id.len == 16);
  if (r->object_id.len == 16)
    memcpy(out->cursor, r->object_id.data, 16), out->cursor_index = r->shard_index;
  medshard__data_response__free_unpacked(r, NULL);
  return code;
}

/* SHARD_LIST pages through the sealed shards in id order with sizes and
 * seal sequence numbers, skips deleted ones, and refuses bad cursors and
 * limits with MSD_EPARAM while the connection stays usable. */
static void test_list(void)
{
  struct rig g;
  rig_up(&g);
  uint8_t data[3000], oid[16];
  fill(data, sizeof data, 4);
  for (int i = 0; i < 7; i++) {
    memset(oid, 0x40 + i, sizeof oid);
    CU_ASSERT_EQUAL_FATAL(write_shard(&g, oid, data, 1000u + (size_t)i, 4096), 0);
  }
  memset(oid, 0x43, sizeof oid);
  Medshard__DataRequest q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE, oid, 2);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  struct listing l = {.n = 0};
  int pages = 0, rc = list_page(&g, NULL, 0, 0, 2, NULL, 0, &l);
  for (pages = 1; rc == 0 && l.more && pages < 20; pages++)
    rc = list_page(&g, l.cursor, l.cursor_index, 16, 2, NULL, 0, &l);
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(pages, 3);
  CU_ASSERT_EQUAL_FATAL(l.n, 6);
  for (size_t i = 0; i < l.n; i++) {
    int k = l.e[i].id.oid[0] - 0x40;
    CU_ASSERT_EQUAL(l.e[i].id.index, 2);
    CU_ASSERT_EQUAL(l.e[i].size, 1000u + (uint64_t)k);
    CU_ASSERT(k != 3 && l.e[i].seq > 0 && l.e[i].seq <= l.seq);
    CU_ASSERT(i == 0 || (l.e[i].id.oid[0] > l.e[i - 1].id.oid[0] && l.e[i].seq > l.e[i - 1].seq));
  }
  /* A huge limit is clipped: one page, everything. */
  struct listing one = {.n = 0};
  CU_ASSERT_EQUAL(list_page(&g, NULL, 0, 0, UINT64_MAX, NULL, 0, &one), 0);
  CU_ASSERT_EQUAL(one.n, 6);
  CU_ASSERT_FALSE(one.more);
  /* Bad cursors and limits, a payload: refused, and the connection lives on. */
  struct listing bad = {.n = 0};
  uint8_t long_cursor[17] = {0};
  CU_ASSERT_EQUAL(list_page(&g, oid, 0, 5, 10, NULL, 0, &bad), MSD_EPARAM);
  CU_ASSERT_EQUAL(list_page(&g, long_cursor, 0, 17, 10, NULL, 0, &bad), MSD_EPARAM);
  CU_ASSERT_EQUAL(list_page(&g, NULL, 0, 0, 0, NULL, 0, &bad), MSD_EPARAM);
  CU_ASSERT_EQUAL(list_page(&g, NULL, 0, 0, 10, data, 10, &bad), MSD_EPARAM);
  CU_ASSERT_EQUAL(bad.n, 0);
  memset(oid, 0x46, sizeof oid);
  q = req(MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT, oid, 2);
  CU_ASSERT_EQUAL(call(&g, &q, NULL, 0, NULL, NULL, 0, NULL), 0);
  /* Pages that are not version 1 or whose length lies are refused. */
  uint8_t page[SHARD_LIST_HEADER + SHARD_LIST_RECORD] = {1, 0, 0, 40, 0, 0, 0, 1};
  CU_ASSERT_EQUAL(shard_list_count(page, sizeof page), 1);
  CU_ASSERT_EQUAL(shard_list_count(page, sizeof page - 1), MSD_EDECODE);
  CU_ASSERT_EQUAL(shard_list_count(page, 3), MSD_EDECODE);
  page[0] = 2;
  CU_ASSERT_EQUAL(shard_list_count(page, sizeof page), MSD_EVERSION);
  rig_down(&g);
}

const struct test_case shard_rpc_tests[] = {
    {"the loop serves others while the disk works", test_loop_serves_while_disk_works},
    {"SHARD_LIST pages, deleted shards, bad cursors and limits", test_list},
    {"write, seal, stat, read, retry, delete", test_write_seal_read},
    {"refusals", test_refusals},
    {"a corrupt shard is never served", test_corrupt_shard_is_never_served},
    {NULL, NULL}};
