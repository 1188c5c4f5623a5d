/*
 * hg_bytebuf: writes and reads across blocks, sparse allocation, release,
 * the span cap, and a sliding-window run against a flat model.
 */

#include <stdlib.h>

#include "hg_bytebuf.h"
#include "tap.h"


#define BLOCK  HG_BYTEBUF_BLOCK


static uint8_t
pattern(uint64_t offset)
{
    return (uint8_t) (offset * 2654435761u >> 13);
}


static void
fill(uint8_t *p, uint64_t offset, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        p[i] = pattern(offset + i);
    }
}


static int
matches(const uint8_t *p, uint64_t offset, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] != pattern(offset + i)) {
            return 0;
        }
    }

    return 1;
}


static void
test_spanning(void)
{
    hg_bytebuf_t  b;
    uint8_t      *in, *out;
    size_t        len;

    len = 3 * BLOCK + 100;
    in = malloc(len);
    out = malloc(len);
    fill(in, 10000, len);

    hg_bytebuf_init(&b, 8 * BLOCK);
    tap_is_int(hg_bytebuf_memory(&b), 0, "a new buffer holds no memory");

    tap_is_int(hg_bytebuf_write(&b, 10000, in, len), 0,
               "a write spanning four blocks succeeds");
    tap_is_int(hg_bytebuf_memory(&b), 4 * BLOCK,
               "exactly the four touched blocks are allocated");

    hg_bytebuf_read(&b, 10000, out, len);
    tap_ok(matches(out, 10000, len), "the spanning read returns the bytes");

    hg_bytebuf_read(&b, BLOCK - 7, out, 14);
    tap_ok(matches(out, BLOCK - 7, 14), "a read across one boundary");

    hg_bytebuf_free(&b);
    tap_is_int(hg_bytebuf_memory(&b), 0, "free returns every block");

    free(in);
    free(out);
}


static void
test_sparse(void)
{
    hg_bytebuf_t  b;
    uint8_t       in[100], out[100];

    hg_bytebuf_init(&b, 64 * BLOCK);

    fill(in, 40 * BLOCK + 5, sizeof(in));
    tap_is_int(hg_bytebuf_write(&b, 40 * BLOCK + 5, in, sizeof(in)), 0,
               "a write far above start succeeds");
    tap_is_int(hg_bytebuf_memory(&b), BLOCK,
               "only the block written into is allocated");

    fill(in, 3, sizeof(in));
    hg_bytebuf_write(&b, 3, in, sizeof(in));
    tap_is_int(hg_bytebuf_memory(&b), 2 * BLOCK, "a second block, no more");

    hg_bytebuf_read(&b, 40 * BLOCK + 5, out, sizeof(out));
    tap_ok(matches(out, 40 * BLOCK + 5, sizeof(out)),
           "the far bytes survive the ring growing");

    hg_bytebuf_free(&b);
}


static void
test_release(void)
{
    hg_bytebuf_t  b;
    uint8_t      *in, out[64];
    size_t        len;

    len = 4 * BLOCK;
    in = malloc(len);
    fill(in, 0, len);

    hg_bytebuf_init(&b, 4 * BLOCK);
    hg_bytebuf_write(&b, 0, in, len);
    tap_is_int(hg_bytebuf_memory(&b), 4 * BLOCK, "four blocks held");

    hg_bytebuf_release(&b, BLOCK - 1);
    tap_is_int(hg_bytebuf_memory(&b), 4 * BLOCK,
               "a release inside the first block keeps it");

    hg_bytebuf_release(&b, 2 * BLOCK + 10);
    tap_is_int(hg_bytebuf_memory(&b), 2 * BLOCK,
               "a release frees the blocks wholly below it");

    hg_bytebuf_read(&b, 2 * BLOCK + 10, out, sizeof(out));
    tap_ok(matches(out, 2 * BLOCK + 10, sizeof(out)),
           "bytes above the release point are intact");

    hg_bytebuf_release(&b, BLOCK);
    tap_is_int(b.start, 2 * BLOCK + 10, "a release never moves backwards");

    hg_bytebuf_release(&b, 4 * BLOCK);
    tap_is_int(hg_bytebuf_memory(&b), 0, "releasing everything frees all");
    tap_ok(b.blocks == NULL && b.nblocks == 0,
           "an empty buffer drops its ring too");

    hg_bytebuf_release(&b, 1000 * BLOCK + 1);
    fill(in, 1000 * BLOCK + 1, 100);
    tap_is_int(hg_bytebuf_write(&b, 1000 * BLOCK + 1, in, 100), 0,
               "writes resume after a release far ahead");
    hg_bytebuf_read(&b, 1000 * BLOCK + 1, out, 64);
    tap_ok(matches(out, 1000 * BLOCK + 1, 64), "and read back");

    hg_bytebuf_free(&b);
    free(in);
}


static void
test_cap(void)
{
    hg_bytebuf_t  b;
    uint8_t       in[256];

    fill(in, 0, sizeof(in));
    hg_bytebuf_init(&b, 2 * BLOCK);

    tap_is_int(hg_bytebuf_write(&b, 2 * BLOCK - 256, in, 256), 0,
               "a write ending exactly at the cap succeeds");
    tap_is_int(hg_bytebuf_write(&b, 2 * BLOCK - 255, in, 256), -1,
               "one byte past the cap fails");
    tap_is_int(hg_bytebuf_write(&b, 5 * BLOCK, in, 1), -1,
               "a write far past the cap fails");

    hg_bytebuf_release(&b, 1000);
    tap_is_int(hg_bytebuf_write(&b, 2 * BLOCK + 1000 - 256, in, 256), 0,
               "the cap slides with the release point");
    tap_is_int(hg_bytebuf_write(&b, 999, in, 1), -1,
               "a write below the release point fails");
    tap_ok(b.nblocks <= 4, "the ring stays within cap / block + 1, rounded");

    hg_bytebuf_free(&b);
}


/* a window sliding over 4 MiB: random writes and releases, flat model */
static void
test_sliding(void)
{
    hg_bytebuf_t  b;
    uint8_t       chunk[3 * BLOCK], out[3 * BLOCK];
    uint64_t      lo, off;
    size_t        len, window, max_mem;
    int           i, ok;

    window = 5 * BLOCK + 123;
    hg_bytebuf_init(&b, window);
    srand(11);

    lo = 0;
    ok = 1;
    max_mem = 0;

    for (i = 0; lo < 4 * 1024 * 1024; i++) {
        off = lo + rand() % window;
        len = rand() % (sizeof(chunk) + 1);
        if (len > lo + window - off) {
            len = lo + window - off;
        }

        fill(chunk, off, len);
        if (hg_bytebuf_write(&b, off, chunk, len) != 0) {
            ok = 0;
        }

        hg_bytebuf_read(&b, off, out, len);
        if (!matches(out, off, len)) {
            ok = 0;
        }

        if (hg_bytebuf_memory(&b) > max_mem) {
            max_mem = hg_bytebuf_memory(&b);
        }

        if (i % 3 == 0) {
            lo += rand() % (2 * BLOCK);
            hg_bytebuf_release(&b, lo);
        }
    }

    tap_ok(ok, "%d random writes in a sliding window read back intact", i);
    /* an unaligned window touches at most one block more than it spans */
    tap_ok(max_mem <= ((window + BLOCK - 1) / BLOCK + 1) * BLOCK,
           "memory never exceeded the blocks the window touches (%zu)",
           max_mem);

    hg_bytebuf_free(&b);
}


int
main(void)
{
    test_spanning();
    test_sparse();
    test_release();
    test_cap();
    test_sliding();

    return tap_done();
}
