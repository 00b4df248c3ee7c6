/* stderr logger and the monotonic clock (see log.h). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static enum msd_log_level log_level = MSD_LOG_INFO;

void msd_log_set_level(enum msd_log_level level)
{
  log_level = level;
}

void msd_log(enum msd_log_level level, const char *fmt, ...)
{
  static const char *const names[] = {"debug", "info", "warn", "error"};
  if (level < log_level)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  /* One fprintf per message so lines from several threads do not interleave. */
  fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, ts.tv_nsec / 1000000L, names[level], line);
}

uint64_t msd_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
