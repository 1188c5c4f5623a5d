/*
 * A tunnel connection: lifecycle, datagram input, timers (idle timeout,
 * keepalive, probes) and the event queue. Session control (HELLO,
 * HELLO_ACK, GOAWAY, CLOSE) is hg_session.c's; packets are built in
 * hg_packet_out.c and taken apart in hg_packet_in.c; streams live in
 * hg_conn_stream.c.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "hg_conn.h"


static void hg_conn_on_established(hg_conn_t *c, hg_time_t now);
static hg_time_t hg_conn_keepalive_at(const hg_conn_t *c);
static void hg_conn_probe_oldest(hg_conn_t *c);


void
hg_conn_log(hg_conn_t *c, int level, const char *fmt, ...)
{
    va_list  ap;
    char     msg[512];

    if (c->cfg.cb.log == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    c->cfg.cb.log(c->cfg.cb.ctx, level, msg);
}


size_t
hg_copy_text(char *dst, size_t cap, const char *src)
{
    size_t  n;

    if (src == NULL) {
        src = "";
    }

    n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
    }

    memcpy(dst, src, n);
    dst[n] = '\0';

    return n;
}


hg_conn_t *
hg_conn_alloc(const hg_config_t *cfg, hg_role_t role,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now)
{
    hg_conn_t         *c;
    hg_recovery_cb_t   rcb;

    if (hg_config_check(cfg) != NULL || peerlen > sizeof(c->peer)
        || (peer == NULL && peerlen != 0))
    {
        return NULL;
    }

    c = calloc(1, sizeof(hg_conn_t));
    if (c == NULL) {
        return NULL;
    }

    c->cfg = *cfg;
    c->role = role;
    c->state = HG_CS_HANDSHAKE;
    c->worker_hint = -1;
    c->release_id = -1;
    if (peerlen) {
        memcpy(&c->peer, peer, peerlen);
    }
    c->peerlen = peerlen;
    hg_path_init(c);
    c->now = now;
    c->created = now;
    c->last_recv = now;
    c->last_eliciting_sent = now;
    c->closing_deadline = HG_TIME_INFINITE;
    c->handshake_sent = HG_TIME_INFINITE;

    c->local.max_streams = cfg->max_streams;
    c->local.stream_window = cfg->stream_window;
    c->local.conn_window = cfg->conn_window;
    c->local.max_ack_delay = cfg->max_ack_delay;
    c->remote.max_ack_delay = cfg->max_ack_delay;

    c->recv_max = cfg->conn_window;
    c->local_max_streams = cfg->max_streams;
    c->next_local_id = (role == HG_ROLE_SERVER) ? 1 : 0;

    if (hg_cc_init(&c->cc, cfg->congestion, cfg->mtu) != 0) {
        free(c);
        return NULL;
    }

    hg_pacer_init(&c->pacer, cfg->mtu);

    rcb.on_acked = hg_packet_on_acked;
    rcb.on_lost = hg_packet_on_lost;
    rcb.ctx = c;

    if (hg_recovery_init(&c->rec, &c->cc, cfg->max_ack_delay, 1 << 16, &rcb)
        != 0)
    {
        free(c);
        return NULL;
    }

    hg_ackq_init(&c->ackq, cfg->max_ack_delay, cfg->max_ack_ranges);

    if (hg_conn_events_reserve(c, 0) != HG_OK || hg_cstreams_init(c) != 0) {
        hg_conn_free(c);
        return NULL;
    }

    return c;
}


hg_conn_t *
hg_conn_server_new(const hg_config_t *cfg, hg_dtls_t *dtls,
    const uint8_t cid[HG_CID_LEN], const struct sockaddr *peer,
    socklen_t peerlen, hg_time_t now)
{
    hg_conn_t  *c;

    c = hg_conn_alloc(cfg, HG_ROLE_SERVER, peer, peerlen, now);
    if (c == NULL) {
        return NULL;
    }

    c->dtls = dtls;
    memcpy(c->cid, cid, HG_CID_LEN);
    c->has_cid = 1;

    return c;
}


/* the client's connection with its HELLO, on either carrier */
hg_conn_t *
hg_conn_client_alloc(const hg_config_t *cfg, const hg_hello_t *hello,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now)
{
    hg_conn_t  *c;

    /* refused, not cut short: a truncated key would only fail later */
    if (hello->domain == NULL || hello->api_key == NULL
        || strlen(hello->domain) > HG_HELLO_TEXT_MAX
        || strlen(hello->api_key) > HG_HELLO_TEXT_MAX)
    {
        return NULL;
    }

    c = hg_conn_alloc(cfg, HG_ROLE_CLIENT, peer, peerlen, now);
    if (c == NULL) {
        return NULL;
    }

    hg_copy_text(c->hello_domain, sizeof(c->hello_domain), hello->domain);
    hg_copy_text(c->hello_key, sizeof(c->hello_key), hello->api_key);
    hg_copy_text(c->hello_version, sizeof(c->hello_version),
                 hello->agent_version);
    hg_copy_text(c->hello_agent_id, sizeof(c->hello_agent_id),
                 hello->agent_id);

    c->hello.domain = c->hello_domain;
    c->hello.api_key = c->hello_key;
    c->hello.agent_version = c->hello_version;
    c->hello.agent_id = c->hello_agent_id;
    c->hello.worker_hint = hello->worker_hint;
    c->worker_hint = hello->worker_hint;

    return c;
}


