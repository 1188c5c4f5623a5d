/*
 * What a sent packet carried, kept until the packet is acknowledged or
 * declared lost. Loss recovery re-queues these frames (not the packet);
 * see hg_conn.c.
 */

#ifndef HG_FRAME_H
#define HG_FRAME_H

#include <stdint.h>

#include "hg.h"


typedef enum {
    HG_SF_STREAM = 1,             /* stream_id, offset, len, fin */
    HG_SF_ACK,                    /* value: the largest acknowledged */
    HG_SF_RESET_STREAM,           /* stream_id */
    HG_SF_STOP_SENDING,           /* stream_id */
    HG_SF_MAX_DATA,               /* value */
    HG_SF_MAX_STREAM_DATA,        /* stream_id, value */
    HG_SF_MAX_STREAMS,            /* value */
    HG_SF_PING,
    HG_SF_HELLO,
    HG_SF_HELLO_ACK,
    HG_SF_GOAWAY,
    HG_SF_CLOSE,
    HG_SF_PATH_CHALLENGE,         /* value: the data */
    HG_SF_PATH_RESPONSE
} hg_sent_frame_type_t;

typedef struct {
    uint8_t    type;              /* hg_sent_frame_type_t */
    uint8_t    fin;
    uint8_t    has_meta;
    uint8_t    reserved;
    uint32_t   len;
    int64_t    stream_id;
    uint64_t   value;             /* stream offset, or the frame's value */
} hg_sent_frame_t;

/* frames one packet may carry (a sender-side cap) */
#define HG_MAX_SENT_FRAMES  12

typedef struct {
    uint64_t         pn;
    hg_time_t        time_sent;
    uint32_t         size;        /* datagram bytes, prefix included */
    uint8_t          ack_eliciting;
    uint8_t          in_flight;
    uint8_t          acked;       /* bookkeeping for hg_recovery */
    uint8_t          lost;
    uint16_t         nframes;
    hg_sent_frame_t  frames[HG_MAX_SENT_FRAMES];
} hg_sent_packet_t;

#endif /* HG_FRAME_H */
