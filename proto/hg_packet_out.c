/*
 * Building one outgoing packet: which frames go in (ACK, control frames,
 * stream data in round-robin), within the datagram budget, the congestion
 * window and the pacer; encoding; DTLS sealing; the record that loss
 * recovery keeps of it.
 *
 * Frames are encoded as they are chosen, straight into the plaintext
 * that is sealed (hg_codec.c; protobuf-c packs the session frames in
 * place), and stream bytes are copied once, from the stream's send
 * buffer into the packet.
 */

#include <string.h>

#include "hg_builder.h"
#include "hg_codec.h"
#include "hg_conn.h"


#define HG_ACK_RANGES_MAX  64
#define HG_CWND_MIN_ROOM   256

/* the packet number field's room: tag and varint; 2 for number 0 */
#define hg_number_room(pn)  (1 + hg_codec_varint_len(pn))



/* room for one more frame: its record starts empty */
int
hg_builder_slot(hg_builder_t *b)
{
    if (b->n == HG_MAX_SENT_FRAMES) {
        return 0;
    }

    memset(&b->rec[b->n], 0, sizeof(hg_sent_frame_t));

    return 1;
}


/* the frame just encoded at plain + used, cost bytes long, is in */
void
hg_builder_commit(hg_builder_t *b, size_t cost, hg_sent_frame_type_t type)
{
    b->rec[b->n].type = type;
    b->n++;
    b->used += cost;

    if (type != HG_SF_ACK && type != HG_SF_CLOSE) {
        b->eliciting = 1;
    }
}


/* a frame of uint64 fields; 1 when added */
int
hg_builder_add_uints(hg_builder_t *b, const hg_codec_uints_t *f,
    hg_sent_frame_type_t type)
{
    size_t  cost;

    if (!hg_builder_slot(b)) {
        return 0;
    }

    cost = hg_codec_frame_cost(hg_codec_uints_len(f));
    if (b->used + cost > b->budget) {
        return 0;
    }

    hg_codec_put_uints(b->plain + b->used, f);
    hg_builder_commit(b, cost, type);

    return 1;
}


/* a session frame, packed by protobuf-c in place; 1 when added */
int
hg_builder_add_message(hg_builder_t *b, hg_codec_kind_t kind,
    const ProtobufCMessage *body, hg_sent_frame_type_t type)
{
    size_t    len, cost;
    uint8_t  *p;

    if (!hg_builder_slot(b)) {
        return 0;
    }

    len = protobuf_c_message_get_packed_size(body);
    cost = hg_codec_frame_cost(len);
    if (b->used + cost > b->budget) {
        return 0;
    }

    p = hg_codec_put_frame_head(b->plain + b->used, kind, len);
    protobuf_c_message_pack(body, p);
    hg_builder_commit(b, cost, type);

    return 1;
}




/* ---- ACK -------------------------------------------------------------- */

static void
hg_add_ack(hg_builder_t *b)
{
    hg_conn_t       *c = b->c;
    hg_range_t       r[HG_ACK_RANGES_MAX];
    size_t           n, i, max, cost;
    uint64_t         largest, words[2 * HG_ACK_RANGES_MAX];
    hg_time_t        delay;
    hg_codec_ack_t   ack;

    if (!hg_ackq_pending(&c->ackq)) {
        return;
    }

    if (!hg_builder_slot(b)) {
        return;
    }

    max = c->cfg.max_ack_ranges < HG_ACK_RANGES_MAX ? c->cfg.max_ack_ranges
                                                    : HG_ACK_RANGES_MAX;

    n = hg_ackq_build(&c->ackq, b->now, r, max, &largest, &delay);
    if (n == 0) {
        return;
    }

    ack.largest = largest;
    ack.ack_delay_us = delay;
    ack.first_range = r[0].hi - 1 - r[0].lo;

    /* QUIC's encoding: gap = unreceived - 1, length = received - 1 */
    for (i = 1; i < n; i++) {
        words[2 * (i - 1)] = r[i - 1].lo - r[i].hi - 1;
        words[2 * (i - 1) + 1] = r[i].hi - 1 - r[i].lo;
    }

    ack.nranges = 2 * (n - 1);
    ack.ranges = words;

    cost = hg_codec_frame_cost(hg_codec_ack_len(&ack));
    if (b->used + cost > b->budget) {
        return;
    }

    hg_codec_put_ack(b->plain + b->used, &ack);
    b->rec[b->n].value = largest;
    hg_builder_commit(b, cost, HG_SF_ACK);
    b->has_ack = 1;
}


