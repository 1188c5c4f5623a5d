/*
 * Loss recovery after RFC 9002 (sections 5, 6 and 7.6, Appendix A); see
 * hg_recovery.h.
 */

#include <stdlib.h>
#include <string.h>

#include "hg_recovery.h"


/* the ring starts this small and doubles on demand */
#define HG_RECOVERY_RING_MIN    64

/*
 * hg_sent_packet_t.acked while one ACK is processed: acknowledged by it,
 * not yet reported. Losses are reported first (RFC 9002 A.7), so the
 * acknowledged packets wait in this state.
 */
#define HG_RECOVERY_ACKED_NOW   2


static hg_sent_packet_t *hg_recovery_slot(const hg_recovery_t *r,
    uint64_t pn);
static int hg_recovery_grow(hg_recovery_t *r);
static int hg_recovery_check_ack(const hg_recovery_t *r, const hg_ack_t *ack);
static uint64_t hg_recovery_mark_acked(hg_recovery_t *r, const hg_ack_t *ack,
    uint64_t *largest, int *eliciting);
static void hg_recovery_update_rtt(hg_recovery_t *r, hg_time_t ack_delay,
    hg_time_t now);
static void hg_recovery_detect_lost(hg_recovery_t *r, hg_time_t now);
static void hg_recovery_report_acked(hg_recovery_t *r, const hg_ack_t *ack,
    hg_time_t now);
static void hg_recovery_settle(hg_recovery_t *r, hg_sent_packet_t *pkt);
static void hg_recovery_advance(hg_recovery_t *r);
static hg_time_t hg_recovery_pto_deadline(const hg_recovery_t *r);
static void hg_recovery_find_spurious(hg_recovery_t *r, const hg_ack_t *ack);
static void hg_recovery_log_loss(hg_recovery_t *r, const hg_sent_packet_t *pkt);


int
hg_recovery_init(hg_recovery_t *r, hg_cc_t *cc, hg_time_t max_ack_delay,
    size_t max_packets, const hg_recovery_cb_t *cb)
{
    memset(r, 0, sizeof(*r));

    if (max_packets == 0) {
        return -1;
    }

    /*
     * No bigger than max_packets rounded up to a power of two, and made
     * at the first packet: a server connection whose handshake never
     * completes sends none, and should not hold 20 KB for them.
     */
    r->ring_min = HG_RECOVERY_RING_MIN;
    while (r->ring_min / 2 >= max_packets) {
        r->ring_min /= 2;
    }

    /* RFC 9002 A.4: estimates before the first sample */
    r->smoothed_rtt = HG_INITIAL_RTT;
    r->rttvar = HG_INITIAL_RTT / 2;
    r->max_ack_delay = max_ack_delay;

    r->max_packets = max_packets;
    r->largest_acked = UINT64_MAX;
    r->packet_threshold = HG_PACKET_THRESHOLD;
    r->time_eighths = 1;
    r->loss_time = HG_TIME_INFINITE;
    r->cc = cc;

    if (cb != NULL) {
        r->cb = *cb;
    }

    return 0;
}


void
hg_recovery_free(hg_recovery_t *r)
{
    free(r->ring);
    r->ring = NULL;
    r->ring_cap = 0;
}


static hg_sent_packet_t *
hg_recovery_slot(const hg_recovery_t *r, uint64_t pn)
{
    return &r->ring[pn & (r->ring_cap - 1)];
}


static int
hg_recovery_grow(hg_recovery_t *r)
{
    size_t             cap;
    uint64_t           pn;
    hg_sent_packet_t  *ring;

    cap = r->ring_cap ? r->ring_cap * 2 : r->ring_min;

    ring = malloc(cap * sizeof(hg_sent_packet_t));
    if (ring == NULL) {
        return -1;
    }

    /* a packet's index depends on the capacity: rehome each one */
    for (pn = r->first_pn; pn < r->next_pn; pn++) {
        ring[pn & (cap - 1)] = *hg_recovery_slot(r, pn);
    }

    free(r->ring);
    r->ring = ring;
    r->ring_cap = cap;

    return 0;
}


