/*
 * A DTLS 1.2 session of the engine: handshake steps, record I/O, and
 * handshake retransmission driven by the caller's clock. See hg_dtls.h
 * for the shape of it; the datagram BIO is hg_dtls_bio.c, the cookie
 * listener hg_dtls_listener.c.
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

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hg.h"
#include "hg_dtls_int.h"


#define HG_DTLS_SEEN         16          /* peer datagrams remembered */


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


typedef struct {
    uint64_t                digest;
    uint32_t                flight;      /* our flights when it arrived */
} hg_dtls_seen_t;


struct hg_dtls_s {
    SSL                    *ssl;
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
    unsigned                timer_resends; /* of the current flight */

    hg_dtls_seen_t          seen[HG_DTLS_SEEN];
    unsigned                nseen;

    uint8_t                *seal;        /* hg_dtls_seal's buffer */
    size_t                  seal_cap;
    size_t                  sealed;

    int                     alert;       /* fatal alert received, or -1 */

    unsigned                server:1;
    unsigned                stepping:1;
    unsigned                step_wrote:1;
    unsigned                established:1;
    unsigned                failed:1;
    unsigned                confirmed:1;
    unsigned                settled:1;   /* see hg_dtls_read_done */

    char                    error[160];
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

static int hg_dtls_queue_push(hg_dtls_queue_t *q, const uint8_t *buf,
    size_t len);
static void hg_dtls_queue_clear(hg_dtls_queue_t *q);


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

    d->ssl = hg_dtls_ssl_new(ctx, &d->io);
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


hg_dtls_t *
hg_dtls_server_new(SSL *ssl, size_t record_mtu, hg_dtls_listener_t *l,
    const uint8_t *hello, size_t len, const struct sockaddr *peer,
    socklen_t peerlen, hg_time_t now, int *rc)
{
    uint64_t    digest;
    hg_dtls_t  *d;

    d = hg_dtls_alloc(record_mtu);
    if (d == NULL) {
        return NULL;
    }

    d->ssl = ssl;
    d->server = 1;
    hg_dtls_attach(d);

    /* a repeat of this ClientHello means our first flight was lost */
    if (hg_dtls_digest(hello, len, &digest) == HG_OK) {
        hg_dtls_seen_add(d, digest);
    }

    /* OpenSSL checks the cookie once more while processing the hello */
    d->io.listener = l;
    d->io.peer = peer;
    d->io.peerlen = peerlen;

    *rc = hg_dtls_step(d, now);

    d->io.listener = NULL;
    d->io.peer = NULL;

    return d;
}


void
hg_dtls_free(hg_dtls_t *d)
{
    if (d == NULL) {
        return;
    }

    SSL_free(d->ssl);

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

    /* the peer is not silent: our timer may try again in full */
    d->timer_resends = 0;

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


int
hg_dtls_timeout(hg_dtls_t *d, hg_time_t now)
{
    char  reason[64];

    if (d->failed) {
        return HG_ERR_STATE;
    }

    if (d->deadline == HG_TIME_INFINITE || now < d->deadline) {
        return HG_OK;
    }

    if (d->established || d->flight.head == NULL) {
        d->deadline = HG_TIME_INFINITE;
        return HG_OK;
    }

    /*
     * A server's flight goes to a peer that proved only that it can
     * receive at its address: one that then falls silent must not earn
     * a flight every backoff period until the handshake timeout.
     */
    if (d->server && d->timer_resends >= HG_DTLS_SERVER_RETRANSMITS) {
        snprintf(reason, sizeof(reason), "peer silent after %u copies of "
                 "the flight", d->timer_resends + 1);
        hg_dtls_fail(d, reason);
        hg_dtls_queue_clear(&d->out);
        return HG_ERR_STATE;
    }

    d->timer_resends++;
    hg_dtls_resend(d, now);

    /* RFC 6347 4.2.4.1: double the timer, up to a cap */
    d->rto *= 2;
    if (d->rto > HG_DTLS_RTO_MAX) {
        d->rto = HG_DTLS_RTO_MAX;
    }

    d->deadline = now + d->rto;

    return HG_OK;
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
    hg_dtls_bio_set_io(d->ssl, &d->io);
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

    /*
     * Waiting on the peer, the record buffers are idle (16 KB each way):
     * a half-open handshake need not hold them. OpenSSL refuses while
     * they hold data and makes them again for the next record.
     */
    if (!d->established) {
        (void) SSL_free_buffers(d->ssl);
    }

    if (d->step_wrote) {
        d->timer_resends = 0;
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
