/* libraft 0.15 FSM callbacks over chain_fsm (raftfsm.h). Version 2 of the
 * interface, so the snapshot buffers stay ours (freed in finalize) and
 * are not copied into raft_malloc memory. */
#include "chain-anchor/raftfsm.h"

#include "common/alloc.h"
#include "common/err.h"

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
  struct chain_raft_fsm *rf = fsm->data;
  /* Outcomes are kept by request id in the state, so every node records the
   * same thing and no node allocates a result only the leader would free. */
  *result = NULL;
  /* libraft 0.15 applies entries in index order and sets last_applied only
   * after apply returns (barriers and configuration changes advance it
   * without calling us), so this is the index of the entry in hand. */
  int rc = chain_fsm_apply(rf->chain, raft_last_applied(rf->raft) + 1, buf->base, buf->len);
  /* libraft wants its own codes; the FSM has logged ours. It retries the
   * entry forever, and the poisoned FSM refuses it until a restart. */
  return rc == 0 ? 0 : RAFT_IOERR;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
  struct chain_raft_fsm *rf = fsm->data;
  struct raft_buffer *b = msd_malloc(sizeof *b);
  if (b == NULL)
    return RAFT_NOMEM;
  uint8_t *data;
  size_t len;
  if (chain_fsm_snapshot(rf->chain, &data, &len) != 0) {
    msd_free(b);
    return RAFT_IOERR;
  }
  b->base = data;
  b->len = len;
  *bufs = b;
  *n = 1;
  return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
  (void)fsm;
  for (unsigned i = 0; *bufs != NULL && i < *n; i++)
    msd_free((*bufs)[i].base);
  msd_free(*bufs);
  *bufs = NULL;
  *n = 0;
  return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
  struct chain_raft_fsm *rf = fsm->data;
  int rc = chain_fsm_restore(rf->chain, buf->base, buf->len);
  if (rc != 0)
    return RAFT_CORRUPT;
  raft_free(buf->base); /* on success the buffer is ours to free */
  return 0;
}

void chain_raft_fsm_init(struct chain_raft_fsm *rf, struct chain_fsm *chain)
{
  rf->fsm = (struct raft_fsm){.version = 2, .data = rf, .apply = fsm_apply,
                              .snapshot = fsm_snapshot, .restore = fsm_restore,
                              .snapshot_finalize = fsm_snapshot_finalize};
  rf->chain = chain;
  rf->raft = NULL;
}

void chain_raft_fsm_bind(struct chain_raft_fsm *rf, struct raft *r)
{
  rf->raft = r;
}
