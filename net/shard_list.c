/* SHARD_LIST: a page of the node's sealed shards (shard_list.h). Kept apart
 * from shard_rpc.c, which only dispatches here. */
#include "net/shard_list.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

static_assert(SHARD_LIST_HEADER + (size_t)SHARD_LIST_MAX * SHARD_LIST_RECORD <= (1u << 20),
              "a full page fits the data loop's 1 MiB payload bound");

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
  for (int i = bytes - 1; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v = v << 8 | p[i];
  return v;
}

/* The page being filled. */
struct page {
  uint8_t *buf;
  size_t n, cap; /* records */
};

static int add_one(void *ctx, const struct store_id *id, const struct store_shard_info *info)
{
  struct page *p = ctx;
  uint8_t *r = p->buf + SHARD_LIST_HEADER + p->n * SHARD_LIST_RECORD;
  memcpy(r, id->oid, STORE_OID_BYTES);
  put_be(r + 16, id->index, 4);
  put_be(r + 20, 0, 4);
  put_be(r + 24, info->size, 8);
  put_be(r + 32, info->seq, 8);
  return ++p->n == p->cap ? 1 : 0; /* 1: the page is full, stop (not an error) */
}

/* The request's cursor and page size, or a sentence in why. */
static int parse(const Medshard__DataRequest *q, const struct net_request *req, size_t cap,
                 struct store_id *after, bool *from_start, size_t *limit, const char **why)
{
  *why = NULL;
  if (req->payload_len > 0)
    *why = "SHARD_LIST carries no payload";
  else if (q->object_id.len != 0 && q->object_id.len != STORE_OID_BYTES)
    *why = "SHARD_LIST cursor: object id must be 16 bytes, or empty to start from the first shard";
  else if (q->length == 0)
    *why = "SHARD_LIST needs a limit (length) of at least 1 entry";
  else if (cap < SHARD_LIST_HEADER + SHARD_LIST_RECORD)
    *why = "SHARD_LIST: this node's payload bound cannot hold a page"; /* UNTESTED: 1 MiB */
  if (*why != NULL)
    return MSD_EPARAM;
  *from_start = q->object_id.len == 0;
  if (!*from_start) {
    memcpy(after->oid, q->object_id.data, STORE_OID_BYTES);
    after->index = q->shard_index;
  }
  size_t fit = (cap - SHARD_LIST_HEADER) / SHARD_LIST_RECORD;
  *limit = fit < SHARD_LIST_MAX ? fit : SHARD_LIST_MAX;
  if (q->length < *limit)
    *limit = (size_t)q->length; /* a larger limit is clipped, not refused */
  return 0;
}

void shard_list_handle(struct store *s, uint8_t *buf, size_t cap, struct net_conn *c,
                       const struct net_request *req, const Medshard__DataRequest *q)
{
  Medshard__DataResponse resp = MEDSHARD__DATA_RESPONSE__INIT;
  struct store_id after, last;
  struct page p = {buf, 0, 0};
  bool from_start = false, more = false;
  const char *why;
  char msg[300] = "";
  resp.format_version = 1;
  resp.code = parse(q, req, cap, &after, &from_start, &p.cap, &why);
  if (resp.code == 0) {
    int rc = store_list_from(s, from_start ? NULL : &after, SHARD_LIST_SCAN, add_one, &p, &last,
                             &more);
    resp.code = rc > 0 ? 0 : rc;
    why = resp.code != 0 ? store_errmsg(s) : NULL;
  }
  if (resp.code == 0) {
    buf[0] = SHARD_LIST_VERSION, buf[1] = 0;
    put_be(buf + 2, SHARD_LIST_RECORD, 2);
    put_be(buf + 4, p.n, 4);
    resp.seq = store_last_seq(s);
    resp.more = more;
    /* Resume after the last entry examined, listed or skipped: a page of
     * tombstones alone still moves the cursor on. */
    if (more) {
      resp.object_id = (ProtobufCBinaryData){STORE_OID_BYTES, last.oid};
      resp.shard_index = last.index;
    }
  } else {
    snprintf(msg, sizeof msg, "%s", why != NULL ? why : msd_strerror(resp.code));
    msd_log(MSD_LOG_INFO, "net: data request refused: %s", msg);
  }
  resp.message = msg;
  uint8_t packed[512];
  size_t n = medshard__data_response__get_packed_size(&resp);
  if (n > sizeof packed) { /* UNTESTED: every field is bounded */
    net_close(c, "SHARD_LIST response does not fit its buffer");
    return;
  }
  medshard__data_response__pack(&resp, packed);
  net_reply(c, req->id, packed, n, resp.code == 0 ? buf : NULL,
            resp.code == 0 ? SHARD_LIST_HEADER + p.n * SHARD_LIST_RECORD : 0);
}

int shard_list_count(const uint8_t *page, size_t len)
{
  if (len < SHARD_LIST_HEADER)
    return MSD_EDECODE;
  if (page[0] != SHARD_LIST_VERSION || get_be(page + 2, 2) != SHARD_LIST_RECORD)
    return MSD_EVERSION;
  uint64_t n = get_be(page + 4, 4);
  if (page[1] != 0 || n > SHARD_LIST_MAX || len != SHARD_LIST_HEADER + n * SHARD_LIST_RECORD)
    return MSD_EDECODE;
  return (int)n;
}

void shard_list_entry(const uint8_t *page, size_t i, struct shard_list_entry *out)
{
  const uint8_t *r = page + SHARD_LIST_HEADER + i * SHARD_LIST_RECORD;
  memcpy(out->id.oid, r, STORE_OID_BYTES);
  out->id.index = (uint32_t)get_be(r + 16, 4);
  out->size = get_be(r + 24, 8);
  out->seq = get_be(r + 32, 8);
}
