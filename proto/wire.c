/* Frame header codec (wire.h): magic (4) | version (1) | kind (1) |
 * reserved, zero (2) | request id (8) | message length (4) | payload
 * length (4), all big-endian. */
#include "proto/wire.h"

#include <stddef.h>

#include "common/err.h"

static void put(uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static uint64_t get(const uint8_t *p, int n)
{
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

void wire_encode(const struct wire_header *h, uint8_t out[WIRE_HEADER_BYTES])
{
  put(out, WIRE_MAGIC, 4);
  out[4] = WIRE_VERSION;
  out[5] = h->kind;
  out[6] = out[7] = 0;
  put(out + 8, h->request_id, 8);
  put(out + 16, h->msg_len, 4);
  put(out + 20, h->payload_len, 4);
}

int wire_decode(const uint8_t in[WIRE_HEADER_BYTES], uint32_t payload_max, struct wire_header *h,
                const char **why)
{
  const char *w = NULL;
  int rc = MSD_EFRAME;
  h->request_id = get(in + 8, 8); /* lets the receiver address an error */
  if (get(in, 4) != WIRE_MAGIC)
    w = "bad magic (not a medshard frame)";
  else if (in[4] != WIRE_VERSION)
    w = "unsupported frame version", rc = MSD_EVERSION;
  else if (in[5] != WIRE_REQUEST && in[5] != WIRE_RESPONSE)
    w = "unknown frame kind";
  else if (in[6] != 0 || in[7] != 0)
    w = "reserved header bytes are not zero";
  else if (get(in + 16, 4) > WIRE_MSG_MAX)
    w = "message length over the 64 KiB bound";
  else if (get(in + 20, 4) > payload_max)
    w = "payload length over this connection's bound";
  if (why != NULL)
    *why = w;
  if (w != NULL)
    return rc;
  h->kind = in[5];
  h->msg_len = (uint32_t)get(in + 16, 4);
  h->payload_len = (uint32_t)get(in + 20, 4);
  return 0;
}
