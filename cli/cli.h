/* Helpers shared by the CLI verbs: argument parsing, hex, the cluster
 * address, and JSON string output. */
#ifndef MSD_CLI_CLI_H
#define MSD_CLI_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Verbs: argv[0] is the verb's own name. Each returns the exit code. */
int cmd_node(int argc, char **argv);
int cmd_chain(int argc, char **argv);
int cmd_bucket(int argc, char **argv);
int cmd_verify_proof(int argc, char **argv);

/* Decimal in [min, max]; prints nothing. 0 or MSD_EPARAM. */
int cli_parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out);
int cli_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len);
/* Lower-case hex of len bytes into out (2*len+1 bytes). Returns out. */
char *cli_hex(const uint8_t *buf, size_t len, char *out);
/* The cluster to talk to: --node's value, else $MEDSHARD_NODE, else NULL
 * after printing how to give one. */
const char *cli_cluster(const char *flag, const char *verb);
/* Writes s as a JSON string literal (quotes and escapes). */
void cli_json_str(FILE *f, const char *s);

#endif
