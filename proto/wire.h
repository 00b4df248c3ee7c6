/* Frames, as every medshard connection carries them (DESIGN §7): a fixed
 * 24-byte header (magic, version, kind, request id, header length, payload
 * length), a protobuf-c message of `header length` bytes, then `payload
 * length` raw bytes. Layout in docs/FORMATS.md, "Frames". */
#ifndef MSD_PROTO_WIRE_H
#define MSD_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0x4d534446u /* "MSDF" */
#define WIRE_VERSION 1
#define WIRE_HEADER_BYTES 24
#define WIRE_MSG_MAX (64u << 10) /* no protobuf header message is larger */

enum wire_kind { WIRE_REQUEST = 1, WIRE_RESPONSE = 2 };

struct wire_header {
  uint8_t kind;        /* enum wire_kind */
  uint64_t request_id; /* chosen by the requester, echoed in the response */
  uint32_t msg_len;    /* protobuf message bytes that follow */
  uint32_t payload_len;/* raw bytes after the message */
};

/* Writes the 24 header bytes. */
void wire_encode(const struct wire_header *h, uint8_t out[WIRE_HEADER_BYTES]);

/* Parses 24 header bytes and bounds the lengths: msg_len <= WIRE_MSG_MAX,
 * payload_len <= payload_max. 0, MSD_EFRAME (bad magic, kind, reserved
 * bits, or a length over its bound) or MSD_EVERSION. `why` (may be NULL)
 * receives a static sentence for the log. h->request_id is set even on
 * failure; the rest of *h only on success. */
int wire_decode(const uint8_t in[WIRE_HEADER_BYTES], uint32_t payload_max, struct wire_header *h,
                const char **why);

#endif
