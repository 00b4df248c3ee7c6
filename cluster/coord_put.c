/* A PUT, coordinated (docs/dataplane.md "PUT"): the client's body is
 * hashed (SHA-256), striped and encoded through a bounded window, and each
 * stripe's k+m chunks are pipelined to the placement targets as
 * SHARD_APPENDs, all over the worker's io_uring. A target that fails or
 * stalls becomes a hole as long as k+1 shards stay healthy. Once every
 * healthy shard is sealed, the PutObject anchor is submitted through this
 * node's control port, and only its commit makes the answer a success. */
#include "cluster/coord_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <xxhash.h>

#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sock.h"
#include "shard/stripe.h"

#define STALL_MS 5000        /* a target this long without progress is a hole */
#define STUCK_MS 30000       /* ... even the last k+1 */
#define CLIENT_IDLE_MS 60000 /* a client this long silent mid-body is gone */
#define COMMIT_MS 30000

enum { TAG_OPEN = 1, TAG_APPEND, TAG_SEAL, TAG_ABORT };
#define TAG(kind, slot) ((void *)(uintptr_t)((kind) | ((uintptr_t)(slot) << 4)))
#define TAG_KIND(t) ((int)((uintptr_t)(t)&15))
#define TAG_SLOT(t) ((unsigned)((uintptr_t)(t) >> 4))

struct target {
  struct cio_peer p;
  uint32_t node;
  bool live, opened, sealed;
  unsigned waiting; /* responses still to come */
  XXH3_state_t *xxh;
  uint8_t digest[16];
};

struct put {
  struct coord_worker *w;
  struct coord_job *j;
  const char *bucket, *key;
  int k, m, n;
  size_t unit;
  unsigned window;
  uint8_t oid[16], salt[32], sha[32];
  struct stripe_enc *enc;
  /* The stripes handed out by the encoder. Each is held until every live
   * target has answered its APPEND and the hasher thread has digested its
   * body bytes (those ending at body offset slot_end). */
  struct stripe *slot[STRIPE_WINDOW_MAX];
  unsigned slot_wait[STRIPE_WINDOW_MAX];
  uint64_t slot_end[STRIPE_WINDOW_MAX];
  bool slot_hashing[STRIPE_WINDOW_MAX];
  struct cio_peer client;
  /* The client's next frame lands straight in the window (direct: the
   * encoder's reserved spans, no copy) when two spans hold a whole frame;
   * else, with stripes narrower than a frame, in the stage buffer, copied
   * from there into the encoder. */
  bool direct;
  struct stripe_span span[2];
  uint8_t *stage;
  size_t stage_len, stage_off;
  bool client_waiting, body_done, sealing;
  bool maybe_committed; /* the anchor's fate is unknown: keep the shards */
  uint64_t received;
  struct target t[EC_N_MAX];
  int live;
  int err;
  char msg[400];
};

static void put_fail(struct put *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void put_fail(struct put *p, int code, const char *fmt, ...)
{
  if (p->err != 0)
    return;
  p->err = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->msg, sizeof p->msg, fmt, ap);
  va_end(ap);
}

static void pack_digest(const XXH3_state_t *s, uint8_t out[16])
{
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s));
  memcpy(out, c.digest, 16);
}

/* Queues one shard request to target i (and its response). */
static void target_call(struct put *p, int i, Medshard__DataOp op, uint64_t off,
                        const uint8_t *payload, size_t len, void *tag)
{
  struct target *t = &p->t[i];
  Medshard__DataRequest r = MEDSHARD__DATA_REQUEST__INIT;
  r.format_version = 1;
  r.op = op;
  r.object_id = (ProtobufCBinaryData){16, p->oid};
  r.shard_index = (uint32_t)i;
  r.offset = off;
  if (op == MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN)
    r.length = off;
  if (op == MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL)
    r.digest = (ProtobufCBinaryData){16, t->digest};
  uint8_t msg[128];
  size_t mlen = medshard__data_request__pack(&r, msg);
  uint64_t id;
  if (cio_send(&t->p, WIRE_REQUEST, &id, msg, mlen, payload, len, NULL) != 0 ||
      cio_expect(&t->p, NULL, 0, tag) != 0) {
    cio_fail(&t->p, "its queue is full"); /* UNTESTED: the window keeps queues short */
    return;
  }
  t->waiting++;
}

