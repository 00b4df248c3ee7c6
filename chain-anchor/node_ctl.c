/* The control-plane listener (DESIGN §7): framed protobuf requests on the
 * node's libuv loop. A frame that breaks the rules (bad magic or version,
 * a length over its bound, a message that does not decode) gets an error
 * response when it can be addressed, a log line, and its connection
 * closed; nothing else is touched. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain-anchor/ctl_auth.h"
#include "chain-anchor/node_int.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/wire.h"

#define CONN_BUFFER_MAX (WIRE_HEADER_BYTES + WIRE_MSG_MAX + NODE_CTL_PAYLOAD_MAX)

struct write_req {
  uv_write_t req;
  uint8_t *buf;
};

static void conn_free(struct ctl_conn *c)
{
  msd_free(c->in);
  msd_free(c);
}

void node__conn_unref(struct ctl_conn *c)
{
  if (--c->refs == 0)
    conn_free(c);
}

static void closed_cb(uv_handle_t *h)
{
  node__conn_unref(h->data);
}

static void conn_close(struct ctl_conn *c, const char *why)
{
  if (c->closing)
    return;
  if (why != NULL)
    msd_log(MSD_LOG_WARN, "node %u: control connection from %s closed: %s", c->n->cfg.node_id,
            c->peer, why);
  c->closing = true;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->n->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, closed_cb);
}

static void written_cb(uv_write_t *req, int status)
{
  struct write_req *w = (struct write_req *)req;
  (void)status; /* a failed write shows up as a read error on the connection */
  msd_free(w->buf);
  msd_free(w);
}

void node__ctl_reply(struct ctl_conn *conn, uint64_t frame_id, const Medshard__CtlResponse *resp,
                     const uint8_t *payload, size_t payload_len)
{
  if (conn->closing)
    return;
  size_t mlen = medshard__ctl_response__get_packed_size(resp);
  struct write_req *w = msd_malloc(sizeof *w);
  uint8_t *buf = msd_malloc(WIRE_HEADER_BYTES + mlen + payload_len);
  if (w == NULL || buf == NULL) { /* UNTESTED: out of memory */
    msd_free(w);
    msd_free(buf);
    conn_close(conn, "out of memory for a response");
    return;
  }
  struct wire_header h = {.kind = WIRE_RESPONSE, .request_id = frame_id,
                          .msg_len = (uint32_t)mlen, .payload_len = (uint32_t)payload_len};
  wire_encode(&h, buf);
  medshard__ctl_response__pack(resp, buf + WIRE_HEADER_BYTES);
  if (payload_len > 0)
    memcpy(buf + WIRE_HEADER_BYTES + mlen, payload, payload_len);
  w->buf = buf;
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)(WIRE_HEADER_BYTES + mlen + payload_len));
  if (uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, written_cb) != 0) {
    msd_free(buf);
    msd_free(w);
    conn_close(conn, "write failed");
  }
}

static void reply_error(struct ctl_conn *c, uint64_t id, int code, const char *message)
{
  Medshard__CtlResponse resp = MEDSHARD__CTL_RESPONSE__INIT;
  char addr[NODE_ADDR_MAX];
  resp.format_version = 1;
  resp.code = code;
  resp.message = (char *)message;
  if (code == MSD_ENOTLEADER || code == MSD_EUNAVAILABLE)
    node__leader_hint(c->n, &resp, addr, sizeof addr);
  node__ctl_reply(c, id, &resp, NULL, 0);
}

/* A request refused before it touched anything: logged, answered. */
static void refuse(struct ctl_conn *c, uint64_t id, int code, const char *why)
{
  msd_log(MSD_LOG_WARN, "node %u: refused a request from %s: %s", c->n->cfg.node_id, c->peer,
          why);
  reply_error(c, id, code, why);
}

static void fill_head(struct node *n, Medshard__ChainHead *ch, struct chain_head *h)
{
  static char *const state[] = {"unavailable", "follower", "candidate", "leader"};
  raft_id leader;
  const char *addr;
  chain_fsm_head(n->fsm, h);
  raft_leader(&n->raft, &leader, &addr);
  ch->node_id = n->cfg.node_id;
  ch->applied = h->applied;
  ch->leaves = h->leaves;
  ch->height = h->height;
  ch->sealed = h->sealed;
  ch->last_size = h->last_size;
  ch->head = (ProtobufCBinaryData){BLOCK_HASH, h->head};
  ch->root = (ProtobufCBinaryData){MERKLE_HASH, h->root};
  ch->epoch = h->epoch;
  ch->voters = h->voters;
  ch->alarm = h->alarm[0] != 0 ? h->alarm : n->key_problem;
  int s = raft_state(&n->raft);
  ch->raft_state = state[s >= 0 && s <= 3 ? s : 0];
  ch->leader_id = (uint32_t)leader;
}

