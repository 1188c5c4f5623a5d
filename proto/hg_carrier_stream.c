/*
 * The stream carrier: a connection's packets on a reliable byte stream
 * that the shell secures itself (TLS over TCP, after an HTTP Upgrade),
 * for the networks that drop UDP. Each packet is the protobuf Packet a
 * DTLS record would carry, without its number, after a 2-byte big-endian
 * length from 1 to HG_STREAM_PACKET_MAX (docs/protocol.md).
 *
 * The byte stream delivers everything once and in order and paces
 * itself, so what the datagram carrier adds for a lossy path stays idle:
 * nothing is numbered or acknowledged (a packet counts as delivered once
 * the shell has taken it, and its frames are settled at once, so that
 * streams' send buffers free), no probe timeout, no congestion window,
 * no pacer. Keepalive PINGs and the idle timeout stay: a PING goes after
 * a keepalive interval in which we sent nothing, so each side hears the
 * other at least that often, and silence beyond the idle timeout means
 * the peer or the path is gone.
 *
 * Everything else is the connection's own (hg_conn.c, hg_session.c,
 * hg_packet_in.c, and the frame builders of hg_packet_out.c).
 */

#include <stdlib.h>
#include <string.h>

#include "hg_builder.h"
#include "hg_codec.h"
#include "hg_conn.h"


#define HG_SC_MIN_ROOM   512      /* the smallest output worth a packet */
#define HG_SC_CID_DRAWS  8
#define HG_SC_PARTIAL    (HG_STREAM_LENGTH_LEN + HG_STREAM_PACKET_MAX)


static int hg_sc_init(hg_conn_t *c, hg_time_t now);
static int hg_sc_draw_cid(hg_conn_t *c, const uint8_t *prefix,
    size_t prefix_len);
static int hg_sc_length(hg_conn_t *c, const uint8_t *p, size_t *len);
static void hg_sc_packet(hg_conn_t *c, const uint8_t *p, size_t len,
    hg_time_t now);
static ssize_t hg_sc_build(hg_conn_t *c, uint8_t *out, size_t cap,
    hg_time_t now);
static void hg_sc_settle(hg_builder_t *b);


/* ---- making one ------------------------------------------------------------ */

hg_conn_t *
hg_conn_stream_client_new(const hg_config_t *cfg, const hg_hello_t *hello,
    hg_time_t now)
{
    hg_conn_t  *c;

    c = hg_conn_client_alloc(cfg, hello, NULL, 0, now);
    if (c == NULL) {
        return NULL;
    }

    if (hg_sc_init(c, now) != HG_OK) {
        hg_conn_free(c);
        return NULL;
    }

    c->hello_due = 1;

    return c;
}


hg_conn_t *
hg_conn_stream_server_new(const hg_config_t *cfg, const uint8_t *cid_prefix,
    size_t prefix_len, const struct sockaddr *peer, socklen_t peerlen,
    hg_time_t now)
{
    hg_conn_t  *c;

    if (prefix_len > HG_CID_LEN - HG_CID_RANDOM_MIN) {
        return NULL;
    }

    c = hg_conn_alloc(cfg, HG_ROLE_SERVER, peer, peerlen, now);
    if (c == NULL) {
        return NULL;
    }

    /*
     * HELLO_ACK carries an id and a reset token on either carrier. No
     * reset ever travels on a byte stream (the stream's end says it all),
     * so the token is random: it can never be shown.
     */
    if (hg_sc_draw_cid(c, cid_prefix, prefix_len) != HG_OK
        || cfg->cb.random(cfg->cb.ctx, c->reset_token, HG_RESET_TOKEN_LEN)
           != 0
        || hg_sc_init(c, now) != HG_OK)
    {
        hg_conn_free(c);
        return NULL;
    }

    return c;
}


/* the carrier is up from the start: HELLO is the first thing said */
static int
hg_sc_init(hg_conn_t *c, hg_time_t now)
{
    c->carrier = HG_CARRIER_STREAM;
    c->state = HG_CS_HELLO;
    c->max_payload = HG_STREAM_PACKET_MAX;
    c->sc.last_sent = now;

    hg_conn_event(c, HG_EV_HANDSHAKE_DONE, -1, 0);

    return HG_OK;
}


