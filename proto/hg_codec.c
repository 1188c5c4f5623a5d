/*
 * Packets in protobuf wire format without protobuf-c's help; see
 * hg_codec.h.
 *
 * The decoder reads each field as protobuf-c 1.4.1's unpack scans it
 * (parse_tag_and_wiretype, scan_length_prefixed_data, the varint scan)
 * and refuses what that refuses. Its quirks are kept on purpose, since
 * what a peer may send must not change: a tag is at most five bytes and
 * keeps its low 32 bits, a first tag byte without number bits is an
 * error even when more bytes follow, a varint is at most ten bytes and
 * keeps its low 64 bits, a length is at most five bytes and INT_MAX, a
 * bool is true when any byte of its value has a low bit set whatever the
 * wire type, and a packed repeated field may also come unpacked.
 */

#include <limits.h>
#include <string.h>

#include "hg.h"
#include "hg_codec.h"


#define HG_WIRE_VARINT    0
#define HG_WIRE_I64       1
#define HG_WIRE_LEN       2
#define HG_WIRE_I32       5

#define HG_PACKET_NUMBER  1
#define HG_PACKET_FRAMES  2

#define HG_KIND_MAX       HOPGATE__FRAME__BODY_PATH_RESPONSE

/* the tag byte of fields 1..15 */
#define hg_codec_tag(number, wire)  ((uint8_t) ((number) << 3 | (wire)))


typedef struct {
    uint32_t          number;
    unsigned          wire;
    const uint8_t    *raw;            /* the value, length prefix included */
    size_t            rawlen;
    const uint8_t    *data;           /* HG_WIRE_LEN: the payload */
    size_t            len;
} hg_codec_field_t;


static inline const uint8_t *hg_codec_field(const uint8_t *p,
    const uint8_t *end, hg_codec_field_t *f);
static const uint8_t *hg_codec_field_any(const uint8_t *p,
    const uint8_t *end, hg_codec_field_t *f);
static inline size_t hg_codec_varint_scan(const uint8_t *p, size_t rem);
static uint64_t hg_codec_uint64(const uint8_t *p, size_t n);
static int hg_codec_bool(const uint8_t *p, size_t n);
static int hg_codec_frame_decode(const uint8_t *p, size_t len,
    hg_codec_frame_t *f);
static int hg_codec_body_decode(hg_codec_frame_t *f);
static int hg_codec_meta_decode(const uint8_t *p, size_t len,
    hg_codec_stream_t *f);
static void hg_codec_ack_add(hg_codec_ack_t *f, uint64_t v);
static size_t hg_codec_uint_len(uint64_t v);
static uint8_t *hg_codec_put_uint(uint8_t *p, unsigned number, uint64_t v);
static size_t hg_codec_string_len(const hg_codec_bytes_t *s);
static uint8_t *hg_codec_put_string(uint8_t *p, unsigned number,
    const hg_codec_bytes_t *s);
static size_t hg_codec_meta_len(const hg_codec_stream_t *f);
static size_t hg_codec_ranges_len(const hg_codec_ack_t *f);
static uint8_t *hg_codec_put_varint(uint8_t *p, uint64_t v);
static uint64_t hg_codec_fixed64(const uint8_t *p);


/* fields of each all-uint64 frame; 0: not one of them */
static const size_t  hg_codec_uints[HG_KIND_MAX + 1] = {
    [HOPGATE__FRAME__BODY_RESET_STREAM] = 3,
    [HOPGATE__FRAME__BODY_STOP_SENDING] = 2,
    [HOPGATE__FRAME__BODY_MAX_DATA] = 1,
    [HOPGATE__FRAME__BODY_MAX_STREAM_DATA] = 2,
    [HOPGATE__FRAME__BODY_MAX_STREAMS] = 1,
    [HOPGATE__FRAME__BODY_PATH_CHALLENGE] = 1,
    [HOPGATE__FRAME__BODY_PATH_RESPONSE] = 1,
};

/* the all-uint64 frames whose fields are fixed64, not varints */
static const uint8_t  hg_codec_fixed[HG_KIND_MAX + 1] = {
    [HOPGATE__FRAME__BODY_PATH_CHALLENGE] = 1,
    [HOPGATE__FRAME__BODY_PATH_RESPONSE] = 1,
};

