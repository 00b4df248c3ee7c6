/* Fast SHA-256 and HMAC-SHA-256 (hash.h) over OpenSSL 3's EVP interface. */
#include "chain-anchor/hash.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>


#define BLOCK 64 /* SHA-256's block size, HMAC's pad length */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256;     /* fetched once, kept for the process */
static pthread_key_t ctx_key; /* this thread's work context */

static void free_ctx(void *ctx)
{
  EVP_MD_CTX_free(ctx);
}

static void init_once(void)
{
  sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  pthread_key_create(&ctx_key, free_ctx);
}

static EVP_MD_CTX *work_ctx(void)
{
  pthread_once(&once, init_once);
  EVP_MD_CTX *c = pthread_getspecific(ctx_key);
  if (c == NULL && sha256 != NULL && (c = EVP_MD_CTX_new()) != NULL &&
      pthread_setspecific(ctx_key, c) != 0) {
    EVP_MD_CTX_free(c); /* UNTESTED: out of memory */
    c = NULL;
  }
  return c;
}

void hash_sha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[HASH_BYTES])
{
  EVP_MD_CTX *c = work_ctx();
  /* UNTESTED: no context (out of memory); hash nothing sane. */
  if (c == NULL || !EVP_DigestInit_ex2(c, sha256, NULL) || !EVP_DigestUpdate(c, a, alen) ||
      (blen > 0 && !EVP_DigestUpdate(c, b, blen)) || !EVP_DigestFinal_ex(c, out, NULL))
    memset(out, 0, HASH_BYTES);
}

static EVP_MD_CTX *padded_state(const uint8_t *key, size_t len, uint8_t pad)
{
  uint8_t block[BLOCK];
  for (size_t i = 0; i < BLOCK; i++)
    block[i] = (uint8_t)((i < len ? key[i] : 0) ^ pad);
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  if (c != NULL && (!EVP_DigestInit_ex2(c, sha256, NULL) || !EVP_DigestUpdate(c, block, BLOCK))) {
    EVP_MD_CTX_free(c); /* UNTESTED */
    c = NULL;
  }
  return c;
}

int hash_hmac_init(struct hash_hmac *h, const uint8_t *key, size_t len)
{
  uint8_t digest[HASH_BYTES];
  h->inner = h->outer = NULL;
  if (work_ctx() == NULL)
    return -ENOMEM; /* UNTESTED */
  if (len > BLOCK) { /* RFC 2104: a long key is hashed first */
    hash_sha256(key, len, NULL, 0, digest);
    key = digest;
    len = sizeof digest;
  }
  h->inner = padded_state(key, len, 0x36);
  h->outer = padded_state(key, len, 0x5c);
  if (h->inner == NULL || h->outer == NULL) {
    hash_hmac_free(h); /* UNTESTED */
    return -ENOMEM;
  }
  return 0;
}

void hash_hmac_free(struct hash_hmac *h)
{
  EVP_MD_CTX_free(h->inner);
  EVP_MD_CTX_free(h->outer);
  h->inner = h->outer = NULL;
}

int hash_hmac(const struct hash_hmac *h, const void *a, size_t alen, const void *b, size_t blen,
              uint8_t out[HASH_BYTES])
{
  EVP_MD_CTX *c = work_ctx();
  uint8_t in[HASH_BYTES];
  if (c == NULL || h->inner == NULL || !EVP_MD_CTX_copy_ex(c, h->inner) ||
      !EVP_DigestUpdate(c, a, alen) || (blen > 0 && !EVP_DigestUpdate(c, b, blen)) ||
      !EVP_DigestFinal_ex(c, in, NULL) || !EVP_MD_CTX_copy_ex(c, h->outer) ||
      !EVP_DigestUpdate(c, in, sizeof in) || !EVP_DigestFinal_ex(c, out, NULL))
    return -ENOMEM; /* UNTESTED */
  return 0;
}
