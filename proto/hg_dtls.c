/*
 * DTLS 1.2 for the engine: OpenSSL behind a datagram BIO of our own, a
 * stateless cookie listener, and handshake retransmission driven by the
 * caller's clock. See hg_dtls.h for the shape of it.
 *
 * The BIO: OpenSSL 3.0 has no in-memory datagram BIO (a memory BIO would
 * merge datagrams), so every BIO_write OpenSSL makes becomes exactly one
 * outgoing datagram, and each datagram fed in is exactly one BIO_read.
 * During a handshake OpenSSL packs several records into one write, up to
 * the link MTU we give it.
 *
 * Flights: the datagrams written by the last handshake step that wrote
 * anything are kept as "the flight" and re-queued verbatim when our timer
 * fires or when the peer repeats a datagram it sent before our flight
 * (it evidently did not get the flight). Verbatim copies keep their record
 * sequence numbers, so the peer's replay window drops the parts it already
 * has, and a repeat from the peer is recognizable by its digest alone.
 */

#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hg.h"
#include "hg_dtls.h"


#define HG_DTLS_BIO_TYPE     (0xe1 | BIO_TYPE_SOURCE_SINK)
#define HG_DTLS_SECRET_LEN   32
#define HG_DTLS_COOKIE_LEN   32          /* HMAC-SHA256 */
#define HG_DTLS_SEEN         16          /* peer datagrams remembered */

/* OpenSSL's own retransmission timer, parked out of the way (1 hour) */
#define HG_DTLS_OPENSSL_TIMER_US  3600000000U


typedef struct hg_dtls_dgram_s  hg_dtls_dgram_t;

struct hg_dtls_dgram_s {
    hg_dtls_dgram_t        *next;
    size_t                  len;
    uint8_t                 data[];
};


typedef struct {
    hg_dtls_dgram_t        *head;
    hg_dtls_dgram_t        *tail;
} hg_dtls_queue_t;


/* what the datagram BIO reads from and writes to */
typedef struct {
    const uint8_t          *in;          /* the datagram being fed, unread */
    size_t                  inlen;
    const struct sockaddr  *peer;        /* its source, while known */
    socklen_t               peerlen;
    size_t                  mtu;
    int                   (*write)(void *owner, const uint8_t *buf,
                                   size_t len);
    void                   *owner;
    hg_dtls_listener_t     *listener;    /* for the cookie callbacks */
} hg_dtls_io_t;


typedef struct {
    uint64_t                digest;
    uint32_t                flight;      /* our flights when it arrived */
} hg_dtls_seen_t;


struct hg_dtls_s {
    SSL                    *ssl;
    BIO_METHOD             *bio_method;
    hg_dtls_io_t            io;
    size_t                  record_mtu;
    size_t                  overhead;

    hg_dtls_queue_t         out;         /* datagrams due to the peer */
    hg_dtls_queue_t         flight;      /* our last flight, for resending */
    uint32_t                flights;     /* flights produced so far */
    uint64_t                writes;      /* datagrams queued so far */

    hg_time_t               rto;
    hg_time_t               deadline;
    hg_time_t               last_sent;   /* the flight went out (again) */
    uint64_t                retransmits;

    hg_dtls_seen_t          seen[HG_DTLS_SEEN];
    unsigned                nseen;

    uint8_t                *seal;        /* hg_dtls_seal's buffer */
    size_t                  seal_cap;
    size_t                  sealed;

    int                     alert;       /* fatal alert received, or -1 */

    unsigned                stepping:1;
    unsigned                step_wrote:1;
    unsigned                established:1;
    unsigned                failed:1;
    unsigned                confirmed:1;
    unsigned                settled:1;   /* see hg_dtls_read_done */

    char                    error[160];
};


struct hg_dtls_listener_s {
    SSL_CTX                *ctx;
    SSL                    *ssl;         /* answers ClientHellos */
    BIO_METHOD             *bio_method;
    BIO_ADDR               *client;
    hg_dtls_io_t            io;
    size_t                  record_mtu;
    hg_callbacks_t          cb;

    uint8_t                 secret[2][HG_DTLS_SECRET_LEN];
    unsigned                current;     /* index of this period's secret */
    unsigned                previous_valid:1;
    hg_time_t               period_start;

    uint8_t                *reply;
    size_t                  reply_cap;
    size_t                  reply_len;
    int                     cookie_failed;
};


static hg_dtls_t *hg_dtls_alloc(size_t record_mtu);
static void hg_dtls_attach(hg_dtls_t *d);
static int hg_dtls_step(hg_dtls_t *d, hg_time_t now);
static int hg_dtls_read(hg_dtls_t *d, hg_dtls_app_cb on_app, void *arg,
    uint64_t *delivered);
static int hg_dtls_read_done(hg_dtls_t *d);
static void hg_dtls_established_now(hg_dtls_t *d);
static void hg_dtls_clear_errors(void);
static size_t hg_dtls_record_overhead(hg_dtls_t *d);
static void hg_dtls_fail(hg_dtls_t *d, const char *reason);
static void hg_dtls_describe(hg_dtls_t *d);
static void hg_dtls_info(const SSL *ssl, int where, int ret);
static int hg_dtls_write(void *owner, const uint8_t *buf, size_t len);
static void hg_dtls_resend(hg_dtls_t *d, hg_time_t now);
static void hg_dtls_peer_repeated(hg_dtls_t *d, const hg_dtls_seen_t *seen,
    hg_time_t now);
