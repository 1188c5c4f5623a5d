/*
 * hg_codec against protobuf-c; see codec_diff.h.
 */

#include <string.h>

#include "hg.h"
#include "hg_codec.h"
#include "codec_diff.h"


#define HG_DIFF_RANGES  2048
#define HG_DIFF_FRAMES  16


static const char *hg_codec_diff_frame(const Hopgate__Frame *pb,
    const hg_codec_frame_t *f);
static const char *hg_codec_diff_stream(const Hopgate__StreamFrame *pb,
    const hg_codec_frame_t *frame);
static const char *hg_codec_diff_ack(const Hopgate__AckFrame *pb,
    const hg_codec_bytes_t *body);
static const char *hg_codec_diff_uints(const Hopgate__Frame *pb,
    const hg_codec_frame_t *frame);
static int hg_codec_diff_string(const char *pb, const hg_codec_bytes_t *s);


/*
 * With room for all the frames, and with room for one only, so that the
 * frames beyond it are decoded as the engine reaches them.
 */
const char *
hg_codec_diff(const uint8_t *plain, size_t len)
{
    int                rc;
    size_t             i, cap;
    const char        *why;
    Hopgate__Packet   *pb;
    hg_codec_frame_t   frames[HG_DIFF_FRAMES], scratch;
    hg_codec_packet_t  pkt;

    static const size_t  caps[] = { HG_DIFF_FRAMES, 1 };

    pb = hopgate__packet__unpack(NULL, len, plain);
    why = NULL;

    for (cap = 0; why == NULL && cap < sizeof(caps) / sizeof(caps[0]); cap++) {
        pkt.frames = frames;
        pkt.cap = caps[cap];

        rc = hg_codec_packet_check(plain, len, &pkt);

        if (pb == NULL) {
            if (rc == HG_OK) {
                why = "hg_codec accepts what protobuf-c refuses";
            }

            continue;
        }

        if (rc != HG_OK) {
            why = "hg_codec refuses what protobuf-c accepts";

        } else if (pkt.pn != pb->number) {
            why = "packet number";

        } else if (pkt.nframes != pb->n_frames) {
            why = "frame count";
        }

        for (i = 0; why == NULL && i < pkt.nframes; i++) {
            why = hg_codec_diff_frame(pb->frames[i],
                                      hg_codec_packet_frame(&pkt, i,
                                                            &scratch));
        }
    }

    if (pb != NULL) {
        hopgate__packet__free_unpacked(pb, NULL);
    }

    return why;
}


static const char *
hg_codec_diff_frame(const Hopgate__Frame *pb, const hg_codec_frame_t *f)
{
    if (f == NULL) {
        return "frames end early";
    }

    if (pb->body_case != f->kind) {
        return "frame kind";
    }

    switch (f->kind) {

    case HOPGATE__FRAME__BODY__NOT_SET:
        return NULL;

    case HOPGATE__FRAME__BODY_STREAM:
        return hg_codec_diff_stream(pb->stream, f);

    case HOPGATE__FRAME__BODY_ACK:
        return hg_codec_diff_ack(pb->ack, &f->body);

    default:
        if (hg_codec_is_uints(f->kind)) {
            return hg_codec_diff_uints(pb, f);
        }

        /* the session frames: protobuf-c's on both sides */
        return hg_codec_descriptor(f->kind) != NULL ? NULL : "unknown kind";
    }
}


