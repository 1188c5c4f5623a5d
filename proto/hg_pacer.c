/*
 * The pacer's token bucket (RFC 9002 7.7); see hg_cc.h.
 *
 * The rate, 1.25 * cwnd / srtt bytes per microsecond, is kept as the
 * fraction (5 * cwnd) / (4 * srtt): tokens grow by elapsed * 5 * cwnd
 * units, 4 * srtt units make a byte, and the remainder (credit) carries
 * over. Otherwise a sender polling every few microseconds at a low rate
 * would have each refill round down to nothing and never send.
 */

#include "hg_cc.h"


#define HG_PACER_BURST_PACKETS  10
#define HG_PACER_MIN_RTT        (1 * HG_MS)


static void hg_pacer_refill(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt,
    hg_time_t now);


void
hg_pacer_init(hg_pacer_t *p, size_t mss)
{
    p->burst = HG_PACER_BURST_PACKETS * (uint64_t) mss;
    p->tokens = p->burst;
    p->last = HG_TIME_INFINITE;
    p->credit = 0;
}


/* units per byte and units gained per microsecond */
static void
hg_pacer_rate(const hg_cc_t *cc, hg_time_t srtt, uint64_t *per_byte,
    uint64_t *per_us)
{
    if (srtt < HG_PACER_MIN_RTT) {
        srtt = HG_PACER_MIN_RTT;
    }

    *per_byte = 4 * srtt;
    *per_us = 5 * (cc->cwnd ? cc->cwnd : 1);
}


static void
hg_pacer_refill(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt,
    hg_time_t now)
{
    uint64_t  per_byte, per_us, need, elapsed, units;

    if (p->last == HG_TIME_INFINITE) {
        p->last = now;
        return;
    }

    if (now <= p->last) {
        return;
    }

    elapsed = now - p->last;
    p->last = now;

    need = p->burst - p->tokens;
    hg_pacer_rate(cc, srtt, &per_byte, &per_us);

    /* long enough to fill the bucket; also keeps the product in range */
    if (elapsed > need * per_byte / per_us) {
        p->tokens = p->burst;
        p->credit = 0;
        return;
    }

    units = elapsed * per_us + p->credit;
    p->tokens += units / per_byte;
    p->credit = units % per_byte;

    if (p->tokens >= p->burst) {
        p->tokens = p->burst;
        p->credit = 0;
    }
}


hg_time_t
hg_pacer_next(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt, size_t bytes,
    hg_time_t now)
{
    uint64_t  per_byte, per_us, want, units;

    hg_pacer_refill(p, cc, srtt, now);

    want = bytes < p->burst ? bytes : p->burst;

    if (p->tokens >= want) {
        return now;
    }

    hg_pacer_rate(cc, srtt, &per_byte, &per_us);

    units = (want - p->tokens) * per_byte;
    if (p->credit >= units) {
        return now;
    }

    units -= p->credit;

    return now + (units + per_us - 1) / per_us;
}


void
hg_pacer_on_sent(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt,
    size_t bytes, hg_time_t now)
{
    hg_pacer_refill(p, cc, srtt, now);

    /* probes may leave without tokens: the debt is forgiven, not carried */
    p->tokens = bytes < p->tokens ? p->tokens - bytes : 0;
}
