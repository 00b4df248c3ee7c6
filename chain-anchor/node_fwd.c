/* Forwarding the node's own commands (NodeJoin, Cosign) to the leader when
 * this node is a follower: a helper thread with the blocking client, so
 * the libuv loop never waits on another node. Items carry packed commands
 * and the leader's address; losing one is harmless because the tick
 * resubmits anything the state does not show yet. */
#include <string.h>

#include "chain-anchor/ctl_client.h"
#include "chain-anchor/node_int.h"
#include "common/alloc.h"
#include "common/log.h"

#define FWD_QUEUE_MAX 256

static void send_item(const struct forwarder *f, struct fwd_item *it)
{
  Medshard__CtlRequest *req = medshard__ctl_request__unpack(NULL, it->len, it->req);
  Medshard__CtlResponse *resp = NULL;
  if (req == NULL)
    return; /* UNTESTED: we packed it ourselves */
  int rc = ctl_submit_auth(it->addr, req->commands, req->n_commands, 3000, f->auth_key, &resp,
                           NULL, 0);
  if (rc != 0)
    msd_log(MSD_LOG_DEBUG, "forward to %s: %d", it->addr, rc);
  if (resp != NULL)
    medshard__ctl_response__free_unpacked(resp, NULL);
  medshard__ctl_request__free_unpacked(req, NULL);
}

static void *fwd_main(void *arg)
{
  struct forwarder *f = arg;
  pthread_mutex_lock(&f->mu);
  while (!f->stop) {
    if (f->head == NULL) {
      pthread_cond_wait(&f->cv, &f->mu);
      continue;
    }
    struct fwd_item *it = f->head;
    f->head = it->next;
    if (f->head == NULL)
      f->tail = NULL;
    f->queued--;
    pthread_mutex_unlock(&f->mu);
    send_item(f, it);
    msd_free(it->req);
    msd_free(it);
    pthread_mutex_lock(&f->mu);
  }
  pthread_mutex_unlock(&f->mu);
  return NULL;
}

int node__fwd_start(struct node *n)
{
  struct forwarder *f = &n->fwd;
  memcpy(f->auth_key, n->auth_key, sizeof f->auth_key);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  int rc = pthread_create(&f->thread, NULL, fwd_main, f);
  f->started = rc == 0;
  return -rc;
}

void node__fwd_stop(struct node *n)
{
  struct forwarder *f = &n->fwd;
  if (!f->started)
    return;
  pthread_mutex_lock(&f->mu);
  f->stop = true;
  pthread_cond_signal(&f->cv);
  pthread_mutex_unlock(&f->mu);
  pthread_join(f->thread, NULL);
  while (f->head != NULL) {
    struct fwd_item *it = f->head;
    f->head = it->next;
    msd_free(it->req);
    msd_free(it);
  }
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  f->started = false;
}

void node__fwd_push(struct node *n, const char *addr, Medshard__Command **cmds, size_t ncmds)
{
  struct forwarder *f = &n->fwd;
  Medshard__CtlRequest req = MEDSHARD__CTL_REQUEST__INIT;
  req.format_version = 1;
  req.op = MEDSHARD__CTL_OP__CTL_OP_SUBMIT;
  req.commands = cmds;
  req.n_commands = ncmds;
  struct fwd_item *it = msd_calloc(1, sizeof *it);
  if (it == NULL)
    return; /* UNTESTED: the tick resubmits */
  it->len = medshard__ctl_request__get_packed_size(&req);
  it->req = msd_malloc(it->len);
  if (it->req == NULL) {
    msd_free(it);
    return; /* UNTESTED */
  }
  medshard__ctl_request__pack(&req, it->req);
  snprintf(it->addr, sizeof it->addr, "%s", addr);
  pthread_mutex_lock(&f->mu);
  if (f->queued >= FWD_QUEUE_MAX) { /* the leader is unreachable: drop, resubmit later */
    pthread_mutex_unlock(&f->mu);
    msd_free(it->req);
    msd_free(it);
    return;
  }
  if (f->tail)
    f->tail->next = it;
  else
    f->head = it;
  f->tail = it;
  f->queued++;
  pthread_cond_signal(&f->cv);
  pthread_mutex_unlock(&f->mu);
}
