/*
 * Idle tunnel sessions for measuring what a session costs the edge: one
 * process opens N sessions, each from its own UDP socket (so its own
 * source port, as N agents would), completes the DTLS handshake and the
 * HELLO for its own domain and key, and then keeps the sessions alive
 * (answering the edge's keepalives) until SIGTERM/SIGINT, when it closes
 * them all and exits.
 *
 * Session i serves domain s<i>.<suffix> with key hg_bench_<i>_<tag>; the
 * registry lines for them (domain and SHA-256 of the key) come from
 * --print-registry, so nothing else has to hash 1000 keys.
 *
 *   session_gen --print-registry N SUFFIX TAG
 *   session_gen HOST PORT CA_FILE N SUFFIX TAG [CONCURRENCY]
 *   session_gen --half-open HOST PORT N SOURCES SECONDS
 *
 * Prints "ready N failed M" once every session is ready or has failed
 * (or after 60 s), then "closed" at exit. Exit code 0 when all N were
 * ready.
 *
 * --half-open: N handshakes that pass the cookie and go silent, spread
 * over SOURCES source addresses 127.1.x.y (loopback answers for all of
 * 127/8). Each sends its ClientHello, answers the HelloVerifyRequest with
 * the cookie ClientHello, and then only listens, counting what the edge
 * sends it; a handshake that hears nothing within 3 s (the edge dropped
 * its hello) counts as refused. Prints "dialled N silent S refused R"
 * once each has gone silent or been refused, then, SECONDS later,
 * "datagrams D copies C most M": D datagrams received in all while
 * silent, C copies of the flights (a datagram identical to the first
 * one a handshake received), M the most copies one handshake got.
 *
 * Links build/libhgproto.a; drives hg_conn as the agent does
 * (agent/agent_session.c), with one epoll loop for all sessions.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hg.h"


#define GEN_SETUP_LIMIT  (60 * HG_SEC)
#define GEN_COOKIE_WAIT  (3 * HG_SEC)

typedef enum {
    GEN_IDLE = 0,         /* not dialled yet */
    GEN_CONNECTING,
    GEN_READY,
    GEN_FAILED,
    GEN_SILENT            /* --half-open: cookie sent, only listening */
} gen_state_t;

typedef struct {
    hg_conn_t    *conn;
    int           fd;
    gen_state_t   state;
    char          domain[128];
    char          key[128];
    hg_time_t     dialled;
    uint64_t      first;        /* --half-open: the first datagram heard */
    unsigned      heard;
    unsigned      copies;
} gen_session_t;


static volatile sig_atomic_t  gen_stop;


static void
gen_signal(int sig)
{
    (void) sig;
    gen_stop = 1;
}


static hg_time_t
gen_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (hg_time_t) ts.tv_sec * HG_SEC + (hg_time_t) ts.tv_nsec / 1000;
}


static int
gen_random(void *ctx, uint8_t *buf, size_t len)
{
    (void) ctx;

    return RAND_bytes(buf, (int) len) == 1 ? 0 : -1;
}


static void
gen_names(gen_session_t *s, int i, const char *suffix, const char *tag)
{
    snprintf(s->domain, sizeof(s->domain), "s%d.%s", i, suffix);
    snprintf(s->key, sizeof(s->key), "hg_bench_%d_%s", i, tag);
}


static int
gen_print_registry(int n, const char *suffix, const char *tag)
{
    gen_session_t  s;
    unsigned char  md[EVP_MAX_MD_SIZE];
    unsigned int   mdlen, j;
    int            i;

    for (i = 0; i < n; i++) {
        gen_names(&s, i, suffix, tag);

        if (EVP_Digest(s.key, strlen(s.key), md, &mdlen, EVP_sha256(), NULL)
            != 1)
        {
            return 1;
        }

        printf("%s ", s.domain);
        for (j = 0; j < mdlen; j++) {
            printf("%02x", md[j]);
        }
        printf("\n");
    }

    return 0;
}


static void
gen_flush(gen_session_t *s, hg_time_t now)
{
    uint8_t  buf[HG_MTU_MAX + 64];
    ssize_t  n;

    if (s->conn == NULL) {
        return;
    }

    while ((n = hg_conn_send(s->conn, buf, sizeof(buf), now)) > 0) {
        /* a dropped datagram is repeated by the engine's recovery */
        (void) send(s->fd, buf, (size_t) n, 0);
    }
}