static const ProtobufCMessageDescriptor  *hg_codec_descriptors[
    HG_KIND_MAX + 1] = {
    [HOPGATE__FRAME__BODY_HELLO] = &hopgate__hello_frame__descriptor,
    [HOPGATE__FRAME__BODY_HELLO_ACK] = &hopgate__hello_ack_frame__descriptor,
    [HOPGATE__FRAME__BODY_GOAWAY] = &hopgate__go_away_frame__descriptor,
    [HOPGATE__FRAME__BODY_CLOSE] = &hopgate__close_frame__descriptor,
};


int
hg_codec_is_uints(hg_codec_kind_t kind)
{
    return kind == HOPGATE__FRAME__BODY_PING
           || (kind > 0 && kind <= HG_KIND_MAX && hg_codec_uints[kind] > 0);
}


const ProtobufCMessageDescriptor *
hg_codec_descriptor(hg_codec_kind_t kind)
{
    if (kind <= 0 || kind > HG_KIND_MAX) {
        return NULL;
    }

    return hg_codec_descriptors[kind];
}


/* ---- decoding ------------------------------------------------------------ */

/*
 * One field at p < end, as protobuf-c scans it; NULL when it would fail.
 * Inline, the usual shapes: a one-byte tag, then a varint, or a length in
 * one or two bytes.
 */
static inline const uint8_t *
hg_codec_field(const uint8_t *p, const uint8_t *end, hg_codec_field_t *f)
{
    size_t  rem, n, len;

    rem = end - p;

    if (rem < 3 || p[0] < 0x08 || p[0] >= 0x80) {
        return hg_codec_field_any(p, end, f);
    }

    f->number = p[0] >> 3;
    f->wire = p[0] & 7;
    f->raw = p + 1;
    f->data = NULL;
    f->len = 0;

    if (f->wire == HG_WIRE_VARINT) {
        f->rawlen = hg_codec_varint_scan(p + 1, rem - 1);
        return f->rawlen ? p + 1 + f->rawlen : NULL;
    }

    if (f->wire != HG_WIRE_LEN) {
        return hg_codec_field_any(p, end, f);
    }

    if (p[1] < 0x80) {
        n = 1;
        len = p[1];

    } else if (p[2] < 0x80) {
        n = 2;
        len = (size_t) (p[1] & 0x7f) | (size_t) p[2] << 7;

    } else {
        return hg_codec_field_any(p, end, f);
    }

    if (len > rem - 1 - n) {
        return NULL;
    }

    f->data = p + 1 + n;
    f->len = len;
    f->rawlen = n + len;

    return f->data + len;
}


static const uint8_t *
hg_codec_field_any(const uint8_t *p, const uint8_t *end, hg_codec_field_t *f)
{
    size_t    rem, n, max, shift;
    size_t    val;
    uint32_t  tag;

    rem = end - p;

    if ((p[0] & 0xf8) == 0) {
        return NULL;
    }

    f->wire = p[0] & 7;
    tag = (p[0] & 0x7f) >> 3;
    n = 1;

    if (p[0] & 0x80) {
        max = rem < 5 ? rem : 5;
        shift = 4;

        for ( ;; ) {
            if (n == max) {
                return NULL;
            }

            tag |= (uint32_t) (p[n] & 0x7f) << shift;

            if ((p[n++] & 0x80) == 0) {
                break;
            }

            shift += 7;
        }
    }

    f->number = tag;
    p += n;
    rem -= n;

    f->raw = p;
    f->data = NULL;
    f->len = 0;

    switch (f->wire) {

    case HG_WIRE_VARINT:
        f->rawlen = hg_codec_varint_scan(p, rem);
        if (f->rawlen == 0) {
            return NULL;
        }
        break;

    case HG_WIRE_I64:
        if (rem < 8) {
            return NULL;
        }
        f->rawlen = 8;
        break;

    case HG_WIRE_I32:
        if (rem < 4) {
            return NULL;
        }
        f->rawlen = 4;
        break;

    case HG_WIRE_LEN:
        max = rem < 5 ? rem : 5;
        val = 0;

        for (n = 0; n < max; n++) {
            val |= (size_t) (p[n] & 0x7f) << (7 * n);

            if ((p[n] & 0x80) == 0) {
                break;
            }
        }

        if (n == max) {
            return NULL;
        }

        n++;

        if (val > INT_MAX || n + val > rem) {
            return NULL;
        }

        f->data = p + n;
        f->len = val;
        f->rawlen = n + val;
        break;

    default:
        return NULL;
    }

    return p + f->rawlen;
}


