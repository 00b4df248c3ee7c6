/* CUnit runner for the chain FSM (chain-anchor/fsm.h) and the offline proof
 * verifier (proof.h): hand-built command batches applied at increasing Raft
 * indexes, each checked against what the state must then hold. The libraft
 * suites (test_fsm_raft.c) run from here too. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "chain-anchor/chainfile.h"
#include "chain-anchor/merkle.h"
#include "chain-anchor/proof.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "fsm_util.h"

static void test_bucket_create_and_duplicate(void)
{
  struct env e;
  env_setup(&e, 1, false);
  struct cmd c;
  uint8_t rid[16], *buf;
  size_t len;
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "scans", K, M));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_bucket(e.f, "scans", &buf, &len), 0);
  Medshard__Bucket *b = medshard__bucket__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT_EQUAL(b->policy->k, K);
  CU_ASSERT_EQUAL(b->created_ms, e.now); /* the batch's leader time */
  medshard__bucket__free_unpacked(b, NULL);

  /* A second create (another policy) is refused and changes nothing. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "scans", 4, 2));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_bucket(e.f, "scans", &buf, &len), 0);
  b = medshard__bucket__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_EQUAL(b->policy->k, K);
  CU_ASSERT_EQUAL(b->policy->m, M);
  medshard__bucket__free_unpacked(b, NULL);

  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "Bad_Name", K, M));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_bucket(&c, rid, "wide", 40, 10));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEC_PARAMS);
  CU_ASSERT_EQUAL(chain_fsm_bucket(e.f, "wide", &buf, &len), MSD_ENOTFOUND);
  env_close(&e);
}

static void test_node_join(void)
{
  struct env e;
  env_setup(&e, 2, false);
  struct cmd c;
  uint8_t rid[16], *buf;
  size_t len;
  struct chain_head h0, h1;
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h0);
  CU_ASSERT_EQUAL(h0.voters, 1);
  CU_ASSERT_EQUAL(h0.epoch, 1);

  /* Same id, another key: refused, the member keeps its key. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[1], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_node(e.f, 1, &buf, &len), 0);
  Medshard__NodeInfo *ni = medshard__node_info__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_FATAL(ni != NULL && ni->public_key.len == BLOCK_PUBKEY_BYTES);
  CU_ASSERT_EQUAL(memcmp(ni->public_key.data, e.pk[0], BLOCK_PUBKEY_BYTES), 0);
  CU_ASSERT_EQUAL(ni->status, MEDSHARD__NODE_STATUS__NODE_STATUS_UP);
  medshard__node_info__free_unpacked(ni, NULL);

  /* Same id, same key: a no-op that succeeds (a retried join). */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 1, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.epoch, h0.epoch);
  CU_ASSERT_EQUAL(h1.voters, 1);

  /* Another id with a member's key would let one key count twice. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 7, e.pk[0], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  CU_ASSERT_EQUAL(chain_fsm_node(e.f, 7, &buf, &len), MSD_ENOTFOUND);

  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 0, e.pk[2], true));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_join(&c, rid, 2, e.pk[1], false));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.voters, 1); /* a standby is no voter */
  CU_ASSERT_EQUAL(h1.epoch, 2);
  /* NodeState: the status changes and the epoch moves; unknown nodes and
   * statuses are refused. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_state(&c, rid, 2, MEDSHARD__NODE_STATUS__NODE_STATUS_DRAINING));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.epoch, 3);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_node(e.f, 2, &buf, &len), 0);
  ni = medshard__node_info__unpack(NULL, len, buf);
  msd_free(buf);
  CU_ASSERT_FATAL(ni != NULL);
  CU_ASSERT_EQUAL(ni->status, MEDSHARD__NODE_STATUS__NODE_STATUS_DRAINING);
  medshard__node_info__free_unpacked(ni, NULL);
  new_rid(&e, rid);
  env_apply1(&e, cmd_state(&c, rid, 5, MEDSHARD__NODE_STATUS__NODE_STATUS_DOWN));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  env_apply1(&e, cmd_state(&c, rid, 2, (Medshard__NodeStatus)9));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  chain_fsm_head(e.f, &h1);
  CU_ASSERT_EQUAL(h1.epoch, 3);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_nodes(e.f, &buf, &len), 0);
  CU_ASSERT(len > 8);
  uint32_t first = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
  CU_ASSERT(first + 4 < len);
  msd_free(buf);
  env_close(&e);
}

static void test_put_versions_and_retry(void)
{
  struct env e;
  env_setup(&e, 3, true);
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16], oid1[16];
  struct chain_head h;

  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "nosuch", "a", e.nodes));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 0);

  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "ct/1.dcm", e.nodes));
  memcpy(oid1, c->oid, 16);
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->version, 1);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 0);
  CU_ASSERT_EQUAL(o->anchor->leaf_hash.len, MERKLE_HASH);
  Medshard__Manifest *m = manifest_of(e.f, "scans", "ct/1.dcm");
  CU_ASSERT_FATAL(m != NULL && m->anchor != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  CU_ASSERT_EQUAL(m->created_ms, e.now);
  CU_ASSERT_EQUAL(memcmp(m->anchor->leaf_hash.data, o->anchor->leaf_hash.data, MERKLE_HASH), 0);
  medshard__manifest__free_unpacked(m, NULL);
  m = manifest_by_id(e.f, oid1);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  CU_ASSERT_STRING_EQUAL(m->key, "ct/1.dcm");
  medshard__manifest__free_unpacked(m, NULL);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);

  /* The outcome's leaf hash is the hash of the leaf in the chain file. */
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_PUT], 1);
  CU_ASSERT_EQUAL(memcmp(s.last.object_id, oid1, 16), 0);
  CU_ASSERT_EQUAL(s.last.version, 1);
  CU_ASSERT_EQUAL(s.last.nshards, NSHARDS);

  /* A retry in a later entry (same request id, even with another body) is a
   * no-op that keeps the first outcome. */
  uint8_t first_rid[16];
  memcpy(first_rid, rid, 16);
  env_apply1(&e, cmd_put(c, first_rid, &e.rng, "scans", "ct/1.dcm", e.nodes));
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);
  Medshard__Outcome *o2 = outcome_of(e.f, first_rid);
  CU_ASSERT_FATAL(o2 != NULL && o2->anchor != NULL);
  CU_ASSERT_EQUAL(o2->anchor->leaf_index, o->anchor->leaf_index);
  CU_ASSERT_EQUAL(o2->version, 1);
  medshard__outcome__free_unpacked(o2, NULL);
  medshard__outcome__free_unpacked(o, NULL);

  /* The same id twice in one batch applies once too. */
  struct cmd *c2 = malloc(sizeof *c2);
  Medshard__Command *pair[2];
  new_rid(&e, rid);
  pair[0] = cmd_put(c, rid, &e.rng, "scans", "ct/2.dcm", e.nodes);
  pair[1] = cmd_put(c2, rid, &e.rng, "scans", "ct/2.dcm", e.nodes);
  CU_ASSERT_EQUAL(env_apply(&e, pair, 2), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);

  /* A second put of a key is version 2; the first version stays readable
   * by id. */
  uint8_t oid2[16];
  CU_ASSERT_EQUAL(env_put(&e, "ct/1.dcm", oid2), 0);
  m = manifest_of(e.f, "scans", "ct/1.dcm");
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 2);
  CU_ASSERT_EQUAL(memcmp(m->object_id.data, oid2, 16), 0);
  medshard__manifest__free_unpacked(m, NULL);
  m = manifest_by_id(e.f, oid1);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 1);
  medshard__manifest__free_unpacked(m, NULL);

  /* Reusing an object id is refused. */
  new_rid(&e, rid);
  cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", e.nodes);
  memcpy(c->oid, oid1, 16);
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EEXIST);
  /* A shard on a node outside the cluster map, a wrong shard count. */
  uint32_t stranger[NSHARDS] = {1, 2, 9};
  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", stranger));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  cmd_put(c, rid, &e.rng, "scans", "ct/3.dcm", e.nodes);
  c->sm.n_shards = 2;
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 3);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  free(c2);
  free(c);
  env_close(&e);
}

