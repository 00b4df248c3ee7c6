/* The client API (client.h): finds a coordinator from the cluster map and
 * streams PUT and GET frames to it (docs/FORMATS.md "Object operations"). */
#include "cluster/client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "net/data_client.h"

#define CONNECT_MS 3000
#define FRAME_MS 60000   /* one frame each way: a stalled node is given up on */
#define COMMIT_MS 120000 /* PUT_END to its answer: seals, Raft commit, apply */
#define CHUNK (1u << 20)
#define MAX_NODES 256

struct coord {
  char data[128];
  uint32_t id;
};

struct msd_client {
  struct coord node[MAX_NODES];
  size_t n;
  size_t first; /* which node to try first */
  uint8_t *buf; /* CHUNK bytes: one body frame on its way */
};

static int fail(struct msd_error *e, int code, const char *fmt, ...)
{
  if (e == NULL)
    return code;
  e->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

/* Where `ctl` (a control address) sits among the cluster's nodes. */
static size_t node_with_control(const Medshard__CtlResponse *r, const char *ctl, size_t len)
{
  for (size_t i = 0; i < r->n_nodes; i++) {
    const char *a = r->nodes[i]->control_address;
    if (a != NULL && strlen(a) == len && strncmp(a, ctl, len) == 0)
      return i;
  }
  return SIZE_MAX;
}

/* Coordinators in preference order: the nodes named in `nodes` first,
 * starting at a random one of them (clients spread over the nodes they
 * were given; a single --node pins one), then every other node. */
static void order_nodes(struct msd_client *c, const char *nodes, const Medshard__CtlResponse *r)
{
  bool named[MAX_NODES] = {false};
  size_t nnamed = 0, order[MAX_NODES];
  for (const char *p = nodes; *p != 0;) {
    size_t len = strcspn(p, ","), i = node_with_control(r, p, len);
    if (i < MAX_NODES && !named[i]) {
      named[i] = true;
      order[nnamed++] = i;
    }
    p += len + (p[len] == ',');
  }
  uint32_t rnd = 0;
  if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
    rnd = 0; /* UNTESTED: getrandom does not fail for 4 bytes */
  size_t start = nnamed ? rnd % nnamed : 0, n = 0, rot[MAX_NODES];
  for (size_t j = 0; j < nnamed; j++)
    rot[j] = order[(start + j) % nnamed];
  n = nnamed;
  for (size_t i = 0; i < r->n_nodes && i < MAX_NODES; i++)
    if (!named[i])
      rot[n++] = i;
  for (size_t j = 0; j < n; j++) {
    const Medshard__NodeInfo *ni = r->nodes[rot[j]];
    if (ni->data_address == NULL || ni->data_address[0] == 0 ||
        ni->status == MEDSHARD__NODE_STATUS__NODE_STATUS_OUT)
      continue;
    snprintf(c->node[c->n].data, sizeof c->node[c->n].data, "%s", ni->data_address);
    c->node[c->n++].id = ni->node_id;
  }
}

int msd_client_open(const char *nodes, struct msd_client **out, struct msd_error *e)
{
  if (nodes == NULL || nodes[0] == 0)
    return fail(e, MSD_EPARAM, "no cluster address given");
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_call_any(nodes, &req, 10000, &r, NULL, NULL);
  if (rc != 0)
    return fail(e, rc, "cannot reach the cluster at %s: %s", nodes, msd_strerror(rc));
  rc = r->code;
  struct msd_client *c = rc == 0 ? msd_calloc(1, sizeof *c) : NULL;
  if (rc == 0 && c != NULL && (c->buf = msd_malloc(CHUNK)) != NULL)
    order_nodes(c, nodes, r);
  if (rc != 0)
    fail(e, rc, "%s: cannot read the cluster map: %s", nodes, r->message ? r->message : "");
  else if (c == NULL || c->buf == NULL)
    rc = fail(e, -ENOMEM, "out of memory");
  else if (c->n == 0)
    rc = fail(e, MSD_EUNAVAILABLE, "no node of the cluster at %s has a data port", nodes);
  medshard__ctl_response__free_unpacked(r, NULL);
  if (rc != 0) {
    msd_client_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

void msd_client_close(struct msd_client *c)
{
  if (c == NULL)
    return;
  msd_free(c->buf);
  msd_free(c);
}

/* A connection to the first coordinator that accepts one, from c->first
 * on; c->first then names it. */
static int connect_any(struct msd_client *c, struct data_client **dc, struct msd_error *e)
{
  int rc = MSD_EUNAVAILABLE;
  for (size_t j = 0; j < c->n; j++) {
    size_t i = (c->first + j) % c->n;
    rc = data_client_connect(c->node[i].data, CONNECT_MS, dc);
    if (rc == 0) {
      c->first = i;
      return 0;
    }
  }
  return fail(e, rc, "no node's data port answers (last error: %s)", msd_strerror(rc));
}

/* The response that says why the coordinator stopped a stream: it sends
 * one and closes, and our sends then fail. */
static int stream_error(struct data_client *dc, uint64_t id, int rc, const char *what,
                        struct msd_error *e)
{
  Medshard__DataResponse *r = NULL;
  if (data_client_recv(dc, id, 2000, &r, NULL, 0, NULL) == 0 && r->code != 0) {
    fail(e, r->code, "%s", r->message && r->message[0] ? r->message : msd_strerror(r->code));
    rc = r->code;
  } else {
    fail(e, rc, "%s: %s", what, msd_strerror(rc));
  }
  if (r != NULL)
    medshard__data_response__free_unpacked(r, NULL);
  return rc;
}

/* Sends the body as PUT_DATA frames; 0 when rd reached its end. */
static int send_body(struct msd_client *c, struct data_client *dc, uint64_t put_id,
                     const struct msd_put_opts *o, msd_read_fn rd, void *ctx, struct msd_error *e)
{
  Medshard__DataRequest req = MEDSHARD__DATA_REQUEST__INIT;
  req.op = MEDSHARD__DATA_OP__DATA_OP_PUT_DATA;
  uint64_t total = 0, id;
  for (;;) {
    ssize_t n = rd(ctx, c->buf, CHUNK);
    if (n < 0)
      return fail(e, (int)n, "reading the body: %s", msd_strerror((int)n));
    if (n == 0)
      break;
    total += (uint64_t)n;
    if (o->has_size && total > o->size)
      return fail(e, MSD_EPARAM, "the body is longer than the %" PRIu64 " bytes declared",
                  o->size);
    int rc = data_client_send(dc, &req, c->buf, (size_t)n, FRAME_MS, &id);
    if (rc != 0)
      return stream_error(dc, put_id, rc, "sending the body", e);
  }
  if (o->has_size && total != o->size)
    return fail(e, MSD_ESHORT, "the body ended after %" PRIu64 " of the %" PRIu64 " bytes declared",
                total, o->size);
  return 0;
}

int msd_put(struct msd_client *c, const char *bucket, const char *key,
            const struct msd_put_opts *o, msd_read_fn rd, void *rd_ctx, Medshard__Manifest **out,
            struct msd_error *e)
{
  static const struct msd_put_opts none = {0};
  o = o ? o : &none;
  if (out != NULL)
    *out = NULL;
  struct data_client *dc;
  int rc = connect_any(c, &dc, e);
  if (rc != 0)
    return rc;
  Medshard__DataRequest req = MEDSHARD__DATA_REQUEST__INIT;
  req.op = MEDSHARD__DATA_OP__DATA_OP_PUT;
  req.bucket = (char *)bucket;
  req.key = (char *)key;
  req.content_type = (char *)(o->content_type ? o->content_type : "");
  req.has_size = o->has_size;
  req.length = o->size;
  uint64_t put_id, end_id;
  rc = data_client_send(dc, &req, NULL, 0, FRAME_MS, &put_id);
  if (rc != 0)
    fail(e, rc, "sending the PUT to %s: %s", c->node[c->first].data, msd_strerror(rc));
  if (rc == 0)
    rc = send_body(c, dc, put_id, o, rd, rd_ctx, e);
  Medshard__DataRequest end = MEDSHARD__DATA_REQUEST__INIT;
  end.op = MEDSHARD__DATA_OP__DATA_OP_PUT_END;
  if (rc == 0 && (rc = data_client_send(dc, &end, NULL, 0, FRAME_MS, &end_id)) != 0)
    rc = stream_error(dc, put_id, rc, "ending the body", e);
  Medshard__DataResponse *r = NULL;
  if (rc == 0 && (rc = data_client_recv(dc, put_id, COMMIT_MS, &r, NULL, 0, NULL)) != 0)
    fail(e, rc, "waiting for %s to store the object: %s", c->node[c->first].data,
         msd_strerror(rc));
  if (rc == 0 && r->code != 0)
    rc = fail(e, r->code, "%s", r->message && r->message[0] ? r->message : msd_strerror(r->code));
  if (rc == 0 && r->manifest == NULL)
    rc = fail(e, MSD_EDECODE, "the coordinator's answer has no manifest");
  if (rc == 0 && out != NULL) {
    *out = r->manifest; /* hand the manifest over, free the rest */
    r->manifest = NULL;
  }
  if (r != NULL)
    medshard__data_response__free_unpacked(r, NULL);
  /* Closing without PUT_END (an error above) makes the coordinator drop
   * every shard it wrote: nothing is half-stored. */
  data_client_close(dc);
  return rc;
}

/* Receives a GET's stream after its first response: data frames to wr,
 * then the final response's code. */
static int recv_body(struct msd_client *c, struct data_client *dc, uint64_t id, msd_write_fn wr,
                     void *ctx, struct msd_error *e)
{
  for (;;) {
    Medshard__DataResponse *r;
    size_t got;
    int rc = data_client_recv(dc, id, FRAME_MS, &r, c->buf, CHUNK, &got);
    if (rc != 0)
      return fail(e, rc, "reading the object from %s: %s", c->node[c->first].data,
                  msd_strerror(rc));
    int code = r->code;
    bool last = r->last;
    uint64_t off = r->offset;
    if (code != 0)
      fail(e, code, "%s", r->message && r->message[0] ? r->message : msd_strerror(code));
    medshard__data_response__free_unpacked(r, NULL);
    if (code != 0)
      return code;
    if (got > 0 && (rc = wr(ctx, off, c->buf, got)) != 0)
      return fail(e, rc, "writing the object: %s", msd_strerror(rc));
    if (last)
      return 0;
  }
}

/* One GET through the node c->first names. */
static int get_once(struct msd_client *c, struct data_client *dc, Medshard__DataRequest *req,
                    msd_write_fn wr, void *ctx, Medshard__Manifest **m, struct msd_error *e)
{
  uint64_t id;
  Medshard__DataResponse *r = NULL;
  int rc = data_client_send(dc, req, NULL, 0, FRAME_MS, &id);
  if (rc == 0)
    rc = data_client_recv(dc, id, FRAME_MS, &r, NULL, 0, NULL);
  if (rc != 0)
    return fail(e, rc, "asking %s for the object: %s", c->node[c->first].data, msd_strerror(rc));
  rc = r->code;
  if (rc != 0)
    fail(e, rc, "%s", r->message && r->message[0] ? r->message : msd_strerror(rc));
  else if (r->manifest == NULL)
    rc = fail(e, MSD_EDECODE, "the coordinator's answer has no manifest");
  if (rc == 0 && m != NULL) {
    *m = r->manifest;
    r->manifest = NULL;
  }
  bool last = r->last;
  medshard__data_response__free_unpacked(r, NULL);
  if (rc == 0 && !last)
    rc = recv_body(c, dc, id, wr, ctx, e);
  if (rc != 0 && m != NULL && *m != NULL) {
    medshard__manifest__free_unpacked(*m, NULL);
    *m = NULL;
  }
  return rc;
}

int msd_get(struct msd_client *c, const char *bucket, const char *key, const struct msd_range *rg,
            msd_write_fn wr, void *wr_ctx, Medshard__Manifest **m, struct msd_error *e)
{
  if (m != NULL)
    *m = NULL;
  Medshard__DataRequest req = MEDSHARD__DATA_REQUEST__INIT;
  req.op = MEDSHARD__DATA_OP__DATA_OP_GET;
  req.bucket = (char *)bucket;
  req.key = (char *)key;
  if (rg != NULL) {
    req.has_range = true;
    req.offset = rg->off;
    req.length = rg->len;
  }
  /* (A coordinator that has not applied a recent PUT yet asks the leader
   * before saying not found.) */
  struct data_client *dc;
  int rc = connect_any(c, &dc, e);
  if (rc != 0)
    return rc;
  rc = get_once(c, dc, &req, wr, wr_ctx, m, e);
  data_client_close(dc);
  return rc;
}
