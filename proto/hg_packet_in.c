/*
 * Incoming packets: decoding, limits, and what each frame does; then the
 * fate of what we sent: acknowledged frames are settled, lost frames are
 * queued again (never the packet as a whole).
 *
 * A packet is checked whole before any frame takes effect (hg_codec.c,
 * which accepts exactly what protobuf-c would), its frames decoded on the
 * way; then they are acted on, STREAM data going straight from the
 * decrypted plaintext into the stream.
 */

#include <string.h>

#include "hg_codec.h"
#include "hg_conn.h"


#define HG_ACK_DECODE_MAX  256

/* frames decoded while a packet is checked: all that we ever send */
#define HG_RECV_FRAMES     HG_MAX_SENT_FRAMES


static void hg_packet_frames(hg_conn_t *c, hg_codec_packet_t *pkt);
static int hg_frame_dispatch(hg_conn_t *c, const hg_codec_frame_t *f);
static int hg_frame_uints(hg_conn_t *c, const hg_codec_uints_t *f);
static int hg_frame_stream(hg_conn_t *c, const hg_codec_stream_t *f);
static int hg_frame_ack(hg_conn_t *c, const hg_codec_ack_t *f);
static int hg_frame_reset(hg_conn_t *c, uint64_t id, uint64_t error_code,
    uint64_t final_size);
static int hg_frame_stop(hg_conn_t *c, uint64_t id, uint64_t error_code);
static int hg_frame_max_stream_data(hg_conn_t *c, uint64_t id,
    uint64_t max);


/* ---- one packet ---------------------------------------------------------- */

void
hg_packet_process(void *arg, const uint8_t *plain, size_t len)
{
    hg_conn_t                *c = arg;
    size_t                    i;
    unsigned                  eliciting;
    int                       probing;
    uint64_t                  largest;
    hg_codec_packet_t         pkt;
    hg_codec_frame_t          frames[HG_RECV_FRAMES], scratch;
    const hg_codec_frame_t   *f;

    if (c->state == HG_CS_CLOSED) {
        return;
    }

    /* it decrypted: the peer really sent it */
    c->authenticated_input = 1;

    pkt.frames = frames;
    pkt.cap = HG_RECV_FRAMES;

    if (hg_codec_packet_check(plain, len, &pkt) != HG_OK
        || pkt.nframes == 0 || pkt.nframes > c->cfg.max_frames)
    {
        c->stats.malformed++;

        /* a datagram may be damaged on the way; a TLS stream cannot be */
        if (c->carrier == HG_CARRIER_STREAM) {
            hg_conn_protocol_error(c, "malformed packet");
        }
        return;
    }

    if (c->carrier == HG_CARRIER_STREAM) {
        hg_packet_frames(c, &pkt);
        return;
    }

    if (hg_ackq_is_duplicate(&c->ackq, pkt.pn)) {
        return;
    }

    c->stats.packets_received++;
    eliciting = 0;
    probing = 1;
    largest = c->ackq.largest;

    for (i = 0; i < pkt.nframes; i++) {
        f = hg_codec_packet_frame(&pkt, i, &scratch);
        if (f == NULL) {
            break;
        }

        if (c->state == HG_CS_CLOSED
            || (c->state == HG_CS_CLOSING
                && f->kind != HOPGATE__FRAME__BODY_CLOSE))
        {
            continue;
        }

        eliciting |= hg_ackq_frame_need(f->kind);

        if (f->kind != HOPGATE__FRAME__BODY_PATH_CHALLENGE
            && f->kind != HOPGATE__FRAME__BODY_PATH_RESPONSE)
        {
            probing = 0;
        }

        if (hg_frame_dispatch(c, f) != HG_OK) {
            c->stats.malformed++;
            hg_conn_protocol_error(c, "malformed frame");
            break;
        }
    }

    /* the newest packet that is not a probe may move the session */
    if (!probing && (largest == UINT64_MAX || pkt.pn > largest)) {
        c->path.input_newest = 1;
    }

    hg_ackq_on_received(&c->ackq, pkt.pn, eliciting, c->now);
}