/* S3 keys reach 1024 bytes but LMDB keys stop at 511: long names must
 * neither poison the FSM nor collide. */
static void test_long_keys(void)
{
  struct env e;
  env_setup(&e, 4, true);
  static const size_t lens[] = {1, 400, 503, 504, 505, 506, 600, 1000, 1024};
  enum { NLENS = sizeof lens / sizeof lens[0] };
  char key[2][1025];
  uint8_t oid[2 * NLENS][16];
  for (size_t i = 0; i < NLENS; i++) {
    for (int v = 0; v < 2; v++) {
      /* Two keys per length that differ only in their last byte. */
      memset(key[v], 'k', lens[i]);
      key[v][lens[i]] = '\0';
      key[v][lens[i] - 1] = (char)('0' + v);
      CU_ASSERT_EQUAL(env_put(&e, key[v], oid[2 * i + (size_t)v]), 0);
    }
  }
  for (size_t i = 0; i < NLENS; i++) {
    for (int v = 0; v < 2; v++) {
      memset(key[v], 'k', lens[i]);
      key[v][lens[i]] = '\0';
      key[v][lens[i] - 1] = (char)('0' + v);
      Medshard__Manifest *m = manifest_of(e.f, "scans", key[v]);
      CU_ASSERT_FATAL(m != NULL);
      CU_ASSERT_EQUAL(m->version, 1);
      CU_ASSERT_EQUAL(memcmp(m->object_id.data, oid[2 * i + (size_t)v], 16), 0);
      CU_ASSERT_STRING_EQUAL(m->key, key[v]);
      medshard__manifest__free_unpacked(m, NULL);
    }
  }
  struct chain_head h;
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2 * NLENS);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  /* Still writable (not poisoned), deletable by its long name. */
  uint8_t rid[16];
  struct cmd c;
  memset(key[0], 'k', 1024);
  key[0][1024] = '\0';
  key[0][1023] = '0';
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", key[0]));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), 0);
  CU_ASSERT_PTR_NULL(manifest_of(e.f, "scans", key[0]));
  key[0][1023] = '1';
  Medshard__Manifest *m = manifest_of(e.f, "scans", key[0]);
  CU_ASSERT_PTR_NOT_NULL(m);
  medshard__manifest__free_unpacked(m, NULL);
  env_close(&e);
}

static void test_delete(void)
{
  struct env e;
  env_setup(&e, 5, true);
  uint8_t oid[16], rid[16];
  struct cmd c;
  struct chain_head h;
  CU_ASSERT_EQUAL(env_put(&e, "mr/7", oid), 0);
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "mr/7"));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 1);
  medshard__outcome__free_unpacked(o, NULL);
  uint8_t *buf;
  size_t len;
  CU_ASSERT_EQUAL(chain_fsm_manifest(e.f, "scans", "mr/7", &buf, &len), MSD_ENOTFOUND);
  Medshard__Manifest *m = manifest_by_id(e.f, oid);
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT(m->deleted);
  medshard__manifest__free_unpacked(m, NULL);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_DELETE], 1);
  CU_ASSERT_EQUAL(s.last.kind, ANCHOR_DELETE);
  CU_ASSERT_EQUAL(memcmp(s.last.object_id, oid, 16), 0);
  CU_ASSERT_EQUAL(s.last.nshards, 0);

  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "mr/7"));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "never"));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 2);
  /* The tombstone keeps the version counter. */
  CU_ASSERT_EQUAL(env_put(&e, "mr/7", NULL), 0);
  m = manifest_of(e.f, "scans", "mr/7");
  CU_ASSERT_FATAL(m != NULL);
  CU_ASSERT_EQUAL(m->version, 2);
  CU_ASSERT(!m->deleted);
  medshard__manifest__free_unpacked(m, NULL);
  env_close(&e);
}

/* One LIST page decoded: up to cap manifests into out (the caller frees
 * them); the code chain_fsm_list returned. */
static int list_page(struct chain_fsm *f, const char *bucket, const char *prefix,
                     const char *after, uint32_t limit, size_t max_bytes,
                     Medshard__Manifest **out, size_t cap, size_t *n, bool *truncated)
{
  uint8_t *buf;
  size_t len;
  *n = 0;
  int rc = chain_fsm_list(f, bucket, prefix, after, limit, max_bytes, &buf, &len, truncated);
  if (rc != 0)
    return rc;
  for (size_t off = 0; off + 4 <= len && *n < cap;) {
    size_t l = (size_t)buf[off] << 24 | (size_t)buf[off + 1] << 16 | (size_t)buf[off + 2] << 8 |
               buf[off + 3];
    CU_ASSERT_FATAL(off + 4 + l <= len);
    out[*n] = medshard__manifest__unpack(NULL, l, buf + off + 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out[*n]);
    (*n)++;
    off += 4 + l;
  }
  msd_free(buf);
  return 0;
}

/* The keys of a page, space-separated ("-" marks a resume marker), and
 * frees its manifests. */
static const char *page_keys(Medshard__Manifest **m, size_t n)
{
  static char keys[4096];
  size_t used = 0;
  keys[0] = 0;
  for (size_t i = 0; i < n; i++) {
    used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s%s", i ? " " : "",
                             m[i]->deleted ? "-" : "", strlen(m[i]->key) < 64 ? m[i]->key : "long");
    medshard__manifest__free_unpacked(m[i], NULL);
  }
  return keys;
}

