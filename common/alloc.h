/* Allocation for every medshard module, routed through one place so tests can
 * make the Nth allocation (or I/O call) fail and check the cleanup paths. */
#ifndef MSD_COMMON_ALLOC_H
#define MSD_COMMON_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* malloc/calloc/free with the fault trigger below. NULL on failure (or when
 * the trigger fires); the caller owns the result and frees it with msd_free. */
void *msd_malloc(size_t size);
void *msd_calloc(size_t count, size_t size);
void msd_free(void *p);

/* Memory aligned to `align` (a power of two, >= sizeof(void *)), rounded up
 * to a multiple of it. Free with msd_free. */
void *msd_aligned_alloc(size_t align, size_t size);

/* Makes room for one more element in a growable array: when n == *cap, the
 * array whose address is `arr` (a T **) moves to a buffer twice as large
 * (at least `first` elements). 0, or -ENOMEM with the array unchanged. */
int msd_grow(void *arr, size_t *cap, size_t n, size_t elem, size_t first);

/* The shared countdown fault trigger (raft's test habit): after
 * msd_fault_arm(n), the n-th following call to msd_fault_hit() returns true
 * once (n = 1 fails the very next allocation or I/O). n <= 0 disarms.
 * Allocation consults it; the I/O layers consult it too. Not thread-safe:
 * tests arm it from the thread under test. */
void msd_fault_arm(int n);
bool msd_fault_hit(void);

#endif
