/* The orphan sweep (sweep.h): one thread per node, blocking clients to the
 * node's own data and control ports, and the Raft leader's control port
 * for the answers that may delete. */
#include "cluster/sweep.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "chain-anchor/ctl_client.h"
#include "chain-anchor/ctl_ops.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "net/data_client.h"
#include "net/shard_list.h"

#define PAGE 1024     /* shards asked for per SHARD_LIST */
#define PAGE_BYTES (SHARD_LIST_HEADER + PAGE * SHARD_LIST_RECORD)
#define MARKS 256     /* (time, seq) marks kept at most */
#define CALL_MS 5000  /* one request to a port, answer included */
#define CONNECT_MS 2000
#define NS 1000000000ull

enum verdict { V_LIVE, V_ORPHAN, V_DOUBT };
enum stage { LOCAL, LEADER };

/* At `ms` (monotonic) the store's highest sequence number was `seq`: every
 * shard whose seal has a number at or below it was sealed by then. */
struct mark {
  uint64_t ms, seq;
};

/* A shard this pass found unnamed, and why. */
struct orphan {
  struct shard_list_entry e;
  char why[160];
};

struct sweep {
  struct sweep_opts o;
  char control[128], data[128], leader_addr[128];
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled by sweep_stop */
  bool stopping;
  struct mark marks[MARKS]; /* oldest first */
  size_t nmarks;
  uint64_t next_lookup_ns;  /* the rate limit's next free slot */
  struct data_client *dc;   /* this node's data port */
  struct ctl_client *ctl[2];/* this node's control port, the leader's */
  uint32_t leader_id;
  /* The last object looked up at each stage: the several shards of one
   * object that a node may hold cost one lookup. */
  struct {
    uint8_t oid[STORE_OID_BYTES];
    Medshard__CtlResponse *r;
  } cache[2];
  uint8_t page_buf[PAGE_BYTES];
  struct shard_list_entry page[PAGE];
  struct orphan orphans[PAGE];
  struct {
    uint64_t scanned, candidates, reclaimed, doubt;
    const char *doubt_why; /* the last reason a candidate was kept in doubt */
  } pass;
};

static bool stopping(struct sweep *s)
{
  pthread_mutex_lock(&s->mu);
  bool stop = s->stopping;
  pthread_mutex_unlock(&s->mu);
  return stop;
}

/* Sleeps until deadline_ns (msd_now_ns) unless stopped; false once stopping. */
static bool nap_until(struct sweep *s, uint64_t deadline_ns)
{
  pthread_mutex_lock(&s->mu);
  while (!s->stopping && msd_now_ns() < deadline_ns) {
    struct timespec ts = {(time_t)(deadline_ns / NS), (long)(deadline_ns % NS)};
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
  }
  bool go = !s->stopping;
  pthread_mutex_unlock(&s->mu);
  return go;
}

/* Waits for the next lookup slot: at most lookups_per_s a second, so a
 * store of millions of shards loads the control plane by a fixed amount
 * (its pass just takes longer). False once stopping. */
static bool pace(struct sweep *s)
{
  uint64_t now = msd_now_ns(), at = s->next_lookup_ns > now ? s->next_lookup_ns : now;
  s->next_lookup_ns = at + NS / s->o.lookups_per_s;
  return nap_until(s, at);
}

static void oid_hex(const uint8_t oid[STORE_OID_BYTES], char out[2 * STORE_OID_BYTES + 1])
{
  for (int i = 0; i < STORE_OID_BYTES; i++)
    snprintf(out + 2 * i, 3, "%02x", oid[i]);
}

/* ---- the node's own data port ---- */

