/*
 * One edge/agent session for the fuzz target, built in memory: the test
 * certificates, a real DTLS handshake through the stateless listener, and
 * HELLO accepted, all on a virtual clock with seeded randomness. Then the
 * edge's side of the application: events, stream reads and writes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "fuzz.h"
#include "testcert.h"


static int hg_fuzz_random(void *ctx, uint8_t *buf, size_t len);
static void hg_fuzz_log(void *ctx, int level, const char *msg);
static void hg_fuzz_event(hg_fuzz_session_t *s, const hg_event_t *ev);
static void hg_fuzz_agent_events(hg_fuzz_session_t *s);
static void hg_fuzz_read(hg_fuzz_session_t *s, int64_t id);
static void hg_fuzz_stream_add(hg_fuzz_session_t *s, int64_t id);
static void hg_fuzz_stream_remove(hg_fuzz_session_t *s, int64_t id);
static int64_t hg_fuzz_stream_pick(const hg_fuzz_session_t *s,
    uint8_t which);


/* connection ids start with worker index 0 */
static const uint8_t  hg_fuzz_cid_prefix[1] = { 0 };

/* the edge list HELLO_ACK carries, so that path is encoded too */
static const char *const  hg_fuzz_edges[] = { "edge-2.test:443" };

/* what the edge writes into its streams; the content does not matter */
static uint8_t  hg_fuzz_payload[65536];

/* where stream reads land */
static uint8_t  hg_fuzz_sink[16384];


int
hg_fuzz_tls(SSL_CTX **server_ctx, SSL_CTX **client_ctx)
{
    char                  err[256];
    hg_testcert_t         tc;
    hg_tls_client_opts_t  opts;

    if (hg_testcert_make_tmp(&tc) != 0) {
        fprintf(stderr, "fuzz: cannot write test certificates\n");
        return -1;
    }

    *server_ctx = hg_tls_server_ctx(tc.cert, tc.key, err, sizeof(err));

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = tc.ca;
    opts.server_name = "localhost";

    *client_ctx = hg_tls_client_ctx(&opts, err, sizeof(err));

    /* the contexts hold what they need: no files outlive a crash */
    hg_testcert_remove(&tc);

    if (*server_ctx == NULL || *client_ctx == NULL) {
        fprintf(stderr, "fuzz: TLS context: %s\n", err);
        return -1;
    }

    return 0;
}


static int
hg_fuzz_random(void *ctx, uint8_t *buf, size_t len)
{
    uint64_t  *state = ctx;
    uint64_t   x;
    size_t     i;

    for (i = 0; i < len; i++) {
        /* xorshift64* */
        x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        buf[i] = (uint8_t) ((x * 0x2545f4914f6cdd1dULL) >> 56);
    }

    return 0;
}


void
hg_fuzz_config(hg_config_t *cfg, uint64_t *rng)
{
    hg_config_defaults(cfg);

    /* the widest datagrams the engine takes */
    cfg->mtu = HG_MTU_MAX;

    /*
     * The smallest windows and buffers allowed, so an input of a few
     * kilobytes reaches flow control (MAX_STREAM_DATA, MAX_DATA, blocked
     * senders) and the stream limit.
     */
    cfg->max_streams = 8;
    cfg->stream_window = 16384;
    cfg->conn_window = 32768;
    cfg->stream_send_buffer = 16384;
    cfg->max_out_of_order = 65536;
    cfg->cb.random = hg_fuzz_random;
    cfg->cb.ctx = rng;

    /* the engine's own account, to follow a crashing input */
    if (getenv("HG_FUZZ_LOG") != NULL) {
        cfg->cb.log = hg_fuzz_log;
    }
}


static void
hg_fuzz_log(void *ctx, int level, const char *msg)
{
    (void) ctx;

    fprintf(stderr, "engine[%d]: %s\n", level, msg);
}


hg_listener_t *
hg_fuzz_front_new(SSL_CTX *server_ctx, uint64_t *rng)
{
    hg_config_t  cfg;

    /*
     * A fixed seed and clock fix the cookie secret: a corpus entry with
     * a returning ClientHello keeps passing the cookie check.
     */
    *rng = HG_FUZZ_FRONT_SEED;
    hg_fuzz_config(&cfg, rng);

    return hg_listener_new(&cfg, server_ctx, hg_fuzz_cid_prefix,
                           sizeof(hg_fuzz_cid_prefix), HG_FUZZ_T0);
}


