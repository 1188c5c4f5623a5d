/*
 * HopGate tunnel engine: the public contract between the engine and its two
 * shells (the nginx module and hopgate-agent).
 *
 * The engine does no I/O and reads no clock. The shell feeds it datagrams
 * and the current time, and pulls out datagrams to send, events, and the
 * next deadline. Randomness comes from a callback. Nothing is global: every
 * piece of state hangs off an hg_listener_t or an hg_conn_t.
 *
 * Time is a monotonic count of microseconds chosen by the shell.
 */

#ifndef HG_H
#define HG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include <openssl/ssl.h>


#define HG_VERSION_STRING         "0.1.0"

typedef uint64_t                  hg_time_t;
#define HG_TIME_INFINITE          UINT64_MAX
#define HG_MS                     1000ULL
#define HG_SEC                    1000000ULL

/* datagram budget: UDP payload bytes, prefix included */
#define HG_MTU_MIN                1200
#define HG_MTU_MAX                1452
#define HG_MTU_DEFAULT            1200

/* the cleartext datagram prefix, see docs/protocol.md */
#define HG_PREFIX_LEN             14      /* flags byte + connection id */
#define HG_PREFIX_VERSION         0x10    /* high nibble: version 1 */
#define HG_PREFIX_VERSION_MASK    0xf0
#define HG_PREFIX_FLAG_CID        0x01    /* bytes 1..13 are the session's id */
#define HG_PREFIX_FLAG_STEER      0x02    /* byte 1 is a worker index */
#define HG_PREFIX_FLAG_RESET      0x04    /* the edge has no session with
                                             this cid (no DTLS follows) */
#define HG_CID_LEN                13
#define HG_CID_RANDOM_MIN         8       /* random bytes in every id */
#define HG_RESET_TOKEN_LEN        16
#define HG_RESET_LEN              (HG_PREFIX_LEN + HG_RESET_TOKEN_LEN)

/* return codes */
#define HG_OK                     0
#define HG_ERR                    -1      /* the datagram or call was refused */
#define HG_AGAIN                  -2      /* nothing to do now */
#define HG_ERR_LIMIT              -3      /* a cap was hit (streams, buffers) */
#define HG_ERR_STATE              -4      /* not allowed in this state */
#define HG_ERR_NOMEM              -5

/* CLOSE / HELLO_ACK / GOAWAY error codes (wire values) */
typedef enum {
    HG_CODE_OK = 0,
    HG_CODE_NORMAL = 1,               /* orderly shutdown */
    HG_CODE_IDLE_TIMEOUT = 2,
    HG_CODE_PROTOCOL = 3,             /* peer broke the protocol */
    HG_CODE_INTERNAL = 4,
    HG_CODE_BAD_KEY = 10,             /* HELLO rejected: key does not match */
    HG_CODE_UNKNOWN_DOMAIN = 11,
    HG_CODE_DISABLED = 12,            /* domain disabled by the operator */
    HG_CODE_REGISTRY_DOWN = 13,       /* retry later */
    HG_CODE_DNS_GATE = 14,            /* domain does not resolve to the edge */
    HG_CODE_REVOKED = 15,             /* key rotated/domain removed: live */
    HG_CODE_BUSY = 16,                /* edge at its session limit */
    HG_CODE_DUPLICATE = 17,           /* this worker already has a session
                                         of this agent: dial again */
    HG_CODE_GOING_AWAY = 20,          /* reload/shutdown drain */
    HG_CODE_HANDSHAKE_TIMEOUT = 21,
    HG_CODE_TLS = 22,                 /* DTLS failure (certificate etc.) */
    HG_CODE_RESET = 23,               /* the edge lost the session (restart) */
    HG_CODE_CARRIER = 24              /* never sent: the agent's TCP carrier
                                         failed (connect, proxy, upgrade) */
} hg_code_t;

/* whether a rejection is final for the agent (exit 3, no retry loop) */
int hg_code_is_auth_failure(uint32_t code);
const char *hg_code_name(uint32_t code);

