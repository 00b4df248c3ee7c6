/* `medshard stat|ls|rm|verify`: one object's manifest, anchor and shard
 * map; a bucket's listing; deletion (a tombstone anchored like a put); and
 * the end-to-end check of an object against its anchor on the side-chain.
 * Metadata comes over the control plane (chain-anchor/ctl_ops.h); verify
 * reads the bytes through the client API (cluster/client.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "chain-anchor/anchor.h"
#include "chain-anchor/block.h"
#include "chain-anchor/ctl_ops.h"
#include "chain-anchor/merkle.h"
#include "chain-anchor/proof.h"
#include "cli/cli.h"
#include "cluster/client.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/sock.h"

#define CALL_MS 10000
#define SEAL_WAIT_MS 10000 /* verify waits this long for the anchor's block to seal */
#define KEYS_MAX 64
#define KEYS_FILE_MAX (1u << 20)

struct obj_opts {
  const char *verb;
  const char *node, *keys, *proof_out;
  char nodes[1280]; /* the cluster's control addresses, the leader's first */
  bool json;
  const char *arg; /* the one positional argument */
  char bucket[64];
  const char *key; /* inside arg; "" for ls without a prefix */
};

/* Prints "medshard VERB: ..." on stderr; returns 1, the exit code of a
 * failure that is not a usage error. */
static int fail(const char *verb, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "medshard %s: ", verb);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

/* BUCKET/KEY split at the first '/'; for ls the KEY (a prefix there) may
 * be missing, with or without the '/'. 0, or 2 after saying why. */
static int split_name(struct obj_opts *o, bool key_optional)
{
  const char *slash = strchr(o->arg, '/');
  size_t blen = slash ? (size_t)(slash - o->arg) : strlen(o->arg);
  const char *want = key_optional ? "BUCKET[/PREFIX]" : "BUCKET/KEY";
  if (blen == 0 || (!key_optional && (slash == NULL || slash[1] == 0))) {
    fprintf(stderr, "medshard %s: '%s' is not %s (e.g. %s)\n", o->verb, o->arg, want,
            key_optional ? "default/ct/ or default" : "default/ct/0001.dcm");
    return 2;
  }
  if (blen >= sizeof o->bucket) {
    fprintf(stderr, "medshard %s: bucket name '%.*s' is longer than 63 bytes\n", o->verb,
            (int)blen, o->arg);
    return 2;
  }
  memcpy(o->bucket, o->arg, blen);
  o->bucket[blen] = 0;
  o->key = slash ? slash + 1 : "";
  if (strlen(o->key) > CTL_KEY_MAX) {
    fprintf(stderr, "medshard %s: %s is %zu bytes long; keys are at most %d bytes\n", o->verb,
            key_optional ? "the prefix" : "the key", strlen(o->key), CTL_KEY_MAX);
    return 2;
  }
  return 0;
}

/* Options shared by the four verbs (verify alone takes --keys and
 * --proof-out). -1 to go on; else the exit code (0 after --help). */
static int parse_opts(int argc, char **argv, const char *usage, struct obj_opts *o)
{
  static const struct option common[] = {
      {"node", 1, 0, 'n'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  static const struct option verify[] = {
      {"node", 1, 0, 'n'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'},
      {"keys", 1, 0, 'k'}, {"proof-out", 1, 0, 'p'}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "", strcmp(o->verb, "verify") ? common : verify, NULL)) !=
         -1) {
    if (c == 'h') {
      printf("%s", usage);
      return 0;
    }
    if (c == 'n') o->node = optarg;
    else if (c == 'j') o->json = true;
    else if (c == 'k') o->keys = optarg;
    else if (c == 'p') o->proof_out = optarg;
    else {
      fprintf(stderr, "medshard %s: unknown option, or one missing its value: '%s'\n%s",
              o->verb, argv[optind - 1], usage);
      return 2;
    }
  }
  if (optind >= argc || optind + 1 < argc) {
    if (optind + 1 < argc)
      fprintf(stderr, "medshard %s: unexpected argument '%s'\n", o->verb, argv[optind + 1]);
    fprintf(stderr, "%s", usage);
    return 2;
  }
  o->arg = argv[optind];
  return -1;
}

/* Parses the command line and finds the cluster: -1 to go on, else the
 * exit code. */
static int setup(int argc, char **argv, const char *verb, const char *usage, bool key_optional,
                 struct obj_opts *o)
{
  memset(o, 0, sizeof *o);
  o->verb = verb;
  int rc = parse_opts(argc, argv, usage, o);
  if (rc >= 0)
    return rc;
  if (split_name(o, key_optional) != 0)
    return 2;
  const char *nodes = cli_cluster(o->node, verb);
  if (nodes == NULL)
    return 2;
  /* Reads go to the leader first: a follower may not have applied a put
   * or rm this user just made (read-your-writes for scripts). */
  ctl_leader_first(nodes, o->nodes, sizeof o->nodes);
  o->node = o->nodes;
  return -1;
}

/* A request that got no usable answer. */
static int unreachable(const struct obj_opts *o, int rc)
{
  if (rc == MSD_EDECODE || rc == MSD_EVERSION || rc == MSD_EFRAME)
    return fail(o->verb, "the cluster at %s sent an answer this medshard cannot use: %s",
                o->node, msd_strerror(rc));
  return fail(o->verb, "cannot reach the cluster at %s: %s", o->node, msd_strerror(rc));
}

/* ISO 8601 UTC of a time in ms since the epoch, to the second. */
static const char *utc(uint64_t ms, char out[32])
{
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, 32, "%" PRIu64 " ms", ms); /* UNTESTED: years past 9999 */
  return out;
}

