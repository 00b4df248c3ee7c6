/* Node authentication on the control plane. Commands that change the
 * cluster map (NodeJoin, NodeState) are accepted only from senders that
 * hold the cluster secret: they carry an HMAC over the commands under a
 * key derived from the secret (docs/FORMATS.md, "Node authentication").
 * Cosign needs no such tag (its Ed25519 signature speaks for itself) and
 * CutBlock is never accepted from the wire at all. */
#ifndef MSD_CHAIN_CTL_AUTH_H
#define MSD_CHAIN_CTL_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/medshard.pb-c.h"

#define CTL_AUTH_BYTES 32

/* The authentication key: HMAC-SHA256(secret, "medshard node-auth v1"),
 * so the secret itself (also the key of the name tags) is never used
 * for two purposes. 0 or MSD_EPARAM (empty secret). */
int ctl_auth_key(const uint8_t *secret, size_t secret_len, uint8_t key[CTL_AUTH_BYTES]);

/* HMAC-SHA256(key, packed command 1 | packed command 2 | ...). 0 or -ENOMEM. */
int ctl_auth_tag(const uint8_t key[CTL_AUTH_BYTES], Medshard__Command *const *cmds, size_t n,
                 uint8_t tag[CTL_AUTH_BYTES]);

/* Whether tag (len bytes, from the request) is the right one for cmds,
 * compared in constant time. */
bool ctl_auth_ok(const uint8_t key[CTL_AUTH_BYTES], Medshard__Command *const *cmds, size_t n,
                 const uint8_t *tag, size_t len);

/* Whether a command may come only from a node (needs the tag). */
bool ctl_auth_needed(const Medshard__Command *cmd);

#endif
