/*
 * hg_stream: the send side (buffering, flow control, loss, acks, FIN,
 * RESET), the receive side (reassembly, flow control, final size, window
 * updates, RESET, STOP_SENDING), and a sender and a receiver joined by a
 * lossy, duplicating, reordering link.
 */

#include <stdlib.h>

#include "hg_stream.h"
#include "tap.h"


#define KB     1024
#define BLOCK  HG_BYTEBUF_BLOCK
#define NOCAP  UINT64_MAX


typedef struct {
    uint64_t  offset;
    size_t    len;
    int       fin;
    int       is_new;
} frame_t;


static uint8_t
pattern(uint64_t offset)
{
    return (uint8_t) ((offset * 2654435761u) >> 11);
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


/* the application writes len more bytes of the pattern */
static size_t
app_write(hg_stream_t *s, size_t len)
{
    size_t    i, n, total;
    uint8_t   chunk[4096];

    total = 0;

    while (len) {
        n = len < sizeof(chunk) ? len : sizeof(chunk);
        for (i = 0; i < n; i++) {
            chunk[i] = pattern(s->written + i);
        }

        n = hg_stream_send_write(s, chunk, n);
        if (n == 0) {
            break;
        }

        total += n;
        len -= n;
    }

    return total;
}


static int
peek(hg_stream_t *s, size_t max_len, uint64_t credit, frame_t *f)
{
    return hg_stream_send_peek(s, max_len, credit, &f->offset, &f->len,
                               &f->fin, &f->is_new);
}


/* peek and commit one frame; 0 when nothing was due */
static int
send_frame(hg_stream_t *s, size_t max_len, uint64_t credit, frame_t *f)
{
    if (!peek(s, max_len, credit, f)) {
        return 0;
    }

    hg_stream_send_commit(s, f->offset, f->len, f->fin);

    return 1;
}


static int
is_frame(const frame_t *f, uint64_t offset, size_t len, int fin)
{
    return f->offset == offset && f->len == len && f->fin == fin;
}


/* a frame of pattern bytes arrives at a receiver */
static int64_t
deliver(hg_stream_t *s, uint64_t offset, size_t len, int fin)
{
    int64_t   rc;
    size_t    i;
    uint8_t  *data;

    data = malloc(len + 1);
    for (i = 0; i < len; i++) {
        data[i] = pattern(offset + i);
    }

    rc = hg_stream_recv(s, offset, data, len, fin);
    free(data);

    return rc;
}


/* --- send side --------------------------------------------------------- */


static void
test_send_buffer(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);

    tap_is_int(hg_stream_send_space(s), 64 * KB, "space is the send buffer");
    tap_is_int(app_write(s, 100 * KB), 64 * KB,
               "writes stop at the send buffer");
    tap_is_int(hg_stream_send_space(s), 0, "no space left");

    send_frame(s, 10 * KB, NOCAP, &f);
    tap_is_int(hg_stream_send_space(s), 0, "sending frees nothing");

    hg_stream_send_on_acked(s, 0, 10 * KB, 0);
    tap_is_int(hg_stream_send_space(s), 10 * KB, "an ack frees its bytes");
    tap_is_int(app_write(s, 100 * KB), 10 * KB, "which may be written again");

    hg_stream_send_fin(s);
    hg_stream_send_on_acked(s, 10 * KB, 10 * KB, 0);
    tap_is_int(hg_stream_send_space(s), 0, "no space after FIN");

    hg_stream_free(s);
}


static void
test_peek_commit(void)
{
    hg_stream_t  *s;
    frame_t       f;
    uint8_t       out[1200];
    int           ok;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);

    tap_ok(!peek(s, 1200, NOCAP, &f), "nothing to send before a write");
    tap_ok(!hg_stream_send_pending(s), "and nothing pending");

    app_write(s, 3000);
    tap_ok(hg_stream_send_pending(s), "a write makes the stream pending");

    ok = peek(s, 1200, NOCAP, &f) && is_frame(&f, 0, 1200, 0) && f.is_new;
    tap_ok(ok, "the first frame is [0, 1200), new");
    tap_ok(peek(s, 1200, NOCAP, &f) && is_frame(&f, 0, 1200, 0),
           "peeking again without commit gives the same frame");

    hg_stream_send_copy(s, f.offset, out, f.len);
    tap_ok(matches(out, 0, f.len), "copy returns the written bytes");

    hg_stream_send_commit(s, f.offset, f.len, f.fin);
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 1200, 1200, 0),
           "then [1200, 2400)");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 2400, 600, 0),
           "then the remaining 600");
    tap_ok(!peek(s, 1200, NOCAP, &f), "then nothing");
    tap_ok(!hg_stream_send_pending(s), "and nothing pending");
    tap_is_int(s->sent, 3000, "sent covers all written bytes");

    hg_stream_free(s);
}


static void
test_flow_control(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, 1000, 64 * KB, 64 * KB);
    app_write(s, 3000);

    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 0, 1000, 0),
           "new bytes stop at the peer's stream limit");
    tap_ok(!peek(s, 1200, NOCAP, &f), "nothing more until it rises");
    tap_ok(!hg_stream_send_pending(s), "a blocked stream is not pending");

    hg_stream_send_on_lost(s, 0, 1000, 0);
    tap_ok(peek(s, 1200, NOCAP, &f) && is_frame(&f, 0, 1000, 0)
           && !f.is_new, "a retransmission is not held back by the limit");
    tap_ok(peek(s, 1200, 0, &f) && is_frame(&f, 0, 1000, 0),
           "nor by connection credit");
    hg_stream_send_commit(s, f.offset, f.len, f.fin);

    tap_is_int(hg_stream_send_max(s, 900), 0, "a lower limit is ignored");
    tap_is_int(hg_stream_send_max(s, 2500), 1, "a higher one is taken");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 1000, 1200, 0)
           && f.is_new, "and new bytes flow again");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 2200, 300, 0),
           "up to the new limit");

    hg_stream_free(s);
}