/* Hex of a protobuf bytes field of the expected length, else "" (a field
 * from the wire is never trusted to fit the buffer). */
static const char *hexf(ProtobufCBinaryData b, size_t want, char *out)
{
  return cli_hex(b.data, b.len == want ? want : 0, out);
}

/* ---- lookups over the control plane ---- */

static Medshard__CtlRequest request(Medshard__CtlOp op)
{
  Medshard__CtlRequest r = MEDSHARD__CTL_REQUEST__INIT;
  r.format_version = 1;
  r.op = op;
  return r;
}

/* Why GET_MANIFEST found nothing: the bucket or only the key. */
static int not_found(const struct obj_opts *o)
{
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET);
  Medshard__CtlResponse *r;
  req.bucket = (char *)o->bucket;
  int rc = ctl_call_any(o->node, &req, CALL_MS, &r, NULL, NULL);
  bool no_bucket = rc == 0 && r->code == MSD_ENOTFOUND;
  if (rc == 0)
    medshard__ctl_response__free_unpacked(r, NULL);
  if (no_bucket)
    return fail(o->verb, "bucket %s does not exist", o->bucket);
  return fail(o->verb, "%s/%s does not exist (no such key, or it was deleted)", o->bucket,
              o->key);
}

/* The manifest of the object: 0 with *out the caller's
 * (medshard__manifest__free_unpacked), or 1 after saying why. */
static int fetch_manifest(const struct obj_opts *o, Medshard__Manifest **out)
{
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST);
  Medshard__CtlResponse *r;
  req.bucket = (char *)o->bucket;
  req.key = (char *)o->key;
  int rc = ctl_call_any(o->node, &req, CALL_MS, &r, NULL, NULL);
  if (rc != 0)
    return unreachable(o, rc);
  rc = r->code;
  *out = r->manifest;
  r->manifest = NULL;
  const Medshard__ShardMap *sm = *out ? (*out)->shard_map : NULL;
  bool whole = sm != NULL && sm->policy != NULL && (*out)->anchor != NULL;
  if (rc == 0 && !whole)
    fail(o->verb, "%s/%s: the node sent an incomplete manifest", o->bucket, o->key);
  else if (rc != 0 && rc != MSD_ENOTFOUND)
    fail(o->verb, "%s/%s: %s", o->bucket, o->key, r->message[0] ? r->message : msd_strerror(rc));
  medshard__ctl_response__free_unpacked(r, NULL);
  if (rc == MSD_ENOTFOUND)
    return not_found(o);
  if (rc == 0 && whole)
    return 0;
  if (*out != NULL)
    medshard__manifest__free_unpacked(*out, NULL);
  *out = NULL;
  return 1;
}

/* The proof bundle of leaf `leaf` and the height of the block it is
 * proved against: 0 with *bundle (msd_free); MSD_ENOTFOUND while no block
 * covers the leaf; else a transport or decode error. */
static int fetch_bundle(const char *nodes, uint64_t leaf, uint8_t **bundle, size_t *len,
                        uint64_t *height)
{
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_PROOF);
  Medshard__CtlResponse *r;
  uint8_t *p = NULL;
  size_t plen = 0;
  req.leaf_index = leaf;
  int rc = ctl_call_any(nodes, &req, CALL_MS, &r, &p, &plen);
  if (rc != 0)
    return rc;
  rc = r->code;
  medshard__ctl_response__free_unpacked(r, NULL);
  Medshard__ProofBundle *pb = rc == 0 ? medshard__proof_bundle__unpack(NULL, plen, p) : NULL;
  struct block_header h;
  if (rc == 0)
    rc = pb == NULL ? MSD_EDECODE : block_decode(pb->block_header.data, pb->block_header.len, &h);
  if (pb != NULL)
    medshard__proof_bundle__free_unpacked(pb, NULL);
  if (rc != 0) {
    msd_free(p);
    return rc;
  }
  *bundle = p;
  *len = plen;
  *height = h.height;
  return 0;
}

