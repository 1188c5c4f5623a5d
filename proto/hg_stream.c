/*
 * Stream state: send and receive sides, flow control, FIN, RESET and
 * STOP_SENDING; see hg_stream.h.
 *
 * Invariants of the send side: acked <= sent <= written, written - acked
 * <= send_buffer, `lost` and `acked_above` lie in [acked, sent) and do not
 * intersect, and the FIN is only ever sent once sent == written.
 * Invariants of the receive side: read <= recv_highest <= recv_max <=
 * read + recv_window, and `received` lies in [read, recv_highest).
 */

#include <stdlib.h>

#include "hg_stream.h"


/*
 * Reassembly may hold one interval per this many bytes of window: an
 * honest sender fragments far less, and the cap keeps a peer sending
 * scattered single bytes from making the interval list outgrow the data.
 */
#define HG_STREAM_RECV_BYTES_PER_GAP  256
#define HG_STREAM_RECV_MIN_GAPS       64


static int hg_stream_gap(const hg_rangeset_t *set, uint64_t from,
    uint64_t to, uint64_t *lo, uint64_t *hi);
static int hg_stream_fin_at(const hg_stream_t *s, uint64_t end);
static uint64_t hg_stream_send_limit(const hg_stream_t *s,
    uint64_t conn_credit);
static void hg_stream_fold_acked(hg_stream_t *s);
static int64_t hg_stream_recv_check(const hg_stream_t *s, uint64_t offset,
    size_t len, int fin);
static int64_t hg_stream_recv_store(hg_stream_t *s, uint64_t offset,
    const uint8_t *data, size_t len);
static void hg_stream_recv_discard(hg_stream_t *s);
static int hg_stream_recv_discarding(const hg_stream_t *s);


hg_stream_t *
hg_stream_new(int64_t id, uint64_t send_max, uint64_t send_buffer,
    uint64_t recv_window)
{
    hg_stream_t  *s;

    s = calloc(1, sizeof(hg_stream_t));
    if (s == NULL) {
        return NULL;
    }

    s->id = id;

    s->send_max = send_max;
    s->send_buffer = send_buffer;
    hg_bytebuf_init(&s->sbuf, send_buffer);

    /*
     * Intervals in [acked, sent) are at least a byte apart, so these caps
     * are never reached and the rangesets never drop an interval.
     */
    hg_rangeset_init(&s->acked_above, send_buffer / 2 + 2);
    hg_rangeset_init(&s->lost, send_buffer / 2 + 2);

    s->recv_window = recv_window;
    s->recv_max = recv_window;
    s->final_size = UINT64_MAX;
    hg_bytebuf_init(&s->rbuf, recv_window);
    hg_rangeset_init(&s->received, recv_window / HG_STREAM_RECV_BYTES_PER_GAP
                                   + HG_STREAM_RECV_MIN_GAPS);

    return s;
}


void
hg_stream_free(hg_stream_t *s)
{
    if (s == NULL) {
        return;
    }

    hg_bytebuf_free(&s->sbuf);
    hg_bytebuf_free(&s->rbuf);
    hg_rangeset_free(&s->acked_above);
    hg_rangeset_free(&s->lost);
    hg_rangeset_free(&s->received);
    free(s);
}


/*
 * The first part of [from, to) not covered by set, in [*lo, *hi);
 * 0 when set covers all of it.
 */
static int
hg_stream_gap(const hg_rangeset_t *set, uint64_t from, uint64_t to,
    uint64_t *lo, uint64_t *hi)
{
    size_t  a, b, m;

    a = 0;
    b = set->n;

    while (a < b) {
        m = a + (b - a) / 2;
        if (set->r[m].hi <= from) {
            a = m + 1;
        } else {
            b = m;
        }
    }

    if (a < set->n && set->r[a].lo <= from) {
        from = set->r[a].hi;
        a++;
    }

    if (from >= to) {
        return 0;
    }

    *lo = from;
    *hi = (a < set->n && set->r[a].lo < to) ? set->r[a].lo : to;

    return 1;
}


/* --- send side --------------------------------------------------------- */


size_t
hg_stream_send_space(const hg_stream_t *s)
{
    uint64_t  used, room;

    if (s->fin_written || s->reset_queued) {
        return 0;
    }

    used = s->written - s->acked;
    if (used >= s->send_buffer) {
        return 0;
    }

    room = s->send_buffer - used;

    return room > SIZE_MAX ? SIZE_MAX : (size_t) room;
}


size_t
hg_stream_send_write(hg_stream_t *s, const uint8_t *data, size_t len)
{
    size_t  n;

    n = hg_stream_send_space(s);
    if (len < n) {
        n = len;
    }

    if (n == 0 || hg_bytebuf_write(&s->sbuf, s->written, data, n) != 0) {
        return 0;
    }

    s->written += n;

    return n;
}


