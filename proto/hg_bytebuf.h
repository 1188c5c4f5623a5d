/*
 * A sparse byte buffer addressed by absolute stream offset, made of
 * fixed-size blocks allocated on demand and freed once released: memory
 * follows the bytes actually held, never a whole window. Used for both
 * directions of a stream (send: written but unacknowledged bytes;
 * receive: out-of-order bytes awaiting the reader).
 *
 * The buffer holds offsets [start, start + max_bytes). Block pointers sit
 * in a power-of-two ring that grows on demand up to the number of blocks
 * that span can touch (max_bytes / BLOCK + 1 when max_bytes is a multiple
 * of the block size); a buffer holding nothing owns no memory at all.
 */

#ifndef HG_BYTEBUF_H
#define HG_BYTEBUF_H

#include <stddef.h>
#include <stdint.h>


#define HG_BYTEBUF_BLOCK  16384

typedef struct {
    uint8_t   **blocks;           /* ring of block pointers, NULL: none */
    size_t      nblocks;          /* ring size (power of two, or 0) */
    uint64_t    base;             /* offset of blocks[head]'s first byte */
    size_t      head;
    size_t      allocated;        /* blocks currently allocated */
    size_t      max_bytes;        /* span cap above start */
    uint64_t    start;            /* lowest offset held (last release) */
    uint64_t    end;              /* one past the highest byte written */
} hg_bytebuf_t;

/* an empty buffer at offset 0; allocates nothing */
void hg_bytebuf_init(hg_bytebuf_t *b, size_t max_bytes);
/*
 * Frees all memory. The buffer stays valid and empty: start is kept, so
 * it may be written again at offsets >= start.
 */
void hg_bytebuf_free(hg_bytebuf_t *b);

/*
 * Stores len bytes at offset. Returns 0, or -1 when offset < start,
 * offset + len > start + max_bytes, or a block allocation failed (bytes
 * before the failing block may have been stored).
 */
int hg_bytebuf_write(hg_bytebuf_t *b, uint64_t offset, const uint8_t *data,
    size_t len);
/*
 * Copies len bytes at offset out; the caller knows they were written.
 * Bytes in blocks never written read as zeros.
 */
void hg_bytebuf_read(const hg_bytebuf_t *b, uint64_t offset, uint8_t *dst,
    size_t len);
/*
 * Forgets everything below offset (start = offset): frees the blocks
 * wholly below it, and every block once nothing is held above it.
 */
void hg_bytebuf_release(hg_bytebuf_t *b, uint64_t offset);

/* bytes of memory held (blocks * block size) */
size_t hg_bytebuf_memory(const hg_bytebuf_t *b);

#endif /* HG_BYTEBUF_H */