/* Where an anchor leaf stands on the chain. */
struct leaf_block {
  bool in_block;        /* a block covers the leaf */
  bool sealed;          /* ... and a majority of voters cosigned it */
  uint64_t height;
  size_t cosigs;
  uint32_t voters;
};

/* Finds the block that covers leaf `leaf` and whether it is sealed; with
 * bundle non-NULL also returns the leaf's proof bundle when there is one
 * (msd_free), fetched again once the block is seen sealed so that it
 * carries the sealing cosignatures. 0 or a transport or decode error. */
static int leaf_status(const char *nodes, uint64_t leaf, struct leaf_block *lb, uint8_t **bundle,
                       size_t *blen)
{
  uint8_t *p = NULL;
  size_t plen = 0;
  memset(lb, 0, sizeof *lb);
  int rc = fetch_bundle(nodes, leaf, &p, &plen, &lb->height);
  if (rc != 0)
    return rc == MSD_ENOTFOUND ? 0 : rc;
  lb->in_block = true;
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK);
  Medshard__CtlResponse *r;
  req.height = lb->height;
  rc = ctl_call_any(nodes, &req, CALL_MS, &r, NULL, NULL);
  if (rc == 0) {
    rc = r->code != 0 ? r->code : r->block == NULL ? MSD_EDECODE : 0;
    lb->sealed = rc == 0 && r->block->sealed;
    lb->cosigs = rc == 0 ? r->block->n_cosigs : 0;
    lb->voters = rc == 0 ? r->block->voters : 0;
    medshard__ctl_response__free_unpacked(r, NULL);
  }
  if (rc == 0 && bundle != NULL && lb->sealed) {
    msd_free(p);
    p = NULL;
    rc = fetch_bundle(nodes, leaf, &p, &plen, &lb->height);
  }
  if (rc == 0 && bundle != NULL) {
    *bundle = p;
    *blen = plen;
    p = NULL;
  }
  msd_free(p);
  return rc;
}

/* Node id -> status, from the cluster map. */
struct node_states {
  size_t n;
  uint32_t id[256];
  Medshard__NodeStatus status[256];
};

static int fetch_states(const char *nodes, struct node_states *ns)
{
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_NODES);
  Medshard__CtlResponse *r;
  ns->n = 0;
  int rc = ctl_call_any(nodes, &req, CALL_MS, &r, NULL, NULL);
  if (rc != 0)
    return rc;
  rc = r->code;
  for (size_t i = 0; rc == 0 && i < r->n_nodes && ns->n < 256; i++) {
    ns->id[ns->n] = r->nodes[i]->node_id;
    ns->status[ns->n++] = r->nodes[i]->status;
  }
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc;
}

/* A shard's state as stat reports it: its node's status, "hole" for a
 * shard no node holds (awaiting repair), "unknown" for a node the map
 * does not list. */
static const char *shard_state(const struct node_states *ns, uint32_t node)
{
  if (node == 0)
    return "hole";
  for (size_t i = 0; i < ns->n; i++) {
    if (ns->id[i] != node)
      continue;
    switch (ns->status[i]) {
    case MEDSHARD__NODE_STATUS__NODE_STATUS_UP: return "up";
    case MEDSHARD__NODE_STATUS__NODE_STATUS_DOWN: return "down";
    case MEDSHARD__NODE_STATUS__NODE_STATUS_DRAINING: return "draining";
    case MEDSHARD__NODE_STATUS__NODE_STATUS_OUT: return "out";
    default: return "unknown";
    }
  }
  return "unknown";
}

/* ---- stat ---- */

static void stat_json(const Medshard__Manifest *m, const struct leaf_block *lb,
                      const struct node_states *ns)
{
  const Medshard__ShardMap *sm = m->shard_map;
  char hex[65];
  printf("{\"bucket\":");
  cli_json_str(stdout, m->bucket);
  printf(",\"key\":");
  cli_json_str(stdout, m->key);
  printf(",\"object_id\":\"%s\",\"version\":%" PRIu64 ",\"size\":%" PRIu64,
         hexf(m->object_id, 16, hex), m->version, m->size);
  printf(",\"sha256\":\"%s\",\"content_type\":", hexf(m->sha256, 32, hex));
  cli_json_str(stdout, m->content_type);
  printf(",\"created_ms\":%" PRIu64 ",\"k\":%" PRIu32 ",\"m\":%" PRIu32 ",\"unit\":%" PRIu32,
         m->created_ms, sm->policy->k, sm->policy->m, sm->policy->unit);
  printf(",\"anchor\":{\"leaf_index\":%" PRIu64 ",\"leaf_hash\":\"%s\"}", m->anchor->leaf_index,
         hexf(m->anchor->leaf_hash, 32, hex));
  if (lb->in_block)
    printf(",\"block\":{\"height\":%" PRIu64 ",\"sealed\":%s}", lb->height,
           lb->sealed ? "true" : "false");
  else
    printf(",\"block\":{\"height\":null,\"sealed\":false}");
  printf(",\"shards\":[");
  for (size_t i = 0; i < sm->n_shards; i++) {
    const Medshard__ShardLocation *s = sm->shards[i];
    printf("%s{\"index\":%" PRIu32 ",\"node\":%" PRIu32 ",\"digest\":\"%s\",\"state\":\"%s\"}",
           i ? "," : "", s->index, s->node_id, hexf(s->digest, 16, hex),
           shard_state(ns, s->node_id));
  }
  printf("]}\n");
}