/* stream error codes carried by RESET_STREAM / STOP_SENDING */
#define HG_STREAM_ERR_CANCELLED   1
#define HG_STREAM_ERR_REFUSED     2   /* local target refused the connect */
#define HG_STREAM_ERR_RESET       3   /* local target reset the connection */
#define HG_STREAM_ERR_GOING_AWAY  4


typedef enum {
    HG_ROLE_CLIENT = 0,               /* the agent */
    HG_ROLE_SERVER = 1                /* the edge (nginx) */
} hg_role_t;


typedef struct {
    /* randomness: fill buf with len unpredictable bytes; 0 on success */
    int       (*random)(void *ctx, uint8_t *buf, size_t len);
    /* optional log sink; level is one of HG_LOG_* */
    void      (*log)(void *ctx, int level, const char *msg);
    /*
     * server, optional: 1 when a freshly drawn connection id is already
     * in use by the shell's sessions (the listener then draws again)
     */
    int       (*cid_taken)(void *ctx, const uint8_t *cid);
    void       *ctx;
} hg_callbacks_t;

#define HG_LOG_ERR    0
#define HG_LOG_WARN   1
#define HG_LOG_INFO   2
#define HG_LOG_DEBUG  3


typedef struct {
    size_t      mtu;                  /* UDP payload budget, prefix included */
    hg_time_t   idle_timeout;         /* no packet from peer: close */
    hg_time_t   keepalive;            /* send PING after this much quiet */
    hg_time_t   handshake_timeout;    /* DTLS + HELLO must finish by then */
    uint32_t    max_streams;          /* concurrent streams the peer may open */
    uint64_t    stream_window;        /* per-stream receive window, bytes */
    uint64_t    conn_window;          /* connection receive window, bytes */
    uint64_t    stream_send_buffer;   /* per-stream unacked send bytes cap */
    uint64_t    max_out_of_order;     /* reassembly bytes cap, whole conn */
    uint32_t    max_ack_ranges;       /* ranges accepted in one ACK frame */
    uint32_t    max_frames;           /* frames accepted in one packet */
    hg_time_t   max_ack_delay;        /* delayed-ack timer */
    const char *congestion;           /* "newreno" */
    hg_callbacks_t  cb;
} hg_config_t;

/* fills defaults: 1200 mtu, 60 s idle, 15 s keepalive, 10 s handshake, ... */
void hg_config_defaults(hg_config_t *cfg);
/* NULL when valid, else a static text naming the bad field */
const char *hg_config_check(const hg_config_t *cfg);


/* ---- TLS contexts ---------------------------------------------------- */

/*
 * Server context: certificate chain and key in PEM files. Returns NULL and
 * fills err (a short sentence) on failure.
 */
SSL_CTX *hg_tls_server_ctx(const char *cert_file, const char *key_file,
    char *err, size_t errlen);

typedef struct {
    const char *ca_file;              /* verify against this CA bundle */
    const char *pin_sha256;           /* or: hex/base64 SHA-256 of the SPKI */
    const char *server_name;          /* with a CA: the host name or IP
                                         address the certificate must
                                         carry; NULL: none */
    int         insecure;             /* explicit: skip verification */
    int         stream;               /* TLS 1.2+ over TCP for the stream
                                         carrier (ALPN http/1.1), not
                                         DTLS 1.2 */
} hg_tls_client_opts_t;

SSL_CTX *hg_tls_client_ctx(const hg_tls_client_opts_t *opts,
    char *err, size_t errlen);

/* SHA-256 of the certificate's SubjectPublicKeyInfo as 64 hex chars */
int hg_tls_spki_sha256_hex(X509 *cert, char out[65]);


/* ---- the datagram prefix ----------------------------------------------- */

typedef struct {
    uint8_t   flags;
    uint8_t   cid[HG_CID_LEN];        /* valid with HG_PREFIX_FLAG_CID */
    uint8_t   steer;                  /* worker index, with FLAG_STEER */
} hg_prefix_t;

/* HG_OK, or HG_ERR for a datagram that is not ours (too short, version) */
int hg_prefix_parse(const uint8_t *dgram, size_t len, hg_prefix_t *p);
/* the worker index encoded in a connection id */
uint8_t hg_cid_worker(const uint8_t cid[HG_CID_LEN]);

