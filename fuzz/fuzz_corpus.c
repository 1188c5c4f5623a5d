/*
 * The seed corpus for fuzz_datagram: real datagrams and real packets in
 * the script format of fuzz.h, so the fuzzer starts from inputs that get
 * past each layer instead of having to discover them:
 *
 *   accept-*   a real ClientHello, the HelloVerifyRequest, and the
 *              returning ClientHello whose cookie the fuzz target's
 *              listener (fixed seed and clock) accepts
 *   session-*  a real exchange: the edge opens a stream and writes, the
 *              agent answers; the agent's datagrams as RAW and PREFIXED
 *              operations, their plaintexts as SEALED ones
 *   frame-*    one hand-built Packet per frame type, as SEALED
 *   record-*   forged protected records around the size of the nonce and
 *              tag, which must be dropped without harm to the session
 *   flow-*     agent streams that fill the edge's windows (the fuzz config
 *              has the smallest allowed) or overrun them, or the stream
 *              limit
 *   move-*     the agent's packets from another address: the edge's path
 *              validation answered (the challenges are a function of the
 *              session's seed) from the new address or the old, timed
 *              out, or cut short by the agent back at its address
 *   tick-*, app-*  the clock and the edge's application
 *
 * Plaintexts stay valid in any process; sealed datagrams only decrypt in
 * the one that made them (keys are per handshake), but still exercise
 * the record layer elsewhere.
 */

#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "hopgate.pb-c.h"


#define HG_FUZZ_SCRIPT_MAX  65536

typedef struct {
    uint8_t   data[HG_FUZZ_SCRIPT_MAX];
    size_t    len;
} hg_fuzz_script_t;

typedef struct {
    hg_fuzz_session_t  *session;
    hg_fuzz_script_t   *script;
    hg_fuzz_script_t   *raw;          /* the first datagram as it was */
} hg_fuzz_capture_t;


static void hg_fuzz_script_op(hg_fuzz_script_t *sc, unsigned kind,
    const uint8_t *data, size_t len);
static void hg_fuzz_script_app(hg_fuzz_script_t *sc, hg_fuzz_session_t *s,
    unsigned what, uint8_t which, uint16_t amount);
static int hg_fuzz_script_save(const char *dir, const char *name,
    const hg_fuzz_script_t *sc);
static int hg_fuzz_corpus_accept(const char *dir, SSL_CTX *client_ctx,
    hg_listener_t *front);
static int hg_fuzz_corpus_session(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx);
static int hg_fuzz_corpus_frames(const char *dir);
static int hg_fuzz_corpus_flow(const char *dir);
static int hg_fuzz_corpus_records(const char *dir);
static void hg_fuzz_stream_op(hg_fuzz_script_t *sc, uint64_t pn,
    uint64_t id, uint64_t offset, size_t len);
static int hg_fuzz_corpus_misc(const char *dir);
static int hg_fuzz_corpus_moves(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx);
static size_t hg_fuzz_one_frame(uint64_t pn, Hopgate__Frame *frame,
    uint8_t *out);
static void hg_fuzz_moved_op(hg_fuzz_script_t *sc, hg_fuzz_session_t *s,
    unsigned kind, const uint8_t *plain, size_t len);
static void hg_fuzz_capture(void *arg, const uint8_t *dgram, size_t len);
static void hg_fuzz_capture_plain(void *arg, const uint8_t *plain,
    size_t len);
static void hg_fuzz_agent_answer(hg_fuzz_session_t *s, int64_t id,
    size_t bytes);


static hg_fuzz_script_t  hg_fuzz_script;
static hg_fuzz_script_t  hg_fuzz_raw;
static uint8_t           hg_fuzz_buf[16384];


