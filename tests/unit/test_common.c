/* CUnit runner for common/: the error table and the fault trigger. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/fs.h"
#include "testutil.h"

static void test_codes_are_distinct_and_named(void)
{
  CU_ASSERT_EQUAL(MSD_EPARAM, MSD_ERR_BASE);
  CU_ASSERT(MSD_EEC_PARAMS < MSD_EPARAM);
  CU_ASSERT_STRING_EQUAL(msd_errname(MSD_EUNIT), "MSD_EUNIT");
  CU_ASSERT_STRING_EQUAL(msd_strerror(MSD_ETOO_MANY_ERASURES),
                         "more shards are missing than the parity can rebuild");
  CU_ASSERT_STRING_EQUAL(msd_strerror(0), "success");
}

static void test_errno_values_pass_through(void)
{
  CU_ASSERT_STRING_EQUAL(msd_strerror(-ENOENT), strerror(ENOENT));
  CU_ASSERT_STRING_EQUAL(msd_errname(-ENOMEM), "ENOMEM");
  CU_ASSERT_STRING_EQUAL(msd_strerror(MSD_ERR_BASE - 5000), "unknown error");
  CU_ASSERT_STRING_EQUAL(msd_strerror(42), "unknown error");
}

static void test_fault_countdown_fails_nth_allocation(void)
{
  msd_fault_arm(3);
  void *a = msd_malloc(8), *b = msd_malloc(8), *c = msd_malloc(8), *d = msd_malloc(8);
  CU_ASSERT_PTR_NOT_NULL(a);
  CU_ASSERT_PTR_NOT_NULL(b);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_PTR_NOT_NULL(d); /* fires once */
  msd_free(a), msd_free(b), msd_free(d);
}

static void test_aligned_alloc(void)
{
  void *p = msd_aligned_alloc(64, 100);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL((uintptr_t)p % 64, 0);
  msd_free(p);
}

static void test_grow_keeps_elements(void)
{
  int *v = NULL;
  size_t cap = 0, n = 0;
  for (int i = 0; i < 100; i++) {
    CU_ASSERT_EQUAL_FATAL(msd_grow(&v, &cap, n, sizeof *v, 4), 0);
    v[n++] = i;
  }
  CU_ASSERT_EQUAL(cap, 128);
  CU_ASSERT_EQUAL(v[0], 0);
  CU_ASSERT_EQUAL(v[99], 99);
  msd_fault_arm(1);
  CU_ASSERT_EQUAL(msd_grow(&v, &cap, cap, sizeof *v, 4), -ENOMEM);
  msd_fault_arm(0);
  CU_ASSERT_EQUAL(cap, 128); /* unchanged on failure */
  CU_ASSERT_EQUAL(v[99], 99);
  msd_free(v);
}

static void test_mkdirs(void)
{
  const char *dir = test_tmpdir();
  char p[4200], f[4200];
  snprintf(p, sizeof p, "%s/a/b/c", dir);
  CU_ASSERT_EQUAL(msd_mkdirs(p, 0700), 0);
  struct stat st;
  CU_ASSERT(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
  CU_ASSERT_EQUAL(msd_mkdirs(p, 0700), 0); /* already there */
  snprintf(f, sizeof f, "%s/file", dir);
  FILE *fp = fopen(f, "w");
  fclose(fp);
  snprintf(p, sizeof p, "%s/file/x", dir);
  CU_ASSERT_EQUAL(msd_mkdirs(p, 0700), -ENOTDIR); /* a file in the way */
  test_tmpdir_remove(dir);
}

static const struct test_case fs_tests[] = {{"mkdir -p", test_mkdirs}, {NULL, NULL}};

static const struct test_case err_tests[] = {
    {"codes are distinct and named", test_codes_are_distinct_and_named},
    {"errno values pass through", test_errno_values_pass_through},
    {NULL, NULL}};
static const struct test_case alloc_tests[] = {
    {"fault countdown fails the nth allocation", test_fault_countdown_fails_nth_allocation},
    {"aligned allocation", test_aligned_alloc},
    {"grow keeps elements and fails cleanly", test_grow_keeps_elements},
    {NULL, NULL}};

int main(void)
{
  static const char *const names[] = {"err", "alloc", "fs", NULL};
  static const struct test_case *const suites[] = {err_tests, alloc_tests, fs_tests};
  return test_run("test_common", names, suites);
}
