/* Shard RPCs over the node's store (shard_rpc.h). */
#include "net/shard_rpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "net/shard_list.h"
#include "proto/medshard.pb-c.h"

/* A shard open for writing. */
struct open_shard {
  struct store_id id;
  struct store_writer *w; /* NULL: slot free */
  uint64_t written;
  uint64_t last_ns;
};

struct shard_rpc {
  struct store *store;
  struct open_shard *open;
  unsigned max_open;
  uint64_t idle_ns;
  size_t payload_max;
  uint8_t *read_buf; /* one READ's bytes on their way into the reply */
  uint64_t last_sweep_ns;
};

int shard_rpc_create(struct store *store, unsigned max_open, unsigned idle_ms, size_t payload_max,
                     struct shard_rpc **out)
{
  struct shard_rpc *r = msd_calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  r->store = store;
  r->max_open = max_open ? max_open : 16;
  r->idle_ns = (uint64_t)(idle_ms ? idle_ms : 60000) * 1000000u;
  r->payload_max = payload_max;
  r->open = msd_calloc(r->max_open, sizeof *r->open);
  r->read_buf = msd_malloc(payload_max);
  if (r->open == NULL || r->read_buf == NULL) {
    shard_rpc_destroy(r);
    return -ENOMEM;
  }
  *out = r;
  return 0;
}

void shard_rpc_destroy(struct shard_rpc *r)
{
  if (r == NULL)
    return;
  for (unsigned i = 0; r->open != NULL && i < r->max_open; i++)
    if (r->open[i].w != NULL)
      store_write_abort(r->open[i].w);
  msd_free(r->open);
  msd_free(r->read_buf);
  msd_free(r);
}

static struct open_shard *find_open(struct shard_rpc *r, const struct store_id *id)
{
  for (unsigned i = 0; i < r->max_open; i++)
    if (r->open[i].w != NULL && r->open[i].id.index == id->index &&
        memcmp(r->open[i].id.oid, id->oid, STORE_OID_BYTES) == 0)
      return &r->open[i];
  return NULL;
}

static void drop_open(struct open_shard *o)
{
  store_write_abort(o->w);
  o->w = NULL;
}

/* A free slot, taking the longest-idle one past the idle limit if none. */
static struct open_shard *free_slot(struct shard_rpc *r)
{
  struct open_shard *oldest = NULL;
  uint64_t now = msd_now_ns();
  for (unsigned i = 0; i < r->max_open; i++) {
    if (r->open[i].w == NULL)
      return &r->open[i];
    if (now - r->open[i].last_ns > r->idle_ns &&
        (oldest == NULL || r->open[i].last_ns < oldest->last_ns))
      oldest = &r->open[i];
  }
  if (oldest != NULL) {
    msd_log(MSD_LOG_WARN, "net: dropping shard %u of an object idle for over %" PRIu64
            " s (its writer went away)", oldest->id.index, r->idle_ns / 1000000000u);
    drop_open(oldest);
  }
  return oldest;
}

/* Drops shards left open past the idle limit (their coordinator crashed
 * or its client went away), so their space returns without waiting for a
 * new OPEN to need the slot. Runs at most once a second. */
static void sweep_idle(struct shard_rpc *r)
{
  uint64_t now = msd_now_ns();
  if (now - r->last_sweep_ns < 1000000000u)
    return;
  r->last_sweep_ns = now;
  for (unsigned i = 0; i < r->max_open; i++)
    if (r->open[i].w != NULL && now - r->open[i].last_ns > r->idle_ns) {
      msd_log(MSD_LOG_WARN, "net: dropping shard %u of an object idle for over %" PRIu64
              " s (its writer went away)", r->open[i].id.index, r->idle_ns / 1000000000u);
      drop_open(&r->open[i]);
    }
}

/* ---- the operations; each fills resp (code, message, size, digest) ---- */

struct reply {
  Medshard__DataResponse resp;
  uint8_t digest[STORE_DIGEST_BYTES];
  char msg[200];
  const uint8_t *payload;
  size_t payload_len;
};

static int fail(struct reply *out, int code, const char *why)
{
  out->resp.code = code;
  snprintf(out->msg, sizeof out->msg, "%s", why);
  return code;
}

static void stat_into(struct shard_rpc *r, const struct store_id *id, struct reply *out)
{
  struct store_shard_info info;
  int rc = store_stat(r->store, id, &info);
  if (rc != 0) {
    fail(out, rc, msd_strerror(rc));
    return;
  }
  out->resp.size = info.size;
  memcpy(out->digest, info.digest, sizeof out->digest);
  out->resp.digest = (ProtobufCBinaryData){sizeof out->digest, out->digest};
}

static void op_open(struct shard_rpc *r, const struct store_id *id, struct reply *out)
{
  struct open_shard *o = find_open(r, id);
  if (o != NULL)
    drop_open(o); /* a retried OPEN starts over */
  struct store_shard_info info;
  if (store_stat(r->store, id, &info) == 0) {
    fail(out, MSD_EEXIST, "shard already sealed");
    stat_into(r, id, out);
    return;
  }
  if ((o = free_slot(r)) == NULL) {
    fail(out, MSD_ENOBUFS, "too many shards open for writing on this node; retry");
    return;
  }
  int rc = store_write_begin(r->store, id, &o->w);
  if (rc != 0) {
    o->w = NULL;
    fail(out, rc, store_errmsg(r->store));
    return;
  }
  o->id = *id;
  o->written = 0;
  o->last_ns = msd_now_ns();
}