/*
 * The stateless reset token of a connection id: HMAC-SHA256 under a key
 * only the edge holds, truncated. The edge gives each session its token
 * in HELLO_ACK (encrypted); a reset carrying it proves it came from an
 * edge holding the key. Returns HG_OK or HG_ERR.
 */
int hg_reset_token(const uint8_t key[32], const uint8_t cid[HG_CID_LEN],
    uint8_t token[HG_RESET_TOKEN_LEN]);


/* ---- server side: the stateless listener --------------------------------- */

typedef struct hg_listener_s hg_listener_t;
typedef struct hg_conn_s     hg_conn_t;

/*
 * One listener per worker socket. Every connection id it creates starts
 * with cid_prefix (the worker index first, so reuseport steering can read
 * it; then whatever else the shell needs to find the owner, at most
 * HG_CID_LEN - HG_CID_RANDOM_MIN bytes) and ends with random bytes; an id
 * cfg->cb.cid_taken reports in use is drawn again. The SSL_CTX is
 * borrowed; the stateless reset key is derived from its private key, so
 * that every worker, every restart and every edge sharing the key makes
 * the same tokens.
 */
hg_listener_t *hg_listener_new(const hg_config_t *cfg, SSL_CTX *ctx,
    const uint8_t *cid_prefix, size_t prefix_len, hg_time_t now);
void hg_listener_free(hg_listener_t *l);

/*
 * A stateless reset for a datagram of trigger_len bytes whose connection
 * id the edge does not know (it restarted, or the session ended): the
 * prefix with FLAG_RESET and the id's token, HG_RESET_LEN bytes, no DTLS.
 * Returns its length, or 0 when the trigger is not longer than the reset
 * (a reset never amplifies).
 */
size_t hg_listener_reset(const hg_listener_t *l,
    const uint8_t cid[HG_CID_LEN], size_t trigger_len, uint8_t *out);

/*
 * A datagram that matched no connection (by id or by address). Either
 * answers statelessly (a HelloVerifyRequest in *reply, HG_AGAIN), drops it
 * (HG_ERR), or creates a connection (HG_OK, *conn set) that has already
 * consumed the datagram; the shell then calls hg_conn_send on it.
 * Cookie secrets rotate with time (now).
 */
int hg_listener_accept(hg_listener_t *l, const uint8_t *dgram, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now,
    uint8_t *reply, size_t *replylen, hg_conn_t **conn);

typedef struct {
    uint64_t  datagrams;
    uint64_t  malformed;              /* not ours / unparsable */
    uint64_t  cookies_sent;
    uint64_t  cookie_failures;        /* bad or stale cookie */
    uint64_t  accepted;
    uint64_t  cid_collisions;         /* ids drawn again: already in use */
} hg_listener_stats_t;

const hg_listener_stats_t *hg_listener_stats(const hg_listener_t *l);


/* ---- client side ---------------------------------------------------------- */

typedef struct {
    const char *domain;
    const char *api_key;
    const char *agent_version;
    const char *agent_id;
    int         worker_hint;          /* -1: none */
} hg_hello_t;

/* the longest domain and API key HELLO carries; longer ones are refused */
#define HG_HELLO_TEXT_MAX  255

/*
 * Starts the DTLS handshake; HELLO is sent when it completes. NULL for a
 * domain or key longer than HG_HELLO_TEXT_MAX (or out of memory). server_name
 * (may be NULL) is sent as SNI and, with CA verification, must match the
 * edge's certificate.
 */
hg_conn_t *hg_conn_client_new(const hg_config_t *cfg, SSL_CTX *ctx,
    const char *server_name, const hg_hello_t *hello,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now);


/* ---- the stream carrier --------------------------------------------------- */