static void test_list(void)
{
  struct env e;
  env_setup(&e, 12, true);
  static const char *const keys[] = {"mr/2", "ct/1", "ct/3", "ct/2", "x", "ct/10"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    CU_ASSERT_EQUAL_FATAL(env_put(&e, keys[i], NULL), 0);
  CU_ASSERT_EQUAL(env_put(&e, "ct/3", NULL), 0); /* version 2 */
  Medshard__Manifest *m[16];
  size_t n;
  bool more;
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, NULL, 0, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_FALSE(more);
  CU_ASSERT_FATAL(n == 6 && m[3]->version == 2 && m[0]->shard_map->n_shards == NSHARDS);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/1 ct/10 ct/2 ct/3 mr/2 x");
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct/", NULL, 2, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_TRUE(more);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/1 ct/10");
  /* A full page whose next name is past the prefix is the last one. */
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct/", "ct/10", 2, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_FALSE(more);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/2 ct/3");
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, "ct/3", 1, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_TRUE(more);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "mr/2");
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, "mr/2", 1, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_FALSE(more);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "x");
  /* start_after need not exist, nor lie inside the prefix. */
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct/", "ct/15", 0, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/2 ct/3");
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct/", "a", 0, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/1 ct/10 ct/2 ct/3");
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct/", "d", 0, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_EQUAL(n, 0);
  /* Deleted objects are skipped. */
  uint8_t rid[16];
  struct cmd c;
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(&c, rid, "scans", "ct/10"));
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "ct", NULL, 0, 1 << 16, m, 16, &n, &more), 0);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "ct/1 ct/2 ct/3");
  /* A page stops before it outgrows max_bytes; one manifest must fit. */
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, NULL, 0, 400, m, 16, &n, &more), 0);
  CU_ASSERT_TRUE(n >= 1 && n < 5 && more);
  page_keys(m, n);
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, NULL, 0, 40, m, 16, &n, &more), MSD_ESHORT);
  /* Unknown buckets and names out of range. */
  CU_ASSERT_EQUAL(list_page(e.f, "nosuch", NULL, NULL, 0, 1 << 16, m, 16, &n, &more),
                  MSD_ENOTFOUND);
  CU_ASSERT_EQUAL(list_page(e.f, "", NULL, NULL, 0, 1 << 16, m, 16, &n, &more), MSD_EPARAM);
  char longkey[1100];
  memset(longkey, 'k', 1025);
  longkey[1025] = 0;
  CU_ASSERT_EQUAL(list_page(e.f, "scans", longkey, NULL, 0, 1 << 16, m, 16, &n, &more),
                  MSD_EPARAM);
  CU_ASSERT_EQUAL(list_page(e.f, "scans", NULL, longkey, 0, 1 << 16, m, 16, &n, &more),
                  MSD_EPARAM);
  env_close(&e);
}

/* Keys too long for LMDB are stored hashed: a prefix longer than the part
 * kept whole is matched against the manifest's own key. */
static void test_list_long_keys(void)
{
  struct env e;
  env_setup(&e, 13, true);
  char key[3][700], prefix[700];
  memset(key, 'k', sizeof key);
  key[0][490] = 0;                  /* kept whole: 6 + 490 < 511 */
  key[1][599] = 'a', key[1][600] = 0; /* hashed */
  key[2][599] = 'b', key[2][600] = 0;
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL_FATAL(env_put(&e, key[i], NULL), 0);
  Medshard__Manifest *m[4];
  size_t n;
  bool more;
  memset(prefix, 'k', 599);
  prefix[599] = 0;
  CU_ASSERT_EQUAL(list_page(e.f, "scans", prefix, NULL, 0, 1 << 16, m, 4, &n, &more), 0);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "long long");
  prefix[599] = 'b', prefix[600] = 0;
  CU_ASSERT_EQUAL(list_page(e.f, "scans", prefix, NULL, 0, 1 << 16, m, 4, &n, &more), 0);
  CU_ASSERT_FATAL(n == 1 && strcmp(m[0]->key, key[2]) == 0);
  page_keys(m, n);
  prefix[480] = 0;
  CU_ASSERT_EQUAL(list_page(e.f, "scans", prefix, NULL, 0, 1 << 16, m, 4, &n, &more), 0);
  CU_ASSERT_EQUAL(n, 3);
  /* Paging from a hashed key resumes after it. */
  CU_ASSERT_EQUAL(list_page(e.f, "scans", prefix, m[1]->key, 0, 1 << 16, m + 3, 1, &n, &more), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_STRING_EQUAL(m[3]->key, m[2]->key);
  page_keys(m, 4);
  env_close(&e);
}

/* A run of tombstones longer than the scan limit: each page stays bounded
 * and ends with a resume marker, and paging still reaches the live key. */
static void test_list_tombstones(void)
{
  struct env e;
  env_setup(&e, 14, true);
  enum { N = CHAIN_LIST_SCAN_MAX + 5, BATCH = 512 };
  struct cmd *c = calloc(BATCH, sizeof *c);
  Medshard__Command *cs[BATCH];
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  for (int del = 0; del < 2; del++) {
    for (int i = 0; i < N;) {
      size_t b = 0;
      for (; b < BATCH && i < N; b++, i++) {
        char key[32];
        snprintf(key, sizeof key, "old/%05d", i);
        cs[b] = del ? cmd_delete(&c[b], NULL, "scans", key) : put_cmd_for(&c[b], NULL, &e, key);
      }
      CU_ASSERT_EQUAL_FATAL(env_apply(&e, cs, b), 0);
    }
  }
  free(c);
  CU_ASSERT_EQUAL_FATAL(env_put(&e, "old/zz", NULL), 0);
  Medshard__Manifest *m[4];
  size_t n;
  bool more;
  char after[32];
  snprintf(after, sizeof after, "old/%05d", CHAIN_LIST_SCAN_MAX - 1);
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "old/", NULL, 0, 1 << 16, m, 4, &n, &more), 0);
  CU_ASSERT_TRUE(more);
  CU_ASSERT_FATAL(n == 1 && m[0]->deleted && m[0]->shard_map == NULL);
  CU_ASSERT_STRING_EQUAL(m[0]->key, after);
  page_keys(m, n);
  CU_ASSERT_EQUAL(list_page(e.f, "scans", "old/", after, 0, 1 << 16, m, 4, &n, &more), 0);
  CU_ASSERT_FALSE(more);
  CU_ASSERT_STRING_EQUAL(page_keys(m, n), "old/zz");
  env_close(&e);
}

