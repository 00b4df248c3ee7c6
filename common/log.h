/* Logging to stderr with a level and a timestamp. */
#ifndef MSD_COMMON_LOG_H
#define MSD_COMMON_LOG_H

#include <stdint.h>

enum msd_log_level { MSD_LOG_DEBUG, MSD_LOG_INFO, MSD_LOG_WARN, MSD_LOG_ERROR };

/* Messages below `level` are dropped. Default MSD_LOG_INFO. */
void msd_log_set_level(enum msd_log_level level);

void msd_log(enum msd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Monotonic clock in nanoseconds, for durations and deadlines. */
uint64_t msd_now_ns(void);

#endif
