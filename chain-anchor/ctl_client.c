/* Blocking control-plane client (ctl_client.h): plain sockets with poll()
 * deadlines (common/sock.h), frames from proto/wire.h. */
#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sock.h"
#include "proto/wire.h"

#define CLIENT_PAYLOAD_MAX (16u << 20)

struct ctl_client {
  int fd;
  uint64_t next_id;
  char addr[128];
};

int ctl_client_connect(const char *addr, int timeout_ms, struct ctl_client **out)
{
  int fd, rc = msd_sock_connect(addr, timeout_ms, &fd);
  if (rc != 0)
    return rc;
  struct ctl_client *c = msd_calloc(1, sizeof *c);
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  if (getrandom(&c->next_id, sizeof c->next_id, 0) != sizeof c->next_id)
    c->next_id = (uint64_t)msd_now_ms(); /* UNTESTED */
  snprintf(c->addr, sizeof c->addr, "%s", addr);
  *out = c;
  return 0;
}

void ctl_client_close(struct ctl_client *c)
{
  if (c == NULL)
    return;
  close(c->fd);
  msd_free(c);
}

const char *ctl_client_addr(const struct ctl_client *c)
{
  return c->addr;
}

int ctl_client_send(struct ctl_client *c, const Medshard__CtlRequest *req, uint64_t *id)
{
  size_t mlen = medshard__ctl_request__get_packed_size(req);
  if (mlen > WIRE_MSG_MAX)
    return MSD_EPARAM;
  uint8_t *buf = msd_malloc(WIRE_HEADER_BYTES + mlen);
  if (buf == NULL)
    return -ENOMEM;
  struct wire_header h = {.kind = WIRE_REQUEST, .request_id = ++c->next_id,
                          .msg_len = (uint32_t)mlen};
  wire_encode(&h, buf);
  medshard__ctl_request__pack(req, buf + WIRE_HEADER_BYTES);
  int rc = msd_sock_send_all(c->fd, buf, WIRE_HEADER_BYTES + mlen, msd_now_ms() + 10000);
  msd_free(buf);
  if (rc == 0 && id != NULL)
    *id = h.request_id;
  return rc;
}

int ctl_client_recv(struct ctl_client *c, int timeout_ms, uint64_t *id,
                    Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len)
{
  int64_t deadline = msd_now_ms() + timeout_ms;
  uint8_t hdr[WIRE_HEADER_BYTES];
  struct wire_header h;
  const char *why;
  int rc = msd_sock_recv_all(c->fd, hdr, sizeof hdr, deadline);
  if (rc == 0 && (wire_decode(hdr, CLIENT_PAYLOAD_MAX, &h, &why) != 0 || h.kind != WIRE_RESPONSE))
    rc = MSD_EFRAME;
  if (rc != 0)
    return rc;
  uint8_t *buf = msd_malloc((size_t)h.msg_len + h.payload_len + 1);
  if (buf == NULL)
    return -ENOMEM;
  rc = msd_sock_recv_all(c->fd, buf, (size_t)h.msg_len + h.payload_len, deadline);
  Medshard__CtlResponse *r = rc == 0 ? medshard__ctl_response__unpack(NULL, h.msg_len, buf) : NULL;
  if (rc == 0 && (r == NULL || r->format_version != 1))
    rc = r == NULL ? MSD_EDECODE : MSD_EVERSION;
  if (rc == 0 && payload != NULL && h.payload_len > 0) {
    *payload = msd_malloc(h.payload_len);
    if (*payload == NULL)
      rc = -ENOMEM;
    else
      memcpy(*payload, buf + h.msg_len, h.payload_len);
  } else if (payload != NULL) {
    *payload = NULL;
  }
  if (payload_len != NULL)
    *payload_len = rc == 0 ? h.payload_len : 0;
  msd_free(buf);
  if (rc != 0) {
    if (r != NULL)
      medshard__ctl_response__free_unpacked(r, NULL);
    return rc;
  }
  if (id != NULL)
    *id = h.request_id;
  *resp = r;
  return 0;
}

int ctl_client_call(struct ctl_client *c, const Medshard__CtlRequest *req, int timeout_ms,
                    Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len)
{
  uint64_t id, got;
  int rc = ctl_client_send(c, req, &id);
  while (rc == 0) {
    rc = ctl_client_recv(c, timeout_ms, &got, resp, payload, payload_len);
    if (rc != 0 || got == id)
      break;
    medshard__ctl_response__free_unpacked(*resp, NULL); /* a stale answer */
    if (payload != NULL)
      msd_free(*payload);
  }
  return rc;
}