static void test_update_shards(void)
{
  struct env e;
  env_setup(&e, 6, true);
  uint8_t oid[16], rid[16], bad[16] = {0};
  struct cmd *c = malloc(sizeof *c);
  struct chain_head h;
  new_rid(&e, rid);
  env_apply1(&e, cmd_put(c, rid, &e.rng, "scans", "us/1", e.nodes));
  memcpy(oid, c->oid, 16);
  uint8_t dig1[16];
  memcpy(dig1, c->dig[1], 16);

  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 3, bad));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 9, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 5, 3, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, bad, 1, 3, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  cmd_move(c, rid, oid, 1, 3, dig1);
  c->upd.n_shards = 0;
  env_apply1(&e, &c->c);
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, 1);

  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 3, dig1));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL && o->code == 0 && o->anchor != NULL);
  CU_ASSERT_EQUAL(o->anchor->leaf_index, 1);
  Medshard__Manifest *m = manifest_by_id(e.f, oid);
  CU_ASSERT_FATAL(m != NULL && m->anchor != NULL);
  CU_ASSERT_EQUAL(m->shard_map->shards[1]->node_id, 3);
  CU_ASSERT_EQUAL(m->shard_map->shards[0]->node_id, 1);
  CU_ASSERT_EQUAL(m->anchor->leaf_index, 1); /* the manifest points at the MOVE leaf */
  CU_ASSERT_EQUAL(memcmp(m->anchor->leaf_hash.data, o->anchor->leaf_hash.data, MERKLE_HASH), 0);
  medshard__manifest__free_unpacked(m, NULL);
  medshard__outcome__free_unpacked(o, NULL);
  struct scan s;
  scan_chain(e.f, &s);
  CU_ASSERT_EQUAL(s.kind[ANCHOR_MOVE], 1);
  CU_ASSERT_EQUAL(s.last.kind, ANCHOR_MOVE);
  CU_ASSERT_EQUAL(s.last.shard[1].node_id, 3);
  CU_ASSERT_EQUAL(memcmp(s.last.shard[1].digest, dig1, 16), 0);
  /* Moves of a deleted object are refused. */
  new_rid(&e, rid);
  env_apply1(&e, cmd_delete(c, rid, "scans", "us/1"));
  new_rid(&e, rid);
  env_apply1(&e, cmd_move(c, rid, oid, 1, 2, dig1));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EPARAM);
  free(c);
  env_close(&e);
}

/* Cutting blocks: the header the FSM records, stale cuts. */
static void test_cut_blocks(void)
{
  struct env e;
  env_setup(&e, 7, true);
  struct chain_head h;
  struct block_header bh;
  uint64_t heights[8];
  uint8_t hashes[8][BLOCK_HASH];
  CU_ASSERT_EQUAL(chain_fsm_next_block(e.f, &bh), MSD_ESTATE);
  CU_ASSERT_EQUAL(env_put(&e, "b/1", NULL), 0);
  CU_ASSERT_EQUAL(env_put(&e, "b/2", NULL), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_next_block(e.f, &bh), 0);
  CU_ASSERT_EQUAL(bh.height, 1);
  CU_ASSERT_EQUAL(bh.size_before, 0);
  CU_ASSERT_EQUAL(bh.size_after, 2);

  struct cmd c;
  uint8_t rid[16];
  new_rid(&e, rid);
  env_apply1(&e, cmd_cut(&c, rid, &bh, 3, 4242));
  Medshard__Outcome *o = outcome_of(e.f, rid);
  CU_ASSERT_FATAL(o != NULL);
  CU_ASSERT_EQUAL(o->code, 0);
  CU_ASSERT_EQUAL(o->height, 1);
  medshard__outcome__free_unpacked(o, NULL);
  uint64_t cut_index = e.index;
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.height, 1);
  CU_ASSERT_EQUAL(h.last_size, 2);
  CU_ASSERT_EQUAL(h.sealed, 0);
  CU_ASSERT_EQUAL(chain_fsm_next_block(e.f, &bh), MSD_ESTATE);
  Medshard__BlockRecord *r = block_of(e.f, 1);
  CU_ASSERT_FATAL(r != NULL);
  struct block_header got;
  CU_ASSERT_EQUAL_FATAL(block_decode(r->header.data, r->header.len, &got), 0);
  CU_ASSERT_EQUAL(got.raft_index, cut_index);
  CU_ASSERT_EQUAL(got.raft_term, 3);
  CU_ASSERT_EQUAL(got.timestamp_ms, 4242);
  CU_ASSERT_EQUAL(r->voters, 3);
  uint8_t hash[BLOCK_HASH];
  block_hash(&got, hash);
  CU_ASSERT_EQUAL(memcmp(hash, r->hash.data, BLOCK_HASH), 0);
  CU_ASSERT_EQUAL(memcmp(hash, h.head, BLOCK_HASH), 0);
  medshard__block_record__free_unpacked(r, NULL);

  /* A second CutBlock for height 1 is stale, not divergence. */
  struct block_header old = got;
  new_rid(&e, rid);
  env_apply1(&e, cmd_cut(&c, rid, &old, 3, 4243));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ESTALE);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.alarm[0], '\0');
  CU_ASSERT_EQUAL(h.height, 1);

  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 1);
  CU_ASSERT_EQUAL(memcmp(hashes[0], hash, BLOCK_HASH), 0);
  env_close(&e);
}

/* Cosignatures: who may sign, seals, and what each node still has to sign. */
static void test_cosign_and_seal(void)
{
  struct env e;
  env_setup(&e, 17, true);
  struct chain_head h;
  uint64_t heights[8];
  uint8_t hashes[8][BLOCK_HASH], hash[BLOCK_HASH];
  struct cmd c;
  uint8_t rid[16];
  CU_ASSERT_EQUAL(env_put(&e, "b/1", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  chain_fsm_head(e.f, &h);
  memcpy(hash, h.head, BLOCK_HASH);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 1), 0);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 1, heights, hashes, 8), 0);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 1), MSD_EEXIST);
  /* Forged: node 2's id with node 3's key; a stranger; an unknown block. */
  uint8_t sig[BLOCK_SIG_BYTES];
  block_cosign(hash, e.sk[2], sig);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 1, 2, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EBADSIG);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 1, 9, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  new_rid(&e, rid);
  env_apply1(&e, cmd_cosign(&c, rid, 5, 3, sig));
  CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_ENOTFOUND);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 1, 1), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 1);
  Medshard__BlockRecord *r = block_of(e.f, 1);
  CU_ASSERT_FATAL(r != NULL);
  CU_ASSERT(r->sealed);
  CU_ASSERT_EQUAL(r->n_cosigs, 2);
  medshard__block_record__free_unpacked(r, NULL);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 8), 0); /* sealed */

  /* Blocks 2 and 3; 3 sealed before 2: sealed only counts consecutive. */
  CU_ASSERT_EQUAL(env_put(&e, "b/3", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  CU_ASSERT_EQUAL(env_put(&e, "b/4", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 2), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 0, 3), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 1, 3), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.height, 3);
  CU_ASSERT_EQUAL(h.sealed, 1);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 1, heights, hashes, 8), 0);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 2);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 8), 1);
  CU_ASSERT_EQUAL(heights[0], 2);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 3, heights, hashes, 0), 0);
  CU_ASSERT_EQUAL(env_cosign(&e, 2, 2), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.sealed, 3);
  CU_ASSERT_EQUAL(chain_fsm_unsigned(e.f, 2, heights, hashes, 8), 0);
  struct chain_verify_report rep;
  CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(e.f), &rep), 0);
  CU_ASSERT_EQUAL(rep.blocks, 3);
  CU_ASSERT_EQUAL(rep.leaves, 3);
  CU_ASSERT_EQUAL(memcmp(rep.head, h.head, BLOCK_HASH), 0);
  CU_ASSERT_EQUAL(memcmp(rep.root, h.root, MERKLE_HASH), 0);
  env_close(&e);
}

