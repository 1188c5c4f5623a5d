/*
 * NewReno (RFC 9002 7.3, Appendix B) and the pacer: initial and minimum
 * windows, slow start, one reduction per recovery period, congestion
 * avoidance and its progress across a reduction, persistent congestion,
 * application-limited senders, and the pacer's rate and burst.
 */

#include <stdlib.h>

#include "hg_cc.h"
#include "tap.h"


#define MSS  1200
#define RTT  (100 * HG_MS)


/* one round trip: a window's worth of MSS packets sent, all acknowledged */
static void
test_round(hg_cc_t *cc, hg_time_t sent)
{
    uint64_t  i, n;

    n = cc->cwnd / MSS;
    for (i = 0; i < n; i++) {
        cc->ops->on_acked(cc, MSS, sent, sent + RTT);
    }
}


static void
test_initial_window(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, 1200);
    tap_is_int(cc.cwnd, 12000, "mss 1200: initial window 10 * mss");
    tap_is_int(cc.ssthresh, UINT64_MAX, "no ssthresh yet: slow start");
    tap_is_int(cc.bytes_in_flight, 0, "nothing in flight");

    hg_cc_newreno_init(&cc, 1452);
    tap_is_int(cc.cwnd, 14520, "mss 1452: 10 * mss");

    hg_cc_newreno_init(&cc, 1500);
    tap_is_int(cc.cwnd, 14720, "mss 1500: capped at 14720");

    hg_cc_newreno_init(&cc, 9000);
    tap_is_int(cc.cwnd, 18000, "mss 9000: at least 2 * mss");

    tap_is_int(hg_cc_init(&cc, "newreno", MSS), 0, "newreno by name");
    tap_is_str(cc.ops->name, "newreno", "named newreno");
    tap_is_int(hg_cc_init(&cc, NULL, MSS), 0, "newreno by default");
    tap_is_int(hg_cc_init(&cc, "cubic", MSS), -1, "unknown names refused");
}


static void
test_slow_start(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);

    test_round(&cc, 0);
    tap_is_int(cc.cwnd, 24000, "slow start: doubled after one round trip");
    test_round(&cc, RTT);
    tap_is_int(cc.cwnd, 48000, "doubled again");
    test_round(&cc, 2 * RTT);
    tap_is_int(cc.cwnd, 96000, "and again");
}


static void
test_recovery_period(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);

    cc.ops->on_congestion_event(&cc, 50 * HG_MS, 100 * HG_MS);
    tap_is_int(cc.cwnd, 6000, "a loss halves the window");
    tap_is_int(cc.ssthresh, 6000, "ssthresh is the halved window");
    tap_is_int(cc.recovery_start, 100 * HG_MS, "recovery starts now");
    tap_is_int(cc.congestion_events, 1, "one congestion event");

    cc.ops->on_congestion_event(&cc, 80 * HG_MS, 110 * HG_MS);
    cc.ops->on_congestion_event(&cc, 100 * HG_MS, 120 * HG_MS);
    tap_is_int(cc.cwnd, 6000,
               "losses sent before the recovery started: no reduction");
    tap_is_int(cc.congestion_events, 1, "and no new event");

    cc.ops->on_acked(&cc, MSS, 90 * HG_MS, 130 * HG_MS);
    tap_is_int(cc.cwnd, 6000, "no growth from packets sent before it");

    cc.ops->on_acked(&cc, MSS, 101 * HG_MS, 200 * HG_MS);
    tap_is_int(cc.acked_in_ca, MSS,
               "a packet sent after the loss counts, toward avoidance");
    tap_is_int(cc.cwnd, 6000, "which grows by mss per window acked");

    cc.ops->on_congestion_event(&cc, 150 * HG_MS, 250 * HG_MS);
    tap_is_int(cc.cwnd, 3000, "a later loss reduces again");
    tap_is_int(cc.congestion_events, 2, "second congestion event");
}