/*
 * Where UDP is blocked the same connection rides a reliable byte stream
 * that the shell has secured itself (TLS over TCP, after an HTTP Upgrade;
 * see docs/protocol.md): no DTLS, no datagram prefix, and each packet
 * goes whole, after a 2-byte big-endian length of at most
 * HG_STREAM_PACKET_MAX. The byte stream delivers and paces, so loss
 * recovery, probe timeouts and congestion control stay idle: a packet
 * counts as delivered once hg_conn_send_bytes has handed it over. The
 * rest is the same: HELLO and HELLO_ACK, streams, flow control, GOAWAY,
 * CLOSE, keepalive PINGs and the idle timeout, and the same events (a
 * stream-carried connection raises HG_EV_HANDSHAKE_DONE when created).
 *
 * The carrier is chosen when a connection is made and never changes;
 * hg_conn_recv and hg_conn_send refuse a stream-carried connection, and
 * hg_conn_recv_bytes and hg_conn_send_bytes a datagram one.
 */

typedef enum {
    HG_CARRIER_DATAGRAM = 0,          /* DTLS over UDP */
    HG_CARRIER_STREAM = 1             /* length-prefixed, TLS outside */
} hg_carrier_t;

#define HG_STREAM_PACKET_MAX      16384   /* packet bytes after the length */
#define HG_STREAM_LENGTH_LEN      2

/*
 * Client: HELLO is queued at once. NULL for a domain or key longer than
 * HG_HELLO_TEXT_MAX (or out of memory). hello->worker_hint is only sent
 * in HELLO: the worker the agent would like, since a stream lands on
 * whichever worker accepted it.
 */
hg_conn_t *hg_conn_stream_client_new(const hg_config_t *cfg,
    const hg_hello_t *hello, hg_time_t now);

/*
 * Server: a connection for a byte stream from peer (kept for
 * hg_conn_peer). Its id starts with cid_prefix, as a listener's would
 * (cfg->cb.cid_taken is asked), so that the shell can keep every session
 * in one table; it waits for HELLO.
 */
hg_conn_t *hg_conn_stream_server_new(const hg_config_t *cfg,
    const uint8_t *cid_prefix, size_t prefix_len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now);

/*
 * Bytes read from the carrier, any amount (a packet may be split across
 * calls); all of them are taken. HG_OK, or HG_ERR when they broke the
 * protocol (a length of 0 or over HG_STREAM_PACKET_MAX, a packet that
 * does not decode, a frame out of place): the connection is then
 * closing, and the shell sends what hg_conn_send_bytes still gives (the
 * CLOSE) and closes the carrier. Bytes after a CLOSE are ignored.
 */
int hg_conn_recv_bytes(hg_conn_t *c, const uint8_t *buf, size_t len,
    hg_time_t now);

/*
 * Fills out with whole length-prefixed packets, at most cap bytes (cap
 * >= 512; more room makes larger packets, up to HG_STREAM_PACKET_MAX).
 * Returns the bytes written, 0 when nothing is due, or HG_ERR. The shell
 * writes them all, in order, before the next call's; holding a bounded
 * buffer and calling only when it has room is the backpressure: while it
 * does not call, streams' send buffers fill and hg_stream_write says 0.
 * After the CLOSE (hg_conn_is_closed), nothing more comes.
 */
ssize_t hg_conn_send_bytes(hg_conn_t *c, uint8_t *out, size_t cap,
    hg_time_t now);

hg_carrier_t hg_conn_carrier(const hg_conn_t *c);


/* ---- a connection (both roles) -------------------------------------------- */

void hg_conn_free(hg_conn_t *c);

/* feed one datagram received from `from`; HG_OK or HG_ERR (dropped) */
int hg_conn_recv(hg_conn_t *c, const uint8_t *dgram, size_t len,
    const struct sockaddr *from, socklen_t fromlen, hg_time_t now);

/*
 * Next datagram to send, at most cap bytes (cap >= mtu). Returns its length,
 * 0 when nothing is due now (see hg_conn_deadline), or HG_ERR.
 */
ssize_t hg_conn_send(hg_conn_t *c, uint8_t *out, size_t cap, hg_time_t now);

/*
 * Server: the next datagram for an address other than hg_conn_peer, that
 * address in *to (valid until the next engine call): after the agent's
 * packets came from a new address, one PATH_CHALLENGE to the address
 * last validated, so that an agent still there answers even with nothing
 * to send (the move may be a forwarded copy; RFC 9000 9.3.2). Its length,
 * 0 when none is due, or HG_ERR. Call it until 0 before hg_conn_send.
 */