/* ---- path validation ---------------------------------------------------- */

/*
 * PATH_RESPONSE and PATH_CHALLENGE go in the next packet, whatever the
 * congestion window and the pacer say, as probes do: a few bytes once a
 * PTO at most, and the path's validation (or the peer's) waits on them.
 */
static void
hg_add_path(hg_builder_t *b)
{
    hg_conn_t         *c = b->c;
    uint64_t           data;
    hg_codec_uints_t   f;

    if (c->path.response_due) {
        f.kind = HOPGATE__FRAME__BODY_PATH_RESPONSE;
        f.v[0] = c->path.response;

        if (hg_builder_add_uints(b, &f, HG_SF_PATH_RESPONSE)) {
            c->path.response_due = 0;
        }
    }

    if (c->path.challenge_due
        && hg_path_challenge_data(c, &data) == HG_OK)
    {
        f.kind = HOPGATE__FRAME__BODY_PATH_CHALLENGE;
        f.v[0] = data;

        if (hg_builder_add_uints(b, &f, HG_SF_PATH_CHALLENGE)) {
            b->rec[b->n - 1].value = data;
            hg_path_challenge_sent(c, data);
        }
    }
}


/* ---- control frames --------------------------------------------------- */

static void
hg_add_max_data(hg_builder_t *b)
{
    hg_conn_t         *c = b->c;
    hg_codec_uints_t   f;

    f.kind = HOPGATE__FRAME__BODY_MAX_DATA;
    f.v[0] = c->recv_max;

    if (hg_builder_add_uints(b, &f, HG_SF_MAX_DATA)) {
        b->rec[b->n - 1].value = c->recv_max;
        c->max_data_due = 0;
    }
}


static void
hg_add_max_streams(hg_builder_t *b)
{
    hg_conn_t         *c = b->c;
    hg_codec_uints_t   f;

    f.kind = HOPGATE__FRAME__BODY_MAX_STREAMS;
    f.v[0] = c->local_max_streams;

    if (hg_builder_add_uints(b, &f, HG_SF_MAX_STREAMS)) {
        b->rec[b->n - 1].value = c->local_max_streams;
        c->max_streams_due = 0;
    }
}


void
hg_builder_add_ping(hg_builder_t *b)
{
    hg_codec_uints_t  f;

    f.kind = HOPGATE__FRAME__BODY_PING;

    if (hg_builder_add_uints(b, &f, HG_SF_PING)) {
        b->c->ping_due = 0;
    }
}


