/*
 * DTLS 1.2 over OpenSSL with an in-memory datagram BIO: the engine hands
 * in one datagram's DTLS bytes (the prefix already stripped) and takes out
 * whole datagrams: one record each once established (hg_dtls_seal), one or
 * more records each during the handshake (hg_dtls_pending), never more
 * than record_mtu bytes.
 *
 * Handshake retransmission is ours, not OpenSSL's: OpenSSL 3.0's DTLS
 * timer reads the wall clock inside the library, which a sans-I/O engine
 * driven by the caller's clock (and a simulator's virtual clock) cannot
 * use. So OpenSSL's own timer is set far out of the way
 * (DTLS_set_timer_cb), the records of each flight OpenSSL writes are kept,
 * and this layer re-sends the kept flight when its own timer fires (RFC
 * 6347 4.2.4 backoff: initial 400 ms, doubling, at most 8 s) or when the
 * peer repeats a datagram it has already sent (the peer lost our flight).
 *
 * A server's timer re-sends a flight at most HG_DTLS_SERVER_RETRANSMITS
 * times: a peer that passed the cookie and went silent gets the flight
 * three times in all, and when the timer fires once more (2.8 s after the
 * flight first went) the handshake has failed. While a handshake waits on
 * its peer, OpenSSL's record buffers (33 KB) are released; OpenSSL makes
 * them again for the next record.
 *
 * Server: a stateless listener answers ClientHellos with a
 * HelloVerifyRequest carrying an HMAC-SHA256 cookie over the peer address
 * and a secret that rotates every 30 s (the previous secret stays valid
 * for one more period), via DTLSv1_listen; no per-peer state exists before
 * a valid cookie returns.
 */

#ifndef HG_DTLS_H
#define HG_DTLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "hg.h"


#define HG_DTLS_RTO_INITIAL   (400 * HG_MS)
#define HG_DTLS_RTO_MAX       (8 * HG_SEC)
#define HG_DTLS_SECRET_PERIOD (30 * HG_SEC)
#define HG_DTLS_SERVER_RETRANSMITS  2     /* timer re-sends of a flight */
#define HG_DTLS_MAX_RECORD    2048        /* buffer size for one record */

typedef struct hg_dtls_s          hg_dtls_t;
typedef struct hg_dtls_listener_s hg_dtls_listener_t;

/* record_mtu: the datagram budget minus the engine's prefix */
hg_dtls_listener_t *hg_dtls_listener_new(SSL_CTX *ctx, size_t record_mtu,
    const hg_callbacks_t *cb, hg_time_t now);
void hg_dtls_listener_free(hg_dtls_listener_t *l);

/*
 * A datagram from a peer with no connection. *replylen is reply's
 * capacity on entry (at most record_mtu of it is used) and the reply's
 * length on return (0: nothing to send):
 *   HG_AGAIN  *reply holds a HelloVerifyRequest for the peer (*replylen)
 *   HG_OK     the cookie is good: *out is a new server-side hg_dtls_t that
 *             has consumed the ClientHello; its flight is queued
 *   HG_ERR    dropped (not a ClientHello, bad cookie: counted by caller);
 *             when the cookie was good but the hello unacceptable (no
 *             shared cipher...) *reply may hold the fatal alert, worth
 *             sending so the peer learns why
 * *cookie_failed is set when the datagram carried a cookie that failed
 * (wrong address, or older than the previous secret period); such a
 * ClientHello is dropped, not answered with a fresh HelloVerifyRequest.
 *
 * The listener installs its cookie callbacks on ctx (OpenSSL keeps them
 * per SSL_CTX); several listeners may share one ctx.
 */
int hg_dtls_listen(hg_dtls_listener_t *l, const uint8_t *dgram, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now,
    uint8_t *reply, size_t *replylen, int *cookie_failed, hg_dtls_t **out);

/* client: starts the handshake (the ClientHello is queued) */
hg_dtls_t *hg_dtls_client_new(SSL_CTX *ctx, size_t record_mtu,
    const char *server_name, hg_time_t now);
void hg_dtls_free(hg_dtls_t *d);

/*
 * One datagram's DTLS bytes. Advances the handshake (queuing our next
 * flight) and hands every decrypted application record to on_app, in
 * order. Returns HG_OK, HG_ERR for a datagram dropped (undecryptable,
 * replayed, garbage: the connection goes on), or HG_ERR_STATE when the
 * session failed for good (hg_dtls_error says why: a fatal alert, a
 * verification failure, or the peer's close_notify). A handshake
 * datagram the peer repeats is answered by re-queuing our last flight
 * and returns HG_OK.
 */
typedef void (*hg_dtls_app_cb)(void *arg, const uint8_t *plain, size_t len);

int hg_dtls_recv(hg_dtls_t *d, const uint8_t *dgram, size_t len,
    hg_time_t now, hg_dtls_app_cb on_app, void *arg);

/*
 * Encrypt one application record into out (no prefix). Returns its length
 * (len + hg_dtls_overhead) or HG_ERR. Only once established.
 */
ssize_t hg_dtls_seal(hg_dtls_t *d, const uint8_t *plain, size_t len,
    uint8_t *out, size_t cap);

/* next handshake (or alert) datagram due; 0 when none, HG_ERR when it
 * does not fit in cap (it stays queued) */
ssize_t hg_dtls_pending(hg_dtls_t *d, uint8_t *out, size_t cap);

/*
 * When the flight retransmission timer fires (HG_TIME_INFINITE: idle),
 * and what it does then. hg_dtls_timeout returns HG_OK, or HG_ERR_STATE
 * when a server's peer stayed silent through every retransmission: the
 * session has failed (hg_dtls_error says so).
 */
hg_time_t hg_dtls_deadline(const hg_dtls_t *d);
int hg_dtls_timeout(hg_dtls_t *d, hg_time_t now);

int hg_dtls_established(const hg_dtls_t *d);
/* a fatal failure's reason (e.g. "certificate verify failed"), or NULL */
const char *hg_dtls_error(const hg_dtls_t *d);

/*
 * Bytes a record adds to its plaintext with the negotiated suite (header,
 * explicit nonce, tag); valid once established.
 */
size_t hg_dtls_overhead(const hg_dtls_t *d);

/* an application record arrived from the peer: our last flight is no
 * longer needed for retransmission */
void hg_dtls_peer_confirmed(hg_dtls_t *d);

/* the underlying SSL (for the peer certificate, cipher name, logging) */
SSL *hg_dtls_ssl(const hg_dtls_t *d);

/* handshake retransmissions so far (statistics, tests) */
uint64_t hg_dtls_retransmits(const hg_dtls_t *d);

#endif /* HG_DTLS_H */