static void
test_conn_credit(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 3000);

    tap_ok(send_frame(s, 1200, 300, &f) && is_frame(&f, 0, 300, 0)
           && f.is_new, "new bytes stop at the connection credit");
    tap_ok(!peek(s, 1200, 0, &f), "no credit, no new bytes");
    tap_ok(hg_stream_send_pending(s),
           "pending ignores connection credit (the caller owns it)");

    hg_stream_free(s);
}


static void
test_lost_first(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 5000);

    send_frame(s, 1000, NOCAP, &f);
    send_frame(s, 1000, NOCAP, &f);
    send_frame(s, 1000, NOCAP, &f);

    hg_stream_send_on_lost(s, 1000, 1000, 0);

    tap_ok(send_frame(s, 600, NOCAP, &f) && is_frame(&f, 1000, 600, 0)
           && !f.is_new, "a lost range goes before new bytes");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 1600, 400, 0),
           "its rest next, never merged with new bytes");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 3000, 1200, 0)
           && f.is_new, "then new bytes from where they stopped");

    hg_stream_free(s);
}


static void
test_acks_fold(void)
{
    hg_stream_t  *s;
    frame_t       f;
    int           i;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 4 * BLOCK);

    for (i = 0; i < 4; i++) {
        send_frame(s, BLOCK, NOCAP, &f);
    }

    tap_is_int(hg_stream_memory(s), 4 * BLOCK, "four blocks unacked");

    hg_stream_send_on_acked(s, 2 * BLOCK, BLOCK, 0);
    hg_stream_send_on_acked(s, 3 * BLOCK, BLOCK, 0);
    tap_is_int(s->acked, 0, "acks above a gap do not move `acked`");
    tap_is_int(s->acked_above.n, 1, "they are kept as one merged range");
    tap_is_int(hg_stream_memory(s), 4 * BLOCK, "and free nothing yet");

    hg_stream_send_on_acked(s, 0, BLOCK, 0);
    tap_is_int(s->acked, BLOCK, "an ack at the bottom moves `acked`");
    tap_is_int(hg_stream_memory(s), 3 * BLOCK, "and frees its block");

    hg_stream_send_on_acked(s, BLOCK, BLOCK, 0);
    tap_is_int(s->acked, 4 * BLOCK, "filling the gap folds the ranges");
    tap_ok(hg_rangeset_empty(&s->acked_above), "nothing left above");
    tap_is_int(hg_stream_memory(s), 0, "every block is freed");

    hg_stream_send_on_acked(s, 0, BLOCK, 0);
    tap_is_int(s->acked, 4 * BLOCK, "a duplicate ack changes nothing");

    hg_stream_free(s);
}


static void
test_acked_not_resent(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 3000);

    send_frame(s, 3000, NOCAP, &f);
    send_frame(s, 1000, NOCAP, &f);
    hg_stream_send_on_lost(s, 0, 3000, 0);
    send_frame(s, 1000, NOCAP, &f);
    send_frame(s, 1000, NOCAP, &f);

    /* the retransmitted [1000, 2000) arrives; then all copies are lost */
    hg_stream_send_on_acked(s, 1000, 1000, 0);
    hg_stream_send_on_lost(s, 0, 1000, 0);
    hg_stream_send_on_lost(s, 0, 3000, 0);

    tap_ok(send_frame(s, 3000, NOCAP, &f) && is_frame(&f, 0, 1000, 0),
           "the lost bytes below the ack are resent");
    tap_ok(send_frame(s, 3000, NOCAP, &f) && is_frame(&f, 2000, 1000, 0),
           "the acked middle is skipped");
    tap_ok(!peek(s, 3000, NOCAP, &f), "and never resent");

    hg_stream_send_on_lost(s, 2000, 1000, 0);
    hg_stream_send_on_acked(s, 2000, 1000, 0);
    tap_ok(!peek(s, 3000, NOCAP, &f),
           "an ack for a range queued as lost unqueues it");

    hg_stream_free(s);
}


static void
test_fin(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 2000);
    hg_stream_send_fin(s);

    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 0, 1200, 0),
           "no FIN on a frame short of the end");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 1200, 800, 1),
           "the FIN rides on the frame that ends the stream");
    tap_ok(s->fin_sent && !peek(s, 1200, NOCAP, &f), "then nothing");
    hg_stream_free(s);

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 100);
    send_frame(s, 1200, NOCAP, &f);
    hg_stream_send_fin(s);

    tap_ok(hg_stream_send_pending(s), "a FIN after all bytes is pending");
    tap_ok(send_frame(s, 1200, 0, &f) && is_frame(&f, 100, 0, 1)
           && !f.is_new, "it goes alone, len 0, needing no credit");
    hg_stream_free(s);

    s = hg_stream_new(0, 0, 64 * KB, 64 * KB);
    app_write(s, 100);
    hg_stream_send_fin(s);
    tap_ok(!peek(s, 1200, NOCAP, &f),
           "a FIN behind bytes held back by flow control waits");
    hg_stream_free(s);

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    hg_stream_send_fin(s);
    tap_ok(send_frame(s, 0, NOCAP, &f) && is_frame(&f, 0, 0, 1),
           "an empty stream sends a FIN alone at offset 0");
    hg_stream_free(s);
}


