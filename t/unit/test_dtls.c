/*
 * hg_dtls and hg_tls: the cookie exchange, the handshake under the loss of
 * each flight, our own retransmission timer, application records, dropped
 * garbage and replays, certificate and pin verification, record sizes.
 *
 * A client and a listener talk through an in-memory wire with a fixed
 * one-way delay on a virtual clock; a drop rule decides the fate of each
 * datagram. DTLS_TRACE=1 in the environment prints every datagram sent.
 */

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "hg.h"
#include "hg_dtls.h"
#include "tap.h"
#include "testcert.h"


#define MTU          (HG_MTU_DEFAULT - HG_PREFIX_LEN)
#define DELAY        (10 * HG_MS)
#define WIRE_MAX     256
#define LOG_MAX      256
#define SEEN_MAX     64


/* what a datagram carries, judged from its first record */
typedef enum {
    K_CH1 = 1,          /* ClientHello without a cookie */
    K_HVR,              /* HelloVerifyRequest */
    K_CH2,              /* ClientHello with the cookie */
    K_SERVER_FLIGHT,    /* ServerHello .. ServerHelloDone */
    K_CLIENT_FINAL,     /* ClientKeyExchange, CCS, Finished */
    K_SERVER_FINAL,     /* CCS, Finished */
    K_APP,
    K_ALERT
} kind_t;


typedef struct {
    int         to_server;
    hg_time_t   at;
    size_t      len;
    uint8_t     data[HG_DTLS_MAX_RECORD];
} dgram_t;


typedef struct {
    SSL_CTX             *sctx;
    SSL_CTX             *cctx;
    hg_callbacks_t       cb;
    hg_dtls_listener_t  *listener;
    hg_dtls_t           *server;
    hg_dtls_t           *client;
    struct sockaddr_in   caddr;
    size_t               mtu;
    hg_time_t            now;

    dgram_t              wire[WIRE_MAX];
    size_t               nwire;

    /* every datagram sent, in order */
    dgram_t              log[LOG_MAX];
    size_t               nlog;

    /* drop the first copy of each datagram of this kind */
    kind_t               drop_kind;
    uint8_t              dropped_seen[SEEN_MAX][32];
    size_t               ndropped;

    /* or drop this percentage at random, and delay by up to jitter */
    unsigned             loss;
    hg_time_t            jitter;
    uint64_t             seed;

    unsigned             oversize;
    unsigned             server_sent;
    unsigned             state_before_cookie;
    unsigned             hvr_first;
    hg_time_t            done_at;
    unsigned             server_gave_up;
    int                  server_rc;
    int                  client_rc;

    uint8_t              got[2][8192];     /* [1]: received by the server */
    size_t               gotlen[2];
    unsigned             gotn[2];
} pair_t;


/* where on_app delivers: side 0 is the client, 1 the server */
typedef struct {
    pair_t              *pair;
    int                  side;
} sink_t;


static void pair_free(pair_t *p);


static hg_testcert_t  certs;
static uint64_t       rng_state = 0x9e3779b97f4a7c15ULL;


static uint64_t
next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;

    return *state;
}


static int
test_random(void *ctx, uint8_t *buf, size_t len)
{
    (void) ctx;

    while (len--) {
        *buf++ = (uint8_t) next_random(&rng_state);
    }

    return 0;
}


static kind_t
classify(int to_server, const uint8_t *p, size_t len)
{
    size_t  sid;

    if (p[0] == SSL3_RT_APPLICATION_DATA) {
        return K_APP;
    }

    if (p[0] == SSL3_RT_ALERT) {
        return K_ALERT;
    }

    /* epoch 0 handshake records show their message type */
    if (p[0] == SSL3_RT_HANDSHAKE && p[3] == 0 && p[4] == 0 && len > 25) {
        if (to_server && p[13] == SSL3_MT_CLIENT_HELLO && len > 60) {
            sid = p[59];
            return p[60 + sid] ? K_CH2 : K_CH1;
        }

        if (!to_server && p[13] == DTLS1_MT_HELLO_VERIFY_REQUEST) {
            return K_HVR;
        }

        if (!to_server && p[13] != SSL3_MT_FINISHED) {
            return K_SERVER_FLIGHT;
        }
    }

    return to_server ? K_CLIENT_FINAL : K_SERVER_FINAL;
}


static void
sink_app(void *arg, const uint8_t *plain, size_t len)
{
    sink_t  *s = arg;
    pair_t  *p = s->pair;

    if (p->gotlen[s->side] + len <= sizeof(p->got[0])) {
        memcpy(p->got[s->side] + p->gotlen[s->side], plain, len);
        p->gotlen[s->side] += len;
    }

    p->gotn[s->side]++;
}


static pair_t *
pair_new(SSL_CTX *sctx, SSL_CTX *cctx, const char *name, size_t mtu)
{
    pair_t  *p;

    p = calloc(1, sizeof(pair_t));
    if (p == NULL) {
        return NULL;
    }

    p->sctx = sctx;
    p->cctx = cctx;
    p->mtu = mtu;
    p->now = 1000 * HG_SEC;
    p->cb.random = test_random;

    p->caddr.sin_family = AF_INET;
    p->caddr.sin_port = htons(40000);
    p->caddr.sin_addr.s_addr = htonl(0x7f000001);

    p->listener = hg_dtls_listener_new(sctx, mtu, &p->cb, p->now);
    p->client = hg_dtls_client_new(cctx, mtu, name, p->now);

    if (p->listener == NULL || p->client == NULL) {
        pair_free(p);
        return NULL;
    }

    return p;
}


static void
pair_free(pair_t *p)
{
    hg_dtls_free(p->client);
    hg_dtls_free(p->server);
    hg_dtls_listener_free(p->listener);
    free(p);
}


