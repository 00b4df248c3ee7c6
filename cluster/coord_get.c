/* A GET, coordinated (docs/dataplane.md "GET"): the manifest comes from
 * this node's chain state; each stripe of the wanted range is read from
 * the data shards that hold it (only the units the range covers), and when
 * a shard is a hole, unreachable, late or fails its checksum, from enough
 * other shards to decode it. Stripes go to the client in order through a
 * bounded window; a whole read is checked against the manifest's SHA-256
 * and its last frame says whether it matched. */
#include "cluster/coord_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sock.h"
#include "shard/stripe.h"

#define LATE_MS 2000       /* a shard this late is read around */
#define STUCK_MS 30000     /* ... and this late, given up on */
#define CLIENT_MS 60000    /* a client this long not taking bytes is gone */

enum { S_NONE, S_REQ, S_GOT, S_FAIL };

struct gslot {
  bool used, ready, emitted;
  uint64_t stripe;
  size_t lo, hi;       /* unit-local bytes read from each shard */
  uint64_t needed;     /* data shards the range covers */
  uint8_t st[EC_N_MAX];
  unsigned pending;    /* shard reads not yet answered */
  unsigned sending;    /* client frames not yet sent */
  uint64_t hash_end;   /* a whole read: its bytes end here in the hasher's count */
  uint8_t *data;       /* k units: the stripe's object bytes in order */
  uint8_t *parity;     /* m units */
};

struct gtarget {
  struct cio_peer p;
  uint32_t node;
  bool tried, bad;
  char why[200];
};

struct get {
  struct coord_worker *w;
  struct coord_job *j;
  Medshard__Manifest *mf;
  const char *bucket, *key;
  int k, m, n;
  size_t unit;
  uint64_t size, off, len;
  bool whole;
  uint64_t next_plan, next_out, last_stripe;
  unsigned window;
  struct gslot slot[STRIPE_WINDOW_MAX];
  struct gtarget t[EC_N_MAX];
  struct cio_peer client;
  uint64_t hashing;    /* bytes queued to the worker's hasher (a whole read) */
  bool final_sent, done;
  int err;
  char msg[600];
};

static void get_fail(struct get *g, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void get_fail(struct get *g, int code, const char *fmt, ...)
{
  if (g->err != 0)
    return;
  g->err = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g->msg, sizeof g->msg, fmt, ap);
  va_end(ap);
}

static uint8_t *shard_buf(struct get *g, struct gslot *s, int i)
{
  return i < g->k ? s->data + (size_t)i * g->unit : s->parity + (size_t)(i - g->k) * g->unit;
}

/* Shard i is not to be used again in this GET; the node hears of it as a
 * repair hint in the log (the repairer of issue 6 consumes these). */
static void shard_bad(struct get *g, int i, const char *why)
{
  struct gtarget *t = &g->t[i];
  if (t->bad)
    return;
  t->bad = true;
  snprintf(t->why, sizeof t->why, "%s", why);
  char oid[33];
  for (int b = 0; b < 16; b++)
    snprintf(oid + 2 * b, 3, "%02x", g->mf->object_id.data[b]);
  msd_log(MSD_LOG_WARN, "repair hint: shard %d of object %s (%s/%s) on node %" PRIu32 ": %s", i,
          oid, g->bucket, g->key, t->node, why);
}

static void on_sent(void *sess, struct cio_peer *p, void *tag, int err);
static void on_shard(void *sess, struct cio_peer *p, void *tag, int err,
                     const struct wire_header *h, const uint8_t *msg);

/* The connection to shard i's node, opened on first use. */
static bool target_ready(struct get *g, int i)
{
  struct gtarget *t = &g->t[i];
  if (t->bad)
    return false;
  if (t->tried)
    return !t->p.dead;
  t->tried = true;
  const Medshard__NodeInfo *ni = t->node ? coord_node(g->w, t->node) : NULL;
  if (t->node == 0) {
    shard_bad(g, i, "a hole in the shard map (awaiting repair)");
    return false;
  }
  int rc = ni == NULL ? MSD_ENOTFOUND
                      : cio_peer_open(g->w->io, &t->p, t->node, ni->data_address,
                                      COORD_CONNECT_MS, g, on_shard, on_sent);
  if (rc != 0) {
    char why[160];
    snprintf(why, sizeof why, "node unreachable: %s", msd_strerror(rc));
    shard_bad(g, i, why);
    return false;
  }
  return true;
}

