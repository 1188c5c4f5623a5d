/*
 * hg_recovery: RTT estimation, loss by packet and time threshold, the
 * probe timeout and its backoff, persistent congestion, ACK validation,
 * and the sent-packet ring (RFC 9002).
 */

#include <stdlib.h>

#include "hg_recovery.h"
#include "tap.h"


#define MSS         1200
#define MAD         (25 * HG_MS)            /* the peer's max_ack_delay */
#define LOG_PNS     64


/* what the callbacks saw */
typedef struct {
    uint64_t  acked[LOG_PNS];
    uint64_t  lost[LOG_PNS];
    size_t    nacked;
    size_t    nlost;
    int       frames_intact;                /* frame value == pn for all */
} test_log_t;


typedef struct {
    hg_cc_t        cc;
    hg_recovery_t  r;
    test_log_t     log;
} test_conn_t;


static void
test_on_acked(void *ctx, const hg_sent_packet_t *pkt)
{
    test_log_t  *log = ctx;

    if (log->nacked < LOG_PNS) {
        log->acked[log->nacked] = pkt->pn;
    }
    log->nacked++;

    if (pkt->nframes != 1 || pkt->frames[0].value != pkt->pn) {
        log->frames_intact = 0;
    }
}


static void
test_on_lost(void *ctx, const hg_sent_packet_t *pkt)
{
    test_log_t  *log = ctx;

    if (log->nlost < LOG_PNS) {
        log->lost[log->nlost] = pkt->pn;
    }
    log->nlost++;
}


static void
test_setup(test_conn_t *t, size_t max_packets)
{
    hg_recovery_cb_t  cb;

    memset(&t->log, 0, sizeof(t->log));
    t->log.frames_intact = 1;

    cb.on_acked = test_on_acked;
    cb.on_lost = test_on_lost;
    cb.ctx = &t->log;

    hg_cc_newreno_init(&t->cc, MSS);

    if (hg_recovery_init(&t->r, &t->cc, MAD, max_packets, &cb) != 0) {
        tap_diag("hg_recovery_init failed");
        exit(1);
    }
}


/* a packet of MSS bytes; ack-eliciting ones carry a PING, others an ACK */
static uint64_t
test_send(test_conn_t *t, int eliciting, hg_time_t now)
{
    hg_sent_packet_t  *pkt;

    pkt = hg_recovery_next_slot(&t->r);
    if (pkt == NULL) {
        return UINT64_MAX;
    }

    pkt->size = MSS;
    pkt->ack_eliciting = eliciting;
    pkt->in_flight = eliciting;
    pkt->nframes = 1;
    pkt->frames[0].type = eliciting ? HG_SF_PING : HG_SF_ACK;
    pkt->frames[0].value = pkt->pn;

    hg_recovery_on_sent(&t->r, pkt, now);

    return t->r.next_pn - 1;
}


/* an ACK of [lo, hi) and optionally [lo2, hi2) below it */
static int
test_ack2(test_conn_t *t, uint64_t lo, uint64_t hi, uint64_t lo2,
    uint64_t hi2, hg_time_t ack_delay, hg_time_t now)
{
    hg_ack_t    ack;
    hg_range_t  ranges[2];

    ranges[0].lo = lo;
    ranges[0].hi = hi;
    ranges[1].lo = lo2;
    ranges[1].hi = hi2;

    ack.largest = hi - 1;
    ack.ack_delay = ack_delay;
    ack.nranges = lo2 < hi2 ? 2 : 1;
    ack.ranges = ranges;

    return hg_recovery_on_ack(&t->r, &ack, now);
}


static int
test_ack(test_conn_t *t, uint64_t lo, uint64_t hi, hg_time_t ack_delay,
    hg_time_t now)
{
    return test_ack2(t, lo, hi, 0, 0, ack_delay, now);
}


static void
test_teardown(test_conn_t *t)
{
    hg_recovery_free(&t->r);
}