/* Target i is out of this PUT: its shard becomes a hole. */
static void target_lost(struct put *p, int i, const char *why)
{
  struct target *t = &p->t[i];
  if (!t->live)
    return;
  t->live = false;
  p->live--;
  cio_fail(&t->p, why);
  msd_log(MSD_LOG_WARN, "coordinator: PUT %s/%s: shard %d on node %" PRIu32 " is a hole: %s",
          p->bucket, p->key, i, t->node, why);
  if (p->live < p->k + 1)
    put_fail(p, MSD_EUNAVAILABLE,
             "only %d of the %d shard targets of %s/%s are still writing; at least %d are needed",
             p->live, p->n, p->bucket, p->key, p->k + 1);
}

static unsigned slot_of(struct put *p, const struct stripe *st)
{
  for (unsigned s = 0; s < p->window; s++)
    if (p->slot[s] == NULL || p->slot[s] == st)
      return s;
  return p->window; /* UNTESTED: the encoder hands out at most `window` */
}

static void slot_done(struct put *p, unsigned s)
{
  if (s < p->window && p->slot[s] != NULL && --p->slot_wait[s] == 0) {
    stripe_enc_release(p->enc, p->slot[s]);
    p->slot[s] = NULL;
  }
}

/* Lets go of the stripes whose body bytes the hasher thread has digested. */
static void hash_progress(struct put *p)
{
  uint64_t done = coord_hash_done(p->w->hash);
  for (unsigned s = 0; s < p->window; s++)
    if (p->slot_hashing[s] && p->slot_end[s] <= done) {
      p->slot_hashing[s] = false;
      slot_done(p, s);
    }
}

/* Bytes every shard holds: whole units, one per stripe. */
static uint64_t stripe_enc_size_shard(const struct put *p)
{
  uint64_t width = (uint64_t)p->k * p->unit;
  return (stripe_enc_size(p->enc) + width - 1) / width * p->unit;
}

static void on_target_frame(void *sess, struct cio_peer *peer, void *tag, int err,
                            const struct wire_header *h, const uint8_t *msg)
{
  struct put *p = sess;
  int i = (int)(((struct target *)peer) - p->t);
  struct target *t = &p->t[i];
  t->waiting--;
  Medshard__DataResponse *r = err ? NULL : medshard__data_response__unpack(NULL, h->msg_len, msg);
  int code = err ? err : r == NULL ? MSD_EDECODE : r->code;
  if (code != 0) {
    char why[300];
    snprintf(why, sizeof why, "%s", err ? peer->why : r && r->message ? r->message : msd_strerror(code));
    target_lost(p, i, why);
  } else if (TAG_KIND(tag) == TAG_OPEN) {
    t->opened = true;
  } else if (TAG_KIND(tag) == TAG_SEAL && r->size != stripe_enc_size_shard(p)) {
    char why[160];
    snprintf(why, sizeof why, "sealed %" PRIu64 " bytes where %" PRIu64 " were sent", r->size,
             stripe_enc_size_shard(p));
    target_lost(p, i, why);
  } else if (TAG_KIND(tag) == TAG_SEAL) {
    t->sealed = true;
  }
  if (TAG_KIND(tag) == TAG_APPEND)
    slot_done(p, TAG_SLOT(tag));
  if (r != NULL)
    medshard__data_response__free_unpacked(r, NULL);
}

static void on_sent(void *sess, struct cio_peer *peer, void *tag, int err)
{
  (void)sess, (void)peer, (void)tag, (void)err; /* responses tell us all */
}

/* Whether a frame can always go straight into the window once stripes
 * are released: a whole stripe plus the rest of the filling one hold it. */
static bool direct_fits(const struct put *p)
{
  return (size_t)p->k * p->unit >= COORD_PAYLOAD && p->window >= 2;
}

/* Asks for the client's next frame, if there is room for one: the window
 * is the backpressure (a full one reads nothing until a target answers). */