/* a varint's length, at most ten bytes; 0 when unterminated */
static inline size_t
hg_codec_varint_scan(const uint8_t *p, size_t rem)
{
    size_t  i, max;

    max = rem < 10 ? rem : 10;

    for (i = 0; i < max; i++) {
        if ((p[i] & 0x80) == 0) {
            return i + 1;
        }
    }

    return 0;
}


static uint64_t
hg_codec_uint64(const uint8_t *p, size_t n)
{
    size_t    i;
    uint64_t  v;

    v = 0;

    for (i = 0; i < n; i++) {
        v |= (uint64_t) (p[i] & 0x7f) << (7 * i);
    }

    return v;
}


/* a fixed64's eight bytes, little-endian */
static uint64_t
hg_codec_fixed64(const uint8_t *p)
{
    size_t    i;
    uint64_t  v;

    v = 0;

    for (i = 0; i < 8; i++) {
        v |= (uint64_t) p[i] << (8 * i);
    }

    return v;
}


static int
hg_codec_bool(const uint8_t *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (p[i] & 0x7f) {
            return 1;
        }
    }

    return 0;
}


int
hg_codec_packet_check(const uint8_t *p, size_t len, hg_codec_packet_t *pkt)
{
    const uint8_t     *end;
    hg_codec_frame_t   scratch;
    hg_codec_field_t   f;

    end = p + len;
    pkt->pn = 0;
    pkt->nframes = 0;
    pkt->rest = p;
    pkt->end = end;

    while (p < end) {
        p = hg_codec_field(p, end, &f);
        if (p == NULL) {
            return HG_ERR;
        }

        if (f.number == HG_PACKET_NUMBER) {
            if (f.wire != HG_WIRE_VARINT) {
                return HG_ERR;
            }

            pkt->pn = hg_codec_uint64(f.raw, f.rawlen);

        } else if (f.number == HG_PACKET_FRAMES) {
            if (f.wire != HG_WIRE_LEN
                || hg_codec_frame_decode(f.data, f.len,
                                         pkt->nframes < pkt->cap
                                         ? &pkt->frames[pkt->nframes]
                                         : &scratch)
                   != HG_OK)
            {
                return HG_ERR;
            }

            if (++pkt->nframes == pkt->cap) {
                pkt->rest = p;
            }
        }
    }

    return HG_OK;
}


const hg_codec_frame_t *
hg_codec_packet_frame(hg_codec_packet_t *pkt, size_t i,
    hg_codec_frame_t *scratch)
{
    hg_codec_field_t  f;

    if (i < pkt->cap) {
        return &pkt->frames[i];
    }

    while (pkt->rest != NULL && pkt->rest < pkt->end) {
        pkt->rest = hg_codec_field(pkt->rest, pkt->end, &f);

        if (pkt->rest != NULL && f.number == HG_PACKET_FRAMES
            && hg_codec_frame_decode(f.data, f.len, scratch) == HG_OK)
        {
            return scratch;
        }
    }

    return NULL;
}


/* every oneof member a Frame has must be valid, not only the last */
static int
hg_codec_frame_decode(const uint8_t *p, size_t len, hg_codec_frame_t *f)
{
    const uint8_t     *end;
    hg_codec_field_t   g;

    f->kind = 0;
    f->body.data = NULL;
    f->body.len = 0;
    end = p + len;

    while (p < end) {
        p = hg_codec_field(p, end, &g);
        if (p == NULL) {
            return HG_ERR;
        }

        if (g.number == 0 || g.number > HG_KIND_MAX) {
            continue;
        }

        if (g.wire != HG_WIRE_LEN) {
            return HG_ERR;
        }

        f->kind = (hg_codec_kind_t) g.number;
        f->body.data = g.data;
        f->body.len = g.len;

        if (hg_codec_body_decode(f) != HG_OK) {
            return HG_ERR;
        }
    }

    return HG_OK;
}


