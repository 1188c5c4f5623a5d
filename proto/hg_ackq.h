/*
 * The receiving side of loss recovery: which packet numbers arrived, when
 * an ACK is due, and the ACK frame's ranges.
 *
 * Acks are immediate when an ack-eliciting packet arrives out of order (a
 * gap below it or a gap filled) or every second ack-eliciting packet, and
 * otherwise wait for a second packet no longer than one is likely to come:
 * twice the gap since the previous ack-eliciting arrival (at least 1 ms),
 * at most max_ack_delay (RFC 9000 13.2 lets a receiver ack sooner). Packets
 * that are not ack-eliciting never cause an ACK; they ride along in the
 * next one.
 *
 * A packet carrying PING, HELLO or HELLO_ACK is acknowledged at once: its
 * sender waits for the answer and sends nothing more meanwhile, so no
 * partner will come, and a delayed ACK would be all the sender ever
 * samples on an idle session. RFC 9002 5.2 takes min_rtt from samples
 * without the peer's ack delay taken off, so a first sample delayed by
 * max_ack_delay (HELLO_ACK's ACK) would hold min_rtt, and with it every
 * later sample, at max_ack_delay for the session's life (as QUIC acks
 * its handshake packets at once, RFC 9000 13.2.1).
 *
 * Numbers below `floor` are forgotten: they count as duplicates, since the
 * receiver can no longer tell (RFC 9000 13.2.3). The floor rises when the
 * range cap is reached and when acknowledged ranges are pruned.
 */

#ifndef HG_ACKQ_H
#define HG_ACKQ_H

#include <stddef.h>
#include <stdint.h>

#include "hg.h"
#include "hg_codec.h"
#include "hg_rangeset.h"


/* what a packet asks of the receiver: bits, OR-ed over its frames */
#define HG_ACKQ_NONE       0        /* not ack-eliciting */
#define HG_ACKQ_ELICITING  1        /* an ACK within max_ack_delay */
#define HG_ACKQ_PROMPT     3        /* an ACK at once (eliciting too) */


/* packet numbers kept below the largest of an acknowledged ACK */
#define HG_ACKQ_PRUNE_MARGIN  32

typedef struct {
    hg_rangeset_t  received;          /* packet numbers, capped */
    uint64_t       floor;             /* below: treated as duplicates */
    uint64_t       largest;           /* UINT64_MAX: nothing yet */
    hg_time_t      largest_time;      /* arrival of `largest` */
    uint32_t       unacked;           /* any packets since our last ACK */
    uint32_t       eliciting_unacked; /* ack-eliciting since our last ACK */
    int            immediate;         /* an ACK should go at once */
    hg_time_t      ack_deadline;      /* HG_TIME_INFINITE: none pending */
    hg_time_t      max_ack_delay;
    hg_time_t      last_eliciting;    /* arrival of the latest one, or
                                         HG_TIME_INFINITE */
    uint64_t       duplicates;
} hg_ackq_t;

void hg_ackq_init(hg_ackq_t *q, hg_time_t max_ack_delay, size_t max_ranges);
void hg_ackq_free(hg_ackq_t *q);

/*
 * Call before processing a packet's frames: 1 when pn is a duplicate (or
 * too old to tell) and the packet must be ignored, else 0. Duplicates are
 * counted in q->duplicates.
 */
int hg_ackq_is_duplicate(hg_ackq_t *q, uint64_t pn);

/* what a frame of this kind asks for: HG_ACKQ_NONE, _ELICITING, _PROMPT */
unsigned hg_ackq_frame_need(hg_codec_kind_t kind);

/*
 * Record a processed packet; need is what its frames asked for, OR-ed (a
 * duplicate passed here changes nothing).
 */
void hg_ackq_on_received(hg_ackq_t *q, uint64_t pn, unsigned need,
    hg_time_t now);

/* 1 when an ACK frame should be sent now (immediate or deadline passed) */
int hg_ackq_due(const hg_ackq_t *q, hg_time_t now);
/* 1 when there is anything to acknowledge (an ACK may ride along) */
int hg_ackq_pending(const hg_ackq_t *q);
hg_time_t hg_ackq_deadline(const hg_ackq_t *q);

/*
 * Fill an ACK: largest, ack delay (now - largest_time), and up to
 * max_ranges intervals [lo, hi), highest first. Returns the number of
 * intervals (0 when nothing was received; *largest is then UINT64_MAX).
 */
size_t hg_ackq_build(const hg_ackq_t *q, hg_time_t now, hg_range_t *ranges,
    size_t max_ranges, uint64_t *largest, hg_time_t *ack_delay);

/* an ACK was put in a packet: nothing is pending until the next arrival */
void hg_ackq_on_ack_sent(hg_ackq_t *q);

/*
 * Our ACK whose largest was `largest` has itself been acknowledged: stop
 * repeating ranges that end more than HG_ACKQ_PRUNE_MARGIN below it
 * (keeps the frame small); the floor rises past them.
 */
void hg_ackq_on_ack_acked(hg_ackq_t *q, uint64_t largest);

#endif /* HG_ACKQ_H */
