/*
 * libFuzzer target for the edge's datagram input: the stateless listener
 * (hg_listener_accept) and an established connection (hg_conn_recv), down
 * to the protobuf frame decoder behind DTLS; then the edge's reactions
 * (events, timers, hg_conn_send). The input format is in fuzz.h.
 *
 * Every input gets a session of its own, built with a real handshake,
 * and a listener of its own, both freed at the end: a crash replays
 * exactly (the engine sees a function of the input alone; OpenSSL's own
 * randomness changes ciphertexts, not what the engine is given), and an
 * input frees what it allocates, so libFuzzer runs its leak check only
 * when something really leaked (a session kept across inputs made it scan
 * the heap after nearly every one, nine tenths of the time).
 *
 * Beyond what the sanitizers catch, a datagram that does not carry the
 * session's keys must not end the session (hg_fuzz_recv), and every
 * sealed plaintext is read alike by the engine's packet decoder and by
 * protobuf-c's (hg_codec_diff).
 *
 * HG_FUZZ_CORPUS=dir writes the seed corpus into dir and exits;
 * HG_FUZZ_LOG=1 prints the engine's log.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_diff.h"
#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void hg_fuzz_op(hg_fuzz_session_t *s, unsigned kind,
    const uint8_t *data, size_t len);
static void hg_fuzz_accept(const uint8_t *dgram, size_t len);
static void hg_fuzz_recv(hg_fuzz_session_t *s, const uint8_t *dgram,
    size_t len, const struct sockaddr_in *from, int authentic);
static void hg_fuzz_prefixed(hg_fuzz_session_t *s, const uint8_t *records,
    size_t len);
static void hg_fuzz_sealed(hg_fuzz_session_t *s, const uint8_t *plain,
    size_t len, const struct sockaddr_in *from);


static SSL_CTX            *hg_fuzz_server_ctx;
static SSL_CTX            *hg_fuzz_client_ctx;
static hg_listener_t      *hg_fuzz_front;
static uint64_t            hg_fuzz_front_rng;
static hg_fuzz_session_t   hg_fuzz_session;

static uint8_t             hg_fuzz_out[HG_MTU_MAX + 64];


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char  *dir;

    (void) argc;
    (void) argv;

    if (hg_fuzz_tls(&hg_fuzz_server_ctx, &hg_fuzz_client_ctx) != 0) {
        abort();
    }

    dir = getenv("HG_FUZZ_CORPUS");
    if (dir != NULL) {
        hg_fuzz_front = hg_fuzz_front_new(hg_fuzz_server_ctx,
                                          &hg_fuzz_front_rng);
        if (hg_fuzz_front == NULL) {
            abort();
        }

        exit(hg_fuzz_corpus_write(dir, hg_fuzz_server_ctx,
                                  hg_fuzz_client_ctx, hg_fuzz_front)
             == 0 ? 0 : 1);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t              len;
    unsigned            kind;
    hg_fuzz_session_t  *s = &hg_fuzz_session;

    hg_fuzz_front = hg_fuzz_front_new(hg_fuzz_server_ctx, &hg_fuzz_front_rng);

    if (hg_fuzz_front == NULL
        || hg_fuzz_session_open(s, hg_fuzz_server_ctx, hg_fuzz_client_ctx)
           != 0)
    {
        fprintf(stderr, "fuzz: the listener or the session failed\n");
        abort();
    }

    while (size >= HG_FUZZ_OP_HEADER) {
        kind = data[0] % HG_FUZZ_NOPS;
        len = (size_t) data[1] << 8 | data[2];
        data += HG_FUZZ_OP_HEADER;
        size -= HG_FUZZ_OP_HEADER;

        if (len > size) {
            len = size;
        }

        s->now += HG_FUZZ_STEP;
        hg_fuzz_op(s, kind, data, len);
        hg_fuzz_pump(s, 0);

        data += len;
        size -= len;
    }

    hg_fuzz_session_close(s);
    hg_listener_free(hg_fuzz_front);

    return 0;
}


static void
hg_fuzz_op(hg_fuzz_session_t *s, unsigned kind, const uint8_t *data,
    size_t len)
{
    size_t     i;
    hg_time_t  delta;

    switch (kind) {

    case HG_FUZZ_ACCEPT:
        hg_fuzz_accept(data, len);
        break;

    case HG_FUZZ_RAW:
        hg_fuzz_recv(s, data, len, &s->agent_addr, 0);
        break;

    case HG_FUZZ_PREFIXED:
        hg_fuzz_prefixed(s, data, len);
        break;

    case HG_FUZZ_SEALED:
        hg_fuzz_sealed(s, data, len, &s->agent_addr);
        break;

    case HG_FUZZ_SEALED_MOVED:
        hg_fuzz_sealed(s, data, len, &s->moved_addr);
        break;

    case HG_FUZZ_TICK:
        for (delta = 0, i = 0; i < len && i < 4; i++) {
            delta = delta << 8 | data[i];
        }
        s->now += delta;
        break;

    default:
        hg_fuzz_app(s, data, len);
        break;
    }
}


static void
hg_fuzz_accept(const uint8_t *dgram, size_t len)
{
    int                  rc, sends;
    size_t               replylen;
    hg_conn_t           *c;
    hg_event_t           ev;
    struct sockaddr_in   peer;

    hg_fuzz_addr(&peer, 1);
    replylen = sizeof(hg_fuzz_out);

    /* the listener's clock stands still: its cookie secret never moves */
    rc = hg_listener_accept(hg_fuzz_front, dgram, len,
                            (struct sockaddr *) &peer, sizeof(peer),
                            HG_FUZZ_T0, hg_fuzz_out, &replylen, &c);
    if (rc != HG_OK) {
        return;
    }

    /* a new connection: its first flight goes out, then it is dropped */
    for (sends = 0; sends < 16; sends++) {
        if (hg_conn_send(c, hg_fuzz_out, sizeof(hg_fuzz_out), HG_FUZZ_T0)
            <= 0)
        {
            break;
        }
    }

    while (hg_conn_next_event(c, &ev) == HG_OK) {
        /* nothing */
    }

    hg_conn_free(c);
}