/* RESET_STREAM, STOP_SENDING and MAX_STREAM_DATA owed by one stream */
static void
hg_add_stream_control(hg_builder_t *b, hg_cstream_t *cs)
{
    hg_stream_t       *s = cs->s;
    hg_codec_uints_t   f;

    if (hg_stream_reset_due(s)) {
        f.kind = HOPGATE__FRAME__BODY_RESET_STREAM;
        f.v[0] = s->id;
        f.v[1] = s->reset_code;
        f.v[2] = s->sent;

        if (hg_builder_add_uints(b, &f, HG_SF_RESET_STREAM)) {
            b->rec[b->n - 1].stream_id = s->id;
            hg_stream_reset_commit(s);
        }
    }

    if (hg_stream_stop_due(s)) {
        f.kind = HOPGATE__FRAME__BODY_STOP_SENDING;
        f.v[0] = s->id;
        f.v[1] = s->stop_code;

        if (hg_builder_add_uints(b, &f, HG_SF_STOP_SENDING)) {
            b->rec[b->n - 1].stream_id = s->id;
            hg_stream_stop_commit(s);
        }
    }

    if (s->max_data_due && !hg_stream_recv_done(s)
        && b->n < HG_MAX_SENT_FRAMES)
    {
        f.kind = HOPGATE__FRAME__BODY_MAX_STREAM_DATA;
        f.v[0] = s->id;
        f.v[1] = hg_stream_recv_update_max(s);

        if (hg_builder_add_uints(b, &f, HG_SF_MAX_STREAM_DATA)) {
            b->rec[b->n - 1].stream_id = s->id;
            b->rec[b->n - 1].value = s->recv_max;
            s->max_data_due = 0;

        } else {
            /*
             * the limit was raised but did not fit this packet: it stays
             * due, or a sender blocked at the old limit would wait forever
             */
            s->max_data_due = 1;
        }
    }
}


void
hg_builder_add_control(hg_builder_t *b)
{
    hg_conn_t     *c = b->c;
    hg_cstream_t  *cs;

    hg_session_add_frames(b);

    if (c->max_data_due) {
        hg_add_max_data(b);
    }

    if (c->max_streams_due) {
        hg_add_max_streams(b);
    }

    for (cs = c->first; cs; cs = cs->next) {
        if (!cs->closed) {
            hg_add_stream_control(b, cs);
        }
    }
}


/* ---- stream data -------------------------------------------------------- */

static void
hg_string(hg_codec_bytes_t *s, const char *text)
{
    s->data = (const uint8_t *) text;
    s->len = strlen(text);
}


/* the largest data length that fits the room left, given the frame head */
static size_t
hg_stream_fit(hg_builder_t *b, hg_codec_stream_t *sf, size_t want)
{
    size_t  head, room, len;

    sf->data.len = 0;
    head = hg_codec_stream_len(sf);

    if (b->used + hg_codec_frame_cost(head) > b->budget) {
        return (size_t) -1;
    }

    room = b->budget - b->used;
    len = want;

    if (len > room) {
        len = room;
    }

    while (len > 0
           && hg_codec_frame_cost(head + 1 + hg_codec_varint_len(len) + len)
              > room)
    {
        len -= hg_codec_frame_cost(head + 1 + hg_codec_varint_len(len) + len)
               - room;
        if ((ssize_t) len < 0) {
            len = 0;
        }
    }

    return len;
}


/* one STREAM frame for cs; 1 when added */
static int
hg_add_stream_frame(hg_builder_t *b, hg_cstream_t *cs)
{
    hg_conn_t          *c = b->c;
    hg_stream_t        *s = cs->s;
    uint8_t            *data;
    uint64_t            offset, credit;
    size_t              len, fit, cost;
    int                 fin, is_new, meta;
    hg_codec_stream_t   sf;

    credit = c->send_max > c->sent_new ? c->send_max - c->sent_new : 0;

    if (!hg_stream_send_peek(s, b->budget - b->used, credit, &offset, &len,
                             &fin, &is_new))
    {
        return 0;
    }

    meta = hg_stream_frame_has_meta(s, offset);

    if (!hg_builder_slot(b)) {
        return 0;
    }

    sf.id = s->id;
    sf.offset = offset;
    sf.fin = fin;
    sf.has_meta = meta;

    if (meta) {
        hg_string(&sf.client_addr, s->meta.client_addr);
        hg_string(&sf.scheme, s->meta.scheme);
        hg_string(&sf.host, s->meta.host);
        hg_string(&sf.request_id, s->meta.request_id);
    }

    fit = hg_stream_fit(b, &sf, len);
    if (fit == (size_t) -1 || (fit == 0 && len > 0)) {
        return 0;
    }

    if (fit < len) {
        len = fit;
        fin = 0;
        sf.fin = 0;
    }

    sf.data.len = len;

    cost = hg_codec_frame_cost(hg_codec_stream_len(&sf));
    if (b->used + cost > b->budget) {
        return 0;
    }

    hg_codec_put_stream(b->plain + b->used, &sf, &data);
    hg_stream_send_copy(s, offset, data, len);
    hg_stream_send_commit(s, offset, len, fin);

    b->rec[b->n].stream_id = s->id;
    b->rec[b->n].value = offset;
    b->rec[b->n].len = (uint32_t) len;
    b->rec[b->n].fin = (uint8_t) fin;
    b->rec[b->n].has_meta = (uint8_t) meta;
    hg_builder_commit(b, cost, HG_SF_STREAM);

    if (is_new) {
        c->sent_new += len;
        c->stats.stream_bytes_sent += len;
    } else if (len > 0) {
        b->retransmission = 1;
    }

    return 1;
}