/* A CutBlock whose root (or previous hash) differs from the node's own
 * raises the alarm, durably; the entry still counts as applied. */
static void test_divergence_alarm(void)
{
  for (int what = 0; what < 2; what++) {
    struct env e;
    env_setup(&e, 8, true);
    CU_ASSERT_EQUAL(env_put(&e, "d/1", NULL), 0);
    struct block_header bh;
    CU_ASSERT_EQUAL_FATAL(chain_fsm_next_block(e.f, &bh), 0);
    if (what == 0)
      bh.root[5] ^= 1;
    else
      bh.prev_hash[0] ^= 1;
    struct cmd c;
    uint8_t rid[16];
    new_rid(&e, rid);
    env_apply1(&e, cmd_cut(&c, rid, &bh, 1, 1));
    CU_ASSERT_EQUAL(outcome_code(e.f, rid), MSD_EDIVERGED);
    struct chain_head h;
    chain_fsm_head(e.f, &h);
    CU_ASSERT_NOT_EQUAL(h.alarm[0], '\0');
    CU_ASSERT_EQUAL(h.height, 0);
    CU_ASSERT_EQUAL(h.applied, e.index);
    CU_ASSERT_PTR_NOT_NULL(strstr(h.alarm, "block 1"));
    chain_fsm_close(e.f);
    CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
    struct chain_head h2;
    chain_fsm_head(e.f, &h2);
    CU_ASSERT_STRING_EQUAL(h2.alarm, h.alarm);
    env_close(&e);
  }
}

/* Replays below the applied index and malformed entries. */
static void test_replay_and_malformed(void)
{
  struct env a, b;
  env_setup(&a, 9, true);
  env_setup(&b, 9, false);
  memcpy(b.pk, a.pk, sizeof a.pk);
  memcpy(b.sk, a.sk, sizeof a.sk);
  /* b gets the same history as a: the same seed gives the same rids. */
  b.rng = test_rng_for(9);
  {
    struct cmd c[4];
    Medshard__Command *cs[4];
    uint8_t rid[4][16];
    for (unsigned i = 0; i < 4; i++)
      new_rid(&b, rid[i]);
    for (unsigned i = 0; i < 3; i++)
      cs[i] = cmd_join(&c[i], rid[i], i + 1, b.pk[i], true);
    cs[3] = cmd_bucket(&c[3], rid[3], "scans", K, M);
    CU_ASSERT_EQUAL_FATAL(env_apply(&b, cs, 4), 0);
  }
  uint8_t da[32], db[32];
  CU_ASSERT_EQUAL(env_put(&a, "r/1", NULL), 0);
  CU_ASSERT_EQUAL(env_put(&b, "r/1", NULL), 0);
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);

  /* Re-applying an entry at its index (a replay after restart) changes
   * nothing; a different entry there is "replay and malformed entries"'
   * neighbour test. */
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16];
  test_rng_fill(&a.rng, rid, 16);
  Medshard__Command *cp = cmd_put(c, rid, &a.rng, "scans", "r/2", a.nodes);
  size_t len;
  uint8_t *buf = pack_batch(&cp, 1, 5, &len, false);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, ++a.index, buf, len), 0);
  CU_ASSERT_EQUAL(chain_fsm_apply(b.f, ++b.index, buf, len), 0);
  digest_of(a.f, da);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, a.index, buf, len), 0);
  free(buf);
  uint8_t d2[32];
  digest_of(a.f, d2);
  CU_ASSERT_EQUAL(memcmp(da, d2, 32), 0);
  CU_ASSERT_EQUAL(outcome_code(a.f, rid), 0);

  /* An over-long request id is refused rather than applied unrecorded. */
  struct chain_head ha, hb;
  uint8_t long_id[65];
  memset(long_id, 7, sizeof long_id);
  cmd_put(c, NULL, &a.rng, "scans", "r/3", a.nodes);
  c->c.request_id = (ProtobufCBinaryData){sizeof long_id, long_id};
  env_apply1(&a, &c->c);
  chain_fsm_head(a.f, &ha);
  CU_ASSERT_EQUAL(ha.leaves, 2);
  CU_ASSERT_EQUAL(ha.alarm[0], 0);
  /* Garbage at the next index counts as applied, changes no data and
   * raises the alarm (the node's log is damaged); a batch of another
   * format version does the same, keeping the first alarm. */
  uint8_t junk[100];
  test_rng_fill(&a.rng, junk, sizeof junk);
  junk[0] = 0xff; /* not a valid protobuf tag */
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, ++a.index, junk, sizeof junk), 0);
  CU_ASSERT_EQUAL(env_apply(&b, NULL, 0), 0);
  chain_fsm_head(a.f, &ha);
  chain_fsm_head(b.f, &hb);
  CU_ASSERT_EQUAL(ha.applied, a.index);
  CU_ASSERT_EQUAL(ha.leaves, hb.leaves);
  CU_ASSERT_EQUAL(memcmp(ha.head, hb.head, sizeof ha.head), 0);
  CU_ASSERT_EQUAL(memcmp(ha.root, hb.root, sizeof ha.root), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(ha.alarm, "does not decode"));
  CU_ASSERT_EQUAL(hb.alarm[0], 0);
  Medshard__CommandBatch vb = MEDSHARD__COMMAND_BATCH__INIT;
  vb.format_version = 2;
  vb.n_commands = 1;
  vb.commands = &cp;
  len = medshard__command_batch__get_packed_size(&vb);
  buf = malloc(len);
  medshard__command_batch__pack(&vb, buf);
  CU_ASSERT_EQUAL(chain_fsm_apply(b.f, ++b.index, buf, len), 0);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, ++a.index, buf, len), 0);
  free(buf);
  chain_fsm_head(a.f, &ha);
  chain_fsm_head(b.f, &hb);
  CU_ASSERT_EQUAL(ha.leaves, hb.leaves);
  CU_ASSERT_PTR_NOT_NULL(strstr(ha.alarm, "does not decode"));
  CU_ASSERT_PTR_NOT_NULL(strstr(hb.alarm, "version 2"));
  CU_ASSERT_EQUAL(outcome_code(a.f, rid), 0); /* r/2's, not the skipped batch's */
  free(c);
  env_close(&a);
  env_close(&b);
}

/* A replayed entry that differs from the one applied at its index (a
 * damaged log, or an entry libraft applied without a majority and later
 * replaced) changes no data but raises the alarm; the same entry does
 * nothing. */
