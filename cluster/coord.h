/* The coordinator of object PUTs and GETs inside a node
 * (docs/dataplane.md): the data loop hands it each client connection that
 * starts a PUT or GET, and one of a fixed set of worker threads serves the
 * request — placement, erasure coding, the shard traffic to the targets
 * over the worker's own io_uring, the PutObject anchor — then closes the
 * connection. When every worker is busy, requests wait in order: the
 * workers' fixed windows bound the memory. */
#ifndef MSD_CLUSTER_COORD_H
#define MSD_CLUSTER_COORD_H

#include <stdint.h>

#include "proto/medshard.pb-c.h"

struct coord_opts {
  const char *control;   /* this node's control address (PutObject, manifests, map) */
  uint32_t node_id;      /* this node, for the log */
  unsigned workers;      /* requests served at once; default 4 */
  unsigned queue;        /* requests waiting beyond those; default 256 */
};

struct coord;

int coord_start(const struct coord_opts *o, struct coord **out);
/* Finishes the requests in progress, refuses the waiting ones, joins. */
void coord_stop(struct coord *c);

/* Takes a client connection (fd) whose first frame, request `id`, was
 * `req` (ownership of both passes). From the data loop's thread. */
void coord_take(void *coord, int fd, uint64_t id, Medshard__DataRequest *req);

#endif
