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

/* Node id's control address from a GET_NODES answer r, into out (cap
 * bytes). 0, or MSD_ENOTFOUND (not in the map, no address, or too long). */
int ctl_node_address(const Medshard__CtlResponse *r, uint32_t id, char *out, size_t cap);

/* Writes addrs into out (cap bytes) with the Raft leader's control address
 * put first (learnt from HEAD and the cluster map), so that reads through
 * ctl_call_any see every write acknowledged so far (unless leadership
 * moves meanwhile): followers apply committed entries a little after the
 * leader. addrs as given if the
 * leader is unknown or the result would not fit. */
void ctl_leader_first(const char *addrs, char *out, size_t cap);

/* Submits DeleteObject(bucket, key). 0 with *resp the caller's (its code,
 * then its single outcome: MSD_ENOTFOUND with a sentence when no live
 * object has that name, else the tombstone's anchor reference), or the
 * error of ctl_submit. */
int ctl_delete_object(const char *addrs, const char *bucket, const char *key,
                      Medshard__CtlResponse **resp);

#define CTL_KEY_MAX 1024 /* longest object key, as the FSM accepts it */

/* One page of CTL_OP_LIST: bucket's objects whose keys start with prefix
 * ("" for all), after start_after ("" for the first page), up to limit
 * (0: the node's maximum, 1000), in key order, from the first node that
 * answers. 0 with *resp the caller's: its code and message (MSD_ENOTFOUND:
 * no such bucket), its manifests (never a deleted one: the resume marker a
 * node may end a page with is dropped here), and in next (CTL_KEY_MAX + 1
 * bytes, the caller's) the start_after of the following page, "" when the
 * listing is complete. Or a transport error, or MSD_EDECODE for a page
 * that claims more follows but names no key to resume from. */
int ctl_list(const char *addrs, const char *bucket, const char *prefix, const char *start_after,
             uint32_t limit, Medshard__CtlResponse **resp, char next[CTL_KEY_MAX + 1]);

#endif
