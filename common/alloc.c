/* msd_malloc and friends plus the countdown fault trigger (see alloc.h). */
#include "common/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int fault_countdown; /* 0 = disarmed */

void msd_fault_arm(int n)
{
  fault_countdown = n > 0 ? n : 0;
}

bool msd_fault_hit(void)
{
  if (fault_countdown == 0)
    return false;
  return --fault_countdown == 0;
}

void *msd_malloc(size_t size)
{
  if (msd_fault_hit())
    return NULL;
  return malloc(size ? size : 1);
}

void *msd_calloc(size_t count, size_t size)
{
  if (msd_fault_hit())
    return NULL;
  return calloc(count ? count : 1, size ? size : 1);
}

void *msd_aligned_alloc(size_t align, size_t size)
{
  if (msd_fault_hit())
    return NULL;
  if (size == 0)
    size = align;
  if (size > (size_t)-1 - align)
    return NULL;
  size = (size + align - 1) & ~(align - 1);
  void *p = NULL;
  if (posix_memalign(&p, align, size) != 0)
    return NULL;
  return p;
}

void msd_free(void *p)
{
  free(p);
}

int msd_grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first)
{
  if (n < *cap)
    return 0;
  void **p = arr;
  size_t ncap = *cap ? 2 * *cap : first;
  void *q = msd_malloc(ncap * elem);
  if (q == NULL)
    return -ENOMEM;
  if (n > 0)
    memcpy(q, *p, n * elem);
  msd_free(*p);
  *p = q;
  *cap = ncap;
  return 0;
}