static int
hg_codec_body_decode(hg_codec_frame_t *f)
{
    hg_codec_ack_t     ack;
    ProtobufCMessage  *m;

    switch (f->kind) {

    case HOPGATE__FRAME__BODY_STREAM:
        return hg_codec_stream_decode(f->body.data, f->body.len,
                                      &f->u.stream);

    case HOPGATE__FRAME__BODY_ACK:
        ack.ranges = NULL;
        ack.cap = 0;
        return hg_codec_ack_decode(f->body.data, f->body.len, &ack);

    default:
        if (hg_codec_is_uints(f->kind)) {
            f->u.uints.kind = f->kind;
            return hg_codec_uints_decode(f->body.data, f->body.len,
                                         &f->u.uints);
        }

        m = protobuf_c_message_unpack(hg_codec_descriptor(f->kind), NULL,
                                      f->body.len, f->body.data);
        if (m == NULL) {
            return HG_ERR;
        }

        protobuf_c_message_free_unpacked(m, NULL);
        return HG_OK;
    }
}


int
hg_codec_stream_decode(const uint8_t *p, size_t len, hg_codec_stream_t *f)
{
    const uint8_t     *end;
    hg_codec_field_t   g;

    memset(f, 0, sizeof(hg_codec_stream_t));
    end = p + len;

    while (p < end) {
        p = hg_codec_field(p, end, &g);
        if (p == NULL) {
            return HG_ERR;
        }

        switch (g.number) {

        case 1:
        case 2:
            if (g.wire != HG_WIRE_VARINT) {
                return HG_ERR;
            }

            if (g.number == 1) {
                f->id = hg_codec_uint64(g.raw, g.rawlen);
            } else {
                f->offset = hg_codec_uint64(g.raw, g.rawlen);
            }

            break;

        case 3:
            if (g.wire != HG_WIRE_LEN) {
                return HG_ERR;
            }

            f->data.data = g.data;
            f->data.len = g.len;
            break;

        case 4:
            f->fin = hg_codec_bool(g.raw, g.rawlen);
            break;

        case 5:
            /* a repeated message merges into the one before */
            if (g.wire != HG_WIRE_LEN
                || hg_codec_meta_decode(g.data, g.len, f) != HG_OK)
            {
                return HG_ERR;
            }

            f->has_meta = 1;
            break;

        default:
            break;
        }
    }

    return HG_OK;
}


/* StreamMeta's strings: the last one present wins */
static int
hg_codec_meta_decode(const uint8_t *p, size_t len, hg_codec_stream_t *f)
{
    const uint8_t     *end;
    hg_codec_bytes_t  *s;
    hg_codec_field_t   g;

    end = p + len;

    while (p < end) {
        p = hg_codec_field(p, end, &g);
        if (p == NULL) {
            return HG_ERR;
        }

        switch (g.number) {
        case 1:
            s = &f->client_addr;
            break;
        case 2:
            s = &f->scheme;
            break;
        case 3:
            s = &f->host;
            break;
        case 4:
            s = &f->request_id;
            break;
        default:
            continue;
        }

        if (g.wire != HG_WIRE_LEN) {
            return HG_ERR;
        }

        s->data = g.data;
        s->len = g.len;
    }

    return HG_OK;
}


int
hg_codec_ack_decode(const uint8_t *p, size_t len, hg_codec_ack_t *f)
{
    size_t             n;
    const uint8_t     *end, *q, *qend;
    hg_codec_field_t   g;

    f->largest = 0;
    f->ack_delay_us = 0;
    f->first_range = 0;
    f->nranges = 0;
    end = p + len;

    while (p < end) {
        p = hg_codec_field(p, end, &g);
        if (p == NULL) {
            return HG_ERR;
        }

        if (g.number == 0 || g.number > 4) {
            continue;
        }

        if (g.number == 4 && g.wire == HG_WIRE_LEN) {
            q = g.data;
            qend = q + g.len;

            while (q < qend) {
                n = hg_codec_varint_scan(q, qend - q);
                if (n == 0) {
                    return HG_ERR;
                }

                hg_codec_ack_add(f, hg_codec_uint64(q, n));
                q += n;
            }

            continue;
        }

        if (g.wire != HG_WIRE_VARINT) {
            return HG_ERR;
        }

        switch (g.number) {
        case 1:
            f->largest = hg_codec_uint64(g.raw, g.rawlen);
            break;
        case 2:
            f->ack_delay_us = hg_codec_uint64(g.raw, g.rawlen);
            break;
        case 3:
            f->first_range = hg_codec_uint64(g.raw, g.rawlen);
            break;
        default:
            hg_codec_ack_add(f, hg_codec_uint64(g.raw, g.rawlen));
            break;
        }
    }

    return HG_OK;
}