static void
test_fin_lost(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 100);
    send_frame(s, 1200, NOCAP, &f);
    hg_stream_send_fin(s);
    send_frame(s, 1200, NOCAP, &f);
    hg_stream_send_on_acked(s, 0, 100, 0);

    hg_stream_send_on_lost(s, 100, 0, 1);
    tap_ok(s->fin_lost && hg_stream_send_pending(s),
           "a lost FIN is pending again");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && is_frame(&f, 100, 0, 1),
           "and resent alone");
    tap_ok(!s->fin_lost && !peek(s, 1200, NOCAP, &f), "once");
    hg_stream_free(s);

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 500);
    hg_stream_send_fin(s);
    send_frame(s, 1200, NOCAP, &f);
    hg_stream_send_on_lost(s, 0, 500, 1);
    tap_ok(send_frame(s, 300, NOCAP, &f) && is_frame(&f, 0, 300, 0),
           "a lost data+FIN frame is resent in pieces");
    tap_ok(send_frame(s, 300, NOCAP, &f) && is_frame(&f, 300, 200, 1),
           "the FIN on the piece that ends the stream");
    tap_ok(!peek(s, 1200, NOCAP, &f), "and not again alone");
    hg_stream_free(s);
}


static void
test_send_done(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 2000);
    hg_stream_send_fin(s);
    send_frame(s, 1000, NOCAP, &f);
    send_frame(s, 1000, NOCAP, &f);

    hg_stream_send_on_acked(s, 1000, 1000, 1);
    tap_ok(!hg_stream_send_done(s), "not done with bytes unacknowledged");
    hg_stream_send_on_acked(s, 0, 1000, 0);
    tap_ok(hg_stream_send_done(s), "done when bytes and FIN are acked");
    tap_ok(!hg_stream_send_pending(s), "nothing pending");
    tap_is_int(hg_stream_memory(s), 0, "no memory held");

    tap_is_int(hg_stream_send_reset(s, 7), HG_ERR_STATE,
               "a finished stream cannot be reset");

    hg_stream_free(s);
}


static void
test_send_reset(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 40 * KB);
    send_frame(s, 20 * KB, NOCAP, &f);
    hg_stream_send_on_lost(s, 0, 20 * KB, 0);

    tap_is_int(hg_stream_send_reset(s, 9), HG_OK, "reset accepted");
    tap_is_int(hg_stream_send_reset(s, 9), HG_ERR_STATE, "only once");
    tap_ok(s->reset_queued && s->reset_code == 9, "the code is kept");
    tap_ok(!peek(s, 1200, NOCAP, &f) && !hg_stream_send_pending(s),
           "no STREAM frame after a reset, not even lost bytes");
    tap_is_int(hg_stream_send_space(s), 0, "no writes after a reset");
    tap_is_int(hg_stream_send_fin(s), HG_ERR_STATE, "no FIN either");
    tap_is_int(hg_stream_memory(s), 0, "the send buffer is dropped");
    tap_is_int(s->sent, 20 * KB, "the final size is `sent`");

    tap_ok(hg_stream_reset_due(s), "RESET_STREAM is due");
    hg_stream_reset_commit(s);
    tap_ok(!hg_stream_reset_due(s), "not while it is in flight");
    hg_stream_send_on_lost(s, 0, 20 * KB, 0);
    tap_ok(!peek(s, 1200, NOCAP, &f), "data lost after a reset stays lost");

    hg_stream_reset_on_lost(s);
    tap_ok(hg_stream_reset_due(s), "a lost RESET_STREAM is due again");
    hg_stream_reset_commit(s);
    tap_ok(!hg_stream_send_done(s), "not done before it is acked");
    hg_stream_reset_on_acked(s);
    tap_ok(hg_stream_send_done(s), "done when the reset is acked");
    hg_stream_reset_on_lost(s);
    tap_ok(!hg_stream_reset_due(s), "a late loss after the ack is moot");

    hg_stream_free(s);
}


static void
test_stop_sending(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    app_write(s, 1000);
    send_frame(s, 1200, NOCAP, &f);

    tap_is_int(hg_stream_recv_stop_sending(s, 42), 1,
               "the first STOP_SENDING is reported");
    tap_ok(s->stop_received && s->reset_queued && s->reset_code == 42,
           "it resets our side with the peer's code");
    tap_is_int(hg_stream_recv_stop_sending(s, 43), 0,
               "a duplicate is not reported");
    tap_is_int(s->reset_code, 42, "nor changes the code");
    hg_stream_free(s);

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    hg_stream_send_fin(s);
    send_frame(s, 1200, NOCAP, &f);
    hg_stream_send_on_acked(s, 0, 0, 1);
    hg_stream_recv_stop_sending(s, 42);
    tap_ok(!s->reset_queued && hg_stream_send_done(s),
           "a finished side is not reset by STOP_SENDING");
    hg_stream_free(s);
}