#define TAG(slot, shard) ((void *)(uintptr_t)(((uintptr_t)(slot) << 8) | (uintptr_t)(shard)))

static bool request(struct get *g, unsigned si, int i)
{
  struct gslot *s = &g->slot[si];
  if (!target_ready(g, i))
    return false;
  Medshard__DataRequest r = MEDSHARD__DATA_REQUEST__INIT;
  r.format_version = 1;
  r.op = MEDSHARD__DATA_OP__DATA_OP_SHARD_READ;
  r.object_id = g->mf->object_id;
  r.shard_index = (uint32_t)i;
  r.offset = s->stripe * g->unit + s->lo;
  r.length = s->hi - s->lo;
  uint8_t msg[128];
  size_t mlen = medshard__data_request__pack(&r, msg);
  uint64_t id;
  if (cio_send(&g->t[i].p, WIRE_REQUEST, &id, msg, mlen, NULL, 0, NULL) != 0 ||
      cio_expect(&g->t[i].p, shard_buf(g, s, i) + s->lo, s->hi - s->lo, TAG(si, i)) != 0) {
    cio_fail(&g->t[i].p, "its queue is full"); /* UNTESTED: the window keeps it short */
    return false;
  }
  s->st[i] = S_REQ;
  s->pending++;
  return true;
}

/* Names the unusable shards, for the error. */
static void missing_list(struct get *g, char *out, size_t cap)
{
  size_t used = 0;
  out[0] = 0;
  for (int i = 0; i < g->n && used < cap; i++)
    if (g->t[i].bad)
      used += (size_t)snprintf(out + used, cap - used, "%sshard %d (node %" PRIu32 ": %s)",
                               used ? ", " : "", i, g->t[i].node, g->t[i].why);
}

/* Asks for more shards until k can answer for the stripe. */
static void degrade(struct get *g, unsigned si)
{
  struct gslot *s = &g->slot[si];
  int have = 0;
  for (int i = 0; i < g->n; i++)
    have += s->st[i] == S_GOT || s->st[i] == S_REQ;
  for (int i = 0; i < g->n && have < g->k; i++)
    if (s->st[i] == S_NONE && request(g, si, i))
      have++;
  if (have < g->k) {
    char list[400];
    missing_list(g, list, sizeof list);
    get_fail(g, MSD_ETOO_MANY_ERASURES,
             "%s/%s cannot be read: %d of its %d shards are unavailable and at most %d can be "
             "rebuilt: %s", g->bucket, g->key, g->n - have, g->n, g->m, list);
  }
}

static void plan(struct get *g, unsigned si, uint64_t stripe)
{
  struct gslot *s = &g->slot[si];
  uint8_t *data = s->data, *parity = s->parity;
  memset(s, 0, sizeof *s);
  s->data = data;
  s->parity = parity;
  s->used = true;
  s->stripe = stripe;
  uint64_t width = (uint64_t)g->k * g->unit, beg = stripe * width;
  uint64_t a = g->off > beg ? g->off - beg : 0;
  uint64_t b = (g->off + g->len < beg + width ? g->off + g->len : beg + width) - beg;
  uint64_t first = a / g->unit, last = (b - 1) / g->unit;
  for (uint64_t j = first; j <= last; j++)
    s->needed |= 1ull << j;
  s->lo = first == last ? a % g->unit : 0;
  s->hi = first == last ? (b - 1) % g->unit + 1 : g->unit;
  bool whole = true;
  for (int j = 0; j < g->k; j++)
    if ((s->needed >> j & 1) && !request(g, si, j))
      whole = false;
  if (!whole)
    degrade(g, si);
}

/* Decodes the missing needed shards once k answered. */
static void check_ready(struct get *g, unsigned si)
{
  struct gslot *s = &g->slot[si];
  if (s->ready || g->err != 0)
    return;
  uint64_t avail = 0, want = 0;
  int got = 0;
  bool waiting = false;
  for (int i = 0; i < g->n; i++) {
    if (s->st[i] == S_GOT && got < g->k)
      avail |= 1ull << i, got++;
    if (i < g->k && (s->needed >> i & 1) && s->st[i] != S_GOT) {
      want |= 1ull << i;
      waiting |= s->st[i] == S_REQ;
    }
  }
  if (want == 0) {
    s->ready = true;
    return;
  }
  if (got < g->k || waiting)
    return;
  unsigned char *ptr[EC_N_MAX];
  for (int i = 0; i < g->n; i++)
    ptr[i] = shard_buf(g, s, i) + s->lo;
  int rc = ec_decode(coord_codec(g->w, g->k, g->m), s->hi - s->lo, ptr, avail, want);
  if (rc != 0)
    get_fail(g, rc, "decoding stripe %" PRIu64 " of %s/%s failed: %s", s->stripe, g->bucket,
             g->key, msd_strerror(rc));
  s->ready = true;
}

