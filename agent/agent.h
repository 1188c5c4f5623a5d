/*
 * hopgate-agent: the state shared by its files.
 *
 *   main.c            flags, signals, exit codes
 *   agent_loop.c      epoll, the monotonic clock, the main loop
 *   agent_session.c   one session per edge worker: dialling, coverage,
 *                     backoff, GOAWAY, drain
 *   agent_transport.c which carrier new sessions use (--transport auto:
 *                     UDP, TCP when UDP gets no answer, UDP again when
 *                     a probe gets one)
 *   agent_tcp.c       the TCP carrier: connect, CONNECT through a proxy,
 *                     TLS, the HTTP Upgrade, then packets
 *   agent_proxy.c     --proxy, HTTPS_PROXY and NO_PROXY
 *   agent_stream.c    each tunnel stream as a TCP connection to the
 *                     local target, pumped both ways with backpressure
 *   agent_target.c    the local target: its address, a probe at start
 *   agent_log.c       log lines, including one per stream
 *   agent_admin.c     `hopgate-agent admin`, a client of the admin API
 *   agent_metrics.c   --metrics: GET /metrics on a local TCP port
 *   agent_keygen.c    `hopgate-agent keygen`, a key and its registry line
 *   agent_notify.c    readiness and status for systemd (sd_notify)
 */

#ifndef HG_AGENT_H
#define HG_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/socket.h>

#include "agent_config.h"
#include "hg.h"


#define AGENT_MAX_WORKERS     64
#define AGENT_MAX_SESSIONS    (2 * AGENT_MAX_WORKERS + 8)
#define AGENT_PUMP_BUFFER     65536
#define AGENT_SEND_BATCH      32          /* datagrams per sendmmsg() */
#define AGENT_DRAIN_TIMEOUT   (10 * HG_SEC)
#define AGENT_BACKOFF_FIRST   (250 * HG_MS)
#define AGENT_BACKOFF_MAX     (30 * HG_SEC)
/* after the edge went away, a refused dial is tried again this soon ... */
#define AGENT_RESTART_RETRY   (200 * HG_MS)
/* ... for this long: an edge restart takes seconds, not minutes */
#define AGENT_RESTART_WINDOW  (60 * HG_SEC)
#define AGENT_STABLE_PERIOD   (60 * HG_SEC)
#define AGENT_IDENTITY_TRIES  3           /* certificate name mismatches */
/* auto: a UDP handshake not done by then sends new sessions over TCP */
#define AGENT_UDP_PATIENCE    (2 * HG_SEC)
#define AGENT_TCP_OUT         (256 * 1024)    /* TCP write buffer */
#define AGENT_TCP_HEAD_MAX    8192            /* a proxy's or the edge's
                                                 response head */
#define AGENT_TCP_PATH        "/.hopgate/tunnel"

#define AGENT_EXIT_OK         0
#define AGENT_EXIT_ERROR      1
#define AGENT_EXIT_USAGE      2
#define AGENT_EXIT_REJECTED   3

typedef struct agent_s          agent_t;
typedef struct agent_session_s  agent_session_t;
typedef struct agent_stream_s   agent_stream_t;
typedef struct agent_metrics_conn_s  agent_metrics_conn_t;


/* what an fd registered with epoll belongs to */
typedef enum {
    AGENT_FD_SESSION = 1,
    AGENT_FD_STREAM,
    AGENT_FD_SIGNAL,
    AGENT_FD_METRICS,
    AGENT_FD_PROBE,
    AGENT_FD_TUNNEL                   /* a session's TCP connection */
} agent_fd_kind_t;

typedef struct {
    agent_fd_kind_t   kind;
    void             *ptr;
} agent_fd_t;


/*
 * Why a session ended, when the agent decided it rather than the engine
 * (which reports its own ends as HG_EV_CLOSED with a code).
 */
typedef enum {
    AGENT_FAIL_NONE = 0,
    AGENT_FAIL_REFUSED            /* ICMP port unreachable: nothing listens
                                     on the edge's UDP port */
} agent_failure_t;

typedef enum {
    AGENT_SS_CONNECTING = 0,      /* handshake and HELLO */
    AGENT_SS_READY,
    AGENT_SS_DRAINING,            /* GOAWAY: finish streams, no new ones */
    AGENT_SS_DEAD
} agent_session_state_t;

typedef struct agent_tcp_s  agent_tcp_t;

