/* `medshard chain head|show|verify|proof|keys`, `medshard bucket create` and
 * `medshard verify-proof`: the side-chain as users and auditors see it. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain-anchor/block.h"
#include "chain-anchor/chainfile.h"
#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "chain-anchor/proof.h"
#include "cli/cli.h"
#include "common/alloc.h"
#include "common/err.h"

#define CALL_MS 10000

struct chain_opts {
  const char *node, *dir, *out, *keys;
  bool json;
  int argi; /* first positional argument */
};

static int parse_opts(int argc, char **argv, struct chain_opts *o)
{
  static const struct option opts[] = {{"node", 1, 0, 'n'}, {"dir", 1, 0, 'd'},
                                       {"out", 1, 0, 'o'},  {"keys", 1, 0, 'k'},
                                       {"json", 0, 0, 'j'}, {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
    switch (c) {
    case 'n': o->node = optarg; break;
    case 'd': o->dir = optarg; break;
    case 'o': o->out = optarg; break;
    case 'k': o->keys = optarg; break;
    case 'j': o->json = true; break;
    default: return 2;
    }
  }
  o->argi = optind;
  return 0;
}

/* One request to the first reachable node of the list. */
static int call(const char *nodes, const Medshard__CtlRequest *req, Medshard__CtlResponse **resp,
                uint8_t **payload, size_t *plen)
{
  char one[128];
  int rc = MSD_EUNAVAILABLE;
  for (const char *p = nodes; p != NULL && *p != 0;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    snprintf(one, sizeof one, "%.*s", (int)(len < 127 ? len : 127), p);
    struct ctl_client *c;
    rc = ctl_client_connect(one, 3000, &c);
    if (rc == 0) {
      rc = ctl_client_call(c, req, CALL_MS, resp, payload, plen);
      ctl_client_close(c);
    }
    if (rc == 0)
      return 0;
    p = comma ? comma + 1 : NULL;
  }
  fprintf(stderr, "medshard: cannot reach the cluster at %s: %s\n", nodes, msd_strerror(rc));
  return rc;
}

static Medshard__CtlRequest request(Medshard__CtlOp op)
{
  Medshard__CtlRequest r = MEDSHARD__CTL_REQUEST__INIT;
  r.format_version = 1;
  r.op = op;
  return r;
}

static int chain_head(const struct chain_opts *o)
{
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_HEAD);
  Medshard__CtlResponse *r;
  if (call(o->node, &req, &r, NULL, NULL) != 0)
    return 1;
  const Medshard__ChainHead *h = r->head;
  char head[65], root[65];
  if (h == NULL || h->head.len != 32 || h->root.len != 32) {
    fprintf(stderr, "medshard chain head: node sent no head\n");
    medshard__ctl_response__free_unpacked(r, NULL);
    return 1;
  }
  cli_hex(h->head.data, 32, head);
  cli_hex(h->root.data, 32, root);
  if (o->json) {
    printf("{\"node\":%" PRIu32 ",\"raft_state\":\"%s\",\"leader\":%" PRIu32 ",\"applied\":%" PRIu64
           ",\"leaves\":%" PRIu64 ",\"height\":%" PRIu64 ",\"sealed\":%" PRIu64
           ",\"head\":\"%s\",\"root\":\"%s\",\"epoch\":%" PRIu64 ",\"voters\":%" PRIu32
           ",\"alarm\":",
           h->node_id, h->raft_state, h->leader_id, h->applied, h->leaves, h->height, h->sealed,
           head, root, h->epoch, h->voters);
    cli_json_str(stdout, h->alarm);
    printf("}\n");
  } else {
    printf("node %" PRIu32 " (%s, leader %" PRIu32 ")\n  height %" PRIu64 " (sealed %" PRIu64
           ")  head %s\n  leaves %" PRIu64 "  root %s\n  raft applied %" PRIu64 "  voters %" PRIu32
           "  epoch %" PRIu64 "\n",
           h->node_id, h->raft_state, h->leader_id, h->height, h->sealed, head, h->leaves, root,
           h->applied, h->voters, h->epoch);
    if (h->alarm && h->alarm[0])
      printf("  ALARM: %s\n", h->alarm);
  }
  medshard__ctl_response__free_unpacked(r, NULL);
  return 0;
}

