/*
 * hg_codec, the hand-written packet encoding, against protobuf-c: random
 * packets encode to the very bytes protobuf-c packs and decode to the
 * same values; mutated packets are refused exactly when protobuf-c
 * refuses them; and the corners of the wire format one by one.
 */

#include <stdlib.h>
#include <string.h>

#include "hg.h"
#include "hg_codec.h"
#include "codec_diff.h"
#include "tap.h"


#define HG_TEST_PACKETS    3000
#define HG_TEST_MUTATIONS  40
#define HG_TEST_FRAMES     8
#define HG_TEST_RANGES     12
#define HG_TEST_BUF        8192


typedef struct {
    Hopgate__Frame               frame;
    Hopgate__StreamFrame         stream;
    Hopgate__StreamMeta          meta;
    Hopgate__AckFrame            ack;
    Hopgate__ResetStreamFrame    reset;
    Hopgate__StopSendingFrame    stop;
    Hopgate__MaxDataFrame        max_data;
    Hopgate__MaxStreamDataFrame  max_stream_data;
    Hopgate__MaxStreamsFrame     max_streams;
    Hopgate__PingFrame           ping;
    Hopgate__PathChallengeFrame  path_challenge;
    Hopgate__PathResponseFrame   path_response;
    Hopgate__HelloFrame          hello;
    Hopgate__HelloAckFrame       hello_ack;
    Hopgate__GoAwayFrame         goaway;
    Hopgate__CloseFrame          close;
    Hopgate__TransportParams     params;
    uint64_t                     ranges[HG_TEST_RANGES];
    uint8_t                      data[300];
    char                         text[4][40];
    char                        *edges[2];
} hg_test_frame_t;

typedef struct {
    uint64_t          rng;
    Hopgate__Packet   pkt;
    Hopgate__Frame   *ptrs[HG_TEST_FRAMES];
    hg_test_frame_t   fr[HG_TEST_FRAMES];
    uint8_t           hand[HG_TEST_BUF];
    size_t            hand_len;
    uint8_t           packed[HG_TEST_BUF];
    size_t            packed_len;
} hg_test_t;


static size_t  test_cost_errors;


static uint64_t
test_rand(hg_test_t *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;

    return t->rng;
}


/* zero often, varint length boundaries often, anything else sometimes */
static uint64_t
test_value(hg_test_t *t)
{
    static const uint64_t  edges[] = {
        1, 127, 128, 16383, 16384, (1ULL << 32) - 1, 1ULL << 62,
        INT64_MAX, UINT64_MAX
    };

    switch (test_rand(t) % 5) {
    case 0:
        return 0;
    case 1:
        return edges[test_rand(t) % (sizeof(edges) / sizeof(edges[0]))];
    case 2:
        return test_rand(t) % 300;
    default:
        return test_rand(t) >> (test_rand(t) % 64);
    }
}


/* a frame written from p to end must be what hg_codec_frame_cost says */
static uint8_t *
test_cost(uint8_t *p, uint8_t *end, size_t body)
{
    if ((size_t) (end - p) != hg_codec_frame_cost(body)) {
        test_cost_errors++;
    }

    return end;
}


static void
test_text(hg_test_t *t, char *s, size_t size)
{
    size_t  i, n;

    n = test_rand(t) % 3 == 0 ? 0 : test_rand(t) % (size - 1);

    for (i = 0; i < n; i++) {
        s[i] = 'a' + test_rand(t) % 26;
    }

    s[n] = '\0';
}


static void
test_bytes(hg_codec_bytes_t *b, const char *s)
{
    b->data = (const uint8_t *) s;
    b->len = strlen(s);
}