ssize_t hg_conn_send_probe(hg_conn_t *c, uint8_t *out, size_t cap,
    hg_time_t now, const struct sockaddr **to, socklen_t *tolen);

/* the earliest time hg_conn_timeout must be called (HG_TIME_INFINITE) */
hg_time_t hg_conn_deadline(const hg_conn_t *c);
void hg_conn_timeout(hg_conn_t *c, hg_time_t now);

/*
 * The address datagrams go to. The server moves it when the agent's
 * packets come from a new address (provisionally, see
 * HG_EV_PEER_MIGRATED), the client never.
 */
const struct sockaddr *hg_conn_peer(const hg_conn_t *c, socklen_t *len);
/*
 * The connection id: the server's from the start; the client's once
 * HELLO_ACK (authenticated) gave it, NULL before. The cleartext prefix
 * never sets it.
 */
const uint8_t *hg_conn_cid(const hg_conn_t *c);

typedef enum {
    HG_EV_NONE = 0,
    HG_EV_HANDSHAKE_DONE,     /* DTLS is up */
    HG_EV_HELLO,              /* server: decide with accept/reject */
    HG_EV_READY,              /* client: HELLO_ACK accepted us */
    HG_EV_REJECTED,           /* client: HELLO_ACK refused us (code, text) */
    HG_EV_STREAM_OPENED,      /* peer opened stream_id (meta valid) */
    HG_EV_STREAM_READABLE,    /* data or FIN to read on stream_id */
    HG_EV_STREAM_WRITABLE,    /* send buffer space freed on stream_id */
    HG_EV_STREAM_RESET,       /* peer reset its sending side (code) */
    HG_EV_STREAM_STOP,        /* peer asked us to stop sending (code) */
    HG_EV_STREAM_CLOSED,      /* both directions done; the id stays valid
                                 until the next hg_conn_next_event call */
    HG_EV_STREAMS_AVAILABLE,  /* peer raised our stream limit */
    HG_EV_GOAWAY,             /* peer will accept no new streams */
    HG_EV_PEER_MIGRATED,      /* server: the address datagrams go to
                                 (hg_conn_peer) changed; re-index the
                                 session by it. Raised when the agent's
                                 packets come from a new address (sent to
                                 within the anti-amplification limit until
                                 validated), and when the session goes
                                 back to the last validated address (no
                                 validation in time, or the move was a
                                 forwarded copy) */
    HG_EV_CLOSED              /* connection over (code, text); free it */
} hg_event_type_t;

typedef struct {
    char      client_addr[64];
    char      scheme[16];
    char      host[256];
    char      request_id[64];
} hg_stream_meta_t;

typedef struct {
    hg_event_type_t    type;
    int64_t            stream_id;
    uint32_t           code;
    const char        *text;          /* valid until the next engine call */
    const hg_stream_meta_t *meta;     /* STREAM_OPENED */
    const hg_hello_t  *hello;         /* HELLO */
    uint32_t           worker_index;  /* READY */
    uint32_t           worker_count;  /* READY */
    uint64_t           session_id;    /* READY */
} hg_event_t;

/*
 * HG_OK with *ev filled, or HG_AGAIN when the queue is empty. Events come
 * in the order they happened. One that is already waiting is not queued
 * twice (a second STREAM_READABLE merges into the first; read until
 * HG_AGAIN), and a stream raises nothing after STREAM_CLOSED. The queue
 * cannot overflow: no event is ever dropped.
 */
int hg_conn_next_event(hg_conn_t *c, hg_event_t *ev);

/* server: answer HG_EV_HELLO (may be called later, asynchronously) */
int hg_conn_accept(hg_conn_t *c, uint64_t session_id, uint32_t worker_index,
    uint32_t worker_count, const char *const *edges, size_t nedges);
int hg_conn_reject(hg_conn_t *c, uint32_t code, const char *text);
/* server: wipe the HELLO's key text (hello->api_key becomes "") */
void hg_conn_forget_key(hg_conn_t *c);

