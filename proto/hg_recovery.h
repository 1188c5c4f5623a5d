/*
 * Loss recovery after RFC 9002, for one packet number space (the DTLS
 * handshake has its own retransmission; see hg_dtls.h): sent-packet
 * tracking, RTT estimation, loss detection by packet and time threshold,
 * the probe timeout with backoff, persistent congestion.
 *
 * The recovery owns the record of every packet in flight. It reports
 * acknowledged and lost packets through callbacks; the connection then
 * frees or re-queues the frames those packets carried. Each packet is
 * reported exactly once, acknowledged or lost; an ACK arriving for a
 * packet already declared lost is ignored (its frames were re-queued).
 *
 * The recovery alone maintains cc->bytes_in_flight (see hg_cc.h).
 */

#ifndef HG_RECOVERY_H
#define HG_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "hg.h"
#include "hg_cc.h"
#include "hg_frame.h"
#include "hg_rangeset.h"


#define HG_PACKET_THRESHOLD     3           /* kPacketThreshold */
#define HG_INITIAL_RTT          (333 * HG_MS)
#define HG_GRANULARITY          (1 * HG_MS)
#define HG_PERSISTENT_CONGESTION_THRESHOLD  3
#define HG_MAX_PACKET_THRESHOLD 64          /* reordering tolerance cap */
#define HG_LOST_LOG             64          /* losses kept to spot spurious */

/*
 * Called from hg_recovery_on_ack and hg_recovery_on_timeout; they must not
 * call back into the same hg_recovery_t. Either may be NULL.
 */
typedef struct {
    void  (*on_acked)(void *ctx, const hg_sent_packet_t *pkt);
    void  (*on_lost)(void *ctx, const hg_sent_packet_t *pkt);
    void   *ctx;
} hg_recovery_cb_t;

/* an ACK frame, decoded: intervals of acknowledged numbers, descending */
typedef struct {
    uint64_t     largest;
    hg_time_t    ack_delay;       /* already scaled to microseconds */
    size_t       nranges;
    hg_range_t  *ranges;          /* [lo, hi) each, ranges[0].hi-1==largest */
} hg_ack_t;

typedef struct {
    /* RTT (RFC 9002 5) */
    hg_time_t          latest_rtt;
    hg_time_t          smoothed_rtt;
    hg_time_t          rttvar;
    hg_time_t          min_rtt;
    int                has_rtt_sample;
    hg_time_t          first_rtt_sample;  /* when it was taken */
    hg_time_t          max_ack_delay;     /* the peer's, for PTO */

    /*
     * Packets in flight: a ring indexed by packet number, holding every
     * number in [first_pn, next_pn). Slots in that window whose packet
     * was acknowledged or lost stay until all older ones are settled.
     */
    hg_sent_packet_t  *ring;              /* NULL until the first packet */
    size_t             ring_cap;          /* power of two, or 0 */
    size_t             ring_min;          /* its first capacity */
    size_t             max_packets;       /* cap on next_pn - first_pn */
    uint64_t           first_pn;          /* oldest tracked packet */
    uint64_t           next_pn;           /* one past the newest */
    uint64_t           outstanding;       /* neither acked nor lost */

    uint64_t           largest_acked;     /* UINT64_MAX: none yet */
    hg_time_t          time_of_last_ack_eliciting;
    hg_time_t          loss_time;         /* HG_TIME_INFINITE: none */
    uint32_t           pto_count;
    uint64_t           ack_eliciting_in_flight;

    /*
     * Reordering tolerance (RFC 9002 6.1 allows adapting both thresholds):
     * a packet declared lost and then acknowledged was only reordered;
     * each such spurious loss widens the thresholds, and a congestion
     * event made only of spurious losses is undone.
     */
    uint32_t           packet_threshold;
    uint32_t           time_eighths;      /* loss delay: rtt * (8 + n) / 8 */
    struct {
        uint64_t       pn;
        uint64_t       distance;          /* largest_acked - pn, at loss */
        hg_time_t      sent;
    }                  lost_log[HG_LOST_LOG];
    size_t             lost_log_n;
    uint64_t           event_losses;      /* in the current congestion event */
    uint64_t           event_spurious;
    uint64_t           spurious_losses;

    hg_cc_t           *cc;                /* bytes_in_flight lives here */
    hg_recovery_cb_t   cb;

    /* statistics */
    uint64_t           packets_lost;
    uint64_t           pto_fired;
} hg_recovery_t;

/* 0, or -1 when max_packets is 0 or memory is short; cb may be NULL */
int hg_recovery_init(hg_recovery_t *r, hg_cc_t *cc, hg_time_t max_ack_delay,
    size_t max_packets, const hg_recovery_cb_t *cb);
void hg_recovery_free(hg_recovery_t *r);

/*
 * A slot for the next packet, numbered r->next_pn, zeroed but for pn;
 * NULL when max_packets are tracked or the ring cannot grow (the sender
 * must wait for acknowledgments). Fill size, ack_eliciting, in_flight and
 * frames, then call hg_recovery_on_sent; a slot not committed is simply
 * reused. on_sent also accepts a packet built elsewhere (it is copied in),
 * still after hg_recovery_next_slot returned non-NULL.
 */
hg_sent_packet_t *hg_recovery_next_slot(hg_recovery_t *r);
void hg_recovery_on_sent(hg_recovery_t *r, hg_sent_packet_t *pkt,
    hg_time_t now);

/*
 * RFC 9002 OnAckReceived: -1 when the ACK acknowledges a packet never
 * sent or its ranges are malformed (a protocol violation; nothing is
 * changed), else 0. Losses are reported (and the controller told) before
 * the acknowledged packets, as in RFC 9002 Appendix A, so a loss found by
 * this ACK keeps it from growing the window.
 */
int hg_recovery_on_ack(hg_recovery_t *r, const hg_ack_t *ack, hg_time_t now);

/* RFC 9002 GetLossTimeAndSpace / PTO: when hg_recovery_on_timeout is due */
hg_time_t hg_recovery_deadline(const hg_recovery_t *r, hg_time_t now);

/*
 * The loss detection timer fired: returns the number of probe packets the
 * sender must send now, 2 for a PTO (each ack-eliciting: the oldest
 * unacknowledged data re-queued, or a PING, sent even if the congestion
 * window is full); 0 when the timer declared packets lost instead, or
 * when nothing was due yet.
 */
int hg_recovery_on_timeout(hg_recovery_t *r, hg_time_t now);

/*
 * Before the first sample: replace the 333 ms initial RTT with a better
 * prior (the DTLS handshake's round trip). smoothed_rtt takes it and
 * rttvar half of it, as with a first sample, but the first real sample
 * still overwrites both (RFC 9002 6.2.2 allows such a prior).
 */
void hg_recovery_set_initial_rtt(hg_recovery_t *r, hg_time_t rtt);

/* the PTO period, without backoff: srtt + max(4*rttvar, G) + max_ack_delay */
hg_time_t hg_recovery_pto(const hg_recovery_t *r);

/* packets tracked (sent and neither acknowledged nor lost) */
uint64_t hg_recovery_in_flight_packets(const hg_recovery_t *r);

/* the oldest ack-eliciting packet not yet settled (a PTO probe's data) */
const hg_sent_packet_t *hg_recovery_oldest_unacked(const hg_recovery_t *r);

#endif /* HG_RECOVERY_H */