/*
 * A stream-carried packet: the byte stream already delivered it once and
 * in order, so nothing is acknowledged and no path can move; the frames
 * only take effect.
 */
static void
hg_packet_frames(hg_conn_t *c, hg_codec_packet_t *pkt)
{
    size_t                    i;
    hg_codec_frame_t          scratch;
    const hg_codec_frame_t   *f;

    c->stats.packets_received++;

    for (i = 0; i < pkt->nframes; i++) {
        f = hg_codec_packet_frame(pkt, i, &scratch);
        if (f == NULL || c->state == HG_CS_CLOSED
            || c->state == HG_CS_CLOSING)
        {
            break;
        }

        switch (f->kind) {

        case HOPGATE__FRAME__BODY_ACK:
        case HOPGATE__FRAME__BODY_PATH_CHALLENGE:
        case HOPGATE__FRAME__BODY_PATH_RESPONSE:
            /* meaningless here; ignored as an older peer's extras */
            continue;

        default:
            break;
        }

        if (hg_frame_dispatch(c, f) != HG_OK) {
            c->stats.malformed++;
            hg_conn_protocol_error(c, "malformed frame");
            break;
        }
    }
}


static int
hg_frame_dispatch(hg_conn_t *c, const hg_codec_frame_t *f)
{
    uint64_t        words[2 * HG_ACK_DECODE_MAX];
    hg_codec_ack_t  ack;

    switch (f->kind) {

    case HOPGATE__FRAME__BODY_STREAM:
        return hg_frame_stream(c, &f->u.stream);

    case HOPGATE__FRAME__BODY_ACK:
        ack.ranges = words;
        ack.cap = 2 * HG_ACK_DECODE_MAX;

        if (hg_codec_ack_decode(f->body.data, f->body.len, &ack) != HG_OK) {
            return HG_ERR;
        }

        return hg_frame_ack(c, &ack);

    case HOPGATE__FRAME__BODY_HELLO:
    case HOPGATE__FRAME__BODY_HELLO_ACK:
    case HOPGATE__FRAME__BODY_GOAWAY:
    case HOPGATE__FRAME__BODY_CLOSE:
        return hg_session_frame(c, f->kind, &f->body);

    default:
        if (!hg_codec_is_uints(f->kind)) {
            /* a Frame without a body */
            return HG_ERR;
        }

        return hg_frame_uints(c, &f->u.uints);
    }
}


static int
hg_frame_uints(hg_conn_t *c, const hg_codec_uints_t *f)
{
    switch (f->kind) {

    case HOPGATE__FRAME__BODY_RESET_STREAM:
        return hg_frame_reset(c, f->v[0], f->v[1], f->v[2]);

    case HOPGATE__FRAME__BODY_STOP_SENDING:
        return hg_frame_stop(c, f->v[0], f->v[1]);

    case HOPGATE__FRAME__BODY_MAX_DATA:
        if (f->v[0] > c->send_max) {
            c->send_max = f->v[0];
        }
        return HG_OK;

    case HOPGATE__FRAME__BODY_MAX_STREAM_DATA:
        return hg_frame_max_stream_data(c, f->v[0], f->v[1]);

    case HOPGATE__FRAME__BODY_MAX_STREAMS:
        if (f->v[0] > c->peer_max_streams) {
            c->peer_max_streams = f->v[0];
            hg_conn_event(c, HG_EV_STREAMS_AVAILABLE, -1, 0);
        }
        return HG_OK;

    case HOPGATE__FRAME__BODY_PATH_CHALLENGE:
        hg_path_on_challenge(c, f->v[0]);
        return HG_OK;

    case HOPGATE__FRAME__BODY_PATH_RESPONSE:
        hg_path_on_response(c, f->v[0]);
        return HG_OK;

    default:
        /* PING */
        return HG_OK;
    }
}




/* ---- stream frames --------------------------------------------------------- */

/*
 * The stream a frame names, opening peer streams as needed (a frame for a
 * higher id opens every lower one, as in QUIC, since frames reorder).
 * NULL with *rc == HG_OK: a stream already finished, ignore the frame.
 */
