/* The data plane's network loop (docs/dataplane.md): one thread, one
 * io_uring, a listening TCP socket, and connections that speak the framing
 * of proto/wire.h. A request's payload is received straight into a buffer
 * of the loop's fixed pool; a connection that finds the pool empty waits
 * (FIFO) instead of allocating, so memory does not grow with clients or
 * object sizes. A connection handles one request at a time: after a
 * request is handed to the handler it reads nothing more until the
 * handler's reply has been sent. A frame that breaks the rules (bad
 * magic, version or kind, a length over its bound) is logged and its
 * connection closed; nothing else is touched. Answering such frames with an
 * error message is the RPC layer's job once its messages exist. */
#ifndef MSD_NET_LOOP_H
#define MSD_NET_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_opts {
  const char *listen;     /* "HOST:PORT" on IPv4; port 0 picks a free one */
  unsigned pool_buffers;  /* payload buffers in the pool; default 64 */
  size_t buffer_bytes;    /* bytes each, also the payload bound; default 1 MiB */
  unsigned max_conns;     /* connections at once; default 1024 */
};

struct net_loop;
struct net_conn;

/* A complete request. msg and payload stay valid until the reply is sent
 * (or the connection closes). */
struct net_request {
  uint64_t id;
  const uint8_t *msg;
  size_t msg_len;
  const uint8_t *payload;
  size_t payload_len;
};

/* Called on the loop's thread for each request. It answers with
 * net_reply, net_close or net_detach, now or later (a reply that waits for
 * disk); until then the connection reads nothing more and stays allocated,
 * even if the loop is stopping. */
typedef void (*net_handler)(void *ctx, struct net_conn *c, const struct net_request *r);

/* Called on the loop's thread after every batch of completions, and when
 * the auxiliary descriptor is readable. True when it has work it can do
 * at once: the loop then does not block before calling it again. */
typedef bool (*net_aux_fn)(void *ctx);

/* Binds and listens. *out owned by the caller (net_loop_destroy, after
 * net_loop_run returned). 0, MSD_EPARAM (bad address), -errno. */
int net_loop_create(const struct net_opts *o, net_handler h, void *ctx, struct net_loop **out);
void net_loop_destroy(struct net_loop *l);
uint16_t net_loop_port(const struct net_loop *l);

/* Lets a second event source share the loop (the shard store's ring):
 * `fd` (-1 for none) is polled through the loop's io_uring and fn runs as
 * net_aux_fn says. Call before net_loop_run. */
void net_loop_set_aux(struct net_loop *l, int fd, net_aux_fn fn, void *ctx);

/* Serves until net_loop_stop; closes every connection before returning,
 * after the handler has answered those it holds.
 * Creates the io_uring on the calling thread (run it on the thread that
 * serves). 0 or -errno from io_uring itself. */
int net_loop_run(struct net_loop *l);

/* From any thread. */
void net_loop_stop(struct net_loop *l);

/* Sends the response frame for request id: msg (<= 64 KiB) then payload
 * (<= buffer_bytes), copied, so the caller's memory is free on return; a
 * payload already in net_reply_area is sent from there, not copied. Then
 * the connection reads its next request. 0, MSD_EPARAM (too large: the
 * connection is closed), MSD_ESTATE (the loop closed the connection while
 * the handler held it: nothing is sent, and c is released), or -ENOMEM. */
int net_reply(struct net_conn *c, uint64_t id, const uint8_t *msg, size_t msg_len,
              const uint8_t *payload, size_t payload_len);

/* Where a held request's reply payload can be built (*cap bytes: the
 * payload bound), inside the connection's own buffer. Writing there
 * overwrites the request's payload, so use it only for requests that
 * carry none. Valid until the reply is sent. */
uint8_t *net_reply_area(struct net_conn *c, size_t *cap);

/* Takes c's socket out of the loop (from the handler, instead of a
 * reply): the loop forgets the connection and the caller owns the fd,
 * which has read exactly the request being handled. The request's msg and
 * payload are invalid after the handler returns. The fd, or MSD_ESTATE. */
int net_detach(struct net_conn *c);

/* Closes c, logging why (NULL: an orderly close, not logged); from a
 * handler, this is its answer. */
void net_close(struct net_conn *c, const char *why);

struct net_stats {
  uint64_t accepted, requests, bad_frames, buffer_waits, refused_conns;
  unsigned conns, pool_free;
};
void net_loop_stats(const struct net_loop *l, struct net_stats *out);

#endif