static int
pair_drops(pair_t *p, int to_server, const uint8_t *data, size_t len)
{
    size_t   i;
    uint8_t  md[32];

    if (p->loss != 0 && next_random(&p->seed) % 100 < p->loss) {
        return 1;
    }

    if (p->drop_kind == 0 || classify(to_server, data, len) != p->drop_kind) {
        return 0;
    }

    SHA256(data, len, md);

    for (i = 0; i < p->ndropped; i++) {
        if (memcmp(p->dropped_seen[i], md, 32) == 0) {
            return 0;
        }
    }

    if (p->ndropped < SEEN_MAX) {
        memcpy(p->dropped_seen[p->ndropped++], md, 32);
    }

    return 1;
}


static void
pair_put(pair_t *p, int to_server, const uint8_t *data, size_t len)
{
    dgram_t  *dg;

    if (len > p->mtu) {
        p->oversize++;
    }

    if (!to_server) {
        p->server_sent++;
    }

    if (p->nlog < LOG_MAX) {
        dg = &p->log[p->nlog++];
        dg->to_server = to_server;
        dg->at = p->now;
        dg->len = len;
        memcpy(dg->data, data, len);
    }

    if (getenv("DTLS_TRACE")) {
        tap_diag("%8llu ms %s kind %d len %zu",
                 (unsigned long long) p->now / HG_MS,
                 to_server ? "c->s" : "s->c", classify(to_server, data, len),
                 len);
    }

    if (pair_drops(p, to_server, data, len) || p->nwire == WIRE_MAX) {
        return;
    }

    dg = &p->wire[p->nwire++];
    dg->to_server = to_server;
    dg->at = p->now + DELAY
             + (p->jitter ? next_random(&p->seed) % p->jitter : 0);
    dg->len = len;
    memcpy(dg->data, data, len);
}


static void
pair_collect(pair_t *p)
{
    ssize_t  n;
    uint8_t  buf[HG_DTLS_MAX_RECORD];

    while ((n = hg_dtls_pending(p->client, buf, sizeof(buf))) > 0) {
        pair_put(p, 1, buf, n);
    }

    while (p->server && (n = hg_dtls_pending(p->server, buf, sizeof(buf)))
           > 0)
    {
        pair_put(p, 0, buf, n);
    }
}


static void
pair_deliver(pair_t *p, const dgram_t *dg)
{
    int        rc, failed;
    size_t     replylen;
    uint8_t    reply[HG_DTLS_MAX_RECORD];
    sink_t     sink;
    hg_dtls_t  *out;

    sink.pair = p;

    if (!dg->to_server) {
        sink.side = 0;
        rc = hg_dtls_recv(p->client, dg->data, dg->len, p->now, sink_app,
                          &sink);
        if (rc == HG_ERR_STATE) {
            p->client_rc = rc;
        }

        return;
    }

    if (p->server != NULL) {
        sink.side = 1;
        rc = hg_dtls_recv(p->server, dg->data, dg->len, p->now, sink_app,
                          &sink);
        if (rc == HG_ERR_STATE) {
            p->server_rc = rc;
        }

        return;
    }

    replylen = sizeof(reply);
    rc = hg_dtls_listen(p->listener, dg->data, dg->len,
                        (struct sockaddr *) &p->caddr, sizeof(p->caddr),
                        p->now, reply, &replylen, &failed, &out);

    if (rc == HG_AGAIN) {
        if (p->server_sent == 0 && classify(0, reply, replylen) == K_HVR) {
            p->hvr_first = 1;
        }

        pair_put(p, 0, reply, replylen);

    } else if (rc == HG_OK) {
        p->server = out;

        if (classify(1, dg->data, dg->len) != K_CH2) {
            p->state_before_cookie++;
        }

    } else if (replylen > 0) {
        /* an unacceptable hello: the alert says why */
        pair_put(p, 0, reply, replylen);
    }
}


static int
pair_up(pair_t *p)
{
    return p->server != NULL && hg_dtls_established(p->server)
           && hg_dtls_established(p->client);
}


static int
pair_failed(pair_t *p)
{
    return hg_dtls_error(p->client) != NULL
           || (p->server != NULL && hg_dtls_error(p->server) != NULL);
}


static hg_time_t
min_time(hg_time_t a, hg_time_t b)
{
    return a < b ? a : b;
}


/* runs the wire and the timers until quiet or until limit */
static void
pair_run(pair_t *p, hg_time_t limit)
{
    size_t     i, first;
    hg_time_t  next;
    dgram_t    dg;

    for ( ;; ) {
        pair_collect(p);

        if (p->done_at == 0 && pair_up(p)) {
            p->done_at = p->now;
        }

        first = p->nwire;
        for (i = 0; i < p->nwire; i++) {
            if (p->wire[i].at <= p->now
                && (first == p->nwire || p->wire[i].at < p->wire[first].at))
            {
                first = i;
            }
        }

        if (first < p->nwire) {
            dg = p->wire[first];
            memmove(&p->wire[first], &p->wire[first + 1],
                    (p->nwire - first - 1) * sizeof(dgram_t));
            p->nwire--;
            pair_deliver(p, &dg);
            continue;
        }

        if (hg_dtls_deadline(p->client) <= p->now) {
            hg_dtls_timeout(p->client, p->now);
            continue;
        }

        if (p->server && hg_dtls_deadline(p->server) <= p->now) {
            if (hg_dtls_timeout(p->server, p->now) != HG_OK) {
                /*
                 * The server gave up on a peer it heard nothing from, as
                 * hg_conn does: the session is freed, and a repeat of
                 * the cookie ClientHello starts a new one.
                 */
                hg_dtls_free(p->server);
                p->server = NULL;
                p->server_gave_up++;
            }
            continue;
        }

        next = hg_dtls_deadline(p->client);
        if (p->server) {
            next = min_time(next, hg_dtls_deadline(p->server));
        }

        for (i = 0; i < p->nwire; i++) {
            next = min_time(next, p->wire[i].at);
        }

        if (next == HG_TIME_INFINITE || next > limit) {
            return;
        }

        p->now = next;
    }
}


static uint64_t
pair_retransmits(pair_t *p)
{
    return hg_dtls_retransmits(p->client)
           + (p->server ? hg_dtls_retransmits(p->server) : 0);
}