static void
test_initial_state(void)
{
    test_conn_t    t;
    hg_recovery_t  other;

    test_setup(&t, 1024);

    tap_is_int(t.r.smoothed_rtt, HG_INITIAL_RTT, "srtt starts at 333 ms");
    tap_is_int(t.r.rttvar, HG_INITIAL_RTT / 2, "rttvar starts at half that");
    tap_is_int(hg_recovery_pto(&t.r), 333000 + 666000 + MAD,
               "initial PTO: srtt + 4 * rttvar + max_ack_delay");
    tap_is_int(hg_recovery_deadline(&t.r, 0), HG_TIME_INFINITE,
               "no timer with nothing sent");
    tap_ok(hg_recovery_init(&other, &t.cc, MAD, 0, NULL) == -1,
           "max_packets of 0 is refused");

    test_teardown(&t);
}


/*
 * An idle session's samples on a 0.1 ms path: keepalive PINGs acked after
 * the peer's full max_ack_delay, which it reports. Taken off, the samples
 * are the path's; left on, they would read 25.1 ms.
 */
static void
test_rtt_delayed_acks(void)
{
    int          i;
    hg_time_t    t0;
    test_conn_t  t;

    test_setup(&t, 1024);

    /* a prompt first sample (the session handshake's) */
    test_send(&t, 1, 0);
    test_ack(&t, 0, 1, 0, 100);
    tap_is_int(t.r.min_rtt, 100, "idle path: a prompt first sample, "
               "min_rtt 0.1 ms");

    for (i = 1; i <= 8; i++) {
        t0 = (hg_time_t) i * 5 * HG_SEC;
        test_send(&t, 1, t0);
        test_ack(&t, i, i + 1, MAD, t0 + MAD + 100);
    }

    tap_is_int(t.r.latest_rtt, MAD + 100, "a delayed ACK's raw sample is "
               "25.1 ms");
    tap_is_int(t.r.smoothed_rtt, 100, "with its 25 ms ack delay taken off, "
               "srtt stays 0.1 ms");
    tap_is_int(t.r.min_rtt, 100, "and min_rtt 0.1 ms");
    tap_ok(t.r.rttvar < 100, "rttvar settles below the path's rtt (%llu us)",
           (unsigned long long) t.r.rttvar);

    test_teardown(&t);
}


static void
test_rtt_estimator(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    /* first sample: the ack delay is ignored, rttvar = sample / 2 */
    test_send(&t, 1, 0);
    test_ack(&t, 0, 1, 10 * HG_MS, 100 * HG_MS);
    tap_ok(t.r.has_rtt_sample, "an ACK of an ack-eliciting packet samples");
    tap_is_int(t.r.latest_rtt, 100000, "latest_rtt 100 ms");
    tap_is_int(t.r.smoothed_rtt, 100000, "first srtt = sample");
    tap_is_int(t.r.rttvar, 50000, "first rttvar = sample / 2");
    tap_is_int(t.r.min_rtt, 100000, "min_rtt = sample");

    /* 130 ms minus a plausible 10 ms delay: adjusted 120 ms */
    test_send(&t, 1, 200 * HG_MS);
    test_ack(&t, 1, 2, 10 * HG_MS, 330 * HG_MS);
    tap_is_int(t.r.latest_rtt, 130000, "latest_rtt 130 ms");
    tap_is_int(t.r.smoothed_rtt, 102500, "srtt = (7 * 100 + 120) / 8 ms");
    tap_is_int(t.r.rttvar, 42500, "rttvar = (3 * 50 + |100 - 120|) / 4 ms");
    tap_is_int(t.r.min_rtt, 100000, "min_rtt keeps the minimum");

    /* a 100 ms ack delay is capped at max_ack_delay (25 ms) */
    test_send(&t, 1, 400 * HG_MS);
    test_ack(&t, 2, 3, 100 * HG_MS, 560 * HG_MS);
    tap_is_int(t.r.smoothed_rtt, 106562,
               "ack delay capped: srtt = (7 * 102.5 + 160 - 25) / 8 ms");
    tap_is_int(t.r.rttvar, 40000, "rttvar = (3 * 42.5 + 32.5) / 4 ms");

    /* 110 ms - 20 ms would undercut min_rtt: the delay is not subtracted */
    test_send(&t, 1, 600 * HG_MS);
    test_ack(&t, 3, 4, 20 * HG_MS, 710 * HG_MS);
    tap_is_int(t.r.smoothed_rtt, 106991,
               "implausible delay ignored: srtt = (7 * 106.562 + 110) / 8");
    tap_is_int(t.r.rttvar, 30859, "rttvar = (3 * 40 + 3.438) / 4 ms");

    test_send(&t, 1, 800 * HG_MS);
    test_ack(&t, 4, 5, 0, 880 * HG_MS);
    tap_is_int(t.r.min_rtt, 80000, "a lower sample lowers min_rtt");
    tap_is_int(t.r.smoothed_rtt, 103617, "srtt = (7 * 106.991 + 80) / 8");
    tap_is_int(t.r.rttvar, 29892, "rttvar = (3 * 30.859 + 26.991) / 4");
    tap_is_int(hg_recovery_pto(&t.r), 103617 + 4 * 29892 + MAD,
               "PTO = srtt + 4 * rttvar + max_ack_delay");

    test_teardown(&t);
}