int
hg_stream_send_fin(hg_stream_t *s)
{
    if (s->reset_queued) {
        return HG_ERR_STATE;
    }

    s->fin_written = 1;

    return HG_OK;
}


/* a frame ending at end carries the FIN */
static int
hg_stream_fin_at(const hg_stream_t *s, uint64_t end)
{
    return s->fin_written && end == s->written && !s->fin_acked;
}


/* new bytes may be sent below this offset */
static uint64_t
hg_stream_send_limit(const hg_stream_t *s, uint64_t conn_credit)
{
    uint64_t  limit;

    limit = s->written < s->send_max ? s->written : s->send_max;

    if (limit <= s->sent) {
        return s->sent;
    }

    if (conn_credit < limit - s->sent) {
        limit = s->sent + conn_credit;
    }

    return limit;
}


int
hg_stream_send_peek(const hg_stream_t *s, size_t max_len,
    uint64_t conn_credit, uint64_t *offset, size_t *len, int *fin,
    int *is_new)
{
    uint64_t           limit, n;
    const hg_range_t  *r;

    *len = 0;
    *fin = 0;
    *is_new = 0;

    if (s->reset_queued) {
        return 0;
    }

    r = hg_rangeset_first(&s->lost);

    if (r != NULL && max_len > 0) {
        n = r->hi - r->lo;
        *offset = r->lo;
        *len = n < max_len ? (size_t) n : max_len;
        *fin = hg_stream_fin_at(s, r->lo + *len);
        return 1;
    }

    /* a lost FIN implies sent == written: it goes alone */
    if (s->fin_lost) {
        *offset = s->written;
        *fin = 1;
        return 1;
    }

    limit = hg_stream_send_limit(s, conn_credit);

    if (limit > s->sent && max_len > 0) {
        n = limit - s->sent;
        *offset = s->sent;
        *len = n < max_len ? (size_t) n : max_len;
        *fin = hg_stream_fin_at(s, s->sent + *len);
        *is_new = 1;
        return 1;
    }

    if (s->fin_written && !s->fin_sent && s->sent == s->written) {
        *offset = s->written;
        *fin = 1;
        return 1;
    }

    return 0;
}


void
hg_stream_send_commit(hg_stream_t *s, uint64_t offset, size_t len, int fin)
{
    uint64_t  end;

    end = offset + len;

    /* a failed split leaves bytes marked lost: a harmless extra resend */
    (void) hg_rangeset_remove(&s->lost, offset, end);

    if (end > s->sent) {
        s->sent = end;
    }

    if (fin) {
        s->fin_sent = 1;
        s->fin_lost = 0;
    }

    if (offset == 0) {
        s->meta_lost = 0;
    }
}


void
hg_stream_send_copy(const hg_stream_t *s, uint64_t offset, uint8_t *dst,
    size_t len)
{
    hg_bytebuf_read(&s->sbuf, offset, dst, len);
}


/* moves `acked` over acknowledged ranges that now touch it */
static void
hg_stream_fold_acked(hg_stream_t *s)
{
    const hg_range_t  *r;

    while ((r = hg_rangeset_first(&s->acked_above)) != NULL
           && r->lo <= s->acked)
    {
        if (r->hi > s->acked) {
            s->acked = r->hi;
        }

        (void) hg_rangeset_remove(&s->acked_above, r->lo, r->hi);
    }

    hg_bytebuf_release(&s->sbuf, s->acked);
}


void
hg_stream_send_on_acked(hg_stream_t *s, uint64_t offset, size_t len,
    int fin)
{
    uint64_t  lo, end;

    if (s->reset_queued) {
        return;
    }

    if (fin) {
        s->fin_acked = 1;
        s->fin_lost = 0;
    }

    if (offset == 0) {
        s->meta_lost = 0;
    }

    end = offset + len;
    if (end > s->sent) {
        end = s->sent;
    }

    if (end <= s->acked) {
        return;
    }

    (void) hg_rangeset_remove(&s->lost, offset, end);

    lo = offset > s->acked ? offset : s->acked;

    if (lo == s->acked) {
        s->acked = end;

    } else if (hg_rangeset_add(&s->acked_above, lo, end) != 0) {
        /* an ack we cannot record must not stall the stream: resend */
        (void) hg_rangeset_add(&s->lost, lo, end);
    }

    hg_stream_fold_acked(s);
}


void
hg_stream_send_on_lost(hg_stream_t *s, uint64_t offset, size_t len,
    int fin)
{
    uint64_t  from, end, lo, hi;

    if (s->reset_queued) {
        return;
    }

    if (fin && !s->fin_acked) {
        s->fin_lost = 1;
    }

    /* meta arrived with any acknowledged frame at offset 0 */
    if (offset == 0 && s->send_meta && s->acked == 0 && !s->fin_acked) {
        s->meta_lost = 1;
    }

    end = offset + len;
    if (end > s->sent) {
        end = s->sent;
    }

    from = offset > s->acked ? offset : s->acked;

    while (from < end && hg_stream_gap(&s->acked_above, from, end, &lo, &hi))
    {
        /* lost is capped above any reachable interval count */
        (void) hg_rangeset_add(&s->lost, lo, hi);
        from = hi;
    }
}


