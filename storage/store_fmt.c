/* Encoding and checking of segment headers and records (store_int.h). */
#include <errno.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "common/alloc.h"
#include "common/err.h"
#include "storage/store_int.h"

void seg_header_fill(struct seg_header *h, uint64_t id, const uint8_t uuid[16])
{
  memset(h, 0, sizeof *h);
  memcpy(h->magic, SEG_MAGIC, sizeof h->magic);
  h->version = SEG_VERSION;
  h->header_size = SEG_HEADER_SIZE;
  h->id = id;
  memcpy(h->uuid, uuid, sizeof h->uuid);
  h->checksum = XXH3_64bits(h, offsetof(struct seg_header, checksum));
}

int seg_header_check(const struct seg_header *h, uint64_t id, const uint8_t uuid[16])
{
  if (memcmp(h->magic, SEG_MAGIC, sizeof h->magic) != 0 ||
      h->checksum != XXH3_64bits(h, offsetof(struct seg_header, checksum)))
    return MSD_ECORRUPT;
  if (h->version != SEG_VERSION || h->header_size != SEG_HEADER_SIZE)
    return MSD_EVERSION;
  if (h->id != id || memcmp(h->uuid, uuid, sizeof h->uuid) != 0)
    return MSD_ECORRUPT;
  return 0;
}

static uint64_t header_checksum(const unsigned char *hdr, uint32_t nblocks)
{
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, hdr, offsetof(struct rec_header, checksum));
  XXH3_64bits_update(&st, hdr + sizeof(struct rec_header), 8ull * nblocks);
  return XXH3_64bits_digest(&st);
}

void rec_build(unsigned char *data, uint64_t len, const struct store_id *id, uint64_t shard_off,
               uint64_t seq)
{
  uint32_t nblocks = rec_blocks(len);
  unsigned char *start = data - rec_hdr_len(len);
  struct rec_header h = {REC_MAGIC, REC_VERSION, REC_KIND_EXTENT, {0}, id->index, nblocks,
                         shard_off, len, seq, 0};
  memcpy(h.oid, id->oid, sizeof h.oid);
  unsigned char *csums = start + sizeof h;
  for (uint32_t b = 0; b < nblocks; b++) {
    uint64_t from = (uint64_t)b * STORE_BLOCK;
    uint64_t n = len - from < STORE_BLOCK ? len - from : STORE_BLOCK;
    uint64_t c = XXH3_64bits(data + from, (size_t)n);
    memcpy(csums + 8 * b, &c, 8);
  }
  memcpy(start, &h, sizeof h);
  h.checksum = header_checksum(start, nblocks);
  memcpy(start, &h, sizeof h);
}

int rec_check_header(const unsigned char *hdr, const struct store_id *id, uint64_t shard_off,
                     uint64_t len)
{
  struct rec_header h;
  memcpy(&h, hdr, sizeof h);
  if (h.magic != REC_MAGIC || h.version != REC_VERSION || h.kind != REC_KIND_EXTENT ||
      h.nblocks != rec_blocks(len) || h.len != len || h.shard_off != shard_off ||
      h.index != id->index || memcmp(h.oid, id->oid, sizeof h.oid) != 0)
    return MSD_ECORRUPT;
  if (h.checksum != header_checksum(hdr, h.nblocks))
    return MSD_ECORRUPT;
  return 0;
}

long rec_check_blocks(const unsigned char *hdr, uint64_t len, uint32_t b0, uint32_t n,
                      const unsigned char *data)
{
  const unsigned char *csums = hdr + sizeof(struct rec_header);
  for (uint32_t b = b0; b < b0 + n; b++) {
    uint64_t from = (uint64_t)b * STORE_BLOCK;
    uint64_t bytes = len - from < STORE_BLOCK ? len - from : STORE_BLOCK;
    uint64_t want;
    memcpy(&want, csums + 8 * b, 8);
    if (XXH3_64bits(data + (from - (uint64_t)b0 * STORE_BLOCK), (size_t)bytes) != want)
      return (long)b;
  }
  return -1;
}

static uint64_t seal_checksum(const struct rec_header *h, const unsigned char *payload)
{
  XXH3_state_t st;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, h, offsetof(struct rec_header, checksum));
  XXH3_64bits_update(&st, payload, h->len);
  return XXH3_64bits_digest(&st);
}

void rec_seal_build(unsigned char *out, const struct store_id *id, const struct shard_entry *e)
{
  struct rec_header h = {REC_MAGIC, REC_VERSION, REC_KIND_SEAL, {0}, id->index, 0, e->h.size,
                         sizeof(struct seal_payload) + 32ull * e->h.nextents, e->h.seq, 0};
  memcpy(h.oid, id->oid, sizeof h.oid);
  unsigned char *payload = out + sizeof h;
  struct seal_payload p = {{0}, e->h.nextents, 0};
  memcpy(p.digest, e->h.digest, sizeof p.digest);
  memcpy(payload, &p, sizeof p);
  if (e->h.nextents > 0) /* an empty shard has no extents (ext may be NULL) */
    memcpy(payload + sizeof p, e->ext, 32ull * e->h.nextents);
  h.checksum = seal_checksum(&h, payload);
  memcpy(out, &h, sizeof h);
}

int rec_seal_parse(const struct rec_header *h, const unsigned char *payload,
                   struct store_id *id, struct shard_entry *e)
{
  struct seal_payload p;
  e->ext = NULL;
  if (h->kind != REC_KIND_SEAL || h->nblocks != 0 || h->len < sizeof p ||
      h->checksum != seal_checksum(h, payload))
    return MSD_ECORRUPT;
  memcpy(&p, payload, sizeof p);
  if (h->len != sizeof p + 32ull * p.nextents)
    return MSD_ECORRUPT;
  memcpy(id->oid, h->oid, sizeof id->oid);
  id->index = h->index;
  memset(&e->h, 0, sizeof e->h);
  e->h.version = IDX_VERSION;
  e->h.state = IDX_STATE_SEALED;
  e->h.nextents = p.nextents;
  e->h.size = h->shard_off;
  e->h.seq = h->seq;
  memcpy(e->h.digest, p.digest, sizeof p.digest);
  e->ext = msd_malloc(32ull * p.nextents);
  if (e->ext == NULL)
    return -ENOMEM;
  memcpy(e->ext, payload + sizeof p, 32ull * p.nextents);
  uint64_t at = 0;
  for (uint32_t i = 0; i < p.nextents; i++) {
    if (e->ext[i].shard_off != at || e->ext[i].len == 0 || e->ext[i].len > EXTENT_MAX ||
        e->ext[i].rec_off < SEG_HEADER_SIZE) {
      msd_free(e->ext);
      e->ext = NULL;
      return MSD_ECORRUPT;
    }
    at += e->ext[i].len;
  }
  return at == e->h.size ? 0 : (msd_free(e->ext), e->ext = NULL, MSD_ECORRUPT);
}