static void test_replay_mismatch_alarm(void)
{
  struct env e;
  env_setup(&e, 12, true);
  CU_ASSERT_EQUAL_FATAL(env_put(&e, "r/1", NULL), 0);
  uint64_t at = e.index;
  CU_ASSERT_EQUAL_FATAL(env_put(&e, "r/2", NULL), 0);
  struct chain_head h0, h;
  chain_fsm_head(e.f, &h0);
  struct cmd *c = malloc(sizeof *c);
  uint8_t rid[16];
  test_rng_fill(&e.rng, rid, 16);
  Medshard__Command *cp = cmd_put(c, rid, &e.rng, "scans", "r/3", e.nodes);
  size_t len;
  uint8_t *buf = pack_batch(&cp, 1, 5, &len, false);
  CU_ASSERT_EQUAL(chain_fsm_apply(e.f, at, buf, len), 0);
  free(buf);
  free(c);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_EQUAL(h.leaves, h0.leaves);
  CU_ASSERT_EQUAL(h.applied, h0.applied);
  CU_ASSERT_EQUAL(memcmp(h.root, h0.root, sizeof h.root), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(h.alarm, "differs from the entry this node applied"));
  /* The alarm survives a reopen (it is in the state, not in memory). */
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h);
  CU_ASSERT_PTR_NOT_NULL(strstr(h.alarm, "differs"));
  env_close(&e);
}

/* The state after a fixed history with a few sealed blocks: for the
 * proof, reopen and snapshot tests. */
static void build_history(struct env *e, int puts)
{
  for (int i = 0; i < puts; i++) {
    char key[32];
    snprintf(key, sizeof key, "h/%d", i % 5);
    CU_ASSERT_EQUAL(env_put(e, key, NULL), 0);
    if (i % 4 == 3) {
      CU_ASSERT_EQUAL(env_cut(e), 0);
      struct chain_head h;
      chain_fsm_head(e->f, &h);
      CU_ASSERT_EQUAL(env_cosign(e, 0, h.height), 0);
      CU_ASSERT_EQUAL(env_cosign(e, 2, h.height), 0);
    }
  }
}

/* tmpl with every "%s" replaced by hex (no printf: the format is data). */
static void subst_key(const char *tmpl, const char *hex, char *out, size_t cap)
{
  size_t o = 0;
  for (const char *p = tmpl; *p != '\0' && o + 1 < cap; p++) {
    if (p[0] == '%' && p[1] == 's') {
      o += (size_t)snprintf(out + o, cap - o, "%s", hex);
      p++;
    } else {
      out[o++] = *p;
    }
  }
  out[o < cap ? o : cap - 1] = '\0';
}