/* a STREAM frame could go out now, connection credit considered */
static int
hg_cstream_sendable(const hg_conn_t *c, const hg_cstream_t *cs)
{
    uint64_t  offset, credit;
    size_t    len;
    int       fin, is_new;

    if (cs->closed || !hg_stream_send_pending(cs->s)) {
        return 0;
    }

    credit = c->send_max > c->sent_new ? c->send_max - c->sent_new : 0;

    return hg_stream_send_peek(cs->s, HG_STREAM_PACKET_MAX, credit, &offset,
                               &len, &fin, &is_new);
}


/* round-robin over streams until the packet is full; 1 if any was left */
int
hg_builder_add_stream_data(hg_builder_t *b)
{
    hg_conn_t     *c = b->c;
    hg_cstream_t  *cs, *start;
    int            progress;

    if (c->first == NULL) {
        return 0;
    }

    start = c->cursor ? c->cursor : c->first;

    do {
        progress = 0;
        cs = start;

        do {
            if (hg_cstream_sendable(c, cs) && hg_add_stream_frame(b, cs)) {
                progress = 1;
                c->cursor = cs->next;
            }

            cs = cs->next ? cs->next : c->first;

        } while (cs != start && b->n < HG_MAX_SENT_FRAMES);

    } while (progress && b->n < HG_MAX_SENT_FRAMES
             && b->used + 16 < b->budget);

    for (cs = c->first; cs; cs = cs->next) {
        if (hg_cstream_sendable(c, cs)) {
            return 1;
        }
    }

    return 0;
}


/* ---- the packet ------------------------------------------------------- */

size_t
hg_packet_max_data(const hg_conn_t *c)
{
    return c->carrier == HG_CARRIER_STREAM ? HG_STREAM_PACKET_MAX
                                           : HG_MTU_MAX;
}


static void
hg_builder_init(hg_builder_t *b, hg_conn_t *c, hg_time_t now)
{
    b->c = c;
    b->now = now;
    b->plain = b->buf;
    b->n = 0;
    b->used = hg_number_room(c->rec.next_pn);
    b->budget = c->max_payload;
    b->eliciting = 0;
    b->retransmission = 0;
    b->has_ack = 0;
    b->ack_forced = 0;
}


/* the initial RTT, or the handshake's, until the first sample */
static hg_time_t
hg_srtt(const hg_conn_t *c)
{
    return c->rec.smoothed_rtt;
}


/*
 * Datagram bytes the congestion window still allows (at most the mtu),
 * or 0 when fewer than HG_CWND_MIN_ROOM. A packet may fill the rest of
 * the window instead of waiting for room for a full one: RFC 9002 only
 * forbids exceeding it, and on a lossy path, where the window is a dozen
 * packets, leaving half a packet unused on average costs a few percent of
 * throughput. A smaller remainder is not worth a packet's overhead.
 */
