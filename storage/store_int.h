/* Internals of the shard store shared by its files: on-disk formats (frozen
 * with static_assert; docs/FORMATS.md), the index layer and the handle. */
#ifndef MSD_STORAGE_STORE_INT_H
#define MSD_STORAGE_STORE_INT_H

#include <assert.h>
#include <lmdb.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t inside the writer */
#include <xxhash.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/ring.h"
#include "storage/store.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "on-disk formats are little-endian; add byte swapping for this target"
#endif

/* --- segment files: seg/<16 hex digits>.seg ------------------------------- */

#define SEG_MAGIC "MSDSEG\0\1"
#define SEG_VERSION 1
#define SEG_HEADER_SIZE 4096 /* the first record starts here */
/* Full 1 MiB extents are written with O_DIRECT (the page cache adds a copy
 * and a slow writeback to every fdatasync): such a record starts on this
 * boundary and its space is padded to it. The gap before it is a hole of
 * zeros, which the recovery scan skips: a record never starts with 0. */
#define DIRECT_ALIGN 4096

struct seg_header {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint64_t id;
  uint8_t uuid[16];     /* the store's, so a stray file from elsewhere is refused */
  uint64_t reserved[2];
  uint64_t checksum;    /* XXH3-64 of the bytes before it */
};
static_assert(sizeof(struct seg_header) == 64, "segment header layout is frozen");
static_assert(offsetof(struct seg_header, checksum) == 56, "segment header layout is frozen");

/* A record: header, nblocks XXH3-64 block checksums, then len data bytes.
 * Every record holds one extent of one shard; its data starts at a 64 KiB
 * block boundary of the shard, so blocks never straddle records. */
#define REC_MAGIC 0x5244534du /* "MSDR" */
#define REC_VERSION 1
#define REC_KIND_EXTENT 1
#define REC_KIND_SEAL 2
#define EXTENT_MAX ((size_t)1 << 20)                 /* data bytes per record */
#define EXTENT_BLOCKS (EXTENT_MAX / STORE_BLOCK)      /* 16 */
#define REC_ROOM (sizeof(struct rec_header) + EXTENT_BLOCKS * 8) /* header space */

struct rec_header {
  uint32_t magic;
  uint16_t version;
  uint16_t kind;
  uint8_t oid[STORE_OID_BYTES];
  uint32_t index;
  uint32_t nblocks;
  uint64_t shard_off;
  uint64_t len;
  uint64_t seq;
  uint64_t checksum; /* XXH3-64 of bytes [0, 56) then the block checksums */
};
static_assert(sizeof(struct rec_header) == 64, "record header layout is frozen");
static_assert(offsetof(struct rec_header, checksum) == 56, "record header layout is frozen");

/* A seal record commits one shard: its header has nblocks 0, shard_off the
 * shard's size and len the payload bytes; the payload is the XXH3-128
 * digest, the extent count and the extents (struct idx_extent). It is the
 * durable form of the index entry: the LMDB index is a checkpoint of the
 * seal records, replayed from the segments on open after a crash. */
struct seal_payload {
  uint8_t digest[STORE_DIGEST_BYTES];
  uint32_t nextents;
  uint32_t reserved;
};
static_assert(sizeof(struct seal_payload) == 24, "seal payload layout is frozen");

static inline uint32_t rec_blocks(uint64_t len)
{
  return (uint32_t)((len + STORE_BLOCK - 1) / STORE_BLOCK);
}
static inline uint64_t rec_hdr_len(uint64_t len)
{
  return sizeof(struct rec_header) + 8ull * rec_blocks(len);
}
static inline uint64_t rec_size(uint64_t len)
{
  return rec_hdr_len(len) + len;
}

struct shard_entry;

/* Bytes of the seal record for a shard of nextents extents. */
static inline uint64_t rec_seal_size(uint32_t nextents)
{
  return sizeof(struct rec_header) + sizeof(struct seal_payload) + 32ull * nextents;
}
/* Writes the seal record of (id, e) at out (rec_seal_size bytes). */
void rec_seal_build(unsigned char *out, const struct store_id *id, const struct shard_entry *e);
/* Parses a seal record whose header has been read; payload is h->len bytes.
 * Fills *id and *e (e->ext allocated; msd_free it). 0 or MSD_ECORRUPT. */
int rec_seal_parse(const struct rec_header *h, const unsigned char *payload,
                   struct store_id *id, struct shard_entry *e);

