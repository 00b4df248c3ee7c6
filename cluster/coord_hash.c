/* The SHA-256 hasher thread of a coordinator worker (coord_int.h): the
 * whole-object digest of a PUT or GET is computed here, in order, while the
 * worker goes on receiving, encoding and sending the next stripes. SHA-256
 * is most of the worker's CPU per byte and cannot be split, so taking it off
 * the worker's thread is what lets a request use both cores of a small node.
 *
 * Thread rules: the worker calls every coord_hash_* function (never two
 * workers on one hasher); the hasher thread only runs hash_main. Everything
 * they share is guarded by mu, and the digest context is the hasher's while
 * it holds a span (busy) and the worker's once the queue is drained. */
#include "cluster/coord_int.h"

#include <errno.h>
#include <openssl/evp.h>

#include "common/alloc.h"

#define HASH_QUEUE 64 /* spans not yet taken by the hasher */

struct hash_span {
  const uint8_t *p;
  size_t len;
};

struct coord_hash {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work; /* the hasher waits here for spans (or stop) */
  pthread_cond_t idle; /* the worker waits here for room or a drained queue */
  struct hash_span q[HASH_QUEUE];
  unsigned head, n;
  bool busy;       /* the hasher is digesting a span it took off q */
  bool stop;
  uint64_t hashed; /* bytes digested since coord_hash_reset */
  EVP_MD_CTX *ctx;
  struct cio *wake;
};

static void *hash_main(void *arg)
{
  struct coord_hash *h = arg;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    while (h->n == 0 && !h->stop)
      pthread_cond_wait(&h->work, &h->mu);
    if (h->stop)
      break;
    struct hash_span s = h->q[h->head];
    h->head = (h->head + 1) % HASH_QUEUE;
    h->n--;
    h->busy = true;
    pthread_mutex_unlock(&h->mu);
    EVP_DigestUpdate(h->ctx, s.p, s.len);
    pthread_mutex_lock(&h->mu);
    h->busy = false;
    h->hashed += s.len;
    pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
    /* The worker may be asleep in its ring waiting for exactly this (a
     * stripe it can reuse once hashed): wake it. */
    cio_wake(h->wake);
    pthread_mutex_lock(&h->mu);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

int coord_hash_start(struct cio *wake, struct coord_hash **out)
{
  struct coord_hash *h = msd_calloc(1, sizeof *h);
  if (h == NULL)
    return -ENOMEM;
  h->wake = wake;
  h->ctx = EVP_MD_CTX_new();
  if (h->ctx == NULL || !EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL)) {
    EVP_MD_CTX_free(h->ctx);
    msd_free(h);
    return -ENOMEM;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->work, NULL);
  pthread_cond_init(&h->idle, NULL);
  int rc = pthread_create(&h->thread, NULL, hash_main, h);
  if (rc != 0) {
    pthread_cond_destroy(&h->idle);
    pthread_cond_destroy(&h->work);
    pthread_mutex_destroy(&h->mu);
    EVP_MD_CTX_free(h->ctx);
    msd_free(h);
    return -rc;
  }
  *out = h;
  return 0;
}

void coord_hash_stop(struct coord_hash *h)
{
  if (h == NULL)
    return;
  pthread_mutex_lock(&h->mu);
  h->stop = true;
  pthread_cond_signal(&h->work);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->thread, NULL);
  pthread_cond_destroy(&h->idle);
  pthread_cond_destroy(&h->work);
  pthread_mutex_destroy(&h->mu);
  EVP_MD_CTX_free(h->ctx);
  msd_free(h);
}

/* With mu held: until the hasher has nothing queued or in hand. */
static void wait_drained(struct coord_hash *h)
{
  while (h->n > 0 || h->busy)
    pthread_cond_wait(&h->idle, &h->mu);
}

void coord_hash_reset(struct coord_hash *h)
{
  pthread_mutex_lock(&h->mu);
  wait_drained(h);
  h->hashed = 0;
  pthread_mutex_unlock(&h->mu);
  EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL); /* the worker's: drained */
}

void coord_hash_push(struct coord_hash *h, const uint8_t *p, size_t len)
{
  if (len == 0)
    return;
  pthread_mutex_lock(&h->mu);
  struct hash_span *tail = h->n > 0 ? &h->q[(h->head + h->n - 1) % HASH_QUEUE] : NULL;
  if (tail != NULL && tail->p + tail->len == p) {
    tail->len += len; /* the next bytes of the same buffer: one span */
  } else {
    /* Bounded wait, never a spin: the hasher frees a place with every
     * span it takes. In practice the window keeps the queue short. */
    while (h->n == HASH_QUEUE)
      pthread_cond_wait(&h->idle, &h->mu);
    h->q[(h->head + h->n) % HASH_QUEUE] = (struct hash_span){p, len};
    h->n++;
    pthread_cond_signal(&h->work);
  }
  pthread_mutex_unlock(&h->mu);
}

uint64_t coord_hash_done(struct coord_hash *h)
{
  pthread_mutex_lock(&h->mu);
  uint64_t done = h->hashed;
  pthread_mutex_unlock(&h->mu);
  return done;
}

void coord_hash_final(struct coord_hash *h, uint8_t out[32])
{
  pthread_mutex_lock(&h->mu);
  wait_drained(h);
  pthread_mutex_unlock(&h->mu);
  unsigned n = 0;
  EVP_DigestFinal_ex(h->ctx, out, &n);
}

void coord_hash_cancel(struct coord_hash *h)
{
  pthread_mutex_lock(&h->mu);
  h->n = 0;
  wait_drained(h);
  pthread_mutex_unlock(&h->mu);
}
