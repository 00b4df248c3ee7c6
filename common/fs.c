/* Filesystem helpers (fs.h). */
#include "common/fs.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

int msd_mkdirs(const char *path, mode_t mode)
{
  char p[4096];
  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
    return -ENAMETOOLONG;
  for (char *s = p + 1; *s != 0; s++) {
    if (*s != '/')
      continue;
    *s = 0;
    if (mkdir(p, mode) != 0 && errno != EEXIST)
      return -errno;
    *s = '/';
  }
  return mkdir(p, mode) != 0 && errno != EEXIST ? -errno : 0;
}