static int hg_dtls_tracks(const hg_dtls_t *d, const uint8_t *dgram);
static hg_dtls_seen_t *hg_dtls_seen_find(hg_dtls_t *d, uint64_t digest);
static void hg_dtls_seen_add(hg_dtls_t *d, uint64_t digest);
static int hg_dtls_digest(const uint8_t *dgram, size_t len,
    uint64_t *digest);
static int hg_dtls_check_records(const uint8_t *p, size_t len,
    size_t min_protected);

static int hg_dtls_queue_push(hg_dtls_queue_t *q, const uint8_t *buf,
    size_t len);
static void hg_dtls_queue_clear(hg_dtls_queue_t *q);

static int hg_dtls_listener_ssl(hg_dtls_listener_t *l);
static int hg_dtls_listener_write(void *owner, const uint8_t *buf,
    size_t len);
static int hg_dtls_accept(hg_dtls_listener_t *l, const uint8_t *dgram,
    size_t len, const struct sockaddr *peer, socklen_t peerlen,
    hg_time_t now, uint8_t *reply, size_t cap, size_t *replylen,
    hg_dtls_t **out);
static int hg_dtls_rotate(hg_dtls_listener_t *l, hg_time_t now);
static int hg_dtls_cookie_make(const hg_dtls_io_t *io,
    const uint8_t *secret, uint8_t cookie[HG_DTLS_COOKIE_LEN]);
static hg_dtls_io_t *hg_dtls_cookie_io(SSL *ssl);
static int hg_dtls_cookie_generate(SSL *ssl, unsigned char *cookie,
    unsigned int *len);
static int hg_dtls_cookie_verify(SSL *ssl, const unsigned char *cookie,
    unsigned int len);

static SSL *hg_dtls_ssl_new(SSL_CTX *ctx, hg_dtls_io_t *io,
    BIO_METHOD **method);
static unsigned int hg_dtls_timer_cb(SSL *ssl, unsigned int timer_us);
static BIO_METHOD *hg_dtls_bio_method(void);
static int hg_dtls_bio_write(BIO *bio, const char *buf, int len);
static int hg_dtls_bio_read(BIO *bio, char *buf, int size);
static long hg_dtls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr);
static long hg_dtls_bio_peer(hg_dtls_io_t *io, BIO_ADDR *addr);
static int hg_dtls_bio_create(BIO *bio);
static int hg_dtls_bio_destroy(BIO *bio);


/* ---- the listener ------------------------------------------------------ */

hg_dtls_listener_t *
hg_dtls_listener_new(SSL_CTX *ctx, size_t record_mtu,
    const hg_callbacks_t *cb, hg_time_t now)
{
    hg_dtls_listener_t  *l;

    if (cb == NULL || cb->random == NULL) {
        return NULL;
    }

    l = calloc(1, sizeof(hg_dtls_listener_t));
    if (l == NULL) {
        return NULL;
    }

    l->ctx = ctx;
    l->record_mtu = record_mtu;
    l->cb = *cb;
    l->period_start = now;

    l->io.mtu = record_mtu;
    l->io.write = hg_dtls_listener_write;
    l->io.owner = l;
    l->io.listener = l;

    if (cb->random(cb->ctx, l->secret[0], HG_DTLS_SECRET_LEN) != 0) {
        goto failed;
    }

    l->client = BIO_ADDR_new();
    if (l->client == NULL) {
        goto failed;
    }

    /* the callbacks find their listener through the SSL's BIO */
    SSL_CTX_set_cookie_generate_cb(ctx, hg_dtls_cookie_generate);
    SSL_CTX_set_cookie_verify_cb(ctx, hg_dtls_cookie_verify);

    if (hg_dtls_listener_ssl(l) != HG_OK) {
        goto failed;
    }

    return l;

failed:

    hg_dtls_listener_free(l);
    return NULL;
}


void
hg_dtls_listener_free(hg_dtls_listener_t *l)
{
    if (l == NULL) {
        return;
    }

    SSL_free(l->ssl);
    BIO_meth_free(l->bio_method);
    BIO_ADDR_free(l->client);
    OPENSSL_cleanse(l->secret, sizeof(l->secret));
    free(l);
}


int
hg_dtls_listen(hg_dtls_listener_t *l, const uint8_t *dgram, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now,
    uint8_t *reply, size_t *replylen, int *cookie_failed, hg_dtls_t **out)
{
    int     n;
    size_t  cap;

    *out = NULL;
    *cookie_failed = 0;
    cap = *replylen;
    *replylen = 0;

    if (hg_dtls_check_records(dgram, len, 0) != HG_OK
        || dgram[0] != SSL3_RT_HANDSHAKE)
    {
        return HG_ERR;
    }

    if (hg_dtls_rotate(l, now) != HG_OK) {
        return HG_ERR;
    }

    if (l->ssl == NULL && hg_dtls_listener_ssl(l) != HG_OK) {
        return HG_ERR;
    }

    l->io.in = dgram;
    l->io.inlen = len;
    l->io.peer = peer;
    l->io.peerlen = peerlen;
    l->reply = reply;
    l->reply_cap = cap < l->record_mtu ? cap : l->record_mtu;
    l->reply_len = 0;
    l->cookie_failed = 0;

    ERR_clear_error();
    n = DTLSv1_listen(l->ssl, l->client);
    ERR_clear_error();

    l->io.in = NULL;
    l->io.peer = NULL;
    l->reply = NULL;
    *cookie_failed = l->cookie_failed;

    if (n < 0) {
        /* the listening SSL is unusable: a fresh one next time */
        SSL_free(l->ssl);
        BIO_meth_free(l->bio_method);
        l->ssl = NULL;
        l->bio_method = NULL;
        return HG_ERR;
    }

    if (n == 0) {
        /*
         * No cookie: the HelloVerifyRequest goes back. A bad cookie is
         * dropped rather than answered, so the caller can count it.
         */
        if (l->cookie_failed || l->reply_len == 0) {
            return HG_ERR;
        }

        *replylen = l->reply_len;
        return HG_AGAIN;
    }

    return hg_dtls_accept(l, dgram, len, peer, peerlen, now, reply, cap,
                          replylen, out);
}