int
hg_fuzz_corpus_write(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx, hg_listener_t *front)
{
    if (hg_fuzz_corpus_accept(dir, client_ctx, front) != 0
        || hg_fuzz_corpus_session(dir, server_ctx, client_ctx) != 0
        || hg_fuzz_corpus_frames(dir) != 0
        || hg_fuzz_corpus_flow(dir) != 0
        || hg_fuzz_corpus_records(dir) != 0
        || hg_fuzz_corpus_misc(dir) != 0
        || hg_fuzz_corpus_moves(dir, server_ctx, client_ctx) != 0)
    {
        return -1;
    }

    return 0;
}


/* ---- scripts ------------------------------------------------------------- */

static void
hg_fuzz_script_op(hg_fuzz_script_t *sc, unsigned kind, const uint8_t *data,
    size_t len)
{
    if (len > 0xffff
        || sc->len + HG_FUZZ_OP_HEADER + len > sizeof(sc->data))
    {
        return;
    }

    sc->data[sc->len++] = (uint8_t) kind;
    sc->data[sc->len++] = (uint8_t) (len >> 8);
    sc->data[sc->len++] = (uint8_t) len;
    memcpy(sc->data + sc->len, data, len);
    sc->len += len;
}


/*
 * Records an APP operation and, with a session, runs it as the fuzz
 * target would, so what follows in the script meets the same state.
 */
static void
hg_fuzz_script_app(hg_fuzz_script_t *sc, hg_fuzz_session_t *s,
    unsigned what, uint8_t which, uint16_t amount)
{
    uint8_t  op[4];

    op[0] = (uint8_t) what;
    op[1] = which;
    op[2] = (uint8_t) (amount >> 8);
    op[3] = (uint8_t) amount;

    hg_fuzz_script_op(sc, HG_FUZZ_APP, op, sizeof(op));

    if (s != NULL) {
        s->now += HG_FUZZ_STEP;
        hg_fuzz_app(s, op, sizeof(op));
        hg_fuzz_pump(s, 1);
    }
}


static int
hg_fuzz_script_save(const char *dir, const char *name,
    const hg_fuzz_script_t *sc)
{
    FILE  *f;
    char   path[4096];

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }

    if (fwrite(sc->data, 1, sc->len, f) != sc->len || fclose(f) != 0) {
        perror(path);
        return -1;
    }

    return 0;
}


/* ---- the listener's inputs ---------------------------------------------- */

static int
hg_fuzz_corpus_accept(const char *dir, SSL_CTX *client_ctx,
    hg_listener_t *front)
{
    int                  rc;
    ssize_t              n;
    size_t               replylen;
    uint64_t             rng;
    hg_conn_t           *agent, *c;
    hg_hello_t           hello;
    hg_config_t          cfg;
    struct sockaddr_in   edge, peer;
    uint8_t              hello1[HG_MTU_MAX], reply[HG_MTU_MAX];

    rng = HG_FUZZ_SESSION_SEED;
    hg_fuzz_config(&cfg, &rng);
    hg_fuzz_addr(&edge, 0);
    hg_fuzz_addr(&peer, 1);

    memset(&hello, 0, sizeof(hello));
    hello.domain = "app.example.com";
    hello.api_key = "fuzz-key";
    hello.worker_hint = 3;

    agent = hg_conn_client_new(&cfg, client_ctx, "localhost", &hello,
                               (struct sockaddr *) &edge, sizeof(edge),
                               HG_FUZZ_T0);
    if (agent == NULL) {
        return -1;
    }

    n = hg_conn_send(agent, hello1, sizeof(hello1), HG_FUZZ_T0);
    if (n <= 0) {
        hg_conn_free(agent);
        return -1;
    }

    hg_fuzz_script.len = 0;
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_ACCEPT, hello1, (size_t) n);
    hg_fuzz_script_save(dir, "accept-client-hello", &hg_fuzz_script);

    replylen = sizeof(reply);
    rc = hg_listener_accept(front, hello1, (size_t) n,
                            (struct sockaddr *) &peer, sizeof(peer),
                            HG_FUZZ_T0, reply, &replylen, &c);
    if (rc != HG_AGAIN) {
        fprintf(stderr, "fuzz corpus: no HelloVerifyRequest (%d)\n", rc);
        hg_conn_free(agent);
        return -1;
    }

    /* a server's message at the server: the wrong direction */
    hg_fuzz_script.len = 0;
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_ACCEPT, reply, replylen);
    hg_fuzz_script_save(dir, "accept-hello-verify", &hg_fuzz_script);

    hg_conn_recv(agent, reply, replylen, (struct sockaddr *) &edge,
                 sizeof(edge), HG_FUZZ_T0);

    n = hg_conn_send(agent, hello1, sizeof(hello1), HG_FUZZ_T0);
    hg_conn_free(agent);

    if (n <= 0) {
        return -1;
    }

    hg_fuzz_script.len = 0;
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_ACCEPT, hello1, (size_t) n);

    /* it must pass the cookie check of a listener like the target's */
    replylen = sizeof(reply);
    rc = hg_listener_accept(front, hello1, (size_t) n,
                            (struct sockaddr *) &peer, sizeof(peer),
                            HG_FUZZ_T0, reply, &replylen, &c);
    if (rc != HG_OK) {
        fprintf(stderr, "fuzz corpus: the cookie was refused (%d)\n", rc);
        return -1;
    }

    hg_conn_free(c);

    return hg_fuzz_script_save(dir, "accept-cookie", &hg_fuzz_script);
}


