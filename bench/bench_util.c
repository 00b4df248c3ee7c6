/* Small helpers shared by the benchmarks (see bench.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "common/err.h"
#include "common/log.h"

int bench_parse_size(const char *text, uint64_t *out)
{
  if (text == NULL || *text < '0' || *text > '9')
    return MSD_EPARAM;
  uint64_t v = 0;
  const char *s = text;
  while (*s >= '0' && *s <= '9') {
    if (v > (UINT64_MAX - 9) / 10)
      return MSD_EPARAM;
    v = v * 10 + (uint64_t)(*s++ - '0');
  }
  unsigned shift = 0;
  switch (*s) {
  case 'K': case 'k': shift = 10; s++; break;
  case 'M': case 'm': shift = 20; s++; break;
  case 'G': case 'g': shift = 30; s++; break;
  default: break;
  }
  if (*s == 'i' || *s == 'B')
    s += (*s == 'i') ? (s[1] == 'B' ? 2 : 1) : 1;
  if (*s != '\0' || (shift && v > (UINT64_MAX >> shift)))
    return MSD_EPARAM;
  *out = v << shift;
  return 0;
}

void bench_fill(unsigned char *buf, size_t len, uint64_t seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    memcpy(buf + i, &x, 8);
  }
  for (; i < len; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
}

double bench_now(void)
{
  return (double)msd_now_ns() / 1e9;
}

double bench_gbps(uint64_t bytes, double seconds)
{
  return seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0;
}

double bench_fio_bw(const char *args, const char *rw)
{
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "fio %s --output-format=json 2>/dev/null", args);
  FILE *f = popen(cmd, "r");
  if (f == NULL)
    return 0;
  static char out[1 << 20];
  size_t n = fread(out, 1, sizeof out - 1, f);
  out[n] = 0;
  pclose(f);
  /* The job's (or group's) "read"/"write" object holds "bw_bytes". */
  char key[16];
  snprintf(key, sizeof key, "\"%s\" :", rw);
  char *at = strstr(out, key);
  at = at ? strstr(at, "\"bw_bytes\" :") : NULL;
  return at ? strtod(at + strlen("\"bw_bytes\" :"), NULL) : 0;
}