/* GET_MANIFEST, GET_BLOCK, GET_BUCKET: one record, decoded into resp. */
static int get_record(struct node *n, const Medshard__CtlRequest *r, Medshard__CtlResponse *resp)
{
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc;
  if (r->op == MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK)
    rc = chain_fsm_block(n->fsm, r->height, &buf, &len);
  else if (r->op == MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET)
    rc = chain_fsm_bucket(n->fsm, r->bucket, &buf, &len);
  else if (r->object_id.len == 16)
    rc = chain_fsm_manifest_by_id(n->fsm, r->object_id.data, &buf, &len);
  else
    rc = chain_fsm_manifest(n->fsm, r->bucket, r->key, &buf, &len);
  if (rc == 0 && r->op == MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK)
    rc = (resp->block = medshard__block_record__unpack(NULL, len, buf)) ? 0 : MSD_ECORRUPT;
  else if (rc == 0 && r->op == MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET)
    rc = (resp->bucket = medshard__bucket__unpack(NULL, len, buf)) ? 0 : MSD_ECORRUPT;
  else if (rc == 0)
    rc = (resp->manifest = medshard__manifest__unpack(NULL, len, buf)) ? 0 : MSD_ECORRUPT;
  msd_free(buf);
  return rc;
}

static int get_nodes(struct node *n, Medshard__CtlResponse *resp)
{
  uint8_t *buf;
  size_t len, count = 0;
  int rc = chain_fsm_nodes(n->fsm, &buf, &len);
  if (rc != 0)
    return rc;
  for (size_t off = 0; off + 4 <= len; off += 4 + (size_t)(buf[off] << 24 | buf[off + 1] << 16 |
                                                              buf[off + 2] << 8 | buf[off + 3]))
    count++;
  resp->nodes = msd_calloc(count ? count : 1, sizeof *resp->nodes);
  if (resp->nodes == NULL)
    rc = -ENOMEM;
  for (size_t off = 0; rc == 0 && off + 4 <= len;) {
    size_t l = (size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 | (size_t)buf[off + 2] << 8 |
               buf[off + 3];
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, l, buf + off + 4);
    if (ni == NULL)
      rc = MSD_ECORRUPT; /* UNTESTED: our own records */
    else
      resp->nodes[resp->n_nodes++] = ni;
    off += 4 + l;
  }
  msd_free(buf);
  return rc;
}

