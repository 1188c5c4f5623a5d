/*
 * hg_ackq: received ranges under reordering, duplicates, when an ACK is
 * due, the range cap, the ack delay, pruning acknowledged ranges.
 */

#include <stdlib.h>

#include "hg_ackq.h"
#include "tap.h"


#define MAD  (25 * HG_MS)


/* the ranges an ACK would carry, as "lo-hi,lo-hi" (hi exclusive) */
static const char *
test_ranges(const hg_ackq_t *q, size_t max)
{
    static char  text[256];
    size_t       i, n, len;
    uint64_t     largest;
    hg_time_t    delay;
    hg_range_t   r[16];

    n = hg_ackq_build(q, 0, r, max < 16 ? max : 16, &largest, &delay);

    len = 0;
    text[0] = '\0';
    for (i = 0; i < n; i++) {
        len += snprintf(text + len, sizeof(text) - len, "%s%llu-%llu",
                        i ? "," : "", (unsigned long long) r[i].lo,
                        (unsigned long long) r[i].hi);
    }

    return text;
}


static void
test_receive(hg_ackq_t *q, uint64_t pn, hg_time_t now)
{
    if (!hg_ackq_is_duplicate(q, pn)) {
        hg_ackq_on_received(q, pn, 1, now);
    }
}


static void
test_in_order(void)
{
    uint64_t    largest;
    hg_time_t   delay;
    hg_range_t  r[4];
    hg_ackq_t   q;

    hg_ackq_init(&q, MAD, 32);

    tap_ok(!hg_ackq_pending(&q), "nothing pending at first");
    tap_is_int(hg_ackq_build(&q, 0, r, 4, &largest, &delay), 0,
               "an empty ACK has no ranges");
    tap_is_int(largest, UINT64_MAX, "and no largest");

    test_receive(&q, 0, 0);
    test_receive(&q, 1, 0);
    test_receive(&q, 2, 0);

    tap_is_str(test_ranges(&q, 8), "0-3", "in-order packets: one range");
    tap_is_int(q.largest, 2, "largest 2");

    hg_ackq_free(&q);
}


static void
test_reordering(void)
{
    uint64_t    largest;
    hg_time_t   delay;
    hg_range_t  r[4];
    hg_ackq_t   q;

    hg_ackq_init(&q, MAD, 32);

    test_receive(&q, 0, 0);
    test_receive(&q, 1, 0);
    test_receive(&q, 3, 0);
    test_receive(&q, 5, 0);
    tap_is_str(test_ranges(&q, 8), "5-6,3-4,0-2",
               "gaps make ranges, highest first");

    test_receive(&q, 4, 0);
    tap_is_str(test_ranges(&q, 8), "3-6,0-2", "a late packet merges two");

    test_receive(&q, 2, 0);
    tap_is_str(test_ranges(&q, 8), "0-6", "the last gap filled");

    tap_is_int(hg_ackq_build(&q, 0, r, 4, &largest, &delay), 1, "one range");
    tap_is_int(largest, 5, "largest is the top of the first range");

    hg_ackq_free(&q);
}


static void
test_duplicates(void)
{
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    test_receive(&q, 0, 0);
    test_receive(&q, 2, 0);

    tap_ok(hg_ackq_is_duplicate(&q, 0), "a received number is a duplicate");
    tap_ok(hg_ackq_is_duplicate(&q, 2), "so is the largest");
    tap_ok(!hg_ackq_is_duplicate(&q, 1), "a gap is not");
    tap_ok(!hg_ackq_is_duplicate(&q, 3), "nor a new number");
    tap_is_int(q.duplicates, 2, "duplicates are counted");

    hg_ackq_on_ack_sent(&q);
    hg_ackq_on_received(&q, 2, 1, 0);
    tap_ok(!hg_ackq_pending(&q) && !hg_ackq_due(&q, 0),
           "a duplicate recorded anyway changes nothing");

    hg_ackq_free(&q);
}


