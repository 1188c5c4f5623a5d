/*
 * Received packet numbers and the ACK they call for (RFC 9000 13.2); see
 * hg_ackq.h.
 */

#include <string.h>

#include "hg_ackq.h"


/* RFC 9000 13.2.2: acknowledge at least every second ack-eliciting packet */
#define HG_ACKQ_ELICITING_THRESHOLD  2

/* the shortest wait for a second packet */
#define HG_ACKQ_MIN_DELAY            HG_MS


static void hg_ackq_raise_floor(hg_ackq_t *q, uint64_t floor);


void
hg_ackq_init(hg_ackq_t *q, hg_time_t max_ack_delay, size_t max_ranges)
{
    memset(q, 0, sizeof(*q));

    hg_rangeset_init(&q->received, max_ranges);

    q->largest = UINT64_MAX;
    q->ack_deadline = HG_TIME_INFINITE;
    q->max_ack_delay = max_ack_delay;
    q->last_eliciting = HG_TIME_INFINITE;
}


void
hg_ackq_free(hg_ackq_t *q)
{
    hg_rangeset_free(&q->received);
}


int
hg_ackq_is_duplicate(hg_ackq_t *q, uint64_t pn)
{
    if (pn < q->floor || hg_rangeset_contains(&q->received, pn, pn + 1)) {
        q->duplicates++;
        return 1;
    }

    return 0;
}


unsigned
hg_ackq_frame_need(hg_codec_kind_t kind)
{
    switch (kind) {

    case HOPGATE__FRAME__BODY_ACK:
    case HOPGATE__FRAME__BODY_CLOSE:
        return HG_ACKQ_NONE;

    case HOPGATE__FRAME__BODY_PING:
    case HOPGATE__FRAME__BODY_HELLO:
    case HOPGATE__FRAME__BODY_HELLO_ACK:
        return HG_ACKQ_PROMPT;

    default:
        return HG_ACKQ_ELICITING;
    }
}


void
hg_ackq_on_received(hg_ackq_t *q, uint64_t pn, unsigned need,
    hg_time_t now)
{
    int        out_of_order;
    uint64_t   expected;
    hg_time_t  deadline, wait, previous;

    if (pn < q->floor || hg_rangeset_contains(&q->received, pn, pn + 1)) {
        return;
    }

    /* below the largest fills a gap; above largest + 1 opens one */
    expected = q->largest == UINT64_MAX ? 0 : q->largest + 1;
    out_of_order = (pn != expected);

    if (q->largest == UINT64_MAX || pn > q->largest) {
        q->largest = pn;
        q->largest_time = now;
    }

    /* on allocation failure the packet goes unacknowledged: it is resent */
    (void) hg_rangeset_add(&q->received, pn, pn + 1);

    /* at the cap the lowest interval may have gone: forget below the rest */
    if (hg_rangeset_full(&q->received)) {
        hg_ackq_raise_floor(q, hg_rangeset_first(&q->received)->lo);
    }

    q->unacked++;

    if (!(need & HG_ACKQ_ELICITING)) {
        return;
    }

    q->eliciting_unacked++;

    previous = q->last_eliciting;
    q->last_eliciting = now;

    if (out_of_order || need == HG_ACKQ_PROMPT
        || q->eliciting_unacked >= HG_ACKQ_ELICITING_THRESHOLD)
    {
        q->immediate = 1;
        deadline = now;

    } else {
        /*
         * A packet that came hard on the heels of the previous one and
         * has no follower ended a burst: the sender has stopped, most
         * likely on its congestion window, and the ACK it waits for is
         * this one. Waiting out max_ack_delay for a partner would hold a
         * packet of its window idle every round trip.
         */
        wait = q->max_ack_delay;

        if (previous != HG_TIME_INFINITE && now >= previous
            && 2 * (now - previous) < wait)
        {
            wait = 2 * (now - previous);
            if (wait < HG_ACKQ_MIN_DELAY) {
                wait = HG_ACKQ_MIN_DELAY;
            }
        }

        deadline = now + wait;
    }

    /* a later packet never postpones an ACK already promised */
    if (deadline < q->ack_deadline) {
        q->ack_deadline = deadline;
    }
}


static void
hg_ackq_raise_floor(hg_ackq_t *q, uint64_t floor)
{
    if (floor > q->floor) {
        q->floor = floor;
    }
}


int
hg_ackq_due(const hg_ackq_t *q, hg_time_t now)
{
    return q->ack_deadline != HG_TIME_INFINITE && now >= q->ack_deadline;
}


int
hg_ackq_pending(const hg_ackq_t *q)
{
    return q->unacked > 0;
}


hg_time_t
hg_ackq_deadline(const hg_ackq_t *q)
{
    return q->ack_deadline;
}


size_t
hg_ackq_build(const hg_ackq_t *q, hg_time_t now, hg_range_t *ranges,
    size_t max_ranges, uint64_t *largest, hg_time_t *ack_delay)
{
    size_t  i, n;

    n = q->received.n < max_ranges ? q->received.n : max_ranges;

    /* the newest intervals matter most to the sender: they go first */
    for (i = 0; i < n; i++) {
        ranges[i] = q->received.r[q->received.n - 1 - i];
    }

    if (n == 0) {
        *largest = UINT64_MAX;
        *ack_delay = 0;
        return 0;
    }

    *largest = ranges[0].hi - 1;
    *ack_delay = now > q->largest_time ? now - q->largest_time : 0;

    return n;
}


void
hg_ackq_on_ack_sent(hg_ackq_t *q)
{
    q->unacked = 0;
    q->eliciting_unacked = 0;
    q->immediate = 0;
    q->ack_deadline = HG_TIME_INFINITE;
}


void
hg_ackq_on_ack_acked(hg_ackq_t *q, uint64_t largest)
{
    uint64_t           limit;
    const hg_range_t  *first;

    if (largest < HG_ACKQ_PRUNE_MARGIN) {
        return;
    }

    limit = largest - HG_ACKQ_PRUNE_MARGIN;

    /* the newest interval stays: it holds the largest, which ACKs need */
    while (q->received.n > 1) {
        first = hg_rangeset_first(&q->received);

        if (first->hi > limit) {
            break;
        }

        hg_ackq_raise_floor(q, first->hi);

        /* a whole interval: removal never splits, so it cannot fail */
        (void) hg_rangeset_remove(&q->received, first->lo, first->hi);
    }
}