static size_t be32_at(const uint8_t *p)
{
  return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* A LIST page as chain_fsm_list returns it (length-prefixed encoded
 * manifests) into resp->manifests. */
static int unpack_manifests(const uint8_t *buf, size_t len, Medshard__CtlResponse *resp)
{
  size_t count = 0;
  for (size_t off = 0; off + 4 <= len; off += 4 + be32_at(buf + off))
    count++;
  resp->manifests = msd_calloc(count ? count : 1, sizeof *resp->manifests);
  if (resp->manifests == NULL)
    return -ENOMEM;
  for (size_t off = 0; off + 4 <= len; off += 4 + be32_at(buf + off)) {
    Medshard__Manifest *m = medshard__manifest__unpack(NULL, be32_at(buf + off), buf + off + 4);
    if (m == NULL)
      return MSD_ECORRUPT; /* UNTESTED: our own records */
    resp->manifests[resp->n_manifests++] = m;
  }
  return 0;
}

static void free_response_parts(Medshard__CtlResponse *resp)
{
  for (size_t i = 0; i < resp->n_manifests; i++)
    medshard__manifest__free_unpacked(resp->manifests[i], NULL);
  msd_free(resp->manifests);
  if (resp->block)
    medshard__block_record__free_unpacked(resp->block, NULL);
  if (resp->bucket)
    medshard__bucket__free_unpacked(resp->bucket, NULL);
  if (resp->manifest)
    medshard__manifest__free_unpacked(resp->manifest, NULL);
  for (size_t i = 0; i < resp->n_nodes; i++)
    medshard__node_info__free_unpacked(resp->nodes[i], NULL);
  msd_free(resp->nodes);
}

/* Why a submit may not be taken from this sender, or NULL. CutBlock is
 * only ever made by the leader's own tick (a client's could halt every
 * node with a false divergence alarm); commands that change the cluster
 * map need the node authentication tag. */
static const char *submit_problem(struct node *n, const Medshard__CtlRequest *r, int *code)
{
  bool needs_auth = false;
  *code = MSD_EPARAM;
  if (r->n_commands == 0 || r->n_commands > NODE_BATCH_MAX)
    return "a submit carries 1 to 4096 commands";
  for (size_t i = 0; i < r->n_commands; i++) {
    const Medshard__Command *cmd = r->commands[i];
    if (cmd->request_id.len != 0 && cmd->request_id.len != 16)
      return "request ids must be empty or 16 bytes";
    if (cmd->body_case == MEDSHARD__COMMAND__BODY__NOT_SET)
      return "a command without a body";
    if (cmd->body_case == MEDSHARD__COMMAND__BODY_CUT_BLOCK) {
      *code = MSD_EDENIED;
      return "CutBlock is made by the leader itself, never taken from the control port";
    }
    needs_auth = needs_auth || ctl_auth_needed(cmd);
  }
  if (needs_auth && !ctl_auth_ok(n->auth_key, r->commands, r->n_commands, r->node_auth.data,
                                 r->node_auth.len)) {
    *code = MSD_EDENIED;
    return "NodeJoin and NodeState need the node authentication tag (the cluster secret)";
  }
  return NULL;
}

static void do_submit(struct ctl_conn *c, uint64_t id, Medshard__CtlRequest *r)
{
  int code;
  const char *why = submit_problem(c->n, r, &code);
  if (why != NULL) {
    refuse(c, id, code, why);
    return;
  }
  if (!node__can_write(c->n, &code, &why)) {
    reply_error(c, id, code, why);
    return;
  }
  int rc = node__submit(c->n, c, id, r->commands, r->n_commands, false);
  if (rc != 0)
    refuse(c, id, rc, msd_strerror(rc));
}

/* GET_PROOF and GET_CHAIN answer with raw payload bytes. */
static void do_payload(struct ctl_conn *c, uint64_t id, const Medshard__CtlRequest *r)
{
  Medshard__CtlResponse resp = MEDSHARD__CTL_RESPONSE__INIT;
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc;
  resp.format_version = 1;
  if (r->op == MEDSHARD__CTL_OP__CTL_OP_GET_PROOF) {
    rc = chain_fsm_proof(c->n->fsm, r->leaf_index, &buf, &len);
  } else {
    size_t cap = r->length == 0 || r->length > NODE_CHAIN_CHUNK ? NODE_CHAIN_CHUNK : r->length;
    buf = msd_malloc(cap);
    rc = buf == NULL ? -ENOMEM : chain_fsm_chain_bytes(c->n->fsm, r->offset, buf, cap, &len);
  }
  resp.code = rc;
  resp.message = rc == 0 ? "" : (char *)msd_strerror(rc);
  node__ctl_reply(c, id, &resp, rc == 0 ? buf : NULL, rc == 0 ? len : 0);
  msd_free(buf);
}

/* What a LIST response leaves for everything but its manifests (format
 * version, code, message, truncated): the rest of WIRE_MSG_MAX is theirs,
 * since a client refuses a larger message. */
#define LIST_RESPONSE_SLACK 1024

/* The sentence for a LIST that failed with rc. */
static const char *list_problem(const Medshard__CtlRequest *r, int rc, char *msg, size_t cap)
{
  if (rc == MSD_ENOTFOUND)
    snprintf(msg, cap, "bucket %.63s does not exist", r->bucket);
  else if (rc == MSD_EPARAM)
    snprintf(msg, cap, "LIST needs a bucket of 1-63 bytes, and a prefix and start_after of at"
                       " most 1024 bytes");
  else if (rc == MSD_ESHORT)
    snprintf(msg, cap, "a manifest in bucket %.63s is too large for one response", r->bucket);
  else
    snprintf(msg, cap, "%s", msd_strerror(rc));
  return msg;
}

/* LIST: one page of manifests, cut to fit one response message. */
static void do_list(struct ctl_conn *c, uint64_t id, const Medshard__CtlRequest *r)
{
  Medshard__CtlResponse resp = MEDSHARD__CTL_RESPONSE__INIT;
  uint8_t *buf = NULL;
  size_t len = 0;
  bool truncated;
  char msg[200];
  resp.format_version = 1;
  int rc = chain_fsm_list(c->n->fsm, r->bucket, r->key, r->start_after, r->length,
                          WIRE_MSG_MAX - LIST_RESPONSE_SLACK, &buf, &len, &truncated);
  if (rc == 0)
    rc = unpack_manifests(buf, len, &resp);
  msd_free(buf);
  resp.code = rc;
  resp.truncated = rc == 0 && truncated;
  if (rc != 0) {
    free_response_parts(&resp); /* a page that failed half-way is not sent */
    resp.manifests = NULL;
    resp.n_manifests = 0;
    resp.message = (char *)list_problem(r, rc, msg, sizeof msg);
  }
  node__ctl_reply(c, id, &resp, NULL, 0);
  free_response_parts(&resp);
}

static void dispatch(struct ctl_conn *c, uint64_t id, Medshard__CtlRequest *r)
{
  struct node *n = c->n;
  Medshard__CtlResponse resp = MEDSHARD__CTL_RESPONSE__INIT;
  Medshard__ChainHead head = MEDSHARD__CHAIN_HEAD__INIT;
  struct chain_head h;
  resp.format_version = 1;
  switch (r->op) {
  case MEDSHARD__CTL_OP__CTL_OP_SUBMIT:
    do_submit(c, id, r);
    return;
  case MEDSHARD__CTL_OP__CTL_OP_GET_PROOF:
  case MEDSHARD__CTL_OP__CTL_OP_GET_CHAIN:
    do_payload(c, id, r);
    return;
  case MEDSHARD__CTL_OP__CTL_OP_LIST:
    do_list(c, id, r);
    return;
  case MEDSHARD__CTL_OP__CTL_OP_HEAD:
    fill_head(n, &head, &h);
    resp.head = &head;
    break;
  case MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST:
  case MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK:
  case MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET:
    resp.code = get_record(n, r, &resp);
    break;
  case MEDSHARD__CTL_OP__CTL_OP_GET_NODES:
    resp.code = get_nodes(n, &resp);
    break;
  default:
    refuse(c, id, MSD_EPARAM, "unknown control operation");
    return;
  }
  if (resp.code != 0)
    resp.message = (char *)msd_strerror(resp.code);
  node__ctl_reply(c, id, &resp, NULL, 0);
  free_response_parts(&resp);
}

/* Parses every complete frame in the buffer. false if the connection must
 * close. */
static bool parse_frames(struct ctl_conn *c)
{
  size_t off = 0;
  bool ok = true;
  while (ok && c->in_len - off >= WIRE_HEADER_BYTES) {
    struct wire_header h;
    const char *why;
    int rc = wire_decode(c->in + off, NODE_CTL_PAYLOAD_MAX, &h, &why);
    if (rc == 0 && h.kind != WIRE_REQUEST)
      rc = MSD_EFRAME, why = "response frame sent to a server";
    if (rc != 0) {
      /* A frame of our magic and version can be answered by its id; any
       * other stream is not ours to talk to. */
      if (rc == MSD_EFRAME && memcmp(c->in + off, "MSDF", 4) == 0)
        reply_error(c, h.request_id, MSD_EFRAME, why);
      conn_close(c, why);
      return false;
    }
    size_t need = WIRE_HEADER_BYTES + h.msg_len + h.payload_len;
    if (c->in_len - off < need)
      break;
    Medshard__CtlRequest *r =
        medshard__ctl_request__unpack(NULL, h.msg_len, c->in + off + WIRE_HEADER_BYTES);
    if (r == NULL || r->format_version != 1) {
      reply_error(c, h.request_id, r == NULL ? MSD_EDECODE : MSD_EVERSION,
                  r == NULL ? "request message does not decode" : "unsupported request version");
      conn_close(c, r == NULL ? "undecodable request" : "unsupported request version");
      ok = false;
    } else {
      dispatch(c, h.request_id, r);
    }
    if (r != NULL)
      medshard__ctl_request__free_unpacked(r, NULL);
    off += need;
  }
  if (ok && off > 0) {
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
  }
  return ok;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct ctl_conn *c = h->data;
  (void)suggested;
  if (c->in_cap - c->in_len < 16384 && c->in_cap < CONN_BUFFER_MAX) {
    size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
    uint8_t *p = msd_malloc(cap < CONN_BUFFER_MAX ? cap : CONN_BUFFER_MAX);
    if (p != NULL) {
      if (c->in_len)
        memcpy(p, c->in, c->in_len);
      msd_free(c->in);
      c->in = p;
      c->in_cap = cap < CONN_BUFFER_MAX ? cap : CONN_BUFFER_MAX;
    }
  }
  *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct ctl_conn *c = s->data;
  (void)buf;
  if (nread < 0) {
    conn_close(c, nread == UV_ENOBUFS ? "out of memory for the connection buffer"
                  : nread != UV_EOF   ? uv_strerror((int)nread)
                  : c->in_len > 0     ? "peer closed in the middle of a frame"
                                      : NULL);
    return;
  }
  /* A full buffer is grown by alloc_cb before the next read; parse_frames
   * leaves less than one bounded frame, which CONN_BUFFER_MAX holds. */
  c->in_len += (size_t)nread;
  parse_frames(c);
}

static void peer_name(struct ctl_conn *c)
{
  struct sockaddr_storage sa;
  int len = sizeof sa;
  char ip[48] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0 && sa.ss_family == AF_INET) {
    uv_ip4_name((const struct sockaddr_in *)&sa, ip, sizeof ip);
    port = ntohs(((const struct sockaddr_in *)&sa)->sin_port);
  }
  snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
}

