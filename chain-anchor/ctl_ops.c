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

/* The control address of node `id` in the cluster map, into out. */
static int node_control(const char *addrs, uint32_t id, char *out, size_t cap)
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_call_any(addrs, &req, 3000, &r, NULL, NULL);
  if (rc != 0)
    return rc;
  rc = ctl_node_address(r, id, out, cap);
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc;
}

int ctl_node_address(const Medshard__CtlResponse *r, uint32_t id, char *out, size_t cap)
{
  for (size_t i = 0; i < r->n_nodes; i++) {
    const char *a = r->nodes[i]->control_address;
    if (r->nodes[i]->node_id == id && a != NULL && a[0] != 0 && strlen(a) < cap) {
      snprintf(out, cap, "%s", a);
      return 0;
    }
  }
  return MSD_ENOTFOUND;
}

void ctl_leader_first(const char *addrs, char *out, size_t cap)
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  char leader[128];
  uint32_t id = 0;
  snprintf(out, cap, "%s", addrs);
  req.op = MEDSHARD__CTL_OP__CTL_OP_HEAD;
  if (ctl_call_any(addrs, &req, 3000, &r, NULL, NULL) == 0) {
    id = r->head != NULL ? r->head->leader_id : 0;
    medshard__ctl_response__free_unpacked(r, NULL);
  }
  if (id != 0 && node_control(addrs, id, leader, sizeof leader) == 0 &&
      strlen(leader) + 1 + strlen(addrs) < cap)
    snprintf(out, cap, "%s,%s", leader, addrs);
}

int ctl_delete_object(const char *addrs, const char *bucket, const char *key,
                      Medshard__CtlResponse **resp)
{
  Medshard__DeleteObject d = MEDSHARD__DELETE_OBJECT__INIT;
  Medshard__Command cmd = MEDSHARD__COMMAND__INIT, *cp = &cmd;
  d.bucket = (char *)bucket;
  d.key = (char *)key;
  cmd.body_case = MEDSHARD__COMMAND__BODY_DELETE_OBJECT;
  cmd.delete_object = &d;
  return ctl_submit(addrs, &cp, 1, 15000, resp, NULL, 0);
}

/* Takes the resume key from the page's last manifest, then drops the
 * deleted ones (only a resume marker can be) so callers never show them. */
static int list_page(Medshard__CtlResponse *r, char next[CTL_KEY_MAX + 1])
{
  next[0] = 0;
  if (r->code != 0)
    return 0;
  if (r->truncated) {
    const char *last = r->n_manifests > 0 ? r->manifests[r->n_manifests - 1]->key : NULL;
    if (last == NULL || last[0] == 0 || strlen(last) > CTL_KEY_MAX)
      return MSD_EDECODE;
    memcpy(next, last, strlen(last) + 1);
  }
  size_t kept = 0;
  for (size_t i = 0; i < r->n_manifests; i++) {
    if (r->manifests[i]->deleted)
      medshard__manifest__free_unpacked(r->manifests[i], NULL);
    else
      r->manifests[kept++] = r->manifests[i];
  }
  r->n_manifests = kept;
  return 0;
}

int ctl_list(const char *addrs, const char *bucket, const char *prefix, const char *start_after,
             uint32_t limit, Medshard__CtlResponse **resp, char next[CTL_KEY_MAX + 1])
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r = NULL;
  req.op = MEDSHARD__CTL_OP__CTL_OP_LIST;
  req.bucket = (char *)bucket;
  req.key = (char *)(prefix != NULL ? prefix : "");
  req.start_after = (char *)(start_after != NULL ? start_after : "");
  req.length = limit;
  int rc = ctl_call_any(addrs, &req, 10000, &r, NULL, NULL);
  if (rc == 0)
    rc = list_page(r, next);
  if (rc != 0) {
    if (r != NULL)
      medshard__ctl_response__free_unpacked(r, NULL);
    return rc;
  }
  *resp = r;
  return 0;
}
