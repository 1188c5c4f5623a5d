/*
 * Loss recovery after RFC 9002, for one packet number space (the DTLS
 * handshake has its own retransmission; see hg_dtls.h): sent-packet
 * tracking, RTT estimation, loss detection by packet and time threshold,
 * the probe timeout with backoff, persistent congestion.
 *
 * The recovery owns the record of every packet in flight. It reports
 * acknowledged and lost packets through callbacks; the connection then
 * frees or re-queues the frames those packets carried.
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
    hg_time_t          max_ack_delay;     /* the peer's, for PTO */

    /* packets in flight: a ring indexed by packet number */
    hg_sent_packet_t  *ring;
    size_t             ring_cap;          /* power of two */
    size_t             max_packets;       /* cap on ring_cap */
    uint64_t           first_pn;          /* oldest tracked packet */
    uint64_t           next_pn;           /* one past the newest */

    uint64_t           largest_acked;     /* UINT64_MAX: none yet */
    hg_time_t          time_of_last_ack_eliciting;
    hg_time_t          loss_time;         /* HG_TIME_INFINITE: none */
    uint32_t           pto_count;
    uint64_t           ack_eliciting_in_flight;

    hg_cc_t           *cc;                /* bytes_in_flight lives here */
    hg_recovery_cb_t   cb;

    /* statistics */
    uint64_t           packets_lost;
    uint64_t           pto_fired;
} hg_recovery_t;

int hg_recovery_init(hg_recovery_t *r, hg_cc_t *cc, hg_time_t max_ack_delay,
    size_t max_packets, const hg_recovery_cb_t *cb);
void hg_recovery_free(hg_recovery_t *r);

/*
 * A slot for the next packet, numbered r->next_pn; NULL when max_packets
 * are in flight (the sender must wait). Fill frames, then call
 * hg_recovery_on_sent; a slot not committed is simply reused.
 */
hg_sent_packet_t *hg_recovery_next_slot(hg_recovery_t *r);
void hg_recovery_on_sent(hg_recovery_t *r, hg_sent_packet_t *pkt,
    hg_time_t now);

/*
 * RFC 9002 OnAckReceived: -1 when the ACK acknowledges a packet never
 * sent (a protocol violation), else 0.
 */
int hg_recovery_on_ack(hg_recovery_t *r, const hg_ack_t *ack, hg_time_t now);

/* RFC 9002 GetLossTimeAndSpace / PTO: when hg_recovery_on_timeout is due */
hg_time_t hg_recovery_deadline(const hg_recovery_t *r, hg_time_t now);

/*
 * The loss detection timer fired: returns the number of probe packets the
 * sender must send now (0 when the timer declared packets lost instead).
 */
int hg_recovery_on_timeout(hg_recovery_t *r, hg_time_t now);

/* the PTO period, without backoff: srtt + max(4*rttvar, G) + max_ack_delay */
hg_time_t hg_recovery_pto(const hg_recovery_t *r);

/* packets tracked (sent and neither acknowledged nor lost) */
uint64_t hg_recovery_in_flight_packets(const hg_recovery_t *r);

#endif /* HG_RECOVERY_H */
