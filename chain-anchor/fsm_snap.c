/* Raft snapshots of the FSM (fsm.h): a compact copy of the LMDB metadata
 * and the whole chain file in one versioned buffer. Restore verifies the
 * chain from genesis and checks the metadata agrees with it before it
 * replaces anything, then swaps files by rename (docs/FORMATS.md,
 * "FSM snapshot"). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain-anchor/fsm_int.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"

#define SNAP_MAGIC "MSDSNAP"
#define SNAP_VERSION 1
#define SNAP_HEADER 40 /* magic 8 | version 4 | zero 4 | applied 8 | lmdb 8 | chain 8 */

static int read_all(int fd, uint8_t *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
    if (n <= 0)
      return n < 0 ? -errno : MSD_ECORRUPT;
    got += (size_t)n;
  }
  return 0;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
  size_t put = 0;
  while (put < len) {
    ssize_t n = write(fd, buf + put, len - put);
    if (n < 0)
      return -errno;
    put += (size_t)n;
  }
  return 0;
}

/* A compacted copy of the LMDB environment, through a memfd. */
static int lmdb_copy(struct chain_fsm *f, int *fd_out, size_t *len)
{
  int fd = memfd_create("medshard-snapshot", MFD_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = mdb_env_copyfd2(f->env, fd, MDB_CP_COMPACT);
  off_t end = rc == 0 ? lseek(fd, 0, SEEK_END) : -1;
  if (rc != 0 || end < 0) {
    close(fd);
    return rc > 0 ? -rc : MSD_ECORRUPT;
  }
  *fd_out = fd;
  *len = (size_t)end;
  return 0;
}

int chain_fsm_snapshot(struct chain_fsm *f, uint8_t **buf, size_t *len)
{
  if (f->poisoned)
    return f->poisoned;
  /* Raft drops log entries up to this snapshot once it is stored, so the
   * state it stands for must be on disk first. */
  int rc = chain_file_sync(f->cf);
  if (rc == 0)
    rc = merkle_tree_sync(f->tree);
  if (rc == 0)
    rc = mdb_env_sync(f->env, 1) == 0 ? 0 : -EIO;
  int fd = -1;
  size_t lmdb_len = 0, chain_len = (size_t)f->meta->chain_bytes;
  if (rc == 0)
    rc = lmdb_copy(f, &fd, &lmdb_len);
  if (rc != 0)
    return rc;
  uint8_t *out = msd_malloc(SNAP_HEADER + lmdb_len + chain_len);
  if (out == NULL) {
    close(fd);
    return -ENOMEM;
  }
  memset(out, 0, SNAP_HEADER);
  memcpy(out, SNAP_MAGIC, 7);
  fsm__be(out + 8, SNAP_VERSION, 4);
  fsm__be(out + 16, f->meta->applied, 8);
  fsm__be(out + 24, lmdb_len, 8);
  fsm__be(out + 32, chain_len, 8);
  size_t got;
  rc = read_all(fd, out + SNAP_HEADER, lmdb_len);
  if (rc == 0)
    rc = chain_file_read(f->cf, 0, out + SNAP_HEADER + lmdb_len, chain_len, &got);
  if (rc == 0 && got != chain_len)
    rc = MSD_ECORRUPT; /* UNTESTED: meta.chain_bytes is within the file */
  close(fd);
  if (rc != 0) {
    msd_free(out);
    return rc;
  }
  *buf = out;
  *len = SNAP_HEADER + lmdb_len + chain_len;
  return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  int rc = write_all(fd, buf, len);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

/* Opens the LMDB copy read-only and checks its meta against the chain it
 * came with. */
static int check_restored(const char *dir, uint64_t applied, size_t chain_len,
                          const struct chain_verify_report *rep)
{
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_val k = {4, "meta"}, v;
  int rc = mdb_env_create(&env);
  if (rc != 0)
    return -ENOMEM;
  mdb_env_set_maxdbs(env, T_COUNT);
  rc = mdb_env_open(env, dir, MDB_RDONLY, 0600);
  if (rc == 0)
    rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
  else
    txn = NULL;
  if (rc == 0)
    rc = mdb_dbi_open(txn, "meta", 0, &dbi);
  if (rc == 0)
    rc = mdb_get(txn, dbi, &k, &v);
  Medshard__ChainMeta *m = rc == 0 ? medshard__chain_meta__unpack(NULL, v.mv_size, v.mv_data) : NULL;
  rc = m == NULL ? MSD_ECORRUPT
       : m->applied != applied || m->chain_bytes != chain_len || m->leaves != rep->leaves ||
               m->height != rep->blocks || m->head.len != BLOCK_HASH ||
               memcmp(m->head.data, rep->head, BLOCK_HASH) != 0
           ? MSD_ECORRUPT
           : 0;
  medshard__chain_meta__free_unpacked(m, NULL);
  if (txn != NULL)
    mdb_txn_abort(txn);
  mdb_env_close(env);
  return rc;
}

/* Writes and checks the snapshot's files beside the live ones. */
static int stage(struct chain_fsm *f, const uint8_t *buf, uint64_t applied, size_t lmdb_len,
                 size_t chain_len)
{
  char path[PATH_MAX], mdir[PATH_MAX - 16];
  struct chain_verify_report rep;
  snprintf(path, sizeof path, "%s/chain.restore", f->dir);
  snprintf(mdir, sizeof mdir, "%s/meta.restore", f->dir);
  if (mkdir(mdir, 0700) != 0 && errno != EEXIST)
    return -errno;
  int rc = write_file(path, buf + SNAP_HEADER + lmdb_len, chain_len);
  if (rc == 0 && chain_verify(path, &rep) != 0) {
    msd_log(MSD_LOG_ERROR, "chain: snapshot's chain fails verification at block %llu: %s",
            (unsigned long long)rep.bad_block, rep.reason);
    rc = MSD_ECORRUPT;
  }
  snprintf(path, sizeof path, "%s/data.mdb", mdir);
  if (rc == 0)
    rc = write_file(path, buf + SNAP_HEADER, lmdb_len);
  if (rc == 0)
    rc = check_restored(mdir, applied, chain_len, &rep);
  return rc;
}

static int sync_dir(const char *dir)
{
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return -errno;
  int rc = fsync(dfd) == 0 ? 0 : -errno;
  close(dfd);
  return rc;
}

/* Swaps the staged files in; the state is closed meanwhile. */
static int swap_in(struct chain_fsm *f)
{
  char from[PATH_MAX], to[PATH_MAX], mdir[PATH_MAX];
  fsm__close_state(f);
  /* The chain goes first, durably: a crash before the LMDB rename leaves
   * the old meta over the new chain, whose first meta.chain_bytes are the
   * old chain (the snapshot extends this node's state), so the next open
   * simply cuts it back. The other order would leave a new meta over a
   * shorter chain, which open must refuse. */
  snprintf(from, sizeof from, "%s/chain.restore", f->dir);
  int rc = rename(from, f->chain_path) == 0 ? 0 : -errno;
  if (rc == 0)
    rc = sync_dir(f->dir);
  snprintf(to, sizeof to, "%s/meta/lock.mdb", f->dir);
  unlink(to);
  snprintf(from, sizeof from, "%s/meta.restore/data.mdb", f->dir);
  snprintf(to, sizeof to, "%s/meta/data.mdb", f->dir);
  if (rc == 0)
    rc = rename(from, to) == 0 ? 0 : -errno;
  snprintf(mdir, sizeof mdir, "%s/meta", f->dir);
  if (rc == 0)
    rc = sync_dir(mdir);
  snprintf(to, sizeof to, "%s/tree", f->dir);
  unlink(to); /* rebuilt from the chain's leaves on open */
  if (rc == 0)
    rc = fsm__open_state(f);
  return rc;
}

static void unstage(struct chain_fsm *f)
{
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/chain.restore", f->dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/meta.restore/data.mdb", f->dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/meta.restore/lock.mdb", f->dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/meta.restore", f->dir);
  rmdir(path);
}

int chain_fsm_restore(struct chain_fsm *f, const uint8_t *buf, size_t len)
{
  if (f->poisoned)
    return f->poisoned;
  if (buf == NULL || len < SNAP_HEADER || memcmp(buf, SNAP_MAGIC, 8) != 0)
    return MSD_EDECODE;
  if (fsm__get_be(buf + 8, 4) != SNAP_VERSION || fsm__get_be(buf + 12, 4) != 0)
    return MSD_EVERSION;
  uint64_t applied = fsm__get_be(buf + 16, 8), lmdb_len = fsm__get_be(buf + 24, 8),
           chain_len = fsm__get_be(buf + 32, 8);
  if (lmdb_len > len || chain_len > len || SNAP_HEADER + lmdb_len + chain_len != len)
    return MSD_EDECODE;
  if (applied <= f->meta->applied)
    return 0; /* our own state already holds it (a restart loading its snapshot) */
  int rc = stage(f, buf, applied, (size_t)lmdb_len, (size_t)chain_len);
  if (rc == 0) {
    rc = swap_in(f);
    if (rc != 0) {
      msd_log(MSD_LOG_ERROR, "chain: reopening after a snapshot restore failed: %s",
              msd_strerror(rc));
      f->poisoned = rc; /* UNTESTED: the staged state was checked */
    }
  }
  unstage(f);
  if (rc == 0)
    msd_log(MSD_LOG_INFO, "chain: restored a snapshot at Raft index %llu (%llu leaves, height %llu)",
            (unsigned long long)applied, (unsigned long long)f->meta->leaves,
            (unsigned long long)f->meta->height);
  return rc;
}
