/*
 * One bidirectional stream's state: the send side (bytes written by the
 * application, sent, acknowledged, lost and due again, FIN and RESET) and
 * the receive side (reassembly, in-order reads, FIN, final size, RESET),
 * with per-stream flow control both ways. Connection-wide flow control and
 * the choice of which stream sends next live in hg_conn.c; this file never
 * touches packets.
 *
 * How hg_conn.c drives a stream:
 *
 * Sending STREAM frames: hg_stream_send_peek, then hg_stream_send_copy of
 * [offset, offset + len), then hg_stream_send_commit with the same values
 * once the frame is in a packet (nothing else may touch the stream in
 * between). When *is_new, len counts against the connection's send
 * credit. A frame carries meta exactly when hg_stream_frame_has_meta()
 * says so (the opener's frame at offset 0 and its retransmissions); record
 * offset, len and fin in hg_sent_frame_t and pass them back to
 * hg_stream_send_on_acked / hg_stream_send_on_lost.
 *
 * Meta on the receiving side: the peer's offset-0 frame may arrive after
 * later ones; copy its meta, set has_meta, and hold STREAM_OPENED until
 * then (opened_event).
 *
 * Resetting: hg_stream_reset calls hg_stream_send_reset and
 * hg_stream_recv_stop with its code (each may answer HG_ERR_STATE when
 * that side is already finished); a STOP_SENDING from the peer calls
 * hg_stream_recv_stop_sending, which resets our side. From then on peek
 * returns nothing: send RESET_STREAM(reset_code, final size `sent`) while
 * hg_stream_reset_due, then hg_stream_reset_commit, and report its fate
 * with hg_stream_reset_on_acked / hg_stream_reset_on_lost. STOP_SENDING
 * goes out the same way with hg_stream_stop_due, hg_stream_stop_commit
 * and hg_stream_stop_on_lost. Set the flags through these calls, not by
 * hand: they also drop buffers and return flow-control credit.
 *
 * Receiving: hg_stream_recv / hg_stream_recv_reset return how far the
 * highest received offset grew: add it to the connection's received count
 * and check that against the connection window. After every receive-side
 * call (recv, recv_reset, recv_read, recv_stop), add
 * hg_stream_recv_take_freed() to the connection's consumed count: it is
 * the credit given back by reads and by bytes discarded after a reset or
 * STOP_SENDING, from which MAX_DATA is computed.
 */

#ifndef HG_STREAM_H
#define HG_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "hg.h"
#include "hg_bytebuf.h"
#include "hg_rangeset.h"


typedef struct hg_stream_s hg_stream_t;

struct hg_stream_s {
    int64_t         id;
    void           *user;
    hg_stream_meta_t meta;
    unsigned        has_meta:1;       /* meta valid: ours, or received */
    unsigned        send_meta:1;      /* we opened it: offset 0 has meta */
    unsigned        opened_event:1;   /* STREAM_OPENED surfaced */

    /* --- send side ----------------------------------------------------- */
    hg_bytebuf_t    sbuf;             /* [acked, written) */
    uint64_t        written;          /* bytes the application gave us */
    uint64_t        sent;             /* highest offset ever sent */
    uint64_t        acked;            /* every byte below is acknowledged */
    hg_rangeset_t   acked_above;      /* acknowledged ranges above `acked` */
    hg_rangeset_t   lost;             /* ranges to send again */
    uint64_t        send_max;         /* peer's MAX_STREAM_DATA */
    uint64_t        send_buffer;      /* cap on written - acked */
    unsigned        fin_written:1;    /* application shut down its side */
    unsigned        fin_sent:1;       /* FIN went out (may need resend) */
    unsigned        fin_lost:1;
    unsigned        fin_acked:1;
    unsigned        meta_lost:1;      /* offset-0 frame lost: resend meta */
    unsigned        reset_queued:1;   /* we reset: RESET_STREAM to send */
    unsigned        reset_sent:1;     /* RESET_STREAM in flight */
    unsigned        reset_acked:1;
    unsigned        stop_received:1;  /* peer sent STOP_SENDING */
    uint64_t        reset_code;