static void
gen_events(gen_session_t *s, int *ready, int *failed)
{
    hg_event_t  ev;

    while (hg_conn_next_event(s->conn, &ev) == HG_OK) {
        switch (ev.type) {

        case HG_EV_READY:
            if (s->state == GEN_CONNECTING) {
                s->state = GEN_READY;
                (*ready)++;
            }
            break;

        case HG_EV_REJECTED:
        case HG_EV_CLOSED:
            if (s->state == GEN_READY) {
                (*ready)--;
            }
            if (s->state != GEN_FAILED) {
                fprintf(stderr, "session_gen: %s %s: %s (%s)\n", s->domain,
                        ev.type == HG_EV_REJECTED ? "rejected" : "closed",
                        ev.text ? ev.text : "", hg_code_name(ev.code));
                s->state = GEN_FAILED;
                (*failed)++;
            }
            break;

        case HG_EV_STREAM_OPENED:
            /* an idle session serves nothing */
            hg_stream_reset(s->conn, ev.stream_id, HG_STREAM_ERR_REFUSED);
            break;

        default:
            break;
        }
    }
}


static int
gen_dial(gen_session_t *s, const struct sockaddr_in *peer, SSL_CTX *ctx,
    const hg_config_t *cfg, int epfd, int index, hg_time_t now)
{
    hg_hello_t          hello;
    struct epoll_event  ee;

    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd == -1
        || connect(s->fd, (const struct sockaddr *) peer, sizeof(*peer))
           == -1)
    {
        perror("session_gen: UDP socket");
        return -1;
    }

    memset(&hello, 0, sizeof(hello));
    hello.domain = s->domain;
    hello.api_key = s->key;
    hello.agent_version = HG_VERSION_STRING;
    hello.agent_id = s->domain;
    hello.worker_hint = -1;

    s->conn = hg_conn_client_new(cfg, ctx, NULL, &hello,
                                 (const struct sockaddr *) peer,
                                 sizeof(*peer), now);
    if (s->conn == NULL) {
        fprintf(stderr, "session_gen: hg_conn_client_new failed\n");
        return -1;
    }

    memset(&ee, 0, sizeof(ee));
    ee.events = EPOLLIN;
    ee.data.u32 = (uint32_t) index;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ee) == -1) {
        perror("session_gen: epoll_ctl");
        return -1;
    }

    s->state = GEN_CONNECTING;
    gen_flush(s, now);

    return 0;
}


static uint64_t
gen_digest(const uint8_t *buf, size_t len)
{
    uint64_t  h;
    size_t    i;

    /* FNV-1a: only to tell copies of one datagram from others */
    h = 14695981039346656037ULL;
    for (i = 0; i < len; i++) {
        h = (h ^ buf[i]) * 1099511628211ULL;
    }

    return h;
}


static int
gen_half_open_dial(gen_session_t *s, const struct sockaddr_in *peer,
    SSL_CTX *ctx, const hg_config_t *cfg, int epfd, int index, int source,
    hg_time_t now)
{
    hg_hello_t          hello;
    struct epoll_event  ee;
    struct sockaddr_in  local;

    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd == -1) {
        perror("session_gen: UDP socket");
        return -1;
    }

    memset(&local, 0, sizeof(local));
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(0x7f010000 | (uint32_t) (source / 250) << 8
                                  | (uint32_t) (source % 250 + 1));

    if (bind(s->fd, (struct sockaddr *) &local, sizeof(local)) == -1
        || connect(s->fd, (const struct sockaddr *) peer, sizeof(*peer))
           == -1)
    {
        perror("session_gen: bind/connect");
        return -1;
    }

    memset(&hello, 0, sizeof(hello));
    hello.domain = "half-open.invalid";
    hello.api_key = "none";
    hello.agent_version = HG_VERSION_STRING;
    hello.agent_id = "half-open";
    hello.worker_hint = -1;

    s->conn = hg_conn_client_new(cfg, ctx, NULL, &hello,
                                 (const struct sockaddr *) peer,
                                 sizeof(*peer), now);
    if (s->conn == NULL) {
        fprintf(stderr, "session_gen: hg_conn_client_new failed\n");
        return -1;
    }

    memset(&ee, 0, sizeof(ee));
    ee.events = EPOLLIN;
    ee.data.u32 = (uint32_t) index;

    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ee) == -1) {
        perror("session_gen: epoll_ctl");
        return -1;
    }

    s->state = GEN_CONNECTING;
    s->dialled = now;
    gen_flush(s, now);

    return 0;
}


/* a datagram for a handshake of --half-open */
static void
gen_half_open_recv(gen_session_t *s, const uint8_t *buf, size_t len,
    const struct sockaddr_in *peer, hg_time_t now, int *silent)
{
    uint64_t  h;

    if (s->state == GEN_CONNECTING) {
        /* the HelloVerifyRequest: answer with the cookie, then go quiet */
        hg_conn_recv(s->conn, buf, len, (const struct sockaddr *) peer,
                     sizeof(*peer), now);
        gen_flush(s, now);
        hg_conn_free(s->conn);
        s->conn = NULL;
        s->state = GEN_SILENT;
        (*silent)++;
        return;
    }

    if (s->state != GEN_SILENT) {
        return;
    }

    h = gen_digest(buf, len);

    if (s->heard++ == 0) {
        s->first = h;
    }

    if (h == s->first) {
        s->copies++;
    }
}