hg_sent_packet_t *
hg_recovery_next_slot(hg_recovery_t *r)
{
    uint64_t           span;
    hg_sent_packet_t  *pkt;

    span = r->next_pn - r->first_pn;

    if (span >= r->max_packets) {
        return NULL;
    }

    if (span == r->ring_cap && hg_recovery_grow(r) != 0) {
        return NULL;
    }

    pkt = hg_recovery_slot(r, r->next_pn);
    memset(pkt, 0, sizeof(hg_sent_packet_t));
    pkt->pn = r->next_pn;

    return pkt;
}


void
hg_recovery_on_sent(hg_recovery_t *r, hg_sent_packet_t *pkt, hg_time_t now)
{
    hg_sent_packet_t  *slot;

    slot = hg_recovery_slot(r, r->next_pn);
    if (pkt != slot) {
        *slot = *pkt;
    }

    slot->pn = r->next_pn++;
    slot->time_sent = now;
    slot->acked = 0;
    slot->lost = 0;

    r->outstanding++;

    if (slot->ack_eliciting) {
        r->time_of_last_ack_eliciting = now;
        r->ack_eliciting_in_flight++;
    }

    if (slot->in_flight) {
        r->cc->bytes_in_flight += slot->size;
        r->cc->ops->on_sent(r->cc, slot->size, now);
    }
}


int
hg_recovery_on_ack(hg_recovery_t *r, const hg_ack_t *ack, hg_time_t now)
{
    int                eliciting;
    uint64_t           largest;
    hg_sent_packet_t  *pkt;

    if (hg_recovery_check_ack(r, ack) != 0) {
        return -1;
    }

    if (r->largest_acked == UINT64_MAX || ack->largest > r->largest_acked) {
        r->largest_acked = ack->largest;
    }

    if (r->lost_log_n) {
        hg_recovery_find_spurious(r, ack);
    }

    if (hg_recovery_mark_acked(r, ack, &largest, &eliciting) == 0) {
        /* a duplicate or reordered ACK: nothing new to learn */
        return 0;
    }

    /*
     * RFC 9002 5.1: only the first acknowledgment of the largest number
     * gives a sample, and only when the peer had to acknowledge promptly.
     */
    if (largest == ack->largest && eliciting) {
        pkt = hg_recovery_slot(r, largest);
        r->latest_rtt = now > pkt->time_sent ? now - pkt->time_sent : 0;
        hg_recovery_update_rtt(r, ack->ack_delay, now);
    }

    hg_recovery_detect_lost(r, now);
    hg_recovery_report_acked(r, ack, now);

    r->pto_count = 0;

    hg_recovery_advance(r);

    return 0;
}


/* ranges must be descending and disjoint, and cover only sent numbers */
static int
hg_recovery_check_ack(const hg_recovery_t *r, const hg_ack_t *ack)
{
    size_t  i;

    if (ack->nranges == 0 || ack->ranges == NULL) {
        return -1;
    }

    if (ack->largest >= r->next_pn || ack->ranges[0].hi != ack->largest + 1) {
        return -1;
    }

    for (i = 0; i < ack->nranges; i++) {
        if (ack->ranges[i].lo >= ack->ranges[i].hi) {
            return -1;
        }

        if (i > 0 && ack->ranges[i].hi > ack->ranges[i - 1].lo) {
            return -1;
        }
    }

    return 0;
}


/*
 * Marks the packets this ACK acknowledges for the first time; returns how
 * many, the largest of them, and whether any was ack-eliciting.
 */
static uint64_t
hg_recovery_mark_acked(hg_recovery_t *r, const hg_ack_t *ack,
    uint64_t *largest, int *eliciting)
{
    size_t             i;
    uint64_t           pn, lo, count;
    hg_sent_packet_t  *pkt;

    count = 0;
    *largest = 0;
    *eliciting = 0;

    for (i = 0; i < ack->nranges; i++) {
        lo = ack->ranges[i].lo > r->first_pn ? ack->ranges[i].lo : r->first_pn;

        for (pn = lo; pn < ack->ranges[i].hi; pn++) {
            pkt = hg_recovery_slot(r, pn);

            if (pkt->acked || pkt->lost) {
                continue;
            }

            pkt->acked = HG_RECOVERY_ACKED_NOW;
            hg_recovery_settle(r, pkt);

            if (pkt->ack_eliciting) {
                *eliciting = 1;
            }

            if (count == 0 || pn > *largest) {
                *largest = pn;
            }

            count++;
        }
    }

    return count;
}