static void on_shard(void *sess, struct cio_peer *p, void *tag, int err,
                     const struct wire_header *h, const uint8_t *msg)
{
  struct get *g = sess;
  unsigned si = (unsigned)((uintptr_t)tag >> 8);
  int i = (int)((uintptr_t)tag & 0xff);
  struct gslot *s = &g->slot[si];
  s->pending--;
  Medshard__DataResponse *r = err ? NULL : medshard__data_response__unpack(NULL, h->msg_len, msg);
  int code = err ? err : r == NULL ? MSD_EDECODE : r->code;
  char why[200];
  if (code == 0 && h->payload_len != s->hi - s->lo) {
    code = MSD_ESHORT;
    snprintf(why, sizeof why, "the shard gave %" PRIu32 " bytes where %zu were asked for",
             h->payload_len, s->hi - s->lo);
  } else if (code != 0) {
    snprintf(why, sizeof why, "%s", err ? p->why
                                        : r && r->message && r->message[0] ? r->message
                                                                           : msd_strerror(code));
  }
  if (code != 0) {
    shard_bad(g, i, why);
    s->st[i] = S_FAIL;
    if (g->err == 0)
      degrade(g, si);
  } else {
    s->st[i] = S_GOT;
  }
  if (r != NULL)
    medshard__data_response__free_unpacked(r, NULL);
  check_ready(g, si);
}

static void on_sent(void *sess, struct cio_peer *p, void *tag, int err)
{
  struct get *g = sess;
  (void)p;
  if (err != 0)
    get_fail(g, err, "the client went away (%s)", g->client.why);
  if (tag != NULL)
    g->slot[(uintptr_t)tag - 1].sending--;
}

static int respond(struct get *g, Medshard__DataResponse *r, const uint8_t *payload, size_t len,
                   void *tag)
{
  r->format_version = 1;
  uint8_t msg[1024]; /* a message of up to 600 bytes and small fields */
  size_t mlen = medshard__data_response__get_packed_size(r);
  if (mlen > sizeof msg)
    return MSD_EPARAM; /* UNTESTED: only small messages go this way */
  medshard__data_response__pack(r, msg);
  uint64_t id = g->j->id;
  return cio_send(&g->client, WIRE_RESPONSE, &id, msg, mlen, payload, len, tag);
}

/* Sends the ready stripes, in order, and frees the slots sent. */
static void emit(struct get *g)
{
  while (g->err == 0 && g->next_out <= g->last_stripe) {
    unsigned si = (unsigned)(g->next_out % g->window);
    struct gslot *s = &g->slot[si];
    if (!s->used || s->stripe != g->next_out || !s->ready)
      return;
    if (!s->emitted) {
      uint64_t width = (uint64_t)g->k * g->unit, beg = s->stripe * width;
      uint64_t a = g->off > beg ? g->off - beg : 0;
      uint64_t b = (g->off + g->len < beg + width ? g->off + g->len : beg + width) - beg;
      if (g->whole) { /* hashed by the worker's hasher while it is sent */
        coord_hash_push(g->w->hash, s->data + a, b - a);
        g->hashing += b - a;
        s->hash_end = g->hashing;
      }
      for (uint64_t o = a; o < b && g->err == 0; o += COORD_PAYLOAD) {
        size_t n = b - o < COORD_PAYLOAD ? (size_t)(b - o) : COORD_PAYLOAD;
        Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
        r.offset = beg + o;
        if (respond(g, &r, s->data + o, n, (void *)(uintptr_t)(si + 1)) != 0)
          get_fail(g, MSD_EUNAVAILABLE, "the client went away");
        else
          s->sending++;
      }
      s->emitted = true;
    }
    if (s->sending > 0 || s->pending > 0 || coord_hash_done(g->w->hash) < s->hash_end)
      return; /* its buffers are still in use (the hasher wakes us) */
    s->used = false;
    g->next_out++;
  }
}