static int
gen_half_open(int argc, char **argv)
{
    struct sockaddr_in     peer;
    struct epoll_event     evs[256];
    hg_tls_client_opts_t   opts;
    hg_config_t            cfg;
    gen_session_t         *ss, *s;
    SSL_CTX               *ctx;
    hg_time_t              now, end;
    uint8_t                buf[2048];
    char                   err[256];
    ssize_t                n;
    int                    total, sources, seconds, next, silent, refused;
    int                    epfd, nev, i, k, dialling, announced;
    unsigned long long     datagrams, copies;
    unsigned               most;

    if (argc != 7) {
        fprintf(stderr, "usage: session_gen --half-open HOST PORT N "
                "SOURCES SECONDS\n");
        return 2;
    }

    memset(&peer, 0, sizeof(peer));
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t) atoi(argv[3]));

    total = atoi(argv[4]);
    sources = atoi(argv[5]);
    seconds = atoi(argv[6]);

    if (inet_pton(AF_INET, argv[2], &peer.sin_addr) != 1 || total <= 0
        || sources <= 0 || sources > 250 * 250 || seconds < 0)
    {
        fprintf(stderr, "session_gen: bad HOST, N, SOURCES or SECONDS\n");
        return 2;
    }

    /* the cookie exchange needs no verification: the flight is ignored */
    memset(&opts, 0, sizeof(opts));
    opts.insecure = 1;
    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "session_gen: %s\n", err);
        return 1;
    }

    hg_config_defaults(&cfg);
    cfg.cb.random = gen_random;

    ss = calloc((size_t) total, sizeof(gen_session_t));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ss == NULL || epfd == -1) {
        perror("session_gen");
        return 1;
    }

    for (i = 0; i < total; i++) {
        ss[i].fd = -1;
    }

    signal(SIGTERM, gen_signal);
    signal(SIGINT, gen_signal);

    next = silent = refused = announced = 0;
    end = HG_TIME_INFINITE;

    while (!gen_stop) {
        now = gen_now();

        if (now >= end) {
            break;
        }

        /* give up on hellos the edge dropped; keep 64 exchanges going */
        dialling = 0;
        for (i = 0; i < next; i++) {
            s = &ss[i];

            if (s->state != GEN_CONNECTING) {
                continue;
            }

            if (now - s->dialled > GEN_COOKIE_WAIT) {
                hg_conn_free(s->conn);
                s->conn = NULL;
                s->state = GEN_FAILED;
                refused++;
                continue;
            }

            if (hg_conn_deadline(s->conn) <= now) {
                hg_conn_timeout(s->conn, now);
                gen_flush(s, now);
            }

            dialling++;
        }

        while (next < total && dialling < 64) {
            if (gen_half_open_dial(&ss[next], &peer, ctx, &cfg, epfd, next,
                                   next % sources, now)
                != 0)
            {
                return 1;
            }

            next++;
            dialling++;
        }

        if (!announced && next == total && silent + refused == total) {
            printf("dialled %d silent %d refused %d\n", total, silent,
                   refused);
            fflush(stdout);
            announced = 1;
            end = now + (hg_time_t) seconds * HG_SEC;
        }

        nev = epoll_wait(epfd, evs, 256, 10);
        if (nev == -1 && errno != EINTR) {
            perror("session_gen: epoll_wait");
            return 1;
        }

        now = gen_now();

        for (k = 0; k < nev; k++) {
            s = &ss[evs[k].data.u32];

            while ((n = recv(s->fd, buf, sizeof(buf), 0)) >= 0) {
                gen_half_open_recv(s, buf, (size_t) n, &peer, now, &silent);
            }
        }
    }

    datagrams = copies = 0;
    most = 0;

    for (i = 0; i < total; i++) {
        datagrams += ss[i].heard;
        copies += ss[i].copies;
        most = ss[i].copies > most ? ss[i].copies : most;

        hg_conn_free(ss[i].conn);
        if (ss[i].fd != -1) {
            close(ss[i].fd);
        }
    }

    printf("datagrams %llu copies %llu most %u\n", datagrams, copies, most);

    free(ss);
    close(epfd);
    SSL_CTX_free(ctx);

    return 0;
}