static void expect_client(struct put *p)
{
  if (p->client_waiting || p->body_done || p->err != 0 || p->stage_off < p->stage_len)
    return;
  unsigned n = 0;
  stripe_enc_reserve(p->enc, p->span, 2, &n);
  size_t room = (n > 0 ? p->span[0].len : 0) + (n > 1 ? p->span[1].len : 0);
  int rc;
  if (room >= COORD_PAYLOAD) {
    size_t first = p->span[0].len < COORD_PAYLOAD ? p->span[0].len : COORD_PAYLOAD;
    rc = cio_expect_split(&p->client, p->span[0].p, first, n > 1 ? p->span[1].p : NULL,
                          COORD_PAYLOAD - first, NULL);
    p->direct = true;
  } else if (direct_fits(p)) {
    return; /* the reservation stays open; released stripes will extend it */
  } else {
    stripe_enc_commit(p->enc, 0);
    if (coord_hash_done(p->w->hash) < p->received)
      return; /* the hasher still reads the stage; it wakes us when done */
    rc = cio_expect(&p->client, p->stage, COORD_PAYLOAD, NULL);
    p->direct = false;
  }
  if (rc == 0)
    p->client_waiting = true;
}

/* A PUT_DATA frame of len bytes has arrived: into the window (the open
 * reservation takes them; stripes they fill are encoded) or the stage. */
static void body_arrived(struct put *p, size_t len)
{
  p->received += len;
  if (!p->direct) {
    p->stage_len = len;
    p->stage_off = 0;
    coord_hash_push(p->w->hash, p->stage, len);
    return;
  }
  size_t first = len < p->span[0].len ? len : p->span[0].len;
  coord_hash_push(p->w->hash, p->span[0].p, first);
  if (len > first)
    coord_hash_push(p->w->hash, p->span[1].p, len - first);
  stripe_enc_commit(p->enc, len); /* cannot fail: len <= the spans expected into */
  p->direct = false;
}

static void on_client_frame(void *sess, struct cio_peer *peer, void *tag, int err,
                            const struct wire_header *h, const uint8_t *msg)
{
  struct put *p = sess;
  (void)peer, (void)tag;
  p->client_waiting = false;
  if (err != 0) {
    put_fail(p, err, "the client went away after %" PRIu64 " bytes (%s)", p->received,
             p->client.why);
    return;
  }
  Medshard__DataRequest *r = medshard__data_request__unpack(NULL, h->msg_len, msg);
  Medshard__DataOp op = r ? r->op : MEDSHARD__DATA_OP__DATA_OP_UNSPECIFIED;
  if (r != NULL)
    medshard__data_request__free_unpacked(r, NULL);
  if (op != MEDSHARD__DATA_OP__DATA_OP_PUT_DATA && p->direct) {
    stripe_enc_commit(p->enc, 0); /* no body bytes: close the reservation */
    p->direct = false;
  }
  if (op == MEDSHARD__DATA_OP__DATA_OP_PUT_DATA) {
    body_arrived(p, h->payload_len);
    if (p->j->req->has_size && p->received > p->j->req->length)
      put_fail(p, MSD_EPARAM, "the body is longer than the %" PRIu64 " bytes declared",
               p->j->req->length);
  } else if (op == MEDSHARD__DATA_OP__DATA_OP_PUT_END) {
    p->body_done = true;
    if (p->j->req->has_size && p->received != p->j->req->length)
      put_fail(p, MSD_ESHORT, "the body ended after %" PRIu64 " of the %" PRIu64
               " bytes declared", p->received, p->j->req->length);
    else
      stripe_enc_finish(p->enc);
  } else {
    put_fail(p, MSD_EFRAME, "a PUT's body must be PUT_DATA frames and one PUT_END");
  }
}

/* Sends every encoded stripe's chunks to the live targets. */
static void dispatch_stripes(struct put *p)
{
  struct stripe *st;
  while (p->err == 0 && (st = stripe_enc_next(p->enc)) != NULL) {
    unsigned s = slot_of(p, st);
    p->slot[s] = st;
    p->slot_wait[s] = 2; /* held until the loop below has queued them all, */
    p->slot_end[s] = st->index * (uint64_t)p->k * p->unit + st->data_len;
    p->slot_hashing[s] = true; /* ... and until hash_progress */
    for (int i = 0; i < p->n; i++) {
      XXH3_128bits_update(p->t[i].xxh, st->chunk[i], p->unit);
      if (!p->t[i].live)
        continue;
      p->slot_wait[s]++;
      target_call(p, i, MEDSHARD__DATA_OP__DATA_OP_SHARD_APPEND, st->index * p->unit,
                  st->chunk[i], p->unit, TAG(TAG_APPEND, s));
      if (p->t[i].waiting == 0) /* the call failed: nothing will answer */
        p->slot_wait[s]--;
    }
    slot_done(p, s);
  }
}

