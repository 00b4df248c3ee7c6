/* CUnit runner for bench/bench_raft.c: the raw libraft ceiling runs three
 * real libuv voters on loopback for about a second and commits entries. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "bench/bench_raft.h"
#include "common/err.h"
#include "testutil.h"

static void test_three_nodes_commit_entries(void)
{
  const char *dir = test_tmpdir();
  struct bench_raft_result r = {0};
  int rc = bench_raft_raw(dir, 3, 300, 64, 1.0, &r);
  /* Everything the run created under dir is gone again (also on failure). */
  bool left_clean = rmdir(dir) == 0;
  test_tmpdir_remove(dir);
  if (rc != 0)
    fprintf(stderr, "bench_raft_raw: %s (%s)\n", msd_strerror(rc), msd_errname(rc));
  CU_ASSERT(left_clean);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  printf("\n  %.0f entries/s, %llu entries in %.2f s, p50 %.3f ms, p99 %.3f ms\n",
         r.entries_per_s, (unsigned long long)r.entries, r.seconds, r.p50_ms, r.p99_ms);
  CU_ASSERT(r.entries > 0);
  CU_ASSERT(r.seconds >= 0.9);
  CU_ASSERT(r.entries_per_s > 0);
  CU_ASSERT(r.p50_ms > 0);
  CU_ASSERT(r.p50_ms <= r.p99_ms);
}

static void test_bad_parameters_are_refused(void)
{
  struct bench_raft_result r = {0};
  CU_ASSERT_EQUAL(bench_raft_raw("/tmp", 0, 300, 1, 1.0, &r), MSD_EPARAM);
  CU_ASSERT_EQUAL(bench_raft_raw("/tmp", 3, 0, 1, 1.0, &r), MSD_EPARAM);
  CU_ASSERT_EQUAL(bench_raft_raw("/tmp", 3, 300, 0, 1.0, &r), MSD_EPARAM);
  CU_ASSERT_EQUAL(bench_raft_raw("/tmp", 3, 300, 1, 0.0, &r), MSD_EPARAM);
  CU_ASSERT_EQUAL(bench_raft_raw(NULL, 3, 300, 1, 1.0, &r), MSD_EPARAM);
  CU_ASSERT_EQUAL(bench_raft_raw("/nonexistent/medshard", 3, 300, 1, 1.0, &r), -ENOENT);
}

static const struct test_case raw_tests[] = {
    {"three nodes commit entries", test_three_nodes_commit_entries},
    {"bad parameters are refused", test_bad_parameters_are_refused},
    {NULL, NULL}};

int main(void)
{
  static const char *const names[] = {"bench_raft_raw", NULL};
  static const struct test_case *const suites[] = {raw_tests};
  return test_run("test_bench_raft", names, suites);
}