static int data_call(struct sweep *s, Medshard__DataRequest *q, Medshard__DataResponse **r,
                     size_t *got)
{
  int rc = 0;
  if (s->dc == NULL && (rc = data_client_connect(s->data, CONNECT_MS, &s->dc)) != 0)
    s->dc = NULL;
  if (rc == 0)
    rc = data_client_call(s->dc, q, NULL, 0, CALL_MS, r, s->page_buf, sizeof s->page_buf, got);
  if (rc != 0) { /* the connection is unusable after a transport error */
    data_client_close(s->dc);
    s->dc = NULL;
  }
  return rc;
}

/* One SHARD_LIST page after *cursor (NULL: from the first) into s->page:
 * *n entries, the store's highest *seq, and in *cursor where the next page
 * starts when *more. 0, a transport error or the node's code. */
static int list_page(struct sweep *s, struct store_id *cursor, bool from_start, size_t *n,
                     uint64_t *seq, bool *more)
{
  Medshard__DataRequest q = MEDSHARD__DATA_REQUEST__INIT;
  Medshard__DataResponse *r;
  size_t got = 0;
  q.op = MEDSHARD__DATA_OP__DATA_OP_SHARD_LIST;
  q.length = PAGE;
  if (!from_start) {
    q.object_id = (ProtobufCBinaryData){STORE_OID_BYTES, cursor->oid};
    q.shard_index = cursor->index;
  }
  int rc = data_call(s, &q, &r, &got);
  if (rc != 0)
    return rc;
  int count = r->code == 0 ? shard_list_count(s->page_buf, got) : 0;
  rc = r->code != 0 ? r->code : count < 0 ? count : 0;
  if (rc == 0 && r->more && r->object_id.len != STORE_OID_BYTES)
    rc = MSD_EDECODE; /* more, but nowhere to resume from */
  if (rc == 0) {
    *n = (size_t)count;
    *seq = r->seq;
    *more = r->more;
    if (r->more)
      memcpy(cursor->oid, r->object_id.data, STORE_OID_BYTES), cursor->index = r->shard_index;
    for (size_t i = 0; i < *n; i++)
      shard_list_entry(s->page_buf, i, &s->page[i]);
  }
  medshard__data_response__free_unpacked(r, NULL);
  return rc;
}

/* SHARD_DELETE of an orphan on this node, logged. */
static void reclaim(struct sweep *s, const struct orphan *o)
{
  Medshard__DataRequest q = MEDSHARD__DATA_REQUEST__INIT;
  Medshard__DataResponse *r;
  size_t got;
  char hex[2 * STORE_OID_BYTES + 1];
  oid_hex(o->e.id.oid, hex);
  q.op = MEDSHARD__DATA_OP__DATA_OP_SHARD_DELETE;
  q.object_id = (ProtobufCBinaryData){STORE_OID_BYTES, (uint8_t *)o->e.id.oid};
  q.shard_index = o->e.id.index;
  int rc = data_call(s, &q, &r, &got);
  if (rc == 0) {
    rc = r->code;
    medshard__data_response__free_unpacked(r, NULL);
  }
  if (rc == MSD_EDELETED || rc == MSD_ENOSHARD)
    return; /* someone else deleted it meanwhile (an abandoned PUT's coordinator) */
  if (rc != 0) {
    s->pass.doubt++;
    s->pass.doubt_why = "a SHARD_DELETE on this node failed";
    msd_log(MSD_LOG_WARN, "sweep: node %" PRIu32 " cannot delete orphan shard %" PRIu32
            " of object %s on %s: %s; the next pass tries again", s->o.node_id, o->e.id.index,
            hex, s->data, msd_strerror(rc));
    return;
  }
  s->pass.reclaimed++;
  msd_log(MSD_LOG_INFO, "sweep: node %" PRIu32 " reclaimed shard %" PRIu32 " of object %s (%"
          PRIu64 " bytes, seal seq %" PRIu64 "): %s", s->o.node_id, o->e.id.index, hex, o->e.size,
          o->e.seq, o->why);
}

/* ---- the control plane ---- */