hg_conn_t *
hg_conn_client_new(const hg_config_t *cfg, SSL_CTX *ctx,
    const char *server_name, const hg_hello_t *hello,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now)
{
    hg_conn_t  *c;

    c = hg_conn_client_alloc(cfg, hello, peer, peerlen, now);
    if (c == NULL) {
        return NULL;
    }

    c->dtls = hg_dtls_client_new(ctx, cfg->mtu - HG_PREFIX_LEN, server_name,
                                 now);
    if (c->dtls == NULL) {
        hg_conn_free(c);
        return NULL;
    }

    return c;
}


void
hg_conn_free(hg_conn_t *c)
{
    size_t  i;

    if (c == NULL) {
        return;
    }

    hg_cstreams_free(c);

    if (c->dtls) {
        hg_dtls_free(c->dtls);
    }

    hg_stream_carrier_free(c);

    hg_recovery_free(&c->rec);
    hg_ackq_free(&c->ackq);

    for (i = 0; i < c->nedges; i++) {
        free(c->edges[i]);
    }

    free(c->edges);
    free(c->events);
    free(c);
}


/* ---- datagram input ------------------------------------------------- */

int
hg_conn_recv(hg_conn_t *c, const uint8_t *dgram, size_t len,
    const struct sockaddr *from, socklen_t fromlen, hg_time_t now)
{
    hg_prefix_t  prefix;
    int          was_established, rc;

    if (c->state == HG_CS_CLOSED || c->carrier != HG_CARRIER_DATAGRAM) {
        return HG_ERR;
    }

    c->stats.bytes_received += len;

    if (len > HG_MTU_MAX || hg_prefix_parse(dgram, len, &prefix) != HG_OK) {
        c->stats.malformed++;
        return HG_ERR;
    }

    if (prefix.flags & HG_PREFIX_FLAG_RESET) {
        return hg_session_reset(c, dgram, len, &prefix, now);
    }

    was_established = hg_dtls_established(c->dtls);
    c->authenticated_input = 0;
    c->path.input_newest = 0;
    c->path.input_echo = 0;
    c->path.input_back_echo = 0;
    c->now = now;

    rc = hg_dtls_recv(c->dtls, dgram + HG_PREFIX_LEN, len - HG_PREFIX_LEN,
                      now, hg_packet_process, c);

    if (rc == HG_ERR_STATE) {
        hg_conn_log(c, HG_LOG_INFO, "dtls failed: %s",
                    hg_dtls_error(c->dtls) ? hg_dtls_error(c->dtls)
                                           : "unknown");
        hg_conn_enter_closing(c, HG_CODE_TLS, hg_dtls_error(c->dtls), 0,
                              now);
        hg_conn_set_closed(c);
        return HG_ERR;
    }

    if (!was_established && hg_dtls_established(c->dtls)) {
        hg_conn_on_established(c, now);
    }

    /*
     * The session's id is the one HELLO_ACK carries (hg_session.c):
     * nothing authenticates a prefix, and once READY no datagram changes
     * the id, or one rewritten byte would send ours astray. Until then
     * our datagrams echo the id of the edge's latest good datagram, for
     * routing only: the rest of the handshake and HELLO must reach the
     * worker that holds it, steered or not (one socket shared by the
     * workers, a reload); a rewritten id there costs what a lost
     * datagram does, and the edge's next one puts it right.
     */
    if (c->role == HG_ROLE_CLIENT && !c->has_cid && rc == HG_OK
        && (prefix.flags & HG_PREFIX_FLAG_CID))
    {
        memcpy(c->route_cid, prefix.cid, HG_CID_LEN);
        c->has_route_cid = 1;
    }

    if (!c->authenticated_input) {
        if (rc != HG_OK) {
            c->stats.malformed++;
        }
        return rc == HG_OK ? HG_OK : HG_ERR;
    }

    c->last_recv = now;
    hg_dtls_peer_confirmed(c->dtls);

    /* only an authenticated packet may move the session */
    hg_path_on_datagram(c, from, fromlen, len);

    if (c->state == HG_CS_CLOSING && now - c->last_close_sent > 50 * HG_MS) {
        /* the peer keeps talking: it did not get our CLOSE */
        c->close_due = 1;
    }

    return HG_OK;
}