/* Moves the staged body into the encoder as far as the window allows. */
static void feed(struct put *p)
{
  while (p->err == 0 && p->stage_off < p->stage_len) {
    size_t took = 0;
    int rc = stripe_enc_write(p->enc, p->stage + p->stage_off, p->stage_len - p->stage_off, 0,
                              &took);
    p->stage_off += took;
    dispatch_stripes(p);
    if (rc == MSD_EWINDOW)
      return; /* wait for targets to acknowledge */
  }
  dispatch_stripes(p); /* the last, partial stripe appears at PUT_END */
  expect_client(p);
}

static bool window_empty(const struct put *p)
{
  for (unsigned s = 0; s < p->window; s++)
    if (p->slot[s] != NULL)
      return false;
  return true;
}

static void start_seal(struct put *p)
{
  p->sealing = true;
  for (int i = 0; i < p->n; i++) {
    pack_digest(p->t[i].xxh, p->t[i].digest);
    if (p->t[i].live)
      target_call(p, i, MEDSHARD__DATA_OP__DATA_OP_SHARD_SEAL, 0, NULL, 0, TAG(TAG_SEAL, 0));
  }
}

static bool all_sealed(const struct put *p)
{
  for (int i = 0; i < p->n; i++)
    if (p->t[i].live && !p->t[i].sealed)
      return false;
  return true;
}

static void check_stalls(struct put *p)
{
  int64_t now = msd_now_ms();
  /* A stalled target becomes a hole while k+1 others remain; the last
   * k+1 get up to 30 s, since dropping one would fail the PUT anyway. */
  for (int i = 0; i < p->n; i++) {
    int64_t quiet = p->t[i].live && p->t[i].waiting > 0 ? now - p->t[i].p.last_ms : 0;
    if ((p->live > p->k + 1 && quiet > STALL_MS) || quiet > STUCK_MS)
      target_lost(p, i, quiet > STUCK_MS ? "no answer for 30 s" : "no answer for 5 s");
  }
  if (p->client_waiting && now - p->client.last_ms > CLIENT_IDLE_MS)
    put_fail(p, MSD_ETIMEDOUT, "the client sent nothing for 60 s");
}

/* Streams the body to the targets and seals: 0 when every live shard is
 * sealed, else p->err. */
static int stream(struct put *p)
{
  for (int i = 0; i < p->n; i++)
    if (p->t[i].live)
      target_call(p, i, MEDSHARD__DATA_OP__DATA_OP_SHARD_OPEN, 0, NULL, 0, TAG(TAG_OPEN, 0));
  expect_client(p);
  while (p->err == 0) {
    if (cio_run(p->w->io, 100) != 0) {
      put_fail(p, MSD_EUNAVAILABLE, "the coordinator's io_uring failed");
      break;
    }
    check_stalls(p);
    hash_progress(p);
    feed(p);
    if (p->body_done && !p->sealing && window_empty(p) && p->err == 0)
      start_seal(p);
    if (p->sealing && all_sealed(p))
      return p->err;
  }
  return p->err;
}

/* ---- set-up ---- */

static int bucket_policy(struct put *p, uint32_t *k, uint32_t *m, uint32_t *unit)
{
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  req.op = MEDSHARD__CTL_OP__CTL_OP_GET_BUCKET;
  req.bucket = (char *)p->bucket;
  int rc = ctl_call_any(p->w->c->control, &req, 5000, &r, NULL, NULL);
  if (rc == 0 && r->code == MSD_ENOTFOUND) {
    /* This node may not have applied a bucket just created: the leader has. */
    char leader_first[1024];
    ctl_leader_first(p->w->c->control, leader_first, sizeof leader_first);
    medshard__ctl_response__free_unpacked(r, NULL);
    rc = ctl_call_any(leader_first, &req, 5000, &r, NULL, NULL);
  }
  if (rc != 0) {
    put_fail(p, MSD_EUNAVAILABLE, "this node's control plane does not answer: %s",
             msd_strerror(rc));
    return rc;
  }
  rc = r->code;
  if (rc == MSD_ENOTFOUND)
    put_fail(p, rc, "bucket %s does not exist", p->bucket);
  else if (rc != 0 || r->bucket == NULL || r->bucket->policy == NULL)
    put_fail(p, rc ? rc : MSD_EDECODE, "bucket %s: %s", p->bucket,
             r->message && r->message[0] ? r->message : msd_strerror(rc ? rc : MSD_EDECODE));
  else
    *k = r->bucket->policy->k, *m = r->bucket->policy->m, *unit = r->bucket->policy->unit;
  medshard__ctl_response__free_unpacked(r, NULL);
  return p->err;
}