static void
hg_codec_ack_add(hg_codec_ack_t *f, uint64_t v)
{
    if (f->nranges < f->cap) {
        f->ranges[f->nranges] = v;
    }

    f->nranges++;
}


int
hg_codec_uints_decode(const uint8_t *p, size_t len, hg_codec_uints_t *f)
{
    size_t             n;
    unsigned           wire;
    const uint8_t     *end;
    hg_codec_field_t   g;

    memset(f->v, 0, sizeof(f->v));
    n = 0;
    wire = HG_WIRE_VARINT;

    if (f->kind > 0 && f->kind <= HG_KIND_MAX) {
        n = hg_codec_uints[f->kind];
        wire = hg_codec_fixed[f->kind] ? HG_WIRE_I64 : HG_WIRE_VARINT;
    }

    end = p + len;

    while (p < end) {
        p = hg_codec_field(p, end, &g);
        if (p == NULL) {
            return HG_ERR;
        }

        if (g.number == 0 || g.number > n) {
            continue;
        }

        if (g.wire != wire) {
            return HG_ERR;
        }

        f->v[g.number - 1] = wire == HG_WIRE_I64
                             ? hg_codec_fixed64(g.raw)
                             : hg_codec_uint64(g.raw, g.rawlen);
    }

    return HG_OK;
}


/* ---- encoding ------------------------------------------------------------ */

size_t
hg_codec_put_number(uint8_t *p, uint64_t pn)
{
    return hg_codec_put_uint(p, HG_PACKET_NUMBER, pn) - p;
}


uint8_t *
hg_codec_put_frame_head(uint8_t *p, hg_codec_kind_t kind, size_t body)
{
    *p++ = hg_codec_tag(HG_PACKET_FRAMES, HG_WIRE_LEN);
    p = hg_codec_put_varint(p, 1 + hg_codec_varint_len(body) + body);
    *p++ = hg_codec_tag(kind, HG_WIRE_LEN);

    return hg_codec_put_varint(p, body);
}


size_t
hg_codec_stream_len(const hg_codec_stream_t *f)
{
    size_t  n, meta;

    n = hg_codec_uint_len(f->id) + hg_codec_uint_len(f->offset)
        + hg_codec_string_len(&f->data) + (f->fin ? 2 : 0);

    if (f->has_meta) {
        meta = hg_codec_meta_len(f);
        n += 1 + hg_codec_varint_len(meta) + meta;
    }

    return n;
}


uint8_t *
hg_codec_put_stream(uint8_t *p, const hg_codec_stream_t *f, uint8_t **data)
{
    p = hg_codec_put_frame_head(p, HOPGATE__FRAME__BODY_STREAM,
                                hg_codec_stream_len(f));
    p = hg_codec_put_uint(p, 1, f->id);
    p = hg_codec_put_uint(p, 2, f->offset);

    if (f->data.len > 0) {
        *p++ = hg_codec_tag(3, HG_WIRE_LEN);
        p = hg_codec_put_varint(p, f->data.len);
    }

    *data = p;
    p += f->data.len;

    if (f->fin) {
        *p++ = hg_codec_tag(4, HG_WIRE_VARINT);
        *p++ = 1;
    }

    if (f->has_meta) {
        *p++ = hg_codec_tag(5, HG_WIRE_LEN);
        p = hg_codec_put_varint(p, hg_codec_meta_len(f));
        p = hg_codec_put_string(p, 1, &f->client_addr);
        p = hg_codec_put_string(p, 2, &f->scheme);
        p = hg_codec_put_string(p, 3, &f->host);
        p = hg_codec_put_string(p, 4, &f->request_id);
    }

    return p;
}