/* ---- a real exchange ----------------------------------------------------- */

static int
hg_fuzz_corpus_session(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx)
{
    int64_t                    id;
    hg_fuzz_session_t         *s;
    hg_fuzz_capture_t          cap;
    hg_stream_meta_t           meta;
    static hg_fuzz_session_t   session;

    s = &session;

    if (hg_fuzz_session_open(s, server_ctx, client_ctx) != 0) {
        fprintf(stderr, "fuzz corpus: session handshake failed\n");
        return -1;
    }

    cap.session = s;
    cap.script = &hg_fuzz_script;
    cap.raw = &hg_fuzz_raw;

    /* the edge opens a request stream, writes and finishes */
    hg_fuzz_script.len = 0;
    hg_fuzz_raw.len = 0;
    hg_fuzz_script_app(&hg_fuzz_script, s, HG_FUZZ_APP_OPEN, 0, 1);
    hg_fuzz_script_app(&hg_fuzz_script, s, HG_FUZZ_APP_WRITE, 0, 3000);
    hg_fuzz_script_app(&hg_fuzz_script, s, HG_FUZZ_APP_SHUTDOWN, 0, 0);

    if (s->nstreams != 1) {
        fprintf(stderr, "fuzz corpus: the edge opened no stream\n");
        hg_fuzz_session_close(s);
        return -1;
    }

    /* the agent reads the request and answers on the same stream */
    hg_fuzz_agent_answer(s, s->streams[0], 2000);
    hg_fuzz_agent_flush(s, hg_fuzz_capture, &cap);

    if (hg_fuzz_script_save(dir, "session-answer", &hg_fuzz_script) != 0
        || hg_fuzz_script_save(dir, "session-raw", &hg_fuzz_raw) != 0)
    {
        hg_fuzz_session_close(s);
        return -1;
    }

    /* the agent opens a stream of its own, then resets it */
    hg_fuzz_script.len = 0;
    memset(&meta, 0, sizeof(meta));
    snprintf(meta.host, sizeof(meta.host), "agent.example.com");

    id = hg_stream_open(s->agent, &meta);
    (void) hg_stream_write(s->agent, id, hg_fuzz_buf, 700);
    hg_fuzz_agent_flush(s, hg_fuzz_capture, &cap);

    (void) hg_stream_reset(s->agent, id, HG_STREAM_ERR_CANCELLED);
    hg_fuzz_agent_flush(s, hg_fuzz_capture, &cap);

    if (hg_fuzz_script_save(dir, "session-agent-reset", &hg_fuzz_script)
        != 0)
    {
        hg_fuzz_session_close(s);
        return -1;
    }

    /* the agent drains, then closes */
    hg_fuzz_script.len = 0;
    (void) hg_conn_goaway(s->agent, HG_CODE_GOING_AWAY, "agent restart");
    hg_fuzz_agent_flush(s, hg_fuzz_capture, &cap);
    (void) hg_conn_close(s->agent, HG_CODE_NORMAL, "bye");
    hg_fuzz_agent_flush(s, hg_fuzz_capture, &cap);

    hg_fuzz_session_close(s);

    return hg_fuzz_script_save(dir, "session-agent-close", &hg_fuzz_script);
}


