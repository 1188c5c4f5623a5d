/*
 * Engine throughput against its physical limit, on one core.
 *
 * The engine: an edge and an agent in one process, datagrams handed
 * across at once (no loss, no delay), one stream pushing `bytes` of
 * payload edge -> agent as fast as the engine takes it, the agent
 * reading everything. The clock is virtual: it stands still while
 * datagrams move and jumps to the next engine deadline when nothing can
 * (the pacer's), so waiting costs no CPU and only engine work is timed.
 *
 * The limit: bare OpenSSL DTLS 1.2 with the cipher the engine negotiated,
 * records of the plaintext size the engine's packets carried as payload,
 * SSL_write on one side into a datagram queue, SSL_read on the other;
 * handshake once, then only records.
 *
 * Both are timed with CLOCK_PROCESS_CPUTIME_ID, so MB/s (10^6 bytes per
 * CPU second) is per core.
 *
 * Usage: engine_bench [bytes [engine|bare]], default 256 MiB and both; a
 * single path is for a profiler (the other is then not run, and the bare
 * path uses the cipher and record size the engine would use).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "hg_conn.h"
#include "testcert.h"


#define HG_BENCH_DEFAULT_BYTES  (256ULL * 1024 * 1024)
#define HG_BENCH_CHUNK          65536
#define HG_BENCH_QUEUE          64        /* datagrams a bare pipe holds */
#define HG_BENCH_T0             (1000 * HG_SEC)

/*
 * For a bare-only run: a GCM record's header, nonce and tag, and the
 * engine's packet and STREAM frame encoding around one packet's payload.
 */
#define HG_BENCH_GCM_OVERHEAD   29
#define HG_BENCH_FRAMING        29


typedef struct {
    uint64_t     bytes;                   /* payload delivered */
    double       cpu;                     /* seconds */
    uint64_t     packets;                 /* data-bearing datagrams */
    uint64_t     acks;                    /* datagrams the other way */
    size_t       record;                  /* payload bytes per packet */
    uint64_t     clock_jumps;             /* engine: waits for a timer */
    char         cipher[64];
} hg_bench_result_t;

typedef struct {
    uint8_t      data[HG_BENCH_QUEUE][HG_MTU_MAX];
    size_t       len[HG_BENCH_QUEUE];
    size_t       head;
    size_t       count;
} hg_bench_queue_t;

/* one end of the bare pipe: reads `in`, writes `out` */
typedef struct {
    hg_bench_queue_t  *in;
    hg_bench_queue_t  *out;
    size_t             mtu;
} hg_bench_end_t;

typedef struct {
    hg_testcert_t       certs;
    SSL_CTX            *server_ctx;
    SSL_CTX            *client_ctx;
    uint64_t            rng;
    hg_time_t           now;
    struct sockaddr_in  edge_addr;
    struct sockaddr_in  agent_addr;
    hg_conn_t          *edge;
    hg_conn_t          *agent;
    uint8_t             dgram[HG_MTU_MAX + 64];
} hg_bench_t;


static double hg_bench_cpu(void);
static int hg_bench_random(void *ctx, uint8_t *buf, size_t len);
static void hg_bench_addr(struct sockaddr_in *sin, int n);
static int hg_bench_pair(hg_bench_t *b, size_t mtu);
static void hg_bench_pair_free(hg_bench_t *b);
static uint64_t hg_bench_flush(hg_bench_t *b, hg_conn_t *from, hg_conn_t *to,
    const struct sockaddr_in *addr);
static void hg_bench_drain_events(hg_conn_t *c);
static void hg_bench_wait(hg_bench_t *b);
static int hg_bench_engine(hg_bench_t *b, size_t mtu, uint64_t total,
    hg_bench_result_t *r);
static int hg_bench_bare(hg_bench_t *b, size_t mtu, const char *cipher,
    size_t record, uint64_t total, hg_bench_result_t *r);
static SSL_CTX *hg_bench_bare_ctx(hg_bench_t *b, int server,
    const char *cipher);
static SSL *hg_bench_bare_ssl(SSL_CTX *ctx, BIO_METHOD *m,
    hg_bench_end_t *end);