/* RFC 9002 5.3, the handshake being confirmed once packets carry frames */
static void
hg_recovery_update_rtt(hg_recovery_t *r, hg_time_t ack_delay, hg_time_t now)
{
    hg_time_t  latest, adjusted, diff;

    latest = r->latest_rtt;

    if (!r->has_rtt_sample) {
        r->min_rtt = latest;
        r->smoothed_rtt = latest;
        r->rttvar = latest / 2;
        r->has_rtt_sample = 1;
        r->first_rtt_sample = now;
        return;
    }

    if (latest < r->min_rtt) {
        r->min_rtt = latest;
    }

    if (ack_delay > r->max_ack_delay) {
        ack_delay = r->max_ack_delay;
    }

    /* the peer's delay is trusted only while it keeps rtt above min_rtt */
    adjusted = latest;
    if (latest >= r->min_rtt + ack_delay) {
        adjusted = latest - ack_delay;
    }

    diff = r->smoothed_rtt > adjusted ? r->smoothed_rtt - adjusted
                                      : adjusted - r->smoothed_rtt;

    r->rttvar = (3 * r->rttvar + diff) / 4;
    r->smoothed_rtt = (7 * r->smoothed_rtt + adjusted) / 8;
}


/*
 * RFC 9002 DetectAndRemoveLostPackets and OnPacketsLost: declares lost
 * every packet at or below the largest acknowledged that is 3 numbers
 * behind it or was sent a loss delay ago, rearms loss_time for the rest,
 * signals one congestion event, and looks for persistent congestion.
 */
static void
hg_recovery_detect_lost(hg_recovery_t *r, hg_time_t now)
{
    int                persistent;
    uint64_t           pn, end, lost_in_flight, events;
    hg_time_t          loss_delay, deadline, last_lost_sent, span_start,
                       persistent_duration;
    hg_sent_packet_t  *pkt;

    r->loss_time = HG_TIME_INFINITE;

    if (r->largest_acked == UINT64_MAX) {
        return;
    }

    /*
     * 9/8 of the larger RTT estimate (more once reordering was seen),
     * never below the timer granularity
     */
    loss_delay = r->latest_rtt > r->smoothed_rtt ? r->latest_rtt
                                                 : r->smoothed_rtt;
    loss_delay += loss_delay * r->time_eighths / 8;
    if (loss_delay < HG_GRANULARITY) {
        loss_delay = HG_GRANULARITY;
    }

    persistent_duration = hg_recovery_pto(r)
                          * HG_PERSISTENT_CONGESTION_THRESHOLD;

    lost_in_flight = 0;
    persistent = 0;
    last_lost_sent = 0;
    span_start = HG_TIME_INFINITE;

    end = r->largest_acked + 1;

    for (pn = r->first_pn; pn < end; pn++) {
        pkt = hg_recovery_slot(r, pn);

        if (pkt->acked) {
            /* a delivered packet inside the span disproves the outage */
            span_start = HG_TIME_INFINITE;
            continue;
        }

        if (pkt->lost) {
            continue;
        }

        deadline = pkt->time_sent + loss_delay;

        if (deadline > now && r->largest_acked < pn + r->packet_threshold) {
            if (deadline < r->loss_time) {
                r->loss_time = deadline;
            }
            continue;
        }

        pkt->lost = 1;
        hg_recovery_settle(r, pkt);
        r->packets_lost++;
        hg_recovery_log_loss(r, pkt);

        if (pkt->in_flight) {
            lost_in_flight++;
            if (pkt->time_sent > last_lost_sent) {
                last_lost_sent = pkt->time_sent;
            }
        }

        /* RFC 9002 7.6.2: ack-eliciting packets sent after an RTT sample */
        if (pkt->ack_eliciting && r->has_rtt_sample
            && pkt->time_sent > r->first_rtt_sample)
        {
            if (span_start == HG_TIME_INFINITE) {
                span_start = pkt->time_sent;

            } else if (pkt->time_sent - span_start > persistent_duration) {
                persistent = 1;
            }
        }

        if (r->cb.on_lost) {
            r->cb.on_lost(r->cb.ctx, pkt);
        }
    }

    if (lost_in_flight) {
        events = r->cc->congestion_events;
        r->cc->ops->on_congestion_event(r->cc, last_lost_sent, now);

        if (r->cc->congestion_events != events) {
            r->event_losses = 0;
            r->event_spurious = 0;
        }
        r->event_losses += lost_in_flight;
    }

    if (persistent) {
        r->cc->ops->on_persistent_congestion(r->cc);
    }
}


