/* A blocking client for a node's data port (docs/FORMATS.md "Data plane"):
 * one TCP connection, one request at a time, bounded waits. For the CLI,
 * tests and tools; the coordinator's own traffic goes through its
 * io_uring loop instead. Not thread-safe: one client per thread. */
#ifndef MSD_NET_DATA_CLIENT_H
#define MSD_NET_DATA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/medshard.pb-c.h"

struct data_client;

/* Connects to "HOST:PORT" (IPv4) within timeout_ms. 0, MSD_EPARAM,
 * MSD_ETIMEDOUT or -errno. */
int data_client_connect(const char *addr, int timeout_ms, struct data_client **out);
void data_client_close(struct data_client *c);

/* Sends req (its format_version is set) with `payload` and waits up to
 * timeout_ms for the response: *resp is the caller's
 * (medshard__data_response__free_unpacked); up to `cap` payload bytes go
 * to `into` and *got says how many (a longer payload is MSD_ESHORT). 0 is
 * "a response arrived", whatever its code; otherwise MSD_ETIMEDOUT,
 * MSD_EFRAME, MSD_EDECODE or -errno, and the connection is unusable. */
int data_client_call(struct data_client *c, Medshard__DataRequest *req, const void *payload,
                     size_t payload_len, int timeout_ms, Medshard__DataResponse **resp,
                     void *into, size_t cap, size_t *got);

/* The two halves of data_client_call, for streams: a request whose
 * response comes later (PUT_DATA frames have none; GET has several), and
 * one response to request `id`. Errors as for data_client_call. */
int data_client_send(struct data_client *c, Medshard__DataRequest *req, const void *payload,
                     size_t payload_len, int timeout_ms, uint64_t *id);
int data_client_recv(struct data_client *c, uint64_t id, int timeout_ms,
                     Medshard__DataResponse **resp, void *into, size_t cap, size_t *got);

#endif
