/*
 * A sparse byte buffer addressed by absolute stream offset, made of
 * fixed-size blocks allocated on demand and freed once released: memory
 * follows the bytes actually held, never a whole window. Used for both
 * directions of a stream (send: written but unacknowledged bytes;
 * receive: out-of-order bytes awaiting the reader).
 */

#ifndef HG_BYTEBUF_H
#define HG_BYTEBUF_H

#include <stddef.h>
#include <stdint.h>


#define HG_BYTEBUF_BLOCK  16384

typedef struct {
    uint8_t   **blocks;           /* ring of block pointers */
    size_t      nblocks;          /* ring size (power of two) */
    uint64_t    base;             /* offset of blocks[head]'s first byte */
    size_t      head;
    size_t      allocated;        /* blocks currently allocated */
    size_t      max_bytes;        /* span cap: writes beyond base+max fail */
} hg_bytebuf_t;

void hg_bytebuf_init(hg_bytebuf_t *b, size_t max_bytes);
void hg_bytebuf_free(hg_bytebuf_t *b);

/* store len bytes at offset (>= base); -1 beyond the cap or on ENOMEM */
int hg_bytebuf_write(hg_bytebuf_t *b, uint64_t offset, const uint8_t *data,
    size_t len);
/* copy len bytes at offset out (the caller knows they were written) */
void hg_bytebuf_read(const hg_bytebuf_t *b, uint64_t offset, uint8_t *dst,
    size_t len);
/* forget everything below offset; frees whole blocks */
void hg_bytebuf_release(hg_bytebuf_t *b, uint64_t offset);

/* bytes of memory held (blocks * block size) */
size_t hg_bytebuf_memory(const hg_bytebuf_t *b);

#endif /* HG_BYTEBUF_H */
