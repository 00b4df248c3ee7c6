/* Shard RPCs over the node's store (shard_rpc.h). OPEN, STAT, ABORT and
 * DELETE answer at once; APPEND, SEAL and READ hand their disk I/O to the
 * store's asynchronous calls and answer from its callback, so the loop
 * serves other connections while the disk works. */
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

struct call;

/* A shard open for writing. */
struct open_shard {
  struct store_id id;
  struct store_writer *w; /* NULL: slot free */
  uint64_t written;
  uint64_t last_ns;
  struct call *busy;      /* the APPEND whose bytes the store is taking */
};

struct shard_rpc {
  struct store *store;
  struct open_shard *open;
  unsigned max_open;
  uint64_t idle_ns;
  size_t payload_max;
  uint64_t last_sweep_ns;
};

/* The parts of a reply. */
struct reply {
  Medshard__DataResponse resp;
  uint8_t digest[STORE_DIGEST_BYTES];
  char msg[200];
  const uint8_t *payload;
  size_t payload_len;
};

/* A request whose answer waits for the store. */
struct call {
  struct shard_rpc *r;
  struct net_conn *c;
  uint64_t req_id;
  struct store_id id;
  struct open_shard *o;        /* APPEND */
  uint64_t append_len;
  uint8_t want[STORE_DIGEST_BYTES]; /* SEAL: the sender's digest */
  bool was_open;               /* SEAL */
  size_t got;                  /* READ */
  struct reply out;
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
  if (r->open == NULL) {
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

static void call_answer(struct call *k);

/* Drops an open shard; an APPEND still under way on it is answered with
 * an error (its store callback will not run). */
static void drop_open(struct open_shard *o)
{
  store_write_abort(o->w);
  o->w = NULL;
  struct call *k = o->busy;
  if (k != NULL) {
    o->busy = NULL;
    k->out.resp.code = MSD_ESTATE;
    snprintf(k->out.msg, sizeof k->out.msg, "shard was dropped before the append completed");
    call_answer(k);
  }
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

/* ---- answering ---- */

static void send_reply(struct net_conn *c, uint64_t id, struct reply *out)
{
  if (out->resp.code != 0 && out->resp.code != MSD_EEXIST)
    msd_log(MSD_LOG_INFO, "net: data request refused: %s", out->msg);
  out->resp.message = out->msg;
  uint8_t packed[512];
  size_t n = medshard__data_response__get_packed_size(&out->resp);
  if (n <= sizeof packed) {
    medshard__data_response__pack(&out->resp, packed);
    net_reply(c, id, packed, n, out->payload, out->payload_len);
  } else {
    net_close(c, "data response does not fit its buffer"); /* UNTESTED: bounded fields */
  }
}

static void call_answer(struct call *k)
{
  send_reply(k->c, k->req_id, &k->out);
  msd_free(k);
}

static struct call *call_new(struct shard_rpc *r, struct net_conn *c, uint64_t req_id,
                             const struct store_id *id)
{
  struct call *k = msd_calloc(1, sizeof *k);
  if (k == NULL)
    return NULL;
  k->r = r;
  k->c = c;
  k->req_id = req_id;
  k->id = *id;
  k->out.resp = (Medshard__DataResponse)MEDSHARD__DATA_RESPONSE__INIT;
  k->out.resp.format_version = 1;
  return k;
}

/* ---- the operations; each fills resp (code, message, size, digest) ---- */

static int fail(struct reply *out, int code, const char *why)
{
  out->resp.code = code;
  snprintf(out->msg, sizeof out->msg, "%s", why != NULL ? why : msd_strerror(code));
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

static void append_done(void *ctx, int rc, const char *why)
{
  struct call *k = ctx;
  struct open_shard *o = k->o;
  o->busy = NULL;
  if (rc != 0) {
    k->out.resp.code = rc;
    snprintf(k->out.msg, sizeof k->out.msg, "%s", why);
    drop_open(o);
  } else {
    o->written += k->append_len;
    o->last_ns = msd_now_ns();
    k->out.resp.size = o->written;
  }
  call_answer(k);
}

/* 1 if the answer waits for the store (k then belongs to it), else 0. */
static int op_append(struct shard_rpc *r, struct call *k, const Medshard__DataRequest *q,
                     const struct net_request *req)
{
  struct reply *out = &k->out;
  struct open_shard *o = find_open(r, &k->id);
  if (o == NULL)
    return fail(out, MSD_ESTATE, "shard is not open for writing (OPEN first)"), 0;
  if (o->busy != NULL)
    return fail(out, MSD_ESTATE, "an append to this shard is still under way"), 0;
  if (q->offset != o->written) {
    snprintf(out->msg, sizeof out->msg, "append at offset %" PRIu64 ", but the shard has %" PRIu64
             " bytes", q->offset, o->written);
    out->resp.code = MSD_ERANGE;
    out->resp.size = o->written;
    return 0;
  }
  k->o = o;
  k->append_len = req->payload_len;
  /* The payload stays in the connection's buffer until the answer. */
  int rc = store_write_submit(o->w, req->payload, req->payload_len, append_done, k);
  if (rc != 0) {
    fail(out, rc, store_errmsg(r->store));
    drop_open(o);
    return 0;
  }
  o->busy = k;
  return 1;
}

static void seal_done(void *ctx, int rc, const char *why)
{
  struct call *k = ctx;
  struct reply *out = &k->out;
  if (rc != 0 && rc != -EEXIST) {
    fail(out, rc, why);
    call_answer(k);
    return;
  }
  stat_into(k->r, &k->id, out);
  if (out->resp.code == 0 && memcmp(out->digest, k->want, STORE_DIGEST_BYTES) != 0) {
    /* The bytes that arrived are not the bytes that were sent. */
    store_delete(k->r->store, &k->id);
    fail(out, MSD_ECHECKSUM, "shard digest differs from the sender's: shard dropped");
  }
  call_answer(k);
}

static int op_seal(struct shard_rpc *r, struct call *k, const Medshard__DataRequest *q)
{
  struct reply *out = &k->out;
  if (q->digest.len != STORE_DIGEST_BYTES)
    return fail(out, MSD_EPARAM, "SEAL needs the shard's 16-byte XXH3-128 digest"), 0;
  memcpy(k->want, q->digest.data, STORE_DIGEST_BYTES);
  struct open_shard *o = find_open(r, &k->id);
  if (o == NULL) { /* a retried SEAL of a shard sealed before succeeds */
    stat_into(r, &k->id, out);
    if (out->resp.code != 0)
      fail(out, MSD_ESTATE, "shard is neither open nor sealed");
    else if (memcmp(out->digest, k->want, STORE_DIGEST_BYTES) != 0)
      fail(out, MSD_ECHECKSUM, "shard is sealed here with another digest");
    return 0;
  }
  if (o->busy != NULL)
    return fail(out, MSD_ESTATE, "an append to this shard is still under way"), 0;
  struct store_writer *w = o->w;
  o->w = NULL; /* the seal owns the writer now, whatever happens */
  int rc = store_seal_submit(w, seal_done, k);
  if (rc != 0) { /* UNTESTED: the writer has no write under way */
    store_write_abort(w);
    return fail(out, rc, msd_strerror(rc)), 0;
  }
  return 1;
}

static void read_done(void *ctx, int rc, const char *why)
{
  struct call *k = ctx;
  struct reply *out = &k->out;
  if (rc != 0) {
    fail(out, rc, rc == MSD_ECHECKSUM ? why : msd_strerror(rc));
    if (rc == MSD_ECHECKSUM)
      msd_log(MSD_LOG_ERROR, "net: %s", why);
    out->payload_len = 0;
  } else {
    out->payload_len = k->got;
    out->resp.size = k->got;
  }
  call_answer(k);
}

/* The bytes are read straight into the connection's reply area. */
static int op_read(struct shard_rpc *r, struct call *k, const Medshard__DataRequest *q)
{
  size_t cap;
  uint8_t *area = net_reply_area(k->c, &cap);
  if (cap > r->payload_max)
    cap = r->payload_max;
  size_t want = q->length < cap ? (size_t)q->length : cap;
  k->out.payload = area;
  int rc = store_read_submit(r->store, &k->id, q->offset, area, want, &k->got, read_done, k);
  if (rc != 0) /* UNTESTED: out of memory */
    return fail(&k->out, rc, msd_strerror(rc)), 0;
  return 1;
}

/* Serves one request: 1 if its answer waits for the store (k belongs to
 * the store's callback then), 0 if k->out is the answer now. */
static int dispatch(struct shard_rpc *r, struct call *k, const Medshard__DataRequest *q,
                    const struct net_request *req)
{
  struct reply *out = &k->out;
  if (q->object_id.len != STORE_OID_BYTES)
    return fail(out, MSD_EPARAM, "object id must be 16 bytes"), 0;
  memcpy(k->id.oid, q->object_id.data, STORE_OID_BYTES);
  k->id.index = q->shard_index;
  if (req->payload_len > 0 && q->op != MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND)
    return fail(out, MSD_EPARAM, "only APPEND carries a payload"), 0;
  int rc;
  switch (q->op) {
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN: op_open(r, &k->id, out); return 0;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND: return op_append(r, k, q, req);
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL: return op_seal(r, k, q);
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_READ: return op_read(r, k, q);
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_STAT: stat_into(r, &k->id, out); return 0;
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_ABORT: {
    struct open_shard *o = find_open(r, &k->id);
    if (o != NULL)
      drop_open(o);
    return 0;
  }
  case MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE:
    rc = store_delete(r->store, &k->id);
    if (rc != 0)
      fail(out, rc, msd_strerror(rc));
    return 0;
  default:
    return fail(out, MSD_EPARAM, "unknown data operation"), 0;
  }
}

void shard_rpc_handle(void *ctx, struct net_conn *c, const struct net_request *req)
{
  struct shard_rpc *r = ctx;
  sweep_idle(r);
  struct store_id none = {{0}, 0};
  struct call *k = call_new(r, c, req->id, &none);
  if (k == NULL) {
    net_close(c, "out of memory for a data request");
    return;
  }
  Medshard__DataRequest *q = medshard__data_request__unpack(NULL, req->msg_len, req->msg);
  int waits = 0;
  if (q == NULL) {
    fail(&k->out, MSD_EDECODE, "request message does not decode");
  } else if (q->format_version != 1) {
    fail(&k->out, MSD_EVERSION, "unsupported request version");
  } else if (q->op == MEDSHARD__DATA_OP__DATA_OP_SHARD_LIST) {
    size_t cap;
    uint8_t *area = net_reply_area(c, &cap); /* the page is built where it is sent from */
    shard_list_handle(r->store, area, cap < r->payload_max ? cap : r->payload_max, c, req, q);
    medshard__data_request__free_unpacked(q, NULL);
    msd_free(k);
    return;
  } else {
    waits = dispatch(r, k, q, req);
  }
  if (q != NULL)
    medshard__data_request__free_unpacked(q, NULL);
  if (!waits)
    call_answer(k);
}

/* The loop's auxiliary source: the store's ring. With io_uring its
 * descriptor wakes the loop; on the fallback path the store does its I/O
 * inside store_poll, so the loop keeps calling while work remains. */
static bool poll_store(void *ctx)
{
  struct shard_rpc *r = ctx;
  bool busy = store_poll(r->store);
  return busy && store_poll_fd(r->store) < 0;
}

void shard_rpc_attach(struct shard_rpc *r, struct net_loop *l)
{
  net_loop_set_aux(l, store_poll_fd(r->store), poll_store, r);
}