void seg_header_fill(struct seg_header *h, uint64_t id, const uint8_t uuid[16]);
int seg_header_check(const struct seg_header *h, uint64_t id, const uint8_t uuid[16]);

/* Fills the header and block checksums in front of `data` (len bytes):
 * the record then starts at data - rec_hdr_len(len). */
void rec_build(unsigned char *data, uint64_t len, const struct store_id *id, uint64_t shard_off,
               uint64_t seq);

/* Checks a record header and its checksum array (hdr points at the header,
 * hdr_len bytes) against the extent the index expects. 0 or MSD_ECORRUPT. */
int rec_check_header(const unsigned char *hdr, const struct store_id *id, uint64_t shard_off,
                     uint64_t len);

/* Verifies data blocks [b0, b0 + n) of a record whose checksums are in hdr;
 * data points at block b0. Returns -1 if all match, else the bad block. */
long rec_check_blocks(const unsigned char *hdr, uint64_t len, uint32_t b0, uint32_t n,
                      const unsigned char *data);

/* --- the index (LMDB) ---------------------------------------------------- */

#define IDX_VERSION 1
#define IDX_STATE_SEALED 1
#define IDX_STATE_TOMBSTONE 2

struct idx_meta {
  uint32_t version;
  uint32_t reserved;
  uint8_t uuid[16];
  uint64_t next_seg;
  uint64_t next_seq;
};
static_assert(sizeof(struct idx_meta) == 40, "index meta layout is frozen");

struct idx_extent {
  uint64_t seg;
  uint64_t rec_off; /* record start in the segment file */
  uint64_t shard_off;
  uint64_t len;
};
static_assert(sizeof(struct idx_extent) == 32, "index extent layout is frozen");

struct idx_shard {
  uint8_t version;
  uint8_t state;
  uint16_t reserved;
  uint32_t nextents;
  uint64_t size;
  uint64_t seq;
  uint8_t digest[STORE_DIGEST_BYTES];
};
static_assert(sizeof(struct idx_shard) == 40, "index shard layout is frozen");

struct idx_seg {
  uint32_t version;
  uint32_t reserved;
  uint64_t end;  /* bytes of the file the index vouches for; beyond is torn */
  uint64_t live; /* bytes of records that sealed shards reference */
};
static_assert(sizeof(struct idx_seg) == 24, "index segment layout is frozen");

/* A decoded shard entry; ext is owned (msd_free). */
struct shard_entry {
  struct idx_shard h;
  struct idx_extent *ext;
};

/* Sealed shards not yet in the LMDB checkpoint (their seal records are
 * durable in the segments). An open-addressing hash table. */
struct pending {
  uint8_t key[20];
  bool used;
  struct shard_entry e; /* e.ext owned */
};

/* Checkpoint the index after this many seals (and on close, and before
 * anything that walks the index). */
#define CHECKPOINT_SEALS 4096

/* Segments written since the last checkpoint, with their written length. */
struct dirty_seg {
  uint64_t id, len;
};

/* --- asynchronous operations (store_async.c) ------------------------------ */

/* The completion part of every asynchronous operation: once finished it
 * waits on the store's ready list until store_poll runs its callback, then
 * `release` (may be NULL) frees what the operation owned. */
struct store_op {
  store_cb cb;
  void *ctx;
  int rc;
  bool cancelled; /* finished, but the callback must not run (an abort) */
  void (*release)(struct store_op *op);
  struct store_op *next;
  char why[512]; /* the failure's sentence, copied when it happened */
};

/* A write-type operation: a writer's extent flush, or its seal. Flushes
 * run several at once; one seal batch runs at a time, and it waits until
 * no flush is in flight before it reserves the place of its last write,
 * whose fdatasync makes it durable (store.h explains why). */
enum wop_kind { WOP_FLUSH = 1, WOP_SEAL };
struct store_wop {
  enum wop_kind kind;
  struct store_wop *next;
  void *owner; /* the writer (WOP_FLUSH) or the seal request (WOP_SEAL) */
};

struct store_read_op;