static hg_cstream_t *
hg_stream_for_frame(hg_conn_t *c, uint64_t id, int *rc)
{
    hg_cstream_t  *cs;
    uint64_t       seq;

    *rc = HG_OK;

    if (id > INT64_MAX) {
        *rc = HG_ERR;
        return NULL;
    }

    cs = hg_cstream_find(c, (int64_t) id);
    if (cs) {
        return cs;
    }

    if (hg_stream_is_local(c, (int64_t) id)) {
        if ((int64_t) id >= c->next_local_id) {
            hg_conn_protocol_error(c, "frame for a stream never opened");
            *rc = HG_ERR_STATE;
        }
        return NULL;
    }

    seq = id >> 1;
    if (seq < c->peer_opened) {
        return NULL;
    }

    if (c->role == HG_ROLE_SERVER && c->state != HG_CS_READY) {
        hg_conn_protocol_error(c, "stream before HELLO was accepted");
        *rc = HG_ERR_STATE;
        return NULL;
    }

    if (seq >= c->local_max_streams) {
        hg_conn_protocol_error(c, "stream limit exceeded");
        *rc = HG_ERR_STATE;
        return NULL;
    }

    while (c->peer_opened <= seq) {
        cs = hg_cstream_create(c, (int64_t) (2 * c->peer_opened
                                             + (c->role == HG_ROLE_SERVER
                                                ? 0 : 1)), 0);
        if (cs == NULL) {
            hg_conn_enter_closing(c, HG_CODE_INTERNAL, "out of memory", 1,
                                  c->now);
            *rc = HG_ERR_STATE;
            return NULL;
        }

        c->peer_opened++;

        if (c->local_goaway) {
            /* opened after our GOAWAY: refuse it */
            (void) hg_stream_send_reset(cs->s, HG_STREAM_ERR_GOING_AWAY);
            (void) hg_stream_recv_stop(cs->s, HG_STREAM_ERR_GOING_AWAY);
            cs->abandoned = 1;
        }
    }

    return cs;
}


static int
hg_account_recv(hg_conn_t *c, int64_t growth)
{
    if (growth == HG_ERR_LIMIT) {
        hg_conn_protocol_error(c, "stream flow control exceeded");
        return HG_ERR_STATE;
    }

    if (growth == HG_ERR_NOMEM) {
        hg_conn_enter_closing(c, HG_CODE_INTERNAL, "out of memory", 1,
                              c->now);
        return HG_ERR_STATE;
    }

    if (growth < 0) {
        hg_conn_protocol_error(c, "stream final size violated");
        return HG_ERR_STATE;
    }

    c->recv_highest += (uint64_t) growth;

    if (c->recv_highest > c->recv_max) {
        hg_conn_protocol_error(c, "connection flow control exceeded");
        return HG_ERR_STATE;
    }

    if (c->recv_highest - c->recv_read > c->cfg.max_out_of_order) {
        hg_conn_protocol_error(c, "too many buffered bytes");
        return HG_ERR_STATE;
    }

    return HG_OK;
}


/* as the strings protobuf-c made would print: up to a NUL, if any */
static void
hg_store_string(char *dst, size_t size, const hg_codec_bytes_t *s)
{
    if (s->len == 0) {
        dst[0] = '\0';
        return;
    }

    snprintf(dst, size, "%.*s", (int) s->len, (const char *) s->data);
}


static void
hg_store_meta(hg_stream_t *s, const hg_codec_stream_t *f)
{
    hg_store_string(s->meta.client_addr, sizeof(s->meta.client_addr),
                    &f->client_addr);
    hg_store_string(s->meta.scheme, sizeof(s->meta.scheme), &f->scheme);
    hg_store_string(s->meta.host, sizeof(s->meta.host), &f->host);
    hg_store_string(s->meta.request_id, sizeof(s->meta.request_id),
                    &f->request_id);
    s->has_meta = 1;
}