/* One request on a kept connection to addr, (re)connecting as needed.
 * 0 with *r the caller's, whatever its code, or a transport error. */
static int ctl_call(struct sweep *s, enum stage st, const char *addr, Medshard__CtlRequest *q,
                    Medshard__CtlResponse **r)
{
  int rc = 0;
  q->format_version = 1;
  if (s->ctl[st] == NULL && (rc = ctl_client_connect(addr, CONNECT_MS, &s->ctl[st])) != 0)
    s->ctl[st] = NULL;
  if (rc == 0)
    rc = ctl_client_call(s->ctl[st], q, CALL_MS, r, NULL, NULL);
  if (rc != 0) {
    ctl_client_close(s->ctl[st]);
    s->ctl[st] = NULL;
  }
  return rc;
}

static void cache_drop(struct sweep *s, enum stage st)
{
  if (s->cache[st].r != NULL)
    medshard__ctl_response__free_unpacked(s->cache[st].r, NULL);
  s->cache[st].r = NULL;
}

/* HEAD through stage st: 0 with *r the caller's and (*r)->head set. */
static int head(struct sweep *s, enum stage st, Medshard__CtlResponse **r)
{
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  q.op = MEDSHARD__CTL_OP__CTL_OP_HEAD;
  int rc = ctl_call(s, st, st == LOCAL ? s->control : s->leader_addr, &q, r);
  if (rc == 0 && ((*r)->code != 0 || (*r)->head == NULL)) {
    rc = (*r)->code != 0 ? (*r)->code : MSD_EDECODE;
    medshard__ctl_response__free_unpacked(*r, NULL);
  }
  return rc;
}

/* The control address of node id in this node's cluster map. */
static int node_address(struct sweep *s, uint32_t id, char *out, size_t cap)
{
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  q.op = MEDSHARD__CTL_OP__CTL_OP_GET_NODES;
  int rc = ctl_call(s, LOCAL, s->control, &q, &r);
  if (rc != 0)
    return rc;
  rc = r->code != 0 ? r->code : ctl_node_address(r, id, out, cap);
  medshard__ctl_response__free_unpacked(r, NULL);
  return rc;
}

/* Whether the node at leader_addr says, itself, that it is leader_id and
 * the Raft leader, having applied at least *applied (raised to what it
 * reports). A node deposed without knowing it steps down within an
 * election timeout of losing its majority (libraft). */
static bool leader_says_so(struct sweep *s, uint64_t *applied, const char **why)
{
  Medshard__CtlResponse *r;
  if (head(s, LEADER, &r) != 0) {
    *why = "the Raft leader's control port does not answer";
    return false;
  }
  const Medshard__ChainHead *h = r->head;
  bool ok = h->node_id == s->leader_id && h->raft_state != NULL &&
            strcmp(h->raft_state, "leader") == 0 && h->applied >= *applied;
  if (ok)
    *applied = h->applied;
  else
    *why = "the node named leader does not lead, or lags this node";
  medshard__ctl_response__free_unpacked(r, NULL);
  return ok;
}

/* Finds the Raft leader through this node's HEAD and cluster map and
 * checks it on the leader itself (leader_says_so): 0 with *applied its
 * applied index, or MSD_EUNAVAILABLE with a reason in *why. */
static int leader_open(struct sweep *s, uint64_t *applied, const char **why)
{
  Medshard__CtlResponse *r;
  ctl_client_close(s->ctl[LEADER]);
  s->ctl[LEADER] = NULL;
  cache_drop(s, LEADER);
  if (head(s, LOCAL, &r) != 0) {
    *why = "this node's control port does not answer";
    return MSD_EUNAVAILABLE;
  }
  s->leader_id = r->head->leader_id;
  *applied = r->head->applied; /* the leader has applied at least what this node has */
  medshard__ctl_response__free_unpacked(r, NULL);
  if (s->leader_id == 0) {
    *why = "no Raft leader is known";
    return MSD_EUNAVAILABLE;
  }
  if (node_address(s, s->leader_id, s->leader_addr, sizeof s->leader_addr) != 0) {
    *why = "the Raft leader has no control address in the cluster map";
    return MSD_EUNAVAILABLE;
  }
  return leader_says_so(s, applied, why) ? 0 : MSD_EUNAVAILABLE;
}