/*
 * Besides crashes, one property is checked: a datagram not sealed with
 * the session's keys never ends the session, or anyone who sees a
 * connection id could end a tunnel. The check is around hg_conn_recv
 * alone, as timers may end a session for their own reasons.
 */
static void
hg_fuzz_recv(hg_fuzz_session_t *s, const uint8_t *dgram, size_t len,
    const struct sockaddr_in *from, int authentic)
{
    int  live;

    if (s->edge == NULL) {
        return;
    }

    live = s->edge->state == HG_CS_HELLO || s->edge->state == HG_CS_READY;

    hg_conn_recv(s->edge, dgram, len, (const struct sockaddr *) from,
                 sizeof(*from), s->now);

    if (!authentic && live && s->edge->state != HG_CS_HELLO
        && s->edge->state != HG_CS_READY)
    {
        fprintf(stderr, "fuzz: a datagram without the session's keys "
                "ended the session (state %d)\n", (int) s->edge->state);
        abort();
    }
}


static void
hg_fuzz_prefixed(hg_fuzz_session_t *s, const uint8_t *records, size_t len)
{
    const uint8_t  *cid;

    cid = hg_conn_cid(s->edge);
    if (cid == NULL) {
        return;
    }

    if (len > sizeof(hg_fuzz_out) - HG_PREFIX_LEN) {
        len = sizeof(hg_fuzz_out) - HG_PREFIX_LEN;
    }

    hg_fuzz_out[0] = HG_PREFIX_VERSION | HG_PREFIX_FLAG_CID;
    memcpy(hg_fuzz_out + 1, cid, HG_CID_LEN);
    memcpy(hg_fuzz_out + HG_PREFIX_LEN, records, len);

    hg_fuzz_recv(s, hg_fuzz_out, len + HG_PREFIX_LEN, &s->agent_addr, 0);
}


static void
hg_fuzz_sealed(hg_fuzz_session_t *s, const uint8_t *plain, size_t len,
    const struct sockaddr_in *from)
{
    size_t       n;
    const char  *why;

    if (len > hg_fuzz_seal_room(s)) {
        len = hg_fuzz_seal_room(s);
    }

    why = hg_codec_diff(plain, len);
    if (why != NULL) {
        fprintf(stderr, "fuzz: the packet decoders disagree: %s\n", why);
        abort();
    }

    n = hg_fuzz_seal(s, plain, len, hg_fuzz_out, sizeof(hg_fuzz_out));
    if (n > 0) {
        hg_fuzz_recv(s, hg_fuzz_out, n, from, 1);
    }
}