static void stat_human(const Medshard__Manifest *m, const struct leaf_block *lb,
                       const struct node_states *ns)
{
  const Medshard__ShardMap *sm = m->shard_map;
  char hex[65], when[32];
  printf("%s/%s\n", m->bucket, m->key);
  printf("  object id     %s\n  version       %" PRIu64 "\n  size          %" PRIu64 " bytes\n",
         hexf(m->object_id, 16, hex), m->version, m->size);
  printf("  sha256        %s\n", hexf(m->sha256, 32, hex));
  printf("  content type  %s\n", m->content_type[0] ? m->content_type : "(none)");
  printf("  created       %s (%" PRIu64 " ms)\n", utc(m->created_ms, when), m->created_ms);
  printf("  erasure       %" PRIu32 "+%" PRIu32 ", unit %" PRIu32 " bytes\n", sm->policy->k,
         sm->policy->m, sm->policy->unit);
  printf("  anchor        leaf %" PRIu64 ", hash %s\n", m->anchor->leaf_index,
         hexf(m->anchor->leaf_hash, 32, hex));
  if (!lb->in_block)
    printf("  block         not yet in a block\n");
  else if (lb->sealed)
    printf("  block         %" PRIu64 ", sealed\n", lb->height);
  else
    printf("  block         %" PRIu64 ", not sealed yet (%zu of %" PRIu32 " voters cosigned)\n",
           lb->height, lb->cosigs, lb->voters);
  printf("  shards\n");
  for (size_t i = 0; i < sm->n_shards; i++) {
    const Medshard__ShardLocation *s = sm->shards[i];
    printf("    %2" PRIu32 "  node %-4" PRIu32 " %-9s %s\n", s->index, s->node_id,
           shard_state(ns, s->node_id), hexf(s->digest, 16, hex));
  }
}

static const char stat_usage[] =
    "usage: medshard stat BUCKET/KEY [--node ADDRS] [--json]\n"
    "Shows an object's manifest, its anchor on the side-chain (and whether its\n"
    "block is sealed) and where each shard lives, with that node's state.\n";

int cmd_stat(int argc, char **argv)
{
  struct obj_opts o;
  int rc = setup(argc, argv, "stat", stat_usage, false, &o);
  if (rc >= 0)
    return rc;
  Medshard__Manifest *m;
  if (fetch_manifest(&o, &m) != 0)
    return 1;
  struct leaf_block lb;
  struct node_states ns;
  rc = leaf_status(o.node, m->anchor->leaf_index, &lb, NULL, NULL);
  if (rc == 0)
    rc = fetch_states(o.node, &ns);
  if (rc != 0)
    fail(o.verb, "%s/%s: cannot read its block or the cluster map from %s: %s", o.bucket, o.key,
         o.node, msd_strerror(rc));
  else if (o.json)
    stat_json(m, &lb, &ns);
  else
    stat_human(m, &lb, &ns);
  medshard__manifest__free_unpacked(m, NULL);
  return rc == 0 ? 0 : 1;
}

/* ---- ls ---- */

static void ls_print(const Medshard__Manifest *m, bool json, bool first)
{
  char hex[65], when[32];
  if (!json) {
    printf("%14" PRIu64 "  %s  %s\n", m->size, utc(m->created_ms, when), m->key);
    return;
  }
  printf("%s\n  {\"key\":", first ? "" : ",");
  cli_json_str(stdout, m->key);
  printf(",\"size\":%" PRIu64 ",\"version\":%" PRIu64 ",\"object_id\":\"%s\"", m->size,
         m->version, hexf(m->object_id, 16, hex));
  printf(",\"sha256\":\"%s\",\"created_ms\":%" PRIu64 "}", hexf(m->sha256, 32, hex),
         m->created_ms);
}

static const char ls_usage[] =
    "usage: medshard ls BUCKET[/PREFIX] [--node ADDRS] [--json]\n"
    "Lists the objects of BUCKET (whose keys start with PREFIX) in key order:\n"
    "size, creation time (UTC) and key; --json prints one array.\n";

