/* Blocking data-port client (data_client.h) over common/sock.h. */
#include "net/data_client.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/sock.h"
#include "proto/wire.h"

#define PAYLOAD_MAX (1u << 20)

struct data_client {
  int fd;
  uint64_t next_id;
};

int data_client_connect(const char *addr, int timeout_ms, struct data_client **out)
{
  int fd, rc = msd_sock_connect(addr, timeout_ms, &fd);
  if (rc != 0)
    return rc;
  struct data_client *c = msd_calloc(1, sizeof *c);
  if (c == NULL) {
    close(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  if (getrandom(&c->next_id, sizeof c->next_id, 0) != sizeof c->next_id)
    c->next_id = (uint64_t)msd_now_ms(); /* UNTESTED */
  *out = c;
  return 0;
}

void data_client_close(struct data_client *c)
{
  if (c == NULL)
    return;
  close(c->fd);
  msd_free(c);
}

static int send_request(struct data_client *c, Medshard__DataRequest *req, const void *payload,
                        size_t plen, int64_t deadline, uint64_t *id)
{
  req->format_version = 1;
  size_t mlen = medshard__data_request__get_packed_size(req);
  if (mlen > WIRE_MSG_MAX || plen > PAYLOAD_MAX)
    return MSD_EPARAM;
  uint8_t *buf = msd_malloc(WIRE_HEADER_BYTES + mlen);
  if (buf == NULL)
    return -ENOMEM;
  *id = ++c->next_id;
  struct wire_header h = {.kind = WIRE_REQUEST, .request_id = *id, .msg_len = (uint32_t)mlen,
                          .payload_len = (uint32_t)plen};
  wire_encode(&h, buf);
  medshard__data_request__pack(req, buf + WIRE_HEADER_BYTES);
  int rc = msd_sock_send_all(c->fd, buf, WIRE_HEADER_BYTES + mlen, deadline);
  msd_free(buf);
  if (rc == 0 && plen > 0)
    rc = msd_sock_send_all(c->fd, payload, plen, deadline);
  return rc;
}

int data_client_send(struct data_client *c, Medshard__DataRequest *req, const void *payload,
                     size_t payload_len, int timeout_ms, uint64_t *id)
{
  return send_request(c, req, payload, payload_len, msd_now_ms() + timeout_ms, id);
}

int data_client_recv(struct data_client *c, uint64_t id, int timeout_ms,
                     Medshard__DataResponse **resp, void *into, size_t cap, size_t *got)
{
  int64_t deadline = msd_now_ms() + timeout_ms;
  *resp = NULL;
  if (got != NULL)
    *got = 0;
  uint8_t hdr[WIRE_HEADER_BYTES];
  struct wire_header h;
  int rc = msd_sock_recv_all(c->fd, hdr, sizeof hdr, deadline);
  if (rc == 0 && (wire_decode(hdr, PAYLOAD_MAX, &h, NULL) != 0 || h.kind != WIRE_RESPONSE ||
                  h.request_id != id))
    rc = MSD_EFRAME;
  if (rc != 0)
    return rc;
  uint8_t *msg = msd_malloc(h.msg_len ? h.msg_len : 1);
  if (msg == NULL)
    return -ENOMEM;
  rc = msd_sock_recv_all(c->fd, msg, h.msg_len, deadline);
  if (rc == 0 && (*resp = medshard__data_response__unpack(NULL, h.msg_len, msg)) == NULL)
    rc = MSD_EDECODE;
  msd_free(msg);
  if (rc == 0 && h.payload_len > cap)
    rc = MSD_ESHORT;
  if (rc == 0 && h.payload_len > 0)
    rc = msd_sock_recv_all(c->fd, into, h.payload_len, deadline);
  if (got != NULL)
    *got = rc == 0 ? h.payload_len : 0;
  if (rc != 0 && *resp != NULL) {
    medshard__data_response__free_unpacked(*resp, NULL);
    *resp = NULL;
  }
  return rc;
}

int data_client_call(struct data_client *c, Medshard__DataRequest *req, const void *payload,
                     size_t payload_len, int timeout_ms, Medshard__DataResponse **resp,
                     void *into, size_t cap, size_t *got)
{
  int64_t t0 = msd_now_ms();
  uint64_t id;
  *resp = NULL;
  int rc = data_client_send(c, req, payload, payload_len, timeout_ms, &id);
  if (rc != 0)
    return rc;
  int left = timeout_ms - (int)(msd_now_ms() - t0);
  return data_client_recv(c, id, left > 0 ? left : 0, resp, into, cap, got);
}
