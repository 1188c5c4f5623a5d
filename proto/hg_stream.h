/*
 * One bidirectional stream's state: the send side (bytes written by the
 * application, sent, acknowledged, lost and due again, FIN and RESET) and
 * the receive side (reassembly, in-order reads, FIN, final size, RESET),
 * with per-stream flow control both ways. Connection-wide flow control and
 * the choice of which stream sends next live in hg_conn.c; this file never
 * touches packets.
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
    unsigned        has_meta:1;       /* meta to send (ours) or received */
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
    unsigned        reset_sent:1;
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
    unsigned        fin_read:1;       /* application saw the end */
    unsigned        max_data_due:1;   /* MAX_STREAM_DATA should go out */
    unsigned        reset_received:1;
    unsigned        stop_queued:1;    /* we asked the peer to stop */
    unsigned        stop_sent:1;
    uint64_t        peer_reset_code;
};

/* initial limits: the peer's window for us, ours for the peer */
hg_stream_t *hg_stream_new(int64_t id, uint64_t send_max,
    uint64_t send_buffer, uint64_t recv_window);
void hg_stream_free(hg_stream_t *s);

/* --- send side --------------------------------------------------------- */

/* bytes the application may write now (send buffer space) */
size_t hg_stream_send_space(const hg_stream_t *s);
/* append application bytes: returns the count accepted */
size_t hg_stream_send_write(hg_stream_t *s, const uint8_t *data, size_t len);
int hg_stream_send_fin(hg_stream_t *s);

/*
 * The next range to put in a frame, at most max_len bytes: lost ranges
 * first, then new bytes within the peer's stream limit and conn_credit
 * (new bytes only). Sets *offset, *len, *fin and *is_new (new bytes count
 * against connection flow control). Returns 0 when nothing can be sent.
 * A FIN alone (len 0) is a valid result.
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

/* a frame [offset, offset+len) (+fin) was acknowledged / lost */
void hg_stream_send_on_acked(hg_stream_t *s, uint64_t offset, size_t len,
    int fin);
void hg_stream_send_on_lost(hg_stream_t *s, uint64_t offset, size_t len,
    int fin);

/* peer's MAX_STREAM_DATA; returns 1 if it raised the limit */
int hg_stream_send_max(hg_stream_t *s, uint64_t max);

/* 1 when every byte and the FIN (or our RESET) are acknowledged */
int hg_stream_send_done(const hg_stream_t *s);
/* 1 when there is something to send (lost, new within limits, FIN) */
int hg_stream_send_pending(const hg_stream_t *s);

/* --- receive side ------------------------------------------------------ */

/*
 * A STREAM frame arrived. Returns the number of bytes by which the
 * highest received offset grew (for connection flow control), or:
 *   HG_ERR_LIMIT  offset + len beyond the limit we advertised
 *   HG_ERR        final size violated (data past FIN, FIN moved)
 *   HG_ERR_NOMEM
 */
int64_t hg_stream_recv(hg_stream_t *s, uint64_t offset, const uint8_t *data,
    size_t len, int fin);

/* a RESET_STREAM: same return convention as hg_stream_recv */
int64_t hg_stream_recv_reset(hg_stream_t *s, uint64_t code,
    uint64_t final_size);

/* in-order bytes available to read (0 may still mean FIN is readable) */
size_t hg_stream_readable(const hg_stream_t *s);
/* 1 when the reader can make progress: bytes, FIN, or a reset */
int hg_stream_read_ready(const hg_stream_t *s);

/*
 * Copy out up to len in-order bytes; *fin set when the end was reached.
 * Moves the window: sets max_data_due once half of it is consumed.
 */
size_t hg_stream_read(hg_stream_t *s, uint8_t *dst, size_t len, int *fin);

/* the MAX_STREAM_DATA value to advertise now (updates recv_max) */
uint64_t hg_stream_recv_update_max(hg_stream_t *s);

/* 1 when the receive side is finished: FIN read, or reset received */
int hg_stream_recv_done(const hg_stream_t *s);

/* bytes held in memory, both directions */
size_t hg_stream_memory(const hg_stream_t *s);

#endif /* HG_STREAM_H */