/* A shard being written (store_write.c; sealed by store_seal.c). */
enum flush_state { FLUSH_NONE, FLUSH_QUEUED, FLUSH_RUNNING };
struct store_writer {
  struct store *s;
  struct store_id id;
  unsigned char *buf; /* pool buffer: REC_ROOM bytes of header space, then data */
  int buf_index;
  size_t fill;        /* data bytes in buf */
  uint64_t flushed;   /* shard bytes already in records */
  XXH3_state_t digest;
  struct idx_extent *ext;
  uint32_t next; /* extents used */
  size_t cap;
  int failed;
  struct ring_req req;
  /* The operation under way (store_write_submit, then the seal). */
  struct store_op op;
  struct store_wop wop;      /* its flush, or its seal */
  enum flush_state flush;
  store_cb user_cb;          /* store_write_submit's callback */
  void *user_ctx;
  const unsigned char *src;  /* bytes of the submitted write not yet copied */
  size_t left;
  bool busy;                 /* a write is under way (until its callback) */
  bool in_ready, in_cb;      /* its completion is queued / running */
  bool aborted;              /* free it once its I/O is done */
};

/* Writer internals shared by store_write.c and store_seal.c. */
int store__poisoned(struct store *s);
int store__add_extent(struct store_writer *w, const struct idx_extent *x);
/* Turns the buffered data into a record with a place in a segment and
 * prepares (does not queue) w->req to write it. */
int store__prepare_flush(struct store_writer *w);
/* Poisons the store after a failed data write; the error to return. */
int store__write_failed(struct store *s, const struct store_writer *w, int res);
void store__writer_free(struct store_writer *w);

/* The blocking calls' callback context: sets done and rc, and puts the
 * failure's sentence back into store_errmsg. */
struct store_sync {
  struct store *s;
  bool done;
  int rc;
};
void store__sync_cb(void *ctx, int rc, const char *why);

/* Queues op's callback with result rc (copying the store's last error
 * sentence when rc != 0). */
void store__op_finish(struct store *s, struct store_op *op, int rc);
/* Appends a write-type operation; it starts from store_poll. */
void store__wq_push(struct store *s, struct store_wop *w);
/* Removes a queued operation that has not started; false if not queued. */
bool store__wq_remove(struct store *s, struct store_wop *w);
/* Blocks until *done is set, driving the ring and the queues; for the
 * blocking calls. 0, or MSD_ESTATE if nothing left could set it. */
int store__wait(struct store *s, const bool *done);
/* Completes every operation under way (store_close). */
void store__quiesce(struct store *s);
/* Starts write-type operations (store_write.c, store_seal.c). */
void store__flush_start(struct store *s, struct store_wop *w);
void store__seal_start(struct store *s, struct store_wop **batch, size_t n);
/* The seal batch waiting at the barrier goes on: no flush is in flight. */
void store__seal_proceed(struct store *s);
/* Starts or resumes a read that waits for buffers (store_read.c): true if
 * it got going (or finished), false if it still waits. */
bool store__read_resume(struct store_read_op *r);
struct store_read_op *store__read_next_waiting(struct store_read_op *r);
/* Appends a read to the list of those waiting for buffers. */
void store__read_wait(struct store_read_op *r);
/* Buffers a read may take now. */
unsigned store__read_bufs(const struct store *s);

/* --- the handle ---------------------------------------------------------- */

/* Open segment fds, least recently used evicted. A batch of I/O never looks
 * up more segments than this (reads queue at most 64 parts), so eviction
 * never closes an fd a queued request still needs. */
#define SEG_FD_CACHE 128

struct store {
  char *dir;
  int dirfd, segdirfd, lockfd;
  struct store_opts o;
  struct ring *ring;
  MDB_env *env;
  MDB_dbi dbi_meta, dbi_shards, dbi_segs;
  struct idx_meta meta;       /* as last committed, plus in-memory ids taken */
  int act_fd;                 /* active segment, or -1 */
  int act_dfd;                /* the same file opened O_DIRECT, or -1 */
  uint64_t act_id, act_off;
  uint64_t seg_bytes;         /* bytes of all segment files, for capacity_bytes */
  struct { uint64_t id; int fd, dfd; uint64_t used; } fds[SEG_FD_CACHE]; /* dfd: O_DIRECT
                                                   twin, -1 not opened, -2 unsupported */
  uint64_t fd_tick;
  struct pending *pend;       /* capacity npend_cap (power of two) */
  size_t npend, npend_cap;
  struct dirty_seg *dirty;
  size_t ndirty, ndirty_cap;
  int poisoned;               /* the failure that poisoned the store, or 0 */
  char errmsg[512];
  /* Asynchronous operations (store_async.c). */
  struct store_op *ready_head, *ready_tail; /* finished, callbacks not yet run */
  struct store_wop *wq_head, *wq_tail;      /* write-type operations waiting */
  unsigned flushes_running;                 /* extent flushes in flight */
  bool seal_running;                        /* a seal batch is under way */
  struct seal_batch *seal_wait;             /* it waits for flushes to drain */
  bool polling;                             /* inside store_poll or store__wait */
  struct store_read_op *rwait_head, *rwait_tail; /* reads waiting for buffers */
  unsigned writers;                         /* open writers (one buffer each) */
  unsigned read_bufs;                       /* buffers reads hold */
  struct store_io_stats stats;
};

