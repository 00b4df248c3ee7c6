/* CLI helpers (cli.h). */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

int cli_parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
  char *end;
  if (s == NULL || *s < '0' || *s > '9')
    return MSD_EPARAM;
  unsigned long v = strtoul(s, &end, 10);
  if (*end != 0 || v < min || v > max)
    return MSD_EPARAM;
  *out = v;
  return 0;
}

int cli_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
  size_t n = hex ? strlen(hex) : 0;
  if (n == 0 || n % 2 != 0 || n / 2 > cap)
    return MSD_EPARAM;
  for (size_t i = 0; i < n; i++)
    if (strchr("0123456789abcdefABCDEF", hex[i]) == NULL)
      return MSD_EPARAM;
  for (size_t i = 0; i < n / 2; i++) {
    char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
    out[i] = (uint8_t)strtoul(pair, NULL, 16);
  }
  *len = n / 2;
  return 0;
}

char *cli_hex(const uint8_t *buf, size_t len, char *out)
{
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = d[buf[i] >> 4];
    out[2 * i + 1] = d[buf[i] & 15];
  }
  out[2 * len] = 0;
  return out;
}

char *cli_trim(char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && strchr(" \t\r\n", s[n - 1]) != NULL)
    s[--n] = 0;
  return s;
}

/* One "key = value" line of the client config; unknown keys are ignored so
 * that version 1 can gain optional keys. 0 or MSD_EPARAM. */
static int config_line(char *line, struct cli_config *c)
{
  char *eq = strchr(line, '=');
  if (eq == NULL)
    return MSD_EPARAM;
  *eq = 0;
  const char *k = cli_trim(line), *v = cli_trim(eq + 1);
  char *dst = strcmp(k, "nodes") == 0     ? c->nodes
              : strcmp(k, "bucket") == 0  ? c->bucket
              : strcmp(k, "dev_dir") == 0 ? c->dev_dir
                                          : NULL;
  size_t cap = dst == c->nodes ? sizeof c->nodes
               : dst == c->bucket ? sizeof c->bucket : sizeof c->dev_dir;
  if (dst == NULL)
    return 0;
  if (strlen(v) >= cap)
    return MSD_EPARAM;
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

int cli_config_read(const char *path, struct cli_config *c, char *err, size_t cap)
{
  char line[1200];
  unsigned ver = 0, lineno = 1;
  memset(c, 0, sizeof *c);
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    int rc = -errno;
    snprintf(err, cap, "cannot read %s: %s", path, strerror(errno));
    return rc;
  }
  int rc = 0;
  if (fgets(line, sizeof line, f) == NULL || sscanf(line, "medshard-client %u", &ver) != 1) {
    snprintf(err, cap, "%s is not a medshard client config (its first line must be"
             " 'medshard-client %d')", path, CLI_CONFIG_VERSION);
    rc = MSD_EPARAM;
  } else if (ver != CLI_CONFIG_VERSION) {
    snprintf(err, cap, "%s is version %u of the client config; this medshard reads version %d",
             path, ver, CLI_CONFIG_VERSION);
    rc = MSD_EVERSION;
  }
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    char *t = cli_trim(line);
    if (t[0] != 0 && t[0] != '#' && config_line(t, c) != 0) {
      snprintf(err, cap, "%s line %u: want 'key = value' with a value that fits", path, lineno);
      rc = MSD_EPARAM;
    }
  }
  fclose(f);
  return rc;
}

int cli_config_write(const char *path, const struct cli_config *c)
{
  char text[sizeof *c + 400];
  snprintf(text, sizeof text,
           "medshard-client %d\n# Written by `medshard dev up` (docs/dev.md). medshard verbs run"
           " from this\n# directory use this cluster unless given --node or MEDSHARD_NODE.\n"
           "nodes = %s\nbucket = %s\ndev_dir = %s\n",
           CLI_CONFIG_VERSION, c->nodes, c->bucket, c->dev_dir);
  return cli_write_atomic(path, text, 0644);
}

static int write_all(int fd, const char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? -errno : -EIO;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int cli_write_atomic(const char *path, const char *text, mode_t mode)
{
  char tmp[PATH_MAX], dir[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return -ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  int rc = write_all(fd, text, strlen(text));
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  close(fd);
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc != 0) {
    unlink(tmp);
    return rc;
  }
  /* The rename is durable once the directory is. */
  const char *slash = strrchr(path, '/');
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 1,
           slash ? path : ".");
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  return 0;
}

const char *cli_cluster(const char *flag, const char *verb)
{
  static struct cli_config cfg;
  char err[700];
  if (flag != NULL && flag[0] != 0)
    return flag;
  const char *env = getenv("MEDSHARD_NODE");
  if (env != NULL && env[0] != 0)
    return env;
  int rc = cli_config_read(CLI_CONFIG_FILE, &cfg, err, sizeof err);
  if (rc == 0 && cfg.nodes[0] != 0)
    return cfg.nodes;
  if (rc != 0 && rc != -ENOENT)
    fprintf(stderr, "medshard %s: %s\n", verb, err);
  else
    fprintf(stderr, "medshard %s: no cluster: pass --node HOST:PORT[,HOST:PORT...], set"
            " MEDSHARD_NODE, or run `medshard dev up` here%s\n", verb,
            rc == 0 ? " (" CLI_CONFIG_FILE " lists no nodes)" : "");
  return NULL;
}

void cli_json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}
