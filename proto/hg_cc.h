/*
 * Congestion control behind a small interface (RFC 9002 section 7), so
 * CUBIC or BBR can follow NewReno; plus a pacer.
 *
 * All sizes are bytes of UDP payload (what counts in bytes_in_flight).
 *
 * bytes_in_flight belongs to hg_recovery alone: it adds a packet's size
 * before calling on_sent and subtracts it before calling on_acked or
 * on_congestion_event. A controller reads bytes_in_flight but never
 * writes it, so the count cannot drift.
 */

#ifndef HG_CC_H
#define HG_CC_H

#include <stddef.h>
#include <stdint.h>

#include "hg.h"


typedef struct hg_cc_s hg_cc_t;

typedef struct {
    const char  *name;
    /* a packet of `bytes` was sent (already counted in flight) */
    void       (*on_sent)(hg_cc_t *cc, size_t bytes, hg_time_t now);
    /* a packet sent at sent_time was acknowledged (already uncounted) */
    void       (*on_acked)(hg_cc_t *cc, size_t bytes, hg_time_t sent_time,
                           hg_time_t now);
    /*
     * packets were declared lost; sent_time is that of the largest lost
     * one (a new congestion event only if sent after the recovery start)
     */
    void       (*on_congestion_event)(hg_cc_t *cc, hg_time_t sent_time,
                                      hg_time_t now);
    /* RFC 9002 7.6: collapse to the minimum window */
    void       (*on_persistent_congestion)(hg_cc_t *cc);
    /* every loss of the last event proved spurious: undo its reduction */
    void       (*on_spurious_congestion)(hg_cc_t *cc);
} hg_cc_ops_t;

struct hg_cc_s {
    const hg_cc_ops_t  *ops;
    size_t              mss;              /* max datagram size */
    uint64_t            cwnd;
    uint64_t            ssthresh;
    uint64_t            bytes_in_flight;  /* maintained by hg_recovery */
    hg_time_t           recovery_start;   /* HG_TIME_INFINITE: none since
                                             start or persistent cong. */
    uint64_t            acked_in_ca;      /* NewReno: bytes acked toward
                                             the next mss of CA growth */
    int                 app_limited;      /* set by the sender; no growth */
    uint64_t            congestion_events;
    uint64_t            undo_cwnd;        /* before the last reduction */
    uint64_t            undo_ssthresh;
};

/* NewReno per RFC 9002 7.3 (initial window 10 * mss, minimum 2 * mss) */
void hg_cc_newreno_init(hg_cc_t *cc, size_t mss);
/* picks by name ("newreno"); -1 when unknown */
int hg_cc_init(hg_cc_t *cc, const char *name, size_t mss);


/*
 * Pacing (RFC 9002 7.7): a token bucket refilled at
 * rate = 1.25 * cwnd / max(srtt, 1 ms), burst of up to 10 packets (the
 * initial window). srtt is hg_recovery_t.smoothed_rtt, which holds the
 * handshake's round trip (or HG_INITIAL_RTT) until the first sample.
 */
typedef struct {
    uint64_t   tokens;            /* bytes that may leave now */
    uint64_t   burst;             /* bucket depth */
    hg_time_t  last;              /* time of the last refill, or
                                     HG_TIME_INFINITE before the first */
    uint64_t   credit;            /* refill remainder below one byte, in
                                     byte * 4 * srtt units */
} hg_pacer_t;

void hg_pacer_init(hg_pacer_t *p, size_t mss);
/*
 * Earliest time a packet of `bytes` may leave (== now: at once). A packet
 * larger than the burst waits for a full bucket.
 */
hg_time_t hg_pacer_next(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt,
    size_t bytes, hg_time_t now);
void hg_pacer_on_sent(hg_pacer_t *p, const hg_cc_t *cc, hg_time_t srtt,
    size_t bytes, hg_time_t now);

#endif /* HG_CC_H */