static int
hg_dtls_accept(hg_dtls_listener_t *l, const uint8_t *dgram, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now,
    uint8_t *reply, size_t cap, size_t *replylen, hg_dtls_t **out)
{
    int        rc;
    ssize_t    n;
    uint64_t   digest;
    hg_dtls_t  *d;

    d = hg_dtls_alloc(l->record_mtu);
    if (d == NULL) {
        return HG_ERR;
    }

    /* the listening SSL holds the ClientHello: it becomes the session's */
    d->ssl = l->ssl;
    d->bio_method = l->bio_method;
    l->ssl = NULL;
    l->bio_method = NULL;

    hg_dtls_attach(d);

    /* a repeat of this ClientHello means our first flight was lost */
    if (hg_dtls_digest(dgram, len, &digest) == HG_OK) {
        hg_dtls_seen_add(d, digest);
    }

    /* OpenSSL checks the cookie once more while processing the hello */
    d->io.listener = l;
    d->io.peer = peer;
    d->io.peerlen = peerlen;

    rc = hg_dtls_step(d, now);

    d->io.listener = NULL;
    d->io.peer = NULL;

    /* if this fails, the next datagram tries again */
    (void) hg_dtls_listener_ssl(l);

    if (rc != HG_OK) {
        /* the alert tells the peer why, e.g. "no shared cipher" */
        n = hg_dtls_pending(d, reply, cap < l->record_mtu ? cap
                                                          : l->record_mtu);
        if (n > 0) {
            *replylen = n;
        }

        hg_dtls_free(d);
        return HG_ERR;
    }

    *out = d;

    return HG_OK;
}


static int
hg_dtls_listener_ssl(hg_dtls_listener_t *l)
{
    l->ssl = hg_dtls_ssl_new(l->ctx, &l->io, &l->bio_method);
    if (l->ssl == NULL) {
        return HG_ERR;
    }

    SSL_set_accept_state(l->ssl);

    return HG_OK;
}


static int
hg_dtls_listener_write(void *owner, const uint8_t *buf, size_t len)
{
    hg_dtls_listener_t  *l = owner;

    if (l->reply == NULL || len > l->reply_cap - l->reply_len) {
        return HG_ERR;
    }

    memcpy(l->reply + l->reply_len, buf, len);
    l->reply_len += len;

    return HG_OK;
}


/*
 * Cookies are good for the period they were made in and the next one, so
 * one made just before a rotation still works for a full period.
 */
static int
hg_dtls_rotate(hg_dtls_listener_t *l, hg_time_t now)
{
    hg_time_t  periods;
    uint8_t    fresh[HG_DTLS_SECRET_LEN];

    if (now < l->period_start + HG_DTLS_SECRET_PERIOD) {
        return HG_OK;
    }

    if (l->cb.random(l->cb.ctx, fresh, sizeof(fresh)) != 0) {
        return HG_ERR;
    }

    periods = (now - l->period_start) / HG_DTLS_SECRET_PERIOD;

    l->previous_valid = (periods == 1);
    l->current ^= 1;
    memcpy(l->secret[l->current], fresh, sizeof(fresh));
    OPENSSL_cleanse(fresh, sizeof(fresh));
    l->period_start += periods * HG_DTLS_SECRET_PERIOD;

    return HG_OK;
}


/* HMAC-SHA256 over the peer's address family, port and address */
static int
hg_dtls_cookie_make(const hg_dtls_io_t *io, const uint8_t *secret,
    uint8_t cookie[HG_DTLS_COOKIE_LEN])
{
    size_t                      n;
    unsigned int                mdlen;
    uint8_t                     addr[32];
    const struct sockaddr_in   *sin;
    const struct sockaddr_in6  *sin6;

    if (io->peer == NULL) {
        return HG_ERR;
    }

    memset(addr, 0, sizeof(addr));

    switch (io->peer->sa_family) {

    case AF_INET:
        if (io->peerlen < (socklen_t) sizeof(struct sockaddr_in)) {
            return HG_ERR;
        }

        sin = (const struct sockaddr_in *) io->peer;
        addr[0] = AF_INET;
        memcpy(addr + 2, &sin->sin_port, 2);
        memcpy(addr + 4, &sin->sin_addr, 4);
        n = 8;
        break;

    case AF_INET6:
        if (io->peerlen < (socklen_t) sizeof(struct sockaddr_in6)) {
            return HG_ERR;
        }

        sin6 = (const struct sockaddr_in6 *) io->peer;
        addr[0] = AF_INET6;
        memcpy(addr + 2, &sin6->sin6_port, 2);
        memcpy(addr + 4, &sin6->sin6_addr, 16);
        memcpy(addr + 20, &sin6->sin6_scope_id, 4);
        n = 24;
        break;

    default:
        return HG_ERR;
    }

    if (HMAC(EVP_sha256(), secret, HG_DTLS_SECRET_LEN, addr, n, cookie,
             &mdlen)
        == NULL || mdlen != HG_DTLS_COOKIE_LEN)
    {
        return HG_ERR;
    }

    return HG_OK;
}