static void
hg_fuzz_agent_answer(hg_fuzz_session_t *s, int64_t id, size_t bytes)
{
    int  i, fin;

    for (i = 0; i < 64; i++) {
        if (hg_stream_read(s->agent, id, hg_fuzz_buf, sizeof(hg_fuzz_buf),
                           &fin)
            <= 0 || fin)
        {
            break;
        }
    }

    memset(hg_fuzz_buf, 'a', bytes);
    (void) hg_stream_write(s->agent, id, hg_fuzz_buf, bytes);
    (void) hg_stream_shutdown(s->agent, id);
}


/* the agent's datagram is opened with the edge's keys, not delivered */
static void
hg_fuzz_capture(void *arg, const uint8_t *dgram, size_t len)
{
    hg_fuzz_capture_t  *cap = arg;

    if (len <= HG_PREFIX_LEN) {
        return;
    }

    if (cap->raw->len == 0) {
        hg_fuzz_script_op(cap->raw, HG_FUZZ_RAW, dgram, len);
        hg_fuzz_script_op(cap->raw, HG_FUZZ_PREFIXED, dgram + HG_PREFIX_LEN,
                          len - HG_PREFIX_LEN);
    }

    (void) hg_dtls_recv(cap->session->edge->dtls, dgram + HG_PREFIX_LEN,
                        len - HG_PREFIX_LEN, cap->session->now,
                        hg_fuzz_capture_plain, cap);
}


static void
hg_fuzz_capture_plain(void *arg, const uint8_t *plain, size_t len)
{
    hg_fuzz_capture_t  *cap = arg;

    hg_fuzz_script_op(cap->script, HG_FUZZ_SEALED, plain, len);
}


/* ---- one frame of each type -------------------------------------------- */