int
main(int argc, char **argv)
{
    struct sockaddr_in     peer;
    struct epoll_event     evs[256];
    hg_tls_client_opts_t   opts;
    hg_config_t            cfg;
    gen_session_t         *ss, *s;
    SSL_CTX               *ctx;
    hg_time_t              now, t, deadline, started;
    uint8_t                buf[2048];
    char                   err[256];
    ssize_t                n;
    int                    total, concurrency, next, ready, failed, i, k;
    int                    epfd, nev, timeout, announced, connecting;

    if (argc == 5 && strcmp(argv[1], "--print-registry") == 0) {
        return gen_print_registry(atoi(argv[2]), argv[3], argv[4]);
    }

    if (argc > 1 && strcmp(argv[1], "--half-open") == 0) {
        return gen_half_open(argc, argv);
    }

    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: session_gen --print-registry N SUFFIX TAG\n"
                "       session_gen HOST PORT CA_FILE N SUFFIX TAG "
                "[CONCURRENCY]\n"
                "       session_gen --half-open HOST PORT N SOURCES "
                "SECONDS\n");
        return 2;
    }

    memset(&peer, 0, sizeof(peer));
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t) atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
        fprintf(stderr, "session_gen: HOST must be an IPv4 address\n");
        return 2;
    }

    total = atoi(argv[4]);
    concurrency = argc == 8 ? atoi(argv[7]) : 64;
    if (total <= 0 || concurrency <= 0) {
        fprintf(stderr, "session_gen: bad N or CONCURRENCY\n");
        return 2;
    }

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = argv[3];

    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "session_gen: %s\n", err);
        return 1;
    }

    hg_config_defaults(&cfg);
    cfg.cb.random = gen_random;

    ss = calloc((size_t) total, sizeof(gen_session_t));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ss == NULL || epfd == -1) {
        perror("session_gen");
        return 1;
    }

    for (i = 0; i < total; i++) {
        gen_names(&ss[i], i, argv[5], argv[6]);
        ss[i].fd = -1;
    }

    signal(SIGTERM, gen_signal);
    signal(SIGINT, gen_signal);
    signal(SIGPIPE, SIG_IGN);

    started = gen_now();
    next = 0;
    ready = 0;
    failed = 0;
    announced = 0;

    while (!gen_stop) {
        now = gen_now();

        /* at most `concurrency` handshakes at a time */
        connecting = 0;
        for (i = 0; i < next; i++) {
            connecting += ss[i].state == GEN_CONNECTING;
        }
        while (next < total && connecting < concurrency) {
            if (gen_dial(&ss[next], &peer, ctx, &cfg, epfd, next, now)
                != 0)
            {
                ss[next].state = GEN_FAILED;
                failed++;
            } else {
                connecting++;
            }
            next++;
        }

        if (!announced
            && (ready + failed == total
                || now - started > GEN_SETUP_LIMIT))
        {
            printf("ready %d failed %d\n", ready, failed);
            fflush(stdout);
            announced = 1;
        }

        deadline = HG_TIME_INFINITE;
        for (i = 0; i < next; i++) {
            if (ss[i].conn == NULL) {
                continue;
            }
            t = hg_conn_deadline(ss[i].conn);
            if (t < deadline) {
                deadline = t;
            }
        }

        if (deadline == HG_TIME_INFINITE) {
            timeout = 1000;
        } else if (deadline <= now) {
            timeout = 0;
        } else {
            t = (deadline - now + HG_MS - 1) / HG_MS;
            timeout = t > 1000 ? 1000 : (int) t;
        }

        nev = epoll_wait(epfd, evs, 256, timeout);
        if (nev == -1 && errno != EINTR) {
            perror("session_gen: epoll_wait");
            break;
        }

        now = gen_now();

        for (k = 0; k < nev; k++) {
            s = &ss[evs[k].data.u32];

            while ((n = recv(s->fd, buf, sizeof(buf), 0)) >= 0) {
                hg_conn_recv(s->conn, buf, (size_t) n,
                             (const struct sockaddr *) &peer, sizeof(peer),
                             now);
            }

            gen_events(s, &ready, &failed);
            gen_flush(s, now);
        }

        for (i = 0; i < next; i++) {
            s = &ss[i];
            if (s->conn == NULL) {
                continue;
            }
            if (hg_conn_deadline(s->conn) <= now) {
                hg_conn_timeout(s->conn, now);
                gen_events(s, &ready, &failed);
                gen_flush(s, now);
            }
        }
    }

    /* close every session so the edge frees it now, not at idle timeout */
    now = gen_now();
    for (i = 0; i < total; i++) {
        if (ss[i].conn) {
            hg_conn_close(ss[i].conn, HG_CODE_NORMAL, "bench over");
            gen_flush(&ss[i], now);
        }
    }

    for (i = 0; i < total; i++) {
        if (ss[i].conn) {
            hg_conn_free(ss[i].conn);
        }
        if (ss[i].fd != -1) {
            close(ss[i].fd);
        }
    }

    free(ss);
    close(epfd);
    SSL_CTX_free(ctx);

    printf("closed\n");

    return ready == total ? 0 : 1;
}