static void
test_meta(void)
{
    hg_stream_t  *s;
    frame_t       f;

    s = hg_stream_new(0, NOCAP, 64 * KB, 64 * KB);
    s->send_meta = 1;
    app_write(s, 3000);

    send_frame(s, 1000, NOCAP, &f);
    tap_ok(hg_stream_frame_has_meta(s, f.offset), "offset 0 carries meta");
    send_frame(s, 1000, NOCAP, &f);
    tap_ok(!hg_stream_frame_has_meta(s, f.offset), "other offsets do not");

    hg_stream_send_on_lost(s, 0, 1000, 0);
    tap_ok(s->meta_lost, "losing the offset-0 frame loses the meta");
    tap_ok(send_frame(s, 1200, NOCAP, &f) && f.offset == 0
           && hg_stream_frame_has_meta(s, f.offset),
           "the next frame resends offset 0, with meta");
    tap_ok(!s->meta_lost, "which clears meta_lost");

    hg_stream_send_on_acked(s, 0, 1000, 0);
    hg_stream_send_on_lost(s, 0, 1000, 0);
    tap_ok(!s->meta_lost, "a stale loss after the ack loses nothing");
    hg_stream_free(s);

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    s->has_meta = 1;
    tap_ok(!hg_stream_frame_has_meta(s, 0),
           "received meta is never sent back");
    hg_stream_free(s);
}


/* --- receive side ------------------------------------------------------ */


static void
test_recv_in_order(void)
{
    hg_stream_t  *s;
    uint8_t       out[3000];
    size_t        n;
    int           fin;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);

    tap_ok(!hg_stream_read_ready(s), "nothing to read at first");
    tap_is_int(deliver(s, 0, 1000, 0), 1000, "a frame grows the highest");
    tap_is_int(hg_stream_readable(s), 1000, "its bytes are readable");
    tap_is_int(deliver(s, 1000, 500, 1), 500, "a FIN frame");

    n = hg_stream_recv_read(s, out, 1200, &fin);
    tap_ok(n == 1200 && !fin && matches(out, 0, n), "a partial read");
    n = hg_stream_recv_read(s, out, sizeof(out), &fin);
    tap_ok(n == 300 && fin && matches(out, 1200, n),
           "the rest, with the FIN");
    tap_ok(!hg_stream_read_ready(s) && hg_stream_recv_done(s),
           "the receive side is done");
    tap_is_int(hg_stream_recv_take_freed(s), 1500,
               "all read bytes return as connection credit");
    tap_is_int(hg_stream_recv_take_freed(s), 0, "once");
    tap_is_int(hg_stream_memory(s), 0, "nothing held");

    hg_stream_free(s);

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 0, 1);
    tap_ok(hg_stream_read_ready(s), "an empty stream's FIN is readable");
    n = hg_stream_recv_read(s, out, sizeof(out), &fin);
    tap_ok(n == 0 && fin, "read returns 0 with the FIN");
    hg_stream_free(s);
}


/* a random frame within the window, often near the reader, maybe old */
static int
random_frame(const hg_stream_t *s, uint64_t total, uint64_t *off,
    uint64_t *end)
{
    uint64_t  lo;

    lo = s->read > 2000 ? s->read - 2000 : 0;

    if (rand() % 2) {
        *off = lo + rand() % 6000;
    } else {
        *off = lo + rand() % (s->recv_max - lo);
    }

    *end = *off + 1 + rand() % 3000;
    if (*end > s->recv_max) {
        *end = s->recv_max;
    }
    if (*end > total) {
        *end = total;
    }

    return *off < *end;
}


/* random frames within the window, reads at random: the exact stream */
static void
test_recv_random(void)
{
    hg_stream_t  *s;
    uint8_t      *out;
    uint64_t      total, off, end, growth;
    size_t        max_mem;
    int64_t       rc;
    int           fin, ok, frames;

    total = 1024 * KB;
    out = malloc(total);
    s = hg_stream_new(1, NOCAP, 64 * KB, 256 * KB);
    srand(3);

    growth = 0;
    max_mem = 0;
    ok = 1;
    frames = 0;
    fin = 0;

    while (!fin && ok) {
        if (random_frame(s, total, &off, &end)) {
            rc = deliver(s, off, end - off, end == total);
            ok = rc >= 0;
            growth += ok ? rc : 0;
            frames++;
        }

        if (hg_stream_memory(s) > max_mem) {
            max_mem = hg_stream_memory(s);
        }

        if (rand() % 4 == 0) {
            hg_stream_recv_read(s, out + s->read, rand() % 20000, &fin);
            if (s->max_data_due) {
                hg_stream_recv_update_max(s);
            }
        }
    }

    tap_ok(ok, "%d overlapping, duplicated, reordered frames accepted",
           frames);
    tap_ok(s->read == total && matches(out, 0, total),
           "the reader got exactly the 1 MiB stream");
    tap_is_int(growth, total, "growth sums to the stream length");
    tap_ok(max_mem <= 256 * KB + BLOCK,
           "memory stayed within the window plus a block (%zu)", max_mem);
    tap_is_int(hg_stream_memory(s), 0, "and is all freed at the end");

    hg_stream_free(s);
    free(out);
}


static void
test_recv_flow_control(void)
{
    hg_stream_t  *s;
    uint8_t       b[16];

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);

    tap_is_int(deliver(s, 60 * KB, 4 * KB, 0), 64 * KB,
               "a frame ending at the limit is accepted");
    tap_is_int(deliver(s, 64 * KB - 1, 2, 0), HG_ERR_LIMIT,
               "one byte past the limit is refused");
    tap_is_int(deliver(s, 64 * KB, 0, 1), 0, "a FIN at the limit is fine");
    tap_is_int(hg_stream_recv(s, UINT64_MAX - 4, b, 10, 0), HG_ERR_LIMIT,
               "an offset that would wrap is refused");
    tap_is_int(s->recv_highest, 64 * KB, "refusals change nothing");
    tap_is_int(hg_rangeset_size(&s->received), 4 * KB,
               "no refused byte is stored");

    hg_stream_free(s);
}


