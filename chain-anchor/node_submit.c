/* Submissions on the leader: commands from clients and from the node itself
 * are packed as they arrive and flushed into one Raft entry per loop
 * iteration (up to NODE_BATCH_MAX commands), so many small submissions
 * share one log write and one FSM transaction. When the entry applies,
 * each submission is answered with its commands' outcomes, read back from
 * the state by request id (a retry with the same ids gets the same
 * answer). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "chain-anchor/node_int.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"

uint64_t node__wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void node__random_id(uint8_t id[16])
{
  if (getrandom(id, 16, 0) != 16) { /* UNTESTED: getrandom does not fail for 16 bytes */
    uint64_t t = msd_now_ns();
    memcpy(id, &t, sizeof t);
    memset(id + 8, 0x5a, 8);
  }
}

static size_t varint(uint8_t *p, uint64_t v)
{
  size_t n = 0;
  do {
    p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v != 0);
  return n;
}

static void submission_free(struct submission *s)
{
  if (s == NULL)
    return;
  msd_free(s->rids);
  msd_free(s->wire);
  msd_free(s);
}

/* Packs cmds into s in CommandBatch wire form (field 3, length-delimited,
 * one record per command), so a batch is built by concatenation; id-less
 * commands get a random request id so their outcome can be found. */
static int pack_commands(struct submission *s, Medshard__Command **cmds, size_t ncmds)
{
  size_t total = 0;
  for (size_t i = 0; i < ncmds; i++) {
    if (cmds[i]->request_id.len != 0 && cmds[i]->request_id.len != 16)
      return MSD_EPARAM;
    /* tag + length varint + the command, plus room for a request id */
    total += 1 + 10 + medshard__command__get_packed_size(cmds[i]) + 18;
  }
  uint8_t *out = msd_malloc(total);
  s->rids = msd_malloc(ncmds * sizeof *s->rids);
  if (out == NULL || s->rids == NULL) {
    msd_free(out);
    return -ENOMEM;
  }
  size_t len = 0;
  for (size_t i = 0; i < ncmds; i++) {
    Medshard__Command *c = cmds[i];
    ProtobufCBinaryData keep = c->request_id;
    if (keep.len == 0) {
      node__random_id(s->rids[i]);
      c->request_id = (ProtobufCBinaryData){16, s->rids[i]};
    } else {
      memcpy(s->rids[i], keep.data, 16);
    }
    out[len++] = 3 << 3 | 2;
    len += varint(out + len, medshard__command__get_packed_size(c));
    len += medshard__command__pack(c, out + len);
    c->request_id = keep;
  }
  s->wire = out;
  s->wire_len = len;
  s->ncmds = ncmds;
  return 0;
}

/* Answers one submission after its entry applied (status 0) or failed. */
static void answer(struct node *n, struct submission *s, int status)
{
  if (s->conn == NULL || s->conn->closing)
    return;
  Medshard__CtlResponse resp = MEDSHARD__CTL_RESPONSE__INIT;
  Medshard__Outcome **outs = NULL;
  size_t nout = 0;
  char addr[NODE_ADDR_MAX];
  resp.format_version = 1;
  if (status != 0) {
    resp.code = MSD_ENOTLEADER;
    resp.message = "leadership changed before the entry committed; retry with the same request"
                   " ids (a retry never applies twice)";
    node__leader_hint(n, &resp, addr, sizeof addr);
  } else {
    outs = msd_calloc(s->ncmds, sizeof *outs);
    for (size_t i = 0; outs != NULL && i < s->ncmds; i++) {
      uint8_t *buf;
      size_t len;
      if (chain_fsm_outcome(n->fsm, s->rids[i], 16, &buf, &len) != 0)
        continue; /* UNTESTED: the entry applied, so every outcome is there */
      outs[nout++] = medshard__outcome__unpack(NULL, len, buf);
      msd_free(buf);
      if (outs[nout - 1] == NULL)
        nout--;
    }
    resp.outcomes = outs;
    resp.n_outcomes = nout;
    if (nout != s->ncmds) {
      resp.code = MSD_ECORRUPT;
      resp.message = "entry applied but some outcomes are missing";
    }
  }
  node__ctl_reply(s->conn, s->frame_id, &resp, NULL, 0);
  for (size_t i = 0; i < nout; i++)
    medshard__outcome__free_unpacked(outs[i], NULL);
  msd_free(outs);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
  (void)result;
  struct inflight *inf = req->data;
  struct node *n = inf->n;
  if (status != 0)
    msd_log(MSD_LOG_WARN, "node %u: entry not applied: %s", n->cfg.node_id, raft_strerror(status));
  while (inf->subs != NULL) {
    struct submission *s = inf->subs;
    inf->subs = s->next;
    answer(n, s, status);
    if (s->conn != NULL)
      node__conn_unref(s->conn);
    submission_free(s);
  }
  if (inf->has_cut)
    n->cut_inflight = false;
  n->inflight--;
  msd_free(inf);
}

/* Takes up to NODE_BATCH_MAX commands' submissions off the pending list
 * and appends them as one entry. */
/* libraft 0.15's raft_uv stores an entry's data unpadded but reads it back
 * as if padded to 8 bytes, so an entry of any other length comes back
 * from disk shifted (after a restart, or in a catch-up batch). CommandBatch
 * field 15 (`padding`, ignored) brings every entry to a multiple of 8.
 * buf has 9 spare bytes. Returns the new length. */
