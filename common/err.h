/* One table of medshard's own error codes. Functions return 0 on success,
 * -errno for operating-system failures, or one of the negative MSD_E* codes
 * below; msd_strerror() turns either kind into a sentence. */
#ifndef MSD_COMMON_ERR_H
#define MSD_COMMON_ERR_H

/* X(name, message). Codes are assigned in order from MSD_ERR_BASE downwards,
 * far below any errno value, so the two ranges never meet. Append only: the
 * numbers may appear in logs and on the wire. */
#define MSD_ERRORS(X)                                                          \
  X(MSD_EPARAM, "invalid argument")                                            \
  X(MSD_EEC_PARAMS,                                                            \
    "erasure parameters out of range (need k 1..32, m 0..16, k+m <= 48)")      \
  X(MSD_EUNIT,                                                                 \
    "stripe unit must be a multiple of 64 bytes between 4 KiB and 64 MiB")     \
  X(MSD_ETOO_MANY_ERASURES,                                                    \
    "more shards are missing than the parity can rebuild")                     \
  X(MSD_ESHORT, "buffer too small for the requested operation")                \
  X(MSD_ERANGE, "byte range starts past the end of the object")                \
  X(MSD_ENODES, "fewer eligible nodes than shards to place")                   \
  X(MSD_EWINDOW, "stripe window full: release stripes before writing more")    \
  X(MSD_ESTATE, "operation not allowed in the current state")                  \
  X(MSD_ESINGULAR, "erasure decode matrix is singular")                        \
  X(MSD_EVERSION, "unsupported format version")                                \
  X(MSD_EDECODE, "malformed message")                                          \
  X(MSD_EPOLICY, "erasure policy must look like K+M, e.g. 4+2")                \
  X(MSD_ENOSHARD, "no such shard in this store")                               \
  X(MSD_EDELETED, "shard was deleted")                                         \
  X(MSD_ECHECKSUM, "checksum mismatch: stored data is corrupt")                \
  X(MSD_EPOISONED,                                                             \
    "store refuses writes after a failed write or fsync; restart the node")    \
  X(MSD_EDISKFULL, "disk full: writing would eat into the free-space reserve") \
  X(MSD_ENOTSTORE, "directory is not a medshard store")                        \
  X(MSD_ELOCKED, "already open in another process (an earlier instance may still be exiting)")                   \
  X(MSD_ECORRUPT, "store metadata is corrupt")                                 \
  X(MSD_ENOBUFS, "no free I/O buffer; retry when requests complete")       \
  X(MSD_EEXIST, "already exists")                                              \
  X(MSD_ENOTFOUND, "not found")                                                \
  X(MSD_ESTALE, "stale command: the state it was made for has moved on")       \
  X(MSD_EDIVERGED,                                                             \
    "chain diverged from this node's state: writes halted, see the alarm")     \
  X(MSD_EBADSIG, "signature does not verify with the signer's key")           \
  X(MSD_ENOTLEADER, "this node is not the Raft leader; retry on the leader")   \
  X(MSD_EFRAME, "malformed frame")                                             \
  X(MSD_ETIMEDOUT, "timed out")                                                \
  X(MSD_EUNAVAILABLE, "cluster unavailable: no leader reachable")             \
  X(MSD_EDENIED, "not permitted from this sender")

#define MSD_ERR_BASE (-10000)

/* Position of each code in the table (internal; use the codes below). */
enum msd_err_index {
#define MSD_X_INDEX(name, msg) name##_INDEX_,
  MSD_ERRORS(MSD_X_INDEX)
#undef MSD_X_INDEX
  MSD_ERR_COUNT_
};

/* The codes themselves: MSD_EPARAM == -10000, then -10001, ... */
enum msd_err {
#define MSD_X_CODE(name, msg) name = MSD_ERR_BASE - name##_INDEX_,
  MSD_ERRORS(MSD_X_CODE)
#undef MSD_X_CODE
};

/* Sentence for a return code: an MSD_E* code, a -errno value, or 0.
 * The string is static; never free it. */
const char *msd_strerror(int rc);

/* Short symbolic name ("MSD_EPARAM", "ENOENT") for logs and --json output. */
const char *msd_errname(int rc);

#endif
