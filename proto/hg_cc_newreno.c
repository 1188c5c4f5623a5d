/*
 * NewReno congestion control after RFC 9002 section 7 and Appendix B, and
 * the choice of controller by name; see hg_cc.h.
 */

#include <string.h>

#include "hg_cc.h"


/* RFC 9002 7.2: the initial window's floor in bytes */
#define HG_NEWRENO_INITIAL_FLOOR  14720


static void hg_cc_newreno_on_sent(hg_cc_t *cc, size_t bytes, hg_time_t now);
static void hg_cc_newreno_on_acked(hg_cc_t *cc, size_t bytes,
    hg_time_t sent_time, hg_time_t now);
static void hg_cc_newreno_on_congestion_event(hg_cc_t *cc,
    hg_time_t sent_time, hg_time_t now);
static void hg_cc_newreno_on_persistent_congestion(hg_cc_t *cc);
static void hg_cc_newreno_on_spurious_congestion(hg_cc_t *cc);


static const hg_cc_ops_t  hg_cc_newreno_ops = {
    "newreno",
    hg_cc_newreno_on_sent,
    hg_cc_newreno_on_acked,
    hg_cc_newreno_on_congestion_event,
    hg_cc_newreno_on_persistent_congestion,
    hg_cc_newreno_on_spurious_congestion
};


int
hg_cc_init(hg_cc_t *cc, const char *name, size_t mss)
{
    if (name == NULL || strcmp(name, hg_cc_newreno_ops.name) == 0) {
        hg_cc_newreno_init(cc, mss);
        return 0;
    }

    return -1;
}


void
hg_cc_newreno_init(hg_cc_t *cc, size_t mss)
{
    uint64_t  floor;

    memset(cc, 0, sizeof(*cc));

    cc->ops = &hg_cc_newreno_ops;
    cc->mss = mss;

    /* RFC 9002 7.2: min(10 * mss, max(14720, 2 * mss)) */
    floor = 2 * (uint64_t) mss;
    if (floor < HG_NEWRENO_INITIAL_FLOOR) {
        floor = HG_NEWRENO_INITIAL_FLOOR;
    }

    cc->cwnd = 10 * (uint64_t) mss;
    if (cc->cwnd > floor) {
        cc->cwnd = floor;
    }

    cc->ssthresh = UINT64_MAX;
    cc->recovery_start = HG_TIME_INFINITE;
}


static uint64_t
hg_cc_newreno_min_window(const hg_cc_t *cc)
{
    return 2 * (uint64_t) cc->mss;
}


/* RFC 9002 InCongestionRecovery */
static int
hg_cc_newreno_in_recovery(const hg_cc_t *cc, hg_time_t sent_time)
{
    return cc->recovery_start != HG_TIME_INFINITE
           && sent_time <= cc->recovery_start;
}


/* NewReno keeps no per-packet state; hg_recovery counts the bytes */
static void
hg_cc_newreno_on_sent(hg_cc_t *cc, size_t bytes, hg_time_t now)
{
    (void) cc;
    (void) bytes;
    (void) now;
}


static void
hg_cc_newreno_on_acked(hg_cc_t *cc, size_t bytes, hg_time_t sent_time,
    hg_time_t now)
{
    (void) now;

    /* RFC 9002 7.8: a window the sender does not fill proves nothing */
    if (cc->app_limited || hg_cc_newreno_in_recovery(cc, sent_time)) {
        return;
    }

    if (cc->cwnd < cc->ssthresh) {
        cc->cwnd += bytes;
        return;
    }

    /*
     * Congestion avoidance: one mss per window's worth of acknowledged
     * bytes. Counting bytes keeps the per-packet mss * bytes / cwnd from
     * truncating to nothing when the window is large.
     */
    cc->acked_in_ca += bytes;

    if (cc->acked_in_ca >= cc->cwnd) {
        cc->acked_in_ca -= cc->cwnd;
        cc->cwnd += cc->mss;
    }
}


static void
hg_cc_newreno_on_congestion_event(hg_cc_t *cc, hg_time_t sent_time,
    hg_time_t now)
{
    uint64_t  min_window;

    /* one reduction per round trip: losses from before it are old news */
    if (hg_cc_newreno_in_recovery(cc, sent_time)) {
        return;
    }

    cc->recovery_start = now;
    cc->congestion_events++;

    cc->undo_cwnd = cc->cwnd;
    cc->undo_ssthresh = cc->ssthresh;
    cc->ssthresh = cc->cwnd / 2;

    min_window = hg_cc_newreno_min_window(cc);
    cc->cwnd = cc->ssthresh > min_window ? cc->ssthresh : min_window;

    /*
     * The progress toward the next mss shrinks with the window, as the
     * fraction inside RFC 9002's cwnd += mss * acked / cwnd would. Zeroing
     * it dropped half an mss of growth per event on average: a few percent
     * of throughput on a lossy path, where events come every few RTTs.
     */
    cc->acked_in_ca = cc->acked_in_ca * cc->cwnd / cc->undo_cwnd;
}


/* the losses were reordering: restore the window the event took away */
static void
hg_cc_newreno_on_spurious_congestion(hg_cc_t *cc)
{
    if (cc->undo_cwnd > cc->cwnd) {
        cc->cwnd = cc->undo_cwnd;
    }

    cc->ssthresh = cc->undo_ssthresh;
    cc->acked_in_ca = 0;
}


static void
hg_cc_newreno_on_persistent_congestion(hg_cc_t *cc)
{
    cc->cwnd = hg_cc_newreno_min_window(cc);
    cc->recovery_start = HG_TIME_INFINITE;
    cc->acked_in_ca = 0;
}