static void op_append(struct shard_rpc *r, const struct store_id *id, const Medshard__DataRequest *q,
                      const struct net_request *req, struct reply *out)
{
  struct open_shard *o = find_open(r, id);
  if (o == NULL) {
    fail(out, MSD_ESTATE, "shard is not open for writing (OPEN first)");
    return;
  }
  if (q->offset != o->written) {
    snprintf(out->msg, sizeof out->msg, "append at offset %" PRIu64 ", but the shard has %" PRIu64
             " bytes", q->offset, o->written);
    out->resp.code = MSD_ERANGE;
    out->resp.size = o->written;
    return;
  }
  int rc = req->payload_len > 0 ? store_write(o->w, req->payload, req->payload_len) : 0;
  if (rc != 0) {
    fail(out, rc, store_errmsg(r->store));
    drop_open(o);
    return;
  }
  o->written += req->payload_len;
  o->last_ns = msd_now_ns();
  out->resp.size = o->written;
}

static void op_seal(struct shard_rpc *r, const struct store_id *id, const Medshard__DataRequest *q,
                    struct reply *out)
{
  if (q->digest.len != STORE_DIGEST_BYTES) {
    fail(out, MSD_EPARAM, "SEAL needs the shard's 16-byte XXH3-128 digest");
    return;
  }
  struct open_shard *o = find_open(r, id);
  if (o != NULL) {
    struct store_writer *w = o->w;
    o->w = NULL;
    int rc = store_seal(w); /* frees the writer whatever happens */
    if (rc != 0 && rc != -EEXIST) {
      fail(out, rc, store_errmsg(r->store));
      return;
    }
  }
  stat_into(r, id, out);
  if (out->resp.code != 0) {
    if (o == NULL)
      fail(out, MSD_ESTATE, "shard is neither open nor sealed");
    return;
  }
  if (memcmp(out->digest, q->digest.data, STORE_DIGEST_BYTES) != 0) {
    /* The bytes that arrived are not the bytes that were sent. */
    store_delete(r->store, id);
    fail(out, MSD_ECHECKSUM, "shard digest differs from the sender's: shard dropped");
  }
}

static void op_read(struct shard_rpc *r, const struct store_id *id, const Medshard__DataRequest *q,
                    struct reply *out)
{
  size_t want = q->length < r->payload_max ? (size_t)q->length : r->payload_max;
  size_t got = 0;
  int rc = store_read(r->store, id, q->offset, r->read_buf, want, &got);
  if (rc != 0) {
    fail(out, rc, rc == MSD_ECHECKSUM ? store_errmsg(r->store) : msd_strerror(rc));
    if (rc == MSD_ECHECKSUM)
      msd_log(MSD_LOG_ERROR, "net: %s", store_errmsg(r->store));
    return;
  }
  out->payload = r->read_buf;
  out->payload_len = got;
  out->resp.size = got;
}

static void dispatch(struct shard_rpc *r, const Medshard__DataRequest *q,
                     const struct net_request *req, struct reply *out)
{
  struct store_id id = {.index = q->shard_index};
  if (q->object_id.len != STORE_OID_BYTES) {
    fail(out, MSD_EPARAM, "object id must be 16 bytes");
    return;
  }
  memcpy(id.oid, q->object_id.data, STORE_OID_BYTES);
  if (req->payload_len > 0 && q->op != MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND) {
    fail(out, MSD_EPARAM, "only APPEND carries a payload");
    return;
  }
  int rc;
  switch (q->op) {
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN: op_open(r, &id, out); break;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND: op_append(r, &id, q, req, out); break;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL: op_seal(r, &id, q, out); break;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_READ: op_read(r, &id, q, out); break;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT: stat_into(r, &id, out); break;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_ABORT: {
    struct open_shard *o = find_open(r, &id);
    if (o != NULL)
      drop_open(o);
    break;
  }
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE:
    rc = store_delete(r->store, &id);
    if (rc != 0)
      fail(out, rc, msd_strerror(rc));
    break;
  default:
    fail(out, MSD_EPARAM, "unknown data operation");
  }
}

void shard_rpc_handle(void *ctx, struct net_conn *c, const struct net_request *req)
{
  struct shard_rpc *r = ctx;
  struct reply out = {.resp = MEDSHARD__DATA_RESPONSE__INIT};
  out.resp.format_version = 1;
  sweep_idle(r);
  Medshard__DataRequest *q = medshard__data_request__unpack(NULL, req->msg_len, req->msg);
  if (q == NULL)
    fail(&out, MSD_EDECODE, "request message does not decode");
  else if (q->format_version != 1)
    fail(&out, MSD_EVERSION, "unsupported request version");
  else if (q->op == MEDSHARD__DATA_OP__DATA_OP_SHARD_LIST) {
    shard_list_handle(r->store, r->read_buf, r->payload_max, c, req, q); /* it replies */
    medshard__data_request__free_unpacked(q, NULL);
    return;
  } else
    dispatch(r, q, req, &out);
  if (out.resp.code != 0 && out.resp.code != MSD_EEXIST)
    msd_log(MSD_LOG_INFO, "net: data request refused: %s", out.msg);
  out.resp.message = out.msg;
  uint8_t packed[512];
  size_t n = medshard__data_response__get_packed_size(&out.resp);
  if (n <= sizeof packed) {
    medshard__data_response__pack(&out.resp, packed);
    net_reply(c, req->id, packed, n, out.payload, out.payload_len);
  } else {
    net_close(c, "data response does not fit its buffer"); /* UNTESTED: bounded fields */
  }
  if (q != NULL)
    medshard__data_request__free_unpacked(q, NULL);
}