static int hg_bench_bare_handshake(SSL *client, SSL *server);
static BIO_METHOD *hg_bench_bio_method(void);
static int hg_bench_bio_write(BIO *bio, const char *buf, int len);
static int hg_bench_bio_read(BIO *bio, char *buf, int size);
static long hg_bench_bio_ctrl(BIO *bio, int cmd, long num, void *ptr);
static int hg_bench_bio_create(BIO *bio);


static uint8_t  hg_bench_payload[HG_BENCH_CHUNK];
static uint8_t  hg_bench_sink[HG_BENCH_CHUNK];


int
main(int argc, char **argv)
{
    int                    i, failed, engine_only, bare_only;
    char                  *end;
    double                 mb_engine, mb_bare;
    uint64_t               total;
    hg_bench_t             b;
    hg_bench_result_t      eng, bare;
    hg_tls_client_opts_t   opts;
    char                   err[256];
    static const size_t    mtus[] = { 1200, 1452 };

    total = HG_BENCH_DEFAULT_BYTES;
    engine_only = argc > 2 && strcmp(argv[2], "engine") == 0;
    bare_only = argc > 2 && strcmp(argv[2], "bare") == 0;

    if (argc > 1) {
        errno = 0;
        total = strtoull(argv[1], &end, 10);
        if (errno != 0 || *end != '\0' || total == 0 || argc > 3
            || (argc > 2 && !engine_only && !bare_only))
        {
            fprintf(stderr, "usage: %s [bytes [engine|bare]]\n", argv[0]);
            return 2;
        }
    }

    memset(&b, 0, sizeof(b));
    memset(hg_bench_payload, 'p', sizeof(hg_bench_payload));

    if (hg_testcert_make_tmp(&b.certs) != 0) {
        fprintf(stderr, "bench: cannot write test certificates\n");
        return 1;
    }

    b.server_ctx = hg_tls_server_ctx(b.certs.cert, b.certs.key, err,
                                     sizeof(err));
    memset(&opts, 0, sizeof(opts));
    opts.ca_file = b.certs.ca;
    b.client_ctx = hg_tls_client_ctx(&opts, err, sizeof(err));

    if (b.server_ctx == NULL || b.client_ctx == NULL) {
        fprintf(stderr, "bench: TLS context: %s\n", err);
        hg_testcert_remove(&b.certs);
        return 1;
    }

    printf("payload %llu bytes edge -> agent, one stream; "
           "MB = 10^6 bytes, s = CPU seconds (one core)\n\n",
           (unsigned long long) total);
    printf("%-5s %-7s %9s %11s %8s %8s %s\n", "mtu", "path", "MB/s",
           "packets/s", "payload", "acks", "cipher");

    failed = 0;

    for (i = 0; i < (int) (sizeof(mtus) / sizeof(mtus[0])); i++) {

        if (bare_only) {
            /* what the engine negotiates and fits, without running it */
            memset(&eng, 0, sizeof(eng));
            snprintf(eng.cipher, sizeof(eng.cipher),
                     "ECDHE-ECDSA-AES128-GCM-SHA256");
            eng.record = mtus[i] - HG_PREFIX_LEN - HG_BENCH_GCM_OVERHEAD
                         - HG_BENCH_FRAMING;
        }

        if ((!bare_only && hg_bench_engine(&b, mtus[i], total, &eng) != 0)
            || (!engine_only
                && hg_bench_bare(&b, mtus[i], eng.cipher, eng.record, total,
                                 &bare) != 0))
        {
            failed = 1;
            break;
        }

        if (!bare_only) {
            mb_engine = eng.bytes / eng.cpu / 1e6;
            printf("%-5zu %-7s %9.1f %11.0f %8zu %8llu %s\n", mtus[i],
                   "engine", mb_engine, eng.packets / eng.cpu, eng.record,
                   (unsigned long long) eng.acks, eng.cipher);
        }

        if (!engine_only) {
            mb_bare = bare.bytes / bare.cpu / 1e6;
            printf("%-5zu %-7s %9.1f %11.0f %8zu %8s %s\n", mtus[i], "bare",
                   mb_bare, bare.packets / bare.cpu, bare.record, "-",
                   bare.cipher);
        }

        if (!engine_only && !bare_only) {
            printf("%-5zu %-7s %8.1f%%   (engine/bare; %llu timer waits)\n",
                   mtus[i], "ratio", 100.0 * mb_engine / mb_bare,
                   (unsigned long long) eng.clock_jumps);
        }

        printf("\n");
        fflush(stdout);
    }

    SSL_CTX_free(b.server_ctx);
    SSL_CTX_free(b.client_ctx);
    hg_testcert_remove(&b.certs);

    return failed;
}