static void
test_delayed_ack(void)
{
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    hg_ackq_on_received(&q, 0, 1, 1000);
    tap_ok(!hg_ackq_due(&q, 1000), "one ack-eliciting packet: not at once");
    tap_ok(hg_ackq_pending(&q), "but pending");
    tap_is_int(hg_ackq_deadline(&q), 1000 + MAD, "due after max_ack_delay");
    tap_ok(!hg_ackq_due(&q, 1000 + MAD - 1), "not before");
    tap_ok(hg_ackq_due(&q, 1000 + MAD), "due at the deadline");

    hg_ackq_on_received(&q, 1, 1, 2000);
    tap_ok(hg_ackq_due(&q, 2000), "the second ack-eliciting packet: at once");
    tap_ok(q.immediate, "flagged immediate");
    tap_is_int(hg_ackq_deadline(&q), 2000, "deadline is now");

    hg_ackq_on_ack_sent(&q);
    tap_ok(!hg_ackq_due(&q, 1 * HG_SEC), "an ACK sent: nothing due");
    tap_ok(!hg_ackq_pending(&q), "nothing pending");
    tap_is_int(hg_ackq_deadline(&q), HG_TIME_INFINITE, "no deadline");

    hg_ackq_on_received(&q, 2, 1, 1 * HG_SEC);
    tap_is_int(hg_ackq_deadline(&q), 1 * HG_SEC + MAD,
               "the count restarts after an ACK");

    hg_ackq_free(&q);
}


/*
 * PING, HELLO and HELLO_ACK are acked at once: their sender waits for the
 * answer with nothing to follow, and on an idle session that ACK is the
 * only rtt sample either end gets.
 */
static void
test_prompt(void)
{
    hg_ackq_t  q;

    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_PING), HG_ACKQ_PROMPT,
               "PING asks for a prompt ACK");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_HELLO),
               HG_ACKQ_PROMPT, "so does HELLO");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_HELLO_ACK),
               HG_ACKQ_PROMPT, "and HELLO_ACK");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_STREAM),
               HG_ACKQ_ELICITING, "STREAM may wait for a partner");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_MAX_DATA),
               HG_ACKQ_ELICITING, "so may MAX_DATA");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_ACK), HG_ACKQ_NONE,
               "ACK elicits nothing");
    tap_is_int(hg_ackq_frame_need(HOPGATE__FRAME__BODY_CLOSE), HG_ACKQ_NONE,
               "nor does CLOSE");

    hg_ackq_init(&q, MAD, 32);

    hg_ackq_on_received(&q, 0, HG_ACKQ_PROMPT, 1000);
    tap_ok(hg_ackq_due(&q, 1000), "a lone PING after a quiet spell: the ACK "
           "is due at once");
    tap_is_int(hg_ackq_deadline(&q), 1000, "deadline is now");

    hg_ackq_on_ack_sent(&q);

    hg_ackq_on_received(&q, 1, HG_ACKQ_ELICITING, 10 * HG_SEC);
    tap_is_int(hg_ackq_deadline(&q), 10 * HG_SEC + MAD, "a lone STREAM "
               "packet waits max_ack_delay");

    hg_ackq_free(&q);
}


static void
test_burst_end(void)
{
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    /* a burst at 1 ms spacing: pairs are acknowledged at once */
    hg_ackq_on_received(&q, 0, 1, 10 * HG_MS);
    hg_ackq_on_received(&q, 1, 1, 11 * HG_MS);
    tap_ok(hg_ackq_due(&q, 11 * HG_MS), "burst: the pair is acknowledged");
    hg_ackq_on_ack_sent(&q);

    /* its odd last packet waits twice the spacing, not max_ack_delay */
    hg_ackq_on_received(&q, 2, 1, 12 * HG_MS);
    tap_is_int(hg_ackq_deadline(&q), 14 * HG_MS,
               "a burst's odd last packet waits twice the spacing");
    hg_ackq_on_ack_sent(&q);

    /* a packet right behind another: the wait has a floor */
    hg_ackq_on_received(&q, 3, 1, 12 * HG_MS + 100);
    tap_is_int(hg_ackq_deadline(&q), 13 * HG_MS + 100,
               "but at least 1 ms");
    hg_ackq_on_ack_sent(&q);

    /* a slow trickle: never longer than max_ack_delay */
    hg_ackq_on_received(&q, 4, 1, 100 * HG_MS);
    tap_is_int(hg_ackq_deadline(&q), 100 * HG_MS + MAD,
               "a packet after a long silence waits max_ack_delay");

    hg_ackq_free(&q);
}


static void
test_out_of_order_ack(void)
{
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    hg_ackq_on_received(&q, 0, 1, 0);
    hg_ackq_on_ack_sent(&q);

    hg_ackq_on_received(&q, 2, 1, 10);
    tap_ok(hg_ackq_due(&q, 10), "a gap below a new packet: ACK at once");

    hg_ackq_on_ack_sent(&q);
    hg_ackq_on_received(&q, 1, 1, 20);
    tap_ok(hg_ackq_due(&q, 20), "a packet filling a gap: ACK at once");

    hg_ackq_free(&q);

    hg_ackq_init(&q, MAD, 32);
    hg_ackq_on_received(&q, 5, 1, 0);
    tap_ok(hg_ackq_due(&q, 0), "a first packet other than 0 is a gap");
    hg_ackq_free(&q);
}