static void
test_final_size(void)
{
    hg_stream_t  *s;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 100, 1);
    tap_is_int(s->final_size, 100, "a FIN fixes the final size");
    tap_is_int(deliver(s, 50, 100, 0), HG_ERR, "data past it is an error");
    tap_is_int(deliver(s, 0, 50, 1), HG_ERR, "a FIN moved down is an error");
    tap_is_int(deliver(s, 100, 10, 1), HG_ERR, "a FIN moved up too");
    tap_is_int(deliver(s, 0, 100, 1), 0, "the same FIN again is fine");
    tap_is_int(hg_stream_recv_reset(s, 1, 99), HG_ERR,
               "a reset with another final size is an error");
    hg_stream_free(s);

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 200, 0);
    tap_is_int(deliver(s, 0, 100, 1), HG_ERR,
               "a FIN below bytes already received is an error");
    tap_is_int(hg_stream_recv_reset(s, 1, 150), HG_ERR,
               "so is a reset below them");
    tap_is_int(hg_stream_recv_reset(s, 1, 65 * KB), HG_ERR_LIMIT,
               "a reset final size past the limit is a flow-control error");
    tap_ok(s->final_size == UINT64_MAX && !s->reset_received,
           "errors leave the stream untouched");
    hg_stream_free(s);
}


static void
test_window_update(void)
{
    hg_stream_t  *s;
    uint8_t       out[64 * KB];
    int           fin;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 64 * KB, 0);

    hg_stream_recv_read(s, out, 31 * KB, &fin);
    tap_ok(!s->max_data_due, "no update before half the window is read");
    hg_stream_recv_read(s, out, 2 * KB, &fin);
    tap_ok(s->max_data_due, "an update is due past half");

    tap_is_int(hg_stream_recv_update_max(s), 97 * KB,
               "the new limit is read + window");
    tap_ok(s->recv_max == 97 * KB && !s->max_data_due,
           "it is stored and no longer due");
    tap_is_int(deliver(s, 64 * KB, 33 * KB, 0), 33 * KB,
               "the peer may send up to it");

    hg_stream_recv_max_lost(s, 80 * KB);
    tap_ok(!s->max_data_due, "losing an old value needs no resend");
    hg_stream_recv_max_lost(s, 97 * KB);
    tap_ok(s->max_data_due, "losing the current one does");
    hg_stream_recv_update_max(s);

    deliver(s, 97 * KB, 0, 1);
    hg_stream_recv_read(s, out, sizeof(out), &fin);
    tap_ok(fin && !s->max_data_due, "no update once the final size is known");

    hg_stream_free(s);
}


/* a reader far slower than the sender: memory is bounded by the window */
static void
test_recv_memory(void)
{
    hg_stream_t  *s;
    uint8_t       out[2 * KB];
    uint64_t      off, held;
    size_t        max_mem;
    int           fin, i, ok;

    s = hg_stream_new(1, NOCAP, 64 * KB, 256 * KB);
    max_mem = 0;
    ok = 1;

    for (i = 0; i < 2000; i++) {
        /* the sender fills the whole window, highest bytes first */
        held = s->recv_highest;

        for (off = s->recv_max; off > held; off -= 1 * KB) {
            if (deliver(s, off - 1 * KB, 1 * KB, 0) < 0) {
                ok = 0;
            }
        }

        if (hg_stream_memory(s) > max_mem) {
            max_mem = hg_stream_memory(s);
        }

        hg_stream_recv_read(s, out, sizeof(out), &fin);
        if (!matches(out, s->read - sizeof(out), sizeof(out))) {
            ok = 0;
        }
        if (s->max_data_due) {
            hg_stream_recv_update_max(s);
        }
    }

    tap_ok(ok, "the slow reader saw the exact stream");
    tap_ok(max_mem <= 256 * KB + BLOCK,
           "memory never exceeded the window plus a block (%zu)", max_mem);

    hg_stream_free(s);
}


static void
test_recv_reset(void)
{
    hg_stream_t  *s;
    uint8_t       out[1000];
    int           fin;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 1000, 0);
    deliver(s, 5000, 1000, 0);
    hg_stream_recv_read(s, out, 500, &fin);
    hg_stream_recv_take_freed(s);

    tap_is_int(hg_stream_recv_reset(s, 5, 8000), 2000,
               "a reset grows the highest offset to its final size");
    tap_ok(s->reset_received && s->peer_reset_code == 5,
           "the reset and its code are recorded");
    tap_is_int(hg_stream_memory(s), 0, "buffered bytes are discarded");
    tap_is_int(hg_stream_recv_take_freed(s), 7500,
               "all unread credit up to the final size returns");
    tap_ok(hg_stream_read_ready(s), "the reader is woken to see the reset");
    tap_ok(hg_stream_recv_read(s, out, sizeof(out), &fin) == 0 && !fin,
           "a read returns 0 without FIN");
    tap_ok(hg_stream_recv_done(s), "the receive side is done");

    tap_is_int(deliver(s, 7000, 1000, 0), 0, "late data is accepted");
    tap_is_int(hg_stream_memory(s), 0, "but not stored");
    tap_is_int(deliver(s, 7000, 2000, 0), HG_ERR,
               "data past the final size is an error");
    tap_is_int(hg_stream_recv_reset(s, 6, 8000), 0, "a duplicate reset");
    tap_is_int(s->peer_reset_code, 5, "keeps the first code");
    hg_stream_free(s);

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 100, 1);
    hg_stream_recv_read(s, out, sizeof(out), &fin);
    tap_is_int(hg_stream_recv_reset(s, 5, 100), 0,
               "a reset after the FIN was read");
    tap_ok(!s->reset_received, "is ignored");
    hg_stream_free(s);
}