static void
test_congestion_avoidance(void)
{
    int       i, grew;
    uint64_t  before;
    hg_cc_t   cc;

    hg_cc_newreno_init(&cc, MSS);
    cc.ops->on_congestion_event(&cc, 0, 10);

    grew = 1;
    for (i = 0; i < 10; i++) {
        before = cc.cwnd;
        test_round(&cc, 1 * HG_SEC + i * RTT);
        if (cc.cwnd != before + MSS) {
            grew = 0;
        }
    }

    tap_ok(grew, "congestion avoidance: one mss per round trip");
    tap_is_int(cc.cwnd, 6000 + 10 * MSS, "ten round trips: ten mss");

    /* small packets: the byte counter loses no fraction of them */
    before = cc.cwnd;
    for (i = 0; i < 35; i++) {
        cc.ops->on_acked(&cc, 500, 3 * HG_SEC, 3 * HG_SEC + RTT);
    }
    tap_is_int(cc.cwnd, before, "17500 of 18000 bytes acked: no growth yet");
    cc.ops->on_acked(&cc, 500, 3 * HG_SEC, 3 * HG_SEC + RTT);
    tap_is_int(cc.cwnd, before + MSS, "a window's worth: one mss");
    tap_is_int(cc.acked_in_ca, 0, "the counter restarts");
}


/*
 * Progress toward the next mss survives a reduction, scaled with the
 * window: zeroing it lost half an mss of growth per congestion event.
 */
static void
test_progress_kept(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);
    cc.ops->on_congestion_event(&cc, 0, 10);
    tap_is_int(cc.cwnd, 6000, "avoidance at a 6000-byte window");

    cc.ops->on_acked(&cc, 3000, 1 * HG_SEC, 1 * HG_SEC + RTT);
    tap_is_int(cc.acked_in_ca, 3000, "half a window acknowledged");

    cc.ops->on_congestion_event(&cc, 2 * HG_SEC, 2 * HG_SEC);
    tap_is_int(cc.cwnd, 3000, "a loss halves the window");
    tap_is_int(cc.acked_in_ca, 1500,
               "and the progress with it: still half way to the next mss");

    cc.ops->on_acked(&cc, 1500, 3 * HG_SEC, 3 * HG_SEC + RTT);
    tap_is_int(cc.cwnd, 3000 + MSS, "the other half grows it");
}


static void
test_minimum_window(void)
{
    int      i;
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);

    for (i = 1; i <= 5; i++) {
        cc.ops->on_congestion_event(&cc, i * HG_SEC, i * HG_SEC + RTT);
    }
    tap_is_int(cc.cwnd, 2 * MSS, "repeated losses stop at 2 * mss");
    tap_is_int(cc.congestion_events, 5, "five congestion events");
}


static void
test_persistent_congestion(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);
    test_round(&cc, 0);
    test_round(&cc, RTT);

    cc.ops->on_congestion_event(&cc, 2 * RTT, 3 * RTT);
    cc.ops->on_persistent_congestion(&cc);
    tap_is_int(cc.cwnd, 2 * MSS, "persistent congestion: minimum window");
    tap_is_int(cc.ssthresh, 24000, "ssthresh from the congestion event");
    tap_is_int(cc.recovery_start, HG_TIME_INFINITE, "not in recovery");

    cc.ops->on_acked(&cc, MSS, 3 * RTT, 4 * RTT);
    tap_is_int(cc.cwnd, 3 * MSS, "slow start resumes below ssthresh");
}


static void
test_app_limited(void)
{
    hg_cc_t  cc;

    hg_cc_newreno_init(&cc, MSS);
    cc.app_limited = 1;

    test_round(&cc, 0);
    tap_is_int(cc.cwnd, 12000, "an application-limited sender: no growth");

    cc.app_limited = 0;
    test_round(&cc, RTT);
    tap_is_int(cc.cwnd, 24000, "growth resumes when it fills the window");
}