/* the frame as checked, and its body decoded alone: both as protobuf-c */
static const char *
hg_codec_diff_stream(const Hopgate__StreamFrame *pb,
    const hg_codec_frame_t *frame)
{
    hg_codec_stream_t  f;

    if (hg_codec_stream_decode(frame->body.data, frame->body.len, &f)
        != HG_OK)
    {
        return "STREAM refused alone";
    }

    if (memcmp(&f, &frame->u.stream, sizeof(f)) != 0) {
        return "STREAM decoded differently alone";
    }

    if (f.id != pb->id || f.offset != pb->offset) {
        return "STREAM id or offset";
    }

    if (f.data.len != pb->data.len
        || (f.data.len > 0
            && memcmp(f.data.data, pb->data.data, f.data.len) != 0))
    {
        return "STREAM data";
    }

    if (f.fin != (pb->fin != 0)) {
        return "STREAM fin";
    }

    if (f.has_meta != (pb->meta != NULL)) {
        return "STREAM meta presence";
    }

    if (f.has_meta
        && (!hg_codec_diff_string(pb->meta->client_addr, &f.client_addr)
            || !hg_codec_diff_string(pb->meta->scheme, &f.scheme)
            || !hg_codec_diff_string(pb->meta->host, &f.host)
            || !hg_codec_diff_string(pb->meta->request_id, &f.request_id)))
    {
        return "STREAM meta strings";
    }

    return NULL;
}


/* the same C string: protobuf-c's copy ends at its first NUL */
static int
hg_codec_diff_string(const char *pb, const hg_codec_bytes_t *s)
{
    size_t  n;

    n = s->len > 0 ? strnlen((const char *) s->data, s->len) : 0;

    return strlen(pb) == n && (n == 0 || memcmp(pb, s->data, n) == 0);
}


static const char *
hg_codec_diff_ack(const Hopgate__AckFrame *pb, const hg_codec_bytes_t *body)
{
    size_t          i;
    uint64_t        ranges[HG_DIFF_RANGES];
    hg_codec_ack_t  f;

    f.ranges = ranges;
    f.cap = HG_DIFF_RANGES;

    if (hg_codec_ack_decode(body->data, body->len, &f) != HG_OK) {
        return "ACK refused alone";
    }

    if (f.largest != pb->largest || f.ack_delay_us != pb->ack_delay_us
        || f.first_range != pb->first_range)
    {
        return "ACK fields";
    }

    if (f.nranges != pb->n_ranges || f.nranges > HG_DIFF_RANGES) {
        return "ACK range count";
    }

    for (i = 0; i < f.nranges; i++) {
        if (f.ranges[i] != pb->ranges[i]) {
            return "ACK ranges";
        }
    }

    return NULL;
}


static const char *
hg_codec_diff_uints(const Hopgate__Frame *pb, const hg_codec_frame_t *frame)
{
    uint64_t          want[HG_CODEC_UINTS_MAX];
    hg_codec_uints_t  f;

    f.kind = frame->kind;

    if (hg_codec_uints_decode(frame->body.data, frame->body.len, &f)
        != HG_OK || memcmp(f.v, frame->u.uints.v, sizeof(f.v)) != 0)
    {
        return "uint64 frame decoded differently alone";
    }

    memset(want, 0, sizeof(want));

    switch (f.kind) {

    case HOPGATE__FRAME__BODY_RESET_STREAM:
        want[0] = pb->reset_stream->id;
        want[1] = pb->reset_stream->error_code;
        want[2] = pb->reset_stream->final_size;
        break;

    case HOPGATE__FRAME__BODY_STOP_SENDING:
        want[0] = pb->stop_sending->id;
        want[1] = pb->stop_sending->error_code;
        break;

    case HOPGATE__FRAME__BODY_MAX_DATA:
        want[0] = pb->max_data->max;
        break;

    case HOPGATE__FRAME__BODY_MAX_STREAM_DATA:
        want[0] = pb->max_stream_data->id;
        want[1] = pb->max_stream_data->max;
        break;

    case HOPGATE__FRAME__BODY_MAX_STREAMS:
        want[0] = pb->max_streams->max;
        break;

    case HOPGATE__FRAME__BODY_PATH_CHALLENGE:
        want[0] = pb->path_challenge->data;
        break;

    case HOPGATE__FRAME__BODY_PATH_RESPONSE:
        want[0] = pb->path_response->data;
        break;

    default:
        break;
    }

    return memcmp(want, f.v, sizeof(want)) == 0 ? NULL
                                                : "uint64 frame fields";
}
