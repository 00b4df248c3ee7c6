/* The data plane's network loop (net/loop.h) on 127.0.0.1 with blocking
 * test clients: echo round trips up to the payload bound, frames that break
 * the rules, a client that vanishes mid-frame, buffer admission with a
 * pool smaller than the clients, and stopping from another thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "net/loop.h"
#include "proto/wire.h"
#include "testutil.h"

#define BOUND (1u << 20)

struct server {
  struct net_loop *l;
  pthread_t t;
  int rc;
};

/* Echoes message and payload back. */
static void echo(void *ctx, struct net_conn *c, const struct net_request *r)
{
  (void)ctx;
  net_reply(c, r->id, r->msg, r->msg_len, r->payload, r->payload_len);
}

static void *serve(void *arg)
{
  struct server *s = arg;
  s->rc = net_loop_run(s->l);
  return NULL;
}

static void start(struct server *s, unsigned pool)
{
  struct net_opts o = {.listen = "127.0.0.1:0", .pool_buffers = pool, .buffer_bytes = BOUND};
  CU_ASSERT_EQUAL_FATAL(net_loop_create(&o, echo, NULL, &s->l), 0);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&s->t, NULL, serve, s), 0);
}

/* Stops the loop; its counters are read once its thread is gone (the
 * loop updates them without locks), into *st when st is not NULL. */
static void stop_stats(struct server *s, struct net_stats *st)
{
  net_loop_stop(s->l);
  pthread_join(s->t, NULL);
  CU_ASSERT_EQUAL(s->rc, 0);
  if (st != NULL)
    net_loop_stats(s->l, st);
  net_loop_destroy(s->l);
}

static void stop(struct server *s)
{
  stop_stats(s, NULL);
}

