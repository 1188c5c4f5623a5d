/*
 * Sparse block buffers; see hg_bytebuf.h.
 *
 * base is always a multiple of the block size and start - base < BLOCK,
 * so block k of the ring (counted from head) holds offsets
 * [base + k * BLOCK, base + (k + 1) * BLOCK).
 */

#include <stdlib.h>
#include <string.h>

#include "hg_bytebuf.h"


#define HG_BYTEBUF_INITIAL_RING  4


static uint8_t **hg_bytebuf_slot(const hg_bytebuf_t *b, uint64_t offset);
static int hg_bytebuf_grow(hg_bytebuf_t *b, size_t need);
static void hg_bytebuf_drop_ring(hg_bytebuf_t *b);


void
hg_bytebuf_init(hg_bytebuf_t *b, size_t max_bytes)
{
    memset(b, 0, sizeof(*b));
    b->max_bytes = max_bytes;
}


void
hg_bytebuf_free(hg_bytebuf_t *b)
{
    size_t  i;

    for (i = 0; i < b->nblocks; i++) {
        free(b->blocks[i]);
    }

    hg_bytebuf_drop_ring(b);
    b->allocated = 0;
}


/* the ring slot for offset, or NULL when the ring does not reach it */
static uint8_t **
hg_bytebuf_slot(const hg_bytebuf_t *b, uint64_t offset)
{
    uint64_t  k;

    k = (offset - b->base) / HG_BYTEBUF_BLOCK;

    if (k >= b->nblocks) {
        return NULL;
    }

    return &b->blocks[(b->head + k) & (b->nblocks - 1)];
}


/* makes the ring at least need slots long, keeping block order */
static int
hg_bytebuf_grow(hg_bytebuf_t *b, size_t need)
{
    size_t     n, k;
    uint8_t  **ring;

    n = b->nblocks ? b->nblocks : HG_BYTEBUF_INITIAL_RING;
    while (n < need) {
        n *= 2;
    }

    ring = calloc(n, sizeof(uint8_t *));
    if (ring == NULL) {
        return -1;
    }

    for (k = 0; k < b->nblocks; k++) {
        ring[k] = b->blocks[(b->head + k) & (b->nblocks - 1)];
    }

    free(b->blocks);
    b->blocks = ring;
    b->nblocks = n;
    b->head = 0;

    return 0;
}


static void
hg_bytebuf_drop_ring(hg_bytebuf_t *b)
{
    free(b->blocks);
    b->blocks = NULL;
    b->nblocks = 0;
    b->head = 0;
    b->base = b->start - b->start % HG_BYTEBUF_BLOCK;
}


int
hg_bytebuf_write(hg_bytebuf_t *b, uint64_t offset, const uint8_t *data,
    size_t len)
{
    size_t     in, n;
    uint64_t   k;
    uint8_t  **slot;

    if (offset < b->start || offset - b->start > b->max_bytes
        || len > b->max_bytes - (offset - b->start))
    {
        return -1;
    }

    if (offset + len > b->end) {
        b->end = offset + len;
    }

    while (len) {
        slot = hg_bytebuf_slot(b, offset);

        if (slot == NULL) {
            k = (offset - b->base) / HG_BYTEBUF_BLOCK;
            if (hg_bytebuf_grow(b, k + 1) != 0) {
                return -1;
            }
            slot = hg_bytebuf_slot(b, offset);
        }

        if (*slot == NULL) {
            *slot = malloc(HG_BYTEBUF_BLOCK);
            if (*slot == NULL) {
                return -1;
            }
            b->allocated++;
        }

        in = (offset - b->base) % HG_BYTEBUF_BLOCK;
        n = HG_BYTEBUF_BLOCK - in;
        if (n > len) {
            n = len;
        }

        memcpy(*slot + in, data, n);

        offset += n;
        data += n;
        len -= n;
    }

    return 0;
}


void
hg_bytebuf_read(const hg_bytebuf_t *b, uint64_t offset, uint8_t *dst,
    size_t len)
{
    size_t     in, n;
    uint8_t  **slot;

    while (len) {
        in = (offset - b->base) % HG_BYTEBUF_BLOCK;
        n = HG_BYTEBUF_BLOCK - in;
        if (n > len) {
            n = len;
        }

        /* a caller bug must not become a wild read in a server process */
        slot = offset >= b->base ? hg_bytebuf_slot(b, offset) : NULL;

        if (slot != NULL && *slot != NULL) {
            memcpy(dst, *slot + in, n);
        } else {
            memset(dst, 0, n);
        }

        offset += n;
        dst += n;
        len -= n;
    }
}


void
hg_bytebuf_release(hg_bytebuf_t *b, uint64_t offset)
{
    uint64_t  k;

    if (offset <= b->start) {
        return;
    }

    b->start = offset;

    k = (offset - b->base) / HG_BYTEBUF_BLOCK;

    /* the block holding the last bytes goes too once they are released */
    if (k >= b->nblocks || offset >= b->end) {
        hg_bytebuf_free(b);
        return;
    }

    while (k--) {
        if (b->blocks[b->head] != NULL) {
            free(b->blocks[b->head]);
            b->blocks[b->head] = NULL;
            b->allocated--;
        }

        b->head = (b->head + 1) & (b->nblocks - 1);
        b->base += HG_BYTEBUF_BLOCK;
    }

    /* an idle stream should own nothing, not even the ring */
    if (b->allocated == 0) {
        hg_bytebuf_drop_ring(b);
    }
}


size_t
hg_bytebuf_memory(const hg_bytebuf_t *b)
{
    return b->allocated * HG_BYTEBUF_BLOCK;
}