/* as a listener draws them: the shell's prefix, then random bytes */
static int
hg_sc_draw_cid(hg_conn_t *c, const uint8_t *prefix, size_t prefix_len)
{
    int  draws;

    memcpy(c->cid, prefix, prefix_len);

    for (draws = 0; draws < HG_SC_CID_DRAWS; draws++) {
        if (c->cfg.cb.random(c->cfg.cb.ctx, c->cid + prefix_len,
                             HG_CID_LEN - prefix_len)
            != 0)
        {
            return HG_ERR;
        }

        if (c->cfg.cb.cid_taken == NULL
            || !c->cfg.cb.cid_taken(c->cfg.cb.ctx, c->cid))
        {
            c->has_cid = 1;
            return HG_OK;
        }
    }

    return HG_ERR;
}


void
hg_stream_carrier_free(hg_conn_t *c)
{
    free(c->sc.partial);
    c->sc.partial = NULL;
}


/* ---- input ----------------------------------------------------------------- */

int
hg_conn_recv_bytes(hg_conn_t *c, const uint8_t *buf, size_t len,
    hg_time_t now)
{
    size_t  plen, take;
    int     rc, closing;

    if (c->carrier != HG_CARRIER_STREAM) {
        return HG_ERR;
    }

    c->now = now;
    c->stats.bytes_received += len;
    rc = HG_OK;
    closing = c->state == HG_CS_CLOSING || c->state == HG_CS_CLOSED;

    while (len > 0 && c->state != HG_CS_CLOSING && c->state != HG_CS_CLOSED)
    {
        /* a whole packet in the caller's buffer is taken where it is */
        if (c->sc.have == 0 && len >= HG_STREAM_LENGTH_LEN) {
            if (hg_sc_length(c, buf, &plen) != HG_OK) {
                rc = HG_ERR;
                break;
            }

            if (len >= HG_STREAM_LENGTH_LEN + plen) {
                hg_sc_packet(c, buf + HG_STREAM_LENGTH_LEN, plen, now);
                buf += HG_STREAM_LENGTH_LEN + plen;
                len -= HG_STREAM_LENGTH_LEN + plen;
                continue;
            }
        }

        /* the rest of a split packet waits in a buffer of one packet */
        if (c->sc.partial == NULL) {
            c->sc.partial = malloc(HG_SC_PARTIAL);
            if (c->sc.partial == NULL) {
                hg_conn_enter_closing(c, HG_CODE_INTERNAL, "out of memory",
                                      1, now);
                rc = HG_ERR;
                break;
            }
        }

        if (c->sc.have < HG_STREAM_LENGTH_LEN) {
            take = HG_STREAM_LENGTH_LEN - c->sc.have;
            take = take < len ? take : len;
            memcpy(c->sc.partial + c->sc.have, buf, take);
            c->sc.have += take;
            buf += take;
            len -= take;

            if (c->sc.have < HG_STREAM_LENGTH_LEN) {
                break;
            }
        }

        if (hg_sc_length(c, c->sc.partial, &plen) != HG_OK) {
            rc = HG_ERR;
            break;
        }

        take = HG_STREAM_LENGTH_LEN + plen - c->sc.have;
        take = take < len ? take : len;
        memcpy(c->sc.partial + c->sc.have, buf, take);
        c->sc.have += take;
        buf += take;
        len -= take;

        if (c->sc.have == HG_STREAM_LENGTH_LEN + plen) {
            c->sc.have = 0;
            hg_sc_packet(c, c->sc.partial + HG_STREAM_LENGTH_LEN, plen, now);
        }
    }

    if (!closing && c->state == HG_CS_CLOSING
        && c->close_code == HG_CODE_PROTOCOL)
    {
        rc = HG_ERR;
    }

    return rc;
}


static int
hg_sc_length(hg_conn_t *c, const uint8_t *p, size_t *len)
{
    *len = (size_t) p[0] << 8 | p[1];

    if (*len == 0 || *len > HG_STREAM_PACKET_MAX) {
        c->stats.malformed++;
        hg_conn_protocol_error(c, *len ? "packet length over 16384"
                                       : "packet length 0");
        return HG_ERR;
    }

    return HG_OK;
}


static void
hg_sc_packet(hg_conn_t *c, const uint8_t *p, size_t len, hg_time_t now)
{
    /* what the shell's TLS delivered is the peer's */
    c->last_recv = now;

    hg_packet_process(c, p, len);
}


/* ---- output ---------------------------------------------------------------- */

ssize_t
hg_conn_send_bytes(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now)
{
    size_t   used;
    ssize_t  n;

    if (c->carrier != HG_CARRIER_STREAM) {
        return HG_ERR;
    }

    c->now = now;
    used = 0;

    while (cap - used >= HG_SC_MIN_ROOM && c->state != HG_CS_CLOSED) {
        n = hg_sc_build(c, out + used, cap - used, now);
        if (n < 0) {
            return HG_ERR;
        }

        if (n == 0) {
            break;
        }

        used += (size_t) n;
    }

    return (ssize_t) used;
}