int cmd_ls(int argc, char **argv)
{
  struct obj_opts o;
  int rc = setup(argc, argv, "ls", ls_usage, true, &o);
  if (rc >= 0)
    return rc;
  /* Pages of up to 1000 until the node says the listing is complete; the
   * output streams, so a bucket of any size lists in bounded memory. */
  char after[CTL_KEY_MAX + 1] = "", next[CTL_KEY_MAX + 1];
  size_t listed = 0;
  do {
    Medshard__CtlResponse *r;
    rc = ctl_list(o.node, o.bucket, o.key, after, 0, &r, next);
    if (rc != 0)
      return unreachable(&o, rc);
    if (r->code != 0) {
      fail(o.verb, "%s", r->message[0] ? r->message : msd_strerror(r->code));
      medshard__ctl_response__free_unpacked(r, NULL);
      return 1; /* a --json array left open: no consumer takes it for all */
    }
    if (o.json && after[0] == 0)
      printf("[");
    for (size_t i = 0; i < r->n_manifests; i++, listed++)
      ls_print(r->manifests[i], o.json, listed == 0);
    medshard__ctl_response__free_unpacked(r, NULL);
    memcpy(after, next, sizeof after);
  } while (after[0] != 0);
  if (o.json)
    printf("%s]\n", listed > 0 ? "\n" : "");
  return 0;
}

/* ---- rm ---- */

static const char rm_usage[] =
    "usage: medshard rm BUCKET/KEY [--node ADDRS] [--json]\n"
    "Deletes an object: its name stops resolving and a tombstone is anchored on\n"
    "the side-chain (the earlier anchors stay, as in any append-only log).\n";

int cmd_rm(int argc, char **argv)
{
  struct obj_opts o;
  int rc = setup(argc, argv, "rm", rm_usage, false, &o);
  if (rc >= 0)
    return rc;
  Medshard__CtlResponse *r;
  rc = ctl_delete_object(o.node, o.bucket, o.key, &r);
  if (rc != 0)
    return unreachable(&o, rc);
  const Medshard__Outcome *out = r->code == 0 && r->n_outcomes == 1 ? r->outcomes[0] : NULL;
  rc = r->code != 0 ? r->code : out == NULL ? MSD_EDECODE : out->code;
  const char *msg = r->code != 0 ? r->message : out != NULL ? out->message : "";
  if (rc == 0 && (out->anchor == NULL || out->anchor->leaf_hash.len != 32)) {
    rc = MSD_EDECODE;
    msg = "the cluster's answer carries no tombstone anchor";
  }
  char hex[65];
  if (rc != 0)
    fail(o.verb, "%s", msg[0] ? msg : msd_strerror(rc));
  else if (o.json) {
    printf("{\"bucket\":");
    cli_json_str(stdout, o.bucket);
    printf(",\"key\":");
    cli_json_str(stdout, o.key);
    printf(",\"deleted\":true,\"message\":");
    cli_json_str(stdout, msg);
    printf(",\"anchor\":{\"leaf_index\":%" PRIu64 ",\"leaf_hash\":\"%s\"}}\n",
           out->anchor->leaf_index, hexf(out->anchor->leaf_hash, 32, hex));
  } else {
    printf("%s; tombstone anchored at leaf %" PRIu64 ", hash %s\n", msg, out->anchor->leaf_index,
           hexf(out->anchor->leaf_hash, 32, hex));
  }
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc == 0 ? 0 : 1;
}

/* ---- verify ---- */

struct verify {
  const struct obj_opts *o;
  Medshard__Manifest *m;
  bool read_ok;
  uint8_t sha[32];               /* SHA-256 of the bytes read */
  struct leaf_block lb;
  uint8_t *bundle;               /* the anchor's proof bundle (msd_free) */
  size_t blen;
  Medshard__ProofBundle *pb;     /* ... decoded */
  struct anchor_leaf leaf;       /* ... its leaf, decoded */
  bool have_leaf, proof_ok;
  struct chain_key keys[KEYS_MAX];
  size_t nkeys;
  unsigned steps, failed;
};

/* Reports one check: a line for humans, an element of "steps" for --json. */
static void step(struct verify *v, const char *name, bool ok, const char *fmt, ...)
{
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  v->failed += !ok;
  if (v->o->json) {
    printf("%s{\"step\":\"%s\",\"ok\":%s,\"detail\":", v->steps ? "," : "", name,
           ok ? "true" : "false");
    cli_json_str(stdout, detail);
    printf("}");
  } else {
    printf("  %-7s %s\n", ok ? "ok" : "FAILED", detail);
  }
  v->steps++;
}

/* The trusted keys file of --keys: 0, or 2 (the file the user named is
 * unusable) after saying why. */