    /* --- receive side -------------------------------------------------- */
    hg_bytebuf_t    rbuf;             /* [read, recv_max) */
    hg_rangeset_t   received;         /* ranges present above `read` */
    uint64_t        read;             /* bytes handed to the application */
    uint64_t        recv_highest;     /* highest offset+len seen */
    uint64_t        recv_max;         /* limit we advertised */
    uint64_t        recv_window;      /* window size */
    uint64_t        final_size;       /* UINT64_MAX until FIN or RESET */
    uint64_t        recv_freed;       /* credit not yet taken by the conn */
    unsigned        fin_read:1;       /* application saw the end */
    unsigned        max_data_due:1;   /* MAX_STREAM_DATA should go out */
    unsigned        reset_received:1;
    unsigned        stop_queued:1;    /* we asked the peer to stop */
    unsigned        stop_sent:1;      /* STOP_SENDING in flight or acked */
    uint64_t        stop_code;
    uint64_t        peer_reset_code;
};

/* initial limits: the peer's window for us, ours for the peer */
hg_stream_t *hg_stream_new(int64_t id, uint64_t send_max,
    uint64_t send_buffer, uint64_t recv_window);
void hg_stream_free(hg_stream_t *s);

/* --- send side --------------------------------------------------------- */

/* bytes the application may write now (0 after FIN or reset) */
size_t hg_stream_send_space(const hg_stream_t *s);
/* append application bytes: returns the count accepted */
size_t hg_stream_send_write(hg_stream_t *s, const uint8_t *data, size_t len);
/* no more bytes: FIN after `written`; HG_ERR_STATE once reset */
int hg_stream_send_fin(hg_stream_t *s);

/*
 * The next range to put in a frame, at most max_len bytes: lost ranges
 * first (not limited by flow control again), then a lost FIN alone, then
 * new bytes from `sent` up to min(send_max, sent + conn_credit, written),
 * then a FIN alone. *fin is set when the frame ends at `written` after
 * the application's FIN. *is_new is set for new bytes (they count
 * against connection flow control). Returns 0 when nothing can be sent
 * (always after a reset). A FIN alone (len 0) is a valid result.
 */
int hg_stream_send_peek(const hg_stream_t *s, size_t max_len,
    uint64_t conn_credit, uint64_t *offset, size_t *len, int *fin,
    int *is_new);
/* the frame chosen by peek went into a packet */
void hg_stream_send_commit(hg_stream_t *s, uint64_t offset, size_t len,
    int fin);
/* copy bytes [offset, offset+len) of the send buffer */
void hg_stream_send_copy(const hg_stream_t *s, uint64_t offset,
    uint8_t *dst, size_t len);

/* the frame [offset, offset + len) goes with the stream's meta */
static inline int
hg_stream_frame_has_meta(const hg_stream_t *s, uint64_t offset)
{
    return offset == 0 && s->send_meta;
}

/*
 * A frame [offset, offset+len) (+fin) was acknowledged / lost. Acks may
 * free send buffer space (compare hg_stream_send_space before and after
 * to raise HG_EV_STREAM_WRITABLE). A loss re-queues only what is not
 * acknowledged yet; nothing is re-queued after a reset.
 */
void hg_stream_send_on_acked(hg_stream_t *s, uint64_t offset, size_t len,
    int fin);
void hg_stream_send_on_lost(hg_stream_t *s, uint64_t offset, size_t len,
    int fin);

/* peer's MAX_STREAM_DATA; returns 1 if it raised the limit */
int hg_stream_send_max(hg_stream_t *s, uint64_t max);

/* 1 when every byte and the FIN (or our RESET) are acknowledged */
int hg_stream_send_done(const hg_stream_t *s);
/*
 * 1 when a STREAM frame is due (lost bytes or FIN, new bytes within the
 * peer's stream limit, a FIN). Connection credit is not considered: peek
 * may still return 0. RESET_STREAM is reported by hg_stream_reset_due.
 */
int hg_stream_send_pending(const hg_stream_t *s);