static void fill_window(struct get *g)
{
  while (g->err == 0 && g->next_plan <= g->last_stripe &&
         g->next_plan < g->next_out + g->window) {
    unsigned si = (unsigned)(g->next_plan % g->window);
    if (g->slot[si].used)
      return;
    plan(g, si, g->next_plan++);
    check_ready(g, si);
  }
}

/* A late shard is read around while parity can stand in for it; once m
 * shards are already out, reading around would only fail the GET, so the
 * late one gets up to 30 s instead. */
static void check_late(struct get *g)
{
  int64_t now = msd_now_ms();
  int out = 0;
  for (int i = 0; i < g->n; i++)
    out += g->t[i].bad;
  for (int i = 0; i < g->n; i++) {
    struct gtarget *t = &g->t[i];
    if (!t->tried || t->p.dead || cio_pending(&t->p) == 0)
      continue;
    int64_t quiet = now - t->p.last_ms;
    if (out < g->m && quiet > LATE_MS) {
      cio_fail(&t->p, "late: no answer in 2 s");
      out++;
    } else if (quiet > STUCK_MS) {
      cio_fail(&t->p, "no answer in 30 s");
    }
  }
  if (g->client.out_n > 0 && now - g->client.last_ms > CLIENT_MS)
    get_fail(g, MSD_ETIMEDOUT, "the client took nothing for 60 s");
}

/* The final frame: the SHA-256 verdict of a whole read, or the error. */
static void send_final(struct get *g)
{
  Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
  r.last = true;
  r.offset = g->off + g->len;
  if (g->err == 0 && g->whole) {
    uint8_t sha[32];
    coord_hash_final(g->w->hash, sha); /* no wait: every slot waited for it */
    if (g->mf->sha256.len != 32 || memcmp(sha, g->mf->sha256.data, 32) != 0) {
      get_fail(g, MSD_ECHECKSUM, "%s/%s: the bytes read do not match the SHA-256 anchored for "
               "them: the object is corrupt", g->bucket, g->key);
      msd_log(MSD_LOG_ERROR, "coordinator: GET %s", g->msg);
    }
  }
  r.code = g->err;
  r.message = g->msg;
  g->final_sent = true;
  if (respond(g, &r, NULL, 0, NULL) != 0)
    g->done = true;
}

static void run(struct get *g)
{
  while (!g->done) {
    fill_window(g);
    emit(g);
    if (!g->final_sent && (g->err != 0 || g->next_out > g->last_stripe))
      send_final(g);
    if (g->final_sent && g->client.out_n == 0)
      break;
    if (g->client.dead || cio_run(g->w->io, 100) != 0)
      break;
    check_late(g);
  }
}

/* ---- set-up ---- */

static int load_manifest(struct get *g)
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST;
  req.bucket = (char *)g->bucket;
  req.key = (char *)g->key;
  int rc = ctl_call_any(g->w->c->control, &req, 5000, &r, NULL, NULL);
  if (rc == 0 && r->code == MSD_ENOTFOUND) {
    /* A PUT acknowledged through another node may not be applied here
     * yet; the leader has it. */
    char leader_first[1024];
    ctl_leader_first(g->w->c->control, leader_first, sizeof leader_first);
    medshard__ctl_response__free_unpacked(r, NULL);
    rc = ctl_call_any(leader_first, &req, 5000, &r, NULL, NULL);
  }
  if (rc != 0) {
    get_fail(g, MSD_EUNAVAILABLE, "this node's control plane does not answer: %s",
             msd_strerror(rc));
    return g->err;
  }
  if (r->code == MSD_ENOTFOUND)
    get_fail(g, MSD_ENOTFOUND, "%s/%s does not exist", g->bucket, g->key);
  else if (r->code != 0 || r->manifest == NULL || r->manifest->shard_map == NULL ||
           r->manifest->shard_map->policy == NULL || r->manifest->object_id.len != 16)
    get_fail(g, r->code ? r->code : MSD_EDECODE, "%s/%s: %s", g->bucket, g->key,
             r->message && r->message[0] ? r->message : "no usable manifest");
  g->mf = r->manifest;
  r->manifest = NULL;
  medshard__ctl_response__free_unpacked(r, NULL);
  return g->err;
}

