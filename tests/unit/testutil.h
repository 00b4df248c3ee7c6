/* Shared helpers for the CUnit runners: a seeded PRNG (the seed is printed so
 * any failure can be replayed with MSD_TEST_SEED=<seed>) and a runner main. */
#ifndef MSD_TESTS_TESTUTIL_H
#define MSD_TESTS_TESTUTIL_H

#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>

/* The run's seed; tests derive their own streams from it. */
extern uint64_t test_seed;

struct test_rng {
  uint64_t s;
};

static inline uint64_t test_rng_next(struct test_rng *r)
{
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t test_rng_below(struct test_rng *r, uint64_t n)
{
  return n ? test_rng_next(r) % n : 0;
}

static inline void test_rng_fill(struct test_rng *r, unsigned char *buf, size_t len)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (unsigned char)test_rng_next(r);
}

/* A stream for one test: the run seed mixed with a per-test constant. */
static inline struct test_rng test_rng_for(uint64_t salt)
{
  struct test_rng r = {test_seed ^ (salt * 0x9e3779b97f4a7c15ull)};
  return r;
}

/* A suite: name plus a NULL-terminated list of tests. */
struct test_case {
  const char *name;
  CU_TestFunc fn;
};

/* Registers each suite, runs everything verbosely and returns the exit code
 * (0 when all passed). inits[i] (optional, may be NULL) sets suite i up. */
int test_run(const char *runner, const char *const *suite_names,
             const struct test_case *const *suites);
int test_run_ex(const char *runner, const char *const *suite_names,
                const struct test_case *const *suites, const CU_InitializeFunc *inits);

/* A fresh empty directory for one test (under $TMPDIR or /tmp); removed with
 * everything in it by test_tmpdir_remove. Returns a static buffer. */
const char *test_tmpdir(void);
void test_tmpdir_remove(const char *dir);

#endif