static void print_block(const Medshard__BlockRecord *b, const struct block_header *h, bool json)
{
  char prev[65], root[65], hash[65], sig[129];
  cli_hex(h->prev_hash, 32, prev);
  cli_hex(h->root, 32, root);
  cli_hex(b->hash.data, b->hash.len == 32 ? 32 : 0, hash);
  if (json) {
    printf("{\"height\":%" PRIu64 ",\"hash\":\"%s\",\"prev_hash\":\"%s\",\"size_before\":%" PRIu64
           ",\"size_after\":%" PRIu64 ",\"root\":\"%s\",\"raft_term\":%" PRIu64
           ",\"raft_index\":%" PRIu64 ",\"timestamp_ms\":%" PRIu64 ",\"epoch\":%" PRIu64
           ",\"sealed\":%s,\"voters\":%" PRIu32 ",\"cosigs\":[",
           h->height, hash, prev, h->size_before, h->size_after, root, h->raft_term, h->raft_index,
           h->timestamp_ms, h->epoch, b->sealed ? "true" : "false", b->voters);
    for (size_t i = 0; i < b->n_cosigs; i++)
      printf("%s{\"node\":%" PRIu32 ",\"signature\":\"%s\"}", i ? "," : "", b->cosigs[i]->node_id,
             cli_hex(b->cosigs[i]->signature.data, b->cosigs[i]->signature.len == 64 ? 64 : 0, sig));
    printf("]}\n");
    return;
  }
  printf("block %" PRIu64 "  %s\n  hash     %s\n  prev     %s\n  leaves   %" PRIu64 "..%" PRIu64
         "\n  root     %s\n  raft     term %" PRIu64 " index %" PRIu64 "\n  time     %" PRIu64
         " ms  epoch %" PRIu64 "\n  cosigned by",
         h->height, b->sealed ? "SEALED" : "not sealed", hash, prev, h->size_before, h->size_after,
         root, h->raft_term, h->raft_index, h->timestamp_ms, h->epoch);
  for (size_t i = 0; i < b->n_cosigs; i++)
    printf(" %" PRIu32, b->cosigs[i]->node_id);
  printf(" (%zu of %" PRIu32 " voters)\n", b->n_cosigs, b->voters);
}

static int chain_show(const struct chain_opts *o, int argc, char **argv)
{
  unsigned long height;
  if (o->argi >= argc || cli_parse_ulong(argv[o->argi], 1, UINT64_MAX >> 1, &height) != 0) {
    fprintf(stderr, "usage: medshard chain show HEIGHT [--node ADDR] [--json]\n");
    return 2;
  }
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK);
  req.height = height;
  Medshard__CtlResponse *r;
  if (call(o->node, &req, &r, NULL, NULL) != 0)
    return 1;
  struct block_header h;
  int rc = r->code != 0 ? r->code
           : r->block == NULL ? MSD_EDECODE
                              : block_decode(r->block->header.data, r->block->header.len, &h);
  if (rc == 0)
    print_block(r->block, &h, o->json);
  else
    fprintf(stderr, "medshard chain show: block %lu: %s\n", height,
            rc == MSD_ENOTFOUND ? "no such block yet" : msd_strerror(rc));
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc == 0 ? 0 : 1;
}

/* The cluster map's keys, as a trusted keys file would list them. */
static int fetch_keys(const char *node, struct chain_key *keys, size_t cap, size_t *n)
{
  int rc = ctl_fetch_keys(node, keys, cap, n);
  if (rc != 0)
    fprintf(stderr, "medshard: cannot read the cluster's keys from %s: %s\n", node,
            msd_strerror(rc));
  return rc == 0 ? 0 : 1;
}

static int chain_keys(const struct chain_opts *o)
{
  struct chain_key keys[64];
  size_t n, len;
  char text[64 * 100 + 64];
  if (fetch_keys(o->node, keys, 64, &n) != 0)
    return 1;
  if (chain_keys_format(keys, n, text, sizeof text, &len) != 0) {
    fprintf(stderr, "medshard chain keys: cannot format %zu keys\n", n);
    return 1;
  }
  FILE *f = o->out ? fopen(o->out, "w") : stdout;
  if (f == NULL) {
    fprintf(stderr, "medshard chain keys: cannot write %s: %s\n", o->out, strerror(errno));
    return 1;
  }
  fwrite(text, 1, len, f);
  if (f != stdout)
    fclose(f);
  return 0;
}