int
hg_stream_send_max(hg_stream_t *s, uint64_t max)
{
    if (max <= s->send_max) {
        return 0;
    }

    s->send_max = max;

    return 1;
}


int
hg_stream_send_done(const hg_stream_t *s)
{
    if (s->reset_queued) {
        return s->reset_acked;
    }

    return s->fin_acked && s->acked == s->written;
}


int
hg_stream_send_pending(const hg_stream_t *s)
{
    if (s->reset_queued) {
        return 0;
    }

    if (!hg_rangeset_empty(&s->lost) || s->fin_lost) {
        return 1;
    }

    if (hg_stream_send_limit(s, UINT64_MAX) > s->sent) {
        return 1;
    }

    return s->fin_written && !s->fin_sent && s->sent == s->written;
}


int
hg_stream_send_reset(hg_stream_t *s, uint64_t code)
{
    if (s->reset_queued || (s->fin_acked && s->acked == s->written)) {
        return HG_ERR_STATE;
    }

    s->reset_queued = 1;
    s->reset_code = code;
    s->fin_lost = 0;
    s->meta_lost = 0;

    /* nothing will be sent again: drop the bytes and the bookkeeping */
    hg_bytebuf_free(&s->sbuf);
    hg_rangeset_free(&s->lost);
    hg_rangeset_free(&s->acked_above);

    return HG_OK;
}


int
hg_stream_reset_due(const hg_stream_t *s)
{
    return s->reset_queued && !s->reset_sent && !s->reset_acked;
}


void
hg_stream_reset_commit(hg_stream_t *s)
{
    s->reset_sent = 1;
}


void
hg_stream_reset_on_acked(hg_stream_t *s)
{
    s->reset_acked = 1;
}


void
hg_stream_reset_on_lost(hg_stream_t *s)
{
    if (!s->reset_acked) {
        s->reset_sent = 0;
    }
}


int
hg_stream_recv_stop_sending(hg_stream_t *s, uint64_t code)
{
    if (s->stop_received) {
        return 0;
    }

    s->stop_received = 1;

    /* HG_ERR_STATE: already reset, or everything arrived; nothing to do */
    (void) hg_stream_send_reset(s, code);

    return 1;
}


/* --- receive side ------------------------------------------------------ */


/* flow control and final size rules for a frame (RFC 9000 4.5) */
static int64_t
hg_stream_recv_check(const hg_stream_t *s, uint64_t offset, size_t len,
    int fin)
{
    uint64_t  end;

    if (offset > s->recv_max || len > s->recv_max - offset) {
        return HG_ERR_LIMIT;
    }

    end = offset + len;

    if (s->final_size != UINT64_MAX) {
        if (end > s->final_size || (fin && end != s->final_size)) {
            return HG_ERR;
        }
    }

    if (fin && end < s->recv_highest) {
        return HG_ERR;
    }

    return 0;
}


/* keeps the bytes of [offset, offset + len) not already held or read */
static int64_t
hg_stream_recv_store(hg_stream_t *s, uint64_t offset, const uint8_t *data,
    size_t len)
{
    uint64_t  from, end, lo, hi;

    end = offset + len;
    from = offset > s->read ? offset : s->read;

    if (from >= end) {
        return 0;
    }

    /* a new interval (one touching nothing held) must fit under the cap */
    lo = from ? from - 1 : 0;

    if (hg_rangeset_full(&s->received)
        && !hg_rangeset_overlaps(&s->received, lo, end + 1))
    {
        return HG_ERR_LIMIT;
    }

    lo = from;

    while (hg_stream_gap(&s->received, lo, end, &lo, &hi)) {
        if (hg_bytebuf_write(&s->rbuf, lo, data + (lo - offset), hi - lo)
            != 0)
        {
            return HG_ERR_NOMEM;
        }
        lo = hi;
    }

    if (hg_rangeset_add(&s->received, from, end) != 0) {
        return HG_ERR_NOMEM;
    }

    return 0;
}


static int
hg_stream_recv_discarding(const hg_stream_t *s)
{
    return s->reset_received || s->stop_queued;
}


/* the reader is gone: all credit up to recv_highest goes back */
static void
hg_stream_recv_discard(hg_stream_t *s)
{
    if (hg_stream_recv_discarding(s)) {
        return;
    }

    s->recv_freed += s->recv_highest - s->read;
    s->max_data_due = 0;

    hg_bytebuf_free(&s->rbuf);
    hg_rangeset_clear(&s->received);
}