static double
hg_bench_cpu(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
hg_bench_random(void *ctx, uint8_t *buf, size_t len)
{
    uint64_t  *state = ctx;
    size_t     i;

    for (i = 0; i < len; i++) {
        /* xorshift64 */
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        buf[i] = (uint8_t) *state;
    }

    return 0;
}


static void
hg_bench_addr(struct sockaddr_in *sin, int n)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t) (4000 + n));
    sin->sin_addr.s_addr = htonl(0x7f000001u);
}


/* ---- the engine ------------------------------------------------------- */

/* a handshake and an accepted HELLO between two fresh engines */
static int
hg_bench_pair(hg_bench_t *b, size_t mtu)
{
    int              round;
    size_t           replylen;
    ssize_t          n;
    hg_conn_t       *c;
    hg_event_t       ev;
    hg_hello_t       hello;
    hg_config_t      cfg;
    hg_listener_t   *l;
    uint8_t          reply[HG_MTU_MAX];
    static const uint8_t  cid_prefix[1] = { 0 };

    hg_config_defaults(&cfg);
    cfg.mtu = mtu;
    cfg.cb.random = hg_bench_random;
    cfg.cb.ctx = &b->rng;

    b->rng = 0x9e3779b97f4a7c15ULL;
    b->now = HG_BENCH_T0;
    b->edge = NULL;
    hg_bench_addr(&b->edge_addr, 0);
    hg_bench_addr(&b->agent_addr, 1);

    memset(&hello, 0, sizeof(hello));
    hello.domain = "bench.example.com";
    hello.api_key = "bench-key";
    hello.worker_hint = -1;

    l = hg_listener_new(&cfg, b->server_ctx, cid_prefix, sizeof(cid_prefix),
                        b->now);
    b->agent = hg_conn_client_new(&cfg, b->client_ctx, NULL, &hello,
                                  (struct sockaddr *) &b->edge_addr,
                                  sizeof(b->edge_addr), b->now);
    if (l == NULL || b->agent == NULL) {
        hg_listener_free(l);
        hg_conn_free(b->agent);
        return -1;
    }

    for (round = 0; round < 100 && !hg_conn_is_ready(b->agent); round++) {

        while (b->edge == NULL
               && (n = hg_conn_send(b->agent, b->dgram, sizeof(b->dgram),
                                    b->now)) > 0)
        {
            replylen = sizeof(reply);
            c = NULL;

            if (hg_listener_accept(l, b->dgram, (size_t) n,
                                   (struct sockaddr *) &b->agent_addr,
                                   sizeof(b->agent_addr), b->now, reply,
                                   &replylen, &c)
                == HG_AGAIN)
            {
                hg_conn_recv(b->agent, reply, replylen,
                             (struct sockaddr *) &b->edge_addr,
                             sizeof(b->edge_addr), b->now);
            }

            b->edge = c;
        }

        if (b->edge == NULL) {
            break;
        }

        hg_bench_flush(b, b->agent, b->edge, &b->agent_addr);

        while (hg_conn_next_event(b->edge, &ev) == HG_OK) {
            if (ev.type == HG_EV_HELLO) {
                hg_conn_accept(b->edge, 1, 0, 1, NULL, 0);
            }
        }

        hg_bench_flush(b, b->edge, b->agent, &b->edge_addr);
        hg_bench_drain_events(b->agent);
        b->now += HG_MS;
    }

    hg_listener_free(l);

    if (b->edge == NULL || !hg_conn_is_ready(b->agent)) {
        fprintf(stderr, "bench: engine handshake failed\n");
        hg_bench_pair_free(b);
        return -1;
    }

    return 0;
}