static int chain_proof(const struct chain_opts *o, int argc, char **argv)
{
  unsigned long leaf;
  if (o->argi >= argc || cli_parse_ulong(argv[o->argi], 0, UINT64_MAX >> 1, &leaf) != 0 ||
      o->out == NULL) {
    fprintf(stderr, "usage: medshard chain proof LEAF_INDEX -o FILE [--node ADDR]\n");
    return 2;
  }
  Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_PROOF);
  req.leaf_index = leaf;
  Medshard__CtlResponse *r;
  uint8_t *p = NULL;
  size_t plen = 0;
  if (call(o->node, &req, &r, &p, &plen) != 0)
    return 1;
  int rc = r->code;
  if (rc != 0)
    fprintf(stderr, "medshard chain proof: leaf %lu: %s\n", leaf,
            rc == MSD_ENOTFOUND ? "no such leaf, or no block covers it yet" : msd_strerror(rc));
  FILE *f = rc == 0 ? fopen(o->out, "wb") : NULL;
  if (rc == 0 && (f == NULL || fwrite(p, 1, plen, f) != plen)) {
    fprintf(stderr, "medshard chain proof: cannot write %s\n", o->out);
    rc = -EIO;
  }
  if (f)
    fclose(f);
  if (rc == 0 && !o->json)
    printf("proof of leaf %lu: %zu bytes -> %s\n", leaf, plen, o->out);
  else if (rc == 0)
    printf("{\"leaf_index\":%lu,\"bytes\":%zu,\"file\":\"%s\"}\n", leaf, plen, o->out);
  msd_free(p);
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc == 0 ? 0 : 1;
}

/* Downloads a node's chain file into path. */
static int download_chain(const char *node, const char *path)
{
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return -errno;
  int rc = 0;
  for (uint64_t off = 0; rc == 0;) {
    Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_CHAIN);
    req.offset = off;
    req.length = 1u << 20;
    Medshard__CtlResponse *r;
    uint8_t *p = NULL;
    size_t plen = 0;
    rc = call(node, &req, &r, &p, &plen);
    if (rc != 0)
      break;
    rc = r->code;
    if (rc == 0 && plen > 0 && fwrite(p, 1, plen, f) != plen)
      rc = -EIO;
    msd_free(p);
    medshard__ctl_response__free_unpacked(r, NULL);
    if (plen == 0)
      break;
    off += plen;
  }
  fclose(f);
  return rc;
}

/* Every block's cosignatures verify under the cluster's keys, and sealed
 * blocks have a voter majority. Returns the first bad height or 0. */
static uint64_t check_cosigs(const char *node, uint64_t height, char *why, size_t cap)
{
  struct chain_key keys[64];
  size_t nkeys = 0, voters = 0;
  if (fetch_keys(node, keys, 64, &nkeys) != 0) {
    snprintf(why, cap, "cannot fetch the cluster's keys");
    return 1;
  }
  for (size_t i = 0; i < nkeys; i++)
    voters += keys[i].voter;
  for (uint64_t h = 1; h <= height; h++) {
    Medshard__CtlRequest req = request(MEDSHARD__CTL_OP__CTL_OP_GET_BLOCK);
    req.height = h;
    Medshard__CtlResponse *r;
    if (call(node, &req, &r, NULL, NULL) != 0 || r->block == NULL) {
      snprintf(why, cap, "block record missing");
      return h;
    }
    size_t good = 0;
    for (size_t i = 0; i < r->block->n_cosigs; i++)
      for (size_t k = 0; k < nkeys; k++)
        if (keys[k].node_id == r->block->cosigs[i]->node_id && keys[k].voter &&
            r->block->hash.len == 32 && r->block->cosigs[i]->signature.len == 64 &&
            block_cosig_valid(r->block->hash.data, keys[k].pk, r->block->cosigs[i]->signature.data))
          good++;
    bool sealed = r->block->sealed;
    size_t total = r->block->n_cosigs;
    medshard__ctl_response__free_unpacked(r, NULL);
    if (good < total || (sealed && good <= voters / 2)) {
      snprintf(why, cap, "a cosignature does not verify with the signer's key");
      return h;
    }
  }
  return 0;
}