/* sends as fast as the pacer allows until `end`; returns packets sent */
static int
test_pace(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt, hg_time_t now,
    hg_time_t end)
{
    int  sent;

    sent = 0;
    for ( ;; ) {
        now = hg_pacer_next(p, cc, srtt, MSS, now);
        if (now >= end) {
            return sent;
        }
        hg_pacer_on_sent(p, cc, srtt, MSS, now);
        sent++;
    }
}


static void
test_pacer_burst(void)
{
    int         i, at_once;
    hg_cc_t     cc;
    hg_pacer_t  p;

    hg_cc_newreno_init(&cc, MSS);
    hg_pacer_init(&p, MSS);
    tap_is_int(p.burst, 10 * MSS, "the bucket holds ten packets");

    at_once = 0;
    for (i = 0; i < 11; i++) {
        if (hg_pacer_next(&p, &cc, RTT, MSS, 0) != 0) {
            break;
        }
        hg_pacer_on_sent(&p, &cc, RTT, MSS, 0);
        at_once++;
    }
    tap_is_int(at_once, 10, "a burst of ten leaves at once");

    /* 1.25 * 12000 bytes / 100 ms = 0.15 bytes/us: 1200 bytes in 8 ms */
    tap_is_int(hg_pacer_next(&p, &cc, RTT, MSS, 0), 8000,
               "the eleventh waits 8 ms");

    tap_is_int(test_pace(&p, &cc, RTT, 0, 10 * HG_SEC), 1249,
               "then one every 8 ms");

    tap_is_int(test_pace(&p, &cc, RTT, 60 * HG_SEC, 60 * HG_SEC + 1), 10,
               "after idling the bucket is full again, and no fuller");
}


static void
test_pacer_rate(void)
{
    hg_cc_t     cc;
    hg_pacer_t  p;

    hg_cc_newreno_init(&cc, MSS);
    hg_pacer_init(&p, MSS);

    /* 10 at once, then at 8, 16, ..., 992 ms: 1.25 * cwnd per RTT */
    tap_is_int(test_pace(&p, &cc, RTT, 0, 1 * HG_SEC), 10 + 124,
               "one second at 1.25 * cwnd / srtt");

    cc.cwnd = 24000;
    hg_pacer_init(&p, MSS);
    tap_is_int(test_pace(&p, &cc, RTT, 0, 1 * HG_SEC), 10 + 249,
               "twice the window: twice the rate");

    hg_pacer_init(&p, MSS);
    tap_is_int(test_pace(&p, &cc, 2 * RTT, 0, 1 * HG_SEC), 10 + 124,
               "twice the rtt: half the rate");

    /* srtt of 0 counts as 1 ms: 30 bytes/us */
    hg_pacer_init(&p, MSS);
    test_pace(&p, &cc, 0, 0, 1);
    tap_is_int(hg_pacer_next(&p, &cc, 0, MSS, 0), 40,
               "srtt is floored at 1 ms");

    hg_pacer_init(&p, MSS);
    test_pace(&p, &cc, RTT, 0, 1);
    tap_is_int(hg_pacer_next(&p, &cc, RTT, 20 * MSS, 0), 40000,
               "a packet larger than the bucket waits for a full one");
}


static void
test_pacer_polling(void)
{
    hg_time_t   now;
    hg_cc_t     cc;
    hg_pacer_t  p;

    hg_cc_newreno_init(&cc, MSS);
    hg_pacer_init(&p, MSS);
    test_pace(&p, &cc, RTT, 0, 1);

    /* each 1 us refill is 0.15 bytes: the fractions must add up */
    for (now = 1; now < 1 * HG_SEC; now++) {
        if (hg_pacer_next(&p, &cc, RTT, MSS, now) <= now) {
            break;
        }
    }

    tap_is_int(now, 8000, "polling every microsecond: still after 8 ms");
}


int
main(void)
{
    test_initial_window();
    test_slow_start();
    test_recovery_period();
    test_congestion_avoidance();
    test_progress_kept();
    test_minimum_window();
    test_persistent_congestion();
    test_app_limited();
    test_pacer_burst();
    test_pacer_rate();
    test_pacer_polling();

    return tap_done();
}