/* the SSL's BIO leads to the datagram at hand and to the listener */
static hg_dtls_io_t *
hg_dtls_cookie_io(SSL *ssl)
{
    BIO           *bio;
    hg_dtls_io_t  *io;

    bio = SSL_get_rbio(ssl);
    if (bio == NULL || BIO_method_type(bio) != HG_DTLS_BIO_TYPE) {
        return NULL;
    }

    io = BIO_get_data(bio);

    return io != NULL && io->listener != NULL ? io : NULL;
}


static int
hg_dtls_cookie_generate(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
    hg_dtls_io_t        *io;
    hg_dtls_listener_t  *l;

    io = hg_dtls_cookie_io(ssl);
    if (io == NULL) {
        return 0;
    }

    l = io->listener;

    if (hg_dtls_cookie_make(io, l->secret[l->current], cookie) != HG_OK) {
        return 0;
    }

    *len = HG_DTLS_COOKIE_LEN;

    return 1;
}


static int
hg_dtls_cookie_verify(SSL *ssl, const unsigned char *cookie,
    unsigned int len)
{
    uint8_t              want[HG_DTLS_COOKIE_LEN];
    hg_dtls_io_t        *io;
    hg_dtls_listener_t  *l;

    io = hg_dtls_cookie_io(ssl);
    if (io == NULL) {
        return 0;
    }

    l = io->listener;

    if (len == HG_DTLS_COOKIE_LEN) {
        if (hg_dtls_cookie_make(io, l->secret[l->current], want) == HG_OK
            && CRYPTO_memcmp(want, cookie, len) == 0)
        {
            return 1;
        }

        if (l->previous_valid
            && hg_dtls_cookie_make(io, l->secret[l->current ^ 1], want)
               == HG_OK
            && CRYPTO_memcmp(want, cookie, len) == 0)
        {
            return 1;
        }
    }

    l->cookie_failed = 1;

    return 0;
}


/* ---- a session --------------------------------------------------------- */

hg_dtls_t *
hg_dtls_client_new(SSL_CTX *ctx, size_t record_mtu, const char *server_name,
    hg_time_t now)
{
    hg_dtls_t       *d;
    struct in6_addr  ip;

    d = hg_dtls_alloc(record_mtu);
    if (d == NULL) {
        return NULL;
    }

    d->ssl = hg_dtls_ssl_new(ctx, &d->io, &d->bio_method);
    if (d->ssl == NULL) {
        goto failed;
    }

    hg_dtls_attach(d);
    SSL_set_connect_state(d->ssl);

    if (server_name != NULL && server_name[0] != '\0') {
        /* SNI carries host names only, never address literals */
        if (inet_pton(AF_INET, server_name, &ip) != 1
            && inet_pton(AF_INET6, server_name, &ip) != 1
            && !SSL_set_tlsext_host_name(d->ssl, server_name))
        {
            goto failed;
        }

        SSL_set_hostflags(d->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);

        if (!SSL_set1_host(d->ssl, server_name)) {
            goto failed;
        }
    }

    if (hg_dtls_step(d, now) != HG_OK) {
        goto failed;
    }

    return d;

failed:

    ERR_clear_error();
    hg_dtls_free(d);
    return NULL;
}


void
hg_dtls_free(hg_dtls_t *d)
{
    if (d == NULL) {
        return;
    }

    /* the BIO goes with the SSL, and its method must outlive it */
    SSL_free(d->ssl);
    BIO_meth_free(d->bio_method);

    hg_dtls_queue_clear(&d->out);
    hg_dtls_queue_clear(&d->flight);
    free(d);
}


int
hg_dtls_recv(hg_dtls_t *d, const uint8_t *dgram, size_t len, hg_time_t now,
    hg_dtls_app_cb on_app, void *arg)
{
    int              rc, was_established;
    uint64_t         digest, delivered, writes;
    hg_dtls_seen_t  *seen;

    if (d->failed) {
        return HG_ERR_STATE;
    }

    /*
     * A protected record too short for the cipher's nonce and tag makes
     * OpenSSL fail the connection instead of dropping the record; anyone
     * who learnt the connection id could end a session so. Such records
     * never reach it. Before the suite is known, 16 bytes (a tag) is the
     * least any AEAD record has.
     */
    if (hg_dtls_check_records(dgram, len,
                              d->established ? d->overhead
                                               - DTLS1_RT_HEADER_LENGTH
                                             : 16)
        != HG_OK)
    {
        return HG_ERR;
    }

    if (hg_dtls_tracks(d, dgram)
        && hg_dtls_digest(dgram, len, &digest) == HG_OK)
    {
        seen = hg_dtls_seen_find(d, digest);

        if (seen != NULL) {
            /* OpenSSL would drop it as a replay: it matters only to us */
            hg_dtls_peer_repeated(d, seen, now);
            return HG_OK;
        }

        hg_dtls_seen_add(d, digest);
    }

    was_established = d->established;
    writes = d->writes;
    delivered = 0;
    rc = HG_OK;

    d->io.in = dgram;
    d->io.inlen = len;

    if (!d->established) {
        rc = hg_dtls_step(d, now);
    }

    /* records that came with or before the Finished may be buffered */
    if (rc == HG_OK && d->established) {
        rc = hg_dtls_read(d, on_app, arg, &delivered);
    }

    d->io.in = NULL;

    if (rc != HG_OK) {
        return rc;
    }

    /* OpenSSL drops bad records silently; so did nothing happen? */
    if (was_established && delivered == 0 && d->writes == writes) {
        return HG_ERR;
    }

    return HG_OK;
}


