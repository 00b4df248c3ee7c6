/* The `medshard` binary: parses the verb and hands the rest of the command
 * line to the module that implements it. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"

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
             "  version        print the version\n"
             "  help           this text\n"
             "\n"
             "Run 'medshard <command> --help' for a command's options.\n");
}

static int cmd_bench(int argc, char **argv)
{
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    fprintf(argc < 2 ? stderr : stdout, "usage: medshard bench ec|store [options]\n"
                                        "benchmarks: ec, store\n");
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "ec") == 0)
    return bench_ec_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "store") == 0)
    return bench_store_main(argc - 1, argv + 1);
  fprintf(stderr, "medshard bench: unknown benchmark '%s' (available: ec, store)\n", argv[1]);
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
  fprintf(stderr, "medshard: unknown command '%s'; run 'medshard help' for the list\n", verb);
  return 2;
}