static void
test_rtt_sample_rules(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_ack(&t, 0, 1, 0, 100 * HG_MS);

    /* an ACK-only packet is not acknowledged promptly: no sample */
    test_send(&t, 0, 200 * HG_MS);
    test_ack(&t, 0, 2, 0, 900 * HG_MS);
    tap_is_int(t.r.latest_rtt, 100000,
               "no sample when nothing newly acked is ack-eliciting");

    /* the largest acknowledged must be newly acknowledged */
    test_send(&t, 1, 1000 * HG_MS);
    test_send(&t, 1, 1000 * HG_MS);
    test_ack(&t, 3, 4, 0, 1050 * HG_MS);
    tap_is_int(t.r.latest_rtt, 50000, "the largest gives a sample");
    test_ack2(&t, 3, 4, 2, 3, 0, 1500 * HG_MS);
    tap_is_int(t.r.latest_rtt, 50000,
               "an older packet acked later gives none");

    tap_is_int(t.log.nacked, 4, "every packet acked once");
    tap_is_int(t.r.min_rtt, 50000, "min_rtt from the samples only");

    test_teardown(&t);
}


static void
test_loss_packet_threshold(void)
{
    uint64_t     i;
    test_conn_t  t;

    test_setup(&t, 1024);

    for (i = 0; i < 5; i++) {
        test_send(&t, 1, 0);
    }
    tap_is_int(t.cc.bytes_in_flight, 5 * MSS, "five packets in flight");

    /* 3 is acked: 0 is three behind it, 1 and 2 are not yet */
    test_ack(&t, 3, 4, 0, 100 * HG_MS);
    tap_is_int(t.log.nlost, 1, "one packet lost by packet threshold");
    tap_is_int(t.log.lost[0], 0, "it is packet 0");
    tap_is_int(t.log.nacked, 1, "packet 3 acked");
    tap_is_int(t.r.packets_lost, 1, "packets_lost counts it");
    tap_is_int(t.cc.bytes_in_flight, 3 * MSS,
               "acked and lost bytes leave flight");
    tap_is_int(hg_recovery_in_flight_packets(&t.r), 3, "three outstanding");
    tap_is_int(t.cc.congestion_events, 1, "one congestion event");
    tap_is_int(t.cc.cwnd, 6000,
               "window halved; the ACK's own bytes did not grow it first");
    tap_is_int(t.r.loss_time, 112500,
               "loss timer armed at 9/8 rtt after the oldest survivor");

    test_ack(&t, 3, 5, 0, 101 * HG_MS);
    tap_is_int(t.log.nlost, 2, "packet 1 is now 3 behind the largest");
    tap_is_int(t.log.lost[1], 1, "it is packet 1");
    tap_is_int(t.cc.congestion_events, 1,
               "a loss sent before the recovery started: no new event");
    tap_is_int(t.cc.cwnd, 6000, "window unchanged");
    tap_is_int(t.r.first_pn, 2, "the ring's old end moves past settled");

    test_teardown(&t);
}