ssize_t
hg_dtls_seal(hg_dtls_t *d, const uint8_t *plain, size_t len, uint8_t *out,
    size_t cap)
{
    int     ok;
    size_t  written;

    if (!d->established || d->failed || len == 0
        || len > SSL3_RT_MAX_PLAIN_LENGTH || cap < len + d->overhead)
    {
        return HG_ERR;
    }

    d->seal = out;
    d->seal_cap = cap;
    d->sealed = 0;

    /*
     * Success is in the return value, not in the error queue, so stale
     * errors need no clearing first: the clearing after takes them too.
     */
    ok = SSL_write_ex(d->ssl, plain, len, &written);
    hg_dtls_clear_errors();

    d->seal = NULL;

    if (!ok || written != len || d->sealed == 0) {
        return HG_ERR;
    }

    return (ssize_t) d->sealed;
}


ssize_t
hg_dtls_pending(hg_dtls_t *d, uint8_t *out, size_t cap)
{
    size_t            len;
    hg_dtls_dgram_t  *dg;

    dg = d->out.head;
    if (dg == NULL) {
        return 0;
    }

    if (dg->len > cap) {
        return HG_ERR;
    }

    len = dg->len;
    memcpy(out, dg->data, len);

    d->out.head = dg->next;
    if (d->out.head == NULL) {
        d->out.tail = NULL;
    }

    free(dg);

    return (ssize_t) len;
}


hg_time_t
hg_dtls_deadline(const hg_dtls_t *d)
{
    return d->deadline;
}


void
hg_dtls_timeout(hg_dtls_t *d, hg_time_t now)
{
    if (d->deadline == HG_TIME_INFINITE || now < d->deadline) {
        return;
    }

    if (d->established || d->failed || d->flight.head == NULL) {
        d->deadline = HG_TIME_INFINITE;
        return;
    }

    hg_dtls_resend(d, now);

    /* RFC 6347 4.2.4.1: double the timer, up to a cap */
    d->rto *= 2;
    if (d->rto > HG_DTLS_RTO_MAX) {
        d->rto = HG_DTLS_RTO_MAX;
    }

    d->deadline = now + d->rto;
}


int
hg_dtls_established(const hg_dtls_t *d)
{
    return d->established && !d->failed;
}


const char *
hg_dtls_error(const hg_dtls_t *d)
{
    return d->failed ? d->error : NULL;
}


size_t
hg_dtls_overhead(const hg_dtls_t *d)
{
    return d->overhead;
}


void
hg_dtls_peer_confirmed(hg_dtls_t *d)
{
    if (d->confirmed || !d->established) {
        return;
    }

    d->confirmed = 1;
    hg_dtls_queue_clear(&d->flight);
    d->nseen = 0;
}


SSL *
hg_dtls_ssl(const hg_dtls_t *d)
{
    return d->ssl;
}


uint64_t
hg_dtls_retransmits(const hg_dtls_t *d)
{
    return d->retransmits;
}


static hg_dtls_t *
hg_dtls_alloc(size_t record_mtu)
{
    hg_dtls_t  *d;

    d = calloc(1, sizeof(hg_dtls_t));
    if (d == NULL) {
        return NULL;
    }

    d->record_mtu = record_mtu;
    d->rto = HG_DTLS_RTO_INITIAL;
    d->deadline = HG_TIME_INFINITE;
    d->alert = -1;

    d->io.mtu = record_mtu;
    d->io.write = hg_dtls_write;
    d->io.owner = d;

    return d;
}


static void
hg_dtls_attach(hg_dtls_t *d)
{
    BIO_set_data(SSL_get_rbio(d->ssl), &d->io);
    SSL_set_app_data(d->ssl, d);
    SSL_set_info_callback(d->ssl, hg_dtls_info);
}


/*
 * One push of the handshake. If it wrote anything, that is our new flight:
 * the timer restarts from the initial RTO while we wait for the answer.
 */
static int
hg_dtls_step(hg_dtls_t *d, hg_time_t now)
{
    int  n, err;

    d->stepping = 1;
    d->step_wrote = 0;

    ERR_clear_error();
    n = SSL_do_handshake(d->ssl);

    d->stepping = 0;

    if (n == 1) {
        hg_dtls_established_now(d);

    } else {
        err = SSL_get_error(d->ssl, n);

        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            hg_dtls_fail(d, NULL);
            return HG_ERR_STATE;
        }
    }

    ERR_clear_error();

    if (d->step_wrote) {
        d->rto = HG_DTLS_RTO_INITIAL;
        d->last_sent = now;
        d->deadline = d->established ? HG_TIME_INFINITE : now + d->rto;
    }

    return HG_OK;
}