/* a STREAM frame both ways: protobuf-c's struct and the hand encoding */
static uint8_t *
test_stream(hg_test_t *t, hg_test_frame_t *f, uint8_t *p)
{
    size_t              i;
    uint8_t            *data, *end;
    hg_codec_stream_t   sf;

    hopgate__stream_frame__init(&f->stream);
    memset(&sf, 0, sizeof(sf));

    sf.id = f->stream.id = test_value(t);
    sf.offset = f->stream.offset = test_value(t);
    sf.fin = f->stream.fin = test_rand(t) % 2;
    sf.data.len = f->stream.data.len = test_rand(t) % 4 == 0
                                       ? 0 : test_rand(t) % sizeof(f->data);

    for (i = 0; i < sf.data.len; i++) {
        f->data[i] = (uint8_t) test_rand(t);
    }

    f->stream.data.data = sf.data.len ? f->data : NULL;

    if (test_rand(t) % 3 == 0) {
        hopgate__stream_meta__init(&f->meta);

        for (i = 0; i < 4; i++) {
            test_text(t, f->text[i], sizeof(f->text[i]));
        }

        f->meta.client_addr = f->text[0];
        f->meta.scheme = f->text[1];
        f->meta.host = f->text[2];
        f->meta.request_id = f->text[3];
        f->stream.meta = &f->meta;

        sf.has_meta = 1;
        test_bytes(&sf.client_addr, f->text[0]);
        test_bytes(&sf.scheme, f->text[1]);
        test_bytes(&sf.host, f->text[2]);
        test_bytes(&sf.request_id, f->text[3]);
    }

    f->frame.body_case = HOPGATE__FRAME__BODY_STREAM;
    f->frame.stream = &f->stream;

    end = hg_codec_put_stream(p, &sf, &data);
    memcpy(data, f->data, sf.data.len);

    return test_cost(p, end, hg_codec_stream_len(&sf));
}


static uint8_t *
test_ack(hg_test_t *t, hg_test_frame_t *f, uint8_t *p)
{
    size_t          i;
    hg_codec_ack_t  ack;

    hopgate__ack_frame__init(&f->ack);

    ack.largest = f->ack.largest = test_value(t);
    ack.ack_delay_us = f->ack.ack_delay_us = test_value(t);
    ack.first_range = f->ack.first_range = test_value(t);
    ack.nranges = f->ack.n_ranges = test_rand(t) % HG_TEST_RANGES;

    for (i = 0; i < ack.nranges; i++) {
        f->ranges[i] = test_value(t);
    }

    ack.ranges = f->ranges;
    f->ack.ranges = f->ranges;

    f->frame.body_case = HOPGATE__FRAME__BODY_ACK;
    f->frame.ack = &f->ack;

    return test_cost(p, hg_codec_put_ack(p, &ack), hg_codec_ack_len(&ack));
}


static uint8_t *
test_uints(hg_test_t *t, hg_test_frame_t *f, hg_codec_kind_t kind,
    uint8_t *p)
{
    size_t            i;
    hg_codec_uints_t  u;

    u.kind = kind;

    for (i = 0; i < HG_CODEC_UINTS_MAX; i++) {
        u.v[i] = test_value(t);
    }

    f->frame.body_case = kind;

    switch (kind) {

    case HOPGATE__FRAME__BODY_RESET_STREAM:
        hopgate__reset_stream_frame__init(&f->reset);
        f->reset.id = u.v[0];
        f->reset.error_code = u.v[1];
        f->reset.final_size = u.v[2];
        f->frame.reset_stream = &f->reset;
        break;

    case HOPGATE__FRAME__BODY_STOP_SENDING:
        hopgate__stop_sending_frame__init(&f->stop);
        f->stop.id = u.v[0];
        f->stop.error_code = u.v[1];
        f->frame.stop_sending = &f->stop;
        break;

    case HOPGATE__FRAME__BODY_MAX_DATA:
        hopgate__max_data_frame__init(&f->max_data);
        f->max_data.max = u.v[0];
        f->frame.max_data = &f->max_data;
        break;

    case HOPGATE__FRAME__BODY_MAX_STREAM_DATA:
        hopgate__max_stream_data_frame__init(&f->max_stream_data);
        f->max_stream_data.id = u.v[0];
        f->max_stream_data.max = u.v[1];
        f->frame.max_stream_data = &f->max_stream_data;
        break;

    case HOPGATE__FRAME__BODY_MAX_STREAMS:
        hopgate__max_streams_frame__init(&f->max_streams);
        f->max_streams.max = u.v[0];
        f->frame.max_streams = &f->max_streams;
        break;

    case HOPGATE__FRAME__BODY_PATH_CHALLENGE:
        hopgate__path_challenge_frame__init(&f->path_challenge);
        f->path_challenge.data = u.v[0];
        f->frame.path_challenge = &f->path_challenge;
        break;

    case HOPGATE__FRAME__BODY_PATH_RESPONSE:
        hopgate__path_response_frame__init(&f->path_response);
        f->path_response.data = u.v[0];
        f->frame.path_response = &f->path_response;
        break;

    default:
        hopgate__ping_frame__init(&f->ping);
        f->frame.ping = &f->ping;
        break;
    }

    return test_cost(p, hg_codec_put_uints(p, &u), hg_codec_uints_len(&u));
}