static int chain_verify_cmd(const struct chain_opts *o)
{
  char tmp[] = "/tmp/medshard-chain-XXXXXX", path[256];
  const char *file = NULL;
  if (o->dir != NULL) {
    snprintf(path, sizeof path, "%s/chain/chain", o->dir);
    file = path;
  } else {
    int fd = mkstemp(tmp);
    if (fd < 0 || (close(fd), download_chain(o->node, tmp)) != 0) {
      fprintf(stderr, "medshard chain verify: cannot download the chain from %s\n", o->node);
      unlink(tmp);
      return 1;
    }
    file = tmp;
  }
  struct chain_verify_report rep;
  int rc = chain_verify(file, &rep);
  char why[160] = "";
  uint64_t bad = 0;
  if (rc == 0 && o->dir == NULL)
    bad = check_cosigs(o->node, rep.blocks, why, sizeof why);
  if (o->dir == NULL)
    unlink(tmp);
  char head[65];
  cli_hex(rep.head, 32, head);
  if (rc != 0) {
    fprintf(stderr, "medshard chain verify: block %" PRIu64 " is bad (record at byte %" PRIu64
            "): %s\n", rep.bad_block, rep.bad_offset, rep.reason);
  } else if (bad != 0) {
    fprintf(stderr, "medshard chain verify: block %" PRIu64 ": %s\n", bad, why);
  } else if (o->json) {
    printf("{\"ok\":true,\"blocks\":%" PRIu64 ",\"leaves\":%" PRIu64 ",\"head\":\"%s\"}\n",
           rep.blocks, rep.leaves, head);
  } else {
    printf("chain OK: %" PRIu64 " blocks, %" PRIu64 " leaves, head %s%s\n", rep.blocks,
           rep.leaves, head, o->dir ? " (offline: cosignatures not checked)" : "");
  }
  if ((rc != 0 || bad != 0) && o->json)
    printf("{\"ok\":false,\"block\":%" PRIu64 "}\n", rc != 0 ? rep.bad_block : bad);
  return rc == 0 && bad == 0 ? 0 : 1;
}

int cmd_chain(int argc, char **argv)
{
  struct chain_opts o;
  const char *sub = argc > 1 ? argv[1] : NULL;
  if (sub == NULL || strcmp(sub, "--help") == 0) {
    fprintf(sub ? stdout : stderr,
            "usage: medshard chain head|show HEIGHT|verify|proof LEAF -o FILE|keys [-o FILE]\n"
            "                [--node HOST:PORT[,...]] [--json]\n"
            "       medshard chain verify --dir NODE_DIR   (offline, on a node's files)\n");
    return sub ? 0 : 2;
  }
  if (parse_opts(argc - 1, argv + 1, &o) != 0)
    return 2;
  o.argi += 1; /* positions are relative to argv + 1 */
  if (!(strcmp(sub, "verify") == 0 && o.dir != NULL) && (o.node = cli_cluster(o.node, "chain")) == NULL)
    return 2;
  if (strcmp(sub, "head") == 0)
    return chain_head(&o);
  if (strcmp(sub, "show") == 0)
    return chain_show(&o, argc, argv);
  if (strcmp(sub, "verify") == 0)
    return chain_verify_cmd(&o);
  if (strcmp(sub, "proof") == 0)
    return chain_proof(&o, argc, argv);
  if (strcmp(sub, "keys") == 0)
    return chain_keys(&o);
  fprintf(stderr, "medshard chain: unknown subcommand '%s' (head, show, verify, proof, keys)\n", sub);
  return 2;
}

static int read_file(const char *path, uint8_t **buf, size_t *len, size_t max)
{
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return -errno;
  *buf = msd_malloc(max);
  *len = *buf ? fread(*buf, 1, max, f) : 0;
  bool too_big = *buf && *len == max && fgetc(f) != EOF;
  fclose(f);
  if (*buf == NULL || too_big) {
    msd_free(*buf);
    return *buf == NULL ? -ENOMEM : MSD_EPARAM;
  }
  return 0;
}

