/* A node's data plane (docs/dataplane.md): its shard store, the shard RPCs
 * and the io_uring loop serving them, on a thread of their own. The node
 * daemon starts it beside the control loop; the two share nothing yet. */
#ifndef MSD_NET_DATAPLANE_H
#define MSD_NET_DATAPLANE_H

struct dataplane_opts {
  const char *listen;     /* HOST:PORT of the data port */
  const char *store_dir;  /* the shard store, created if missing */
  unsigned pool_buffers;  /* request buffers (~1.06 MiB each); default 64 */
};

struct dataplane;

/* Opens the store, binds the port and starts the thread. Errors are logged
 * with the reason. 0, MSD_EPARAM, MSD_ELOCKED, or another store or -errno
 * code. */
int dataplane_start(const struct dataplane_opts *o, struct dataplane **out);

/* Stops the loop, joins the thread, closes the store. */
void dataplane_stop(struct dataplane *d);

#endif