static int
hg_dtls_read(hg_dtls_t *d, hg_dtls_app_cb on_app, void *arg,
    uint64_t *delivered)
{
    int      err;
    size_t   n;
    uint8_t  plain[SSL3_RT_MAX_PLAIN_LENGTH];

    for ( ;; ) {
        hg_dtls_clear_errors();

        if (SSL_read_ex(d->ssl, plain, sizeof(plain), &n) == 1) {
            (*delivered)++;

            if (on_app != NULL) {
                on_app(arg, plain, n);
            }

            if (hg_dtls_read_done(d)) {
                hg_dtls_clear_errors();
                return HG_OK;
            }

            continue;
        }

        err = SSL_get_error(d->ssl, 0);

        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            hg_dtls_clear_errors();
            d->settled = !SSL_in_init(d->ssl);
            return HG_OK;
        }

        hg_dtls_fail(d, err == SSL_ERROR_ZERO_RETURN
                        ? "peer closed the DTLS session" : NULL);
        return HG_ERR_STATE;
    }
}


/*
 * After a record, one more SSL_read_ex would only answer WANT_READ unless
 * OpenSSL still holds input. It may hold the rest of the datagram (more
 * records), a decrypted record not yet read, or application data that
 * came during the handshake: SSL_has_pending reports all of these. It may
 * also hold records of the next epoch buffered during the handshake,
 * which SSL_has_pending does not see and which OpenSSL takes up at its
 * next read once the epoch has changed. Those are buffered only while a
 * handshake runs, and a read that ran to WANT_READ outside one has taken
 * them all up: `settled` says one did.
 * The read that finds nothing cost some 6 % of the engine's throughput.
 */
static int
hg_dtls_read_done(hg_dtls_t *d)
{
    return d->settled && d->io.in == NULL && !SSL_in_init(d->ssl)
           && !SSL_has_pending(d->ssl);
}


/*
 * ERR_clear_error() resets all sixteen slots of the thread's error queue,
 * two frees each, even when the queue is empty, as it nearly always is on
 * the per-record paths: there it cost a tenth of the engine's CPU time.
 * SSL_get_error() only looks at ERR_peek_error(), so clearing when that
 * finds something keeps its answers the same.
 */
static void
hg_dtls_clear_errors(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}


static void
hg_dtls_established_now(hg_dtls_t *d)
{
    d->established = 1;
    d->deadline = HG_TIME_INFINITE;
    d->overhead = hg_dtls_record_overhead(d);
}


/* the suites are AEAD: a record adds its header, explicit nonce and tag */
static size_t
hg_dtls_record_overhead(hg_dtls_t *d)
{
    size_t            data_mtu;
    const SSL_CIPHER  *cipher;

    cipher = SSL_get_current_cipher(d->ssl);
    if (cipher == NULL) {
        return 0;
    }

    switch (SSL_CIPHER_get_cipher_nid(cipher)) {

    case NID_aes_128_gcm:
    case NID_aes_256_gcm:
        return DTLS1_RT_HEADER_LENGTH + EVP_GCM_TLS_EXPLICIT_IV_LEN
               + EVP_GCM_TLS_TAG_LEN;

    case NID_chacha20_poly1305:
        return DTLS1_RT_HEADER_LENGTH + EVP_CHACHAPOLY_TLS_TAG_LEN;

    default:
        /* a context the shell built itself: ask OpenSSL */
        data_mtu = DTLS_get_data_mtu(d->ssl);
        return data_mtu != 0 && data_mtu < d->record_mtu
               ? d->record_mtu - data_mtu : 0;
    }
}


static void
hg_dtls_fail(hg_dtls_t *d, const char *reason)
{
    if (!d->failed) {
        if (reason != NULL) {
            snprintf(d->error, sizeof(d->error), "%s", reason);

        } else {
            hg_dtls_describe(d);
        }
    }

    ERR_clear_error();

    d->failed = 1;
    d->deadline = HG_TIME_INFINITE;
    hg_dtls_queue_clear(&d->flight);
}


/* a reason a person can act on, from the alert or the error queue */
static void
hg_dtls_describe(hg_dtls_t *d)
{
    long           result;
    unsigned long  e, first;
    const char    *reason;

    if (d->alert >= 0) {
        snprintf(d->error, sizeof(d->error), "peer sent a fatal alert: %s",
                 SSL_alert_desc_string_long(d->alert));
        return;
    }

    first = 0;

    while ((e = ERR_get_error()) != 0) {
        if (first == 0) {
            first = e;
        }

        if (ERR_GET_LIB(e) != ERR_LIB_SSL
            || ERR_GET_REASON(e) != SSL_R_CERTIFICATE_VERIFY_FAILED)
        {
            continue;
        }

        result = SSL_get_verify_result(d->ssl);

        /* hg_tls.c's pin check fails as an application verification */
        if (result == X509_V_ERR_APPLICATION_VERIFICATION) {
            snprintf(d->error, sizeof(d->error),
                     "server public key does not match the pinned SHA-256");

        } else {
            snprintf(d->error, sizeof(d->error),
                     "certificate verify failed: %s",
                     X509_verify_cert_error_string(result));
        }

        ERR_clear_error();
        return;
    }

    reason = first ? ERR_reason_error_string(first) : NULL;

    snprintf(d->error, sizeof(d->error), "%s",
             reason ? reason : "DTLS handshake failed");
}


static void
hg_dtls_info(const SSL *ssl, int where, int ret)
{
    hg_dtls_t  *d;

    if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT
        || (ret >> 8) != SSL3_AL_FATAL)
    {
        return;
    }

    d = SSL_get_app_data(ssl);

    if (d != NULL && d->alert < 0) {
        d->alert = ret;
    }
}