/* a session frame, packed in place as the builder does */
static uint8_t *
test_session(hg_test_t *t, hg_test_frame_t *f, hg_codec_kind_t kind,
    uint8_t *p)
{
    size_t             i, len;
    ProtobufCMessage  *m;

    for (i = 0; i < 4; i++) {
        test_text(t, f->text[i], sizeof(f->text[i]));
    }

    hopgate__transport_params__init(&f->params);
    f->params.max_streams = (uint32_t) test_value(t);
    f->params.stream_window = test_value(t);
    f->params.conn_window = test_value(t);
    f->params.max_ack_delay_us = (uint32_t) test_value(t);
    f->frame.body_case = kind;

    switch (kind) {

    case HOPGATE__FRAME__BODY_HELLO:
        hopgate__hello_frame__init(&f->hello);
        f->hello.domain = f->text[0];
        f->hello.api_key = f->text[1];
        f->hello.agent_version = f->text[2];
        f->hello.agent_id = f->text[3];
        f->hello.worker_hint = (uint32_t) test_value(t);
        f->hello.params = test_rand(t) % 2 ? &f->params : NULL;
        f->frame.hello = &f->hello;
        m = &f->hello.base;
        break;

    case HOPGATE__FRAME__BODY_HELLO_ACK:
        hopgate__hello_ack_frame__init(&f->hello_ack);
        f->hello_ack.error_code = (uint32_t) test_value(t);
        f->hello_ack.error_text = f->text[0];
        f->hello_ack.session_id = test_value(t);
        f->edges[0] = f->text[1];
        f->edges[1] = f->text[2];
        f->hello_ack.n_edges = test_rand(t) % 3;
        f->hello_ack.edges = f->edges;
        f->hello_ack.params = test_rand(t) % 2 ? &f->params : NULL;
        f->frame.hello_ack = &f->hello_ack;
        m = &f->hello_ack.base;
        break;

    case HOPGATE__FRAME__BODY_GOAWAY:
        hopgate__go_away_frame__init(&f->goaway);
        f->goaway.error_code = (uint32_t) test_value(t);
        f->goaway.reason = f->text[0];
        f->frame.goaway = &f->goaway;
        m = &f->goaway.base;
        break;

    default:
        hopgate__close_frame__init(&f->close);
        f->close.error_code = (uint32_t) test_value(t);
        f->close.reason = f->text[0];
        f->frame.close = &f->close;
        m = &f->close.base;
        break;
    }

    len = protobuf_c_message_get_packed_size(m);
    p = hg_codec_put_frame_head(p, kind, len);

    return p + protobuf_c_message_pack(m, p);
}


/* a random packet, by hand into t->hand and by protobuf-c into t->packed */
static void
test_packet(hg_test_t *t)
{
    size_t            i, n;
    uint8_t          *p;
    hg_codec_kind_t   kind;
    hg_test_frame_t  *f;

    hopgate__packet__init(&t->pkt);
    t->pkt.number = test_value(t);

    p = t->hand + hg_codec_put_number(t->hand, t->pkt.number);
    n = test_rand(t) % (HG_TEST_FRAMES + 1);

    for (i = 0; i < n; i++) {
        f = &t->fr[i];
        hopgate__frame__init(&f->frame);
        t->ptrs[i] = &f->frame;

        kind = (hg_codec_kind_t) (1 + test_rand(t)
                                      % HOPGATE__FRAME__BODY_PATH_RESPONSE);

        if (kind == HOPGATE__FRAME__BODY_STREAM) {
            p = test_stream(t, f, p);

        } else if (kind == HOPGATE__FRAME__BODY_ACK) {
            p = test_ack(t, f, p);

        } else if (hg_codec_is_uints(kind)) {
            p = test_uints(t, f, kind, p);

        } else {
            p = test_session(t, f, kind, p);
        }
    }

    t->pkt.n_frames = n;
    t->pkt.frames = t->ptrs;

    t->hand_len = p - t->hand;
    t->packed_len = hopgate__packet__pack(&t->pkt, t->packed);
}


static void
test_hex(const uint8_t *p, size_t len)
{
    size_t  i;
    char    line[2 * 64 + 1];

    for (i = 0; i < len && i < 64; i++) {
        snprintf(line + 2 * i, 3, "%02x", p[i]);
    }

    line[2 * i] = '\0';
    tap_diag("%s%s", line, len > 64 ? "..." : "");
}


