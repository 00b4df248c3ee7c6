/* The node-local shard store. Shards (immutable byte streams keyed by object
 * id + shard index) are appended to large segment files through the io_uring
 * engine, every 64 KiB block carries an XXH3-64 checksum, and an LMDB index
 * maps each sealed shard to its extents. Formats: docs/FORMATS.md.
 *
 * A store handle belongs to one thread (it owns one ring). The plain calls
 * block until their I/O completes; an event loop uses the _submit forms and
 * store_poll instead (see "asynchronous use" below). Either way the I/O is
 * batched through io_uring. */
#ifndef MSD_STORAGE_STORE_H
#define MSD_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_OID_BYTES 16
#define STORE_BLOCK ((size_t)64 << 10)        /* checksum granularity */
#define STORE_SEGMENT_DEFAULT ((uint64_t)1 << 30)
#define STORE_DIGEST_BYTES 16                 /* XXH3-128, big-endian */

struct store_id {
  uint8_t oid[STORE_OID_BYTES];
  uint32_t index; /* shard index */
};

struct store_opts {
  bool create;             /* initialise an empty or missing directory */
  bool fallback_io;        /* pread/pwrite instead of io_uring */
  uint64_t segment_size;   /* default 1 GiB; at least 1 MiB */
  uint64_t reserve_bytes;  /* free space writes never eat into; default 1 GiB */
  uint64_t capacity_bytes; /* most segment bytes this store may use; 0 = the disk */
  unsigned io_buffers;     /* registered 1 MiB buffers; default 16 */
  unsigned max_writers;    /* shards open for writing at once, each holding one
                              buffer; default io_buffers - 2. Reads use the
                              buffers writers cannot claim, less one kept for
                              creating segments, so a read never starves a
                              writer of its buffer or a writer a read. */
};

struct store;

/* Opens (or with opts->create, creates) the store in `dir`. Takes an
 * exclusive lock on it (a second opener gets MSD_ELOCKED), truncates torn
 * segment tails and removes segment files the index never sealed.
 * Errors: MSD_ENOTSTORE, MSD_ELOCKED, MSD_ECORRUPT, MSD_EVERSION, -errno.
 * *out is owned by the caller (store_close). */
int store_open(const char *dir, const struct store_opts *opts, struct store **out);
/* Finishes the operations under way (their callbacks run), then closes. */
void store_close(struct store *s);

/* The last error's full sentence (which shard, which file, what to do);
 * valid until the next call on this store. */
const char *store_errmsg(const struct store *s);

/* --- writing ------------------------------------------------------------ */

struct store_writer;

/* Starts a new shard. Nothing is visible to readers until it is sealed.
 * Takes one I/O buffer (MSD_ENOBUFS when max_writers are open). A shard that
 * already exists sealed is not replaced: sealing it fails with -EEXIST. */
int store_write_begin(struct store *s, const struct store_id *id, struct store_writer **out);

/* Appends bytes (copied; buf is free on return). Full 1 MiB extents are
 * written as they fill. Errors poison the writer; abort it. */
int store_write(struct store_writer *w, const void *buf, size_t len);

/* Makes shards durable and visible, all in one batch: their last extents,
 * one fdatasync per segment touched (linked after the writes), then one index
 * commit. On return every writer is freed, whatever the result; results[i]
 * (optional) gets each shard's code. Returns 0 if all sealed. A failed write
 * or fsync poisons the store (MSD_EPOISONED from then on). */
int store_seal_many(struct store_writer **w, size_t n, int *results);
int store_seal(struct store_writer *w);

/* Drops an unsealed shard; its bytes become garbage for the compactor.
 * Allowed while a store_write_submit is under way: its callback then never
 * runs, and the writer is freed once its I/O is done. */
void store_write_abort(struct store_writer *w);

/* --- reading ------------------------------------------------------------ */

struct store_shard_info {
  uint64_t size;
  uint8_t digest[STORE_DIGEST_BYTES];
  uint32_t extents;
  uint64_t seq; /* store-wide seal order */
};

/* Sealed shard's size and digest. MSD_ENOSHARD, MSD_EDELETED. */
int store_stat(struct store *s, const struct store_id *id, struct store_shard_info *out);

/* Reads [off, off + len) of a sealed shard into buf, verifying every 64 KiB
 * block it touches; *got is len clipped at the shard's end. A block that
 * fails its checksum returns MSD_ECHECKSUM (store_errmsg names the shard and
 * offset) and no bytes are promised. MSD_ERANGE if off > size. */
int store_read(struct store *s, const struct store_id *id, uint64_t off, void *buf, size_t len,
               size_t *got);

/* Calls fn for every sealed shard, in id order; stop early by returning
 * non-zero (which store_list then returns). */
int store_list(struct store *s, int (*fn)(void *ctx, const struct store_id *id,
                                          const struct store_shard_info *info),
               void *ctx);