static void
hg_recovery_log_loss(hg_recovery_t *r, const hg_sent_packet_t *pkt)
{
    size_t  i;

    if (r->lost_log_n < HG_LOST_LOG) {
        i = r->lost_log_n++;
    } else {
        /* the oldest loss is forgotten */
        memmove(&r->lost_log[0], &r->lost_log[1],
                (HG_LOST_LOG - 1) * sizeof(r->lost_log[0]));
        i = HG_LOST_LOG - 1;
    }

    r->lost_log[i].pn = pkt->pn;
    r->lost_log[i].distance = r->largest_acked - pkt->pn;
    r->lost_log[i].sent = pkt->time_sent;
}


static int
hg_ack_covers(const hg_ack_t *ack, uint64_t pn)
{
    size_t  i;

    for (i = 0; i < ack->nranges; i++) {
        if (pn >= ack->ranges[i].hi) {
            return 0;
        }

        if (pn >= ack->ranges[i].lo) {
            return 1;
        }
    }

    return 0;
}


/*
 * A packet we declared lost is acknowledged after all: it was reordered.
 * Tolerate that much reordering from now on, and when every loss of the
 * current congestion event was of this kind, undo the event.
 */
static void
hg_recovery_find_spurious(hg_recovery_t *r, const hg_ack_t *ack)
{
    size_t  i, j;

    for (i = 0, j = 0; i < r->lost_log_n; i++) {

        if (!hg_ack_covers(ack, r->lost_log[i].pn)) {
            r->lost_log[j++] = r->lost_log[i];
            continue;
        }

        r->spurious_losses++;

        if (r->lost_log[i].distance + 1 > r->packet_threshold) {
            r->packet_threshold = r->lost_log[i].distance + 1
                                  < HG_MAX_PACKET_THRESHOLD
                                  ? (uint32_t) r->lost_log[i].distance + 1
                                  : HG_MAX_PACKET_THRESHOLD;
        }

        if (r->time_eighths < 8) {
            r->time_eighths *= 2;
        }

        if (r->cc->recovery_start != HG_TIME_INFINITE
            && r->lost_log[i].sent <= r->cc->recovery_start)
        {
            r->event_spurious++;
        }
    }

    r->lost_log_n = j;

    if (r->event_losses && r->event_spurious >= r->event_losses) {
        r->event_losses = 0;
        r->event_spurious = 0;
        r->cc->ops->on_spurious_congestion(r->cc);
    }
}


/* RFC 9002 OnPacketsAcked, in ascending packet number order */
static void
hg_recovery_report_acked(hg_recovery_t *r, const hg_ack_t *ack,
    hg_time_t now)
{
    size_t             i;
    uint64_t           pn, lo;
    hg_sent_packet_t  *pkt;

    for (i = ack->nranges; i-- > 0; /* void */) {
        lo = ack->ranges[i].lo > r->first_pn ? ack->ranges[i].lo : r->first_pn;

        for (pn = lo; pn < ack->ranges[i].hi; pn++) {
            pkt = hg_recovery_slot(r, pn);

            if (pkt->acked != HG_RECOVERY_ACKED_NOW) {
                continue;
            }

            pkt->acked = 1;

            if (pkt->in_flight) {
                r->cc->ops->on_acked(r->cc, pkt->size, pkt->time_sent, now);
            }

            if (r->cb.on_acked) {
                r->cb.on_acked(r->cb.ctx, pkt);
            }
        }
    }
}