/* an HTTP proxy for the TCP carrier (agent_proxy.c) */
typedef struct {
    int                     set;
    int                     auth;
    char                    host[256];
    char                    port[16];
    char                    user[256];
    char                    pass[256];
    char                    shown[600];       /* for logs: no password */
} agent_proxy_t;

struct agent_session_s {
    agent_t                *agent;
    agent_fd_t              tag;
    int                     fd;               /* connected UDP socket, or
                                                 the TCP connection */
    hg_carrier_t            carrier;
    agent_tcp_t            *tcp;              /* the TCP carrier's state */
    unsigned                probe:1;          /* auto on TCP: trying UDP */
    hg_conn_t              *conn;
    agent_session_state_t   state;
    agent_failure_t         failure;          /* set: freed at the tick */
    int                     aimed_at;         /* worker hint, -1 none */
    int                     worker;           /* from HELLO_ACK */
    uint32_t                worker_count;
    uint64_t                session_id;
    hg_time_t               dialled;
    hg_time_t               ready_at;
    uint64_t                streams;          /* served, ever */
    agent_stream_t         *stream_list;      /* live local connections */
    struct sockaddr_storage peer;
    socklen_t               peerlen;
};


typedef enum {
    AGENT_ST_CONNECTING = 0,      /* connect() to the local target */
    AGENT_ST_OPEN,
    AGENT_ST_CLOSED
} agent_stream_state_t;

struct agent_stream_s {
    agent_session_t        *session;
    agent_stream_t         *prev;
    agent_stream_t         *next;
    agent_fd_t              tag;
    int64_t                 id;
    int                     fd;               /* to the local target */
    agent_stream_state_t    state;
    uint32_t                events;           /* epoll interest */
    unsigned                local_eof:1;      /* target closed its side */
    unsigned                tunnel_fin:1;     /* FIN read from the tunnel */
    unsigned                local_shut:1;     /* we shut down its write */
    unsigned                blocked_up:1;     /* tunnel send buffer full */
    hg_time_t               opened;
    hg_stream_meta_t        meta;
    uint64_t                bytes_resp;       /* target -> tunnel */
    uint64_t                bytes_req;        /* tunnel -> target */
    uint8_t                *pending;          /* tunnel bytes not yet written */
    size_t                  pending_off;
    size_t                  pending_len;
    char                    method[16];       /* from the request line */
    char                    path[256];
    int                     status;           /* from the response line */
    char                    head_down[64];    /* first bytes, for parsing */
    size_t                  head_down_len;
    char                    head_up[32];
    size_t                  head_up_len;
};


struct agent_s {
    agent_config_t          cfg;
    int                     argc;
    char                  **argv;
    int                     epfd;
    int                     sigfd;
    agent_fd_t              sig_tag;
    SSL_CTX                *ssl;
    SSL_CTX                *tls;              /* the TCP carrier's */
    hg_config_t             engine;
    char                    server_host[256];
    char                    server_port[16];
    char                    tcp_host[256];    /* --tcp-server */
    char                    tcp_port[16];
    agent_proxy_t           proxy;
    hg_carrier_t            carrier;          /* what new sessions use */
    hg_time_t               udp_waiting;      /* auto: since when a UDP
                                                 dial is unanswered */
    hg_time_t               probe_at;         /* auto on TCP: next UDP try */
    uint64_t                switches;         /* carrier changes */
    struct sockaddr_storage target;
    socklen_t               targetlen;
    int                     probe_fd;         /* connect() to the target */
    agent_fd_t              probe_tag;
    char                    agent_id[32];

    agent_session_t        *sessions[AGENT_MAX_SESSIONS];
    int                     nsessions;
    uint32_t                worker_count;     /* 0 until a HELLO_ACK */
    hg_time_t               redial_at;        /* HG_TIME_INFINITE: none */
    hg_time_t               backoff;
    hg_time_t               stable_since;
    hg_time_t               edge_lost_at;     /* a ready session ended by
                                                 the edge going away */
    unsigned                failures;         /* consecutive */
    unsigned                identity_failures; /* consecutive */
    unsigned                duplicates;       /* consecutive HG_CODE_DUPLICATE */
    int                     draining;         /* SIGTERM received */
    agent_stream_t         *graveyard;        /* freed after the epoll batch */
    hg_time_t               drain_deadline;
    int                     exit_code;
    int                     done;
    uint64_t                rng;
    uint64_t                streams_total;
    uint64_t                reconnects;
    uint64_t                target_errors;
    uint64_t                target_wakeups;   /* readable target sockets */
    uint64_t                target_read;      /* bytes from local targets */
    uint64_t                target_written;   /* bytes to local targets */
    time_t                  started;          /* wall clock */
    agent_metrics_conn_t   *metrics;          /* the listener, or NULL */
};