/*
 * GOAWAY: the peer may open no new stream; open ones finish. We may still
 * open streams (the edge, for requests its worker already holds). The
 * agent's session sends CLOSE when its last stream ends; the edge's stays
 * until hg_conn_close (its shell knows when no request can come).
 */
int hg_conn_goaway(hg_conn_t *c, uint32_t code, const char *reason);
/* immediate CLOSE (sent once, then the connection drains briefly) */
int hg_conn_close(hg_conn_t *c, uint32_t code, const char *reason);

int hg_conn_is_ready(const hg_conn_t *c);     /* HELLO accepted */
/* send a PING now (e.g. to check a session that may be stale) */
void hg_conn_ping(hg_conn_t *c);
/* 0 while probe timeouts run unanswered: the peer may be gone */
int hg_conn_is_responsive(const hg_conn_t *c);
int hg_conn_is_closed(const hg_conn_t *c);
size_t hg_conn_open_streams(const hg_conn_t *c);
/* true when the peer's limit and GOAWAY state let us open a stream */
int hg_conn_can_open_stream(const hg_conn_t *c);


/* ---- streams ------------------------------------------------------------- */

/*
 * Opens a bidirectional stream; returns its id, HG_ERR_LIMIT/STATE, or
 * HG_ERR_NOMEM (nothing was opened: the room for its events is reserved
 * here, so that no event is ever lost later).
 */
int64_t hg_stream_open(hg_conn_t *c, const hg_stream_meta_t *meta);

/*
 * Queue up to len bytes; returns bytes accepted (0 when the send buffer is
 * full: wait for HG_EV_STREAM_WRITABLE) or an HG_ERR_* code.
 */
ssize_t hg_stream_write(hg_conn_t *c, int64_t id, const uint8_t *buf,
    size_t len);
/*
 * Bytes hg_stream_write would accept now. A 0 here, like a short write,
 * arms HG_EV_STREAM_WRITABLE for when room frees up.
 */
size_t hg_stream_writable(hg_conn_t *c, int64_t id);
/* no more data from us (FIN after the queued bytes) */
int hg_stream_shutdown(hg_conn_t *c, int64_t id);

/*
 * Read in-order bytes; returns bytes read, 0 with *fin set at the end of
 * the stream, HG_AGAIN when nothing is readable yet, or an HG_ERR_* code.
 * Reading grants the peer more flow-control credit.
 */
ssize_t hg_stream_read(hg_conn_t *c, int64_t id, uint8_t *buf, size_t len,
    int *fin);

/* abort both directions with an error code (RESET_STREAM + STOP_SENDING) */
int hg_stream_reset(hg_conn_t *c, int64_t id, uint64_t code);

/* shell-owned pointer attached to a stream */
int hg_stream_set_user(hg_conn_t *c, int64_t id, void *user);
void *hg_stream_user(const hg_conn_t *c, int64_t id);


/* ---- connection statistics ---------------------------------------------- */

typedef struct {
    hg_time_t  srtt;
    hg_time_t  min_rtt;
    hg_time_t  rttvar;
    hg_time_t  latest_rtt;
    uint64_t   cwnd;                  /* bytes */
    uint64_t   bytes_in_flight;
    uint64_t   packets_sent;
    uint64_t   packets_received;
    uint64_t   packets_lost;
    uint64_t   packets_retransmitted; /* packets carrying re-queued frames */
    uint64_t   bytes_sent;            /* UDP payload bytes */
    uint64_t   bytes_received;
    uint64_t   stream_bytes_sent;     /* application bytes, first sends */
    uint64_t   stream_bytes_received; /* application bytes delivered */
    uint64_t   malformed;             /* datagrams dropped as invalid */
    uint64_t   streams_opened;
    uint64_t   pto_count;
    uint64_t   congestion_events;
    uint64_t   paths_validated;       /* server: new peer addresses proven */
    uint64_t   path_failures;         /* server: moves given up (no echo) */
} hg_conn_stats_t;

void hg_conn_get_stats(const hg_conn_t *c, hg_conn_stats_t *st);

#endif /* HG_H */
