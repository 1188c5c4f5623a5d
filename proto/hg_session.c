/*
 * Session control: HELLO and HELLO_ACK (who the agent is, what each side
 * allows), GOAWAY (no new streams), CLOSE, and the stateless reset; the
 * frames that carry them, both ways, and the public calls that start
 * them (hg_conn_accept, hg_conn_reject, hg_conn_goaway, hg_conn_close).
 * These frames are rare and go through protobuf-c; the hot frames are
 * hg_codec.c's.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "hg_builder.h"
#include "hg_codec.h"
#include "hg_conn.h"


static int hg_params_valid(const Hopgate__TransportParams *p);
static void hg_hello_cleanse(Hopgate__HelloFrame *f,
    const hg_codec_bytes_t *body);
static int hg_frame_hello(hg_conn_t *c, const Hopgate__HelloFrame *f);
static int hg_frame_hello_ack(hg_conn_t *c, const Hopgate__HelloAckFrame *f);
static int hg_frame_close(hg_conn_t *c, const Hopgate__CloseFrame *f);
static void hg_add_hello(hg_builder_t *b);
static void hg_add_hello_ack(hg_builder_t *b);
static void hg_add_goaway(hg_builder_t *b);
static void hg_add_close(hg_builder_t *b);
static void hg_builder_params(hg_builder_t *b,
    Hopgate__TransportParams *params);


/* ---- the public calls ------------------------------------------------------ */

int
hg_conn_accept(hg_conn_t *c, uint64_t session_id, uint32_t worker_index,
    uint32_t worker_count, const char *const *edges, size_t nedges)
{
    size_t  i;

    if (c->role != HG_ROLE_SERVER || c->state != HG_CS_HELLO
        || c->hello.domain == NULL)
    {
        return HG_ERR_STATE;
    }

    if (nedges) {
        c->edges = calloc(nedges, sizeof(char *));
        if (c->edges == NULL) {
            return HG_ERR_NOMEM;
        }

        for (i = 0; i < nedges; i++) {
            c->edges[i] = strdup(edges[i]);
            if (c->edges[i] == NULL) {
                return HG_ERR_NOMEM;
            }
            c->nedges++;
        }
    }

    c->session_id = session_id;
    c->worker_index = worker_index;
    c->worker_count = worker_count;
    c->ack_code = HG_CODE_OK;
    c->hello_ack_due = 1;
    c->state = HG_CS_READY;

    return HG_OK;
}


int
hg_conn_reject(hg_conn_t *c, uint32_t code, const char *text)
{
    if (c->role != HG_ROLE_SERVER || c->state != HG_CS_HELLO
        || code == HG_CODE_OK)
    {
        return HG_ERR_STATE;
    }

    c->ack_code = code;
    hg_copy_text(c->ack_text, sizeof(c->ack_text), text);
    c->hello_ack_due = 1;

    hg_conn_enter_closing(c, code, text, 1, c->last_recv);

    return HG_OK;
}


int
hg_conn_goaway(hg_conn_t *c, uint32_t code, const char *reason)
{
    if (c->state != HG_CS_READY) {
        return hg_conn_close(c, code, reason);
    }

    if (!c->local_goaway) {
        c->local_goaway = 1;
        c->goaway_due = 1;
        c->goaway_code = code;
        hg_copy_text(c->goaway_reason, sizeof(c->goaway_reason), reason);
    }

    hg_conn_maybe_finish_goaway(c, c->last_recv);

    return HG_OK;
}


/*
 * The agent's GOAWAY ends its session with the last stream: only the edge
 * opens streams, and it may not any more. The edge's GOAWAY (a reload)
 * asks the agent for a replacement but leaves the session up: requests
 * the worker already holds still need it, and only the shell knows when
 * none is left, so the shell closes it.
 */
void
hg_conn_maybe_finish_goaway(hg_conn_t *c, hg_time_t now)
{
    if (c->local_goaway && c->role == HG_ROLE_CLIENT
        && c->state == HG_CS_READY && hg_conn_open_streams(c) == 0)
    {
        hg_conn_enter_closing(c, c->goaway_code, c->goaway_reason, 1, now);
    }
}


int
hg_conn_close(hg_conn_t *c, uint32_t code, const char *reason)
{
    if (c->state == HG_CS_CLOSED || c->state == HG_CS_CLOSING) {
        return HG_OK;
    }

    /* a peer that never heard from us needs no CLOSE */
    if ((c->carrier == HG_CARRIER_DATAGRAM && !hg_dtls_established(c->dtls))
        || (c->carrier == HG_CARRIER_STREAM && c->stats.packets_sent == 0))
    {
        hg_conn_enter_closing(c, code, reason, 0, c->last_recv);
        hg_conn_set_closed(c);
        return HG_OK;
    }

    hg_conn_enter_closing(c, code, reason, 1, c->last_recv);

    return HG_OK;
}


