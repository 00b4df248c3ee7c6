/* Shared control-plane operations (ctl_ops.h). */
#include "chain-anchor/ctl_ops.h"

#include <stdio.h>
#include <string.h>

#include "chain-anchor/ctl_client.h"
#include "common/err.h"

#define CONNECT_MS 3000

int ctl_call_any(const char *addrs, Medshard__CtlRequest *req, int timeout_ms,
                 Medshard__CtlResponse **resp, uint8_t **payload, size_t *payload_len)
{
  char one[128];
  int rc = MSD_EUNAVAILABLE;
  req->format_version = 1;
  for (const char *p = addrs; p != NULL && *p != 0;) {
    struct ctl_client *c = NULL;
    size_t len = strcspn(p, ",");
    snprintf(one, sizeof one, "%.*s", (int)(len < 127 ? len : 127), p);
    rc = ctl_client_connect(one, CONNECT_MS, &c);
    if (rc == 0)
      rc = ctl_client_call(c, req, timeout_ms, resp, payload, payload_len);
    ctl_client_close(c);
    if (rc == 0)
      return 0;
    p = p[len] == ',' ? p + len + 1 : NULL;
  }
  return rc;
}

int ctl_fetch_keys(const char *addrs, struct chain_key *keys, size_t cap, size_t *n)
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_call_any(addrs, &req, 10000, &r, NULL, NULL);
  if (rc != 0)
    return rc;
  rc = r->code;
  *n = 0;
  for (size_t i = 0; rc == 0 && i < r->n_nodes && *n < cap; i++) {
    const Medshard__NodeInfo *ni = r->nodes[i];
    if (ni->public_key.len != BLOCK_PUBKEY_BYTES)
      continue;
    keys[*n].node_id = ni->node_id;
    keys[*n].voter = ni->role == MEDSHARD__NODE_ROLE__NODE_ROLE_VOTER;
    memcpy(keys[*n].pk, ni->public_key.data, BLOCK_PUBKEY_BYTES);
    (*n)++;
  }
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc;
}

int ctl_create_bucket(const char *addrs, const char *name, uint32_t k, uint32_t m,
                      uint32_t unit, Medshard__CtlResponse **resp)
{
  Medshard__ErasurePolicy pol = MEDSHARD__ERASURE_POLICY__INIT;
  Medshard__Bucket b = MEDSHARD__BUCKET__INIT;
  Medshard__CreateBucket cb = MEDSHARD__CREATE_BUCKET__INIT;
  Medshard__Command cmd = MEDSHARD__COMMAND__INIT, *cp = &cmd;
  pol.format_version = 1;
  pol.k = k;
  pol.m = m;
  pol.unit = unit;
  b.format_version = 1;
  b.name = (char *)name;
  b.policy = &pol;
  cb.bucket = &b;
  cmd.body_case = MEDSHARD__COMMAND__BODY_CREATE_BUCKET;
  cmd.create_bucket = &cb;
  return ctl_submit(addrs, &cp, 1, 15000, resp, NULL, 0);
}