/* a packet leaves flight, acknowledged or lost */
static void
hg_recovery_settle(hg_recovery_t *r, hg_sent_packet_t *pkt)
{
    r->outstanding--;

    if (pkt->ack_eliciting) {
        r->ack_eliciting_in_flight--;
    }

    if (pkt->in_flight) {
        r->cc->bytes_in_flight -= pkt->size < r->cc->bytes_in_flight
                                  ? pkt->size : r->cc->bytes_in_flight;
    }
}


/* frees the ring slots of the settled packets at the old end */
static void
hg_recovery_advance(hg_recovery_t *r)
{
    hg_sent_packet_t  *pkt;

    while (r->first_pn < r->next_pn) {
        pkt = hg_recovery_slot(r, r->first_pn);

        if (!pkt->acked && !pkt->lost) {
            break;
        }

        r->first_pn++;
    }
}


void
hg_recovery_set_initial_rtt(hg_recovery_t *r, hg_time_t rtt)
{
    if (r->has_rtt_sample) {
        return;
    }

    if (rtt < HG_GRANULARITY) {
        rtt = HG_GRANULARITY;
    }

    r->smoothed_rtt = rtt;
    r->rttvar = rtt / 2;
}


hg_time_t
hg_recovery_pto(const hg_recovery_t *r)
{
    hg_time_t  var;

    var = 4 * r->rttvar;
    if (var < HG_GRANULARITY) {
        var = HG_GRANULARITY;
    }

    return r->smoothed_rtt + var + r->max_ack_delay;
}


/* the last ack-eliciting send plus the PTO doubled pto_count times */
static hg_time_t
hg_recovery_pto_deadline(const hg_recovery_t *r)
{
    hg_time_t  period;

    period = hg_recovery_pto(r);

    if (r->pto_count >= 64 || period > (HG_TIME_INFINITE >> r->pto_count)) {
        return HG_TIME_INFINITE;
    }

    period <<= r->pto_count;

    if (period >= HG_TIME_INFINITE - r->time_of_last_ack_eliciting) {
        return HG_TIME_INFINITE;
    }

    return r->time_of_last_ack_eliciting + period;
}


hg_time_t
hg_recovery_deadline(const hg_recovery_t *r, hg_time_t now)
{
    (void) now;

    if (r->loss_time != HG_TIME_INFINITE) {
        return r->loss_time;
    }

    if (r->ack_eliciting_in_flight == 0) {
        return HG_TIME_INFINITE;
    }

    return hg_recovery_pto_deadline(r);
}


int
hg_recovery_on_timeout(hg_recovery_t *r, hg_time_t now)
{
    hg_time_t  deadline;

    deadline = hg_recovery_deadline(r, now);

    /* the connection may poll all its timers on any one of them */
    if (deadline == HG_TIME_INFINITE || now < deadline) {
        return 0;
    }

    if (r->loss_time != HG_TIME_INFINITE) {
        hg_recovery_detect_lost(r, now);
        hg_recovery_advance(r);
        return 0;
    }

    r->pto_count++;
    r->pto_fired++;

    /* RFC 9002 6.2.4: two probes make a single lost probe survivable */
    return 2;
}


uint64_t
hg_recovery_in_flight_packets(const hg_recovery_t *r)
{
    return r->outstanding;
}


const hg_sent_packet_t *
hg_recovery_oldest_unacked(const hg_recovery_t *r)
{
    uint64_t           pn;
    hg_sent_packet_t  *pkt;

    for (pn = r->first_pn; pn < r->next_pn; pn++) {
        pkt = hg_recovery_slot(r, pn);

        if (!pkt->acked && !pkt->lost && pkt->ack_eliciting) {
            return pkt;
        }
    }

    return NULL;
}
