/* A blocking client for the control plane (CLI verbs, benchmarks, tests,
 * and the node's own forwarding thread): one TCP connection, framed
 * requests, bounded waits. Not thread-safe: one client per thread. */
#ifndef MSD_CHAIN_CTL_CLIENT_H
#define MSD_CHAIN_CTL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/medshard.pb-c.h"

struct ctl_client;

/* Connects to "host:port" within timeout_ms. *out owned by the caller
 * (ctl_client_close). 0, MSD_EPARAM (bad address), MSD_ETIMEDOUT, -errno. */
int ctl_client_connect(const char *addr, int timeout_ms, struct ctl_client **out);
void ctl_client_close(struct ctl_client *c);
const char *ctl_client_addr(const struct ctl_client *c);

/* Sends one request; *id receives its frame id. */
int ctl_client_send(struct ctl_client *c, const Medshard__CtlRequest *req, uint64_t *id);

/* Waits up to timeout_ms for the next response. *resp is owned by the
 * caller (medshard__ctl_response__free_unpacked); *payload (may be NULL if
 * not wanted; msd_free) holds the raw bytes after the message. */
int ctl_client_recv(struct ctl_client *c, int timeout_ms, uint64_t *id,
                    Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len);

/* send + recv of the matching response. */
int ctl_client_call(struct ctl_client *c, const Medshard__CtlRequest *req, int timeout_ms,
                    Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len);

/* Submits commands to the cluster reachable at addr (one "host:port" or a
 * comma-separated list of them), following leader
 * hints and retrying (same request ids, so a retry never applies twice)
 * until a leader answers or deadline_ms passes. Commands without a request
 * id get one first. *resp as for ctl_client_call; its code is the
 * submission's, each outcome the command's. *leader (may be NULL, cap
 * bytes) receives the address that answered. */
int ctl_submit(const char *addr, Medshard__Command **cmds, size_t n, int deadline_ms,
               Medshard__CtlResponse **resp, char *leader, size_t cap);

/* ctl_submit with the node authentication tag (ctl_auth.h) under
 * auth_key (CTL_AUTH_BYTES), for senders that hold the cluster secret. */
int ctl_submit_auth(const char *addr, Medshard__Command **cmds, size_t n, int deadline_ms,
                    const uint8_t *auth_key, Medshard__CtlResponse **resp, char *leader,
                    size_t cap);

#endif