int cmd_verify_proof(int argc, char **argv)
{
  struct chain_opts o;
  if (parse_opts(argc, argv, &o) != 0 || o.argi >= argc || o.keys == NULL) {
    fprintf(stderr, "usage: medshard verify-proof FILE --keys TRUSTED_KEYS_FILE [--json]\n"
                    "Checks a proof bundle offline: leaf -> inclusion path -> block root ->\n"
                    "block hash -> a majority of trusted voters' cosignatures.\n");
    return 2;
  }
  uint8_t *bundle, *ktext;
  size_t blen, klen, nkeys;
  struct chain_key keys[64];
  char err[200];
  if (read_file(argv[o.argi], &bundle, &blen, 1 << 20) != 0) {
    fprintf(stderr, "medshard verify-proof: cannot read %s\n", argv[o.argi]);
    return 2;
  }
  if (read_file(o.keys, &ktext, &klen, 1 << 20) != 0) {
    fprintf(stderr, "medshard verify-proof: cannot read keys file %s\n", o.keys);
    msd_free(bundle);
    return 2;
  }
  ktext[klen < (1 << 20) ? klen : klen - 1] = 0;
  int rc = chain_keys_parse((const char *)ktext, keys, 64, &nkeys, err, sizeof err);
  msd_free(ktext);
  if (rc != 0) {
    fprintf(stderr, "medshard verify-proof: %s: %s\n", o.keys, err);
    msd_free(bundle);
    return 2;
  }
  struct chain_proof_report rep;
  rc = chain_proof_verify(bundle, blen, keys, nkeys, &rep);
  msd_free(bundle);
  if (o.json)
    printf("{\"ok\":%s,\"leaf_index\":%" PRIu64 ",\"height\":%" PRIu64 ",\"cosigs\":%" PRIu32
           ",\"voters\":%" PRIu32 ",\"reason\":",
           rc == 0 ? "true" : "false", rep.leaf_index, rep.height, rep.valid_cosigs, rep.voters);
  if (o.json) {
    cli_json_str(stdout, rc == 0 ? "" : rep.reason);
    printf("}\n");
  } else if (rc == 0) {
    printf("proof OK: leaf %" PRIu64 " is in block %" PRIu64 " (tree size %" PRIu64
           "), cosigned by %" PRIu32 " of %" PRIu32 " trusted voters\n",
           rep.leaf_index, rep.height, rep.tree_size, rep.valid_cosigs, rep.voters);
  } else {
    fprintf(stderr, "medshard verify-proof: FAILED: %s\n", rep.reason);
  }
  return rc == 0 ? 0 : 1;
}

int cmd_bucket(int argc, char **argv)
{
  static const struct option opts[] = {{"node", 1, 0, 'n'}, {"ec", 1, 0, 'e'},
                                       {"unit", 1, 0, 'u'}, {"json", 0, 0, 'j'},
                                       {0, 0, 0, 0}};
  const char *node = NULL, *ec = "4+2";
  unsigned long unit = 1 << 20, k, m;
  bool json = false;
  int c;
  optind = 1;
  if (argc < 3 || strcmp(argv[1], "create") != 0) {
    fprintf(stderr, "usage: medshard bucket create NAME [--ec K+M] [--unit BYTES] [--node ADDR]"
                    " [--json]\n");
    return 2;
  }
  const char *name = argv[2];
  while ((c = getopt_long(argc - 2, argv + 2, "", opts, NULL)) != -1) {
    if (c == 'n') node = optarg;
    else if (c == 'e') ec = optarg;
    else if (c == 'j') json = true;
    else if (c != 'u' || cli_parse_ulong(optarg, 4096, 64ul << 20, &unit) != 0) return 2;
  }
  char kb[8], mb[8];
  if (sscanf(ec, "%7[0-9]+%7[0-9]", kb, mb) != 2 || cli_parse_ulong(kb, 1, 32, &k) != 0 ||
      cli_parse_ulong(mb, 0, 16, &m) != 0 || k + m > 48) {
    fprintf(stderr, "medshard bucket create: --ec must look like K+M with k 1..32, m 0..16,"
                    " k+m <= 48 (e.g. 4+2), got '%s'\n", ec);
    return 2;
  }
  if ((node = cli_cluster(node, "bucket")) == NULL)
    return 2;
  Medshard__CtlResponse *r;
  int rc = ctl_create_bucket(node, name, (uint32_t)k, (uint32_t)m, (uint32_t)unit, &r);
  if (rc != 0) {
    fprintf(stderr, "medshard bucket create: cluster at %s: %s\n", node, msd_strerror(rc));
    return 1;
  }
  rc = r->code != 0 ? r->code : r->n_outcomes == 1 ? r->outcomes[0]->code : MSD_EDECODE;
  const char *msg = r->code != 0 ? r->message : r->n_outcomes == 1 ? r->outcomes[0]->message : "";
  if (json) {
    printf("{\"ok\":%s,\"bucket\":", rc == 0 ? "true" : "false");
    cli_json_str(stdout, name);
    printf(",\"k\":%lu,\"m\":%lu,\"unit\":%lu,\"message\":", k, m, unit);
    cli_json_str(stdout, msg);
    printf("}\n");
  } else if (rc == 0) {
    printf("%s\n", msg);
  } else {
    fprintf(stderr, "medshard bucket create: %s\n", msg);
  }
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc == 0 ? 0 : 1;
}