static void
hg_conn_on_established(hg_conn_t *c, hg_time_t now)
{
    size_t  overhead;

    overhead = hg_dtls_overhead(c->dtls);
    c->max_payload = c->cfg.mtu - HG_PREFIX_LEN - overhead;
    c->state = HG_CS_HELLO;

    /*
     * The flight that completed the handshake answered our last one: a
     * round trip measured before any packet is sent. Without it the first
     * PTO runs on the 333 ms default, and a lost HELLO or HELLO_ACK costs
     * a second at any RTT. A retransmitted flight makes the sample
     * ambiguous (Karn), so then the default stays.
     */
    if (c->handshake_sent != HG_TIME_INFINITE
        && hg_dtls_retransmits(c->dtls) == 0)
    {
        hg_recovery_set_initial_rtt(&c->rec, now - c->handshake_sent);
    }

    if (c->role == HG_ROLE_CLIENT) {
        c->hello_due = 1;
    }

    hg_conn_event(c, HG_EV_HANDSHAKE_DONE, -1, 0);
    hg_conn_log(c, HG_LOG_DEBUG, "dtls established (%s), %zu payload bytes "
                "per packet", SSL_get_cipher_name(hg_dtls_ssl(c->dtls)),
                c->max_payload);
}


void
hg_conn_set_remote_params(hg_conn_t *c, uint32_t max_streams,
    uint64_t stream_window, uint64_t conn_window, hg_time_t max_ack_delay)
{
    hg_cstream_t  *cs;

    c->remote.max_streams = max_streams;
    c->remote.stream_window = stream_window;
    c->remote.conn_window = conn_window;
    c->remote.max_ack_delay = max_ack_delay ? max_ack_delay
                                            : c->cfg.max_ack_delay;
    c->rec.max_ack_delay = c->remote.max_ack_delay;
    c->remote_known = 1;

    if (conn_window > c->send_max) {
        c->send_max = conn_window;
    }

    if (max_streams > c->peer_max_streams) {
        c->peer_max_streams = max_streams;
    }

    /* streams the peer opened before we knew its limits may now send */
    for (cs = c->first; cs; cs = cs->next) {
        hg_stream_send_max(cs->s, stream_window);
    }
}


void
hg_conn_protocol_error(hg_conn_t *c, const char *why)
{
    hg_conn_log(c, HG_LOG_INFO, "protocol violation: %s", why);
    hg_conn_enter_closing(c, HG_CODE_PROTOCOL, why, 1, c->last_recv);
}


/* ---- output and timers ----------------------------------------------- */