/* one application record each way; 1 when both arrive intact */
static int
pair_exchange(pair_t *p, const char *c2s, const char *s2c)
{
    ssize_t  n;
    uint8_t  buf[HG_DTLS_MAX_RECORD];
    size_t   before[2];

    before[0] = p->gotlen[0];
    before[1] = p->gotlen[1];

    n = hg_dtls_seal(p->client, (const uint8_t *) c2s, strlen(c2s), buf,
                     sizeof(buf));
    if (n <= 0) {
        return 0;
    }

    pair_put(p, 1, buf, n);

    n = hg_dtls_seal(p->server, (const uint8_t *) s2c, strlen(s2c), buf,
                     sizeof(buf));
    if (n <= 0) {
        return 0;
    }

    pair_put(p, 0, buf, n);

    pair_run(p, p->now + HG_SEC);

    return p->gotlen[1] - before[1] == strlen(c2s)
           && memcmp(p->got[1] + before[1], c2s, strlen(c2s)) == 0
           && p->gotlen[0] - before[0] == strlen(s2c)
           && memcmp(p->got[0] + before[0], s2c, strlen(s2c)) == 0;
}


static SSL_CTX *
client_ctx(const char *ca, const char *pin, int insecure)
{
    char                  err[256];
    SSL_CTX              *ctx;
    hg_tls_client_opts_t  opts;

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = ca;
    opts.pin_sha256 = pin;
    opts.insecure = insecure;

    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (ctx == NULL) {
        tap_diag("client ctx: %s", err);
    }

    return ctx;
}


static SSL_CTX *
server_ctx(void)
{
    char      err[256];
    SSL_CTX  *ctx;

    ctx = hg_tls_server_ctx(certs.cert, certs.key, err, sizeof(err));
    if (ctx == NULL) {
        tap_diag("server ctx: %s", err);
    }

    return ctx;
}


/* ---- the tests --------------------------------------------------------- */

static void
test_handshake(SSL_CTX *sctx, SSL_CTX *cctx)
{
    pair_t            *p;
    const SSL_CIPHER  *cs, *cc;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "handshake: set up");
        return;
    }

    tap_ok(hg_dtls_deadline(p->client) == p->now + HG_DTLS_RTO_INITIAL,
           "the client's timer starts at the initial RTO");

    pair_run(p, p->now + 5 * HG_SEC);

    tap_ok(pair_up(p), "handshake completes in memory");
    tap_is_int(p->hvr_first, 1, "the listener's first answer is a "
               "HelloVerifyRequest");
    tap_is_int(p->state_before_cookie, 0, "no session exists before the "
               "cookie comes back");
    tap_is_int(classify(0, p->log[1].data, p->log[1].len), K_HVR,
               "the second datagram on the wire is the HVR");
    tap_is_int(pair_retransmits(p), 0, "no retransmissions without loss");
    tap_ok(p->done_at - 1000 * HG_SEC <= 6 * DELAY,
           "done in three round trips (%llu ms)",
           (unsigned long long) (p->done_at - 1000 * HG_SEC) / HG_MS);
    tap_is_int(p->oversize, 0, "no datagram exceeds the record MTU");

    cs = SSL_get_current_cipher(hg_dtls_ssl(p->server));
    cc = SSL_get_current_cipher(hg_dtls_ssl(p->client));
    tap_ok(cs != NULL && cc != NULL && SSL_CIPHER_is_aead(cs)
           && SSL_CIPHER_is_aead(cc), "the negotiated suite is AEAD (%s)",
           cc ? SSL_CIPHER_get_name(cc) : "none");
    tap_is_str(SSL_get_version(hg_dtls_ssl(p->client)), "DTLSv1.2",
               "DTLS 1.2");
    tap_ok(SSL_get_current_compression(hg_dtls_ssl(p->client)) == NULL,
           "no compression");

    tap_ok(hg_dtls_deadline(p->client) == HG_TIME_INFINITE
           && hg_dtls_deadline(p->server) == HG_TIME_INFINITE,
           "no timer runs once established");
    tap_ok(hg_dtls_error(p->client) == NULL
           && hg_dtls_error(p->server) == NULL, "no error on either side");

    tap_ok(pair_exchange(p, "GET / HTTP/1.1", "HTTP/1.1 200 OK"),
           "application data flows both ways");
    tap_ok(ERR_peek_error() == 0, "the OpenSSL error queue is empty");

    pair_free(p);
}


/* drives a client to its cookie ClientHello by hand */
static int
cookie_hello(hg_dtls_listener_t *l, hg_dtls_t *client,
    struct sockaddr_in *addr, hg_time_t now, uint8_t *ch2, size_t *ch2len)
{
    int        rc, failed;
    size_t     replylen;
    ssize_t    n;
    uint8_t    buf[HG_DTLS_MAX_RECORD], reply[HG_DTLS_MAX_RECORD];
    hg_dtls_t  *out;

    n = hg_dtls_pending(client, buf, sizeof(buf));
    if (n <= 0) {
        return -1;
    }

    replylen = sizeof(reply);
    rc = hg_dtls_listen(l, buf, n, (struct sockaddr *) addr, sizeof(*addr),
                        now, reply, &replylen, &failed, &out);
    if (rc != HG_AGAIN || out != NULL || failed) {
        return -1;
    }

    if (hg_dtls_recv(client, reply, replylen, now, NULL, NULL) != HG_OK) {
        return -1;
    }

    n = hg_dtls_pending(client, ch2, HG_DTLS_MAX_RECORD);
    if (n <= 0 || classify(1, ch2, n) != K_CH2) {
        return -1;
    }

    *ch2len = n;

    return 0;
}


static int
listen_once(hg_dtls_listener_t *l, const uint8_t *dg, size_t len,
    struct sockaddr_in *addr, hg_time_t now, int *failed)
{
    int        rc;
    size_t     replylen;
    uint8_t    reply[HG_DTLS_MAX_RECORD];
    hg_dtls_t  *out;