static size_t
hg_cwnd_room(const hg_conn_t *c)
{
    uint64_t  room;

    if (c->cc.bytes_in_flight + HG_CWND_MIN_ROOM > c->cc.cwnd) {
        return 0;
    }

    room = c->cc.cwnd - c->cc.bytes_in_flight;

    return room < c->cfg.mtu ? (size_t) room : c->cfg.mtu;
}


static int
hg_can_send_eliciting(hg_conn_t *c, hg_time_t now)
{
    if (c->probes_due > 0) {
        return 1;
    }

    if (hg_cwnd_room(c) == 0) {
        return 0;
    }

    return hg_pacer_next(&c->pacer, &c->cc, hg_srtt(c), c->cfg.mtu, now)
           <= now;
}


static int
hg_control_pending(const hg_conn_t *c)
{
    hg_cstream_t  *cs;

    if (hg_session_pending(c) || c->max_data_due || c->max_streams_due
        || c->ping_due || c->probes_due || hg_path_frames_due(c))
    {
        return 1;
    }

    for (cs = c->first; cs; cs = cs->next) {
        if (cs->closed) {
            continue;
        }

        if (hg_stream_reset_due(cs->s) || hg_stream_stop_due(cs->s)
            || (cs->s->max_data_due && !hg_stream_recv_done(cs->s))
            || hg_cstream_sendable(c, cs))
        {
            return 1;
        }
    }

    return 0;
}


hg_time_t
hg_packet_send_deadline(const hg_conn_t *c, hg_time_t now)
{
    hg_pacer_t  pacer;

    if (c->state == HG_CS_CLOSING) {
        return c->close_due ? now : HG_TIME_INFINITE;
    }

    if (c->state != HG_CS_HELLO && c->state != HG_CS_READY) {
        return HG_TIME_INFINITE;
    }

    if (!hg_control_pending(c)) {
        return HG_TIME_INFINITE;
    }

    if (c->probes_due > 0 || hg_path_frames_due(c)) {
        return now;
    }

    if (hg_cwnd_room(c) == 0) {
        /* an ACK will open the window */
        return HG_TIME_INFINITE;
    }

    pacer = c->pacer;

    return hg_pacer_next(&pacer, &c->cc, hg_srtt(c), c->cfg.mtu, now);
}


static ssize_t
hg_packet_seal(hg_builder_t *b, uint8_t *out, size_t cap)
{
    hg_conn_t  *c = b->c;
    size_t      start, len;
    ssize_t     n;

    /* number 0 is not encoded (proto3): the packet starts after its room */
    start = c->rec.next_pn ? 0 : hg_number_room(0);
    hg_codec_put_number(b->plain, c->rec.next_pn);
    len = b->used - start;

    if (len > c->max_payload) {
        hg_conn_log(c, HG_LOG_ERR, "packet of %zu bytes exceeds the %zu "
                    "byte budget", len, c->max_payload);
        return HG_ERR;
    }

    n = hg_dtls_seal(c->dtls, b->plain + start, len, out + HG_PREFIX_LEN,
                     cap - HG_PREFIX_LEN);
    if (n < 0) {
        return HG_ERR;
    }

    hg_prefix_write(c, out);

    return n + HG_PREFIX_LEN;
}


static void
hg_packet_record(hg_builder_t *b, hg_sent_packet_t *slot, size_t size)
{
    hg_conn_t  *c = b->c;

    slot->pn = c->rec.next_pn;
    slot->time_sent = b->now;
    slot->size = (uint32_t) size;
    slot->ack_eliciting = (uint8_t) b->eliciting;
    slot->in_flight = (uint8_t) b->eliciting;
    slot->acked = 0;
    slot->lost = 0;
    slot->nframes = (uint16_t) b->n;
    memcpy(slot->frames, b->rec, b->n * sizeof(hg_sent_frame_t));

    hg_recovery_on_sent(&c->rec, slot, b->now);

    c->stats.packets_sent++;
    c->stats.bytes_sent += size;

    if (b->has_ack) {
        hg_ackq_on_ack_sent(&c->ackq);
    }

    if (b->eliciting) {
        c->last_eliciting_sent = b->now;
        c->ping_due = 0;
        hg_pacer_on_sent(&c->pacer, &c->cc, hg_srtt(c), size, b->now);

        if (c->probes_due > 0) {
            c->probes_due--;
        }
    }

    if (b->retransmission) {
        c->stats.packets_retransmitted++;
    }
}


