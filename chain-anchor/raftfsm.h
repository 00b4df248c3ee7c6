/* The binding of the chain FSM to libraft 0.15: a struct raft_fsm whose
 * apply, snapshot and restore call into chain_fsm. */
#ifndef MSD_CHAIN_RAFTFSM_H
#define MSD_CHAIN_RAFTFSM_H

#include <raft.h>

#include "chain-anchor/fsm.h"

struct chain_raft_fsm {
  struct raft_fsm fsm;     /* handed to raft_init; fsm.data points back here */
  struct chain_fsm *chain; /* borrowed; outlives the raft instance */
  struct raft *raft;       /* set by chain_raft_fsm_bind after raft_init */
};

/* Fills rf for the chain FSM `chain`. */
void chain_raft_fsm_init(struct chain_raft_fsm *rf, struct chain_fsm *chain);

/* Tells the binding which raft instance drives it: libraft 0.15 does not
 * pass the entry index to apply, but sets last_applied only after apply
 * returns, so the index being applied is raft_last_applied() + 1. */
void chain_raft_fsm_bind(struct chain_raft_fsm *rf, struct raft *r);

#endif