static void
test_loss_time_threshold(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_send(&t, 1, 0);

    test_ack(&t, 1, 2, 0, 100 * HG_MS);
    tap_is_int(t.log.nlost, 0, "one behind: not lost yet");
    tap_is_int(hg_recovery_deadline(&t.r, 100 * HG_MS), 112500,
               "deadline is the loss time, 9/8 * 100 ms after sending");

    tap_is_int(hg_recovery_on_timeout(&t.r, 112499), 0,
               "an early call does nothing");
    tap_is_int(t.log.nlost, 0, "nothing lost before the loss time");

    tap_is_int(hg_recovery_on_timeout(&t.r, 112500), 0,
               "the loss timer asks for no probes");
    tap_is_int(t.log.nlost, 1, "the timer declared packet 0 lost");
    tap_is_int(t.log.lost[0], 0, "it is packet 0");
    tap_is_int(t.r.loss_time, HG_TIME_INFINITE, "loss time cleared");
    tap_is_int(hg_recovery_deadline(&t.r, 112500), HG_TIME_INFINITE,
               "nothing in flight: no timer");
    tap_is_int(t.cc.congestion_events, 1, "the timer's loss is congestion");
    tap_is_int(t.cc.bytes_in_flight, 0, "flight empty");

    test_teardown(&t);
}


static void
test_loss_time_granularity(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    /* a 100 us path: 9/8 of it is below the 1 ms granularity */
    test_send(&t, 1, 0);
    test_send(&t, 1, 0);
    test_ack(&t, 1, 2, 0, 100);
    tap_is_int(t.r.loss_time, HG_GRANULARITY,
               "the loss delay is never below the timer granularity");

    test_teardown(&t);
}


static void
test_pto(void)
{
    hg_time_t    pto, t0;
    test_conn_t  t;

    test_setup(&t, 1024);

    t0 = 1000;
    pto = hg_recovery_pto(&t.r);

    test_send(&t, 1, t0);
    tap_is_int(hg_recovery_deadline(&t.r, t0), t0 + pto,
               "PTO armed from the last ack-eliciting send");

    tap_is_int(hg_recovery_on_timeout(&t.r, t0 + pto - 1), 0,
               "no probe before the PTO");
    tap_is_int(hg_recovery_on_timeout(&t.r, t0 + pto), 2,
               "the PTO asks for two probes");
    tap_is_int(t.r.pto_count, 1, "pto_count 1");
    tap_is_int(t.r.pto_fired, 1, "pto_fired 1");
    tap_is_int(t.log.nlost, 0, "a PTO declares nothing lost");
    tap_is_int(hg_recovery_deadline(&t.r, t0 + pto), t0 + 2 * pto,
               "backoff doubles the period");

    /* the probes restart the timer from their send time */
    test_send(&t, 1, t0 + pto);
    test_send(&t, 1, t0 + pto);
    tap_is_int(hg_recovery_deadline(&t.r, t0 + pto), t0 + pto + 2 * pto,
               "after the probes: their send time + 2 * PTO");

    tap_is_int(hg_recovery_on_timeout(&t.r, t0 + 3 * pto), 2,
               "the second PTO asks for two probes");
    tap_is_int(hg_recovery_deadline(&t.r, t0 + 3 * pto), t0 + pto + 4 * pto,
               "then 4 * PTO");

    tap_is_int(hg_recovery_on_timeout(&t.r, t0 + 5 * pto), 2,
               "the third PTO");
    tap_is_int(hg_recovery_deadline(&t.r, t0 + 5 * pto), t0 + pto + 8 * pto,
               "then 8 * PTO");
    tap_is_int(t.r.pto_fired, 3, "three PTOs fired");

    /* an ACK of a probe ends the backoff */
    test_ack(&t, 2, 3, 0, t0 + 5 * pto + 10);
    tap_is_int(t.r.pto_count, 0, "an ACK resets pto_count");
    tap_is_int(t.r.pto_fired, 3, "pto_fired is a statistic: it stays");

    test_teardown(&t);
}