static void
hg_bench_pair_free(hg_bench_t *b)
{
    hg_conn_free(b->edge);
    hg_conn_free(b->agent);
    b->edge = NULL;
    b->agent = NULL;
}


/* everything `from` sends now goes to `to`; returns datagrams moved */
static uint64_t
hg_bench_flush(hg_bench_t *b, hg_conn_t *from, hg_conn_t *to,
    const struct sockaddr_in *addr)
{
    ssize_t   n;
    uint64_t  moved;

    moved = 0;

    while ((n = hg_conn_send(from, b->dgram, sizeof(b->dgram), b->now)) > 0)
    {
        hg_conn_recv(to, b->dgram, (size_t) n, (const struct sockaddr *) addr,
                     sizeof(*addr), b->now);
        moved++;
    }

    return moved;
}


static void
hg_bench_drain_events(hg_conn_t *c)
{
    hg_event_t  ev;

    while (hg_conn_next_event(c, &ev) == HG_OK) {
        /* nothing */
    }
}


/* nothing moved: the clock goes to the next deadline, timers run */
static void
hg_bench_wait(hg_bench_t *b)
{
    hg_time_t  t, d;

    t = hg_conn_deadline(b->edge);
    d = hg_conn_deadline(b->agent);
    if (d < t) {
        t = d;
    }

    b->now = t > b->now ? t : b->now + 1;

    if (hg_conn_deadline(b->edge) <= b->now) {
        hg_conn_timeout(b->edge, b->now);
    }

    if (hg_conn_deadline(b->agent) <= b->now) {
        hg_conn_timeout(b->agent, b->now);
    }
}


static int
hg_bench_engine(hg_bench_t *b, size_t mtu, uint64_t total,
    hg_bench_result_t *r)
{
    int               fin, shut;
    double            start;
    int64_t           id;
    ssize_t           n;
    uint64_t          written, received, moved, idle;
    hg_event_t        ev;
    hg_conn_stats_t   edge_before, edge_after, agent_before, agent_after;

    memset(r, 0, sizeof(*r));

    if (hg_bench_pair(b, mtu) != 0) {
        return -1;
    }

    snprintf(r->cipher, sizeof(r->cipher), "%s",
             SSL_get_cipher_name(hg_dtls_ssl(b->edge->dtls)));

    id = hg_stream_open(b->edge, NULL);
    if (id < 0) {
        fprintf(stderr, "bench: cannot open a stream\n");
        hg_bench_pair_free(b);
        return -1;
    }

    hg_conn_get_stats(b->edge, &edge_before);
    hg_conn_get_stats(b->agent, &agent_before);

    written = 0;
    received = 0;
    shut = 0;
    fin = 0;
    idle = 0;

    start = hg_bench_cpu();

    while (!fin) {

        /* the edge's application keeps the send buffer full */
        while (written < total) {
            n = hg_stream_write(b->edge, id, hg_bench_payload,
                                total - written < HG_BENCH_CHUNK
                                ? total - written : HG_BENCH_CHUNK);
            if (n <= 0) {
                break;
            }

            written += (uint64_t) n;
        }

        if (written == total && !shut) {
            hg_stream_shutdown(b->edge, id);
            shut = 1;
        }

        moved = hg_bench_flush(b, b->edge, b->agent, &b->edge_addr);

        /* the agent's application reads all that arrived */
        while (hg_conn_next_event(b->agent, &ev) == HG_OK) {
            if (ev.type != HG_EV_STREAM_READABLE) {
                continue;
            }

            while ((n = hg_stream_read(b->agent, ev.stream_id, hg_bench_sink,
                                       sizeof(hg_bench_sink), &fin))
                   > 0)
            {
                received += (uint64_t) n;
            }
        }

        moved += hg_bench_flush(b, b->agent, b->edge, &b->agent_addr);
        hg_bench_drain_events(b->edge);

        if (moved == 0 && !fin) {
            hg_bench_wait(b);

            if (++idle > 10000000) {
                fprintf(stderr, "bench: the transfer stalled at %llu "
                        "bytes\n", (unsigned long long) received);
                hg_bench_pair_free(b);
                return -1;
            }
        }
    }

    r->cpu = hg_bench_cpu() - start;

    hg_conn_get_stats(b->edge, &edge_after);
    hg_conn_get_stats(b->agent, &agent_after);

    r->bytes = received;
    r->packets = edge_after.packets_sent - edge_before.packets_sent;
    r->acks = agent_after.packets_sent - agent_before.packets_sent;
    r->record = (size_t) ((received + r->packets / 2) / r->packets);
    r->clock_jumps = idle;

    hg_bench_pair_free(b);

    if (received != total) {
        fprintf(stderr, "bench: %llu of %llu bytes arrived\n",
                (unsigned long long) received, (unsigned long long) total);
        return -1;
    }

    return 0;
}