ssize_t
hg_packet_build(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now)
{
    hg_builder_t       b;
    hg_sent_packet_t  *slot;
    ssize_t            n;
    size_t             allowance, overhead, room;
    int                more, limited;

    if (c->state != HG_CS_HELLO && c->state != HG_CS_READY
        && !(c->state == HG_CS_CLOSING && c->close_due))
    {
        return 0;
    }

    slot = hg_recovery_next_slot(&c->rec);
    if (slot == NULL) {
        return 0;
    }

    hg_builder_init(&b, c, now);

    /* an address not yet validated gets three times what it sent us */
    overhead = c->cfg.mtu - c->max_payload;
    allowance = hg_path_allowance(c);
    limited = allowance < c->cfg.mtu;

    if (limited) {
        if (allowance <= overhead + b.used) {
            hg_path_set_starved(c);
            return 0;
        }

        b.budget = allowance - overhead;
    }

    if (c->state == HG_CS_CLOSING) {
        hg_session_add_closing(&b);

    } else {
        b.ack_forced = hg_ackq_due(&c->ackq, now);
        hg_add_ack(&b);
        hg_add_path(&b);

        more = 0;

        if (hg_can_send_eliciting(c, now)) {
            if (c->probes_due == 0) {
                /* the datagram stays within the window; the ACK may
                 * already fill that, and then goes alone */
                room = hg_cwnd_room(c) - overhead;
                if (room < b.budget) {
                    b.budget = room > b.used ? room : b.used;
                }
            }

            hg_builder_add_control(&b);
            more = hg_builder_add_stream_data(&b);

            if (!b.eliciting && (c->ping_due || c->probes_due)) {
                hg_builder_add_ping(&b);
            }

            /* RFC 9002 7.8: an underused window must not grow */
            c->cc.app_limited = !more
                && c->cc.bytes_in_flight < c->cc.cwnd / 2;
        }

        if (b.has_ack && b.n == 1 && !b.ack_forced) {
            /* nothing else to say: let the ACK wait for its timer */
            b.n = 0;
        }
    }

    if (b.n == 0) {
        /*
         * What is due now but did not fit the allowance waits for the
         * peer's next datagram; without the mark, the deadline would say
         * "now" until then
         */
        if (limited && (hg_ackq_due(&c->ackq, now)
                        || hg_packet_send_deadline(c, now) <= now))
        {
            hg_path_set_starved(c);
        }

        return 0;
    }

    n = hg_packet_seal(&b, out, cap);
    if (n < 0) {
        return HG_ERR;
    }

    hg_packet_record(&b, slot, (size_t) n);

    return n;
}


/* a packet of one PATH_CHALLENGE, for the last validated address */
ssize_t
hg_packet_build_probe(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now,
    uint64_t data)
{
    hg_builder_t       b;
    hg_sent_packet_t  *slot;
    hg_codec_uints_t   f;
    ssize_t            n;

    slot = hg_recovery_next_slot(&c->rec);
    if (slot == NULL) {
        return 0;
    }

    hg_builder_init(&b, c, now);

    f.kind = HOPGATE__FRAME__BODY_PATH_CHALLENGE;
    f.v[0] = data;

    if (!hg_builder_add_uints(&b, &f, HG_SF_PATH_CHALLENGE)) {
        return 0;
    }

    b.rec[0].value = data;

    n = hg_packet_seal(&b, out, cap);
    if (n < 0) {
        return HG_ERR;
    }

    hg_packet_record(&b, slot, (size_t) n);

    return n;
}
