/* The store's asynchronous engine (store.h "asynchronous use"): the ready
 * list of finished operations whose callbacks are due, the queue that
 * runs write-type operations (extent flushes, seals) one at a time, reads
 * waiting for I/O buffers, and store_poll, which drives them all without
 * blocking. The blocking calls are the same operations followed by
 * store__wait, so both paths share one implementation. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "storage/store_int.h"

/* Seals started together at most: bounds one batch's work and memory. */
#define SEAL_BATCH_MAX 256
/* Extent flushes in flight at once: the disk sees this queue depth. */
#define FLUSH_DEPTH 8

void store_io_stats(const struct store *s, struct store_io_stats *out)
{
  *out = s->stats;
}

int store_poll_fd(const struct store *s)
{
  return ring_fd(s->ring);
}

void store__sync_cb(void *ctx, int rc, const char *why)
{
  struct store_sync *w = ctx;
  w->done = true;
  w->rc = rc;
  if (rc != 0 && why != NULL)
    snprintf(w->s->errmsg, sizeof w->s->errmsg, "%s", why);
}

void store__op_finish(struct store *s, struct store_op *op, int rc)
{
  op->rc = rc;
  /* A sentence set where the failure happened is the precise one. */
  if (rc != 0 && op->why[0] == 0)
    snprintf(op->why, sizeof op->why, "%s", s->errmsg[0] ? s->errmsg : msd_strerror(rc));
  op->next = NULL;
  if (s->ready_tail != NULL)
    s->ready_tail->next = op;
  else
    s->ready_head = op;
  s->ready_tail = op;
}

/* Runs the callbacks due; each may submit more operations. */
static bool run_ready(struct store *s)
{
  bool any = s->ready_head != NULL;
  while (s->ready_head != NULL) {
    struct store_op *op = s->ready_head;
    s->ready_head = op->next;
    if (s->ready_head == NULL)
      s->ready_tail = NULL;
    if (!op->cancelled && op->cb != NULL)
      op->cb(op->ctx, op->rc, op->rc != 0 ? op->why : NULL);
    if (op->release != NULL)
      op->release(op);
  }
  return any;
}

void store__wq_push(struct store *s, struct store_wop *w)
{
  w->next = NULL;
  if (s->wq_tail != NULL)
    s->wq_tail->next = w;
  else
    s->wq_head = w;
  s->wq_tail = w;
}

bool store__wq_remove(struct store *s, struct store_wop *w)
{
  struct store_wop *prev = NULL;
  for (struct store_wop *it = s->wq_head; it != NULL; prev = it, it = it->next) {
    if (it != w)
      continue;
    if (prev != NULL)
      prev->next = it->next;
    else
      s->wq_head = it->next;
    if (s->wq_tail == it)
      s->wq_tail = prev;
    return true;
  }
  return false;
}

/* Takes the seals waiting in the queue, in order, as one batch. */
static size_t take_seals(struct store *s, struct store_wop **batch)
{
  size_t n = 0;
  for (struct store_wop *it = s->wq_head; it != NULL && n < SEAL_BATCH_MAX;) {
    struct store_wop *next = it->next;
    if (it->kind == WOP_SEAL && store__wq_remove(s, it))
      batch[n++] = it;
    it = next;
  }
  return n;
}

/* Starts what may start, in queue order: flushes up to FLUSH_DEPTH while no
 * seal waits at the barrier, and a seal batch of every seal waiting when
 * none runs (group commit). Runs from store_poll and store__wait only,
 * never from a ring callback: starting reserves segment space, and a new
 * segment is created with a blocking write. */
static bool kick(struct store *s)
{
  bool started = false;
  if (s->seal_wait != NULL && s->flushes_running == 0) {
    store__seal_proceed(s);
    started = true;
  }
  for (struct store_wop *it = s->wq_head; it != NULL;) {
    struct store_wop *next = it->next;
    if (it->kind == WOP_FLUSH && s->seal_wait == NULL && s->flushes_running < FLUSH_DEPTH) {
      store__wq_remove(s, it);
      store__flush_start(s, it);
      started = true;
    } else if (it->kind == WOP_SEAL && !s->seal_running) {
      struct store_wop *batch[SEAL_BATCH_MAX];
      size_t n = take_seals(s, batch);
      store__seal_start(s, batch, n);
      started = true;
      next = s->wq_head; /* the list changed under us: rescan (bounded) */
    }
    it = next;
  }
  return started;
}

/* Lets reads that wait for buffers go, in arrival order. */
static bool resume_reads(struct store *s)
{
  bool any = false;
  while (s->rwait_head != NULL && store__read_bufs(s) > 0) {
    struct store_read_op *r = s->rwait_head;
    s->rwait_head = store__read_next_waiting(r);
    if (s->rwait_head == NULL)
      s->rwait_tail = NULL;
    if (!store__read_resume(r)) { /* UNTESTED: it was just told buffers are free */
      store__read_wait(r);
      break;
    }
    any = true;
  }
  return any;
}

static bool busy(const struct store *s)
{
  return ring_busy(s->ring) || s->flushes_running > 0 || s->seal_running || s->wq_head != NULL ||
         s->rwait_head != NULL ||
         s->ready_head != NULL;
}

/* A failure of the ring itself (not of one request): nothing in flight
 * can be trusted to complete, so the store stops writing. */
static void ring_failed(struct store *s, int rc)
{
  if (!s->poisoned)
    s->poisoned = rc;
  msd_log(MSD_LOG_ERROR, "%s: the I/O ring failed: %s; store poisoned", s->dir, msd_strerror(rc));
}

bool store_poll(struct store *s)
{
  if (s->polling)
    return true; /* called from one of its own callbacks */
  s->polling = true;
  /* Bounded: each round either makes progress or ends the loop. */
  for (int round = 0; round < 64; round++) {
    bool progress = kick(s);
    progress |= resume_reads(s);
    int rc = ring_poll(s->ring);
    if (rc < 0)
      ring_failed(s, rc);
    progress |= rc > 0; /* a completion may let a waiting seal go on */
    progress |= run_ready(s);
    if (!progress)
      break;
  }
  s->polling = false;
  return busy(s);
}

int store__wait(struct store *s, const bool *done)
{
  bool was = s->polling;
  s->polling = true;
  int rc = 0;
  while (!*done && rc == 0) {
    bool progress = kick(s);
    progress |= resume_reads(s);
    if (ring_busy(s->ring)) {
      progress = true;
      rc = ring_drain(s->ring);
      if (rc != 0)
        ring_failed(s, rc);
    }
    progress |= run_ready(s);
    if (!*done && !progress)
      rc = MSD_ESTATE; /* UNTESTED: every operation ends in I/O or an error */
  }
  s->polling = was;
  return rc;
}

void store__quiesce(struct store *s)
{
  /* Bounded: every operation ends after its I/O, and nothing new starts. */
  for (int i = 0; i < 100000 && busy(s); i++) {
    bool done = false;
    if (store__wait(s, &done) != 0 && !ring_busy(s->ring))
      break; /* UNTESTED: no progress possible */
  }
}
