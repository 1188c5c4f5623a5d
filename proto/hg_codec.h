/*
 * The protobuf wire format of proto/hopgate.proto, by hand, for the frames
 * every packet carries: Packet and Frame themselves, STREAM, ACK, and the
 * frames made of uint64 fields alone (RESET_STREAM, STOP_SENDING,
 * MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS, PING, and PATH_CHALLENGE and
 * PATH_RESPONSE, whose one field is a fixed64). HELLO, HELLO_ACK, GOAWAY
 * and CLOSE, which carry strings and nested messages and go once a
 * session, stay with protobuf-c.
 *
 * Encoding writes straight into the packet's plaintext, sizes known in
 * advance, exactly the bytes protobuf-c's pack produces: fields in number
 * order, proto3 defaults omitted, ACK ranges packed.
 *
 * Decoding allocates nothing and points STREAM data and meta strings into
 * the plaintext. It accepts exactly what protobuf-c 1.4's unpack accepts,
 * with the values that unpack would give: unknown fields are skipped,
 * the last of a repeated scalar or oneof member wins, repeated StreamMeta
 * merge, and anything protobuf-c rejects (a bad tag or wire type for a
 * known field, an unterminated or over-long varint, a length past the
 * end) rejects the whole packet. hg_codec_packet_check runs before any
 * frame takes effect, so a malformed packet changes nothing.
 */

#ifndef HG_CODEC_H
#define HG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "hopgate.pb-c.h"


/* Frame's oneof numbers are its HOPGATE__FRAME__BODY_* values */
typedef Hopgate__Frame__BodyCase  hg_codec_kind_t;

typedef struct {
    const uint8_t  *data;
    size_t          len;
} hg_codec_bytes_t;

typedef struct {
    uint64_t          id;
    uint64_t          offset;
    hg_codec_bytes_t  data;           /* encoding: only its len is used */
    int               fin;
    int               has_meta;
    hg_codec_bytes_t  client_addr;    /* StreamMeta, when has_meta */
    hg_codec_bytes_t  scheme;
    hg_codec_bytes_t  host;
    hg_codec_bytes_t  request_id;
} hg_codec_stream_t;

typedef struct {
    uint64_t          largest;
    uint64_t          ack_delay_us;
    uint64_t          first_range;
    size_t            nranges;        /* all the frame has */
    uint64_t         *ranges;         /* decoding keeps the first cap */
    size_t            cap;
} hg_codec_ack_t;

/* fields of the frames made of uint64s alone, in field number order */
#define HG_CODEC_UINTS_MAX  3

typedef struct {
    hg_codec_kind_t   kind;
    uint64_t          v[HG_CODEC_UINTS_MAX];
} hg_codec_uints_t;

/* one Frame: its last oneof member (kind 0: none), decoded */
typedef struct {
    hg_codec_kind_t     kind;
    hg_codec_bytes_t    body;
    union {
        hg_codec_stream_t  stream;
        hg_codec_uints_t   uints;
    } u;                              /* STREAM, or the uint64 frames */
} hg_codec_frame_t;

/* a checked packet */
typedef struct {
    uint64_t            pn;
    size_t              nframes;
    hg_codec_frame_t   *frames;       /* the caller's, for the first cap */
    size_t              cap;
    const uint8_t      *rest;         /* where frame cap starts */
    const uint8_t      *end;
} hg_codec_packet_t;


/* a varint's bytes: one per 7 significant bits */
static inline size_t
hg_codec_varint_len(uint64_t v)
{
    return (size_t) ((63 - __builtin_clzll(v | 1)) * 9 + 73) / 64;
}


/* --- encoding ------------------------------------------------------------ */

/* bytes a frame whose body encodes to `body` bytes adds to a Packet */
static inline size_t
hg_codec_frame_cost(size_t body)
{
    size_t  frame;

    frame = 1 + hg_codec_varint_len(body) + body;

    return 1 + hg_codec_varint_len(frame) + frame;
}

/* the Packet's number field (nothing for 0); returns its length */
size_t hg_codec_put_number(uint8_t *p, uint64_t pn);
/* a Packet.frames entry and the oneof member's header; returns the body */
uint8_t *hg_codec_put_frame_head(uint8_t *p, hg_codec_kind_t kind,
    size_t body);

/* the body length of a STREAM frame carrying f->data.len bytes */
size_t hg_codec_stream_len(const hg_codec_stream_t *f);
/*
 * The whole frame, head included, except the data bytes: *data is where
 * they go (f->data.len of them). Returns the end of the frame.
 */
uint8_t *hg_codec_put_stream(uint8_t *p, const hg_codec_stream_t *f,
    uint8_t **data);

size_t hg_codec_ack_len(const hg_codec_ack_t *f);
uint8_t *hg_codec_put_ack(uint8_t *p, const hg_codec_ack_t *f);

/* RESET_STREAM, STOP_SENDING, MAX_*, PING, PATH_*: the fields from f->v */
size_t hg_codec_uints_len(const hg_codec_uints_t *f);
uint8_t *hg_codec_put_uints(uint8_t *p, const hg_codec_uints_t *f);

/* --- decoding ------------------------------------------------------------ */

/*
 * HG_OK when protobuf-c would unpack the Packet: then pkt->pn is its
 * number, pkt->nframes its frame count, and its first pkt->cap frames
 * are decoded into pkt->frames (ACK ranges and the session frames
 * excepted: decode those from the body).
 */
int hg_codec_packet_check(const uint8_t *p, size_t len,
    hg_codec_packet_t *pkt);
/*
 * Frame i of a checked packet, i taken in order: from pkt->frames below
 * cap, decoded into *scratch beyond.
 */
const hg_codec_frame_t *hg_codec_packet_frame(hg_codec_packet_t *pkt,
    size_t i, hg_codec_frame_t *scratch);

/* a frame body of the kind: HG_OK, or HG_ERR as protobuf-c would */
int hg_codec_stream_decode(const uint8_t *p, size_t len,
    hg_codec_stream_t *f);
/* f->ranges and f->cap are the caller's; ranges beyond cap are counted */
int hg_codec_ack_decode(const uint8_t *p, size_t len, hg_codec_ack_t *f);
/* f->kind is the caller's */
int hg_codec_uints_decode(const uint8_t *p, size_t len,
    hg_codec_uints_t *f);

/* the kinds hg_codec_uints_* handle */
int hg_codec_is_uints(hg_codec_kind_t kind);
/* the descriptor protobuf-c unpacks the other kinds with */
const ProtobufCMessageDescriptor *hg_codec_descriptor(hg_codec_kind_t kind);

#endif /* HG_CODEC_H */