static void test_keys_file(void)
{
  struct chain_key keys[4], back[4];
  size_t n, len;
  char text[1024], err[160];
  for (uint32_t i = 0; i < 3; i++) {
    uint8_t sk[BLOCK_SECKEY_BYTES];
    keys[i].node_id = i + 1;
    keys[i].voter = i != 2;
    CU_ASSERT_EQUAL(block_keypair(keys[i].pk, sk), 0);
  }
  CU_ASSERT_EQUAL_FATAL(chain_keys_format(keys, 3, text, sizeof text, &len), 0);
  CU_ASSERT_EQUAL(strlen(text), len);
  CU_ASSERT_EQUAL(strncmp(text, "medshard-keys 1\n", 16), 0);
  CU_ASSERT_EQUAL_FATAL(chain_keys_parse(text, back, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(n, 3);
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(back[i].node_id, keys[i].node_id);
    CU_ASSERT_EQUAL(back[i].voter, keys[i].voter);
    CU_ASSERT_EQUAL(memcmp(back[i].pk, keys[i].pk, BLOCK_PUBKEY_BYTES), 0);
  }
  CU_ASSERT_EQUAL(chain_keys_parse(text, back, 2, &n, err, sizeof err), MSD_ESHORT);
  CU_ASSERT_EQUAL(chain_keys_format(keys, 3, text, 40, &len), MSD_ESHORT);

  /* Comments, blank lines, CRLF and upper-case hex are fine. */
  char hex[65];
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02X", keys[0].pk[i]);
  snprintf(text, sizeof text, "medshard-keys 1\r\n# cluster A\n\n   \nnode 9 voter %s  # ok\r\n",
           hex);
  CU_ASSERT_EQUAL_FATAL(chain_keys_parse(text, back, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(back[0].node_id, 9);
  CU_ASSERT(back[0].voter);
  CU_ASSERT_EQUAL(memcmp(back[0].pk, keys[0].pk, BLOCK_PUBKEY_BYTES), 0);

  struct {
    const char *text;
    int rc;
    const char *in_err;
  } bad[] = {
      {"", MSD_EDECODE, "line 1"},
      {"medshard-keys 2\n", MSD_EVERSION, "line 1"},
      {"# comment first\nmedshard-keys 1\n", MSD_EDECODE, "line 1"},
      {"medshard-keys 1\nnode 1 voter abc\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\n\nnode x voter %s\n", MSD_EDECODE, "line 3"},
      {"medshard-keys 1\nnode 0 voter %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 leader %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 voter %s extra\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 1 voter %s\nnode 1 standby %s\n", MSD_EDECODE, "line 3"},
      {"medshard-keys 1\nnode 1 voter %s\nnode 2 standby %s\n", MSD_EDECODE, "same key"},
      {"medshard-keys 1\nkey 1 voter %s\n", MSD_EDECODE, "line 2"},
      {"medshard-keys 1\nnode 4294967296 voter %s\n", MSD_EDECODE, "line 2"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    subst_key(bad[i].text, hex, text, sizeof text);
    err[0] = '\0';
    int rc = chain_keys_parse(text, back, 4, &n, err, sizeof err);
    CU_ASSERT_EQUAL(rc, bad[i].rc);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].in_err));
    if (rc != bad[i].rc || strstr(err, bad[i].in_err) == NULL)
      printf("\n  keys case %zu: rc %d, error \"%s\"\n", i, rc, err);
  }
}

/* Three sealed blocks of 4 leaves (cosigned by nodes 1 and 3) and one
 * uncut leaf; the cluster's keys and three keys nobody signed with. */
static void proof_setup(struct env *e, struct chain_key keys[3], struct chain_key wrong[3])
{
  env_setup(e, 10, true);
  build_history(e, 12);
  CU_ASSERT_EQUAL(env_put(e, "uncut", NULL), 0);
  struct chain_head h;
  chain_fsm_head(e->f, &h);
  CU_ASSERT_EQUAL_FATAL(h.height, 3);
  CU_ASSERT_EQUAL(h.sealed, 3);
  CU_ASSERT_EQUAL(h.leaves, 13);
  struct chain_verify_report vr;
  CU_ASSERT_EQUAL(chain_verify(chain_fsm_chain_path(e->f), &vr), 0);
  for (uint32_t i = 0; i < 3; i++) {
    keys[i] = (struct chain_key){.node_id = i + 1, .voter = true};
    memcpy(keys[i].pk, e->pk[i], BLOCK_PUBKEY_BYTES);
    uint8_t sk[BLOCK_SECKEY_BYTES];
    wrong[i] = (struct chain_key){.node_id = i + 1, .voter = true};
    CU_ASSERT_EQUAL(block_keypair(wrong[i].pk, sk), 0);
  }
}

static void test_proofs(void)
{
  struct env e;
  struct chain_key keys[3], wrong[3];
  proof_setup(&e, keys, wrong);
  uint8_t *buf;
  size_t len;
  struct chain_proof_report rep;
  for (uint64_t i = 0; i < 12; i++) {
    CU_ASSERT_EQUAL_FATAL(chain_fsm_proof(e.f, i, &buf, &len), 0);
    int rc = chain_proof_verify(buf, len, keys, 3, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
      printf("\n  leaf %" PRIu64 ": %s\n", i, rep.reason);
    CU_ASSERT_EQUAL(rep.leaf_index, i);
    CU_ASSERT_EQUAL(rep.height, i / 4 + 1);
    CU_ASSERT_EQUAL(rep.tree_size, (i / 4 + 1) * 4);
    CU_ASSERT_EQUAL(rep.valid_cosigs, 2);
    CU_ASSERT_EQUAL(rep.voters, 3);
    CU_ASSERT_EQUAL(rep.leaf.kind, ANCHOR_PUT);
    CU_ASSERT_EQUAL(chain_proof_verify(buf, len, wrong, 3, &rep), MSD_EBADSIG);
    CU_ASSERT_NOT_EQUAL(rep.reason[0], '\0');
    msd_free(buf);
  }
  CU_ASSERT_EQUAL(chain_fsm_proof(e.f, 12, &buf, &len), MSD_ENOTFOUND); /* not cut yet */
  CU_ASSERT_EQUAL(chain_fsm_proof(e.f, 13, &buf, &len), MSD_ENOTFOUND);
  env_close(&e);
}

/* Bundles that must not verify: too few voters, a key counted twice, any
 * flipped bit. */
static void test_forged_proofs(void)
{
  struct env e;
  struct chain_key keys[3], wrong[3];
  proof_setup(&e, keys, wrong);
  uint8_t *buf;
  size_t len;
  struct chain_proof_report rep;
  CU_ASSERT_EQUAL_FATAL(chain_fsm_proof(e.f, 5, &buf, &len), 0);
  /* Only the keys that signed, as standbys: no voter, no seal. A list of
   * five voters of which two signed: 2 of 5 is no majority. */
  struct chain_key mixed[5];
  memcpy(mixed, keys, sizeof keys);
  mixed[3] = wrong[0];
  mixed[3].node_id = 4;
  mixed[4] = wrong[1];
  mixed[4].node_id = 5;
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len, mixed, 5, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 2);
  CU_ASSERT_EQUAL(rep.voters, 5);
  mixed[0].voter = mixed[2].voter = false;
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len, mixed, 3, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 0);
  /* One key trusted under two ids counts once: node 1's signature copied
   * as node 2's must not make 2 of 3. */
  struct chain_key same[4] = {keys[0], keys[0], wrong[1], wrong[2]};
  same[1].node_id = 2;
  same[2].node_id = 3;
  same[3].node_id = 4;
  Medshard__ProofBundle *pb = medshard__proof_bundle__unpack(NULL, len, buf);
  CU_ASSERT_FATAL(pb != NULL && pb->n_cosigs == 2 && pb->cosigs[0]->node_id == 1);
  Medshard__BlockCosig twin = *pb->cosigs[0], *two[2] = {pb->cosigs[0], &twin};
  twin.node_id = 2;
  pb->cosigs[1]->node_id = 3;
  Medshard__BlockCosig **own = pb->cosigs;
  pb->cosigs = two;
  size_t flen = medshard__proof_bundle__get_packed_size(pb);
  uint8_t *forged = malloc(flen);
  medshard__proof_bundle__pack(pb, forged);
  pb->cosigs = own;
  medshard__proof_bundle__free_unpacked(pb, NULL);
  CU_ASSERT_EQUAL(chain_proof_verify(forged, flen, same, 4, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.valid_cosigs, 1);
  CU_ASSERT_EQUAL(rep.voters, 3);
  same[1].pk[0] ^= 1; /* a distinct (wrong) key for node 2: still 1 valid of 4 */
  CU_ASSERT_EQUAL(chain_proof_verify(forged, flen, same, 4, &rep), MSD_EBADSIG);
  CU_ASSERT_EQUAL(rep.voters, 4);
  free(forged);

  /* Any single flipped bit fails, with a sentence saying why. */
  struct test_rng rng = test_rng_for(11);
  uint8_t *copy = malloc(len);
  size_t passed = 0, first = 0;
  for (size_t pos = 0; pos < len; pos++) {
    memcpy(copy, buf, len);
    copy[pos] ^= (uint8_t)(1u << test_rng_below(&rng, 8));
    int rc = chain_proof_verify(copy, len, keys, 3, &rep);
    if (rc == 0 && passed++ == 0)
      first = pos;
    if (rc != 0 && rep.reason[0] == '\0')
      passed++;
  }
  CU_ASSERT_EQUAL(passed, 0);
  if (passed != 0)
    printf("\n  %zu flipped bundles verified, first at byte %zu of %zu\n", passed, first, len);
  CU_ASSERT_EQUAL(chain_proof_verify(buf, len - 1, keys, 3, &rep) != 0, 1);
  free(copy);
  msd_free(buf);
  env_close(&e);
}

static void test_reopen(void)
{
  struct env e;
  env_setup(&e, 12, true);
  build_history(&e, 9);
  struct chain_head h1, h2;
  uint8_t d1[32], d2[32];
  chain_fsm_head(e.f, &h1);
  digest_of(e.f, d1);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  CU_ASSERT_EQUAL(env_put(&e, "after", NULL), 0);
  env_close(&e);
}

static int copy_file(const char *from, const char *to)
{
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  int rc = in && out ? 0 : -1;
  while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
    rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
  if (in)
    fclose(in);
  if (out)
    fclose(out);
  return rc;
}

/* Chain file (and hash cache) records past what LMDB committed are what a
 * crash mid-apply leaves: open cuts them off. */
static void test_crash_rollback(void)
{
  struct env e;
  env_setup(&e, 13, true);
  build_history(&e, 6);
  struct chain_head h1, h2;
  uint8_t d1[32], d2[32];
  chain_fsm_head(e.f, &h1);
  digest_of(e.f, d1);
  char path[4200];
  snprintf(path, sizeof path, "%s", chain_fsm_chain_path(e.f));
  chain_fsm_close(e.f);

  /* 1: junk records appended to the chain file. */
  struct chain_file *cf;
  uint8_t junk[200];
  test_rng_fill(&e.rng, junk, sizeof junk);
  CU_ASSERT_EQUAL_FATAL(chain_file_open(path, 0, &cf), 0);
  uint64_t committed = chain_file_size(cf);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(chain_append_leaf(cf, junk, sizeof junk - (size_t)i, NULL), 0);
  chain_file_close(cf);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  struct stat st;
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL((uint64_t)st.st_size, committed);
  struct chain_verify_report rep;
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);

  /* 2: LMDB lost the last transaction but the chain file and hash cache
   * kept its records: keep a copy of the LMDB, apply, put it back. */
  char meta[4200], saved[4200];
  snprintf(meta, sizeof meta, "%s/meta/data.mdb", e.dir);
  snprintf(saved, sizeof saved, "%s/saved.mdb", e.dir);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(copy_file(meta, saved), 0);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  uint64_t index = e.index, now = e.now;
  struct test_rng rng = e.rng;
  CU_ASSERT_EQUAL(env_put(&e, "lost", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  uint8_t d3[32];
  digest_of(e.f, d3);
  chain_fsm_close(e.f);
  CU_ASSERT_EQUAL_FATAL(copy_file(saved, meta), 0);
  CU_ASSERT_EQUAL_FATAL(fsm_open_dir(e.dir, &e.f), 0);
  chain_fsm_head(e.f, &h2);
  digest_of(e.f, d2);
  CU_ASSERT(same_head(&h1, &h2));
  CU_ASSERT_EQUAL(memcmp(d1, d2, 32), 0);
  CU_ASSERT_EQUAL(chain_verify(path, &rep), 0);
  CU_ASSERT_EQUAL(rep.leaves, h1.leaves);
  /* Raft replays the entries: the same state as before the "crash". */
  e.index = index;
  e.now = now;
  e.rng = rng;
  CU_ASSERT_EQUAL(env_put(&e, "lost", NULL), 0);
  CU_ASSERT_EQUAL(env_cut(&e), 0);
  digest_of(e.f, d2);
  CU_ASSERT_EQUAL(memcmp(d3, d2, 32), 0);
  env_close(&e);
}

static void test_snapshot_restore(void)
{
  struct env a, b, c;
  env_setup(&a, 14, true);
  build_history(&a, 10);
  uint8_t *snap, da[32], db[32];
  size_t len;
  CU_ASSERT_EQUAL_FATAL(chain_fsm_snapshot(a.f, &snap, &len), 0);

  /* Into a fresh FSM: the same state, and the same after the next entry. */
  env_setup(&b, 15, false);
  CU_ASSERT_EQUAL_FATAL(chain_fsm_restore(b.f, snap, len), 0);
  struct chain_head ha, hb;
  chain_fsm_head(a.f, &ha);
  chain_fsm_head(b.f, &hb);
  CU_ASSERT(same_head(&ha, &hb));
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  uint8_t da0[32];
  memcpy(da0, da, 32);
  struct cmd *cm = malloc(sizeof *cm);
  uint8_t rid[16];
  new_rid(&a, rid);
  Medshard__Command *cp = cmd_put(cm, rid, &a.rng, "scans", "next", a.nodes);
  size_t blen;
  uint8_t *batch = pack_batch(&cp, 1, 99, &blen, false);
  CU_ASSERT_EQUAL(chain_fsm_apply(a.f, a.index + 1, batch, blen), 0);
  CU_ASSERT_EQUAL(chain_fsm_apply(b.f, a.index + 1, batch, blen), 0);
  free(batch);
  free(cm);
  digest_of(a.f, da);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);
  /* An older snapshot is ignored (a restart reloading its own). */
  CU_ASSERT_EQUAL(chain_fsm_restore(b.f, snap, len), 0);
  digest_of(b.f, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 32), 0);

  /* A flipped byte in the chain part: refused, the target unchanged. */
  env_setup(&c, 16, true);
  CU_ASSERT_EQUAL(env_put(&c, "older", NULL), 0);
  uint8_t dc[32], dc2[32];
  struct chain_head hc, hc2;
  digest_of(c.f, dc);
  chain_fsm_head(c.f, &hc);
  uint64_t lmdb_len = 0;
  for (int i = 0; i < 8; i++)
    lmdb_len = lmdb_len << 8 | snap[24 + i];
  CU_ASSERT_FATAL(40 + lmdb_len + 100 < len);
  uint8_t *bad = malloc(len);
  struct test_rng rng = test_rng_for(17);
  for (int trial = 0; trial < 8; trial++) {
    memcpy(bad, snap, len);
    size_t pos = 40 + lmdb_len + 16 + test_rng_below(&rng, len - 40 - lmdb_len - 16);
    bad[pos] ^= (uint8_t)(1u << test_rng_below(&rng, 8));
    CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_ECORRUPT);
    digest_of(c.f, dc2);
    chain_fsm_head(c.f, &hc2);
    CU_ASSERT_EQUAL(memcmp(dc, dc2, 32), 0);
    CU_ASSERT(same_head(&hc, &hc2));
  }
  memcpy(bad, snap, len);
  bad[0] ^= 1;
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_EDECODE);
  memcpy(bad, snap, len);
  bad[11] = 2;
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, bad, len), MSD_EVERSION);
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, snap, len - 1), MSD_EDECODE);
  /* The target still works, and takes the intact snapshot. */
  CU_ASSERT_EQUAL(env_put(&c, "still", NULL), 0);
  CU_ASSERT_EQUAL(chain_fsm_restore(c.f, snap, len), 0);
  chain_fsm_head(c.f, &hc2);
  CU_ASSERT(same_head(&ha, &hc2));
  digest_of(c.f, dc2);
  CU_ASSERT_EQUAL(memcmp(da0, dc2, 32), 0);
  free(bad);
  msd_free(snap);
  env_close(&a);
  env_close(&b);
  env_close(&c);
}

