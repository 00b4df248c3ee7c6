/* Small filesystem helpers. */
#ifndef MSD_COMMON_FS_H
#define MSD_COMMON_FS_H

#include <sys/types.h>

/* mkdir -p: creates path and its missing parents with `mode`. 0 or -errno
 * (an existing directory is fine). */
int msd_mkdirs(const char *path, mode_t mode);

#endif