static void
test_pto_idle(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 0, 0);
    tap_is_int(hg_recovery_deadline(&t.r, 0), HG_TIME_INFINITE,
               "an ACK-only packet arms no PTO");
    tap_is_int(hg_recovery_on_timeout(&t.r, 10 * HG_SEC), 0,
               "and a timeout call finds nothing to do");
    tap_is_int(t.r.pto_count, 0, "pto_count untouched");

    test_send(&t, 1, 1 * HG_SEC);
    tap_ok(hg_recovery_deadline(&t.r, 0) != HG_TIME_INFINITE,
           "an ack-eliciting packet arms it");

    test_ack(&t, 0, 2, 0, 1 * HG_SEC + 50 * HG_MS);
    tap_is_int(hg_recovery_deadline(&t.r, 0), HG_TIME_INFINITE,
               "all acknowledged: disarmed");
    tap_ok(hg_recovery_oldest_unacked(&t.r) == NULL,
           "no unacknowledged data to probe with");

    test_teardown(&t);
}


static void
test_oldest_unacked(void)
{
    test_conn_t              t;
    const hg_sent_packet_t  *pkt;

    test_setup(&t, 1024);

    test_send(&t, 0, 0);
    test_send(&t, 1, 0);
    test_send(&t, 1, 0);
    test_ack(&t, 1, 2, 0, 50 * HG_MS);

    pkt = hg_recovery_oldest_unacked(&t.r);
    tap_ok(pkt != NULL && pkt->pn == 2,
           "oldest unacked skips ACK-only and acknowledged packets");

    test_teardown(&t);
}


static void
test_persistent_congestion(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_ack(&t, 0, 1, 0, 100 * HG_MS);

    /* 1..3 span 1.1 s, more than 3 * PTO (3 * 275 ms); 4 gets through */
    test_send(&t, 1, 200 * HG_MS);
    test_send(&t, 1, 700 * HG_MS);
    test_send(&t, 1, 1300 * HG_MS);
    test_send(&t, 1, 1400 * HG_MS);
    test_ack(&t, 4, 5, 0, 1500 * HG_MS);

    tap_is_int(t.log.nlost, 3, "three packets lost");
    tap_is_int(t.cc.congestion_events, 1, "one congestion event");
    tap_is_int(t.cc.ssthresh, 13200 / 2, "ssthresh halved");
    tap_is_int(t.cc.recovery_start, HG_TIME_INFINITE,
               "persistent congestion leaves recovery");

    /* losses are handled before acks, so packet 4 then slow-starts */
    tap_is_int(t.cc.cwnd, 2 * MSS + MSS,
               "the window collapsed to 2 * mss, then grew by the ACK");

    test_teardown(&t);
}


static void
test_persistent_congestion_interrupted(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_ack(&t, 0, 1, 0, 100 * HG_MS);

    /* as above, but packet 2 was delivered: the path was not dead */
    test_send(&t, 1, 200 * HG_MS);
    test_send(&t, 1, 700 * HG_MS);
    test_send(&t, 1, 1300 * HG_MS);
    test_send(&t, 1, 1400 * HG_MS);
    test_ack2(&t, 4, 5, 2, 3, 0, 1500 * HG_MS);

    tap_is_int(t.log.nlost, 2, "two packets lost");
    tap_is_int(t.cc.cwnd, 13200 / 2,
               "an acknowledged packet between them: only halved");

    test_teardown(&t);
}