static void ensure_ids(Medshard__Command **cmds, size_t n, uint8_t (*ids)[16])
{
  for (size_t i = 0; i < n; i++) {
    if (cmds[i]->request_id.len != 0)
      continue;
    if (getrandom(ids[i], 16, 0) != 16)
      memset(ids[i], (int)i, 16); /* UNTESTED */
    cmds[i]->request_id = (ProtobufCBinaryData){16, ids[i]};
  }
}

/* Sleeps a little between retries (bounded by the caller's deadline). */
static void backoff(int attempt)
{
  struct timespec ts = {0, (long)(attempt < 10 ? 20 + attempt * 30 : 300) * 1000000L};
  nanosleep(&ts, NULL);
}

int ctl_submit(const char *addr, Medshard__Command **cmds, size_t n, int deadline_ms,
               Medshard__CtlResponse **resp, char *leader, size_t cap)
{
  return ctl_submit_auth(addr, cmds, n, deadline_ms, NULL, resp, leader, cap);
}

int ctl_submit_auth(const char *addr, Medshard__Command **cmds, size_t n, int deadline_ms,
                    const uint8_t *auth_key, Medshard__CtlResponse **resp, char *leader,
                    size_t cap)
{
  uint8_t(*ids)[16] = msd_malloc((n ? n : 1) * sizeof *ids);
  uint8_t tag[CTL_AUTH_BYTES];
  if (ids == NULL)
    return -ENOMEM;
  ensure_ids(cmds, n, ids);
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  req.format_version = 1;
  req.op = MEDSHARD__CTL_OP__CTL_OP_SUBMIT;
  req.commands = cmds;
  req.n_commands = n;
  /* The tag covers the request ids, so it is made after ensure_ids. */
  if (auth_key != NULL && ctl_auth_tag(auth_key, cmds, n, tag) == 0)
    req.node_auth = (ProtobufCBinaryData){sizeof tag, tag};
  /* addr may list several nodes ("a:1,b:2"): on a dead connection try the
   * next, so a client survives the loss of the node it started with. */
  char list[8][128], target[128];
  size_t nlist = 0;
  for (const char *p = addr; p != NULL && *p != 0 && nlist < 8;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    snprintf(list[nlist++], sizeof list[0], "%.*s", (int)(len < 127 ? len : 127), p);
    p = comma ? comma + 1 : NULL;
  }
  if (nlist == 0) {
    msd_free(ids);
    return MSD_EPARAM;
  }
  snprintf(target, sizeof target, "%s", list[0]);
  int64_t deadline = msd_now_ms() + deadline_ms;
  int rc = MSD_EUNAVAILABLE;
  for (int attempt = 0; msd_now_ms() < deadline; attempt++) {
    struct ctl_client *c = NULL;
    int left = (int)(deadline - msd_now_ms());
    rc = ctl_client_connect(target, left > 2000 ? 2000 : left, &c);
    Medshard__CtlResponse *r = NULL;
    if (rc == 0)
      rc = ctl_client_call(c, &req, left, &r, NULL, NULL);
    ctl_client_close(c);
    if (rc == 0 && (r->code == MSD_ENOTLEADER || r->code == MSD_EUNAVAILABLE)) {
      if (r->leader_address != NULL && r->leader_address[0] != 0)
        snprintf(target, sizeof target, "%s", r->leader_address);
      rc = r->code;
      medshard__ctl_response__free_unpacked(r, NULL);
      backoff(attempt);
      continue;
    }
    if (rc == 0) {
      *resp = r;
      if (leader != NULL)
        snprintf(leader, cap, "%s", target);
      break;
    }
    /* Connection lost: the entry may or may not have committed; the same
     * request ids make the retry safe. */
    snprintf(target, sizeof target, "%s", list[(size_t)attempt % nlist]);
    backoff(attempt);
  }
  for (size_t i = 0; i < n; i++)
    if (cmds[i]->request_id.data == ids[i])
      cmds[i]->request_id = (ProtobufCBinaryData){0, NULL};
  msd_free(ids);
  return rc;
}
