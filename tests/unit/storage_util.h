/* Helpers shared by the storage test files: deterministic shard contents,
 * opening stores on the I/O path under test, writing and checking shards. */
#ifndef MSD_TESTS_STORAGE_UTIL_H
#define MSD_TESTS_STORAGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

/* The I/O path the current suite runs on (set by the suite's init). */
extern bool su_fallback;

struct store *su_open(const char *dir, const struct store_opts *extra);
void su_id(struct store_id *id, uint64_t n, uint32_t index);
void su_content(const struct store_id *id, unsigned char *buf, size_t len);
/* Writes len bytes of su_content in pieces of `piece` and seals. */
int su_put(struct store *s, const struct store_id *id, size_t len, size_t piece);
/* Reads the whole shard back and compares with su_content. */
bool su_check(struct store *s, const struct store_id *id, size_t len);
/* Over shards numbered from, from+step, ... below to (index 0), each len
 * bytes: how many failed to seal, failed their check, or failed to delete. */
int su_put_many(struct store *s, uint64_t from, uint64_t to, uint64_t step, size_t len,
                size_t piece);
int su_check_many(struct store *s, uint64_t from, uint64_t to, uint64_t step, size_t len);
int su_delete_many(struct store *s, uint64_t from, uint64_t to, uint64_t step);

/* Number of files in dir/seg. */
int su_seg_files(const char *dir);

#endif