static void
test_recv_stop(void)
{
    hg_stream_t  *s;
    uint8_t       out[100];
    int           fin;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);
    deliver(s, 0, 1000, 0);
    deliver(s, 3000, 1000, 0);
    hg_stream_recv_read(s, out, 100, &fin);
    hg_stream_recv_take_freed(s);

    tap_is_int(hg_stream_recv_stop(s, 8), HG_OK, "we stop reading");
    tap_is_int(hg_stream_recv_stop(s, 8), HG_ERR_STATE, "once");
    tap_ok(hg_stream_stop_due(s) && s->stop_code == 8,
           "STOP_SENDING with our code is due");
    tap_is_int(hg_stream_memory(s), 0, "buffered bytes are discarded");
    tap_is_int(hg_stream_recv_take_freed(s), 3900,
               "and their credit up to the highest offset returns");
    tap_ok(!hg_stream_read_ready(s), "the reader is not woken");

    hg_stream_stop_commit(s);
    tap_ok(!hg_stream_stop_due(s), "not due while in flight");
    hg_stream_stop_on_lost(s);
    tap_ok(hg_stream_stop_due(s), "due again once lost");

    tap_is_int(deliver(s, 4000, 1000, 0), 1000, "new data is counted");
    tap_is_int(hg_stream_recv_take_freed(s), 1000, "and credited at once");
    tap_is_int(hg_stream_memory(s), 0, "never stored");
    tap_ok(!hg_stream_recv_done(s), "not done before the final size");

    tap_is_int(hg_stream_recv_reset(s, 8, 6000), 1000,
               "the peer's answering reset");
    tap_is_int(hg_stream_recv_take_freed(s), 1000, "credits the rest");
    tap_ok(!hg_stream_stop_due(s) && hg_stream_recv_done(s),
           "the receive side is done, no STOP_SENDING needed");
    hg_stream_free(s);
}


static void
test_fragment_cap(void)
{
    hg_stream_t  *s;
    uint64_t      i;
    int64_t       rc;

    s = hg_stream_new(1, NOCAP, 64 * KB, 64 * KB);

    rc = 0;
    for (i = 0; i < s->received.max && rc >= 0; i++) {
        rc = deliver(s, 2 + 2 * i, 1, 0);
    }

    tap_ok(rc >= 0 && hg_rangeset_full(&s->received),
           "scattered bytes fill the interval cap (%zu)", s->received.max);
    tap_is_int(deliver(s, 2 + 2 * i, 1, 0), HG_ERR_LIMIT,
               "one more scattered byte is refused");
    tap_ok(deliver(s, 0, 2, 0) >= 0,
           "a frame at offset 0 touching the first interval is taken");
    tap_ok(deliver(s, 5, 1, 0) >= 0,
           "so is one bridging two intervals");
    tap_ok(s->received.n < s->received.max, "they merged intervals");

    hg_stream_free(s);
}


/* --- a sender and a receiver over a lossy link ------------------------- */


typedef enum {
    WIRE_STREAM = 0,
    WIRE_RESET,                   /* offset: the final size */
    WIRE_STOP
} wire_kind_t;

typedef struct {
    wire_kind_t  kind;
    uint64_t     offset;
    size_t       len;
    int          fin;
    int          delivered;       /* reached the receiver */
    int          echo;            /* a duplicate: no ack or loss of its own */
    uint8_t     *data;
} wire_t;

typedef struct {
    unsigned   seed;
    uint64_t   total;
    uint64_t   window;
    uint64_t   send_buffer;
    int        drop;              /* percent of frames lost */
    int        dup;               /* percent duplicated */
    int        spurious;          /* percent of arrivals declared lost */
    uint64_t   reset_at;          /* sender resets after writing this much */
    uint64_t   stop_at;           /* receiver stops after reading this */
} link_params_t;

typedef struct {
    const link_params_t  *p;
    hg_stream_t          *snd;
    hg_stream_t          *rcv;
    wire_t               *wire;
    size_t                nwire;
    size_t                cap;
    uint64_t              conn_max;   /* connection credit granted */
    uint64_t              conn_sent;  /* new bytes sent against it */
    uint64_t              growth;     /* receiver: sum of growth */
    uint64_t              freed;      /* receiver: sum of freed credit */
    uint64_t              max_pending; /* MAX_STREAM_DATA on its way */
    uint8_t              *out;
    unsigned long         sent, resent, lost, dups, acks;
    int                   ok;
    const char           *why;
} link_t;


static void
link_fail(link_t *l, const char *why)
{
    if (l->ok) {
        l->ok = 0;
        l->why = why;
    }
}


static void
link_push(link_t *l, wire_kind_t kind, uint64_t offset, size_t len, int fin)
{
    wire_t  *w;

    if (l->nwire == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->wire = realloc(l->wire, l->cap * sizeof(wire_t));
    }

    w = &l->wire[l->nwire++];
    memset(w, 0, sizeof(wire_t));
    w->kind = kind;
    w->offset = offset;
    w->len = len;
    w->fin = fin;
    w->data = malloc(len + 1);
}


static void
link_remove(link_t *l, size_t i)
{
    free(l->wire[i].data);
    l->wire[i] = l->wire[--l->nwire];
}


static int
link_done(const link_t *l)
{
    return hg_stream_send_done(l->snd) && hg_stream_recv_done(l->rcv);
}