static int
hg_fuzz_corpus_frames(const char *dir)
{
    int                          rc;
    size_t                       i, len;
    char                         name[64];
    uint64_t                     ranges[2] = { 0, 1 };
    Hopgate__Packet              pkt;
    Hopgate__Frame               frame, *frames[1];
    Hopgate__StreamFrame         stream;
    Hopgate__StreamMeta          meta;
    Hopgate__AckFrame            ack;
    Hopgate__ResetStreamFrame    reset;
    Hopgate__StopSendingFrame    stop;
    Hopgate__MaxDataFrame        max_data;
    Hopgate__MaxStreamDataFrame  max_stream_data;
    Hopgate__MaxStreamsFrame     max_streams;
    Hopgate__PingFrame           ping;
    Hopgate__PathChallengeFrame  path_challenge;
    Hopgate__PathResponseFrame   path_response;
    Hopgate__TransportParams     params;
    Hopgate__HelloFrame          hello;
    Hopgate__HelloAckFrame       hello_ack;
    Hopgate__GoAwayFrame         goaway;
    Hopgate__CloseFrame          close_frame;

    static const char  *const names[] = {
        NULL, "stream", "ack", "reset-stream", "stop-sending", "max-data",
        "max-stream-data", "max-streams", "ping", "hello", "hello-ack",
        "goaway", "close", "path-challenge", "path-response"
    };

    hopgate__packet__init(&pkt);
    hopgate__frame__init(&frame);
    hopgate__stream_frame__init(&stream);
    hopgate__stream_meta__init(&meta);
    hopgate__ack_frame__init(&ack);
    hopgate__reset_stream_frame__init(&reset);
    hopgate__stop_sending_frame__init(&stop);
    hopgate__max_data_frame__init(&max_data);
    hopgate__max_stream_data_frame__init(&max_stream_data);
    hopgate__max_streams_frame__init(&max_streams);
    hopgate__ping_frame__init(&ping);
    hopgate__path_challenge_frame__init(&path_challenge);
    hopgate__path_response_frame__init(&path_response);
    hopgate__transport_params__init(&params);
    hopgate__hello_frame__init(&hello);
    hopgate__hello_ack_frame__init(&hello_ack);
    hopgate__go_away_frame__init(&goaway);
    hopgate__close_frame__init(&close_frame);

    memset(hg_fuzz_buf, 'd', 900);

    /* an agent stream with its meta (the edge's streams are odd) */
    meta.client_addr = "198.51.100.4";
    meta.scheme = "http";
    meta.host = "agent.example.com";
    meta.request_id = "r-1";
    stream.id = 0;
    stream.offset = 0;
    stream.data.data = hg_fuzz_buf;
    stream.data.len = 900;
    stream.fin = 1;
    stream.meta = &meta;

    /* 5-6 and 2-3: the edge has sent that many once it wrote 8000 bytes */
    ack.largest = 6;
    ack.ack_delay_us = 1000;
    ack.first_range = 1;
    ack.n_ranges = 2;
    ack.ranges = ranges;

    reset.id = 1;
    reset.error_code = HG_STREAM_ERR_RESET;
    reset.final_size = 0;
    stop.id = 1;
    stop.error_code = HG_STREAM_ERR_CANCELLED;
    max_data.max = 64 * 1024 * 1024;
    max_stream_data.id = 1;
    max_stream_data.max = 4 * 1024 * 1024;
    max_streams.max = 512;

    params.max_streams = 100;
    params.stream_window = 1 << 20;
    params.conn_window = 1 << 24;
    params.max_ack_delay_us = 25000;
    hello.domain = "app.example.com";
    hello.api_key = "fuzz-key";
    hello.params = &params;
    hello_ack.error_code = HG_CODE_BAD_KEY;
    hello_ack.error_text = "wrong direction";
    goaway.error_code = HG_CODE_GOING_AWAY;
    goaway.reason = "agent restart";
    close_frame.error_code = HG_CODE_NORMAL;
    close_frame.reason = "bye";
    path_challenge.data = 0x0123456789abcdefULL;
    path_response.data = 0xfedcba9876543210ULL;

    frames[0] = &frame;
    pkt.frames = frames;
    pkt.n_frames = 1;

    for (i = HOPGATE__FRAME__BODY_STREAM;
         i <= HOPGATE__FRAME__BODY_PATH_RESPONSE;
         i++)
    {
        frame.body_case = (Hopgate__Frame__BodyCase) i;

        switch (i) {
        case HOPGATE__FRAME__BODY_STREAM:
            frame.stream = &stream;
            break;
        case HOPGATE__FRAME__BODY_ACK:
            frame.ack = &ack;
            break;
        case HOPGATE__FRAME__BODY_RESET_STREAM:
            frame.reset_stream = &reset;
            break;
        case HOPGATE__FRAME__BODY_STOP_SENDING:
            frame.stop_sending = &stop;
            break;
        case HOPGATE__FRAME__BODY_MAX_DATA:
            frame.max_data = &max_data;
            break;
        case HOPGATE__FRAME__BODY_MAX_STREAM_DATA:
            frame.max_stream_data = &max_stream_data;
            break;
        case HOPGATE__FRAME__BODY_MAX_STREAMS:
            frame.max_streams = &max_streams;
            break;
        case HOPGATE__FRAME__BODY_PING:
            frame.ping = &ping;
            break;
        case HOPGATE__FRAME__BODY_HELLO:
            frame.hello = &hello;
            break;
        case HOPGATE__FRAME__BODY_HELLO_ACK:
            frame.hello_ack = &hello_ack;
            break;
        case HOPGATE__FRAME__BODY_GOAWAY:
            frame.goaway = &goaway;
            break;
        case HOPGATE__FRAME__BODY_PATH_CHALLENGE:
            frame.path_challenge = &path_challenge;
            break;
        case HOPGATE__FRAME__BODY_PATH_RESPONSE:
            frame.path_response = &path_response;
            break;
        default:
            frame.close = &close_frame;
            break;
        }

        /* a packet number ahead of the session's, as a live peer's are */
        pkt.number = 100 + i;
        len = hopgate__packet__pack(&pkt, hg_fuzz_buf + 1024);

        /*
         * The edge's stream 1 exists and has sent, for the frames that
         * name it and the ACK.
         */
        hg_fuzz_script.len = 0;
        hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_OPEN, 0, 1);
        hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_WRITE, 0, 8000);
        hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_SEALED,
                          hg_fuzz_buf + 1024, len);

        snprintf(name, sizeof(name), "frame-%s", names[i]);

        rc = hg_fuzz_script_save(dir, name, &hg_fuzz_script);
        if (rc != 0) {
            return rc;
        }
    }

    return 0;
}