int64_t
hg_stream_recv(hg_stream_t *s, uint64_t offset, const uint8_t *data,
    size_t len, int fin)
{
    int64_t   rc;
    uint64_t  end, growth;

    rc = hg_stream_recv_check(s, offset, len, fin);
    if (rc != 0) {
        return rc;
    }

    if (!hg_stream_recv_discarding(s)) {
        rc = hg_stream_recv_store(s, offset, data, len);
        if (rc != 0) {
            return rc;
        }
    }

    end = offset + len;
    growth = end > s->recv_highest ? end - s->recv_highest : 0;
    s->recv_highest += growth;

    if (fin) {
        s->final_size = end;
    }

    if (hg_stream_recv_discarding(s)) {
        s->recv_freed += growth;
    }

    return (int64_t) growth;
}


int64_t
hg_stream_recv_reset(hg_stream_t *s, uint64_t code, uint64_t final_size)
{
    uint64_t  growth;

    if (final_size > s->recv_max) {
        return HG_ERR_LIMIT;
    }

    if ((s->final_size != UINT64_MAX && final_size != s->final_size)
        || final_size < s->recv_highest)
    {
        return HG_ERR;
    }

    if (s->fin_read) {
        return 0;
    }

    hg_stream_recv_discard(s);

    growth = final_size - s->recv_highest;
    s->recv_highest = final_size;
    s->final_size = final_size;
    s->recv_freed += growth;

    if (!s->reset_received) {
        s->reset_received = 1;
        s->peer_reset_code = code;
    }

    return (int64_t) growth;
}


size_t
hg_stream_readable(const hg_stream_t *s)
{
    const hg_range_t  *r;

    r = hg_rangeset_first(&s->received);

    if (r == NULL || r->lo != s->read) {
        return 0;
    }

    return r->hi - r->lo;
}


int
hg_stream_read_ready(const hg_stream_t *s)
{
    if (s->reset_received) {
        return 1;
    }

    if (s->stop_queued) {
        return 0;
    }

    return hg_stream_readable(s) > 0
           || (s->final_size == s->read && !s->fin_read);
}


size_t
hg_stream_recv_read(hg_stream_t *s, uint8_t *dst, size_t len, int *fin)
{
    size_t  n;

    *fin = 0;

    if (hg_stream_recv_discarding(s)) {
        return 0;
    }

    n = hg_stream_readable(s);
    if (len < n) {
        n = len;
    }

    if (n) {
        hg_bytebuf_read(&s->rbuf, s->read, dst, n);
        (void) hg_rangeset_remove(&s->received, s->read, s->read + n);
        s->read += n;
        s->recv_freed += n;
        hg_bytebuf_release(&s->rbuf, s->read);
    }

    if (s->read == s->final_size) {
        s->fin_read = 1;
        *fin = 1;

    } else if (s->final_size == UINT64_MAX
               && s->recv_max - s->read < s->recv_window / 2)
    {
        s->max_data_due = 1;
    }

    return n;
}


uint64_t
hg_stream_recv_update_max(hg_stream_t *s)
{
    if (s->read + s->recv_window > s->recv_max) {
        s->recv_max = s->read + s->recv_window;
    }

    s->max_data_due = 0;

    return s->recv_max;
}


void
hg_stream_recv_max_lost(hg_stream_t *s, uint64_t value)
{
    if (value == s->recv_max && s->final_size == UINT64_MAX
        && !hg_stream_recv_discarding(s))
    {
        s->max_data_due = 1;
    }
}


int
hg_stream_recv_stop(hg_stream_t *s, uint64_t code)
{
    if (s->fin_read || hg_stream_recv_discarding(s)) {
        return HG_ERR_STATE;
    }

    hg_stream_recv_discard(s);

    s->stop_queued = 1;
    s->stop_code = code;

    return HG_OK;
}


int
hg_stream_stop_due(const hg_stream_t *s)
{
    return s->stop_queued && !s->stop_sent && s->final_size == UINT64_MAX;
}


void
hg_stream_stop_commit(hg_stream_t *s)
{
    s->stop_sent = 1;
}


void
hg_stream_stop_on_lost(hg_stream_t *s)
{
    s->stop_sent = 0;
}


uint64_t
hg_stream_recv_take_freed(hg_stream_t *s)
{
    uint64_t  n;

    n = s->recv_freed;
    s->recv_freed = 0;

    return n;
}


int
hg_stream_recv_done(const hg_stream_t *s)
{
    return s->fin_read || s->reset_received
           || (s->stop_queued && s->final_size != UINT64_MAX);
}


size_t
hg_stream_memory(const hg_stream_t *s)
{
    return hg_bytebuf_memory(&s->sbuf) + hg_bytebuf_memory(&s->rbuf);
}