/* GET_MANIFEST of oid at stage st (cached per stage): 0 with *out
 * borrowed until the next lookup, or a transport error, or MSD_ESTATE
 * when the sweep is stopping. */
static int lookup(struct sweep *s, enum stage st, const uint8_t *oid,
                  const Medshard__CtlResponse **out)
{
  if (s->cache[st].r != NULL && memcmp(s->cache[st].oid, oid, STORE_OID_BYTES) == 0) {
    *out = s->cache[st].r;
    return 0;
  }
  cache_drop(s, st);
  if (!pace(s))
    return MSD_ESTATE;
  Medshard__CtlRequest q = MEDSHARD__CTL_REQUEST__INIT;
  Medshard__CtlResponse *r;
  q.op = MEDSHARD__CTL_OP__CTL_OP_GET_MANIFEST;
  q.object_id = (ProtobufCBinaryData){STORE_OID_BYTES, (uint8_t *)oid};
  int rc = ctl_call(s, st, st == LOCAL ? s->control : s->leader_addr, &q, &r);
  if (rc != 0)
    return rc;
  memcpy(s->cache[st].oid, oid, STORE_OID_BYTES);
  s->cache[st].r = r;
  *out = r;
  return 0;
}

/* What a GET_MANIFEST answer says of shard e on this node: named here
 * (live), not named (orphan, with the reason in why), or not a clear
 * answer (doubt). */
static enum verdict judge(const struct sweep *s, const Medshard__CtlResponse *r,
                          const struct shard_list_entry *e, char *why, size_t cap)
{
  const Medshard__Manifest *m = r->manifest;
  if (r->code == MSD_ENOTFOUND) {
    snprintf(why, cap, "no manifest names its object (its PUT never committed)");
    return V_ORPHAN;
  }
  if (r->code != 0 || m == NULL || m->shard_map == NULL || m->object_id.len != STORE_OID_BYTES ||
      memcmp(m->object_id.data, e->id.oid, STORE_OID_BYTES) != 0)
    return V_DOUBT;
  if (m->deleted) {
    snprintf(why, cap, "its object, version %" PRIu64 " of %s/%s, was deleted", m->version,
             m->bucket ? m->bucket : "", m->key ? m->key : "");
    return V_ORPHAN;
  }
  const Medshard__ShardLocation *loc = NULL;
  for (size_t i = 0; i < m->shard_map->n_shards; i++)
    if (m->shard_map->shards[i]->index == e->id.index)
      loc = m->shard_map->shards[i];
  if (loc != NULL && loc->node_id == s->o.node_id)
    return V_LIVE;
  if (loc == NULL)
    snprintf(why, cap, "its object's shard map has no shard %" PRIu32, e->id.index);
  else if (loc->node_id == 0)
    snprintf(why, cap, "its object's shard map records shard %" PRIu32 " as a hole (sealed"
             " after its PUT gave up on it)", e->id.index);
  else
    snprintf(why, cap, "its object's shard map places shard %" PRIu32 " on node %" PRIu32,
             e->id.index, loc->node_id);
  return V_ORPHAN;
}

/* Looks shard e up at stage st and judges the answer. */
static enum verdict ask(struct sweep *s, enum stage st, const struct shard_list_entry *e,
                        char *why, size_t cap)
{
  const Medshard__CtlResponse *r;
  int rc = lookup(s, st, e->id.oid, &r);
  if (rc != 0) {
    s->pass.doubt_why = st == LOCAL ? "this node's control port did not answer a lookup"
                                    : "the Raft leader did not answer a lookup";
    return V_DOUBT;
  }
  enum verdict v = judge(s, r, e, why, cap);
  if (v == V_DOUBT)
    s->pass.doubt_why = "a manifest lookup gave an unclear answer";
  return v;
}

