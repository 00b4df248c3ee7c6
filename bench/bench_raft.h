/* The raw libraft ceiling for `medshard bench anchor`: committed entries per
 * second that N libraft 0.15 voters reach on the real libuv backend (data
 * directories, TCP on 127.0.0.1) with an FSM that does no work. The side-chain
 * FSM's figure is printed beside this one. */
#ifndef MSD_BENCH_BENCH_RAFT_H
#define MSD_BENCH_BENCH_RAFT_H

#include <stddef.h>
#include <stdint.h>

struct bench_raft_result {
  double entries_per_s;  /* entries committed in the window / its length */
  double p50_ms, p99_ms; /* raft_apply -> apply callback, within ~1.6 % */
  uint64_t entries;      /* entries whose apply callback fired in the window */
  double seconds;        /* measured length of the window */
};

/* Runs `nodes` (1..9) voters in this process, one thread and uv loop each,
 * bootstrapped in fresh subdirectories of a new directory under `dir` (which
 * must exist; everything created is removed again, also on failure). Once a
 * leader is elected (within 10 s, else -ETIMEDOUT) it keeps up to `inflight`
 * (1..65536) raft_apply requests of `entry_bytes` (1 B..4 MiB) outstanding,
 * one entry each: a warm-up of seconds/10 (at most 1 s) is not counted, then
 * every apply callback in the next `seconds` (0 < seconds <= 3600) is; the
 * requests still outstanding are drained before shutdown. Fills *out and
 * returns 0; otherwise an -errno or MSD_E* code (MSD_ESTATE when leadership
 * moved during the run) with the reason logged, and *out untouched. `dir` is
 * borrowed for the call only. The node threads run with SIGPIPE blocked, so
 * a peer closing its socket gives EPIPE instead of killing the process. */
int bench_raft_raw(const char *dir, unsigned nodes, size_t entry_bytes, unsigned inflight,
                   double seconds, struct bench_raft_result *out);

#endif