static size_t pad_to_8(uint8_t *buf, size_t len)
{
  size_t need = (8 - len % 8) % 8;
  if (need == 0)
    return len;
  if (need == 1)
    need = 9; /* tag and length take 2 bytes at least */
  buf[len++] = 15 << 3 | 2;
  buf[len++] = (uint8_t)(need - 2);
  memset(buf + len, 0, need - 2);
  return len + need - 2;
}

static int flush_one(struct node *n)
{
  struct inflight *inf = msd_calloc(1, sizeof *inf);
  if (inf == NULL)
    return -ENOMEM;
  inf->n = n;
  inf->req.data = inf;
  size_t cmds = 0, bytes = 0;
  struct submission **tail = &inf->subs;
  while (n->pending != NULL && (cmds == 0 || cmds + n->pending->ncmds <= NODE_BATCH_MAX)) {
    struct submission *s = n->pending;
    n->pending = s->next;
    s->next = NULL;
    *tail = s;
    tail = &s->next;
    cmds += s->ncmds;
    bytes += s->wire_len;
  }
  if (n->pending == NULL)
    n->pending_tail = NULL;
  n->pending_cmds -= cmds;
  uint8_t *buf = raft_malloc(bytes + 32); /* + version, time, padding */
  int rv = buf == NULL ? RAFT_NOMEM : 0;
  size_t len = 0;
  if (buf != NULL) {
    buf[len++] = 1 << 3; /* format_version = 1 */
    buf[len++] = 1;
    buf[len++] = 2 << 3; /* timestamp_ms */
    len += varint(buf + len, node__wall_ms());
    for (struct submission *s = inf->subs; s != NULL; s = s->next) {
      memcpy(buf + len, s->wire, s->wire_len);
      len += s->wire_len;
      inf->has_cut = inf->has_cut || s->is_cut;
    }
    len = pad_to_8(buf, len);
    struct raft_buffer rb = {.base = buf, .len = len};
    rv = raft_apply(&n->raft, &inf->req, &rb, 1, apply_cb);
    if (rv != 0)
      raft_free(buf); /* libraft takes the buffer only on success */
  }
  if (rv == 0) {
    n->inflight++;
    return 0;
  }
  msd_log(MSD_LOG_WARN, "node %u: cannot append an entry: %s", n->cfg.node_id, raft_strerror(rv));
  n->inflight++;
  apply_cb(&inf->req, rv, NULL); /* answers and frees the submissions */
  return 0;
}

static void flush_cb(uv_timer_t *t)
{
  struct node *n = t->data;
  n->flush_armed = false;
  while (n->pending != NULL)
    if (flush_one(n) != 0)
      break; /* UNTESTED: out of memory; the next submission retries */
}

int node__submit(struct node *n, struct ctl_conn *conn, uint64_t frame_id,
                 Medshard__Command **cmds, size_t ncmds, bool is_cut)
{
  if (ncmds == 0 || ncmds > NODE_BATCH_MAX)
    return MSD_EPARAM;
  struct submission *s = msd_calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  int rc = pack_commands(s, cmds, ncmds);
  if (rc != 0) {
    submission_free(s);
    return rc;
  }
  s->is_cut = is_cut;
  s->conn = conn;
  s->frame_id = frame_id;
  if (conn != NULL)
    conn->refs++;
  if (n->pending_tail != NULL)
    n->pending_tail->next = s;
  else
    n->pending = s;
  n->pending_tail = s;
  n->pending_cmds += ncmds;
  if (n->pending_cmds >= NODE_BATCH_MAX) {
    flush_cb(&n->flush);
  } else if (!n->flush_armed) {
    n->flush_armed = true;
    /* Zero timeout: runs after this loop iteration's reads, so everything
     * received meanwhile shares the entry. */
    uv_timer_start(&n->flush, flush_cb, 0, 0);
  }
  return 0;
}

void node__fail_pending(struct node *n, int code, const char *why)
{
  (void)code;
  (void)why;
  while (n->pending != NULL) {
    struct submission *s = n->pending;
    n->pending = s->next;
    answer(n, s, RAFT_LEADERSHIPLOST);
    if (s->conn != NULL)
      node__conn_unref(s->conn);
    submission_free(s);
  }
  n->pending_tail = NULL;
  n->pending_cmds = 0;
}

bool node__can_write(struct node *n, int *code, const char **why)
{
  struct chain_head h;
  if (n->stopping) {
    *code = MSD_EUNAVAILABLE;
    *why = "node is stopping";
    return false;
  }
  if (raft_state(&n->raft) != RAFT_LEADER) {
    *code = MSD_ENOTLEADER;
    *why = "this node is not the Raft leader; retry on the leader";
    return false;
  }
  if (n->ready_term != n->raft.current_term) {
    *code = MSD_EUNAVAILABLE;
    *why = "new leader is still applying its barrier; retry shortly";
    return false;
  }
  chain_fsm_head(n->fsm, &h);
  if (h.alarm[0] != 0) {
    *code = MSD_EDIVERGED;
    *why = "chain diverged on this node: writes halted (see the node's log)";
    return false;
  }
  return true;
}