/* ---- the stateless reset ------------------------------------------------- */

/*
 * The edge says it has no such session. It counts only for our own id
 * and only with the token HELLO_ACK gave us for that id, which only an
 * edge holding the reset key can make: then the session is over at once,
 * quiet or not. Anything else is dropped (anyone can send a datagram).
 */
int
hg_session_reset(hg_conn_t *c, const uint8_t *dgram, size_t len,
    const hg_prefix_t *prefix, hg_time_t now)
{
    if (c->role != HG_ROLE_CLIENT || !c->has_cid || len != HG_RESET_LEN
        || memcmp(prefix->cid, c->cid, HG_CID_LEN) != 0
        || CRYPTO_memcmp(dgram + HG_PREFIX_LEN, c->reset_token,
                         HG_RESET_TOKEN_LEN)
           != 0)
    {
        c->stats.malformed++;
        return HG_ERR;
    }

    hg_conn_log(c, HG_LOG_INFO, "stateless reset from the edge");
    hg_conn_enter_closing(c, HG_CODE_RESET, "the edge lost the session", 0,
                          now);
    hg_conn_set_closed(c);

    return HG_OK;
}


/* ---- incoming session frames --------------------------------------------- */

/* HELLO, HELLO_ACK, GOAWAY, CLOSE: rare, and unpacked by protobuf-c */
int
hg_session_frame(hg_conn_t *c, hg_codec_kind_t kind,
    const hg_codec_bytes_t *body)
{
    int                    rc;
    ProtobufCMessage      *m;
    Hopgate__GoAwayFrame  *goaway;

    m = protobuf_c_message_unpack(hg_codec_descriptor(kind), NULL,
                                  body->len, body->data);
    if (m == NULL) {
        /* the packet was checked: only memory can be missing */
        hg_conn_enter_closing(c, HG_CODE_INTERNAL, "out of memory", 1,
                              c->now);
        return HG_OK;
    }

    switch (kind) {

    case HOPGATE__FRAME__BODY_HELLO:
        rc = hg_frame_hello(c, (Hopgate__HelloFrame *) m);
        hg_hello_cleanse((Hopgate__HelloFrame *) m, body);
        break;

    case HOPGATE__FRAME__BODY_HELLO_ACK:
        rc = hg_frame_hello_ack(c, (Hopgate__HelloAckFrame *) m);
        break;

    case HOPGATE__FRAME__BODY_GOAWAY:
        goaway = (Hopgate__GoAwayFrame *) m;

        if (!c->peer_goaway) {
            c->peer_goaway = 1;
            hg_conn_event(c, HG_EV_GOAWAY, -1, goaway->error_code);
            snprintf(c->goaway_reason, sizeof(c->goaway_reason), "%s",
                     goaway->reason ? goaway->reason : "");
        }

        rc = HG_OK;
        break;

    default:
        rc = hg_frame_close(c, (Hopgate__CloseFrame *) m);
        break;
    }

    protobuf_c_message_free_unpacked(m, NULL);

    return rc;
}


/*
 * The key a HELLO carried is kept only in c->hello_key (which the shell
 * wipes with hg_conn_forget_key once the registry has judged it): its
 * decoded copy goes now, and so does the plaintext of the frame, which is
 * the engine's own receive buffer.
 */
static void
hg_hello_cleanse(Hopgate__HelloFrame *f, const hg_codec_bytes_t *body)
{
    if (f->api_key != NULL && f->api_key != protobuf_c_empty_string) {
        OPENSSL_cleanse(f->api_key, strlen(f->api_key));
    }

    OPENSSL_cleanse((uint8_t *) body->data, body->len);
}


static int
hg_params_valid(const Hopgate__TransportParams *p)
{
    return p != NULL && p->max_streams > 0 && p->stream_window >= 1024
           && p->conn_window >= p->stream_window;
}