size_t
hg_codec_ack_len(const hg_codec_ack_t *f)
{
    size_t  n, ranges;

    n = hg_codec_uint_len(f->largest) + hg_codec_uint_len(f->ack_delay_us)
        + hg_codec_uint_len(f->first_range);

    if (f->nranges > 0) {
        ranges = hg_codec_ranges_len(f);
        n += 1 + hg_codec_varint_len(ranges) + ranges;
    }

    return n;
}


uint8_t *
hg_codec_put_ack(uint8_t *p, const hg_codec_ack_t *f)
{
    size_t  i;

    p = hg_codec_put_frame_head(p, HOPGATE__FRAME__BODY_ACK,
                                hg_codec_ack_len(f));
    p = hg_codec_put_uint(p, 1, f->largest);
    p = hg_codec_put_uint(p, 2, f->ack_delay_us);
    p = hg_codec_put_uint(p, 3, f->first_range);

    if (f->nranges > 0) {
        *p++ = hg_codec_tag(4, HG_WIRE_LEN);
        p = hg_codec_put_varint(p, hg_codec_ranges_len(f));

        for (i = 0; i < f->nranges; i++) {
            p = hg_codec_put_varint(p, f->ranges[i]);
        }
    }

    return p;
}


size_t
hg_codec_uints_len(const hg_codec_uints_t *f)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < hg_codec_uints[f->kind]; i++) {
        if (hg_codec_fixed[f->kind]) {
            n += f->v[i] ? 1 + 8 : 0;
        } else {
            n += hg_codec_uint_len(f->v[i]);
        }
    }

    return n;
}


uint8_t *
hg_codec_put_uints(uint8_t *p, const hg_codec_uints_t *f)
{
    size_t  i, b;

    p = hg_codec_put_frame_head(p, f->kind, hg_codec_uints_len(f));

    for (i = 0; i < hg_codec_uints[f->kind]; i++) {
        if (!hg_codec_fixed[f->kind]) {
            p = hg_codec_put_uint(p, i + 1, f->v[i]);
            continue;
        }

        if (f->v[i] == 0) {
            continue;
        }

        *p++ = hg_codec_tag(i + 1, HG_WIRE_I64);

        for (b = 0; b < 8; b++) {
            *p++ = (uint8_t) (f->v[i] >> (8 * b));
        }
    }

    return p;
}


/* a proto3 uint64 field: absent when 0 */
static size_t
hg_codec_uint_len(uint64_t v)
{
    return v ? 1 + hg_codec_varint_len(v) : 0;
}


static uint8_t *
hg_codec_put_uint(uint8_t *p, unsigned number, uint64_t v)
{
    if (v == 0) {
        return p;
    }

    *p++ = hg_codec_tag(number, HG_WIRE_VARINT);

    return hg_codec_put_varint(p, v);
}


/* a proto3 string or bytes field: absent when empty */
static size_t
hg_codec_string_len(const hg_codec_bytes_t *s)
{
    return s->len ? 1 + hg_codec_varint_len(s->len) + s->len : 0;
}


static uint8_t *
hg_codec_put_string(uint8_t *p, unsigned number, const hg_codec_bytes_t *s)
{
    if (s->len == 0) {
        return p;
    }

    *p++ = hg_codec_tag(number, HG_WIRE_LEN);
    p = hg_codec_put_varint(p, s->len);
    memcpy(p, s->data, s->len);

    return p + s->len;
}


static size_t
hg_codec_meta_len(const hg_codec_stream_t *f)
{
    return hg_codec_string_len(&f->client_addr)
           + hg_codec_string_len(&f->scheme)
           + hg_codec_string_len(&f->host)
           + hg_codec_string_len(&f->request_id);
}


static size_t
hg_codec_ranges_len(const hg_codec_ack_t *f)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < f->nranges; i++) {
        n += hg_codec_varint_len(f->ranges[i]);
    }

    return n;
}


static uint8_t *
hg_codec_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t) (v | 0x80);
        v >>= 7;
    }

    *p++ = (uint8_t) v;

    return p;
}