void
hg_fuzz_addr(struct sockaddr_in *sin, int n)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t) (4000 + n));
    sin->sin_addr.s_addr = htonl(0x0a000000u + (uint32_t) n);
}


int
hg_fuzz_session_open(hg_fuzz_session_t *s, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx)
{
    int              round, settle;
    ssize_t          n;
    size_t           replylen;
    hg_conn_t       *c;
    hg_hello_t       hello;
    hg_listener_t   *l;
    uint8_t          reply[HG_MTU_MAX];

    memset(s, 0, offsetof(hg_fuzz_session_t, dgram));
    s->rng = HG_FUZZ_SESSION_SEED;
    s->now = HG_FUZZ_T0;
    hg_fuzz_config(&s->cfg, &s->rng);
    hg_fuzz_addr(&s->edge_addr, 0);
    hg_fuzz_addr(&s->agent_addr, 1);
    hg_fuzz_addr(&s->moved_addr, 2);

    memset(&hello, 0, sizeof(hello));
    hello.domain = "app.example.com";
    hello.api_key = "fuzz-key";
    hello.agent_version = "fuzz";
    hello.agent_id = "fuzz-agent";
    hello.worker_hint = -1;

    l = hg_listener_new(&s->cfg, server_ctx, hg_fuzz_cid_prefix,
                        sizeof(hg_fuzz_cid_prefix), s->now);
    s->agent = hg_conn_client_new(&s->cfg, client_ctx, "localhost", &hello,
                                  (struct sockaddr *) &s->edge_addr,
                                  sizeof(s->edge_addr), s->now);
    if (l == NULL || s->agent == NULL) {
        hg_listener_free(l);
        hg_fuzz_session_close(s);
        return -1;
    }

    settle = 0;

    for (round = 0; round < 64 && settle < 3; round++) {

        /* agent -> edge: the listener until a connection exists */
        while (s->edge == NULL
               && (n = hg_conn_send(s->agent, s->dgram, sizeof(s->dgram),
                                    s->now)) > 0)
        {
            replylen = sizeof(reply);
            c = NULL;

            if (hg_listener_accept(l, s->dgram, (size_t) n,
                                   (struct sockaddr *) &s->agent_addr,
                                   sizeof(s->agent_addr), s->now, reply,
                                   &replylen, &c)
                == HG_AGAIN)
            {
                hg_conn_recv(s->agent, reply, replylen,
                             (struct sockaddr *) &s->edge_addr,
                             sizeof(s->edge_addr), s->now);
            }

            s->edge = c;
        }

        hg_fuzz_agent_flush(s, NULL, NULL);
        hg_fuzz_pump(s, 1);

        /* a few quiet rounds more: the last ACKs cross */
        if (s->edge != NULL && hg_conn_is_ready(s->edge)
            && hg_conn_is_ready(s->agent))
        {
            settle++;
        }

        s->now += HG_FUZZ_STEP;
    }

    hg_listener_free(l);

    if (settle == 0) {
        hg_fuzz_session_close(s);
        return -1;
    }

    return 0;
}


void
hg_fuzz_session_close(hg_fuzz_session_t *s)
{
    hg_conn_free(s->edge);
    hg_conn_free(s->agent);
    s->edge = NULL;
    s->agent = NULL;
}