size_t
hg_prefix_write(const hg_conn_t *c, uint8_t *out)
{
    memset(out, 0, HG_PREFIX_LEN);
    out[0] = HG_PREFIX_VERSION;

    if (c->has_cid) {
        out[0] |= HG_PREFIX_FLAG_CID;
        memcpy(out + 1, c->cid, HG_CID_LEN);

    } else if (c->has_route_cid) {
        out[0] |= HG_PREFIX_FLAG_CID;
        memcpy(out + 1, c->route_cid, HG_CID_LEN);

    } else if (c->worker_hint >= 0) {
        out[0] |= HG_PREFIX_FLAG_STEER;
        out[1] = (uint8_t) c->worker_hint;
    }

    return HG_PREFIX_LEN;
}


ssize_t
hg_conn_send(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now)
{
    ssize_t  n;

    if (c->carrier != HG_CARRIER_DATAGRAM) {
        return HG_ERR;
    }

    if (c->state == HG_CS_CLOSED || cap < c->cfg.mtu) {
        return 0;
    }

    c->now = now;

    /* a queued DTLS datagram may be as large as the mtu */
    n = hg_path_allowance(c) >= c->cfg.mtu
        ? hg_dtls_pending(c->dtls, out + HG_PREFIX_LEN, cap - HG_PREFIX_LEN)
        : 0;

    if (n > 0) {
        if (!hg_dtls_established(c->dtls)) {
            c->handshake_sent = now;
        }

        hg_prefix_write(c, out);
        n += HG_PREFIX_LEN;
        c->stats.bytes_sent += n;
        hg_path_on_sent(c, (size_t) n);
        return n;
    }

    if (!hg_dtls_established(c->dtls)) {
        return 0;
    }

    n = hg_packet_build(c, out, cap, now);
    if (n > 0) {
        hg_path_on_sent(c, (size_t) n);
    }

    return n;
}


ssize_t
hg_conn_send_probe(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now,
    const struct sockaddr **to, socklen_t *tolen)
{
    ssize_t   n;
    uint64_t  data;

    if ((c->state != HG_CS_HELLO && c->state != HG_CS_READY)
        || cap < c->cfg.mtu || !hg_path_back_due(c))
    {
        return 0;
    }

    c->now = now;

    if (hg_path_challenge_data(c, &data) != HG_OK) {
        return 0;
    }

    n = hg_packet_build_probe(c, out, cap, now, data);
    if (n <= 0) {
        return n;
    }

    hg_path_back_sent(c, data);
    *to = hg_path_validated(c, tolen);

    return n;
}


/*
 * PING after a quiet spell. While streams are open the spell is short
 * (a second, or three PTOs): a peer that vanished mid-transfer is then
 * found by the probe timeouts within seconds, not at the idle timeout.
 */
static hg_time_t
hg_conn_keepalive_at(const hg_conn_t *c)
{
    hg_time_t  base, interval, active;

    /*
     * unacknowledged packets are in flight: the probe timeouts already ask
     * for an answer, and a PING now would only push their timer back
     */
    if (c->rec.ack_eliciting_in_flight > 0) {
        return HG_TIME_INFINITE;
    }

    base = c->last_recv > c->last_eliciting_sent ? c->last_recv
                                                 : c->last_eliciting_sent;
    interval = c->cfg.keepalive;

    if (c->nstreams > 0) {
        active = 3 * hg_recovery_pto(&c->rec);
        if (active < HG_SEC) {
            active = HG_SEC;
        }
        if (active < interval) {
            interval = active;
        }
    }

    return base + interval;
}


static hg_time_t
hg_min_time(hg_time_t a, hg_time_t b)
{
    return a < b ? a : b;
}