/* the sending application writes a random chunk, then the FIN or RESET */
static void
link_app_write(link_t *l)
{
    uint64_t  left, n;

    if (l->p->reset_at && l->snd->written >= l->p->reset_at) {
        (void) hg_stream_send_reset(l->snd, 99);
        return;
    }

    left = l->p->total - l->snd->written;
    n = rand() % 8000;

    if (left) {
        app_write(l->snd, n < left ? n : left);

    } else if (!l->snd->fin_written) {
        hg_stream_send_fin(l->snd);
    }
}


/* control frames first, then one STREAM frame, as hg_conn would */
static void
link_send(link_t *l)
{
    frame_t   f;
    wire_t   *w;
    int       pending;

    if (hg_stream_reset_due(l->snd)) {
        link_push(l, WIRE_RESET, l->snd->sent, 0, 0);
        hg_stream_reset_commit(l->snd);
        return;
    }

    if (hg_stream_stop_due(l->rcv)) {
        link_push(l, WIRE_STOP, 0, 0, 0);
        hg_stream_stop_commit(l->rcv);
        return;
    }

    pending = hg_stream_send_pending(l->snd);

    if (!peek(l->snd, 1 + rand() % 1400, NOCAP, &f) != !pending) {
        link_fail(l, "send_pending disagrees with peek");
    }

    if (!peek(l->snd, rand() % 1400, l->conn_max - l->conn_sent, &f)) {
        return;
    }

    link_push(l, WIRE_STREAM, f.offset, f.len, f.fin);
    w = &l->wire[l->nwire - 1];
    hg_stream_send_copy(l->snd, f.offset, w->data, f.len);

    if (!matches(w->data, f.offset, f.len)) {
        link_fail(l, "send_copy returned wrong bytes");
    }

    hg_stream_send_commit(l->snd, f.offset, f.len, f.fin);

    if (f.is_new) {
        l->conn_sent += f.len;
    } else if (f.len) {
        l->resent++;
    }

    l->sent++;
}


static void
link_arrive(link_t *l, const wire_t *w)
{
    int64_t  rc;

    switch (w->kind) {

    case WIRE_STREAM:
        rc = hg_stream_recv(l->rcv, w->offset, w->data, w->len, w->fin);
        break;

    case WIRE_RESET:
        rc = hg_stream_recv_reset(l->rcv, 99, w->offset);
        break;

    default:
        (void) hg_stream_recv_stop_sending(l->snd, 77);
        return;
    }

    if (rc < 0) {
        link_fail(l, "the receiver refused a frame");
        return;
    }

    l->growth += rc;
    l->freed += hg_stream_recv_take_freed(l->rcv);

    if (l->growth > l->conn_max) {
        link_fail(l, "connection flow control was exceeded");
    }
}


static void
link_lost(link_t *l, const wire_t *w)
{
    switch (w->kind) {

    case WIRE_STREAM:
        hg_stream_send_on_lost(l->snd, w->offset, w->len, w->fin);
        break;

    case WIRE_RESET:
        hg_stream_reset_on_lost(l->snd);
        break;

    default:
        hg_stream_stop_on_lost(l->rcv);
    }

    l->lost++;
}


static void
link_acked(link_t *l, const wire_t *w)
{
    switch (w->kind) {

    case WIRE_STREAM:
        hg_stream_send_on_acked(l->snd, w->offset, w->len, w->fin);
        break;

    case WIRE_RESET:
        hg_stream_reset_on_acked(l->snd);
        break;

    default:
        break;
    }

    l->acks++;
}


/* one frame on the wire moves on: arrives, is lost, or is acknowledged */
static void
link_step(link_t *l)
{
    size_t   i;
    wire_t  *w, *echo;

    i = rand() % l->nwire;
    w = &l->wire[i];

    if (w->echo) {
        link_arrive(l, w);
        link_remove(l, i);

    } else if (!w->delivered && rand() % 100 < l->p->drop) {
        link_lost(l, w);
        link_remove(l, i);

    } else if (!w->delivered) {
        w->delivered = 1;
        link_arrive(l, w);

        if (rand() % 100 < l->p->dup) {
            link_push(l, w->kind, w->offset, w->len, w->fin);
            w = &l->wire[i];
            echo = &l->wire[l->nwire - 1];
            memcpy(echo->data, w->data, w->len);
            echo->echo = 1;
            l->dups++;
        }

    } else if (rand() % 100 < l->p->spurious) {
        link_lost(l, w);
        link_remove(l, i);

    } else {
        link_acked(l, w);
        link_remove(l, i);
    }
}


/* the receiving application reads (or stops); window updates go back */
static void
link_read(link_t *l)
{
    size_t    n;
    int       fin;
    uint64_t  at;

    at = l->rcv->read;

    if (l->p->stop_at && at >= l->p->stop_at) {
        (void) hg_stream_recv_stop(l->rcv, 77);
    }

    n = hg_stream_recv_read(l->rcv, l->out + at, rand() % 6000, &fin);

    if (at + n > l->p->total || !matches(l->out + at, at, n)) {
        link_fail(l, "the reader got wrong bytes");
    }

    l->freed += hg_stream_recv_take_freed(l->rcv);
    l->conn_max = l->p->window + l->p->window / 2 + l->freed;

    if (l->rcv->max_data_due) {
        l->max_pending = hg_stream_recv_update_max(l->rcv);
    }

    if (l->max_pending && rand() % 4 == 0) {
        if (rand() % 10 == 0) {
            hg_stream_recv_max_lost(l->rcv, l->max_pending);
        } else {
            hg_stream_send_max(l->snd, l->max_pending);
        }
        l->max_pending = 0;
    }
}