/* agent_loop.c */
hg_time_t agent_now(void);
int agent_loop_init(agent_t *a);
int agent_loop_run(agent_t *a);
int agent_watch(agent_t *a, int fd, uint32_t events, agent_fd_t *tag);
int agent_rewatch(agent_t *a, int fd, uint32_t events, agent_fd_t *tag);
void agent_unwatch(agent_t *a, int fd);

/* main.c */
int agent_setup_tls(agent_t *a, const agent_config_t *cfg);
void agent_check_key_file(const agent_config_t *cfg);
void agent_split_host(const char *hostport, char *host, size_t len);
int agent_is_ip(const char *host);

/* agent_target.c */
int agent_set_target(agent_t *a, const char *to);
void agent_target_probe(agent_t *a);
void agent_target_probe_io(agent_t *a);
void agent_target_probe_stop(agent_t *a);

/* agent_session.c */
int agent_sessions_start(agent_t *a);
agent_session_t *agent_session_dial(agent_t *a, hg_carrier_t carrier,
    int aimed_at, hg_time_t now);
void agent_session_events(agent_session_t *s);
void agent_session_failed(agent_session_t *s, uint32_t code,
    const char *why);
int agent_session_live(const agent_session_t *s);
const char *agent_carrier_name(hg_carrier_t carrier);
void agent_parse_server(agent_t *a);
void agent_session_readable(agent_session_t *s);
void agent_session_flush(agent_session_t *s);
void agent_sessions_tick(agent_t *a, hg_time_t now);
hg_time_t agent_sessions_deadline(agent_t *a);
void agent_sessions_drain(agent_t *a);
void agent_sessions_reload(agent_t *a);
void agent_sessions_free(agent_t *a);
int agent_random(void *ctx, uint8_t *buf, size_t len);

/* agent_transport.c */
void agent_transport_init(agent_t *a);
void agent_transport_tick(agent_t *a, hg_time_t now);
void agent_transport_udp_failed(agent_t *a, const char *why);
void agent_transport_ready(agent_session_t *s);
hg_time_t agent_transport_deadline(agent_t *a);

/* agent_tcp.c */
int agent_tcp_setup(agent_t *a, const agent_config_t *cfg);
int agent_tcp_start(agent_session_t *s);
void agent_tcp_io(agent_session_t *s, uint32_t events);
void agent_tcp_flush(agent_session_t *s);
void agent_tcp_free(agent_session_t *s);

/* agent_proxy.c */
int agent_proxy_parse(agent_proxy_t *p, const char *url, char *err,
    size_t errlen);
int agent_proxy_choose(agent_proxy_t *p, const char *flag,
    const char *edge, char *err, size_t errlen);
int agent_proxy_authorization(const agent_proxy_t *p, char *out,
    size_t cap);

/* agent_stream.c */
void agent_stream_opened(agent_session_t *s, int64_t id,
    const hg_stream_meta_t *meta);
void agent_stream_event(agent_session_t *s, const hg_event_t *ev);
void agent_stream_io(agent_stream_t *st, uint32_t events);
void agent_streams_reap(agent_t *a);
void agent_stream_abort(agent_stream_t *st);

/* agent_metrics.c */
int agent_metrics_start(agent_t *a);
void agent_metrics_io(agent_metrics_conn_t *c, uint32_t events);
void agent_metrics_tick(agent_t *a, hg_time_t now);
void agent_metrics_stop(agent_t *a);

/* agent_admin.c: `hopgate-agent admin ...` */
int agent_admin_main(int argc, char **argv);
int agent_keygen_main(int argc, char **argv);

/* agent_log.c */
void agent_log_init(int level);

void agent_notify_init(void);
void agent_notify_connected(agent_t *a, int worker, unsigned workers);
void agent_notify_reloading(void);
void agent_notify_reloaded(agent_t *a);
void agent_notify_stopping(void);
void agent_notify_status(const char *status);
void agent_notify_tick(hg_time_t now);
void agent_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void agent_log_stream(const agent_stream_t *st, const char *outcome);
void agent_parse_request(agent_stream_t *st, const uint8_t *buf, size_t n);
void agent_parse_response(agent_stream_t *st, const uint8_t *buf, size_t n);

#endif /* HG_AGENT_H */