hg_time_t
hg_conn_deadline(const hg_conn_t *c)
{
    hg_time_t  t;

    if (c->state == HG_CS_CLOSED) {
        return HG_TIME_INFINITE;
    }

    if (c->carrier == HG_CARRIER_STREAM) {
        return hg_stream_carrier_deadline(c);
    }

    if (c->state == HG_CS_CLOSING) {
        return c->closing_deadline;
    }

    t = c->last_recv + c->cfg.idle_timeout;

    if (c->state != HG_CS_READY) {
        t = hg_min_time(t, c->created + c->cfg.handshake_timeout);
    }

    t = hg_min_time(t, hg_dtls_deadline(c->dtls));

    if (!hg_dtls_established(c->dtls)) {
        return t;
    }

    /* c->now: the time of the last call, which is what the pacer and the
     * loss timers were last consulted at */
    t = hg_min_time(t, hg_recovery_deadline(&c->rec, c->now));
    t = hg_min_time(t, hg_path_deadline(c));

    /*
     * With the anti-amplification allowance used up nothing can be sent
     * before the peer's next datagram: an ACK or a packet due now would
     * be due again and again, and the shell would spin.
     */
    if (!hg_path_starved(c)) {
        t = hg_min_time(t, hg_ackq_deadline(&c->ackq));
        t = hg_min_time(t, hg_packet_send_deadline(c, c->now));
    }

    /*
     * Once the PING is due, when it leaves is the send deadline's business
     * (the congestion window may be full): a keepalive time already past
     * would otherwise be reported again and again, and the shell would
     * spin on a deadline that never moves.
     */
    if (c->state == HG_CS_READY && !c->ping_due) {
        t = hg_min_time(t, hg_conn_keepalive_at(c));
    }

    return t;
}


void
hg_conn_timeout(hg_conn_t *c, hg_time_t now)
{
    int  probes;

    if (c->state == HG_CS_CLOSED) {
        return;
    }

    c->now = now;

    if (c->carrier == HG_CARRIER_STREAM) {
        hg_stream_carrier_timeout(c, now);
        return;
    }

    if (c->state == HG_CS_CLOSING) {
        /*
         * a CLOSE still to send goes out first: a close requested on a
         * quiet connection (a revoked key) has its deadline counted from
         * the last packet received, which may be long past
         */
        if (now >= c->closing_deadline && !c->close_due) {
            hg_conn_set_closed(c);
        }
        return;
    }

    if (now >= c->last_recv + c->cfg.idle_timeout) {
        hg_conn_log(c, HG_LOG_INFO, "idle timeout");
        hg_conn_enter_closing(c, HG_CODE_IDLE_TIMEOUT, "idle timeout", 0,
                              now);
        hg_conn_set_closed(c);
        return;
    }

    if (c->state != HG_CS_READY
        && now >= c->created + c->cfg.handshake_timeout)
    {
        hg_conn_enter_closing(c, HG_CODE_HANDSHAKE_TIMEOUT,
                              "handshake timeout",
                              hg_dtls_established(c->dtls), now);
        if (!hg_dtls_established(c->dtls)) {
            hg_conn_set_closed(c);
        }
        return;
    }

    if (now >= hg_dtls_deadline(c->dtls)
        && hg_dtls_timeout(c->dtls, now) != HG_OK)
    {
        hg_conn_enter_closing(c, HG_CODE_HANDSHAKE_TIMEOUT,
                              hg_dtls_error(c->dtls), 0, now);
        hg_conn_set_closed(c);
        return;
    }

    if (!hg_dtls_established(c->dtls)) {
        return;
    }

    hg_path_timeout(c, now);

    if (now >= hg_recovery_deadline(&c->rec, now)) {
        probes = hg_recovery_on_timeout(&c->rec, now);
        if (probes > 0) {
            c->probes_due = probes;
            c->stats.pto_count++;
            hg_conn_probe_oldest(c);
        }

        if (c->rec.pto_count >= HG_PTO_DEAD
            && now - c->last_recv >= HG_DEAD_SILENCE)
        {
            /* nothing heard through a long backoff: the peer is gone */
            hg_conn_log(c, HG_LOG_INFO, "peer unresponsive after %u probe "
                        "timeouts", c->rec.pto_count);
            hg_conn_enter_closing(c, HG_CODE_IDLE_TIMEOUT,
                                  "peer unresponsive", 0, now);
            hg_conn_set_closed(c);
            return;
        }
    }

    if (c->state == HG_CS_READY && now >= hg_conn_keepalive_at(c)) {
        c->ping_due = 1;
    }
}


