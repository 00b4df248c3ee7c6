/* Messages and names for medshard's error codes (the table is in err.h). */
#include "common/err.h"

#include <string.h>

static const char *const err_msgs[] = {
#define MSD_X_MSG(name, msg) msg,
    MSD_ERRORS(MSD_X_MSG)
#undef MSD_X_MSG
};

static const char *const err_names[] = {
#define MSD_X_NAME(name, msg) #name,
    MSD_ERRORS(MSD_X_NAME)
#undef MSD_X_NAME
};

static int err_index(int rc)
{
  int idx = MSD_ERR_BASE - rc;
  if (rc > MSD_ERR_BASE || idx >= MSD_ERR_COUNT_)
    return -1;
  return idx;
}

const char *msd_strerror(int rc)
{
  if (rc == 0)
    return "success";
  int idx = err_index(rc);
  if (idx >= 0)
    return err_msgs[idx];
  if (rc < 0 && rc > MSD_ERR_BASE)
    return strerror(-rc); /* glibc's strerror returns a static string */
  return "unknown error";
}

const char *msd_errname(int rc)
{
  if (rc == 0)
    return "OK";
  int idx = err_index(rc);
  if (idx >= 0)
    return err_names[idx];
  if (rc < 0 && rc > MSD_ERR_BASE) {
    const char *name = strerrorname_np(-rc);
    return name ? name : "EUNKNOWN";
  }
  return "EUNKNOWN";
}