static int
hg_frame_hello(hg_conn_t *c, const Hopgate__HelloFrame *f)
{
    if (c->role != HG_ROLE_SERVER) {
        return HG_ERR;
    }

    if (c->state != HG_CS_HELLO || c->hello.domain != NULL) {
        /* a retransmission after our decision */
        return HG_OK;
    }

    if (!hg_params_valid(f->params) || f->domain == NULL
        || f->api_key == NULL)
    {
        return HG_ERR;
    }

    /* refused here, never cut short and then checked */
    if (strlen(f->api_key) > HG_HELLO_TEXT_MAX) {
        c->hello.domain = "";
        return hg_conn_reject(c, HG_CODE_BAD_KEY,
                              "API key longer than 255 characters");
    }

    if (strlen(f->domain) > HG_HELLO_TEXT_MAX) {
        c->hello.domain = "";
        return hg_conn_reject(c, HG_CODE_UNKNOWN_DOMAIN,
                              "domain longer than 255 characters");
    }

    snprintf(c->hello_domain, sizeof(c->hello_domain), "%s", f->domain);
    snprintf(c->hello_key, sizeof(c->hello_key), "%s", f->api_key);
    snprintf(c->hello_version, sizeof(c->hello_version), "%s",
             f->agent_version ? f->agent_version : "");
    snprintf(c->hello_agent_id, sizeof(c->hello_agent_id), "%s",
             f->agent_id ? f->agent_id : "");

    c->hello.domain = c->hello_domain;
    c->hello.api_key = c->hello_key;
    c->hello.agent_version = c->hello_version;
    c->hello.agent_id = c->hello_agent_id;
    c->hello.worker_hint = (int) f->worker_hint - 1;

    hg_conn_set_remote_params(c, f->params->max_streams,
                              f->params->stream_window,
                              f->params->conn_window,
                              f->params->max_ack_delay_us);

    hg_conn_event(c, HG_EV_HELLO, -1, 0);

    return HG_OK;
}


static int
hg_frame_hello_ack(hg_conn_t *c, const Hopgate__HelloAckFrame *f)
{
    hg_time_t  idle;

    if (c->role != HG_ROLE_CLIENT) {
        return HG_ERR;
    }

    if (c->state != HG_CS_HELLO) {
        return HG_OK;
    }

    if (f->error_code != HG_CODE_OK) {
        c->ack_code = f->error_code;
        snprintf(c->ack_text, sizeof(c->ack_text), "%s",
                 f->error_text && *f->error_text
                 ? f->error_text : hg_code_name(f->error_code));
        hg_conn_event(c, HG_EV_REJECTED, -1, f->error_code);
        hg_conn_enter_closing(c, f->error_code, c->ack_text, 0, c->now);
        c->state = HG_CS_CLOSED;
        return HG_OK;
    }

    if (!hg_params_valid(f->params)
        || f->connection_id.len != HG_CID_LEN
        || f->reset_token.len != HG_RESET_TOKEN_LEN)
    {
        return HG_ERR;
    }

    memcpy(c->cid, f->connection_id.data, HG_CID_LEN);
    memcpy(c->reset_token, f->reset_token.data, HG_RESET_TOKEN_LEN);
    c->has_cid = 1;

    c->session_id = f->session_id;
    c->worker_index = f->worker_index;
    c->worker_count = f->worker_count;

    /* the edge's timers win: it knows its own idle policy */
    idle = (hg_time_t) f->idle_timeout_ms * HG_MS;
    if (idle > 0 && idle < c->cfg.idle_timeout) {
        c->cfg.idle_timeout = idle;
    }

    if (f->keepalive_ms > 0
        && (hg_time_t) f->keepalive_ms * HG_MS < c->cfg.idle_timeout)
    {
        c->cfg.keepalive = (hg_time_t) f->keepalive_ms * HG_MS;
    }

    hg_conn_set_remote_params(c, f->params->max_streams,
                              f->params->stream_window,
                              f->params->conn_window,
                              f->params->max_ack_delay_us);

    c->state = HG_CS_READY;
    hg_conn_event(c, HG_EV_READY, -1, 0);

    return HG_OK;
}


static int
hg_frame_close(hg_conn_t *c, const Hopgate__CloseFrame *f)
{
    const char  *reason;

    reason = f->reason && *f->reason ? f->reason
                                     : hg_code_name(f->error_code);

    if (c->state != HG_CS_CLOSING) {
        hg_conn_enter_closing(c, f->error_code, reason, 0, c->now);
    }

    /* the peer is gone: no draining period needed */
    c->state = HG_CS_CLOSED;
    c->closing_deadline = HG_TIME_INFINITE;

    return HG_OK;
}


/* ---- outgoing session frames --------------------------------------------- */

/* what session control has to say in a packet of a live connection */
int
hg_session_pending(const hg_conn_t *c)
{
    return (c->hello_due && c->role == HG_ROLE_CLIENT)
           || (c->hello_ack_due && c->role == HG_ROLE_SERVER)
           || c->goaway_due;
}


void
hg_session_add_frames(hg_builder_t *b)
{
    hg_conn_t  *c = b->c;

    if (c->hello_due && c->role == HG_ROLE_CLIENT) {
        hg_add_hello(b);
    }

    if (c->hello_ack_due && c->role == HG_ROLE_SERVER) {
        hg_add_hello_ack(b);
    }

    if (c->goaway_due) {
        hg_add_goaway(b);
    }
}