/* The orphans this node's own state found, confirmed one by one with the
 * Raft leader (a follower may lag: it may not have applied a PutObject
 * yet), and deleted only if the node still leads after the lookups. */
static void confirm_and_reclaim(struct sweep *s, size_t n)
{
  const char *why = NULL;
  uint64_t applied;
  if (leader_open(s, &applied, &why) != 0) {
    s->pass.doubt += n;
    s->pass.doubt_why = why;
    return;
  }
  size_t keep = 0;
  for (size_t i = 0; i < n && !stopping(s); i++) {
    struct orphan *o = &s->orphans[i];
    enum verdict v = ask(s, LEADER, &o->e, o->why, sizeof o->why);
    if (v == V_ORPHAN && keep++ != i)
      s->orphans[keep - 1] = *o;
    s->pass.doubt += v == V_DOUBT;
  }
  if (keep > 0 && !leader_says_so(s, &applied, &why)) {
    s->pass.doubt += keep;
    s->pass.doubt_why = why;
    return;
  }
  for (size_t i = 0; i < keep && !stopping(s); i++)
    reclaim(s, &s->orphans[i]);
}

/* ---- passes ---- */

/* The sequence number at or below which every shard is older than the
 * grace: the newest mark taken at least grace ago (0: none yet). Marks
 * older than that one are no longer needed. */
static uint64_t marks_threshold(struct sweep *s, uint64_t now_ms)
{
  uint64_t grace_ms = (uint64_t)s->o.grace_s * 1000;
  size_t best = 0;
  bool found = false;
  for (size_t i = 0; i < s->nmarks; i++)
    if (s->marks[i].ms + grace_ms <= now_ms)
      best = i, found = true;
  if (!found)
    return 0;
  memmove(s->marks, s->marks + best, (s->nmarks - best) * sizeof s->marks[0]);
  s->nmarks -= best;
  return s->marks[0].seq;
}

/* Notes (now, seq). The store keeps no seal times, so these marks are the
 * only clock a shard has; they live in memory, so a restarted node starts
 * with none and reclaims nothing until a grace has passed since its first
 * pass: a restart only delays reclaim, never hastens it. Marks closer than
 * grace / (MARKS / 2) to the last are skipped, and a full list takes no
 * more: both only make shards look younger, never older. */
static void mark_add(struct sweep *s, uint64_t now_ms, uint64_t seq)
{
  uint64_t spacing = (uint64_t)s->o.grace_s * 1000 / (MARKS / 2);
  if (s->nmarks == MARKS || (s->nmarks > 0 && now_ms - s->marks[s->nmarks - 1].ms < spacing))
    return;
  s->marks[s->nmarks++] = (struct mark){now_ms, seq};
}

/* Looks up the page's shards old enough to be candidates in this node's
 * own state, and has the ones it finds unnamed confirmed by the leader. */
static void sweep_page(struct sweep *s, size_t n, uint64_t threshold)
{
  size_t norphans = 0;
  for (size_t i = 0; i < n && !stopping(s); i++) {
    const struct shard_list_entry *e = &s->page[i];
    s->pass.scanned++;
    if (e->seq > threshold)
      continue; /* sealed less than a grace ago, or not known to be older */
    s->pass.candidates++;
    struct orphan *o = &s->orphans[norphans];
    enum verdict v = ask(s, LOCAL, e, o->why, sizeof o->why);
    if (v == V_ORPHAN)
      o->e = *e, norphans++;
    s->pass.doubt += v == V_DOUBT;
  }
  if (norphans > 0 && !stopping(s))
    confirm_and_reclaim(s, norphans);
}