    replylen = sizeof(reply);
    rc = hg_dtls_listen(l, dg, len, (struct sockaddr *) addr, sizeof(*addr),
                        now, reply, &replylen, failed, &out);

    if ((rc == HG_OK) != (out != NULL)) {
        return 99;
    }

    hg_dtls_free(out);

    return rc;
}


static void
test_cookie(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int                  rc, failed;
    size_t               ch2len;
    uint8_t              ch2[HG_DTLS_MAX_RECORD], junk[64];
    hg_time_t            t0;
    hg_dtls_t           *client;
    hg_callbacks_t       cb;
    struct sockaddr_in   a, b;
    hg_dtls_listener_t  *l;

    memset(&cb, 0, sizeof(cb));
    cb.random = test_random;
    t0 = 50 * HG_SEC;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons(5000);
    a.sin_addr.s_addr = htonl(0xc0000201);
    b = a;
    b.sin_port = htons(5001);

    l = hg_dtls_listener_new(sctx, MTU, &cb, t0);
    client = hg_dtls_client_new(cctx, MTU, NULL, t0);

    if (l == NULL || client == NULL
        || cookie_hello(l, client, &a, t0, ch2, &ch2len) != 0)
    {
        tap_ok(0, "cookie: a ClientHello without a cookie gets an HVR");
        goto done;
    }

    tap_ok(1, "cookie: a ClientHello without a cookie gets an HVR, "
           "and no session");

    rc = listen_once(l, ch2, ch2len, &b, t0, &failed);
    tap_ok(rc == HG_ERR && failed,
           "the cookie replayed from another port fails");

    b.sin_port = a.sin_port;
    b.sin_addr.s_addr = htonl(0xc0000202);
    rc = listen_once(l, ch2, ch2len, &b, t0, &failed);
    tap_ok(rc == HG_ERR && failed,
           "the cookie replayed from another address fails");

    rc = listen_once(l, ch2, ch2len, &a, t0 + 29 * HG_SEC, &failed);
    tap_ok(rc == HG_OK && !failed, "the cookie works in its own period");

    rc = listen_once(l, ch2, ch2len, &a, t0 + 35 * HG_SEC, &failed);
    tap_ok(rc == HG_OK && !failed,
           "the cookie still works in the next period");

    rc = listen_once(l, ch2, ch2len, &a, t0 + 65 * HG_SEC, &failed);
    tap_ok(rc == HG_ERR && failed,
           "the cookie fails after two rotations");

    memset(junk, 0x41, sizeof(junk));
    rc = listen_once(l, junk, sizeof(junk), &a, t0 + 66 * HG_SEC, &failed);
    tap_ok(rc == HG_ERR && !failed, "garbage to the listener is dropped");

    tap_ok(ERR_peek_error() == 0, "the OpenSSL error queue is empty");

done:

    hg_dtls_free(client);
    hg_dtls_listener_free(l);
}


static void
test_loss(SSL_CTX *sctx, SSL_CTX *cctx, kind_t kind, const char *what,
    uint64_t max_retransmits)
{
    pair_t    *p;
    hg_time_t  took;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "loss: set up");
        return;
    }

    p->drop_kind = kind;

    pair_run(p, p->now + 30 * HG_SEC);

    took = p->done_at - 1000 * HG_SEC;

    tap_ok(pair_up(p) && p->ndropped > 0, "losing %s: the handshake "
           "completes (%zu datagrams lost)", what, p->ndropped);
    tap_ok(pair_retransmits(p) >= 1
           && pair_retransmits(p) <= max_retransmits,
           "losing %s: %llu flight retransmissions", what,
           (unsigned long long) pair_retransmits(p));
    tap_ok(p->done_at != 0 && took < 2 * HG_DTLS_RTO_INITIAL,
           "losing %s: done in %llu ms, under two initial RTOs", what,
           (unsigned long long) took / HG_MS);
    tap_ok(p->done_at != 0 && pair_exchange(p, "ping", "pong"),
           "losing %s: application data flows afterwards", what);

    pair_free(p);
}


/*
 * Heavy loss with reordering, certificate flights in many fragments. A
 * handshake not done within the engine's handshake timeout (10 s) is
 * dialled again, as the agent does: at 30% loss a server may hear
 * nothing for its whole retransmission schedule (2.8 s) and give up, as
 * it must with a peer that went silent on purpose.
 */
static void
test_random_loss(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int        seed, attempt, up, flowed, small, redials;
    unsigned   gave_up;
    pair_t    *p;
    uint64_t   retransmits;
    hg_time_t  worst;

    up = flowed = small = redials = 0;
    gave_up = 0;
    retransmits = 0;
    worst = 0;

    for (seed = 1; seed <= 40; seed++) {
        for (attempt = 0; attempt < 4; attempt++) {
            p = pair_new(sctx, cctx, "localhost", 256);
            if (p == NULL) {
                break;
            }

            p->loss = 30;
            p->jitter = 30 * HG_MS;
            p->seed = 0x1234567ULL * seed + 0x9e3779b9ULL * attempt;

            pair_run(p, p->now + 10 * HG_SEC);
            gave_up += p->server_gave_up;

            if (pair_up(p)) {
                break;
            }

            redials++;
            pair_free(p);
            p = NULL;
        }

        if (p == NULL) {
            continue;
        }

        up++;
        retransmits += pair_retransmits(p);

        if (p->done_at - 1000 * HG_SEC > worst) {
            worst = p->done_at - 1000 * HG_SEC;
        }

        p->loss = 0;
        flowed += pair_exchange(p, "after", "loss");
        small += (p->oversize == 0);
        pair_free(p);
    }

    tap_is_int(up, 40, "30%% loss and reordering, 40 seeds: every "
               "handshake completes (worst %llu ms, %llu retransmissions)",
               (unsigned long long) worst / HG_MS,
               (unsigned long long) retransmits);
    tap_ok(redials <= 6, "at most 6 of the 40 dial again after 10 s (%d; "
           "servers gave up on %u silent-looking peers)", redials, gave_up);
    tap_is_int(flowed, 40, "and application data flows afterwards");
    tap_is_int(small, 40, "and no datagram exceeded the record MTU");
}


