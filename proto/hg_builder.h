/*
 * The packet under construction, shared by the files that put frames in
 * it: hg_packet_out.c (ACK, flow control, stream data) and hg_session.c
 * (HELLO, HELLO_ACK, GOAWAY, CLOSE), and by the two that finish one:
 * hg_packet_out.c for datagrams (sealed by DTLS), hg_carrier_stream.c
 * for the stream carrier (written in place, after its length). Internal,
 * like hg_conn.h.
 */

#ifndef HG_BUILDER_H
#define HG_BUILDER_H

#include <protobuf-c/protobuf-c.h>

#include "hg_codec.h"
#include "hg_conn.h"

typedef struct {
    hg_conn_t                *c;
    hg_time_t                 now;
    hg_sent_frame_t           rec[HG_MAX_SENT_FRAMES];
    size_t                    n;
    size_t                    used;       /* bytes of plain taken */
    size_t                    budget;
    int                       eliciting;
    int                       retransmission;
    int                       has_ack;
    int                       ack_forced;

    /* the number field's room first, then the frames as encoded: buf,
     * or for the stream carrier the shell's output buffer itself */
    uint8_t                  *plain;
    uint8_t                   buf[HG_MTU_MAX];
} hg_builder_t;


/* room for one more frame record; 0 when the packet has no more */
int hg_builder_slot(hg_builder_t *b);
/* the frame just encoded at plain + used, cost bytes long, is in */
void hg_builder_commit(hg_builder_t *b, size_t cost,
    hg_sent_frame_type_t type);
/* a frame of uint64 fields; 1 when added, 0 when it does not fit */
int hg_builder_add_uints(hg_builder_t *b, const hg_codec_uints_t *f,
    hg_sent_frame_type_t type);
/* a session frame, packed by protobuf-c in place; 1 when added */
int hg_builder_add_message(hg_builder_t *b, hg_codec_kind_t kind,
    const ProtobufCMessage *body, hg_sent_frame_type_t type);

/* hg_packet_out.c: the frames any carrier's packet takes */
void hg_builder_add_control(hg_builder_t *b);
/* stream data round-robin until full; 1 when some is left to send */
int hg_builder_add_stream_data(hg_builder_t *b);
void hg_builder_add_ping(hg_builder_t *b);

/* hg_session.c */
int hg_session_pending(const hg_conn_t *c);
void hg_session_add_frames(hg_builder_t *b);
void hg_session_add_closing(hg_builder_t *b);

#endif /* HG_BUILDER_H */