int main(void)
{
  /* Rejected commands are logged at INFO on every node: thousands of lines
   * in the raft runs. MSD_TEST_LOG=1 shows them. */
  msd_log_set_level(getenv("MSD_TEST_LOG") ? MSD_LOG_DEBUG : MSD_LOG_WARN);
  static const struct test_case direct[] = {
      {"bucket create and duplicate", test_bucket_create_and_duplicate},
      {"node join", test_node_join},
      {"put, versions and retries", test_put_versions_and_retry},
      {"keys longer than LMDB's limit", test_long_keys},
      {"delete", test_delete},
      {"list: prefix, paging, deleted, bounds", test_list},
      {"list: keys too long for LMDB", test_list_long_keys},
      {"list: runs of tombstones", test_list_tombstones},
      {"update shards", test_update_shards},
      {"cut blocks", test_cut_blocks},
      {"cosignatures and seals", test_cosign_and_seal},
      {"divergence raises the alarm", test_divergence_alarm},
      {"replays and malformed entries", test_replay_and_malformed},
      {"a replay that differs raises the alarm", test_replay_mismatch_alarm},
      {"trusted keys file", test_keys_file},
      {"proof bundles verify offline", test_proofs},
      {"forged proof bundles fail", test_forged_proofs},
      {"close and reopen", test_reopen},
      {"crash rollback", test_crash_rollback},
      {"snapshot and restore", test_snapshot_restore},
      {NULL, NULL}};
  static const char *const names[] = {"fsm", "fsm under raft_fixture", NULL};
  static const struct test_case *const suites[] = {direct, fsm_raft_tests};
  return test_run("test_fsm", names, suites);
}