static void
test_persistent_congestion_needs_sample(void)
{
    test_conn_t  t;

    test_setup(&t, 1024);

    /* the losses span 1.5 s, but were sent before any RTT sample */
    test_send(&t, 1, 0);
    test_send(&t, 1, 1500 * HG_MS);
    test_send(&t, 1, 2 * HG_SEC);
    test_send(&t, 1, 2 * HG_SEC);
    test_ack(&t, 3, 4, 0, 2 * HG_SEC + 100 * HG_MS);

    tap_is_int(t.log.nlost, 2, "two packets lost");
    tap_is_int(t.cc.cwnd, 6000,
               "no persistent congestion from packets sent before a sample");

    test_teardown(&t);
}


static void
test_ack_validation(void)
{
    hg_ack_t     ack;
    hg_range_t   ranges[2];
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_send(&t, 1, 0);
    test_send(&t, 1, 0);

    tap_is_int(test_ack(&t, 0, 5, 0, 10 * HG_MS), -1,
               "an ACK of never-sent packet numbers is refused");
    tap_is_int(test_ack(&t, 3, 4, 0, 10 * HG_MS), -1,
               "even one past the last sent");
    tap_is_int(t.log.nacked, 0, "nothing was acknowledged");
    tap_is_int(t.cc.bytes_in_flight, 3 * MSS, "flight untouched");
    tap_is_int(t.r.largest_acked, UINT64_MAX, "largest_acked untouched");

    ranges[0].lo = 0;
    ranges[0].hi = 1;
    ranges[1].lo = 1;
    ranges[1].hi = 3;
    ack.largest = 0;
    ack.ack_delay = 0;
    ack.nranges = 2;
    ack.ranges = ranges;
    tap_is_int(hg_recovery_on_ack(&t.r, &ack, 10 * HG_MS), -1,
               "ascending ranges are refused");

    ack.largest = 1;
    ack.nranges = 1;
    tap_is_int(hg_recovery_on_ack(&t.r, &ack, 10 * HG_MS), -1,
               "a largest outside the first range is refused");

    ack.nranges = 0;
    tap_is_int(hg_recovery_on_ack(&t.r, &ack, 10 * HG_MS), -1,
               "an ACK without ranges is refused");

    tap_is_int(test_ack(&t, 0, 3, 0, 10 * HG_MS), 0, "a valid ACK passes");
    tap_is_int(t.log.nacked, 3, "and acknowledges");

    test_teardown(&t);
}


static void
test_duplicate_ack(void)
{
    hg_time_t    srtt;
    uint64_t     cwnd;
    test_conn_t  t;

    test_setup(&t, 1024);

    test_send(&t, 1, 0);
    test_send(&t, 1, 0);
    test_send(&t, 1, 0);
    test_ack(&t, 0, 3, 0, 100 * HG_MS);

    srtt = t.r.smoothed_rtt;
    cwnd = t.cc.cwnd;

    tap_is_int(test_ack(&t, 0, 3, 0, 900 * HG_MS), 0,
               "a repeated ACK is accepted");
    tap_is_int(t.log.nacked, 3, "packets are reported acked once");
    tap_is_int(t.r.smoothed_rtt, srtt, "no RTT sample from it");
    tap_is_int(t.cc.cwnd, cwnd, "no window growth from it");
    tap_is_int(t.cc.bytes_in_flight, 0, "flight stays empty");
    tap_is_int(hg_recovery_in_flight_packets(&t.r), 0, "nothing tracked");

    /* an ACK for a packet already declared lost changes nothing */
    test_send(&t, 1, 1 * HG_SEC);
    test_send(&t, 1, 1 * HG_SEC);
    test_send(&t, 1, 1 * HG_SEC);
    test_send(&t, 1, 1 * HG_SEC);
    test_ack(&t, 6, 7, 0, 1 * HG_SEC + 100 * HG_MS);
    tap_is_int(t.log.nlost, 1, "packet 3 lost");
    test_ack(&t, 3, 4, 0, 2 * HG_SEC);
    tap_is_int(t.log.nacked, 4, "its late ACK is not reported");
    tap_is_int(t.log.nlost, 1, "nor is it lost twice");

    test_teardown(&t);
}


