/*
 * The datagram BIO behind every DTLS SSL of the engine. OpenSSL 3.0 has
 * no in-memory datagram BIO (a memory BIO would merge datagrams), so every
 * BIO_write OpenSSL makes becomes exactly one outgoing datagram, handed to
 * io->write, and each datagram fed in (io->in) is exactly one BIO_read.
 * During a handshake OpenSSL packs several records into one write, up to
 * the link MTU we give it.
 *
 * The BIO_METHOD is made once per process and shared by every SSL.
 */

#include <string.h>
#include <netinet/in.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "hg.h"
#include "hg_dtls_int.h"


#define HG_DTLS_BIO_TYPE     (0xe1 | BIO_TYPE_SOURCE_SINK)

/* OpenSSL's own retransmission timer, parked out of the way (1 hour) */
#define HG_DTLS_OPENSSL_TIMER_US  3600000000U


static unsigned int hg_dtls_timer_cb(SSL *ssl, unsigned int timer_us);
static BIO_METHOD *hg_dtls_bio_method(void);
static void hg_dtls_bio_method_init(void);
static int hg_dtls_bio_write(BIO *bio, const char *buf, int len);
static int hg_dtls_bio_read(BIO *bio, char *buf, int size);
static long hg_dtls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr);
static long hg_dtls_bio_peer(hg_dtls_io_t *io, BIO_ADDR *addr);
static int hg_dtls_bio_create(BIO *bio);
static int hg_dtls_bio_destroy(BIO *bio);


static CRYPTO_ONCE   hg_dtls_bio_once = CRYPTO_ONCE_STATIC_INIT;
static BIO_METHOD   *hg_dtls_bio_meth;


SSL *
hg_dtls_ssl_new(SSL_CTX *ctx, hg_dtls_io_t *io)
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

    return ssl;

failed:

    ERR_clear_error();
    SSL_free(ssl);
    return NULL;
}


void
hg_dtls_bio_set_io(SSL *ssl, hg_dtls_io_t *io)
{
    BIO_set_data(SSL_get_rbio(ssl), io);
}


hg_dtls_io_t *
hg_dtls_bio_io(SSL *ssl)
{
    BIO  *bio;

    bio = SSL_get_rbio(ssl);
    if (bio == NULL || BIO_method_type(bio) != HG_DTLS_BIO_TYPE) {
        return NULL;
    }

    return BIO_get_data(bio);
}


/* a datagram is one or more whole DTLS records, nothing else */
int
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


/* one method for every SSL: an SSL only points at it, never owns it */
static BIO_METHOD *
hg_dtls_bio_method(void)
{
    if (!CRYPTO_THREAD_run_once(&hg_dtls_bio_once, hg_dtls_bio_method_init))
    {
        return NULL;
    }

    return hg_dtls_bio_meth;
}


static void
hg_dtls_bio_method_init(void)
{
    BIO_METHOD  *m;

    m = BIO_meth_new(HG_DTLS_BIO_TYPE, "hopgate datagram");
    if (m == NULL) {
        return;
    }

    if (!BIO_meth_set_write(m, hg_dtls_bio_write)
        || !BIO_meth_set_read(m, hg_dtls_bio_read)
        || !BIO_meth_set_ctrl(m, hg_dtls_bio_ctrl)
        || !BIO_meth_set_create(m, hg_dtls_bio_create)
        || !BIO_meth_set_destroy(m, hg_dtls_bio_destroy))
    {
        BIO_meth_free(m);
        return;
    }

    hg_dtls_bio_meth = m;
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