static void accept_cb(uv_stream_t *server, int status)
{
  struct node *n = server->data;
  if (status != 0)
    return;
  struct ctl_conn *c = msd_calloc(1, sizeof *c);
  if (c == NULL)
    return; /* UNTESTED: the pending connection is retried by the kernel backlog */
  c->n = n;
  c->refs = 1;
  uv_tcp_init(&n->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, closed_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  peer_name(c);
  c->next = n->conns;
  if (n->conns)
    n->conns->prev = c;
  n->conns = c;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int node__ctl_listen(struct node *n)
{
  char host[NODE_ADDR_MAX];
  struct sockaddr_in sa;
  snprintf(host, sizeof host, "%s", n->cfg.control_address);
  char *colon = strrchr(host, ':');
  if (colon == NULL)
    return MSD_EPARAM;
  *colon = 0;
  int rc = uv_ip4_addr(host, atoi(colon + 1), &sa);
  if (rc == 0)
    rc = uv_tcp_init(&n->loop, &n->listener);
  n->listener.data = n;
  if (rc == 0)
    rc = uv_tcp_bind(&n->listener, (const struct sockaddr *)&sa, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&n->listener, 128, accept_cb);
  if (rc != 0)
    msd_log(MSD_LOG_ERROR, "node %u: cannot listen on %s: %s", n->cfg.node_id,
            n->cfg.control_address, uv_strerror(rc));
  return rc == 0 ? 0 : -rc;
}

void node__ctl_close_all(struct node *n)
{
  while (n->conns != NULL)
    conn_close(n->conns, NULL);
  if (!uv_is_closing((uv_handle_t *)&n->listener))
    uv_close((uv_handle_t *)&n->listener, NULL);
}

void node__leader_hint(struct node *n, Medshard__CtlResponse *resp, char *addr, size_t cap)
{
  raft_id id;
  const char *raft_addr;
  raft_leader(&n->raft, &id, &raft_addr);
  resp->leader_id = (uint32_t)id;
  addr[0] = 0;
  uint8_t *buf;
  size_t len;
  if (id != 0 && chain_fsm_node(n->fsm, (uint32_t)id, &buf, &len) == 0) {
    Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, len, buf);
    if (ni != NULL && ni->control_address != NULL)
      snprintf(addr, cap, "%s", ni->control_address);
    medshard__node_info__free_unpacked(ni, NULL);
    msd_free(buf);
  }
  for (size_t i = 0; addr[0] == 0 && i < n->cfg.npeers; i++)
    if (n->cfg.peers[i].id == id)
      snprintf(addr, cap, "%s", n->cfg.peers[i].control);
  resp->leader_address = addr;
}