/*
 * A peer that returns a valid cookie and then falls silent: the server's
 * flight goes out once and is re-sent HG_DTLS_SERVER_RETRANSMITS times
 * (after 400 and 800 ms), and when the timer fires once more, 1.6 s
 * later, the handshake has failed. Without the cap the flight went out
 * every 8 s until the engine's handshake timeout.
 */
static void
test_silent_peer(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int         rc, failed, copies, datagrams, per_copy;
    size_t      replylen;
    ssize_t     n;
    pair_t     *p;
    uint8_t     buf[HG_DTLS_MAX_RECORD], reply[HG_DTLS_MAX_RECORD];
    hg_time_t   start, deadline;
    hg_dtls_t  *server;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "silent peer: set up");
        return;
    }

    server = NULL;

    /* ClientHello, HelloVerifyRequest, ClientHello with the cookie */
    n = hg_dtls_pending(p->client, buf, sizeof(buf));
    replylen = sizeof(reply);
    rc = n > 0 ? hg_dtls_listen(p->listener, buf, n,
                                (struct sockaddr *) &p->caddr,
                                sizeof(p->caddr), p->now, reply, &replylen,
                                &failed, &server)
               : HG_ERR;

    if (rc == HG_AGAIN) {
        (void) hg_dtls_recv(p->client, reply, replylen, p->now, NULL, NULL);
        n = hg_dtls_pending(p->client, buf, sizeof(buf));
        replylen = sizeof(reply);
        rc = n > 0 ? hg_dtls_listen(p->listener, buf, n,
                                    (struct sockaddr *) &p->caddr,
                                    sizeof(p->caddr), p->now, reply,
                                    &replylen, &failed, &server)
                   : HG_ERR;
    }

    if (!tap_ok(rc == HG_OK && server != NULL, "silent peer: the cookie "
                "makes a server session"))
    {
        pair_free(p);
        return;
    }

    start = p->now;
    per_copy = 0;

    while (hg_dtls_pending(server, buf, sizeof(buf)) > 0) {
        per_copy++;
    }

    copies = 1;
    datagrams = per_copy;
    rc = HG_OK;
    deadline = start;

    /* the client says nothing more; a minute is far past any cap */
    while (rc == HG_OK && hg_dtls_deadline(server) != HG_TIME_INFINITE
           && hg_dtls_deadline(server) < start + 60 * HG_SEC)
    {
        deadline = hg_dtls_deadline(server);
        rc = hg_dtls_timeout(server, deadline);

        n = 0;
        while (hg_dtls_pending(server, buf, sizeof(buf)) > 0) {
            n++;
        }

        if (n > 0) {
            copies++;
            datagrams += (int) n;
        }
    }

    tap_ok(per_copy >= 1, "the flight is %d datagram(s)", per_copy);
    tap_is_int(copies, 1 + HG_DTLS_SERVER_RETRANSMITS, "a silent peer gets "
               "the flight %d times in all", 1 + HG_DTLS_SERVER_RETRANSMITS);
    tap_is_int(datagrams, per_copy * (1 + HG_DTLS_SERVER_RETRANSMITS),
               "and no other datagram");
    tap_is_int(rc, HG_ERR_STATE, "then the handshake fails");
    tap_is_int(deadline - start, 2800 * HG_MS, "2.8 s after the flight "
               "first went (400 + 800 + 1600 ms)");
    tap_ok(hg_dtls_error(server) != NULL
           && strstr(hg_dtls_error(server), "silent") != NULL,
           "saying the peer was silent (%s)",
           hg_dtls_error(server) ? hg_dtls_error(server) : "no error");
    tap_is_int(hg_dtls_deadline(server), HG_TIME_INFINITE,
               "and no timer is left");

    hg_dtls_free(server);
    pair_free(p);
}


static void
test_backoff(SSL_CTX *cctx)
{
    int        i, same;
    ssize_t    n, n0;
    uint8_t    first[HG_DTLS_MAX_RECORD], again[HG_DTLS_MAX_RECORD];
    hg_time_t  now, deadline, gap;
    hg_dtls_t  *client;

    static const hg_time_t  gaps[] = {
        400 * HG_MS, 800 * HG_MS, 1600 * HG_MS, 3200 * HG_MS,
        6400 * HG_MS, 8000 * HG_MS, 8000 * HG_MS
    };

    now = 7 * HG_SEC;
    client = hg_dtls_client_new(cctx, MTU, NULL, now);
    if (client == NULL) {
        tap_ok(0, "backoff: set up");
        return;
    }

    n0 = hg_dtls_pending(client, first, sizeof(first));
    tap_ok(n0 > 0 && hg_dtls_pending(client, again, sizeof(again)) == 0,
           "the ClientHello is queued once");

    same = 1;

    for (i = 0; i < 7; i++) {
        deadline = hg_dtls_deadline(client);
        gap = deadline - now;

        if (gap != gaps[i]) {
            tap_diag("timeout %d after %llu ms", i,
                     (unsigned long long) gap / HG_MS);
            same = 0;
        }

        hg_dtls_timeout(client, deadline - 1);
        if (hg_dtls_pending(client, again, sizeof(again)) != 0) {
            same = 0;
        }

        now = deadline;
        hg_dtls_timeout(client, now);

        n = hg_dtls_pending(client, again, sizeof(again));
        if (n != n0 || memcmp(first, again, n0) != 0) {
            same = 0;
        }
    }

    tap_ok(same, "the timer doubles from 400 ms to 8 s and re-sends the "
           "flight verbatim, never early");
    tap_is_int(hg_dtls_retransmits(client), 7, "seven retransmissions");

    hg_dtls_free(client);
}