/* ---- bare OpenSSL DTLS ----------------------------------------------- */

static int
hg_bench_bare(hg_bench_t *b, size_t mtu, const char *cipher, size_t record,
    uint64_t total, hg_bench_result_t *r)
{
    int                rc;
    double             start;
    size_t             n, want;
    uint64_t           sent, received;
    SSL               *client, *server;
    SSL_CTX           *cctx, *sctx;
    BIO_METHOD        *m;
    hg_bench_end_t     client_end, server_end;
    static hg_bench_queue_t  up, down;

    memset(r, 0, sizeof(*r));
    memset(&up, 0, sizeof(up));
    memset(&down, 0, sizeof(down));

    /* the engine's budget: its datagram minus the prefix */
    client_end.in = &down;
    client_end.out = &up;
    client_end.mtu = mtu - HG_PREFIX_LEN;
    server_end.in = &up;
    server_end.out = &down;
    server_end.mtu = mtu - HG_PREFIX_LEN;

    rc = -1;
    client = NULL;
    server = NULL;

    m = hg_bench_bio_method();
    sctx = hg_bench_bare_ctx(b, 1, cipher);
    cctx = hg_bench_bare_ctx(b, 0, cipher);

    if (m == NULL || sctx == NULL || cctx == NULL) {
        goto done;
    }

    client = hg_bench_bare_ssl(cctx, m, &client_end);
    server = hg_bench_bare_ssl(sctx, m, &server_end);

    if (client == NULL || server == NULL) {
        goto done;
    }

    SSL_set_connect_state(client);
    SSL_set_accept_state(server);

    if (hg_bench_bare_handshake(client, server) != 0) {
        fprintf(stderr, "bench: bare DTLS handshake failed\n");
        goto done;
    }

    snprintf(r->cipher, sizeof(r->cipher), "%s", SSL_get_cipher_name(client));

    sent = 0;
    received = 0;
    start = hg_bench_cpu();

    while (received < total) {
        want = total - sent < record ? total - sent : record;

        if (SSL_write_ex(client, hg_bench_payload, want, &n) != 1
            || SSL_read_ex(server, hg_bench_sink, sizeof(hg_bench_sink), &n)
               != 1)
        {
            fprintf(stderr, "bench: bare DTLS record failed\n");
            goto done;
        }

        sent += want;
        received += n;
        r->packets++;
    }

    r->cpu = hg_bench_cpu() - start;
    r->bytes = received;
    r->record = record;
    rc = 0;

done:

    ERR_print_errors_fp(stderr);
    SSL_free(client);
    SSL_free(server);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    BIO_meth_free(m);

    return rc;
}