void
hg_fuzz_pump(hg_fuzz_session_t *s, int to_agent)
{
    int                     round, sends;
    ssize_t                 n;
    socklen_t               tolen;
    hg_event_t              ev;
    const struct sockaddr  *to;

    if (s->edge == NULL) {
        return;
    }

    /* events can make data to send, and sending can make events */
    for (round = 0; round < 4; round++) {

        while (hg_conn_next_event(s->edge, &ev) == HG_OK) {
            hg_fuzz_event(s, &ev);
        }

        if (hg_conn_deadline(s->edge) <= s->now) {
            hg_conn_timeout(s->edge, s->now);
        }

        /* a challenge to the validated address: the agent's own */
        while ((n = hg_conn_send_probe(s->edge, s->dgram, sizeof(s->dgram),
                                       s->now, &to, &tolen))
               > 0)
        {
            if (to_agent) {
                hg_conn_recv(s->agent, s->dgram, (size_t) n,
                             (struct sockaddr *) &s->edge_addr,
                             sizeof(s->edge_addr), s->now);
            }
        }

        for (sends = 0; sends < 64; sends++) {
            n = hg_conn_send(s->edge, s->dgram, sizeof(s->dgram), s->now);
            if (n <= 0) {
                break;
            }

            if (to_agent) {
                hg_conn_recv(s->agent, s->dgram, (size_t) n,
                             (struct sockaddr *) &s->edge_addr,
                             sizeof(s->edge_addr), s->now);
            }
        }

        if (to_agent) {
            hg_fuzz_agent_events(s);
        }
    }
}


void
hg_fuzz_agent_flush(hg_fuzz_session_t *s, hg_fuzz_capture_pt capture,
    void *arg)
{
    int      sends;
    ssize_t  n;

    for (sends = 0; sends < 64; sends++) {
        n = hg_conn_send(s->agent, s->dgram, sizeof(s->dgram), s->now);
        if (n <= 0) {
            break;
        }

        if (capture != NULL) {
            capture(arg, s->dgram, (size_t) n);

        } else if (s->edge != NULL) {
            hg_conn_recv(s->edge, s->dgram, (size_t) n,
                         (struct sockaddr *) &s->agent_addr,
                         sizeof(s->agent_addr), s->now);
        }
    }

    hg_fuzz_agent_events(s);
}


/*
 * The agent's events are read, never acted on, except to keep the queue
 * short; the corpus writer drives the agent's streams itself.
 */
static void
hg_fuzz_agent_events(hg_fuzz_session_t *s)
{
    hg_event_t  ev;

    while (hg_conn_next_event(s->agent, &ev) == HG_OK) {
        /* nothing */
    }
}


size_t
hg_fuzz_seal_room(const hg_fuzz_session_t *s)
{
    return s->cfg.mtu - HG_PREFIX_LEN - hg_dtls_overhead(s->agent->dtls);
}


size_t
hg_fuzz_seal(hg_fuzz_session_t *s, const uint8_t *plain, size_t len,
    uint8_t *out, size_t cap)
{
    ssize_t         n;
    const uint8_t  *cid;

    cid = hg_conn_cid(s->edge);

    if (len == 0 || len > hg_fuzz_seal_room(s) || cap < HG_PREFIX_LEN
        || cid == NULL)
    {
        return 0;
    }

    /* the agent's keys and record sequence, as its own packets use them */
    n = hg_dtls_seal(s->agent->dtls, plain, len, out + HG_PREFIX_LEN,
                     cap - HG_PREFIX_LEN);
    if (n < 0) {
        return 0;
    }

    out[0] = HG_PREFIX_VERSION | HG_PREFIX_FLAG_CID;
    memcpy(out + 1, cid, HG_CID_LEN);

    return (size_t) n + HG_PREFIX_LEN;
}


/* ---- the edge's application --------------------------------------------- */

static void
hg_fuzz_event(hg_fuzz_session_t *s, const hg_event_t *ev)
{
    /* reading what events point to lets ASan see a dangling pointer */
    if (ev->text != NULL) {
        s->touched += strlen(ev->text);
    }

    switch (ev->type) {

    case HG_EV_HELLO:
        s->touched += strlen(ev->hello->domain) + strlen(ev->hello->api_key);
        (void) hg_conn_accept(s->edge, 1, 0, 1, hg_fuzz_edges, 1);
        break;

    case HG_EV_STREAM_OPENED:
        if (ev->meta != NULL) {
            s->touched += strlen(ev->meta->host);
        }
        hg_fuzz_stream_add(s, ev->stream_id);
        break;

    case HG_EV_STREAM_READABLE:
        hg_fuzz_read(s, ev->stream_id);
        break;

    case HG_EV_STREAM_CLOSED:
        hg_fuzz_stream_remove(s, ev->stream_id);
        break;

    default:
        break;
    }
}


