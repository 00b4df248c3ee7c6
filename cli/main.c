/* The `medshard` binary: parses the verb and hands the rest of the command
 * line to the module that implements it. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "cli/cli.h"

#define MSD_VERSION "0.1.0"

static void usage(FILE *f)
{
  fprintf(f, "usage: medshard <command> [options]\n"
             "\n"
             "commands:\n"
             "  bench ec [--k K] [--m M] [--unit BYTES] [--size BYTES] [--json]\n"
             "                 erasure-coding throughput against raw ISA-L\n"
             "  bench store --dir DIR [--size BYTES] [--json]\n"
             "                 shard store writes and reads against fio\n"
             "  bench anchor --nodes N | --node ADDRS [--count N] [--clients C] [--batch B]\n"
             "                 side-chain anchors/s sealed against raw libraft, proof figures\n"
             "  bench put|get [--size BYTES] [--nodes N] [--ec K+M] [--node ADDRS] [--json]\n"
             "                 object PUT/GET MB/s, degraded GET, small-object ingest,\n"
             "                 against fio and loopback TCP measured in the same run\n"
             "  dev up|status|kill N|start N|down [--dir DIR] [--json]\n"
             "                 a local cluster on 127.0.0.1; `dev up` writes ./medshard.conf\n"
             "  node [--config FILE] [flags]\n"
             "                 run a storage node (Raft voter or standby, chain, control plane)\n"
             "  put FILE|- BUCKET/KEY [--content-type TYPE] [--json]\n"
             "                 store a file, erasure-coded and anchored\n"
             "  get BUCKET/KEY [FILE|-] [--range START-END] [--json]\n"
             "                 read an object (or a byte range), checked end to end\n"
             "  stat BUCKET/KEY [--json]\n"
             "                 an object's manifest, anchor, block and shard map\n"
             "  ls BUCKET[/PREFIX] [--json]\n"
             "                 list a bucket's objects in key order\n"
             "  rm BUCKET/KEY [--json]\n"
             "                 delete an object (a tombstone anchored on the chain)\n"
             "  verify BUCKET/KEY [--keys FILE] [--proof-out FILE] [--json]\n"
             "                 read an object and check it against its anchor and proof\n"
             "  bucket create NAME --ec K+M [--unit BYTES]\n"
             "                 create a bucket with its erasure policy\n"
             "  chain head|show H|verify|proof LEAF -o FILE|keys\n"
             "                 the side-chain: head, a block, a full re-walk, proofs, keys\n"
             "  verify-proof FILE --keys KEYS\n"
             "                 check a proof bundle offline against trusted keys\n"
             "  version        print the version\n"
             "  help           this text\n"
             "\n"
             "Run 'medshard <command> --help' for a command's options.\n");
}

static int cmd_bench(int argc, char **argv)
{
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    fprintf(argc < 2 ? stderr : stdout, "usage: medshard bench ec|store|anchor|put|get [options]\n"
                                        "benchmarks: ec, store, anchor, put, get\n");
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "ec") == 0)
    return bench_ec_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "store") == 0)
    return bench_store_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "anchor") == 0)
    return bench_anchor_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "put") == 0 || strcmp(argv[1], "get") == 0)
    return bench_obj_main(argc - 1, argv + 1);
  fprintf(stderr, "medshard bench: unknown benchmark '%s' (available: ec, store, anchor, put,"
          " get)\n", argv[1]);
  return 2;
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *verb = argv[1];
  if (strcmp(verb, "help") == 0 || strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(verb, "version") == 0 || strcmp(verb, "--version") == 0) {
    printf("medshard %s\n", MSD_VERSION);
    return 0;
  }
  if (strcmp(verb, "bench") == 0)
    return cmd_bench(argc - 1, argv + 1);
  if (strcmp(verb, "node") == 0)
    return cmd_node(argc - 1, argv + 1);
  if (strcmp(verb, "dev") == 0)
    return cmd_dev(argc - 1, argv + 1);
  if (strcmp(verb, "chain") == 0)
    return cmd_chain(argc - 1, argv + 1);
  if (strcmp(verb, "bucket") == 0)
    return cmd_bucket(argc - 1, argv + 1);
  if (strcmp(verb, "put") == 0)
    return cmd_put(argc - 1, argv + 1);
  if (strcmp(verb, "get") == 0)
    return cmd_get(argc - 1, argv + 1);
  if (strcmp(verb, "stat") == 0)
    return cmd_stat(argc - 1, argv + 1);
  if (strcmp(verb, "ls") == 0)
    return cmd_ls(argc - 1, argv + 1);
  if (strcmp(verb, "rm") == 0)
    return cmd_rm(argc - 1, argv + 1);
  if (strcmp(verb, "verify") == 0)
    return cmd_verify(argc - 1, argv + 1);
  if (strcmp(verb, "verify-proof") == 0)
    return cmd_verify_proof(argc - 1, argv + 1);
  fprintf(stderr, "medshard: unknown command '%s'; run 'medshard help' for the list\n", verb);
  return 2;
}