/* One page of store_list: calls fn for the sealed shards that come after
 * `after` in id order (NULL: from the first), examining at most `max`
 * index entries, tombstones included, so a page costs bounded work however
 * many deleted shards it skips. fn returning non-zero stops the walk after
 * that entry and is returned. On return *last (the caller's) is the last
 * entry examined and *more says whether any entry follows it; with
 * nothing examined *last is untouched and *more false. 0, MSD_EPARAM,
 * MSD_ECORRUPT, MSD_EPOISONED, or fn's code. */
int store_list_from(struct store *s, const struct store_id *after, size_t max,
                    int (*fn)(void *ctx, const struct store_id *id,
                              const struct store_shard_info *info),
                    void *ctx, struct store_id *last, bool *more);

/* The highest sequence number the store has assigned (0: none yet). Every
 * shard sealed from now on gets a larger one: a caller that notes it with
 * the time learns that shards at or below it were sealed by then. */
uint64_t store_last_seq(const struct store *s);

/* --- deleting, compaction, scrub, capacity ------------------------------ */

/* Replaces a sealed shard with a durable tombstone; its space becomes
 * reclaimable. MSD_ENOSHARD, MSD_EDELETED. */
int store_delete(struct store *s, const struct store_id *id);

/* Rewrites at most one segment whose live fraction is below `threshold`
 * (0..1): its live shards' records are copied to the active segment, the
 * index is switched over durably, and only then is the old file deleted.
 * *freed gets the bytes returned to the filesystem (0: nothing to do).
 * Reads stay correct between and during steps. */
int store_compact_step(struct store *s, double threshold, uint64_t *freed);

struct store_bad_shard {
  struct store_id id;
  int code; /* MSD_ECHECKSUM, MSD_ECORRUPT, -EIO, ... */
  uint64_t offset; /* first bad byte in the shard, if known */
};

struct store_scrub_report {
  uint64_t shards, bytes;
  size_t nbad;
  struct store_bad_shard *bad; /* owned by the report: store_scrub_free */
  size_t bad_cap;              /* private */
};

/* Re-reads every sealed shard at no more than rate_bytes_per_s (0 = no
 * limit), verifying each block and the whole-shard digest. Fills *rep. */
int store_scrub(struct store *s, uint64_t rate_bytes_per_s, struct store_scrub_report *rep);
void store_scrub_free(struct store_scrub_report *rep);

struct store_usage {
  uint64_t live_bytes;    /* sealed shard records */
  uint64_t segment_bytes; /* segment files on disk */
  uint64_t segments;
  uint64_t fs_free;       /* filesystem bytes available */
  uint64_t writable;      /* what writes may still use: the smaller of fs_free -
                             reserve and capacity - segment bytes */
  uint64_t shards;
};
int store_usage(struct store *s, struct store_usage *out);

/* --- asynchronous use, from an event loop -------------------------------- */

/* The _submit calls queue their work and return at once; the operation
 * starts on the next store_poll and its callback runs from a later
 * store_poll, never from inside a submit. `why` is the failure's sentence
 * (as store_errmsg would give), NULL on success, valid during the call.
 * Several writers' extent flushes may be in flight at once, but a seal
 * makes itself durable only once none is: recovery keeps a segment's
 * records only up to the first torn one, so nothing may be acknowledged
 * while an earlier record is still in flight. Seals waiting together go
 * as one batch (one fdatasync per segment: group commit), one batch at a
 * time. Reads run beside them. A blocking call made
 * while operations are under way also completes them (their callbacks run
 * from it). */
typedef void (*store_cb)(void *ctx, int rc, const char *why);

/* Readable (POLLIN) while store_poll has completions to reap; -1 on the
 * fallback path, where store_poll performs the I/O itself. */
int store_poll_fd(const struct store *s);

/* Starts queued operations, reaps completed I/O and runs the callbacks of
 * finished operations, without waiting. True while operations are under
 * way (call again when store_poll_fd is readable). */
bool store_poll(struct store *s);

/* store_write's asynchronous form. buf must stay valid until cb; one
 * operation per writer at a time (MSD_ESTATE otherwise). After cb with an
 * error the writer is poisoned: abort it. */
int store_write_submit(struct store_writer *w, const void *buf, size_t len, store_cb cb,
                       void *ctx);

/* store_seal's asynchronous form: the writer passes to the seal and is
 * freed whatever the result (do not abort it after this). */
int store_seal_submit(struct store_writer *w, store_cb cb, void *ctx);

/* store_read's asynchronous form: buf (valid until cb) gets the bytes and
 * *got (valid until cb) their count. */
int store_read_submit(struct store *s, const struct store_id *id, uint64_t off, void *buf,
                      size_t len, size_t *got, store_cb cb, void *ctx);

/* For tests and benchmarks. */
bool store_uses_io_uring(const struct store *s);

struct store_io_stats {
  uint64_t seals;        /* shards whose seal was attempted */
  uint64_t seal_batches; /* batches they went in (group commit) */
  uint64_t flushes;      /* full extents written ahead of their seal */
  uint64_t reads;        /* read operations finished */
  uint64_t barrier_waits;  /* seal batches that waited for flushes in flight */
  uint64_t seal_overlaps;  /* seals made durable while a flush was in flight:
                              always 0 (the barrier); counted to prove it */
};
void store_io_stats(const struct store *s, struct store_io_stats *out);

#endif