/* Small objects get a smaller unit (down to 4 KiB) so their shards are
 * not mostly padding; the bucket's unit is the ceiling. */
static size_t pick_unit(const Medshard__DataRequest *req, uint32_t k, uint32_t bucket_unit)
{
  size_t unit = bucket_unit ? bucket_unit : STRIPE_UNIT_DEFAULT;
  if (!req->has_size)
    return unit;
  uint64_t per_shard = (req->length + k - 1) / k;
  uint64_t u = (per_shard + 4095) / 4096 * 4096;
  if (u < STRIPE_UNIT_MIN)
    u = STRIPE_UNIT_MIN;
  return u < unit ? (size_t)u : unit;
}

/* Places the object and connects to its k+m targets. */
static int open_targets(struct put *p)
{
  uint32_t nodes[EC_N_MAX];
  int rc = coord_place(p->w, p->k, p->m, p->oid, nodes);
  if (rc != 0) {
    put_fail(p, rc, "cannot place %d shards: %s", p->n, msd_strerror(rc));
    return p->err;
  }
  /* Every target counts as live until all connects are tried: a refused
   * connect is judged against the whole set (k+1 of n), not against the
   * targets opened before it. */
  int open_rc[EC_N_MAX];
  for (int i = 0; i < p->n; i++) {
    struct target *t = &p->t[i];
    t->node = nodes[i];
    t->p.fd = -1; /* not opened yet: cio_fail must not shut down fd 0 */
    t->live = true;
    p->live++;
    t->xxh = XXH3_createState();
    if (t->xxh == NULL || XXH3_128bits_reset(t->xxh) != XXH_OK) {
      put_fail(p, -ENOMEM, "out of memory for shard digests");
      return p->err;
    }
  }
  for (int i = 0; i < p->n; i++) {
    struct target *t = &p->t[i];
    const Medshard__NodeInfo *ni = coord_node(p->w, t->node);
    open_rc[i] = ni ? cio_peer_open(p->w->io, &t->p, t->node, ni->data_address, COORD_CONNECT_MS,
                                    p, on_target_frame, on_sent)
                    : MSD_ENOTFOUND;
  }
  for (int i = 0; i < p->n && p->err == 0; i++)
    if (open_rc[i] != 0)
      target_lost(p, i, msd_strerror(open_rc[i]));
  return p->err;
}

static int setup(struct put *p)
{
  uint32_t k = 0, m = 0, bunit = 0;
  if (bucket_policy(p, &k, &m, &bunit) != 0)
    return p->err;
  p->k = (int)k, p->m = (int)m, p->n = (int)(k + m);
  p->unit = pick_unit(p->j->req, k, bunit);
  if (p->unit > COORD_PAYLOAD) {
    put_fail(p, MSD_EUNIT, "bucket %s's unit of %zu bytes is over the %u-byte frame bound",
             p->bucket, p->unit, COORD_PAYLOAD);
    return p->err;
  }
  size_t per_stripe = (size_t)p->n * p->unit;
  uint64_t width = (uint64_t)p->k * p->unit;
  p->window = coord_window(per_stripe, p->j->req->has_size
                                           ? (p->j->req->length + width - 1) / width
                                           : UINT64_MAX);
  uint8_t *arena = coord_arena(p->w, p->window * per_stripe);
  if (getrandom(p->oid, sizeof p->oid, 0) != sizeof p->oid ||
      getrandom(p->salt, sizeof p->salt, 0) != sizeof p->salt) {
    put_fail(p, -EIO, "no randomness for the object id"); /* UNTESTED */
    return p->err;
  }
  struct ec_codec *ec = coord_codec(p->w, p->k, p->m);
  p->stage = msd_malloc(COORD_PAYLOAD);
  coord_hash_reset(p->w->hash);
  if (ec == NULL || p->stage == NULL || arena == NULL ||
      stripe_enc_create_in(ec, p->unit, p->window, arena, p->window * per_stripe, &p->enc) != 0) {
    put_fail(p, -ENOMEM, "out of memory for a PUT's window");
    return p->err;
  }
  return open_targets(p);
}