static int dial(const struct server *s)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(net_loop_port(s->l))};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  struct timeval tv = {10, 0}; /* every wait bounded */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  CU_ASSERT_EQUAL(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

static bool send_all(int fd, const void *buf, size_t len)
{
  for (size_t done = 0; done < len;) {
    ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    done += (size_t)n;
  }
  return true;
}

static bool recv_all(int fd, void *buf, size_t len)
{
  for (size_t done = 0; done < len;) {
    ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    done += (size_t)n;
  }
  return true;
}

/* Sends one request of msg_len + payload_len patterned bytes and checks the
 * echo. */
static bool round_trip(int fd, uint64_t id, size_t msg_len, size_t payload_len)
{
  size_t total = WIRE_HEADER_BYTES + msg_len + payload_len;
  uint8_t *out = malloc(total), *in = malloc(total);
  struct wire_header h = {.kind = WIRE_REQUEST, .request_id = id, .msg_len = (uint32_t)msg_len,
                          .payload_len = (uint32_t)payload_len};
  wire_encode(&h, out);
  for (size_t i = WIRE_HEADER_BYTES; i < total; i++)
    out[i] = (uint8_t)(i * 31 + id);
  bool ok = send_all(fd, out, total) && recv_all(fd, in, total);
  struct wire_header got;
  ok = ok && wire_decode(in, BOUND, &got, NULL) == 0 && got.kind == WIRE_RESPONSE &&
       got.request_id == id && got.msg_len == msg_len && got.payload_len == payload_len &&
       memcmp(in + WIRE_HEADER_BYTES, out + WIRE_HEADER_BYTES, total - WIRE_HEADER_BYTES) == 0;
  free(out);
  free(in);
  return ok;
}

/* The peer closed: recv returns 0 within the bound. */
static bool closed_by_peer(int fd)
{
  uint8_t b[64];
  return recv(fd, b, sizeof b, 0) == 0;
}

static void test_echo_round_trips(void)
{
  struct server s;
  start(&s, 4);
  int fd = dial(&s);
  CU_ASSERT(round_trip(fd, 1, 0, 0));
  CU_ASSERT(round_trip(fd, 2, 100, 0));
  CU_ASSERT(round_trip(fd, 3, 0, 12345));
  CU_ASSERT(round_trip(fd, 4, WIRE_MSG_MAX, BOUND)); /* both bounds exactly */
  CU_ASSERT(round_trip(fd, 5, 7, 1));
  close(fd);
  stop(&s);
}

static void test_bad_frames_close_only_that_connection(void)
{
  struct server s;
  start(&s, 4);
  int good = dial(&s);
  CU_ASSERT(round_trip(good, 1, 10, 10));
  uint8_t hdr[WIRE_HEADER_BYTES];
  struct wire_header h = {.kind = WIRE_REQUEST, .request_id = 9, .msg_len = 0,
                          .payload_len = BOUND + 1};
  /* A payload over the bound. */
  int fd = dial(&s);
  wire_encode(&h, hdr);
  CU_ASSERT(send_all(fd, hdr, sizeof hdr));
  CU_ASSERT(closed_by_peer(fd));
  close(fd);
  /* Garbage. */
  fd = dial(&s);
  CU_ASSERT(send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
  CU_ASSERT(closed_by_peer(fd));
  close(fd);
  /* A response frame sent to the server. */
  fd = dial(&s);
  h = (struct wire_header){.kind = WIRE_RESPONSE, .request_id = 3};
  wire_encode(&h, hdr);
  CU_ASSERT(send_all(fd, hdr, sizeof hdr));
  CU_ASSERT(closed_by_peer(fd));
  close(fd);
  /* Half a frame, then the client goes away. */
  fd = dial(&s);
  h = (struct wire_header){.kind = WIRE_REQUEST, .request_id = 4, .msg_len = 100};
  wire_encode(&h, hdr);
  CU_ASSERT(send_all(fd, hdr, sizeof hdr));
  CU_ASSERT(send_all(fd, "abc", 3));
  close(fd);
  /* The good connection never noticed. */
  CU_ASSERT(round_trip(good, 2, 1000, 1000));
  close(good);
  struct net_stats st;
  stop_stats(&s, &st);
  CU_ASSERT_EQUAL(st.bad_frames, 3);
  CU_ASSERT_EQUAL(st.pool_free, 4); /* every buffer came back */
}

struct client_arg {
  const struct server *s;
  int ok;
};

static void *client(void *arg)
{
  struct client_arg *a = arg;
  int fd = dial(a->s);
  a->ok = 1;
  for (int i = 0; i < 5 && a->ok; i++)
    a->ok = round_trip(fd, (uint64_t)i, 64, BOUND);
  close(fd);
  return NULL;
}

/* Eight clients, two buffers: requests wait for a buffer and all finish. */
static void test_admission_with_a_small_pool(void)
{
  struct server s;
  start(&s, 2);
  pthread_t t[8];
  struct client_arg a[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (struct client_arg){&s, 0};
    pthread_create(&t[i], NULL, client, &a[i]);
  }
  int ok = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    ok += a[i].ok;
  }
  CU_ASSERT_EQUAL(ok, 8);
  struct net_stats st;
  stop_stats(&s, &st);
  CU_ASSERT_EQUAL(st.requests, 40);
  CU_ASSERT_EQUAL(st.pool_free, 2);
  printf(" (%llu waits for a buffer)", (unsigned long long)st.buffer_waits);
}

/* Stopping closes connections that are idle, mid-frame or waiting. */
static void test_stop_with_connections_open(void)
{
  struct server s;
  start(&s, 1);
  int idle = dial(&s), half = dial(&s);
  uint8_t hdr[WIRE_HEADER_BYTES];
  struct wire_header h = {.kind = WIRE_REQUEST, .request_id = 1, .msg_len = 10, .payload_len = 10};
  wire_encode(&h, hdr);
  CU_ASSERT(send_all(half, hdr, sizeof hdr));
  usleep(50000);
  stop(&s);
  CU_ASSERT(closed_by_peer(idle));
  CU_ASSERT(closed_by_peer(half));
  close(idle);
  close(half);
}

static void test_bad_options(void)
{
  struct net_loop *l;
  struct net_opts o = {.listen = "localhost"};
  CU_ASSERT_EQUAL(net_loop_create(&o, echo, NULL, &l), MSD_EPARAM);
  o.listen = "127.0.0.1:99999";
  CU_ASSERT_EQUAL(net_loop_create(&o, echo, NULL, &l), MSD_EPARAM);
  o.listen = "300.0.0.1:1";
  CU_ASSERT_EQUAL(net_loop_create(&o, echo, NULL, &l), MSD_EPARAM);
}

extern const struct test_case shard_rpc_tests[]; /* test_shard_rpc.c */

int main(void)
{
  static const struct test_case tests[] = {
      {"echo round trips up to both bounds", test_echo_round_trips},
      {"bad frames close only their connection", test_bad_frames_close_only_that_connection},
      {"eight clients share two buffers", test_admission_with_a_small_pool},
      {"stop with connections open", test_stop_with_connections_open},
      {"bad options", test_bad_options},
      {NULL, NULL}};
  static const char *const names[] = {"net loop", "shard rpc", NULL};
  static const struct test_case *const suites[] = {tests, shard_rpc_tests};
  return test_run("test_net", names, suites);
}