/*
 * RFC 9002 6.2.4: a probe carries the oldest unacknowledged data, not a
 * bare PING. A PING would only earn an ACK that then shows the packet
 * lost, a round trip later; after a tail loss (a stream's last bytes, a
 * FIN, a HELLO) that round trip is the whole stall. The packet stays in
 * flight: whichever copy is acknowledged first settles the frames.
 */
static void
hg_conn_probe_oldest(hg_conn_t *c)
{
    const hg_sent_packet_t  *oldest;

    oldest = hg_recovery_oldest_unacked(&c->rec);
    if (oldest != NULL) {
        hg_packet_on_lost(c, oldest);
    }
}


void
hg_conn_enter_closing(hg_conn_t *c, uint32_t code, const char *reason,
    int send_close, hg_time_t now)
{
    hg_time_t  drain;

    if (c->state == HG_CS_CLOSING || c->state == HG_CS_CLOSED) {
        return;
    }

    c->state = HG_CS_CLOSING;
    c->close_code = code;
    hg_copy_text(c->close_reason, sizeof(c->close_reason), reason);
    c->close_due = send_close;

    /* RFC 9000 10.2: linger for three PTOs to repeat CLOSE if needed */
    drain = 3 * hg_recovery_pto(&c->rec);
    if (drain > 2 * HG_SEC) {
        drain = 2 * HG_SEC;
    }
    c->closing_deadline = send_close ? now + drain : now;

    if (!c->close_event_emitted) {
        c->close_event_emitted = 1;
        hg_conn_event(c, HG_EV_CLOSED, -1, code);
    }
}


void
hg_conn_set_closed(hg_conn_t *c)
{
    c->state = HG_CS_CLOSED;
    c->closing_deadline = HG_TIME_INFINITE;
}


int
hg_conn_is_ready(const hg_conn_t *c)
{
    return c->state == HG_CS_READY;
}


void
hg_conn_ping(hg_conn_t *c)
{
    if (c->state == HG_CS_READY) {
        c->ping_due = 1;
    }
}


int
hg_conn_is_responsive(const hg_conn_t *c)
{
    return c->rec.pto_count == 0;
}


int
hg_conn_is_closed(const hg_conn_t *c)
{
    return c->state == HG_CS_CLOSED;
}


const struct sockaddr *
hg_conn_peer(const hg_conn_t *c, socklen_t *len)
{
    if (len) {
        *len = c->peerlen;
    }

    return (const struct sockaddr *) &c->peer;
}


const uint8_t *
hg_conn_cid(const hg_conn_t *c)
{
    return c->has_cid ? c->cid : NULL;
}


hg_carrier_t
hg_conn_carrier(const hg_conn_t *c)
{
    return c->carrier;
}


/* ---- events ------------------------------------------------------------- */

/* see hg_conn.h for why the queue cannot overflow */
int
hg_conn_events_reserve(hg_conn_t *c, size_t nstreams)
{
    size_t            need, cap, i;
    hg_event_slot_t  *grown;

    need = HG_EV_CONN_KINDS + HG_EV_STREAM_KINDS * nstreams;

    if (need <= c->ev_cap) {
        return HG_OK;
    }

    /* a connection that never opens a stream costs 8 slots (128 bytes) */
    for (cap = c->ev_cap ? c->ev_cap : 8; cap < need; cap *= 2) {
        /* void */
    }

    grown = malloc(cap * sizeof(hg_event_slot_t));
    if (grown == NULL) {
        return HG_ERR_NOMEM;
    }

    for (i = 0; i < c->ev_count; i++) {
        grown[i] = c->events[(c->ev_head + i) & (c->ev_cap - 1)];
    }

    free(c->events);
    c->events = grown;
    c->ev_cap = cap;
    c->ev_head = 0;

    return HG_OK;
}