/* Closes the pass's connections: the next pass, an interval later,
 * starts on fresh ones rather than on sockets a peer may have dropped. */
static void hang_up(struct sweep *s)
{
  data_client_close(s->dc);
  s->dc = NULL;
  for (int st = LOCAL; st <= LEADER; st++) {
    ctl_client_close(s->ctl[st]);
    s->ctl[st] = NULL;
    cache_drop(s, (enum stage)st); /* manifests change between passes (DeleteObject) */
  }
}

static void sweep_pass(struct sweep *s)
{
  uint64_t t0 = msd_now_ns(), threshold = marks_threshold(s, t0 / 1000000);
  struct store_id cursor;
  bool more = true, first = true;
  memset(&s->pass, 0, sizeof s->pass);
  while (more && !stopping(s)) {
    size_t n = 0;
    uint64_t seq = 0;
    int rc = list_page(s, &cursor, first, &n, &seq, &more);
    if (rc != 0) {
      msd_log(MSD_LOG_WARN, "sweep: node %" PRIu32 " cannot list its shards on %s: %s; the pass"
              " stops here", s->o.node_id, s->data, msd_strerror(rc));
      break;
    }
    if (first) /* taken after the answer: shards at or below seq were sealed by now */
      mark_add(s, msd_now_ns() / 1000000, seq);
    first = false;
    if (threshold == 0)
      break; /* no mark is a grace old yet: no shard can be a candidate */
    sweep_page(s, n, threshold);
  }
  msd_log(MSD_LOG_INFO, "sweep: node %" PRIu32 " pass done in %.1f s: %" PRIu64 " shards scanned, %"
          PRIu64 " older than the %u s grace, %" PRIu64 " reclaimed, %" PRIu64 " kept in doubt%s%s",
          s->o.node_id, (double)(msd_now_ns() - t0) / 1e9, s->pass.scanned, s->pass.candidates,
          s->o.grace_s, s->pass.reclaimed, s->pass.doubt,
          s->pass.doubt ? ": " : threshold == 0 ? " (no shard is known to be that old yet)" : "",
          s->pass.doubt && s->pass.doubt_why ? s->pass.doubt_why : "");
  hang_up(s);
}

static void *run(void *arg)
{
  struct sweep *s = arg;
  msd_log(MSD_LOG_INFO, "sweep: node %" PRIu32 " reclaims sealed shards that no manifest names"
          " once sealed over %u s ago, a pass every %u s, at most %u lookups/s", s->o.node_id,
          s->o.grace_s, s->o.interval_s, s->o.lookups_per_s);
  for (uint64_t next = msd_now_ns(); nap_until(s, next);) {
    sweep_pass(s);
    next = msd_now_ns() + (uint64_t)s->o.interval_s * NS;
  }
  return NULL;
}

static void release(struct sweep *s)
{
  hang_up(s);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  msd_free(s);
}

int sweep_start(const struct sweep_opts *o, struct sweep **out)
{
  struct sweep *s = msd_calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  s->o = *o;
  s->o.grace_s = o->grace_s ? o->grace_s : SWEEP_GRACE_S;
  s->o.interval_s = o->interval_s ? o->interval_s : SWEEP_INTERVAL_S;
  s->o.lookups_per_s = o->lookups_per_s ? o->lookups_per_s : SWEEP_LOOKUPS_PER_S;
  snprintf(s->control, sizeof s->control, "%s", o->control);
  snprintf(s->data, sizeof s->data, "%s", o->data);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the clock of msd_now_ns */
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&s->mu, NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); /* signals belong to the control loop */
  int rc = -pthread_create(&s->thread, NULL, run, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    release(s);
    return rc;
  }
  *out = s;
  return 0;
}

void sweep_stop(struct sweep *s)
{
  if (s == NULL)
    return;
  pthread_mutex_lock(&s->mu);
  s->stopping = true;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  release(s);
}
