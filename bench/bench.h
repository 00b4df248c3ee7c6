/* Benchmarks run by `medshard bench ...`. Each prints its own figure beside
 * the peer or physical limit measured in the same run, and the ratio. */
#ifndef MSD_BENCH_BENCH_H
#define MSD_BENCH_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* `medshard bench ec [--k K] [--m M] [--unit BYTES] [--size BYTES]
 *  [--rounds N] [--json]`; argv[0] is "ec". Returns the process exit code. */
int bench_ec_main(int argc, char **argv);

/* `medshard bench store --dir DIR [--size BYTES] [--fallback] [--no-fio]
 *  [--json]`; argv[0] is "store". */
int bench_store_main(int argc, char **argv);

/* `medshard bench anchor --nodes N [--dir PARENT] [--keep] [--cut-ms T]
 *  [--ceiling-s S] [--proof-leaves L] [--count N] [--clients C] [--batch B]
 *  [--json]` (starts its own local cluster), or `--node ADDRS [--count N]
 *  [--clients C] [--batch B] [--acks FILE] | --check FILE` (a running one);
 *  argv[0] is "anchor". */
int bench_anchor_main(int argc, char **argv);

/* `medshard bench put|get [--size BYTES] [--nodes N] [--ec K+M] [--dir DIR]
 *  [--small-count N] [--clients C] [--runs R] [--limit-size BYTES] [--keep]
 *  [--json]` (starts its own dev cluster), or `--node ADDRS [--bucket NAME]
 *  [--dev-dir DEVDIR]` (a running one); argv[0] is "put" or "get", which
 *  only decides which figures the report leads with. */
int bench_obj_main(int argc, char **argv);

/* Helpers shared by benchmarks (bench_util.c). */

/* Runs `fio ARGS --output-format=json` and returns the bandwidth (bytes/s)
 * of its `rw` ("read" or "write") side, the group's total when the jobs
 * are grouped; 0 if fio fails or says nothing of it. */
double bench_fio_bw(const char *args, const char *rw);

/* Parses "4096", "64K", "1M", "2G" (binary units). 0 or MSD_EPARAM. */
int bench_parse_size(const char *text, uint64_t *out);

/* Fills buf with deterministic pseudo-random bytes from seed. */
void bench_fill(unsigned char *buf, size_t len, uint64_t seed);

/* Seconds since an arbitrary epoch, monotonic. */
double bench_now(void);

/* Bytes per second expressed in GB/s (10^9). */
double bench_gbps(uint64_t bytes, double seconds);

#endif
