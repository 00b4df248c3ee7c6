/* Node authentication tags (ctl_auth.h). */
#include "chain-anchor/ctl_auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

int ctl_auth_key(const uint8_t *secret, size_t secret_len, uint8_t key[CTL_AUTH_BYTES])
{
  static const char label[] = "medshard node-auth v1";
  unsigned n = 0;
  if (secret_len == 0)
    return MSD_EPARAM;
  return HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)label, sizeof label - 1,
              key, &n) != NULL && n == CTL_AUTH_BYTES ? 0 : MSD_EPARAM;
}

int ctl_auth_tag(const uint8_t key[CTL_AUTH_BYTES], Medshard__Command *const *cmds, size_t n,
                 uint8_t tag[CTL_AUTH_BYTES])
{
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += medshard__command__get_packed_size(cmds[i]);
  uint8_t *buf = msd_malloc(total ? total : 1);
  if (buf == NULL)
    return -ENOMEM;
  size_t off = 0;
  for (size_t i = 0; i < n; i++)
    off += medshard__command__pack(cmds[i], buf + off);
  unsigned len = 0;
  int rc = HMAC(EVP_sha256(), key, CTL_AUTH_BYTES, buf, off, tag, &len) != NULL ? 0 : -ENOMEM;
  msd_free(buf);
  return rc;
}

bool ctl_auth_ok(const uint8_t key[CTL_AUTH_BYTES], Medshard__Command *const *cmds, size_t n,
                 const uint8_t *tag, size_t len)
{
  uint8_t want[CTL_AUTH_BYTES];
  return len == CTL_AUTH_BYTES && ctl_auth_tag(key, cmds, n, want) == 0 &&
         CRYPTO_memcmp(want, tag, CTL_AUTH_BYTES) == 0;
}

bool ctl_auth_needed(const Medshard__Command *cmd)
{
  return cmd->body_case == MEDSHARD__COMMAND__BODY_NODE_JOIN ||
         cmd->body_case == MEDSHARD__COMMAND__BODY_NODE_STATE;
}