static int load_keys(struct verify *v)
{
  const char *path = v->o->keys;
  char err[200];
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "medshard verify: cannot read keys file %s: %s\n", path, strerror(errno));
    return 2;
  }
  char *text = msd_malloc(KEYS_FILE_MAX + 1);
  size_t n = text ? fread(text, 1, KEYS_FILE_MAX + 1, f) : 0;
  fclose(f);
  int rc = text == NULL ? -ENOMEM : n > KEYS_FILE_MAX ? MSD_ESHORT : 0;
  if (rc == 0) {
    text[n] = 0;
    rc = chain_keys_parse(text, v->keys, KEYS_MAX, &v->nkeys, err, sizeof err);
  }
  msd_free(text);
  if (rc == MSD_ESHORT)
    snprintf(err, sizeof err, "more than %d keys, or larger than 1 MiB", KEYS_MAX);
  if (rc != 0)
    fprintf(stderr, "medshard verify: keys file %s: %s\n", path,
            rc == -ENOMEM ? "out of memory" : err);
  return rc == 0 ? 0 : 2;
}

/* Hashes what msd_get hands over (in order, by its contract). */
struct sha_sink {
  EVP_MD_CTX *ctx;
  uint64_t got;
};

static int sha_sink_write(void *ctx, uint64_t off, const void *buf, size_t len)
{
  struct sha_sink *s = ctx;
  if (off != s->got)
    return MSD_ERANGE; /* UNTESTED: msd_get delivers bytes in order */
  if (!EVP_DigestUpdate(s->ctx, buf, len))
    return -ENOMEM; /* UNTESTED */
  s->got += len;
  return 0;
}

/* Reads the whole object through a coordinator and hashes it here: the
 * check must not rest on the cluster's word that the bytes are right. */
static void read_object(struct verify *v)
{
  const Medshard__Manifest *m = v->m;
  struct msd_client *c = NULL;
  struct msd_error e = {0};
  Medshard__Manifest *gm = NULL;
  struct sha_sink s = {EVP_MD_CTX_new(), 0};
  unsigned n = 32;
  int rc = s.ctx != NULL && EVP_DigestInit_ex(s.ctx, EVP_sha256(), NULL) ? 0 : -ENOMEM;
  if (rc == 0)
    rc = msd_client_open(v->o->node, &c, &e);
  if (rc == 0)
    rc = msd_get(c, m->bucket, m->key, NULL, sha_sink_write, &s, &gm, &e);
  if (rc == 0 && !EVP_DigestFinal_ex(s.ctx, v->sha, &n))
    rc = -ENOMEM; /* UNTESTED */
  bool same = rc == 0 && gm != NULL && gm->object_id.len == 16 && m->object_id.len == 16 &&
              memcmp(gm->object_id.data, m->object_id.data, 16) == 0;
  if (rc != 0)
    step(v, "read", false, "reading %s/%s failed: %s", m->bucket, m->key,
         e.msg[0] ? e.msg : msd_strerror(rc));
  else if (!same)
    step(v, "read", false, "a new version of %s/%s was written while it was read; run verify"
         " again", m->bucket, m->key);
  else if (s.got != m->size)
    step(v, "read", false, "read %" PRIu64 " bytes; the manifest says %" PRIu64, s.got, m->size);
  else
    v->read_ok = true;
  if (v->read_ok)
    step(v, "read", true, "read %" PRIu64 " bytes of version %" PRIu64, s.got, m->version);
  if (gm != NULL)
    medshard__manifest__free_unpacked(gm, NULL);
  msd_client_close(c);
  EVP_MD_CTX_free(s.ctx);
}

static void check_content(struct verify *v)
{
  char got[65], want[65];
  cli_hex(v->sha, 32, got);
  if (!v->read_ok)
    step(v, "content", false, "content SHA-256 not checked: the object could not be read");
  else if (v->m->sha256.len != 32 || memcmp(v->sha, v->m->sha256.data, 32) != 0)
    step(v, "content", false, "content SHA-256 %s differs from the manifest's %s", got,
         hexf(v->m->sha256, 32, want));
  else
    step(v, "content", true, "content SHA-256 %s matches the manifest", got);
}