/* ---- commit ---- */

static void fill_manifest(struct put *p, Medshard__Manifest *mf, Medshard__ShardMap *sm,
                          Medshard__ErasurePolicy *pol, Medshard__ShardLocation *loc,
                          Medshard__ShardLocation **locp)
{
  pol->format_version = 1;
  pol->k = (uint32_t)p->k;
  pol->m = (uint32_t)p->m;
  pol->unit = (uint32_t)p->unit;
  for (int i = 0; i < p->n; i++) {
    medshard__shard_location__init(&loc[i]);
    loc[i].index = (uint32_t)i;
    loc[i].node_id = p->t[i].live && p->t[i].sealed ? p->t[i].node : 0; /* 0: a hole */
    loc[i].digest = (ProtobufCBinaryData){16, p->t[i].digest};
    locp[i] = &loc[i];
  }
  sm->format_version = 1;
  sm->policy = pol;
  sm->size = p->received;
  sm->n_shards = (size_t)p->n;
  sm->shards = locp;
  mf->format_version = 1;
  mf->object_id = (ProtobufCBinaryData){16, p->oid};
  mf->bucket = (char *)p->bucket;
  mf->key = (char *)p->key;
  mf->size = p->received;
  mf->sha256 = (ProtobufCBinaryData){32, p->sha};
  mf->salt = (ProtobufCBinaryData){32, p->salt};
  mf->content_type = (char *)(p->j->req->content_type && p->j->req->content_type[0]
                                  ? p->j->req->content_type
                                  : "application/octet-stream");
  mf->shard_map = sm;
}

/* The manifest as the FSM stored it: what was submitted plus the version,
 * creation time and anchor its outcome carries. Built here rather than read
 * back, because a follower applies the entry only on the leader's next
 * heartbeat; a GET through a lagging node asks the leader (coord_get.c).
 * NULL when out of memory. */
static Medshard__Manifest *stored_manifest(Medshard__Manifest *mf, const Medshard__Outcome *o)
{
  if (o->anchor == NULL || o->anchor->leaf_hash.len != 32)
    return NULL; /* UNTESTED: the FSM fills the anchor of every PutObject */
  mf->format_version = 1;
  mf->version = o->version;
  mf->created_ms = o->created_ms;
  mf->anchor = o->anchor;
  size_t len = medshard__manifest__get_packed_size(mf);
  uint8_t *buf = msd_malloc(len ? len : 1);
  if (buf == NULL)
    return NULL;
  medshard__manifest__pack(mf, buf);
  Medshard__Manifest *copy = medshard__manifest__unpack(NULL, len, buf);
  msd_free(buf);
  return copy;
}

/* Submits PutObject. 0 once committed, with *out the manifest to return. */
static int commit(struct put *p, Medshard__Manifest **out)
{
  Medshard__Manifest mf = MEDSHARD__MANIFEST__INIT;
  Medshard__ShardMap sm = MEDSHARD__SHARD_MAP__INIT;
  Medshard__ErasurePolicy pol = MEDSHARD__ERASURE_POLICY__INIT;
  Medshard__ShardLocation loc[EC_N_MAX], *locp[EC_N_MAX];
  fill_manifest(p, &mf, &sm, &pol, loc, locp);
  Medshard__PutObject po = MEDSHARD__PUT_OBJECT__INIT;
  po.manifest = &mf;
  Medshard__Command cmd = MEDSHARD__COMMAND__INIT, *cmds[1] = {&cmd};
  cmd.body_case = MEDSHARD__COMMAND__BODY_PUT_OBJECT;
  cmd.put_object = &po;
  Medshard__CtlResponse *r = NULL;
  int rc = ctl_submit(p->w->c->control, cmds, 1, COMMIT_MS, &r, NULL, 0);
  if (rc != 0) {
    p->maybe_committed = true;
    put_fail(p, rc, "the anchor of %s/%s was not confirmed (%s): the object may or may not "
             "appear; check with stat before retrying", p->bucket, p->key, msd_strerror(rc));
    return rc;
  }
  const Medshard__Outcome *o = r->n_outcomes == 1 ? r->outcomes[0] : NULL;
  rc = r->code != 0 ? r->code : o == NULL ? MSD_EDECODE : o->code;
  if (rc != 0)
    put_fail(p, rc, "%s", o && o->message && o->message[0] ? o->message
                          : r->message && r->message[0] ? r->message : msd_strerror(rc));
  p->maybe_committed = rc == 0;
  if (rc == 0 && (*out = stored_manifest(&mf, o)) == NULL)
    put_fail(p, -ENOMEM, "%s/%s is stored and anchored at leaf %" PRIu64 ", but its manifest "
             "could not be copied for the answer (out of memory)", p->bucket, p->key,
             o->anchor ? o->anchor->leaf_index : 0);
  medshard__ctl_response__free_unpacked(r, NULL);
  return p->err;
}