static int
hg_dtls_write(void *owner, const uint8_t *buf, size_t len)
{
    hg_dtls_t  *d = owner;

    if (d->seal != NULL) {
        if (d->sealed != 0 || len > d->seal_cap) {
            return HG_ERR;
        }

        memcpy(d->seal, buf, len);
        d->sealed = len;
        return HG_OK;
    }

    if (d->stepping && !d->step_wrote) {
        /* a new flight: the one before it has been answered */
        hg_dtls_queue_clear(&d->flight);
        d->step_wrote = 1;
        d->flights++;
    }

    if (hg_dtls_queue_push(&d->out, buf, len) != HG_OK) {
        return HG_ERR;
    }

    d->writes++;

    if (d->stepping && hg_dtls_queue_push(&d->flight, buf, len) != HG_OK) {
        return HG_ERR;
    }

    return HG_OK;
}


static void
hg_dtls_resend(hg_dtls_t *d, hg_time_t now)
{
    hg_dtls_dgram_t  *dg;

    /* whatever is still queued is an earlier copy of the same flight */
    hg_dtls_queue_clear(&d->out);

    for (dg = d->flight.head; dg != NULL; dg = dg->next) {
        if (hg_dtls_queue_push(&d->out, dg->data, dg->len) != HG_OK) {
            break;
        }
    }

    d->retransmits++;
    d->last_sent = now;
}


/*
 * The peer sent a datagram again. If it arrived before our current flight
 * was made, the peer is still waiting for that flight: send it again, but
 * not more often than every half initial RTO (a burst of repeats is one
 * loss). A repeat of something that came after is the peer's own timer
 * and needs nothing from us.
 */
static void
hg_dtls_peer_repeated(hg_dtls_t *d, const hg_dtls_seen_t *seen,
    hg_time_t now)
{
    if (seen->flight >= d->flights || d->flight.head == NULL) {
        return;
    }

    if (now < d->last_sent + HG_DTLS_RTO_INITIAL / 2) {
        return;
    }

    hg_dtls_resend(d, now);

    if (d->deadline != HG_TIME_INFINITE) {
        d->deadline = now + d->rto;
    }
}


/*
 * Which datagrams may be repeats worth answering: all of them during the
 * handshake; afterwards only handshake and ChangeCipherSpec records (the
 * peer repeating its last flight), and only while we keep our own.
 */
static int
hg_dtls_tracks(const hg_dtls_t *d, const uint8_t *dgram)
{
    if (!d->established) {
        return 1;
    }

    return !d->confirmed && (dgram[0] == SSL3_RT_HANDSHAKE
                             || dgram[0] == SSL3_RT_CHANGE_CIPHER_SPEC);
}


static hg_dtls_seen_t *
hg_dtls_seen_find(hg_dtls_t *d, uint64_t digest)
{
    unsigned  i, n;

    n = d->nseen < HG_DTLS_SEEN ? d->nseen : HG_DTLS_SEEN;

    for (i = 0; i < n; i++) {
        if (d->seen[i].digest == digest) {
            return &d->seen[i];
        }
    }

    return NULL;
}


static void
hg_dtls_seen_add(hg_dtls_t *d, uint64_t digest)
{
    hg_dtls_seen_t  *s;

    s = &d->seen[d->nseen % HG_DTLS_SEEN];
    s->digest = digest;
    s->flight = d->flights;
    d->nseen++;
}


/* a truncated SHA-256: nobody can make a datagram look like another */
static int
hg_dtls_digest(const uint8_t *dgram, size_t len, uint64_t *digest)
{
    unsigned int   mdlen;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (!EVP_Digest(dgram, len, md, &mdlen, EVP_sha256(), NULL)) {
        ERR_clear_error();
        return HG_ERR;
    }

    memcpy(digest, md, sizeof(*digest));

    return HG_OK;
}


/* a datagram is one or more whole DTLS records, nothing else */
static int
hg_dtls_check_records(const uint8_t *p, size_t len, size_t min_protected)
{
    size_t  rlen;

    if (len == 0) {
        return HG_ERR;
    }

    while (len > 0) {
        if (len < DTLS1_RT_HEADER_LENGTH
            || p[0] < SSL3_RT_CHANGE_CIPHER_SPEC
            || p[0] > SSL3_RT_APPLICATION_DATA
            || p[1] != DTLS1_VERSION_MAJOR)
        {
            return HG_ERR;
        }

        rlen = DTLS1_RT_HEADER_LENGTH + ((size_t) p[11] << 8 | p[12]);
        if (rlen > len) {
            return HG_ERR;
        }

        /* epoch (bytes 3-4) above 0: the record is encrypted */
        if ((p[3] | p[4]) != 0
            && rlen - DTLS1_RT_HEADER_LENGTH < min_protected)
        {
            return HG_ERR;
        }

        p += rlen;
        len -= rlen;
    }

    return HG_OK;
}


static int
hg_dtls_queue_push(hg_dtls_queue_t *q, const uint8_t *buf, size_t len)
{
    hg_dtls_dgram_t  *dg;

    dg = malloc(sizeof(hg_dtls_dgram_t) + len);
    if (dg == NULL) {
        return HG_ERR;
    }

    dg->next = NULL;
    dg->len = len;
    memcpy(dg->data, buf, len);

    if (q->tail != NULL) {
        q->tail->next = dg;

    } else {
        q->head = dg;
    }

    q->tail = dg;

    return HG_OK;
}


static void
hg_dtls_queue_clear(hg_dtls_queue_t *q)
{
    hg_dtls_dgram_t  *dg, *next;

    for (dg = q->head; dg != NULL; dg = next) {
        next = dg->next;
        free(dg);
    }

    q->head = NULL;
    q->tail = NULL;
}


