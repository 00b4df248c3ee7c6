/* Internals of the node daemon shared by node.c (lifecycle, Raft, timers),
 * node_submit.c (batching commands into Raft entries), node_ctl.c (the
 * control-plane listener) and node_fwd.c (forwarding to the leader). */
#ifndef MSD_CHAIN_NODE_INT_H
#define MSD_CHAIN_NODE_INT_H

#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <uv.h>

#include "chain-anchor/block.h"
#include "chain-anchor/ctl_auth.h"
#include "chain-anchor/fsm.h"
#include "chain-anchor/node.h"
#include "chain-anchor/raftfsm.h"
#include "proto/medshard.pb-c.h"

#define NODE_BATCH_MAX 4096          /* commands per Raft entry */
#define NODE_CTL_PAYLOAD_MAX 0       /* control requests carry no payload */
#define NODE_CHAIN_CHUNK (1u << 20)  /* GET_CHAIN returns at most this */

struct node;

/* One client connection to the control plane. Freed when closed and no
 * submission refers to it any more. */
struct ctl_conn {
  uv_tcp_t tcp;
  struct node *n;
  uint8_t *in;       /* bytes received and not yet parsed */
  size_t in_len, in_cap;
  int refs;          /* the handle itself + pending submissions */
  bool closing;
  char peer[64];     /* "ip:port", for log lines */
  struct ctl_conn *next, *prev;
};

/* One Submit request waiting for its Raft entry to apply: its commands'
 * request ids say where to find their outcomes afterwards. */
struct submission {
  struct ctl_conn *conn;   /* NULL for the node's own commands */
  uint64_t frame_id;       /* request id of the frame to answer */
  size_t ncmds;
  uint8_t (*rids)[16];     /* each command's request id */
  uint8_t *wire;           /* the commands in CommandBatch wire form */
  size_t wire_len;
  bool is_cut;             /* the leader's own CutBlock */
  struct submission *next;
};

/* One Raft entry in flight. */
struct inflight {
  struct raft_apply req;
  struct node *n;
  struct submission *subs;
  bool has_cut;            /* carries the leader's CutBlock */
};

/* Commands the node forwards to the leader from a helper thread (a
 * follower cannot raft_apply): a mutex-protected queue of packed
 * CtlRequests. */
struct fwd_item {
  char addr[NODE_ADDR_MAX];
  uint8_t *req;
  size_t len;
  struct fwd_item *next;
};

struct forwarder {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct fwd_item *head, *tail;
  size_t queued;
  bool stop, started;
  uint8_t auth_key[CTL_AUTH_BYTES]; /* tags forwarded NodeJoins */
};

struct node {
  struct node_config cfg;
  uv_loop_t loop;
  struct raft_uv_transport transport;
  struct raft_io io;
  struct raft raft;
  struct chain_raft_fsm rf;
  struct chain_fsm *fsm;
  uint8_t pk[BLOCK_PUBKEY_BYTES], sk[BLOCK_SECKEY_BYTES];
  uint8_t auth_key[CTL_AUTH_BYTES]; /* from the cluster secret (ctl_auth.h) */
  char key_problem[256];            /* set when the map holds another key for us */
  uv_tcp_t listener;
  uv_timer_t tick, flush;
  uv_signal_t sigterm, sigint;
  struct ctl_conn *conns;
  /* Leadership: serve submissions only after our barrier in this term. */
  struct raft_barrier barrier;
  raft_term barrier_term, ready_term;
  bool barrier_pending;
  /* Submissions waiting for the next entry. */
  struct submission *pending, *pending_tail;
  size_t pending_cmds;
  bool flush_armed;
  unsigned inflight;
  bool cut_inflight;
  uint64_t last_cut_ms;
  /* Our own commands already sent (retried after a second). */
  uint64_t cosigned_height, cosign_sent_ms, join_sent_ms;
  bool alarm_logged, stopping;
  int exit_code;
  struct forwarder fwd;
  struct raft_change change;
  bool change_pending;
};

uint64_t node__wall_ms(void);

/* node_submit.c */
/* Queues a Submit's commands for the next entry; they are packed at once,
 * so the caller keeps ownership of cmds. conn (may be NULL) is answered
 * when the entry applies. */
int node__submit(struct node *n, struct ctl_conn *conn, uint64_t frame_id,
                 Medshard__Command **cmds, size_t ncmds, bool is_cut);
/* Fails every pending submission with code (leadership lost, stopping). */
void node__fail_pending(struct node *n, int code, const char *why);
/* Whether this node may serve submissions now; *why says why not. */
bool node__can_write(struct node *n, int *code, const char **why);
/* A random 16-byte request id. */
void node__random_id(uint8_t id[16]);

/* node_ctl.c */
int node__ctl_listen(struct node *n);
void node__ctl_close_all(struct node *n);
/* Sends a response frame on conn (copies everything). */
void node__ctl_reply(struct ctl_conn *conn, uint64_t frame_id, const Medshard__CtlResponse *resp,
                     const uint8_t *payload, size_t payload_len);
void node__conn_unref(struct ctl_conn *c);
/* Fills resp's leader hint (id and control address) for MSD_ENOTLEADER. */
void node__leader_hint(struct node *n, Medshard__CtlResponse *resp, char *addr, size_t cap);

/* node_fwd.c */
int node__fwd_start(struct node *n);
void node__fwd_stop(struct node *n);
/* Queues commands for the leader at addr (copies them). */
void node__fwd_push(struct node *n, const char *addr, Medshard__Command **cmds, size_t ncmds);

#endif