/*
 * Abandon the send side with code: drops the send buffer and pending
 * retransmissions. HG_OK, or HG_ERR_STATE when already reset or when
 * every byte and the FIN are acknowledged (nothing left to abort).
 */
int hg_stream_send_reset(hg_stream_t *s, uint64_t code);
/* RESET_STREAM(reset_code, final size `sent`) should go out now */
int hg_stream_reset_due(const hg_stream_t *s);
void hg_stream_reset_commit(hg_stream_t *s);
void hg_stream_reset_on_acked(hg_stream_t *s);
void hg_stream_reset_on_lost(hg_stream_t *s);

/*
 * The peer's STOP_SENDING: resets our send side with the peer's code
 * unless it is done or already reset. Returns 1 the first time (raise
 * HG_EV_STREAM_STOP), 0 for a duplicate.
 */
int hg_stream_recv_stop_sending(hg_stream_t *s, uint64_t code);

/* --- receive side ------------------------------------------------------ */

/*
 * A STREAM frame arrived. Returns the number of bytes by which the
 * highest received offset grew (for connection flow control), or:
 *   HG_ERR_LIMIT  offset + len beyond the limit we advertised, or the
 *                 frame would fragment reassembly past its interval cap
 *   HG_ERR        final size violated (data past FIN, FIN moved, FIN
 *                 below data already received)
 *   HG_ERR_NOMEM
 * HG_ERR_LIMIT and HG_ERR leave the stream unchanged; all three are
 * connection errors. After a reset or our STOP_SENDING the bytes are
 * counted, not kept.
 */
int64_t hg_stream_recv(hg_stream_t *s, uint64_t offset, const uint8_t *data,
    size_t len, int fin);

/*
 * A RESET_STREAM: same return convention as hg_stream_recv. The first
 * one (check reset_received before the call) discards buffered bytes
 * and makes the reader see the reset: raise HG_EV_STREAM_RESET with
 * peer_reset_code. Ignored, apart from the checks, once the application
 * has read the FIN.
 */
int64_t hg_stream_recv_reset(hg_stream_t *s, uint64_t code,
    uint64_t final_size);

/* in-order bytes available to read (0 may still mean FIN is readable) */
size_t hg_stream_readable(const hg_stream_t *s);
/* 1 when the reader can make progress: bytes, FIN, or a reset */
int hg_stream_read_ready(const hg_stream_t *s);

/*
 * Copy out up to len in-order bytes; *fin set when the end was reached.
 * Moves the window: sets max_data_due once half of it is consumed.
 * Returns 0 with *fin clear after a reset or our STOP_SENDING: the
 * connection checks reset_received first and fails the read.
 */
size_t hg_stream_recv_read(hg_stream_t *s, uint8_t *dst, size_t len,
    int *fin);

/* the MAX_STREAM_DATA value to advertise now (updates recv_max) */
uint64_t hg_stream_recv_update_max(hg_stream_t *s);
/* a MAX_STREAM_DATA carrying value was lost: resend if still current */
void hg_stream_recv_max_lost(hg_stream_t *s, uint64_t value);

/*
 * We no longer want the peer's bytes (hg_stream_reset): discards what is
 * buffered, ignores what comes, queues STOP_SENDING(code) unless the
 * final size is known. HG_ERR_STATE when the receive side is done.
 */
int hg_stream_recv_stop(hg_stream_t *s, uint64_t code);
/* STOP_SENDING(stop_code) should go out now */
int hg_stream_stop_due(const hg_stream_t *s);
void hg_stream_stop_commit(hg_stream_t *s);
void hg_stream_stop_on_lost(hg_stream_t *s);

/* connection credit returned since the last call (reads, discards) */
uint64_t hg_stream_recv_take_freed(hg_stream_t *s);

/*
 * 1 when the receive side is finished: FIN read, reset received, or we
 * stopped reading and the final size is known.
 */
int hg_stream_recv_done(const hg_stream_t *s);

/* bytes held in memory, both directions */
size_t hg_stream_memory(const hg_stream_t *s);

#endif /* HG_STREAM_H */