/* ---- OpenSSL plumbing -------------------------------------------------- */

static SSL *
hg_dtls_ssl_new(SSL_CTX *ctx, hg_dtls_io_t *io, BIO_METHOD **method)
{
    SSL         *ssl;
    BIO         *bio;
    BIO_METHOD  *m;

    m = hg_dtls_bio_method();
    if (m == NULL) {
        return NULL;
    }

    ssl = SSL_new(ctx);
    if (ssl == NULL) {
        goto failed;
    }

    bio = BIO_new(m);
    if (bio == NULL) {
        goto failed;
    }

    BIO_set_data(bio, io);
    SSL_set_bio(ssl, bio, bio);

    /* the budget is fixed by the engine: no probing, no guessing */
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);

    if (!DTLS_set_link_mtu(ssl, (long) io->mtu)) {
        goto failed;
    }

    DTLS_set_timer_cb(ssl, hg_dtls_timer_cb);

    *method = m;

    return ssl;

failed:

    ERR_clear_error();
    SSL_free(ssl);
    BIO_meth_free(m);
    return NULL;
}


/*
 * OpenSSL measures its timer with gettimeofday(); ours runs on the
 * caller's clock. Keeping OpenSSL's beyond any handshake's life means it
 * never retransmits behind our back.
 */
static unsigned int
hg_dtls_timer_cb(SSL *ssl, unsigned int timer_us)
{
    (void) ssl;
    (void) timer_us;

    return HG_DTLS_OPENSSL_TIMER_US;
}


static BIO_METHOD *
hg_dtls_bio_method(void)
{
    BIO_METHOD  *m;

    m = BIO_meth_new(HG_DTLS_BIO_TYPE, "hopgate datagram");
    if (m == NULL) {
        return NULL;
    }

    if (!BIO_meth_set_write(m, hg_dtls_bio_write)
        || !BIO_meth_set_read(m, hg_dtls_bio_read)
        || !BIO_meth_set_ctrl(m, hg_dtls_bio_ctrl)
        || !BIO_meth_set_create(m, hg_dtls_bio_create)
        || !BIO_meth_set_destroy(m, hg_dtls_bio_destroy))
    {
        BIO_meth_free(m);
        return NULL;
    }

    return m;
}


static int
hg_dtls_bio_write(BIO *bio, const char *buf, int len)
{
    hg_dtls_io_t  *io;

    BIO_clear_retry_flags(bio);

    io = BIO_get_data(bio);

    if (io == NULL || len < 0
        || io->write(io->owner, (const uint8_t *) buf, len) != HG_OK)
    {
        return -1;
    }

    return len;
}


static int
hg_dtls_bio_read(BIO *bio, char *buf, int size)
{
    size_t         n;
    hg_dtls_io_t  *io;

    BIO_clear_retry_flags(bio);

    io = BIO_get_data(bio);

    if (io == NULL || io->in == NULL) {
        BIO_set_retry_read(bio);
        return -1;
    }

    if (size <= 0) {
        return 0;
    }

    /* a short buffer truncates the datagram, as recv() would */
    n = io->inlen < (size_t) size ? io->inlen : (size_t) size;
    memcpy(buf, io->in, n);
    io->in = NULL;

    return (int) n;
}


static long
hg_dtls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    hg_dtls_io_t  *io;

    (void) num;

    io = BIO_get_data(bio);
    if (io == NULL) {
        return 0;
    }

    switch (cmd) {

    case BIO_CTRL_DGRAM_GET_PEER:
        return hg_dtls_bio_peer(io, ptr);

    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
        return (long) io->mtu;

    case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD:
        /* the engine's prefix is already taken off the record MTU */
        return 0;

    case BIO_CTRL_PENDING:
        return io->in != NULL ? (long) io->inlen : 0;

    case BIO_CTRL_WPENDING:
        /* every write has left already */
        return 0;

    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
    case BIO_CTRL_DGRAM_SET_PEER:
    case BIO_CTRL_DGRAM_CONNECT:
    case BIO_CTRL_DGRAM_SET_CONNECTED:
        return 1;

    default:
        return 0;
    }
}


static long
hg_dtls_bio_peer(hg_dtls_io_t *io, BIO_ADDR *addr)
{
    int                         ok;
    const struct sockaddr_in   *sin;
    const struct sockaddr_in6  *sin6;

    if (io->peer == NULL || addr == NULL) {
        return 0;
    }

    switch (io->peer->sa_family) {

    case AF_INET:
        if (io->peerlen < (socklen_t) sizeof(struct sockaddr_in)) {
            return 0;
        }

        sin = (const struct sockaddr_in *) io->peer;
        ok = BIO_ADDR_rawmake(addr, AF_INET, &sin->sin_addr,
                              sizeof(sin->sin_addr), sin->sin_port);
        break;

    case AF_INET6:
        if (io->peerlen < (socklen_t) sizeof(struct sockaddr_in6)) {
            return 0;
        }

        sin6 = (const struct sockaddr_in6 *) io->peer;
        ok = BIO_ADDR_rawmake(addr, AF_INET6, &sin6->sin6_addr,
                              sizeof(sin6->sin6_addr), sin6->sin6_port);
        break;

    default:
        return 0;
    }

    return ok ? (long) io->peerlen : 0;
}


static int
hg_dtls_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}


static int
hg_dtls_bio_destroy(BIO *bio)
{
    BIO_set_data(bio, NULL);
    BIO_set_init(bio, 0);
    return 1;
}