static int setup(struct get *g)
{
  if (load_manifest(g) != 0)
    return g->err;
  const Medshard__ShardMap *sm = g->mf->shard_map;
  struct stripe_geom geom;
  if (stripe_geom_init(&geom, (int)sm->policy->k, (int)sm->policy->m, sm->policy->unit,
                       g->mf->size) != 0 || sm->policy->unit > COORD_PAYLOAD ||
      sm->n_shards != sm->policy->k + sm->policy->m) {
    get_fail(g, MSD_EDECODE, "%s/%s: its shard map is not one this node can read", g->bucket,
             g->key);
    return g->err;
  }
  g->k = geom.k, g->m = geom.m, g->n = geom.k + geom.m;
  g->unit = geom.unit;
  g->size = g->mf->size;
  const Medshard__DataRequest *req = g->j->req;
  g->whole = !req->has_range;
  g->off = req->has_range ? req->offset : 0;
  g->len = req->has_range ? req->length : g->size;
  if (req->has_range && (g->off >= g->size ? g->len > 0 || g->size > 0 : false)) {
    get_fail(g, MSD_ERANGE, "the range starts at byte %" PRIu64 ", past the end of %s/%s (%"
             PRIu64 " bytes)", g->off, g->bucket, g->key, g->size);
    return g->err;
  }
  if (g->len > g->size - g->off)
    g->len = g->size - g->off;
  for (int i = 0; i < g->n; i++)
    g->t[i].node = sm->shards[i]->node_id;
  uint64_t width = (uint64_t)g->k * g->unit;
  g->next_plan = g->next_out = g->off / width;
  g->last_stripe = g->len ? (g->off + g->len - 1) / width : 0;
  if (g->len == 0)
    g->next_out = g->next_plan = 1, g->last_stripe = 0; /* nothing to read */
  size_t per = (size_t)g->n * g->unit;
  g->window = coord_window(per, g->len ? g->last_stripe - g->next_plan + 1 : 1);
  uint8_t *arena = coord_arena(g->w, g->window * per);
  if (arena == NULL)
    get_fail(g, -ENOMEM, "out of memory for a GET's window"); /* UNTESTED */
  coord_hash_reset(g->w->hash);
  for (unsigned s = 0; s < g->window && g->err == 0; s++) {
    g->slot[s].data = arena + s * per;
    g->slot[s].parity = g->slot[s].data + (size_t)g->k * g->unit;
  }
  return g->err;
}

/* The first response: the manifest and the range that follows. */
static int start(struct get *g)
{
  Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
  r.manifest = g->mf;
  r.offset = g->off;
  r.size = g->len;
  r.last = g->len == 0 && !g->whole;
  int rc = coord_respond(g->client.fd, g->j->id, &r);
  if (rc != 0)
    get_fail(g, rc, "the client went away");
  return rc == 0 && r.last ? 1 : rc;
}

static void finish(struct get *g)
{
  for (int i = 0; i < g->n; i++)
    if (g->t[i].p.io != NULL)
      cio_peer_release(&g->t[i].p);
  int fd = cio_peer_detach(&g->client);
  for (int i = 0; i < EC_N_MAX; i++)
    msd_free(g->t[i].p.msg);
  msd_free(g->client.msg);
  if (fd >= 0)
    close(fd);
  coord_hash_cancel(g->w->hash); /* before the arena is reused */
  if (g->mf != NULL)
    medshard__manifest__free_unpacked(g->mf, NULL);
}

void coord_get(struct coord_worker *w, struct coord_job *j)
{
  struct get *g = msd_calloc(1, sizeof *g);
  if (g == NULL) {
    coord_refuse(j->fd, j->id, -ENOMEM, "out of memory"); /* UNTESTED */
    return;
  }
  g->w = w;
  g->j = j;
  g->bucket = j->req->bucket ? j->req->bucket : "";
  g->key = j->req->key ? j->req->key : "";
  cio_peer_adopt(w->io, &g->client, j->fd, g, NULL, on_sent);
  if (g->bucket[0] == 0 || g->key[0] == 0)
    get_fail(g, MSD_EPARAM, "a GET needs a bucket and a key");
  if (g->err == 0 && setup(g) == 0 && start(g) == 0)
    run(g);
  if (g->err != 0 && !g->final_sent) {
    int fd = cio_peer_detach(&g->client);
    if (fd >= 0)
      coord_refuse(fd, j->id, g->err, "%s", g->msg);
  } else if (g->err != 0) {
    msd_log(MSD_LOG_WARN, "coordinator: GET %s/%s failed: %s", g->bucket, g->key, g->msg);
  }
  finish(g);
  msd_free(g);
}