static void
test_records(SSL_CTX *sctx, SSL_CTX *cctx, size_t want_overhead,
    const char *suite)
{
    int        ok;
    pair_t    *p;
    size_t     len, overhead;
    ssize_t    n;
    uint8_t    plain[HG_DTLS_MAX_RECORD], buf[HG_DTLS_MAX_RECORD];
    sink_t     sink;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "records: set up");
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);

    overhead = hg_dtls_overhead(p->client);
    tap_is_int(overhead, want_overhead, "%s: overhead is %zu bytes",
               suite, want_overhead);
    tap_is_int(hg_dtls_overhead(p->server), overhead,
               "%s: both sides agree on the overhead", suite);

    ok = 1;
    memset(plain, 'x', sizeof(plain));
    sink.pair = p;
    sink.side = 1;

    for (len = 1; len + overhead <= MTU; len += 97) {
        n = hg_dtls_seal(p->client, plain, len, buf, sizeof(buf));
        if (n != (ssize_t) (len + overhead)
            || hg_dtls_recv(p->server, buf, n, p->now, sink_app, &sink)
               != HG_OK)
        {
            ok = 0;
        }
    }

    len = MTU - overhead;
    n = hg_dtls_seal(p->client, plain, len, buf, sizeof(buf));
    if (n != MTU) {
        ok = 0;
    }

    tap_ok(ok, "%s: every sealed record is its plaintext plus the "
           "overhead, up to exactly the record MTU", suite);

    tap_ok(hg_dtls_seal(p->client, plain, 100, buf, 100 + overhead - 1)
           == HG_ERR, "%s: sealing into too small a buffer fails", suite);

    pair_free(p);
}


static void
test_garbage(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int        rc;
    pair_t    *p;
    ssize_t    n;
    uint8_t    buf[HG_DTLS_MAX_RECORD], junk[200];
    sink_t     sink;
    unsigned   i, got;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "garbage: set up");
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);
    hg_dtls_peer_confirmed(p->server);
    hg_dtls_peer_confirmed(p->client);

    sink.pair = p;
    sink.side = 1;

    for (i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t) (i * 37 + 11);
    }

    rc = hg_dtls_recv(p->server, junk, sizeof(junk), p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "random bytes are dropped");

    rc = hg_dtls_recv(p->server, junk, 0, p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "an empty datagram is dropped");

    n = hg_dtls_seal(p->client, (const uint8_t *) "hello", 5, buf,
                     sizeof(buf));

    rc = hg_dtls_recv(p->server, buf, n - 3, p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "a truncated record is dropped");

    rc = hg_dtls_recv(p->server, buf, 10, p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "a truncated header is dropped");

    buf[n - 1] ^= 0x01;
    rc = hg_dtls_recv(p->server, buf, n, p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "a record with a flipped bit is dropped");

    buf[n - 1] ^= 0x01;
    buf[3] ^= 0x01;
    rc = hg_dtls_recv(p->server, buf, n, p->now, sink_app, &sink);
    tap_is_int(rc, HG_ERR, "a record from an unknown epoch is dropped");

    got = p->gotn[1];
    tap_is_int(got, 0, "nothing was delivered");
    tap_ok(ERR_peek_error() == 0, "no error is left in the OpenSSL queue");
    tap_ok(hg_dtls_error(p->server) == NULL && hg_dtls_established(p->server),
           "the session is unaffected");

    tap_ok(pair_exchange(p, "still", "here"),
           "application data still flows both ways");

    n = hg_dtls_seal(p->client, (const uint8_t *) "once", 4, buf,
                     sizeof(buf));
    got = p->gotn[1];

    rc = hg_dtls_recv(p->server, buf, n, p->now, sink_app, &sink);
    tap_ok(rc == HG_OK && p->gotn[1] == got + 1, "a record is delivered");

    rc = hg_dtls_recv(p->server, buf, n, p->now, sink_app, &sink);
    tap_ok(rc == HG_ERR && p->gotn[1] == got + 1,
           "the same record replayed is dropped");

    pair_free(p);
}


/*
 * Several records in one datagram, once the session has settled: every
 * one is delivered, and an alert behind a record still takes effect.
 */
static void
test_coalesced(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int        rc;
    pair_t    *p;
    size_t     len;
    ssize_t    n;
    uint8_t    dgram[3 * HG_DTLS_MAX_RECORD];
    sink_t     sink;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "coalesced: set up");
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);
    hg_dtls_peer_confirmed(p->server);
    hg_dtls_peer_confirmed(p->client);

    if (!pair_exchange(p, "settle", "down")) {
        tap_ok(0, "coalesced: data flows");
        pair_free(p);
        return;
    }

    sink.pair = p;
    sink.side = 1;
    p->gotn[1] = 0;
    p->gotlen[1] = 0;

    len = 0;
    n = hg_dtls_seal(p->client, (const uint8_t *) "one", 3, dgram,
                     HG_DTLS_MAX_RECORD);
    len += n > 0 ? (size_t) n : 0;
    n = hg_dtls_seal(p->client, (const uint8_t *) "two", 3, dgram + len,
                     HG_DTLS_MAX_RECORD);
    len += n > 0 ? (size_t) n : 0;

    rc = hg_dtls_recv(p->server, dgram, len, p->now, sink_app, &sink);
    tap_ok(rc == HG_OK && p->gotn[1] == 2 && p->gotlen[1] == 6
           && memcmp(p->got[1], "onetwo", 6) == 0,
           "two records in one datagram are both delivered, in order");

    len = 0;
    n = hg_dtls_seal(p->client, (const uint8_t *) "last", 4, dgram,
                     HG_DTLS_MAX_RECORD);
    len += n > 0 ? (size_t) n : 0;

    (void) SSL_shutdown(hg_dtls_ssl(p->client));
    n = hg_dtls_pending(p->client, dgram + len, HG_DTLS_MAX_RECORD);
    len += n > 0 ? (size_t) n : 0;

    rc = hg_dtls_recv(p->server, dgram, len, p->now, sink_app, &sink);
    tap_ok(rc == HG_ERR_STATE && p->gotn[1] == 3
           && hg_dtls_error(p->server) != NULL,
           "a close_notify behind a record in the same datagram ends the "
           "session after the record");

    ERR_clear_error();
    pair_free(p);
}