static int
hg_frame_stream(hg_conn_t *c, const hg_codec_stream_t *f)
{
    hg_cstream_t  *cs;
    hg_stream_t   *s;
    int64_t        growth;
    int            rc;

    if (f->offset > (1ULL << 62) || f->data.len > hg_packet_max_data(c)) {
        return HG_ERR;
    }

    cs = hg_stream_for_frame(c, f->id, &rc);
    if (cs == NULL) {
        return rc == HG_ERR ? HG_ERR : HG_OK;
    }

    s = cs->s;

    growth = hg_stream_recv(s, f->offset, f->data.data, f->data.len, f->fin);
    if (hg_account_recv(c, growth) != HG_OK) {
        return HG_OK;
    }

    hg_cstream_take_credit(c, cs);
    c->stats.stream_bytes_received += (uint64_t) growth;

    if (f->has_meta && f->offset == 0 && !s->has_meta && !cs->local) {
        hg_store_meta(s, f);
    }

    if (!cs->local && !s->opened_event && s->has_meta && !cs->abandoned) {
        s->opened_event = 1;
        hg_conn_event(c, HG_EV_STREAM_OPENED, s->id, 0);
    }

    if (cs->abandoned) {
        hg_cstream_check_closed(c, cs);
        return HG_OK;
    }

    if (hg_stream_read_ready(s)) {
        hg_cstream_signal_readable(c, cs);
    }

    return HG_OK;
}


static int
hg_frame_reset(hg_conn_t *c, uint64_t id, uint64_t error_code,
    uint64_t final_size)
{
    hg_cstream_t  *cs;
    int            rc, was_reset;

    cs = hg_stream_for_frame(c, id, &rc);
    if (cs == NULL) {
        return rc == HG_ERR ? HG_ERR : HG_OK;
    }

    was_reset = cs->s->reset_received;

    if (hg_account_recv(c, hg_stream_recv_reset(cs->s, error_code,
                                                final_size))
        != HG_OK)
    {
        return HG_OK;
    }

    hg_cstream_take_credit(c, cs);

    if (!was_reset && cs->s->reset_received && !cs->abandoned
        && (cs->local || cs->s->opened_event))
    {
        hg_conn_event(c, HG_EV_STREAM_RESET, cs->s->id,
                      (uint32_t) cs->s->peer_reset_code);
    }

    hg_cstream_check_closed(c, cs);

    return HG_OK;
}


static int
hg_frame_stop(hg_conn_t *c, uint64_t id, uint64_t error_code)
{
    hg_cstream_t  *cs;
    hg_stream_t   *s;
    int            rc;

    cs = hg_stream_for_frame(c, id, &rc);
    if (cs == NULL) {
        return rc == HG_ERR ? HG_ERR : HG_OK;
    }

    s = cs->s;

    /* RFC 9000 3.5: STOP_SENDING is answered with RESET_STREAM */
    if (hg_stream_recv_stop_sending(s, error_code) == 1 && !cs->abandoned) {
        hg_conn_event(c, HG_EV_STREAM_STOP, s->id, (uint32_t) error_code);
    }

    hg_cstream_check_closed(c, cs);

    return HG_OK;
}


static int
hg_frame_max_stream_data(hg_conn_t *c, uint64_t id, uint64_t max)
{
    hg_cstream_t  *cs;
    int            rc;

    cs = hg_stream_for_frame(c, id, &rc);
    if (cs == NULL) {
        return rc == HG_ERR ? HG_ERR : HG_OK;
    }

    hg_stream_send_max(cs->s, max);

    return HG_OK;
}


/* ---- acknowledgements -------------------------------------------------------- */