/* ---- the end ---- */

/* Drops every shard written for a PUT that did not happen. Targets that
 * fail here keep an open shard their store drops when idle, or a sealed
 * one no manifest names (reclaimed by the orphan sweep). */
static void abandon(struct put *p)
{
  for (int i = 0; i < p->n; i++) {
    struct target *t = &p->t[i];
    if (!t->live || t->p.dead)
      continue;
    target_call(p, i, t->sealed ? MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE
                                : MEDSHARD__DATA_OP__DATA_OP_SHARD_ABORT,
                0, NULL, 0, TAG(TAG_ABORT, 0));
  }
  int64_t until = msd_now_ms() + 2000;
  for (;;) {
    bool busy = false;
    for (int i = 0; i < p->n; i++)
      busy |= p->t[i].p.io != NULL && !p->t[i].p.dead && p->t[i].waiting > 0;
    if (!busy || msd_now_ms() >= until || cio_run(p->w->io, 100) != 0)
      break;
  }
}

static void finish(struct put *p, Medshard__Manifest *stored)
{
  for (int i = 0; i < p->n; i++) {
    if (p->t[i].p.io != NULL)
      cio_peer_release(&p->t[i].p);
    msd_free(p->t[i].p.msg);
    XXH3_freeState(p->t[i].xxh);
  }
  int fd = cio_peer_detach(&p->client);
  msd_free(p->client.msg);
  if (fd >= 0 && p->err != 0) {
    coord_refuse(fd, p->j->id, p->err, "%s", p->msg);
  } else if (fd >= 0) {
    Medshard__DataResponse r = MEDSHARD__DATA_RESPONSE__INIT;
    r.manifest = stored;
    coord_respond(fd, p->j->id, &r);
    close(fd);
  }
  if (stored != NULL)
    medshard__manifest__free_unpacked(stored, NULL);
  coord_hash_cancel(p->w->hash); /* before the stage and the arena go */
  for (unsigned s = 0; s < p->window; s++)
    if (p->slot[s] != NULL)
      stripe_enc_release(p->enc, p->slot[s]);
  stripe_enc_destroy(p->enc);
  msd_free(p->stage);
}

void coord_put(struct coord_worker *w, struct coord_job *j)
{
  struct put *p = msd_calloc(1, sizeof *p);
  if (p == NULL) {
    coord_refuse(j->fd, j->id, -ENOMEM, "out of memory"); /* UNTESTED */
    return;
  }
  p->w = w;
  p->j = j;
  p->bucket = j->req->bucket;
  p->key = j->req->key;
  cio_peer_adopt(w->io, &p->client, j->fd, p, on_client_frame, on_sent);
  Medshard__Manifest *stored = NULL;
  if (p->bucket == NULL || p->bucket[0] == 0 || p->key == NULL || p->key[0] == 0 ||
      strlen(p->key) > 1024)
    put_fail(p, MSD_EPARAM, "a PUT needs a bucket and a key of 1-1024 bytes");
  if (p->err == 0 && setup(p) == 0 && stream(p) == 0) {
    coord_hash_final(p->w->hash, p->sha); /* done: every stripe waited for it */
    for (int i = 0; i < p->n; i++)
      if (!p->t[i].sealed)
        msd_log(MSD_LOG_WARN, "coordinator: %s/%s stored with shard %d as a hole (repair it)",
                p->bucket, p->key, i);
    commit(p, &stored);
  }
  if (p->err != 0 && !p->maybe_committed)
    abandon(p);
  if (p->err != 0)
    msd_log(MSD_LOG_WARN, "coordinator: PUT %s/%s failed: %s", p->bucket ? p->bucket : "",
            p->key ? p->key : "", p->msg);
  finish(p, stored);
  msd_free(p);
}
