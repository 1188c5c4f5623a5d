/*
 * Shared by the datagram fuzz target (fuzz_datagram.c) and its seed
 * corpus writer (fuzz_corpus.c): the input format, and one established
 * edge/agent session driven in memory on a virtual clock.
 *
 * An input is a script of operations, each
 *
 *     kind:1  length:2 (big endian)  data:length
 *
 * (a length past the end of the input takes what is left). The kinds:
 *
 *   ACCEPT        data is a datagram for the stateless listener: prefix
 *                 parsing, the DTLS ClientHello and cookie checks, and
 *                 for a returning hello with a good cookie a connection
 *   RAW           data is a datagram for the session's edge, as it is
 *   PREFIXED      data follows a valid prefix with the session's id, so
 *                 it reaches the DTLS record layer
 *   SEALED        data is a Packet's plaintext, sealed with the agent's
 *                 DTLS keys, so it reaches the protobuf and frame decoders
 *   SEALED_MOVED  the same from another address (a rebinding)
 *   TICK          data (at most 4 bytes, big endian) moves the clock on
 *                 by that many microseconds
 *   APP           data[0] picks an application call on the edge, data[1]
 *                 a stream, data[2..3] an amount (hg_fuzz_app_t)
 */

#ifndef HG_FUZZ_H
#define HG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "hg_conn.h"


typedef enum {
    HG_FUZZ_ACCEPT = 0,
    HG_FUZZ_RAW,
    HG_FUZZ_PREFIXED,
    HG_FUZZ_SEALED,
    HG_FUZZ_SEALED_MOVED,
    HG_FUZZ_TICK,
    HG_FUZZ_APP,
    HG_FUZZ_NOPS
} hg_fuzz_op_t;

typedef enum {
    HG_FUZZ_APP_OPEN = 0,
    HG_FUZZ_APP_WRITE,
    HG_FUZZ_APP_SHUTDOWN,
    HG_FUZZ_APP_READ,
    HG_FUZZ_APP_RESET,
    HG_FUZZ_APP_GOAWAY,
    HG_FUZZ_APP_CLOSE,
    HG_FUZZ_APP_QUERY,
    HG_FUZZ_APP_N
} hg_fuzz_app_t;

#define HG_FUZZ_OP_HEADER     3
#define HG_FUZZ_T0            (1000 * HG_SEC)
#define HG_FUZZ_STEP          HG_MS       /* the clock's move per operation */
#define HG_FUZZ_STREAMS       16
#define HG_FUZZ_SESSION_SEED  0x5eed5eed5eed5eedULL
#define HG_FUZZ_FRONT_SEED    0xf407f407f407f407ULL


typedef struct {
    hg_config_t          cfg;
    uint64_t             rng;             /* every engine random byte */
    hg_conn_t           *edge;
    hg_conn_t           *agent;
    hg_time_t            now;
    struct sockaddr_in   edge_addr;
    struct sockaddr_in   agent_addr;
    struct sockaddr_in   moved_addr;
    int64_t              streams[HG_FUZZ_STREAMS];   /* ids the edge knows */
    size_t               nstreams;
    size_t               touched;         /* event strings read (for ASan) */
    uint8_t              dgram[HG_MTU_MAX + 64];
} hg_fuzz_session_t;

/* called with each datagram the agent sends instead of delivering it */
typedef void (*hg_fuzz_capture_pt)(void *arg, const uint8_t *dgram,
    size_t len);


/* TLS contexts from fresh test certificates (the files are removed) */
int hg_fuzz_tls(SSL_CTX **server_ctx, SSL_CTX **client_ctx);

/* engine config whose random callback draws from *rng */
void hg_fuzz_config(hg_config_t *cfg, uint64_t *rng);

/* the listener ACCEPT operations go to: a fixed seed, a fixed clock */
hg_listener_t *hg_fuzz_front_new(SSL_CTX *server_ctx, uint64_t *rng);

/* endpoint n is 10.0.0.n:4000+n */
void hg_fuzz_addr(struct sockaddr_in *sin, int n);

/* a DTLS handshake and an accepted HELLO; 0 when both ends are ready */
int hg_fuzz_session_open(hg_fuzz_session_t *s, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx);
void hg_fuzz_session_close(hg_fuzz_session_t *s);

/*
 * The edge takes its events, runs due timers and sends; to_agent
 * delivers what it sends, otherwise it is dropped.
 */
void hg_fuzz_pump(hg_fuzz_session_t *s, int to_agent);

/* the agent sends: to capture, or else to the edge */
void hg_fuzz_agent_flush(hg_fuzz_session_t *s, hg_fuzz_capture_pt capture,
    void *arg);

/*
 * A datagram to the edge carrying plain as one application record from
 * the agent; its length, or 0 when it cannot be made.
 */
size_t hg_fuzz_seal(hg_fuzz_session_t *s, const uint8_t *plain, size_t len,
    uint8_t *out, size_t cap);

/* the largest plaintext hg_fuzz_seal takes */
size_t hg_fuzz_seal_room(const hg_fuzz_session_t *s);

/* the edge's application, as an APP operation */
void hg_fuzz_app(hg_fuzz_session_t *s, const uint8_t *data, size_t len);

/* writes the seed corpus into dir; 0 on success */
int hg_fuzz_corpus_write(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx, hg_listener_t *front);

#endif /* HG_FUZZ_H */
