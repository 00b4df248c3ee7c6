/* Blocking TCP for clients (CLI verbs, tools, the node's forwarder):
 * connect, send and receive with deadlines, no SIGPIPE. */
#ifndef MSD_COMMON_SOCK_H
#define MSD_COMMON_SOCK_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic milliseconds, for deadlines. */
int64_t msd_now_ms(void);

/* Connects to "HOST:PORT" within timeout_ms; *out is a non-blocking,
 * TCP_NODELAY socket. 0, MSD_EPARAM (bad address), MSD_ETIMEDOUT, -errno. */
int msd_sock_connect(const char *addr, int timeout_ms, int *out);

/* All len bytes, or MSD_ETIMEDOUT at the deadline (msd_now_ms), or -errno
 * (-ECONNRESET when the peer closed before all bytes arrived). */
int msd_sock_send_all(int fd, const uint8_t *buf, size_t len, int64_t deadline);
int msd_sock_recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline);

#endif