static void
test_ring_growth(void)
{
    uint64_t     i, pn;
    test_conn_t  t;

    test_setup(&t, 4096);

    tap_ok(t.r.ring == NULL && t.r.ring_cap == 0, "no ring before the "
           "first packet");

    test_send(&t, 1, 0);
    tap_is_int(t.r.ring_cap, 64, "the ring starts small");

    pn = 0;
    for (i = 1; i < 4096; i++) {
        pn = test_send(&t, 1, i);
        if (pn != i) {
            break;
        }
    }

    tap_is_int(pn, 4095, "4096 packets in flight");
    tap_is_int(t.r.ring_cap, 4096, "the ring doubled up to the cap");
    tap_is_int(hg_recovery_in_flight_packets(&t.r), 4096, "all tracked");
    tap_ok(hg_recovery_next_slot(&t.r) == NULL, "no slot past max_packets");
    tap_is_int(t.cc.bytes_in_flight, 4096 * MSS, "bytes in flight");

    /* all but the oldest arrive: it is lost, the ring drains */
    test_ack(&t, 1, 4096, 0, 5000);
    tap_is_int(t.log.nacked, 4095, "4095 acknowledged");
    tap_ok(t.log.frames_intact, "every record survived the regrowth");
    tap_is_int(t.log.nlost, 1, "the oldest lost");
    tap_is_int(t.r.first_pn, 4096, "the ring is empty");
    tap_is_int(t.cc.bytes_in_flight, 0, "nothing in flight");
    tap_ok(hg_recovery_next_slot(&t.r) != NULL, "slots free again");

    test_teardown(&t);
}


static void
test_ring_cap_not_power_of_two(void)
{
    uint64_t     i;
    test_conn_t  t;

    test_setup(&t, 1000);

    for (i = 0; i < 1000; i++) {
        test_send(&t, 1, i);
    }

    tap_ok(hg_recovery_next_slot(&t.r) == NULL,
           "max_packets of 1000 holds exactly 1000");
    tap_is_int(t.r.ring_cap, 1024, "in a ring of 1024");

    /* an unsettled oldest packet pins the ring even when newer are acked */
    test_ack(&t, 1, 3, 0, 2000);
    tap_is_int(hg_recovery_in_flight_packets(&t.r), 998, "two acked");
    tap_ok(hg_recovery_next_slot(&t.r) == NULL,
           "a slot is freed only at the old end");
    test_ack2(&t, 1, 3, 0, 1, 0, 2000);
    tap_is_int(t.r.first_pn, 3, "acking the oldest frees three");
    tap_ok(hg_recovery_next_slot(&t.r) != NULL, "so a slot is free");

    test_teardown(&t);
}


int
main(void)
{
    test_initial_state();
    test_rtt_estimator();
    test_rtt_delayed_acks();
    test_rtt_sample_rules();
    test_loss_packet_threshold();
    test_loss_time_threshold();
    test_loss_time_granularity();
    test_pto();
    test_pto_idle();
    test_oldest_unacked();
    test_persistent_congestion();
    test_persistent_congestion_interrupted();
    test_persistent_congestion_needs_sample();
    test_ack_validation();
    test_duplicate_ack();
    test_ring_growth();
    test_ring_cap_not_power_of_two();

    return tap_done();
}
