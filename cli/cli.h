/* Helpers shared by the CLI verbs: argument parsing, hex, the cluster
 * address, and JSON string output. */
#ifndef MSD_CLI_CLI_H
#define MSD_CLI_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Verbs: argv[0] is the verb's own name. Each returns the exit code. */
int cmd_node(int argc, char **argv);
int cmd_chain(int argc, char **argv);
int cmd_bucket(int argc, char **argv);
int cmd_verify_proof(int argc, char **argv);
int cmd_dev(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_verify(int argc, char **argv);

/* Decimal in [min, max]; prints nothing. 0 or MSD_EPARAM. */
int cli_parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out);
int cli_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len);
/* Lower-case hex of len bytes into out (2*len+1 bytes). Returns out. */
char *cli_hex(const uint8_t *buf, size_t len, char *out);
/* The client config `medshard dev up` writes in the working directory
 * (docs/dev.md): first line "medshard-client 1", then key = value lines. */
#define CLI_CONFIG_FILE "medshard.conf"
#define CLI_CONFIG_VERSION 1

struct cli_config {
  char nodes[1024];  /* control addresses, comma-separated */
  char bucket[64];   /* the default bucket, "" if none */
  char dev_dir[512]; /* the dev cluster's state dir, "" if none */
};

/* Reads a client config. 0; -ENOENT when path does not exist; MSD_EPARAM
 * or MSD_EVERSION with a sentence naming the file and line in err. */
int cli_config_read(const char *path, struct cli_config *c, char *err, size_t cap);

/* Writes c to path atomically (cli_write_atomic), mode 0644, in the
 * format cli_config_read reads. 0 or -errno. */
int cli_config_write(const char *path, const struct cli_config *c);

/* Atomic publish of a small file: a temporary file beside it, fsync,
 * rename over path, fsync of the directory, so that a crash leaves the old
 * file or the new one, never a mix. 0 or -errno. */
int cli_write_atomic(const char *path, const char *text, mode_t mode);

/* The cluster to talk to: --node's value, else $MEDSHARD_NODE, else the
 * nodes of ./medshard.conf, else NULL after printing how to give one. The
 * result is borrowed: valid until the next call. */
const char *cli_cluster(const char *flag, const char *verb);
/* Cuts spaces and line ends off both ends of s in place; returns the
 * first character that is not a space (inside s). */
char *cli_trim(char *s);
/* Writes s as a JSON string literal (quotes and escapes). */
void cli_json_str(FILE *f, const char *s);

#endif