static void
test_encode(void)
{
    size_t       i, same, agree;
    const char  *why;
    hg_test_t    t;

    memset(&t, 0, sizeof(t));
    t.rng = 0x2545f4914f6cdd1dULL;
    same = 0;
    agree = 0;

    for (i = 0; i < HG_TEST_PACKETS; i++) {
        test_packet(&t);

        if (t.hand_len == t.packed_len
            && memcmp(t.hand, t.packed, t.hand_len) == 0)
        {
            same++;

        } else if (i - same < 3) {
            tap_diag("packet %zu: by hand, then by protobuf-c", i);
            test_hex(t.hand, t.hand_len);
            test_hex(t.packed, t.packed_len);
        }

        why = hg_codec_diff(t.hand, t.hand_len);
        if (why == NULL) {
            agree++;

        } else if (i - agree < 3) {
            tap_diag("packet %zu: %s", i, why);
            test_hex(t.hand, t.hand_len);
        }
    }

    tap_is_int(test_cost_errors, 0,
               "each frame takes the bytes hg_codec_frame_cost says");
    tap_is_int(same, HG_TEST_PACKETS,
               "random packets encode to the bytes protobuf-c packs");
    tap_is_int(agree, HG_TEST_PACKETS,
               "and both decoders read the same frames from them");
}


/* one random change: a bit, a byte, an insertion, a cut, a splice */
static size_t
test_mutate(hg_test_t *t, uint8_t *p, size_t len, size_t cap)
{
    size_t  at, n;

    at = len ? test_rand(t) % len : 0;

    switch (test_rand(t) % 6) {

    case 0:
        if (len) {
            p[at] ^= (uint8_t) (1 << test_rand(t) % 8);
        }
        return len;

    case 1:
        if (len) {
            p[at] = (uint8_t) test_rand(t);
        }
        return len;

    case 2:
        if (len + 1 > cap) {
            return len;
        }
        memmove(p + at + 1, p + at, len - at);
        p[at] = (uint8_t) test_rand(t);
        return len + 1;

    case 3:
        if (len) {
            memmove(p + at, p + at + 1, len - at - 1);
            return len - 1;
        }
        return len;

    case 4:
        return at;

    default:
        /* a copy of some bytes elsewhere: repeats fields */
        n = len - at < 16 ? len - at : 16;
        if (len + n > cap) {
            return len;
        }
        memcpy(p + len, p + at, n);
        return len + n;
    }
}


static void
test_mutations(void)
{
    size_t              i, j, k, len, runs, agree, accepted;
    uint8_t             buf[HG_TEST_BUF];
    const char         *why;
    hg_test_t           t;
    hg_codec_frame_t    frames[4];
    hg_codec_packet_t   pkt;

    memset(&t, 0, sizeof(t));
    t.rng = 0x9e3779b97f4a7c15ULL;
    runs = 0;
    agree = 0;
    accepted = 0;

    for (i = 0; i < HG_TEST_PACKETS; i++) {
        test_packet(&t);

        for (j = 0; j < HG_TEST_MUTATIONS; j++) {
            memcpy(buf, t.hand, t.hand_len);
            len = t.hand_len;

            for (k = 1 + test_rand(&t) % 3; k > 0; k--) {
                len = test_mutate(&t, buf, len, sizeof(buf) - 16);
            }

            runs++;
            why = hg_codec_diff(buf, len);

            if (why == NULL) {
                agree++;

            } else if (runs - agree < 4) {
                tap_diag("mutation %zu: %s", runs, why);
                test_hex(buf, len);
            }

            pkt.frames = frames;
            pkt.cap = 4;

            if (hg_codec_packet_check(buf, len, &pkt) == HG_OK) {
                accepted++;
            }
        }
    }

    tap_is_int(agree, runs, "mutated packets: hg_codec refuses exactly "
               "what protobuf-c refuses, and reads the same values");
    tap_ok(accepted > runs / 10 && accepted < runs - runs / 10,
           "the mutations are a mix of accepted (%zu) and refused (%zu)",
           accepted, runs - accepted);
}


static size_t
test_unhex(const char *hex, uint8_t *p)
{
    size_t        n;
    unsigned int  byte;

    for (n = 0; *hex; hex++) {
        if (*hex == ' ') {
            continue;
        }

        sscanf(hex, "%2x", &byte);
        p[n++] = (uint8_t) byte;
        hex++;
    }

    return n;
}


