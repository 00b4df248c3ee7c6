/* A node's data plane (docs/dataplane.md): its shard store, the shard RPCs
 * and the io_uring loop serving them, on a thread of their own. The node
 * daemon starts it beside the control loop. Object operations (PUT, GET)
 * from clients are handed, connection and all, to the coordinator. */
#ifndef MSD_NET_DATAPLANE_H
#define MSD_NET_DATAPLANE_H

#include <stdint.h>

#include "proto/medshard.pb-c.h"

/* Takes a client connection whose first request (id, req) is an object
 * operation (PUT, GET): ownership of the fd and of req passes. Called on
 * the data loop's thread; it must not block. */
typedef void (*dataplane_take_fn)(void *ctx, int fd, uint64_t id, Medshard__DataRequest *req);

struct dataplane_opts {
  const char *listen;     /* HOST:PORT of the data port */
  const char *store_dir;  /* the shard store, created if missing */
  unsigned pool_buffers;  /* request buffers (~1.06 MiB each); default 32 */
  dataplane_take_fn take; /* object operations (NULL: refused) */
  void *take_ctx;
};

struct dataplane;

/* Opens the store, binds the port and starts the thread. Errors are logged
 * with the reason. 0, MSD_EPARAM, MSD_ELOCKED, or another store or -errno
 * code. */
int dataplane_start(const struct dataplane_opts *o, struct dataplane **out);

/* Stops the loop, joins the thread, closes the store. */
void dataplane_stop(struct dataplane *d);

#endif
