/* CUnit runner for shard/: codec, striper, range math, placement, policy. */
#include "testutil.h"

extern const struct test_case ec_tests[], stripe_tests[], range_tests[], placement_tests[],
    policy_tests[];

int main(void)
{
  static const char *const names[] = {"ec", "stripe", "range", "placement", "policy", NULL};
  static const struct test_case *const suites[] = {ec_tests, stripe_tests, range_tests,
                                                   placement_tests, policy_tests};
  return test_run("test_shard", names, suites);
}