/* ---- forged records ------------------------------------------------------ */

/*
 * Application data records of epoch 1 with 0 to 40 bytes of body: below
 * an AEAD record's explicit nonce and tag (24 bytes with AES-GCM), OpenSSL
 * used to fail the whole connection rather than drop the record.
 */
static int
hg_fuzz_corpus_records(const char *dir)
{
    size_t   len;
    uint8_t  rec[DTLS1_RT_HEADER_LENGTH + 40];

    hg_fuzz_script.len = 0;

    for (len = 0; len <= 40; len += 8) {
        memset(rec, 0, sizeof(rec));
        rec[0] = SSL3_RT_APPLICATION_DATA;
        rec[1] = DTLS1_VERSION_MAJOR;
        rec[2] = DTLS1_2_VERSION & 0xff;
        rec[4] = 1;                             /* epoch */
        rec[10] = (uint8_t) (200 + len);        /* sequence number */
        rec[12] = (uint8_t) len;

        hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_PREFIXED, rec,
                          DTLS1_RT_HEADER_LENGTH + len);
    }

    return hg_fuzz_script_save(dir, "record-short", &hg_fuzz_script);
}


/* ---- flow control and limits ------------------------------------------- */

static int
hg_fuzz_corpus_flow(const char *dir)
{
    uint64_t  pn, id, off;

    /*
     * Two agent streams of 9000 bytes: each passes half its 16 KiB window
     * and together half the 32 KiB connection window, so reading them
     * makes the edge send MAX_STREAM_DATA and MAX_DATA.
     */
    hg_fuzz_script.len = 0;
    pn = 100;

    for (off = 0; off < 9000; off += 1000) {
        for (id = 0; id <= 2; id += 2) {
            hg_fuzz_stream_op(&hg_fuzz_script, pn++, id, off, 1000);
        }
    }

    if (hg_fuzz_script_save(dir, "flow-windows", &hg_fuzz_script) != 0) {
        return -1;
    }

    /* past the stream's window */
    hg_fuzz_script.len = 0;
    hg_fuzz_stream_op(&hg_fuzz_script, 100, 0, 20000, 100);

    if (hg_fuzz_script_save(dir, "flow-stream-overrun", &hg_fuzz_script)
        != 0)
    {
        return -1;
    }

    /* within each stream's window, past the connection's together */
    hg_fuzz_script.len = 0;

    for (id = 0; id <= 4; id += 2) {
        hg_fuzz_stream_op(&hg_fuzz_script, 100 + id, id, 15000, 1000);
    }

    if (hg_fuzz_script_save(dir, "flow-conn-overrun", &hg_fuzz_script) != 0)
    {
        return -1;
    }

    /* the ninth agent stream, one past the fuzz config's limit of eight */
    hg_fuzz_script.len = 0;
    hg_fuzz_stream_op(&hg_fuzz_script, 100, 16, 0, 10);

    return hg_fuzz_script_save(dir, "flow-stream-limit", &hg_fuzz_script);
}