static SSL_CTX *
hg_bench_bare_ctx(hg_bench_t *b, int server, const char *cipher)
{
    SSL_CTX  *ctx;

    ctx = SSL_CTX_new(DTLS_method());
    if (ctx == NULL) {
        return NULL;
    }

    if (!SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION)
        || !SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION)
        || !SSL_CTX_set_cipher_list(ctx, cipher)
        || (server
            && (SSL_CTX_use_certificate_chain_file(ctx, b->certs.cert) != 1
                || SSL_CTX_use_PrivateKey_file(ctx, b->certs.key,
                                               SSL_FILETYPE_PEM) != 1)))
    {
        SSL_CTX_free(ctx);
        return NULL;
    }

    SSL_CTX_set_options(ctx, SSL_OP_NO_QUERY_MTU | SSL_OP_NO_TICKET);

    return ctx;
}


static SSL *
hg_bench_bare_ssl(SSL_CTX *ctx, BIO_METHOD *m, hg_bench_end_t *end)
{
    SSL  *ssl;
    BIO  *bio;

    ssl = SSL_new(ctx);
    bio = BIO_new(m);

    if (ssl == NULL || bio == NULL) {
        SSL_free(ssl);
        BIO_free(bio);
        return NULL;
    }

    BIO_set_data(bio, end);
    SSL_set_bio(ssl, bio, bio);
    DTLS_set_link_mtu(ssl, (long) end->mtu);

    return ssl;
}


static int
hg_bench_bare_handshake(SSL *client, SSL *server)
{
    int  i, c, s;

    for (i = 0; i < 100; i++) {
        c = SSL_do_handshake(client);
        s = SSL_do_handshake(server);

        if (c == 1 && s == 1) {
            return 0;
        }

        if ((c != 1 && SSL_get_error(client, c) != SSL_ERROR_WANT_READ)
            || (s != 1 && SSL_get_error(server, s) != SSL_ERROR_WANT_READ))
        {
            return -1;
        }
    }

    return -1;
}


/* a datagram pipe: one BIO_write is one datagram, one BIO_read takes one */
static BIO_METHOD *
hg_bench_bio_method(void)
{
    BIO_METHOD  *m;

    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                     "bench datagram pipe");
    if (m == NULL) {
        return NULL;
    }

    if (!BIO_meth_set_write(m, hg_bench_bio_write)
        || !BIO_meth_set_read(m, hg_bench_bio_read)
        || !BIO_meth_set_ctrl(m, hg_bench_bio_ctrl)
        || !BIO_meth_set_create(m, hg_bench_bio_create))
    {
        BIO_meth_free(m);
        return NULL;
    }

    return m;
}


static int
hg_bench_bio_write(BIO *bio, const char *buf, int len)
{
    size_t             slot;
    hg_bench_end_t    *end;
    hg_bench_queue_t  *q;

    BIO_clear_retry_flags(bio);

    end = BIO_get_data(bio);
    q = end->out;

    if (len < 0 || (size_t) len > HG_MTU_MAX || q->count == HG_BENCH_QUEUE) {
        return -1;
    }

    slot = (q->head + q->count) % HG_BENCH_QUEUE;
    memcpy(q->data[slot], buf, (size_t) len);
    q->len[slot] = (size_t) len;
    q->count++;

    return len;
}


static int
hg_bench_bio_read(BIO *bio, char *buf, int size)
{
    size_t             n;
    hg_bench_end_t    *end;
    hg_bench_queue_t  *q;

    BIO_clear_retry_flags(bio);

    end = BIO_get_data(bio);
    q = end->in;

    if (q->count == 0) {
        BIO_set_retry_read(bio);
        return -1;
    }

    n = q->len[q->head] < (size_t) size ? q->len[q->head] : (size_t) size;
    memcpy(buf, q->data[q->head], n);
    q->head = (q->head + 1) % HG_BENCH_QUEUE;
    q->count--;

    return (int) n;
}


static long
hg_bench_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    hg_bench_end_t  *end;

    (void) num;
    (void) ptr;

    end = BIO_get_data(bio);

    switch (cmd) {

    case BIO_CTRL_DGRAM_QUERY_MTU:
    case BIO_CTRL_DGRAM_GET_MTU:
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
        return (long) end->mtu;

    case BIO_CTRL_PENDING:
        return end->in->count ? (long) end->in->len[end->in->head] : 0;

    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
        return 1;

    default:
        return 0;
    }
}


static int
hg_bench_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}