static int
hg_frame_ack(hg_conn_t *c, const hg_codec_ack_t *f)
{
    hg_range_t  ranges[HG_ACK_DECODE_MAX];
    hg_ack_t    ack;
    size_t      i, n;
    uint64_t    largest, gap, length;

    if (f->nranges % 2 != 0 || f->nranges / 2 >= c->cfg.max_ack_ranges
        || f->nranges / 2 >= HG_ACK_DECODE_MAX || f->first_range > f->largest)
    {
        return HG_ERR;
    }

    ranges[0].hi = f->largest + 1;
    ranges[0].lo = f->largest - f->first_range;
    n = 1;

    /* nranges < 2 * HG_ACK_DECODE_MAX: all of them were kept */
    for (i = 0; i < f->nranges; i += 2) {
        gap = f->ranges[i];
        length = f->ranges[i + 1];

        if (ranges[n - 1].lo < gap + 2) {
            return HG_ERR;
        }

        largest = ranges[n - 1].lo - gap - 2;
        if (largest < length) {
            return HG_ERR;
        }

        ranges[n].hi = largest + 1;
        ranges[n].lo = largest - length;
        n++;
    }

    ack.largest = f->largest;
    ack.ack_delay = f->ack_delay_us;
    ack.nranges = n;
    ack.ranges = ranges;

    if (hg_recovery_on_ack(&c->rec, &ack, c->now) != 0) {
        hg_conn_protocol_error(c, "acknowledgement of an unsent packet");
        return HG_OK;
    }

    return HG_OK;
}


void
hg_packet_on_acked(void *ctx, const hg_sent_packet_t *pkt)
{
    hg_conn_t              *c = ctx;
    const hg_sent_frame_t  *f;
    hg_cstream_t           *cs;
    size_t                  i;

    for (i = 0; i < pkt->nframes; i++) {
        f = &pkt->frames[i];

        if (f->type == HG_SF_ACK) {
            hg_ackq_on_ack_acked(&c->ackq, f->value);
            continue;
        }

        if (f->type != HG_SF_STREAM && f->type != HG_SF_RESET_STREAM) {
            continue;
        }

        cs = hg_cstream_find(c, f->stream_id);
        if (cs == NULL || cs->closed) {
            continue;
        }

        if (f->type == HG_SF_RESET_STREAM) {
            hg_stream_reset_on_acked(cs->s);

        } else {
            hg_stream_send_on_acked(cs->s, f->value, f->len, f->fin);
            hg_cstream_signal_writable(c, cs);
        }

        hg_cstream_check_closed(c, cs);
    }
}


void
hg_packet_on_lost(void *ctx, const hg_sent_packet_t *pkt)
{
    hg_conn_t              *c = ctx;
    const hg_sent_frame_t  *f;
    hg_cstream_t           *cs;
    size_t                  i;

    for (i = 0; i < pkt->nframes; i++) {
        f = &pkt->frames[i];
        cs = NULL;

        if (f->type == HG_SF_STREAM || f->type == HG_SF_RESET_STREAM
            || f->type == HG_SF_STOP_SENDING
            || f->type == HG_SF_MAX_STREAM_DATA)
        {
            cs = hg_cstream_find(c, f->stream_id);
            if (cs == NULL || cs->closed) {
                continue;
            }
        }

        switch (f->type) {

        case HG_SF_STREAM:
            hg_stream_send_on_lost(cs->s, f->value, f->len, f->fin);
            break;

        case HG_SF_RESET_STREAM:
            hg_stream_reset_on_lost(cs->s);
            break;

        case HG_SF_STOP_SENDING:
            hg_stream_stop_on_lost(cs->s);
            break;

        case HG_SF_MAX_STREAM_DATA:
            hg_stream_recv_max_lost(cs->s, f->value);
            break;

        case HG_SF_MAX_DATA:
            if (f->value == c->recv_max) {
                c->max_data_due = 1;
            }
            break;

        case HG_SF_MAX_STREAMS:
            if (f->value == c->local_max_streams) {
                c->max_streams_due = 1;
            }
            break;

        case HG_SF_HELLO:
        case HG_SF_HELLO_ACK:
        case HG_SF_GOAWAY:
            hg_session_frame_lost(c, f->type);
            break;

        default:
            /*
             * ACK, PING, CLOSE: never repeated as such; nor PATH_CHALLENGE
             * (a new one follows on a timer) or PATH_RESPONSE (the peer
             * challenges again)
             */
            break;
        }
    }
}
