/*
 * The stateless DTLS listener: ClientHellos from peers with no session
 * are answered with a HelloVerifyRequest carrying an HMAC-SHA256 cookie
 * over the peer's address, through DTLSv1_listen on one listening SSL.
 * Nothing per peer exists until a ClientHello returns with a good cookie;
 * that SSL then becomes the new session's (hg_dtls_server_new) and the
 * listener makes itself a fresh one.
 *
 * The cookie secret rotates every HG_DTLS_SECRET_PERIOD; the previous
 * secret stays valid for one more period.
 */

#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include "hg.h"
#include "hg_dtls_int.h"


#define HG_DTLS_SECRET_LEN   32
#define HG_DTLS_COOKIE_LEN   32          /* HMAC-SHA256 */


struct hg_dtls_listener_s {
    SSL_CTX                *ctx;
    SSL                    *ssl;         /* answers ClientHellos */
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
        l->ssl = NULL;
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
    int         rc;
    ssize_t     n;
    hg_dtls_t  *d;

    /* the listening SSL holds the ClientHello: it becomes the session's */
    d = hg_dtls_server_new(l->ssl, l->record_mtu, l, dgram, len, peer,
                           peerlen, now, &rc);
    if (d == NULL) {
        return HG_ERR;
    }

    l->ssl = NULL;

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
    l->ssl = hg_dtls_ssl_new(l->ctx, &l->io);
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
    hg_dtls_io_t  *io;

    io = hg_dtls_bio_io(ssl);

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
