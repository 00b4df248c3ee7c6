/* Control-plane operations shared by the CLI, the benchmarks and (later)
 * the gateways, over the blocking client (ctl_client.h). Each takes a
 * comma-separated list of node control addresses and tries them in turn. */
#ifndef MSD_CHAIN_CTL_OPS_H
#define MSD_CHAIN_CTL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "chain-anchor/proof.h"
#include "proto/medshard.pb-c.h"

/* One request to the first address that answers. 0 (then *resp is the
 * caller's, whatever its code; *payload as for ctl_client_call) or the
 * last transport error (MSD_EUNAVAILABLE for an empty list). */
int ctl_call_any(const char *addrs, Medshard__CtlRequest *req, int timeout_ms,
                 Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len);

/* The cluster map's Ed25519 keys, as a trusted keys file lists them: up to
 * cap into keys, *n of them. 0, a transport error, or the response's code. */
int ctl_fetch_keys(const char *addrs, struct chain_key *keys, size_t cap, size_t *n);

/* Submits CreateBucket(name, k+m, unit). 0 with *resp the caller's (its
 * code and its single outcome say what became of it), or the error of
 * ctl_submit. */
int ctl_create_bucket(const char *addrs, const char *name, uint32_t k, uint32_t m,
                      uint32_t unit, Medshard__CtlResponse **resp);

#endif