static void
link_check_memory(link_t *l)
{
    if (hg_bytebuf_memory(&l->snd->sbuf) > l->p->send_buffer + BLOCK
        || hg_bytebuf_memory(&l->rcv->rbuf) > l->p->window + BLOCK)
    {
        link_fail(l, "memory exceeded a window");
    }
}


static void
link_run(link_t *l)
{
    long  steps;
    int   r;

    for (steps = 0; l->ok && !link_done(l) && steps < 50000000; steps++) {
        r = rand() % 10;

        if (r < 1) {
            link_app_write(l);
        } else if (r < 4) {
            link_send(l);
        } else if (r < 8 && l->nwire) {
            link_step(l);
        } else {
            link_read(l);
        }

        link_check_memory(l);
    }

    if (!link_done(l)) {
        link_fail(l, "the transfer stalled");
    }

    if (!l->ok) {
        tap_diag("seed %u: %s after %ld steps", l->p->seed, l->why, steps);
    }

    tap_diag("seed %u: %lu frames (%lu resent), %lu lost, %lu duplicated, "
             "%lu acked", l->p->seed, l->sent, l->resent, l->lost, l->dups,
             l->acks);
}


static void
test_link(const link_params_t *p)
{
    link_t  l;

    memset(&l, 0, sizeof(l));
    l.p = p;
    l.ok = 1;
    l.snd = hg_stream_new(0, p->window, p->send_buffer, p->window);
    l.rcv = hg_stream_new(0, p->window, p->send_buffer, p->window);
    l.out = malloc(p->total + 1);
    l.conn_max = p->window + p->window / 2;
    srand(p->seed);

    link_run(&l);

    if (p->reset_at == 0 && p->stop_at == 0) {
        tap_ok(l.ok && l.rcv->read == p->total
               && matches(l.out, 0, p->total),
               "seed %u, %d%% drop, %d%% dup, %d%% spurious loss: "
               "%llu bytes arrive intact", p->seed, p->drop, p->dup,
               p->spurious, (unsigned long long) p->total);
    } else {
        tap_ok(l.ok && l.rcv->final_size == l.snd->sent
               && l.rcv->recv_highest == l.snd->sent,
               "seed %u, reset at %llu, stop at %llu: the final size is "
               "agreed (%llu)", p->seed, (unsigned long long) p->reset_at,
               (unsigned long long) p->stop_at,
               (unsigned long long) l.rcv->final_size);
    }

    tap_ok(l.growth == l.rcv->recv_highest && l.freed == l.growth,
           "connection credit: received %llu, freed %llu",
           (unsigned long long) l.growth, (unsigned long long) l.freed);
    tap_ok(hg_stream_memory(l.snd) == 0 && hg_stream_memory(l.rcv) == 0,
           "no memory held at the end");

    while (l.nwire) {
        link_remove(&l, 0);
    }

    free(l.wire);
    free(l.out);
    hg_stream_free(l.snd);
    hg_stream_free(l.rcv);
}


int
main(void)
{
    static const link_params_t  links[] = {
        { 1, 1024 * KB, 64 * KB, 48 * KB, 10, 5, 5, 0, 0 },
        { 2, 256 * KB, 32 * KB, 64 * KB, 30, 20, 10, 0, 0 },
        { 3, 256 * KB, 128 * KB, 16 * KB, 50, 10, 30, 0, 0 },
        { 4, 64 * KB, 16 * KB, 16 * KB, 0, 0, 0, 0, 0 },
        { 5, 1, 16 * KB, 16 * KB, 40, 40, 40, 0, 0 },
        { 6, 0, 16 * KB, 16 * KB, 40, 40, 40, 0, 0 },
        { 7, 256 * KB, 32 * KB, 32 * KB, 20, 10, 10, 100 * KB, 0 },
        { 8, 256 * KB, 32 * KB, 32 * KB, 20, 10, 10, 0, 100 * KB },
        { 9, 256 * KB, 32 * KB, 32 * KB, 20, 10, 10, 120 * KB, 100 * KB },
        { 10, 8 * KB, 32 * KB, 32 * KB, 20, 10, 10, 0, 1 },
    };

    link_params_t  p;
    size_t         i;

    test_send_buffer();
    test_peek_commit();
    test_flow_control();
    test_conn_credit();
    test_lost_first();
    test_acks_fold();
    test_acked_not_resent();
    test_fin();
    test_fin_lost();
    test_send_done();
    test_send_reset();
    test_stop_sending();
    test_meta();

    test_recv_in_order();
    test_recv_random();
    test_recv_flow_control();
    test_final_size();
    test_window_update();
    test_recv_memory();
    test_recv_reset();
    test_recv_stop();
    test_fragment_cap();

    for (i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        test_link(&links[i]);
    }

    /* and a batch of random shapes, some reset, some stopped */
    for (i = 0; i < 24; i++) {
        srand(100 + i);
        p.seed = 100 + i;
        p.total = rand() % (300 * KB);
        p.window = (1 + rand() % 8) * BLOCK;
        p.send_buffer = (1 + rand() % 8) * BLOCK;
        p.drop = rand() % 60;
        p.dup = rand() % 50;
        p.spurious = rand() % 50;
        p.reset_at = (i % 3 == 1) ? 1 + rand() % (p.total + 1) : 0;
        p.stop_at = (i % 4 == 2) ? 1 + rand() % (p.total + 1) : 0;
        test_link(&p);
    }

    return tap_done();
}