static void
test_non_eliciting(void)
{
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    hg_ackq_on_received(&q, 0, 0, 0);
    hg_ackq_on_received(&q, 1, 0, 0);
    hg_ackq_on_received(&q, 5, 0, 0);
    hg_ackq_on_received(&q, 3, 0, 0);

    tap_ok(!hg_ackq_due(&q, 10 * HG_SEC),
           "packets that are not ack-eliciting never make an ACK due");
    tap_is_int(hg_ackq_deadline(&q), HG_TIME_INFINITE, "no deadline");
    tap_ok(hg_ackq_pending(&q), "but they ride along in the next ACK");
    tap_is_str(test_ranges(&q, 8), "5-6,3-4,0-2", "with their ranges");

    hg_ackq_on_received(&q, 6, 1, 100);
    tap_is_int(hg_ackq_deadline(&q), 100 + MAD,
               "an ack-eliciting packet starts the timer");

    hg_ackq_free(&q);
}


static void
test_range_cap(void)
{
    uint64_t   pn;
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 4);

    for (pn = 0; pn <= 20; pn += 2) {
        test_receive(&q, pn, 0);
    }

    tap_is_int(q.received.n, 4, "the set holds at most max_ranges");
    tap_is_str(test_ranges(&q, 8), "20-21,18-19,16-17,14-15",
               "the highest ranges are kept");
    tap_is_str(test_ranges(&q, 2), "20-21,18-19",
               "the ACK frame's own cap keeps the highest");

    tap_ok(hg_ackq_is_duplicate(&q, 4), "a forgotten number is refused");
    tap_ok(hg_ackq_is_duplicate(&q, 13),
           "so is a gap below the lowest range at the cap");
    tap_ok(!hg_ackq_is_duplicate(&q, 15), "a gap between ranges is not");

    test_receive(&q, 15, 0);
    tap_is_str(test_ranges(&q, 8), "20-21,18-19,14-17",
               "filling it merges ranges");

    hg_ackq_free(&q);
}


static void
test_ack_delay(void)
{
    uint64_t    largest;
    hg_time_t   delay;
    hg_range_t  r[4];
    hg_ackq_t   q;

    hg_ackq_init(&q, MAD, 32);

    hg_ackq_on_received(&q, 0, 1, 1000);
    hg_ackq_build(&q, 6000, r, 4, &largest, &delay);
    tap_is_int(delay, 5000, "ack delay: now - arrival of the largest");

    hg_ackq_on_received(&q, 3, 1, 2000);
    hg_ackq_on_received(&q, 1, 1, 4000);
    hg_ackq_build(&q, 6000, r, 4, &largest, &delay);
    tap_is_int(largest, 3, "largest 3");
    tap_is_int(delay, 4000, "a late lower packet does not reset the delay");

    hg_ackq_build(&q, 1000, r, 4, &largest, &delay);
    tap_is_int(delay, 0, "never negative");

    hg_ackq_free(&q);
}


static void
test_prune(void)
{
    uint64_t   pn;
    hg_ackq_t  q;

    hg_ackq_init(&q, MAD, 32);

    for (pn = 0; pn <= 150; pn++) {
        if (pn != 10 && pn != 100) {
            hg_ackq_on_received(&q, pn, 1, 0);
        }
    }

    tap_is_str(test_ranges(&q, 8), "101-151,11-100,0-10", "three ranges");

    hg_ackq_on_ack_acked(&q, 40);
    tap_is_str(test_ranges(&q, 8), "101-151,11-100,0-10",
               "an acknowledged ACK near the bottom prunes nothing");

    hg_ackq_on_ack_acked(&q, 150);
    tap_is_str(test_ranges(&q, 8), "101-151",
               "ranges ending a margin below the acked largest are dropped");
    tap_ok(hg_ackq_is_duplicate(&q, 50), "pruned numbers stay duplicates");
    tap_ok(!hg_ackq_is_duplicate(&q, 100),
           "the gap above them still accepts a late packet");

    hg_ackq_on_ack_acked(&q, 1000);
    tap_is_str(test_ranges(&q, 8), "101-151",
               "the range holding the largest is never pruned");

    hg_ackq_free(&q);
}


int
main(void)
{
    test_in_order();
    test_reordering();
    test_duplicates();
    test_delayed_ack();
    test_prompt();
    test_burst_end();
    test_out_of_order_ack();
    test_non_eliciting();
    test_range_cap();
    test_ack_delay();
    test_prune();

    return tap_done();
}
