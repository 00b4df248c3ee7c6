/* Runner main shared by the unit-test programs (see testutil.h). */
#include "testutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <ftw.h>
#include <string.h>
#include <time.h>

uint64_t test_seed;

int test_run(const char *runner, const char *const *suite_names,
             const struct test_case *const *suites)
{
  return test_run_ex(runner, suite_names, suites, NULL);
}

int test_run_ex(const char *runner, const char *const *suite_names,
                const struct test_case *const *suites, const CU_InitializeFunc *inits)
{
  const char *env = getenv("MSD_TEST_SEED");
  test_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
  printf("%s: seed %" PRIu64 " (replay with MSD_TEST_SEED=%" PRIu64 ")\n", runner, test_seed,
         test_seed);

  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  for (int s = 0; suite_names[s] != NULL; s++) {
    CU_pSuite suite = CU_add_suite(suite_names[s], inits ? inits[s] : NULL, NULL);
    if (suite == NULL)
      goto fail;
    for (const struct test_case *t = suites[s]; t->name != NULL; t++)
      if (CU_add_test(suite, t->name, t->fn) == NULL)
        goto fail;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  if (failed)
    printf("%s: FAILED with seed %" PRIu64 "\n", runner, test_seed);
  CU_cleanup_registry();
  return failed ? 1 : 0;

fail:
  fprintf(stderr, "%s: CUnit registry error: %s\n", runner, CU_get_error_msg());
  CU_cleanup_registry();
  return 1;
}

const char *test_tmpdir(void)
{
  static char path[4096];
  const char *base = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/msd-test-XXXXXX", base && *base ? base : "/tmp");
  if (mkdtemp(path) == NULL) {
    perror("mkdtemp");
    abort();
  }
  return path;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

void test_tmpdir_remove(const char *dir)
{
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