/* Formats store_errmsg and returns rc, for `return store__fail(s, rc, ...)`. */
int store__fail(struct store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void store__id_text(const struct store_id *id, char out[48]);

int store__index_open(struct store *s, bool create);
void store__index_close(struct store *s);
void store__key(const struct store_id *id, uint8_t key[20]);
void store__key_id(const uint8_t key[20], struct store_id *id);
int store__entry_get(struct store *s, MDB_txn *txn, const struct store_id *id,
                     struct shard_entry *e);
int store__entry_decode(const MDB_val *v, struct shard_entry *e);
int store__entry_put(struct store *s, MDB_txn *txn, const struct store_id *id,
                     const struct shard_entry *e);
/* Calls fn for every entry of the shard index (sealed and tombstones), in
 * key order, with the entry decoded (drc is the decode result; e->ext is
 * valid only when drc == 0 and is freed after fn returns). Stops at the
 * first non-zero return and returns it. Pending seals are not included:
 * checkpoint first. */
typedef int (*store_entry_fn)(void *ctx, const struct store_id *id, const struct shard_entry *e,
                              int drc);
int store__each_shard(struct store *s, store_entry_fn fn, void *ctx);
int store__seg_get(struct store *s, MDB_txn *txn, uint64_t id, struct idx_seg *out);
int store__seg_put(struct store *s, MDB_txn *txn, uint64_t id, const struct idx_seg *seg);
int store__meta_put(struct store *s, MDB_txn *txn);
int store__commit(struct store *s, MDB_txn *txn, const char *what);

int store__segs_recover(struct store *s);
void store__seg_name(uint64_t id, char out[32]);
void store__fd_cache_put(struct store *s, uint64_t id, int fd);
void store__seg_dirty(struct store *s, uint64_t id, uint64_t len);

/* Finds a shard in the pending table or the index (e->ext allocated). */
int store__lookup(struct store *s, const struct store_id *id, struct shard_entry *e);
/* Adds a sealed shard to the pending table, taking e->ext. */
int store__pending_put(struct store *s, const struct store_id *id, struct shard_entry *e);
/* Writes the pending table into LMDB in one durable commit. */
int store__checkpoint(struct store *s);
void store__pending_free(struct store *s);
/* Adds a shard's extents to segment accounting inside txn. */
int store__account(struct store *s, MDB_txn *txn, const struct shard_entry *e);
int store__seg_fd(struct store *s, uint64_t id, int *fd);
/* The O_DIRECT descriptor of a segment for aligned reads, or -1 if the
 * filesystem has none (then read through store__seg_fd). */
int store__seg_dfd(struct store *s, uint64_t id);
/* Makes room for a record of `bytes` in the active segment, rolling to a new
 * one when it would not fit; *fd, *seg, *off get where to write. With
 * `direct`, and when the filesystem supports O_DIRECT, the record starts on
 * a DIRECT_ALIGN boundary, its space is padded to one, and *fd is the
 * O_DIRECT descriptor; *direct_out says which was granted. */
int store__seg_reserve(struct store *s, uint64_t bytes, bool direct, int *fd, uint64_t *seg,
                       uint64_t *off, bool *direct_out);
void store__seg_open_direct(struct store *s);
int store__check_space(struct store *s, uint64_t bytes);
void store__segs_close(struct store *s);

/* Reads one whole record of shard `id` into the pool buffer buf and verifies
 * its header and every block. 0, MSD_ECORRUPT (header), MSD_ECHECKSUM
 * (*bad_off = shard offset of the bad block) or -errno; store_errmsg says
 * which shard and segment. The data starts at buf + rec_hdr_len(x->len). */
int store__rec_read_verified(struct store *s, const struct store_id *id,
                             const struct idx_extent *x, unsigned char *buf, int buf_index,
                             uint64_t *bad_off);

#endif