/* a SEALED Packet with one STREAM frame of filler bytes */
static void
hg_fuzz_stream_op(hg_fuzz_script_t *sc, uint64_t pn, uint64_t id,
    uint64_t offset, size_t len)
{
    size_t                 n;
    Hopgate__Packet        pkt;
    Hopgate__Frame         frame, *frames[1];
    Hopgate__StreamFrame   stream;
    Hopgate__StreamMeta    meta;

    hopgate__packet__init(&pkt);
    hopgate__frame__init(&frame);
    hopgate__stream_frame__init(&stream);
    hopgate__stream_meta__init(&meta);

    memset(hg_fuzz_buf, 'f', len);
    meta.host = "agent.example.com";

    stream.id = id;
    stream.offset = offset;
    stream.data.data = hg_fuzz_buf;
    stream.data.len = len;
    stream.meta = offset == 0 ? &meta : NULL;

    frame.body_case = HOPGATE__FRAME__BODY_STREAM;
    frame.stream = &stream;
    frames[0] = &frame;
    pkt.number = pn;
    pkt.frames = frames;
    pkt.n_frames = 1;

    n = hopgate__packet__pack(&pkt, hg_fuzz_buf + 4096);
    hg_fuzz_script_op(sc, HG_FUZZ_SEALED, hg_fuzz_buf + 4096, n);
}


/* ---- the clock and the application ------------------------------------- */

static int
hg_fuzz_corpus_misc(const char *dir)
{
    /* 61 s: past the default idle timeout */
    static const uint8_t  idle[4] = { 0x03, 0xa2, 0xc9, 0x40 };
    /* 400 ms: a PTO or two */
    static const uint8_t  pto[4] = { 0x00, 0x06, 0x1a, 0x80 };

    hg_fuzz_script.len = 0;
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, idle, sizeof(idle));

    if (hg_fuzz_script_save(dir, "tick-idle", &hg_fuzz_script) != 0) {
        return -1;
    }

    /* an unacknowledged write, then silence: loss recovery takes over */
    hg_fuzz_script.len = 0;
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_OPEN, 0, 2);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_WRITE, 0, 20000);
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, pto, sizeof(pto));
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, pto, sizeof(pto));

    if (hg_fuzz_script_save(dir, "tick-pto", &hg_fuzz_script) != 0) {
        return -1;
    }

    hg_fuzz_script.len = 0;
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_OPEN, 0, 3);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_OPEN, 0, 4);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_WRITE, 1, 5000);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_QUERY, 0, 0);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_RESET, 0, 1);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_GOAWAY, 0, 0);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_CLOSE, 0, 0);

    return hg_fuzz_script_save(dir, "app-mix", &hg_fuzz_script);
}


/* ---- the agent at another address --------------------------------------- */

