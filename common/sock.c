/* Blocking TCP helpers with poll() deadlines (sock.h). */
#include "common/sock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h" /* msd_now_ns */

int64_t msd_now_ms(void)
{
  return (int64_t)(msd_now_ns() / 1000000u);
}

static int split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap)
{
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (colon == NULL || colon == addr || colon[1] == 0 || (size_t)(colon - addr) >= hcap ||
      strlen(colon + 1) >= pcap)
    return MSD_EPARAM;
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = 0;
  snprintf(port, pcap, "%s", colon + 1);
  return 0;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
  for (;;) {
    int64_t left = deadline - msd_now_ms();
    if (left <= 0)
      return MSD_ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, (int)left);
    if (r > 0)
      return 0;
    if (r < 0 && errno != EINTR)
      return -errno;
  }
}

static int connect_to(const struct addrinfo *ai, int64_t deadline, int *out)
{
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int rc = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : -errno;
  if (rc == -EINPROGRESS) {
    rc = wait_fd(fd, POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof err;
    if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
      rc = -err;
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *out = fd;
  return 0;
}

int msd_sock_connect(const char *addr, int timeout_ms, int *out)
{
  char host[128], port[16];
  if (split_addr(addr, host, sizeof host, port, sizeof port) != 0)
    return MSD_EPARAM;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0)
    return MSD_EPARAM;
  int64_t deadline = msd_now_ms() + timeout_ms;
  int fd = -1, rc = -ECONNREFUSED;
  for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
    rc = connect_to(ai, deadline, &fd);
  freeaddrinfo(res);
  if (fd < 0)
    return rc;
  *out = fd;
  return 0;
}

int msd_sock_send_all(int fd, const uint8_t *buf, size_t len, int64_t deadline)
{
  size_t put = 0;
  while (put < len) {
    ssize_t n = send(fd, buf + put, len - put, MSG_NOSIGNAL);
    if (n > 0) {
      put += (size_t)n;
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      return -errno;
    int rc = wait_fd(fd, POLLOUT, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int msd_sock_recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, buf + got, len - got, 0);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0)
      return -ECONNRESET;
    if (errno != EAGAIN && errno != EINTR)
      return -errno;
    int rc = wait_fd(fd, POLLIN, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