/* the packet of a closing connection: a refusal's HELLO_ACK, then CLOSE */
void
hg_session_add_closing(hg_builder_t *b)
{
    hg_conn_t  *c = b->c;

    if (c->role == HG_ROLE_SERVER && c->ack_code != HG_CODE_OK) {
        hg_add_hello_ack(b);
    }

    hg_add_close(b);
}


/* a lost session frame is due again while it still means something */
void
hg_session_frame_lost(hg_conn_t *c, hg_sent_frame_type_t type)
{
    switch (type) {

    case HG_SF_HELLO:
        if (c->state == HG_CS_HELLO) {
            c->hello_due = 1;
        }
        break;

    case HG_SF_HELLO_ACK:
        if (c->state == HG_CS_READY) {
            c->hello_ack_due = 1;
        }
        break;

    case HG_SF_GOAWAY:
        if (c->state == HG_CS_READY) {
            c->goaway_due = 1;
        }
        break;

    default:
        /* CLOSE is never repeated as such */
        break;
    }
}


static void
hg_builder_params(hg_builder_t *b, Hopgate__TransportParams *params)
{
    hg_conn_t  *c = b->c;

    hopgate__transport_params__init(params);
    params->max_streams = c->local.max_streams;
    params->stream_window = c->local.stream_window;
    params->conn_window = c->local.conn_window;
    params->max_ack_delay_us = (uint32_t) c->local.max_ack_delay;
}


static void
hg_add_hello(hg_builder_t *b)
{
    hg_conn_t                 *c = b->c;
    Hopgate__HelloFrame        hello;
    Hopgate__TransportParams   params;

    hg_builder_params(b, &params);
    hopgate__hello_frame__init(&hello);
    hello.domain = c->hello_domain;
    hello.api_key = c->hello_key;
    hello.agent_version = c->hello_version;
    hello.agent_id = c->hello_agent_id;
    hello.worker_hint = c->worker_hint >= 0 ? c->worker_hint + 1 : 0;
    hello.params = &params;

    if (hg_builder_add_message(b, HOPGATE__FRAME__BODY_HELLO, &hello.base,
                               HG_SF_HELLO))
    {
        c->hello_due = 0;
    }
}


static void
hg_add_hello_ack(hg_builder_t *b)
{
    hg_conn_t                 *c = b->c;
    Hopgate__HelloAckFrame     ack;
    Hopgate__TransportParams   params;

    hopgate__hello_ack_frame__init(&ack);
    ack.error_code = c->ack_code;
    ack.error_text = c->ack_text;

    if (c->ack_code == HG_CODE_OK) {
        hg_builder_params(b, &params);
        ack.session_id = c->session_id;
        ack.worker_index = c->worker_index;
        ack.worker_count = c->worker_count;
        ack.n_edges = c->nedges;
        ack.edges = c->edges;
        ack.idle_timeout_ms = c->cfg.idle_timeout / HG_MS;
        ack.keepalive_ms = c->cfg.keepalive / HG_MS;
        ack.params = &params;
        ack.connection_id.data = c->cid;
        ack.connection_id.len = HG_CID_LEN;
        ack.reset_token.data = c->reset_token;
        ack.reset_token.len = HG_RESET_TOKEN_LEN;
    }

    if (hg_builder_add_message(b, HOPGATE__FRAME__BODY_HELLO_ACK, &ack.base,
                               HG_SF_HELLO_ACK))
    {
        c->hello_ack_due = 0;
    }
}


static void
hg_add_goaway(hg_builder_t *b)
{
    hg_conn_t            *c = b->c;
    Hopgate__GoAwayFrame  goaway;

    hopgate__go_away_frame__init(&goaway);
    goaway.error_code = c->goaway_code;
    goaway.reason = c->goaway_reason;

    if (hg_builder_add_message(b, HOPGATE__FRAME__BODY_GOAWAY, &goaway.base,
                               HG_SF_GOAWAY))
    {
        c->goaway_due = 0;
    }
}


static void
hg_add_close(hg_builder_t *b)
{
    hg_conn_t           *c = b->c;
    Hopgate__CloseFrame  close;

    hopgate__close_frame__init(&close);
    close.error_code = c->close_code;
    close.reason = c->close_reason;

    if (hg_builder_add_message(b, HOPGATE__FRAME__BODY_CLOSE, &close.base,
                               HG_SF_CLOSE))
    {
        c->close_due = 0;
        c->last_close_sent = b->now;
    }
}
