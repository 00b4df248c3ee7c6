/* Coordinator I/O (docs/dataplane.md): one io_uring per coordinator
 * worker thread driving every socket of the request it serves — the
 * client's connection and one connection per shard target — plus a pool
 * of idle connections to other nodes kept between requests.
 *
 * A peer is a framed TCP connection. Sends are queued and go out in order,
 * one send in flight per peer; each frame may carry a payload that stays
 * the caller's memory until its `sent` callback. Receives are expected
 * frames: the caller says, in order, where each expected frame's payload
 * goes, and gets a `frame` callback when it has fully arrived (or fails).
 * Everything runs on the worker's thread; callbacks come from cio_run. */
#ifndef MSD_CLUSTER_CIO_H
#define MSD_CLUSTER_CIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/wire.h"

#define CIO_QUEUE 64 /* frames queued per peer, each way */

struct cio;
struct cio_peer;

/* A frame has arrived for an expectation (err 0), or it never will
 * (err != 0: the peer failed; msg is NULL). msg holds the protobuf bytes
 * (valid during the call); the payload is in the expectation's buffer. */
typedef void (*cio_frame_fn)(void *sess, struct cio_peer *p, void *tag, int err,
                             const struct wire_header *h, const uint8_t *msg);
/* A queued frame has left (err 0) or never will (err != 0). */
typedef void (*cio_sent_fn)(void *sess, struct cio_peer *p, void *tag, int err);

struct cio_out {
  uint8_t head[WIRE_HEADER_BYTES + 1024]; /* frame header + message */
  size_t head_len;
  const uint8_t *payload;
  size_t payload_len, done;
  void *tag;
};

struct cio_in {
  uint8_t *dst, *dst2; /* the payload's first cap bytes, then up to cap2 more */
  size_t cap, cap2;
  void *tag;
};

struct cio_peer {
  struct cio *io;
  int fd;
  uint32_t node;     /* 0 for the client */
  char addr[128];    /* "" for the client */
  bool dead;
  char why[160];     /* why it died */
  uint64_t next_id;
  int64_t last_ms;   /* last byte moved either way */
  unsigned inflight; /* SQEs not yet completed */
  void *sess;
  cio_frame_fn on_frame;
  cio_sent_fn on_sent;
  /* sending */
  struct cio_out out[CIO_QUEUE];
  unsigned out_head, out_n;
  bool tx_armed;
  /* receiving */
  struct cio_in in[CIO_QUEUE];
  unsigned in_head, in_n;
  bool rx_armed;
  int rx_part; /* 0 header, 1 message, 2 payload */
  uint8_t rx_hdr[WIRE_HEADER_BYTES];
  struct wire_header h;
  uint8_t *msg;  /* WIRE_MSG_MAX bytes */
  size_t have;
  uint8_t rx_kind; /* WIRE_RESPONSE from nodes, WIRE_REQUEST from the client */
};

/* Makes the worker's ring: call on the thread that will run it. */
int cio_create(struct cio **out);
void cio_destroy(struct cio *io);

/* The peer for node `node` at data address `addr`: a pooled idle
 * connection, else a new one (connect bounded by timeout_ms). 0 or the
 * connect error (the peer is then unused). */
int cio_peer_open(struct cio *io, struct cio_peer *p, uint32_t node, const char *addr,
                  int timeout_ms, void *sess, cio_frame_fn on_frame, cio_sent_fn on_sent);
/* Adopts the client's socket (frames from it are requests). */
void cio_peer_adopt(struct cio *io, struct cio_peer *p, int fd, void *sess, cio_frame_fn on_frame,
                    cio_sent_fn on_sent);

/* Queues one frame: msg (packed protobuf, <= 1 KiB) and an
 * optional payload. kind is WIRE_REQUEST (id from the peer's counter,
 * returned) or WIRE_RESPONSE (id given). MSD_EWINDOW when the queue is
 * full, MSD_ESTATE on a dead peer. */
int cio_send(struct cio_peer *p, uint8_t kind, uint64_t *id, const uint8_t *msg, size_t msg_len,
             const uint8_t *payload, size_t payload_len, void *tag);
/* Expects the next frame, payload (<= cap bytes) into dst. MSD_EWINDOW or
 * MSD_ESTATE as for cio_send. */
int cio_expect(struct cio_peer *p, uint8_t *dst, size_t cap, void *tag);
/* The same, the payload split: its first cap bytes into dst, the rest (up
 * to cap2) into dst2, so a caller can receive straight into two buffers
 * that are not adjacent (the end of one stripe, the start of the next). */
int cio_expect_split(struct cio_peer *p, uint8_t *dst, size_t cap, uint8_t *dst2, size_t cap2,
                     void *tag);
/* Frames queued or expected and not yet done. */
unsigned cio_pending(const struct cio_peer *p);

/* Fails the peer: the socket is shut down, and every queued send and
 * expected frame gets its callback with an error once the kernel has let
 * go of them (from cio_run). */
void cio_fail(struct cio_peer *p, const char *why);

/* Hands a peer back: an idle, healthy node connection goes to the pool,
 * anything else is closed. Runs cio_run until the peer has nothing in
 * flight. */
void cio_peer_release(struct cio_peer *p);

/* Takes the socket back from a peer (the client's, to answer it outside
 * the ring): cancels what is in flight and forgets what is queued, with
 * no callbacks. The fd, or -1 if the kernel would not let go in time. */
int cio_peer_detach(struct cio_peer *p);

/* Submits what is queued and handles completions for up to timeout_ms
 * (returns after the first batch, or after a cio_wake). 0 or -errno from
 * io_uring. */
int cio_run(struct cio *io, int timeout_ms);

/* Makes the ring's current or next cio_run return: the one call that may
 * come from another thread (a helper whose progress the worker waits for;
 * it writes an eventfd the ring reads). Valid until cio_destroy. */
void cio_wake(struct cio *io);

#endif