/* the server's last flight is kept until the peer shows it has it */
static void
test_final_flight(SSL_CTX *sctx, SSL_CTX *cctx)
{
    int        rc;
    pair_t    *p;
    size_t     i;
    uint8_t         buf[HG_DTLS_MAX_RECORD];
    uint64_t        before;
    const dgram_t  *fin;

    p = pair_new(sctx, cctx, "localhost", MTU);
    if (p == NULL) {
        tap_ok(0, "final flight: set up");
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);

    fin = NULL;
    for (i = 0; i < p->nlog; i++) {
        if (p->log[i].to_server
            && classify(1, p->log[i].data, p->log[i].len) == K_CLIENT_FINAL)
        {
            fin = &p->log[i];
        }
    }

    if (fin == NULL) {
        tap_ok(0, "final flight: the client's last flight was seen");
        pair_free(p);
        return;
    }

    before = hg_dtls_retransmits(p->server);
    p->now += HG_SEC;

    rc = hg_dtls_recv(p->server, fin->data, fin->len, p->now, NULL, NULL);
    tap_ok(rc == HG_OK && hg_dtls_retransmits(p->server) == before + 1
           && hg_dtls_pending(p->server, buf, sizeof(buf)) > 0,
           "a repeated client flight makes the server re-send its last one");

    p->now += HG_DTLS_RTO_INITIAL / 4;
    rc = hg_dtls_recv(p->server, fin->data, fin->len, p->now, NULL, NULL);
    tap_ok(rc == HG_OK && hg_dtls_retransmits(p->server) == before + 1,
           "but not twice within half an initial RTO");

    hg_dtls_peer_confirmed(p->server);
    p->now += HG_SEC;

    rc = hg_dtls_recv(p->server, fin->data, fin->len, p->now, NULL, NULL);
    tap_ok(rc == HG_ERR && hg_dtls_retransmits(p->server) == before + 1,
           "once the peer is confirmed the flight is gone and a repeat is "
           "dropped");

    tap_ok(hg_dtls_established(p->server), "the session is unaffected");

    pair_free(p);
}


static void
test_fragmentation(SSL_CTX *sctx, SSL_CTX *cctx, size_t mtu,
    size_t min_fragments)
{
    pair_t         *p;
    size_t          i, fragments;
    const uint8_t  *r;

    p = pair_new(sctx, cctx, "localhost", mtu);
    if (p == NULL) {
        tap_ok(0, "mtu %zu: set up", mtu);
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);

    /* Certificate records whose fragment is shorter than the message */
    fragments = 0;
    for (i = 0; i < p->nlog; i++) {
        r = p->log[i].data;

        while (r < p->log[i].data + p->log[i].len) {
            if (r[0] == SSL3_RT_HANDSHAKE && r[3] == 0 && r[4] == 0
                && r[13] == SSL3_MT_CERTIFICATE
                && memcmp(r + 14, r + 22, 3) != 0)
            {
                fragments++;
            }

            r += DTLS1_RT_HEADER_LENGTH + (r[11] << 8 | r[12]);
        }
    }

    tap_ok(pair_up(p), "mtu %zu: the handshake completes", mtu);
    tap_is_int(p->oversize, 0, "mtu %zu: no datagram exceeds it", mtu);
    tap_ok(fragments >= min_fragments,
           "mtu %zu: the certificate went in %zu fragments", mtu, fragments);
    tap_ok(pair_exchange(p, "small", "world"),
           "mtu %zu: application data flows", mtu);

    pair_free(p);
}


/* a client context against our server: the handshake result */
static void
verify_case(SSL_CTX *sctx, SSL_CTX *cctx, const char *name, int want_up,
    const char *want_client, const char *want_server, const char *what)
{
    pair_t *p;

    p = cctx ? pair_new(sctx, cctx, name, MTU) : NULL;
    if (p == NULL) {
        tap_ok(0, "%s: set up", what);
        SSL_CTX_free(cctx);
        return;
    }

    pair_run(p, p->now + 5 * HG_SEC);

    if (want_up) {
        tap_ok(pair_up(p) && !pair_failed(p), "%s: established", what);
        SSL_CTX_free(cctx);
        pair_free(p);
        return;
    }

    tap_ok(!hg_dtls_established(p->client) && p->client_rc == HG_ERR_STATE,
           "%s: the client fails for good", what);
    tap_is_str(hg_dtls_error(p->client), want_client,
               "%s: the client says why", what);

    if (want_server != NULL) {
        tap_is_str(p->server ? hg_dtls_error(p->server) : NULL, want_server,
                   "%s: the server hears the alert", what);
    }

    tap_ok(ERR_peek_error() == 0, "%s: the error queue is empty", what);

    SSL_CTX_free(cctx);
    pair_free(p);
}