static int
hg_fuzz_corpus_moves(const char *dir, SSL_CTX *server_ctx,
    SSL_CTX *client_ctx)
{
    size_t                      len;
    uint8_t                     plain[64];
    Hopgate__Frame              frame;
    Hopgate__PingFrame          ping;
    Hopgate__PathResponseFrame  response;
    hg_fuzz_session_t          *s;
    static hg_fuzz_session_t    session;
    static hg_fuzz_script_t     answered;

    /* 400 ms, three times: the challenge again, then past the 1 s floor */
    static const uint8_t  pto[4] = { 0x00, 0x06, 0x1a, 0x80 };

    hopgate__frame__init(&frame);
    hopgate__ping_frame__init(&ping);
    frame.body_case = HOPGATE__FRAME__BODY_PING;
    frame.ping = &ping;

    /* a PING from the new address with data waiting, then silence */
    hg_fuzz_script.len = 0;
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_OPEN, 0, 5);
    hg_fuzz_script_app(&hg_fuzz_script, NULL, HG_FUZZ_APP_WRITE, 0, 20000);
    len = hg_fuzz_one_frame(100, &frame, plain);
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_SEALED_MOVED, plain, len);
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, pto, sizeof(pto));
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, pto, sizeof(pto));
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_TICK, pto, sizeof(pto));

    if (hg_fuzz_script_save(dir, "move-timeout", &hg_fuzz_script) != 0) {
        return -1;
    }

    /* the agent's next packet from its own address again */
    hg_fuzz_script.len = 0;
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_SEALED_MOVED, plain, len);
    len = hg_fuzz_one_frame(101, &frame, plain);
    hg_fuzz_script_op(&hg_fuzz_script, HG_FUZZ_SEALED, plain, len);

    if (hg_fuzz_script_save(dir, "move-back", &hg_fuzz_script) != 0) {
        return -1;
    }

    /*
     * The echoes, from the new address and from the old: the challenges
     * as a session draws them, which the target's will draw alike
     */
    s = &session;

    if (hg_fuzz_session_open(s, server_ctx, client_ctx) != 0) {
        fprintf(stderr, "fuzz corpus: session handshake failed\n");
        return -1;
    }

    hg_fuzz_script.len = 0;
    len = hg_fuzz_one_frame(100, &frame, plain);
    hg_fuzz_moved_op(&hg_fuzz_script, s, HG_FUZZ_SEALED_MOVED, plain, len);

    if (s->edge->path.nchallenges == 0 || !s->edge->path.back_sent) {
        fprintf(stderr, "fuzz corpus: the edge sent no challenges\n");
        hg_fuzz_session_close(s);
        return -1;
    }

    hopgate__path_response_frame__init(&response);
    frame.body_case = HOPGATE__FRAME__BODY_PATH_RESPONSE;
    frame.path_response = &response;

    /* the agent's old address answers: the move was a copy */
    response.data = s->edge->path.back_challenge;
    len = hg_fuzz_one_frame(101, &frame, plain);
    answered = hg_fuzz_script;
    hg_fuzz_script_op(&answered, HG_FUZZ_SEALED, plain, len);

    if (hg_fuzz_script_save(dir, "move-answered", &answered) != 0) {
        hg_fuzz_session_close(s);
        return -1;
    }

    /* the new address answers: validated */
    response.data = s->edge->path.challenges[0];
    len = hg_fuzz_one_frame(101, &frame, plain);
    hg_fuzz_moved_op(&hg_fuzz_script, s, HG_FUZZ_SEALED_MOVED, plain, len);

    if (s->edge->path.validating) {
        fprintf(stderr, "fuzz corpus: the echo did not validate\n");
        hg_fuzz_session_close(s);
        return -1;
    }

    hg_fuzz_session_close(s);

    return hg_fuzz_script_save(dir, "move-echo", &hg_fuzz_script);
}


/* a Packet of one frame */
static size_t
hg_fuzz_one_frame(uint64_t pn, Hopgate__Frame *frame, uint8_t *out)
{
    Hopgate__Packet   pkt;
    Hopgate__Frame   *frames[1];

    hopgate__packet__init(&pkt);
    frames[0] = frame;
    pkt.number = pn;
    pkt.frames = frames;
    pkt.n_frames = 1;

    return hopgate__packet__pack(&pkt, out);
}


/* records a sealed operation and runs it as the fuzz target would */
static void
hg_fuzz_moved_op(hg_fuzz_script_t *sc, hg_fuzz_session_t *s, unsigned kind,
    const uint8_t *plain, size_t len)
{
    size_t  n;

    hg_fuzz_script_op(sc, kind, plain, len);

    s->now += HG_FUZZ_STEP;
    n = hg_fuzz_seal(s, plain, len, s->dgram, sizeof(s->dgram));

    if (n > 0) {
        (void) hg_conn_recv(s->edge, s->dgram, n,
                            (const struct sockaddr *)
                            (kind == HG_FUZZ_SEALED_MOVED ? &s->moved_addr
                                                          : &s->agent_addr),
                            sizeof(s->agent_addr), s->now);
    }

    hg_fuzz_pump(s, 0);
}
