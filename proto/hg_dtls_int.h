/*
 * DTLS internals shared by the files that implement hg_dtls.h:
 *
 *   hg_dtls.c           a session: handshake steps, flights and their
 *                       retransmission, record I/O
 *   hg_dtls_listener.c  the stateless cookie listener (DTLSv1_listen)
 *   hg_dtls_bio.c       the datagram BIO OpenSSL reads and writes through
 *
 * Nothing here is part of the engine's contract.
 */

#ifndef HG_DTLS_INT_H
#define HG_DTLS_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "hg.h"
#include "hg_dtls.h"


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


/*
 * A DTLS SSL on ctx whose BIO reads and writes through io, with the link
 * MTU io->mtu and OpenSSL's own retransmission timer parked. NULL when
 * out of memory.
 */
SSL *hg_dtls_ssl_new(SSL_CTX *ctx, hg_dtls_io_t *io);

/* point ssl's BIO at another io (the SSL changed owner) */
void hg_dtls_bio_set_io(SSL *ssl, hg_dtls_io_t *io);

/* the io behind ssl's BIO, or NULL when the BIO is not ours */
hg_dtls_io_t *hg_dtls_bio_io(SSL *ssl);

/*
 * A datagram is one or more whole DTLS records and nothing else; each
 * protected record (epoch above 0) carries at least min_protected bytes.
 * HG_OK or HG_ERR.
 */
int hg_dtls_check_records(const uint8_t *p, size_t len,
    size_t min_protected);

/*
 * The listener's SSL, holding a ClientHello (hello, len) whose cookie was
 * good, becomes a server session that processes it and queues its first
 * flight. Returns NULL when out of memory (ssl stays the caller's);
 * otherwise ssl is the session's and *rc is HG_OK, or HG_ERR_STATE when
 * the hello was refused (the session then holds the alert for the peer,
 * and is the caller's to free). l is needed while OpenSSL checks the
 * cookie once more.
 */
hg_dtls_t *hg_dtls_server_new(SSL *ssl, size_t record_mtu,
    hg_dtls_listener_t *l, const uint8_t *hello, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now, int *rc);

#endif /* HG_DTLS_INT_H */