static void
test_verify(SSL_CTX *sctx)
{
    char       pin[128], b64[64];
    size_t     i;
    pair_t    *p;
    uint8_t    raw[32];
    SSL_CTX   *cctx;
    X509      *peer;
    char       hex[65];

    verify_case(sctx, client_ctx(certs.ca, NULL, 0), "localhost", 1, NULL,
                NULL, "CA and host name");
    verify_case(sctx, client_ctx(certs.ca, NULL, 0), "127.0.0.1", 1, NULL,
                NULL, "CA and IP address");
    verify_case(sctx, client_ctx(certs.other_ca, NULL, 0), "localhost", 0,
                "certificate verify failed: self-signed certificate in "
                "certificate chain", "peer sent a fatal alert: unknown CA",
                "wrong CA");
    verify_case(sctx, client_ctx(certs.ca, NULL, 0), "example.com", 0,
                "certificate verify failed: hostname mismatch", NULL,
                "wrong host name");

    verify_case(sctx, client_ctx(NULL, certs.pin, 0), "localhost", 1, NULL,
                NULL, "pin in hex");

    for (i = 0; i < 32; i++) {
        snprintf(pin + 3 * i, 4, "%c%c:", toupper(certs.pin[2 * i]),
                 toupper(certs.pin[2 * i + 1]));
        raw[i] = (uint8_t) strtoul((char[3]) { certs.pin[2 * i],
                                               certs.pin[2 * i + 1], 0 },
                                   NULL, 16);
    }

    pin[3 * 32 - 1] = '\0';
    verify_case(sctx, client_ctx(NULL, pin, 0), "example.com", 1, NULL,
                NULL, "pin in upper-case hex with colons, any name");

    EVP_EncodeBlock((unsigned char *) b64, raw, 32);
    verify_case(sctx, client_ctx(NULL, b64, 0), NULL, 1, NULL, NULL,
                "pin in base64");

    snprintf(pin, sizeof(pin), "%s", certs.pin);
    pin[0] = pin[0] == '0' ? '1' : '0';
    verify_case(sctx, client_ctx(NULL, pin, 0), "localhost", 0,
                "server public key does not match the pinned SHA-256",
                NULL, "wrong pin");

    verify_case(sctx, client_ctx(NULL, NULL, 1), "localhost", 1, NULL, NULL,
                "insecure");

    cctx = client_ctx(certs.ca, NULL, 0);
    if (cctx != NULL) {
        SSL_CTX_set_cipher_list(cctx, "ECDHE-RSA-AES128-GCM-SHA256");
    }

    verify_case(sctx, cctx, "localhost", 0,
                "peer sent a fatal alert: handshake failure", NULL,
                "no shared cipher");
    verify_case(sctx, client_ctx(NULL, NULL, 0), "localhost", 0,
                "certificate verify failed: self-signed certificate in "
                "certificate chain", NULL, "system CA store");

    cctx = client_ctx(certs.ca, NULL, 0);
    p = cctx ? pair_new(sctx, cctx, "localhost", MTU) : NULL;
    if (p != NULL) {
        pair_run(p, p->now + 5 * HG_SEC);
        peer = SSL_get0_peer_certificate(hg_dtls_ssl(p->client));
        tap_ok(peer != NULL && hg_tls_spki_sha256_hex(peer, hex) == HG_OK
               && strcmp(hex, certs.pin) == 0,
               "hg_tls_spki_sha256_hex matches the key's SPKI digest");
        pair_free(p);

    } else {
        tap_ok(0, "spki: set up");
    }

    SSL_CTX_free(cctx);
}


static void
test_ctx_errors(void)
{
    char                  err[256], want[PATH_MAX + 64];
    SSL_CTX              *ctx;
    hg_tls_client_opts_t  opts;

    ctx = hg_tls_server_ctx("/nonexistent/x.pem", certs.key, err,
                            sizeof(err));
    tap_ok(ctx == NULL, "a missing certificate fails");
    tap_is_str(err, "cannot load certificate \"/nonexistent/x.pem\": "
               "no such file or directory", "and says so");

    ctx = hg_tls_server_ctx(certs.cert, certs.ca, err, sizeof(err));
    snprintf(want, sizeof(want), "cannot load private key \"%s\": "
             "no PEM private key found", certs.ca);
    tap_ok(ctx == NULL, "a certificate as the key fails");
    tap_is_str(err, want, "and says so");

    memset(&opts, 0, sizeof(opts));
    opts.pin_sha256 = "abcd";
    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    tap_ok(ctx == NULL && strstr(err, "pin") != NULL,
           "a short pin is refused (%s)", err);

    opts.pin_sha256 = NULL;
    opts.ca_file = "/nonexistent/ca.pem";
    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    tap_ok(ctx == NULL && strncmp(err, "cannot load CA file "
                                  "\"/nonexistent/ca.pem\"", 40) == 0,
           "a missing CA file fails (%s)", err);

    tap_ok(ERR_peek_error() == 0, "no error is left in the OpenSSL queue");
}


int
main(void)
{
    SSL_CTX  *sctx, *cctx, *chacha;

    if (hg_testcert_make_tmp(&certs) != 0) {
        tap_skip("cannot make test certificates");
        return 0;
    }

    sctx = server_ctx();
    cctx = client_ctx(certs.ca, NULL, 0);
    chacha = client_ctx(certs.ca, NULL, 0);

    if (sctx == NULL || cctx == NULL || chacha == NULL
        || !SSL_CTX_set_cipher_list(chacha, "ECDHE-ECDSA-CHACHA20-POLY1305"))
    {
        tap_ok(0, "contexts");
        hg_testcert_remove(&certs);
        return tap_done();
    }

    test_handshake(sctx, cctx);
    test_cookie(sctx, cctx);

    test_loss(sctx, cctx, K_CH1, "the first ClientHello", 1);
    test_loss(sctx, cctx, K_HVR, "the HelloVerifyRequest", 1);
    test_loss(sctx, cctx, K_CH2, "the cookie ClientHello", 1);
    test_loss(sctx, cctx, K_SERVER_FLIGHT, "the server's flight", 2);
    test_loss(sctx, cctx, K_CLIENT_FINAL, "the client's final flight", 2);
    test_loss(sctx, cctx, K_SERVER_FINAL, "the server's final flight", 2);

    test_random_loss(sctx, cctx);
    test_backoff(cctx);
    test_silent_peer(sctx, cctx);
    test_records(sctx, cctx, 37, "AES-GCM");
    test_records(sctx, chacha, 29, "ChaCha20-Poly1305");
    test_garbage(sctx, cctx);
    test_coalesced(sctx, cctx);
    test_final_flight(sctx, cctx);
    test_fragmentation(sctx, cctx, MTU, 0);
    test_fragmentation(sctx, cctx, 256, 3);
    test_verify(sctx);
    test_ctx_errors();

    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    SSL_CTX_free(chacha);
    hg_testcert_remove(&certs);

    return tap_done();
}
