/* CLI helpers (cli.h). */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"

int cli_parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
  char *end;
  if (s == NULL || *s < '0' || *s > '9')
    return MSD_EPARAM;
  unsigned long v = strtoul(s, &end, 10);
  if (*end != 0 || v < min || v > max)
    return MSD_EPARAM;
  *out = v;
  return 0;
}

int cli_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
  size_t n = hex ? strlen(hex) : 0;
  if (n == 0 || n % 2 != 0 || n / 2 > cap)
    return MSD_EPARAM;
  for (size_t i = 0; i < n; i++)
    if (strchr("0123456789abcdefABCDEF", hex[i]) == NULL)
      return MSD_EPARAM;
  for (size_t i = 0; i < n / 2; i++) {
    char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
    out[i] = (uint8_t)strtoul(pair, NULL, 16);
  }
  *len = n / 2;
  return 0;
}

char *cli_hex(const uint8_t *buf, size_t len, char *out)
{
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = d[buf[i] >> 4];
    out[2 * i + 1] = d[buf[i] & 15];
  }
  out[2 * len] = 0;
  return out;
}

const char *cli_cluster(const char *flag, const char *verb)
{
  if (flag != NULL && flag[0] != 0)
    return flag;
  const char *env = getenv("MEDSHARD_NODE");
  if (env != NULL && env[0] != 0)
    return env;
  fprintf(stderr, "medshard %s: no cluster address: pass --node HOST:PORT[,HOST:PORT...] or set"
          " MEDSHARD_NODE\n", verb);
  return NULL;
}

void cli_json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}