/* Sleeps ms milliseconds. */
static void pause_ms(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Fetches the anchor's proof bundle, waiting up to SEAL_WAIT_MS for a
 * block that covers the leaf to be sealed. 0 (v->lb says how far the
 * chain got; v->bundle is set once a block covers the leaf) or a transport
 * error. */
static int await_bundle(struct verify *v)
{
  int64_t deadline = msd_now_ms() + SEAL_WAIT_MS;
  bool told = false;
  for (;;) {
    msd_free(v->bundle);
    v->bundle = NULL;
    int rc = leaf_status(v->o->node, v->m->anchor->leaf_index, &v->lb, &v->bundle, &v->blen);
    if (rc != 0 || v->lb.sealed || msd_now_ms() >= deadline)
      return rc;
    if (!told)
      fprintf(stderr, "medshard verify: leaf %" PRIu64 " is not in a sealed block yet; waiting"
              " up to %d s\n", v->m->anchor->leaf_index, SEAL_WAIT_MS / 1000);
    told = true;
    pause_ms(250);
  }
}

/* The bundle's leaf, decoded: what the commitment and leaf checks read. */
static void decode_leaf(struct verify *v)
{
  v->pb = medshard__proof_bundle__unpack(NULL, v->blen, v->bundle);
  v->have_leaf = v->pb != NULL && anchor_decode(v->pb->leaf.data, v->pb->leaf.len, &v->leaf) == 0;
}

static void check_commitment(struct verify *v)
{
  uint8_t c[ANCHOR_HASH];
  char hex[65];
  if (!v->read_ok || !v->have_leaf || v->m->salt.len != ANCHOR_HASH) {
    step(v, "commitment", false, "content commitment not checked: %s",
         !v->read_ok ? "the object could not be read"
         : !v->have_leaf ? "the proof bundle's leaf does not decode"
                         : "the manifest has no 32-byte salt");
    return;
  }
  anchor_commitment(v->m->salt.data, v->sha, c);
  if (memcmp(c, v->leaf.commitment, ANCHOR_HASH) != 0)
    step(v, "commitment", false, "the content commitment recomputed from the bytes and the salt"
         " (%s) differs from leaf %" PRIu64 "'s", cli_hex(c, 32, hex), v->pb->leaf_index);
  else
    step(v, "commitment", true, "content commitment %s (bytes + salt) matches leaf %" PRIu64,
         cli_hex(c, 32, hex), v->pb->leaf_index);
}

/* The first way the bundle's leaf is not this manifest's anchor, or NULL. */
static const char *leaf_problem(const struct verify *v, const uint8_t hash[MERKLE_HASH])
{
  const Medshard__Manifest *m = v->m;
  if (!v->have_leaf)
    return "the proof bundle's leaf does not decode";
  if (v->pb->leaf_index != m->anchor->leaf_index)
    return "the proof bundle is for another leaf";
  if (m->anchor->leaf_hash.len != MERKLE_HASH ||
      memcmp(hash, m->anchor->leaf_hash.data, MERKLE_HASH) != 0)
    return "the leaf's hash differs from the manifest's anchor";
  if (v->leaf.kind != ANCHOR_PUT || m->object_id.len != ANCHOR_ID_BYTES ||
      memcmp(v->leaf.object_id, m->object_id.data, ANCHOR_ID_BYTES) != 0)
    return "the leaf does not anchor a put of this object id";
  if (v->leaf.version != m->version || v->leaf.size != m->size)
    return "the leaf's version or size differs from the manifest";
  return NULL;
}

static void check_leaf(struct verify *v)
{
  uint8_t h[MERKLE_HASH];
  char hex[65];
  if (v->have_leaf)
    merkle_leaf_hash(v->pb->leaf.data, v->pb->leaf.len, h);
  const char *why = leaf_problem(v, h);
  if (why != NULL)
    step(v, "leaf", false, "leaf %" PRIu64 ": %s", v->m->anchor->leaf_index, why);
  else
    step(v, "leaf", true, "leaf %" PRIu64 " hashes to the manifest's anchor %s",
         v->pb->leaf_index, cli_hex(h, 32, hex));
}

/* The trusted keys: --keys, else the cluster's own (with the warning). */
static int cluster_keys(struct verify *v)
{
  if (v->o->keys != NULL)
    return 0;
  fprintf(stderr, "medshard verify: warning: no --keys given, so the proof is checked against"
          " keys fetched from the cluster itself: that shows the cluster is consistent, not that"
          " an independent party vouches for it. Export the keys once (`medshard chain keys -o"
          " FILE`), keep them apart, and pass --keys FILE.\n");
  return ctl_fetch_keys(v->o->node, v->keys, KEYS_MAX, &v->nkeys);
}

static void check_proof(struct verify *v)
{
  struct chain_proof_report rep;
  int rc = cluster_keys(v);
  if (rc != 0) {
    step(v, "proof", false, "cannot fetch the cluster's keys from %s: %s", v->o->node,
         msd_strerror(rc));
    return;
  }
  rc = chain_proof_verify(v->bundle, v->blen, v->keys, v->nkeys, &rep);
  v->proof_ok = rc == 0;
  if (rc == 0)
    step(v, "proof", true, "block %" PRIu64 " (tree size %" PRIu64 ") is cosigned by %" PRIu32
         " of %" PRIu32 " trusted voters%s", rep.height, rep.tree_size, rep.valid_cosigs,
         rep.voters, v->o->keys ? "" : " (keys from the cluster itself)");
  else if (!v->lb.sealed)
    step(v, "proof", false, "block %" PRIu64 " is not sealed yet after %d s (%zu of %" PRIu32
         " voters cosigned); run verify again later", v->lb.height, SEAL_WAIT_MS / 1000,
         v->lb.cosigs, v->lb.voters);
  else
    step(v, "proof", false, "%s", rep.reason);
}

/* --proof-out: the bundle exactly as `medshard verify-proof` reads it;
 * written only once it verifies, so the file is never a proof that fails. */
static void write_proof(struct verify *v)
{
  const char *path = v->o->proof_out;
  if (path == NULL)
    return;
  if (!v->proof_ok) {
    step(v, "proof-out", false, "%s not written: the proof does not verify", path);
    return;
  }
  FILE *f = fopen(path, "wb");
  bool ok = f != NULL && fwrite(v->bundle, 1, v->blen, f) == v->blen;
  int err = errno;
  if (f != NULL && fclose(f) != 0)
    ok = false, err = errno;
  if (ok)
    step(v, "proof-out", true, "proof bundle (%zu bytes) written to %s; check it offline with"
         " `medshard verify-proof %s --keys KEYS`", v->blen, path, path);
  else
    step(v, "proof-out", false, "cannot write %s: %s", path, strerror(err));
}

static void verify_begin(const struct verify *v)
{
  const Medshard__Manifest *m = v->m;
  char hex[65];
  if (!v->o->json) {
    printf("verify %s/%s: version %" PRIu64 ", %" PRIu64 " bytes, object %s\n", m->bucket, m->key,
           m->version, m->size, hexf(m->object_id, 16, hex));
    return;
  }
  printf("{\"bucket\":");
  cli_json_str(stdout, m->bucket);
  printf(",\"key\":");
  cli_json_str(stdout, m->key);
  printf(",\"version\":%" PRIu64 ",\"object_id\":\"%s\",\"keys\":\"%s\",\"steps\":[", m->version,
         hexf(m->object_id, 16, hex), v->o->keys ? "file" : "cluster");
}

/* Closes the report; the exit code: 0 only if every check passed. */
static int verify_end(const struct verify *v)
{
  const Medshard__Manifest *m = v->m;
  if (v->o->json)
    printf("],\"ok\":%s}\n", v->failed == 0 ? "true" : "false");
  if (v->failed != 0)
    return fail("verify", "%s/%s: %u of %u checks FAILED", m->bucket, m->key, v->failed, v->steps);
  if (!v->o->json)
    printf("verified: %s/%s is the object anchored at leaf %" PRIu64 ", in sealed block %" PRIu64
           "\n", m->bucket, m->key, m->anchor->leaf_index, v->lb.height);
  return 0;
}

/* The chain half of verify: commitment, leaf, proof, --proof-out. */
static void verify_chain(struct verify *v)
{
  int rc = await_bundle(v);
  if (rc != 0) {
    step(v, "block", false, "cannot fetch the proof bundle of leaf %" PRIu64 " from %s: %s",
         v->m->anchor->leaf_index, v->o->node, msd_strerror(rc));
    return;
  }
  if (!v->lb.in_block) {
    step(v, "block", false, "leaf %" PRIu64 " is not in any block yet after %d s; run verify"
         " again later", v->m->anchor->leaf_index, SEAL_WAIT_MS / 1000);
    return;
  }
  decode_leaf(v);
  check_commitment(v);
  check_leaf(v);
  check_proof(v);
  write_proof(v);
}

static const char verify_usage[] =
    "usage: medshard verify BUCKET/KEY [--keys FILE] [--proof-out FILE] [--node ADDRS] [--json]\n"
    "Reads the object and checks it end to end: its SHA-256 against the manifest,\n"
    "the content commitment (bytes + salt) against its anchor leaf, that leaf\n"
    "against the manifest's anchor, and the leaf's proof bundle against trusted\n"
    "keys: --keys FILE as `medshard chain keys -o FILE` writes it, else the\n"
    "cluster's own (consistency only). Waits up to 10 s for the block to seal.\n"
    "--proof-out FILE saves the bundle for `medshard verify-proof`.\n";

int cmd_verify(int argc, char **argv)
{
  struct obj_opts o;
  struct verify v;
  int rc = setup(argc, argv, "verify", verify_usage, false, &o);
  if (rc >= 0)
    return rc;
  memset(&v, 0, sizeof v);
  v.o = &o;
  if (o.keys != NULL && load_keys(&v) != 0)
    return 2;
  if (fetch_manifest(&o, &v.m) != 0)
    return 1;
  verify_begin(&v);
  read_object(&v);
  check_content(&v);
  verify_chain(&v);
  rc = verify_end(&v);
  if (v.pb != NULL)
    medshard__proof_bundle__free_unpacked(v.pb, NULL);
  msd_free(v.bundle);
  medshard__manifest__free_unpacked(v.m, NULL);
  return rc;
}