static void
hg_fuzz_read(hg_fuzz_session_t *s, int64_t id)
{
    int      i, fin;
    ssize_t  n;

    /* 128 reads of 16 KiB cover the default 1 MiB stream window */
    for (i = 0; i < 128; i++) {
        n = hg_stream_read(s->edge, id, hg_fuzz_sink, sizeof(hg_fuzz_sink),
                           &fin);
        if (n <= 0 || fin) {
            return;
        }
    }
}


static void
hg_fuzz_stream_add(hg_fuzz_session_t *s, int64_t id)
{
    size_t  i;

    for (i = 0; i < s->nstreams; i++) {
        if (s->streams[i] == id) {
            return;
        }
    }

    if (s->nstreams == HG_FUZZ_STREAMS) {
        /* forget the oldest: the engine must cope with any id anyway */
        memmove(s->streams, s->streams + 1,
                (HG_FUZZ_STREAMS - 1) * sizeof(int64_t));
        s->nstreams--;
    }

    s->streams[s->nstreams++] = id;
}


static void
hg_fuzz_stream_remove(hg_fuzz_session_t *s, int64_t id)
{
    size_t  i;

    for (i = 0; i < s->nstreams; i++) {
        if (s->streams[i] == id) {
            s->streams[i] = s->streams[--s->nstreams];
            return;
        }
    }
}


/* a known stream, or (one pick in n + 1) an id the edge may not know */
static int64_t
hg_fuzz_stream_pick(const hg_fuzz_session_t *s, uint8_t which)
{
    size_t  pick;

    pick = which % (s->nstreams + 1);

    return pick < s->nstreams ? s->streams[pick] : (int64_t) which;
}


void
hg_fuzz_app(hg_fuzz_session_t *s, const uint8_t *data, size_t len)
{
    int64_t           id;
    size_t            amount;
    hg_conn_stats_t   st;
    hg_stream_meta_t  meta;

    if (len == 0 || s->edge == NULL) {
        return;
    }

    id = hg_fuzz_stream_pick(s, len > 1 ? data[1] : 0);
    amount = len > 3 ? (size_t) data[2] << 8 | data[3] : 1000;

    switch (data[0] % HG_FUZZ_APP_N) {

    case HG_FUZZ_APP_OPEN:
        memset(&meta, 0, sizeof(meta));
        snprintf(meta.client_addr, sizeof(meta.client_addr), "192.0.2.7");
        snprintf(meta.scheme, sizeof(meta.scheme), "https");
        snprintf(meta.host, sizeof(meta.host), "app.example.com");
        snprintf(meta.request_id, sizeof(meta.request_id), "req-%zu",
                 amount);

        id = hg_stream_open(s->edge, &meta);
        if (id >= 0) {
            hg_fuzz_stream_add(s, id);
        }
        break;

    case HG_FUZZ_APP_WRITE:
        (void) hg_stream_write(s->edge, id, hg_fuzz_payload, amount);
        break;

    case HG_FUZZ_APP_SHUTDOWN:
        (void) hg_stream_shutdown(s->edge, id);
        break;

    case HG_FUZZ_APP_READ:
        hg_fuzz_read(s, id);
        break;

    case HG_FUZZ_APP_RESET:
        (void) hg_stream_reset(s->edge, id, amount);
        break;

    case HG_FUZZ_APP_GOAWAY:
        (void) hg_conn_goaway(s->edge, HG_CODE_GOING_AWAY, "fuzz drain");
        break;

    case HG_FUZZ_APP_CLOSE:
        (void) hg_conn_close(s->edge, HG_CODE_NORMAL, "fuzz close");
        break;

    default:
        s->touched += hg_stream_writable(s->edge, id)
                      + hg_conn_open_streams(s->edge)
                      + (size_t) hg_conn_can_open_stream(s->edge);
        (void) hg_stream_set_user(s->edge, id, s);
        s->touched += hg_stream_user(s->edge, id) != NULL;
        hg_conn_get_stats(s->edge, &st);
        s->touched += st.malformed;
        break;
    }
}
