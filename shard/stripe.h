/* Striping: an object is cut into stripes of k x unit bytes; shard i receives
 * chunk i of every stripe, so each shard is one contiguous byte stream of
 * stripe_count x unit bytes. The last stripe is zero-padded; the true size
 * travels in the manifest. The streaming encoder holds a fixed window of
 * stripes, never the file. */
#ifndef MSD_SHARD_STRIPE_H
#define MSD_SHARD_STRIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard/ec.h"

#define STRIPE_UNIT_MIN ((size_t)4096)
#define STRIPE_UNIT_MAX ((size_t)64 << 20)
#define STRIPE_UNIT_ALIGN ((size_t)64)
#define STRIPE_UNIT_DEFAULT ((size_t)1 << 20)
#define STRIPE_WINDOW_MAX 64

/* 0 if unit is a multiple of 64 in [4 KiB, 64 MiB], else MSD_EUNIT. */
int stripe_check_unit(size_t unit);

/* The shape of one object's stripes. */
struct stripe_geom {
  int k, m;
  size_t unit;
  uint64_t size; /* true object size in bytes */
};

/* Validates and fills *g. Returns 0, MSD_EEC_PARAMS or MSD_EUNIT. */
int stripe_geom_init(struct stripe_geom *g, int k, int m, size_t unit, uint64_t size);

/* Number of stripes: ceil(size / (k * unit)); 0 for an empty object. */
uint64_t stripe_count(const struct stripe_geom *g);

/* Bytes in every shard: stripe_count * unit. */
uint64_t stripe_shard_size(const struct stripe_geom *g);

/* Object bytes carried by stripe `index` (k * unit except for the last). */
size_t stripe_data_len(const struct stripe_geom *g, uint64_t index);

/* One encoded stripe handed out by the encoder. chunk[0..k-1] are the data
 * chunks, chunk[k..k+m-1] the parity, each `unit` bytes. */
struct stripe {
  uint64_t index;
  size_t data_len; /* object bytes in this stripe; the rest is zero padding */
  unsigned char *chunk[EC_N_MAX];
};

struct stripe_enc;

/* Flag for stripe_enc_write: encode whole stripes straight from the caller's
 * buffer instead of copying them. The caller must then keep those bytes
 * valid and unchanged until every stripe covering them is released. */
#define STRIPE_BORROW 1u

/* Creates an encoder with `window` stripe buffers of (k+m) x unit bytes each
 * (the memory bound). The codec is borrowed and must outlive the encoder;
 * *out is owned by the caller (stripe_enc_destroy).
 * Returns 0, MSD_EUNIT, MSD_EPARAM (window 0 or > 64), -ENOMEM. */
int stripe_enc_create(struct ec_codec *codec, size_t unit, unsigned window,
                      struct stripe_enc **out);
/* The same, with the window's buffers carved from the caller's memory
 * (64-byte aligned, at least window x (k+m) x unit bytes; it must outlive
 * the encoder), so a server can reuse one arena for every request instead
 * of faulting in fresh pages each time. MSD_EPARAM if mem is unfit. */
int stripe_enc_create_in(struct ec_codec *codec, size_t unit, unsigned window, void *mem,
                         size_t mem_len, struct stripe_enc **out);
void stripe_enc_destroy(struct stripe_enc *s);

/* Starts a new object on the same buffers (no allocation), e.g. the next
 * PUT on a connection. Returns MSD_ESTATE while any stripe is still taken
 * (not released); otherwise drops unread stripes and returns 0. */
int stripe_enc_reset(struct stripe_enc *s);

/* Feeds up to len bytes; *consumed says how many were taken. Every stripe
 * that fills up is encoded and queued for stripe_enc_next. Takes fewer than
 * len bytes only when all window buffers are in use (then returns
 * MSD_EWINDOW after taking what fit): drain with stripe_enc_next and
 * stripe_enc_release, then write the rest. MSD_ESTATE after finish. */
int stripe_enc_write(struct stripe_enc *s, const void *buf, size_t len, unsigned flags,
                     size_t *consumed);

/* One place where the object's next bytes go (stripe_enc_reserve). */
struct stripe_span {
  unsigned char *p;
  size_t len;
};

/* Zero-copy feeding, for a caller that receives the object straight into the
 * window (a socket read into place): fills out[0..*n) with up to `max` spans
 * where the next bytes go, in order: the rest of the stripe being filled,
 * then the data areas of further stripe buffers, each taken from the window
 * while one is free (*n is 0 when none is). The spans stay reserved for the
 * caller until stripe_enc_commit; reserving again returns the same spans
 * first, then more. stripe_enc_write and _finish return MSD_ESTATE while a
 * reservation is open. Returns 0, MSD_EPARAM, MSD_ESTATE after finish. */
int stripe_enc_reserve(struct stripe_enc *s, struct stripe_span *out, unsigned max,
                       unsigned *n);

/* Closes the open reservation: the caller wrote the first len bytes of its
 * spans, which become the object's next bytes; every stripe they fill is
 * encoded and queued, as stripe_enc_write does, and buffers the bytes did
 * not reach go back to the window (len 0 cancels). Returns 0, MSD_EPARAM
 * (len beyond the spans), MSD_ESTATE (no open reservation). */
int stripe_enc_commit(struct stripe_enc *s, size_t len);

/* Ends the object: a partial last stripe (which already owns a buffer) is
 * zero-padded, encoded and queued. Returns 0, or MSD_ESTATE if called twice. */
int stripe_enc_finish(struct stripe_enc *s);

/* The oldest encoded stripe not yet handed out, or NULL. The stripe stays
 * valid until stripe_enc_release (in any order). */
struct stripe *stripe_enc_next(struct stripe_enc *s);
void stripe_enc_release(struct stripe_enc *s, struct stripe *st);

/* Object bytes accepted so far (the final size once finished). */
uint64_t stripe_enc_size(const struct stripe_enc *s);

/* Destriper: rebuilds stripe `index` of an object from the chunks present
 * (chunk[i] non-NULL for each available shard i, each unit bytes at shard
 * offset index x unit) and writes its object bytes to out, which must hold
 * k x unit bytes (missing data chunks are decoded straight into it).
 * *out_len gets stripe_data_len. A present data chunk may already be in
 * place (chunk[i] == out + i*unit), which skips its copy; no other overlap
 * is allowed. Returns 0, MSD_ETOO_MANY_ERASURES (fewer than k chunks:
 * nothing useful is written), MSD_ERANGE (index past the last stripe). */
int stripe_decode(struct ec_codec *codec, const struct stripe_geom *g, uint64_t index,
                  unsigned char *const chunk[], unsigned char *out, size_t *out_len);

#endif