void
hg_conn_event(hg_conn_t *c, hg_event_type_t type, int64_t stream_id,
    uint32_t code)
{
    uint32_t         *queued, bit;
    hg_cstream_t     *cs;
    hg_event_slot_t  *ev;

    bit = 1u << type;

    if (stream_id >= 0) {
        cs = hg_cstream_find(c, stream_id);

        /* nothing follows STREAM_CLOSED: the bound counts on it */
        if (cs == NULL || (cs->closed && type != HG_EV_STREAM_CLOSED)) {
            return;
        }

        queued = &cs->ev_queued;

    } else {
        queued = &c->ev_queued;
    }

    if (*queued & bit) {
        /* one of this type waits already: the shell learns it from that */
        return;
    }

    if (c->ev_count == c->ev_cap) {
        /* cannot happen (room is reserved); refuse rather than overwrite */
        hg_conn_log(c, HG_LOG_ERR, "event queue overflow: event %d lost",
                    (int) type);
        return;
    }

    *queued |= bit;

    ev = &c->events[(c->ev_head + c->ev_count) & (c->ev_cap - 1)];
    c->ev_count++;

    ev->type = type;
    ev->stream_id = stream_id;
    ev->code = code;
}


int
hg_conn_next_event(hg_conn_t *c, hg_event_t *ev)
{
    hg_cstream_t     *cs;
    hg_event_slot_t  *slot;

    /*
     * the stream of the STREAM_CLOSED event taken last goes now: the shell
     * could still ask for its user pointer while handling that event
     */
    if (c->release_id >= 0) {
        hg_cstream_release(c, c->release_id);
        c->release_id = -1;
    }

    if (c->ev_count == 0) {
        return HG_AGAIN;
    }

    slot = &c->events[c->ev_head];
    c->ev_head = (c->ev_head + 1) & (c->ev_cap - 1);
    c->ev_count--;

    memset(ev, 0, sizeof(hg_event_t));
    ev->type = (hg_event_type_t) slot->type;
    ev->stream_id = slot->stream_id;
    ev->code = slot->code;

    /* from now on another event of the type may be queued */
    cs = NULL;

    if (ev->stream_id >= 0) {
        cs = hg_cstream_find(c, ev->stream_id);
        if (cs != NULL) {
            cs->ev_queued &= ~(1u << ev->type);
        }

    } else {
        c->ev_queued &= ~(1u << ev->type);
    }

    switch (ev->type) {

    case HG_EV_HELLO:
        ev->hello = &c->hello;
        break;

    case HG_EV_READY:
        ev->worker_index = c->worker_index;
        ev->worker_count = c->worker_count;
        ev->session_id = c->session_id;
        break;

    case HG_EV_REJECTED:
        hg_copy_text(c->ev_text, sizeof(c->ev_text), c->ack_text);
        ev->text = c->ev_text;
        break;

    case HG_EV_GOAWAY:
        hg_copy_text(c->ev_text, sizeof(c->ev_text), c->goaway_reason);
        ev->text = c->ev_text;
        break;

    case HG_EV_CLOSED:
        hg_copy_text(c->ev_text, sizeof(c->ev_text), c->close_reason);
        ev->text = c->ev_text;
        break;

    case HG_EV_STREAM_OPENED:
        ev->meta = cs ? &cs->s->meta : NULL;
        break;

    case HG_EV_STREAM_CLOSED:
        c->release_id = ev->stream_id;
        break;

    default:
        break;
    }

    return HG_OK;
}


void
hg_conn_get_stats(const hg_conn_t *c, hg_conn_stats_t *st)
{
    *st = c->stats;
    st->srtt = c->rec.smoothed_rtt;
    st->min_rtt = c->rec.min_rtt;
    st->rttvar = c->rec.rttvar;
    st->latest_rtt = c->rec.latest_rtt;
    /* a byte stream's window is the kernel's business */
    st->cwnd = c->carrier == HG_CARRIER_DATAGRAM ? c->cc.cwnd : 0;
    st->bytes_in_flight = c->cc.bytes_in_flight;
    st->packets_lost = c->rec.packets_lost;
    st->congestion_events = c->cc.congestion_events;
}


/*
 * The edge needs the agent's key only until the registry has judged it:
 * then the text is wiped, so that it does not sit in memory (or a core
 * dump) for the session's whole life.
 */
void
hg_conn_forget_key(hg_conn_t *c)
{
    OPENSSL_cleanse(c->hello_key, sizeof(c->hello_key));
}
