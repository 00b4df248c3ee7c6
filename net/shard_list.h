/* SHARD_LIST on the data port (docs/FORMATS.md "Data plane"): a page of a
 * node's sealed shards, for its orphan sweep (cluster/sweep.h). The page
 * travels as the response's raw payload, a versioned array of fixed
 * records; the store's highest sequence number, whether more follow and
 * the resume cursor are fields of the DataResponse. */
#ifndef MSD_NET_SHARD_LIST_H
#define MSD_NET_SHARD_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "net/loop.h"
#include "proto/medshard.pb-c.h"
#include "storage/store.h"

#define SHARD_LIST_VERSION 1
#define SHARD_LIST_HEADER 8   /* version 1, reserved 1, record bytes 2, count 4 */
#define SHARD_LIST_RECORD 40  /* object id 16, index 4, reserved 4, size 8, seq 8 */
#define SHARD_LIST_MAX 4096   /* entries per page at most (a larger limit is clipped) */
#define SHARD_LIST_SCAN 16384 /* index entries one page examines at most */

struct shard_list_entry {
  struct store_id id;
  uint64_t size;
  uint64_t seq; /* the store's seal order (store_shard_info.seq) */
};

/* Serves one SHARD_LIST request q (decoded, version 1) from store s on the
 * data loop's thread and sends the reply on c: the page is built in buf
 * (cap bytes, the caller's scratch; cap bounds the page too). Bad requests
 * get MSD_EPARAM with a sentence. Nothing is kept after it returns. */
void shard_list_handle(struct store *s, uint8_t *buf, size_t cap, struct net_conn *c,
                       const struct net_request *req, const Medshard__DataRequest *q);

/* The number of entries in a page payload, after checking its header and
 * length: 0..SHARD_LIST_MAX, or MSD_EVERSION (another version or record
 * size) or MSD_EDECODE (a length that is not header + count records). */
int shard_list_count(const uint8_t *page, size_t len);

/* Entry i (< shard_list_count) of a checked page into *out. */
void shard_list_entry(const uint8_t *page, size_t i, struct shard_list_entry *out);

#endif