static ssize_t
hg_sc_build(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now)
{
    size_t        budget;
    hg_builder_t  b;

    if (c->state != HG_CS_HELLO && c->state != HG_CS_READY
        && !(c->state == HG_CS_CLOSING && c->close_due))
    {
        return 0;
    }

    budget = cap - HG_STREAM_LENGTH_LEN;
    if (budget > HG_STREAM_PACKET_MAX) {
        budget = HG_STREAM_PACKET_MAX;
    }

    /* no number: the byte stream orders the packets (proto3 omits 0) */
    memset(&b, 0, offsetof(hg_builder_t, buf));
    b.c = c;
    b.now = now;
    b.plain = out + HG_STREAM_LENGTH_LEN;
    b.budget = budget;

    if (c->state == HG_CS_CLOSING) {
        hg_session_add_closing(&b);

    } else {
        hg_builder_add_control(&b);
        (void) hg_builder_add_stream_data(&b);

        if (b.n == 0 && c->ping_due) {
            hg_builder_add_ping(&b);
        }
    }

    if (b.n == 0) {
        return 0;
    }

    out[0] = (uint8_t) (b.used >> 8);
    out[1] = (uint8_t) b.used;

    c->stats.packets_sent++;
    c->stats.bytes_sent += HG_STREAM_LENGTH_LEN + b.used;
    c->sc.last_sent = now;
    c->ping_due = 0;

    if (b.eliciting) {
        c->last_eliciting_sent = now;
    }

    hg_sc_settle(&b);

    if (c->state == HG_CS_CLOSING && !c->close_due) {
        /* the CLOSE is the last word: nothing to repeat on a stream */
        hg_conn_set_closed(c);
    }

    return (ssize_t) (HG_STREAM_LENGTH_LEN + b.used);
}


/* handed to the byte stream is delivered: the frames settle now */
static void
hg_sc_settle(hg_builder_t *b)
{
    hg_sent_packet_t  pkt;

    pkt.nframes = (uint16_t) b->n;
    memcpy(pkt.frames, b->rec, b->n * sizeof(hg_sent_frame_t));

    hg_packet_on_acked(b->c, &pkt);
}


/* ---- timers ---------------------------------------------------------------- */

hg_time_t
hg_stream_carrier_deadline(const hg_conn_t *c)
{
    hg_time_t  t, at;

    /*
     * A CLOSE to send goes with the next hg_conn_send_bytes, whenever the
     * shell has room for it: a carrier that takes nothing for long is the
     * shell's to give up on, as any stalled socket.
     */
    if (c->state == HG_CS_CLOSING) {
        return c->close_due ? HG_TIME_INFINITE : c->closing_deadline;
    }

    t = c->last_recv + c->cfg.idle_timeout;

    if (c->state != HG_CS_READY) {
        at = c->created + c->cfg.handshake_timeout;
        t = at < t ? at : t;
    }

    /* once due, the PING leaves with the next hg_conn_send_bytes */
    if (c->state == HG_CS_READY && !c->ping_due) {
        at = c->sc.last_sent + c->cfg.keepalive;
        t = at < t ? at : t;
    }

    return t;
}


void
hg_stream_carrier_timeout(hg_conn_t *c, hg_time_t now)
{
    if (c->state == HG_CS_CLOSING) {
        if (!c->close_due && now >= c->closing_deadline) {
            hg_conn_set_closed(c);
        }
        return;
    }

    if (now >= c->last_recv + c->cfg.idle_timeout) {
        hg_conn_log(c, HG_LOG_INFO, "idle timeout");
        hg_conn_enter_closing(c, HG_CODE_IDLE_TIMEOUT, "idle timeout", 1,
                              now);
        return;
    }

    if (c->state != HG_CS_READY
        && now >= c->created + c->cfg.handshake_timeout)
    {
        /* a peer that never heard from us (the shell never got the
         * carrier up) is told nothing */
        hg_conn_enter_closing(c, HG_CODE_HANDSHAKE_TIMEOUT,
                              "handshake timeout", c->stats.packets_sent > 0,
                              now);
        if (c->stats.packets_sent == 0) {
            hg_conn_set_closed(c);
        }
        return;
    }

    if (c->state == HG_CS_READY && now >= c->sc.last_sent + c->cfg.keepalive)
    {
        c->ping_due = 1;
    }
}