static void
test_corners(void)
{
    int                 rc;
    size_t              i, len;
    uint8_t             buf[256];
    const char         *why;
    hg_codec_frame_t    frames[4];
    hg_codec_packet_t   pkt;

    static const struct {
        const char  *hex;
        int          accept;
        const char  *what;
    } cases[] = {
        { "0801", 1, "a number and no frames" },
        { "", 1, "an empty packet" },
        { "880005", 1, "a tag in two bytes" },
        { "888080800005", 1, "a tag in five bytes" },
        { "88808080800005", 0, "a tag in six bytes" },
        { "00", 0, "a tag byte without a number" },
        { "800000", 1, "number 0 in two bytes: an unknown field" },
        { "0b", 0, "wire type 3 (start group)" },
        { "0c", 0, "wire type 4 (end group)" },
        { "0e", 0, "wire type 6" },
        { "7d01020304", 1, "an unknown fixed32" },
        { "7d0102", 0, "a fixed32 cut short" },
        { "790102030405060708", 1, "an unknown fixed64" },
        { "08ffffffffffffffffff01", 1, "a ten-byte varint" },
        { "08ffffffffffffffffffff01", 0, "an eleven-byte varint" },
        { "08ff", 0, "an unterminated varint" },
        { "0a00", 0, "the number as bytes" },
        { "1000", 0, "a frame as a varint" },
        { "1200", 1, "a frame without a body" },
        { "12020a00", 1, "an empty STREAM frame" },
        { "12050a00", 0, "a length past the end" },
        { "128080808080 00", 0, "a length in six bytes" },
        { "12ffffffff0f", 0, "a length beyond INT_MAX" },
        { "12050a03220101", 1, "fin as bytes: true" },
        { "12070a052500000080", 1, "fin as fixed32 0x80000000: false" },
        { "120c 0a0a 2a031a0161 2a03120173", 1, "two StreamMeta merge" },
        { "120c0a0a2a03120162 2a03120163", 1, "the last scheme wins" },
        { "1207 0a05 1a01 61 1a00", 1, "the last data wins, even empty" },
        { "120a 120820052202010220 07", 1, "ranges packed and not" },
        { "1205 1203220180", 0, "a packed range unterminated" },
        { "1207 1205 2500000000", 0, "a range as fixed32" },
        { "1204 0a00 4200", 1, "two oneof members: the last wins" },
        { "1205 0a0108 4200", 0, "an invalid member before a valid one" },
        { "120b 0a09 390102030405060708", 1, "an unknown field in STREAM" },
        { "1204 0a02 1802", 0, "data as a varint" },
        { "1207 0a05 0d00000000", 0, "an id as fixed32" },
        { "1206 0a04 2a020800", 0, "a meta string as a varint" },
        { "1204 2a020a00", 0, "MAX_DATA's max as bytes" },
        { "1206 2a040801 1001", 1, "MAX_DATA with an unknown field" },
        { "1204 42020801", 1, "PING with an unknown field" },
        { "120b 6a09 090102030405060708", 1, "a PATH_CHALLENGE" },
        { "1202 7200", 1, "a PATH_RESPONSE of 0: no field" },
        { "1205 6a03 080102", 0, "a PATH_CHALLENGE's data as a varint" },
        { "1207 6a05 0d01020304", 0, "a PATH_CHALLENGE's data as fixed32" },
        { "1208 7206 090102030405", 0, "a PATH_RESPONSE cut short" },
        { "120d 720b 1001 090102030405060708", 1,
          "a PATH_RESPONSE with an unknown field" },
        { "1203 4a0108", 0, "a broken HELLO" },
        { "1205 4a030a0161", 1, "a HELLO with a domain" },
        { "1204 0a021a00 1200 1200", 1, "an empty data field" },
        { "0801 0802", 1, "the last number wins" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = test_unhex(cases[i].hex, buf);
        pkt.frames = frames;
        pkt.cap = 4;
        rc = hg_codec_packet_check(buf, len, &pkt);
        why = hg_codec_diff(buf, len);

        tap_ok((rc == HG_OK) == cases[i].accept && why == NULL,
               "%s: %s%s%s", cases[i].what,
               cases[i].accept ? "accepted" : "refused",
               why ? ", but " : "", why ? why : "");
    }
}


static void
test_ranges_beyond_cap(void)
{
    uint8_t         buf[64];
    uint64_t        ranges[2];
    size_t          len;
    hg_codec_ack_t  ack;

    /* largest 9, then five ranges packed */
    len = test_unhex("0809 2205 0102030405", buf);

    ack.ranges = ranges;
    ack.cap = 2;

    tap_ok(hg_codec_ack_decode(buf, len, &ack) == HG_OK
           && ack.largest == 9 && ack.nranges == 5 && ranges[0] == 1
           && ranges[1] == 2,
           "ranges beyond the caller's room are counted, not stored");
}


int
main(void)
{
    test_encode();
    test_mutations();
    test_corners();
    test_ranges_beyond_cap();

    return tap_done();
}
