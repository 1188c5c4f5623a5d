/*
 * HopGate for nginx: what the module's files share.
 *
 *   ngx_http_hopgate_module.c    directives, configuration, process hooks
 *   ngx_hopgate_listener.c       UDP sockets, reuseport steering, the
 *                                datagram path between workers
 *   ngx_hopgate_session.c        a worker's sessions: the engine, timers,
 *                                HELLO decisions, the domain index
 *   ngx_hopgate_tunnel.c         hopgate_tunnel: sessions on TLS/TCP
 *                                after an HTTP Upgrade (UDP blocked)
 *   ngx_hopgate_upstream.c       the balancer: a tunnel as a peer
 *   ngx_hopgate_pump.c           one stream <-> one socketpair
 *   ngx_hopgate_registry.c       the registry interface (see its header);
 *   ngx_hopgate_registry_file.c  the file backend
 *   ngx_hopgate_registry_pg.c    the PostgreSQL backend, over
 *   ngx_hopgate_pg.c             asynchronous libpq connections
 *   ngx_hopgate_dnsgate.c        hopgate_expect_ips: a registry wrapper
 *   ngx_hopgate_admin.c          the admin API (hopgate_admin)
 *   ngx_hopgate_pages.c          branded 404/502/504 pages
 *   ngx_hopgate_body.c           a response body built in pool buffers
 *   ngx_http_hopgate_metrics_module.c  the metrics module: directives,
 *                                process hooks; its zone, hooks, output
 *                                formats and variables in
 *                                ngx_hopgate_metrics*.c, _status.c and
 *                                _variables.c (see ngx_hopgate_metrics.h)
 *   ngx_hopgate_acme*.c          the ACME module: certificates for
 *                                registered domains (see ngx_hopgate_acme.h)
 */

#ifndef NGX_HTTP_HOPGATE_MODULE_H
#define NGX_HTTP_HOPGATE_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include "hg.h"
#include "ngx_hopgate_registry.h"
#include "ngx_hopgate_metrics.h"


#define NGX_HOPGATE_TAG_LEN        4       /* process tag inside a cid */
#define NGX_HOPGATE_DOMAIN_MAX     253
#define NGX_HOPGATE_SEND_BATCH     32      /* datagrams per sendmmsg() */


typedef struct ngx_hopgate_session_s   ngx_hopgate_session_t;
typedef struct ngx_hopgate_pump_s      ngx_hopgate_pump_t;
typedef struct ngx_hopgate_domain_s    ngx_hopgate_domain_t;
typedef struct ngx_hopgate_listener_s  ngx_hopgate_listener_t;
typedef struct ngx_hopgate_halfopen_s  ngx_hopgate_halfopen_t;
typedef struct ngx_hopgate_tunnel_s    ngx_hopgate_tunnel_t;


/* the module's request context: branded pages, the request's tunnel */
typedef struct {
    ngx_http_request_t             *request;
    ngx_uint_t                      branded;   /* 0: no, else the status */
    ngx_uint_t                      failed;    /* NGX_HOPGATE_STREAM_* + 1
                                                  of the last tunnel try */
    ngx_str_t                       page;      /* the branded page */
    unsigned                        unknown:1; /* the 404 is ours: no such
                                                  tunnel */
    ngx_hopgate_metrics_request_t   tunnel;
    ngx_hopgate_tunnel_t           *carrier;   /* hopgate_tunnel's */
} ngx_http_hopgate_ctx_t;


/* one hopgate_listen directive */
typedef struct {
    ngx_sockaddr_t               sockaddr;
    socklen_t                    socklen;
    ngx_str_t                    addr_text;
    unsigned                     reuseport:1;
    ngx_uint_t                   index;      /* position among listens */
} ngx_http_hopgate_listen_t;


typedef struct {
    ngx_array_t                  listen;     /* ngx_http_hopgate_listen_t */
    ngx_str_t                    certificate;
    ngx_str_t                    certificate_key;
    size_t                       mtu;
    ngx_msec_t                   idle_timeout;
    ngx_msec_t                   keepalive;
    ngx_msec_t                   handshake_timeout;
    ngx_uint_t                   max_streams;
    size_t                       stream_buffer;
    size_t                       session_buffer;
    ngx_str_t                    registry;
    ngx_hopgate_registry_t      *reg;
    ngx_msec_t                   registry_cache_ttl;
    ngx_msec_t                   registry_timeout;
    ngx_array_t                 *expect_ips; /* ngx_addr_t, the DNS gate */
    ngx_array_t                  upstreams;  /* upstream_srv_conf_t *,
                                                those with "hopgate" */
    ngx_flag_t                   tunnel;     /* a hopgate_tunnel location */
    SSL_CTX                     *ssl_ctx;
    ngx_log_t                   *log;
    ngx_uint_t                   generation; /* configurations loaded */
} ngx_http_hopgate_main_conf_t;


typedef struct {
    ngx_http_complex_value_t    *route;
    ngx_msec_t                   connect_timeout;
    u_char                      *admin_key;  /* SHA-256 of the token */
    ngx_flag_t                   admin;
} ngx_http_hopgate_loc_conf_t;


typedef struct {
    ngx_http_upstream_srv_conf_t *fallback;  /* round robin over the
                                                server lines; NULL: none */
} ngx_http_hopgate_upstream_conf_t;


/* a worker's receiving end of one hopgate_listen */
struct ngx_hopgate_listener_s {
    ngx_listening_t             *ls;
    ngx_connection_t            *conn;       /* our own dup of the socket */
    hg_listener_t               *engine;
    ngx_uint_t                   index;
    ngx_sockaddr_t               dst;        /* where the datagram in hand */
    socklen_t                    dst_len;    /* went; 0: not wildcard */
};


/* a domain with live sessions or waiting requests in this worker */
struct ngx_hopgate_domain_s {
    ngx_str_node_t               sn;         /* key: crc32 of the name */
    ngx_queue_t                  sessions;   /* ready sessions */
    ngx_queue_t                  waiters;    /* pumps waiting for one */
    u_char                       name[NGX_HOPGATE_DOMAIN_MAX + 1];
};


struct ngx_hopgate_session_s {
    ngx_rbtree_node_t            cid_node;   /* key: the cid's random end */
    ngx_rbtree_node_t            addr_node;  /* key: hash of the peer */
    ngx_queue_t                  domain_link;
    hg_conn_t                   *conn;
    ngx_hopgate_listener_t      *listener;   /* the datagram carrier's */
    ngx_hopgate_tunnel_t        *tunnel;     /* the stream carrier's, while
                                                its connection is open */
    ngx_hopgate_domain_t        *domain;
    ngx_event_t                  timer;      /* the engine's deadline */
    ngx_event_t                  run;        /* posted: act after a change */
    uint64_t                     id;
    ngx_msec_t                   started;
    ngx_uint_t                   streams;    /* open pumps */
    uint64_t                     picked;     /* when last chosen */
    ngx_queue_t                  pumps;
    u_char                       addr_text[NGX_SOCKADDR_STRLEN];
    size_t                       addr_len;
    ngx_sockaddr_t               local;      /* where the agent sends to, */
    socklen_t                    local_len;  /* 0: the socket's address */
    u_char                       agent_version[64];
    u_char                       agent_id[64];
    ngx_int_t                    worker_hint; /* the worker it aimed at */
    u_char                       domain_name[NGX_HOPGATE_DOMAIN_MAX + 1];
    size_t                       domain_len;
    ngx_hopgate_metrics_session_t  metrics;
    ngx_hopgate_halfopen_t      *halfopen;   /* counted until DTLS is up */
    unsigned                     ready:1;
    unsigned                     checking:1; /* the registry is deciding */
    unsigned                     draining:1; /* the agent said GOAWAY */
    unsigned                     in_addr_tree:1;
    unsigned                     destroying:1;
};


struct ngx_hopgate_pump_s {
    ngx_queue_t                  link;       /* session pumps or waiters */
    ngx_http_hopgate_ctx_t      *ctx;        /* the request's, while alive */
    ngx_hopgate_session_t       *session;
    ngx_hopgate_domain_t        *waiting;
    ngx_connection_t            *conn;       /* our end of the socketpair */
    int64_t                      stream_id;
    ngx_event_t                  wait_timer;
    ngx_msec_t                   wait;       /* hopgate_connect_timeout */
    hg_stream_meta_t             meta;
    u_char                      *buf;        /* stream -> socket bytes */
    size_t                       buf_pos;
    size_t                       buf_len;
    unsigned                     stream_fin:1;   /* FIN read from stream */
    unsigned                     socket_eof:1;   /* nginx side closed */
    unsigned                     write_shut:1;
    unsigned                     blocked:1;      /* stream send buffer full */
    unsigned                     failed:1;
    unsigned                     lookup:1;       /* the registry is asked */
    unsigned                     answer_unknown:1;   /* no fallbacks: 404 */
    unsigned                     answered:1;     /* the 404 is sent */
};


/* the process-wide state of one worker */
typedef struct {
    ngx_http_hopgate_main_conf_t *conf;
    ngx_hopgate_listener_t       *listeners;
    ngx_uint_t                    nlisteners;
    ngx_rbtree_t                  by_cid;
    ngx_rbtree_node_t             by_cid_sentinel;
    ngx_rbtree_t                  by_addr;
    ngx_rbtree_node_t             by_addr_sentinel;
    ngx_rbtree_t                  domains;
    ngx_rbtree_node_t             domains_sentinel;
    hg_config_t                   engine;
    uint8_t                       tag[NGX_HOPGATE_TAG_LEN];
    ngx_connection_t             *forward;   /* unix datagram socket */
    ngx_connection_t             *steer;     /* and by worker index */
    ngx_int_t                     forward_slot;  /* the last sender's */
    ngx_uint_t                    forward_refused;
    time_t                        forward_logged;
    ngx_connection_t             *exit_watch; /* told when the worker
                                                 quits (tunnels only) */
    ngx_queue_t                   tunnels;   /* open hopgate_tunnel
                                                connections */
    ngx_uint_t                    nsessions;
    uint64_t                      next_session;
    uint64_t                      picks;
    uint64_t                      malformed;
    time_t                        reset_second;
    ngx_uint_t                    resets;
    unsigned                      exiting:1;
} ngx_hopgate_worker_t;


extern ngx_module_t            ngx_http_hopgate_module;
extern ngx_hopgate_worker_t   *ngx_hopgate_worker;


/* ngx_hopgate_listener.c */
ngx_int_t ngx_hopgate_listen_add(ngx_conf_t *cf,
    ngx_http_hopgate_listen_t *hl);
ngx_int_t ngx_hopgate_steer_attach(ngx_cycle_t *cycle,
    ngx_http_hopgate_main_conf_t *hmcf);
ngx_int_t ngx_hopgate_listen_configure(ngx_cycle_t *cycle,
    ngx_http_hopgate_main_conf_t *hmcf);
ngx_int_t ngx_hopgate_listeners_init(ngx_cycle_t *cycle,
    ngx_hopgate_worker_t *w);
void ngx_hopgate_listeners_close(ngx_hopgate_worker_t *w);
/* a reply to the datagram in hand, from the address it was sent to */
void ngx_hopgate_send(ngx_hopgate_listener_t *l, const u_char *buf,
    size_t len, const struct sockaddr *to, socklen_t tolen);
/* a session's datagrams, from its local address (none: the socket's) */
void ngx_hopgate_send_batch(ngx_hopgate_listener_t *l,
    u_char (*bufs)[HG_MTU_MAX + 64], size_t *lens, ngx_uint_t count,
    const struct sockaddr *to, socklen_t tolen,
    const struct sockaddr *local, socklen_t locallen);
ngx_int_t ngx_hopgate_forward(ngx_hopgate_listener_t *l, const u_char *cid,
    const u_char *dgram, size_t len, const struct sockaddr *from,
    socklen_t fromlen);
/* to the worker of that index of this configuration (software steering) */
ngx_int_t ngx_hopgate_forward_steered(ngx_hopgate_listener_t *l,
    ngx_uint_t worker, const u_char *dgram, size_t len,
    const struct sockaddr *from, socklen_t fromlen);
/* to this worker's successor of a later configuration (after a reload) */
ngx_int_t ngx_hopgate_forward_successor(ngx_hopgate_listener_t *l,
    const u_char *dgram, size_t len, const struct sockaddr *from,
    socklen_t fromlen);
ngx_uint_t ngx_hopgate_next_generation(void);

/* ngx_hopgate_session.c */
void ngx_hopgate_datagram(ngx_hopgate_listener_t *l, u_char *buf,
    size_t len, struct sockaddr *from, socklen_t fromlen);
void ngx_hopgate_datagram_forwarded(ngx_hopgate_listener_t *l, u_char *buf,
    size_t len, struct sockaddr *from, socklen_t fromlen);
ngx_hopgate_session_t *ngx_hopgate_session_create(hg_conn_t *conn,
    struct sockaddr *from, socklen_t fromlen);
void ngx_hopgate_session_destroy(ngx_hopgate_session_t *s);
const char *ngx_hopgate_session_transport(ngx_hopgate_session_t *s);
void ngx_hopgate_session_run(ngx_hopgate_session_t *s);
/* the address the session's agent sends to: set at accept, and when an
   authenticated datagram moves the session; len 0 for the socket's own */
void ngx_hopgate_session_set_local(ngx_hopgate_session_t *s,
    const struct sockaddr *local, socklen_t len);
void ngx_hopgate_session_kick(ngx_hopgate_session_t *s);
void ngx_hopgate_domain_release(ngx_hopgate_domain_t *d);
ngx_hopgate_domain_t *ngx_hopgate_domain_get(ngx_str_t *name,
    ngx_uint_t create);
ngx_hopgate_session_t *ngx_hopgate_domain_pick(ngx_hopgate_domain_t *d,
    uint64_t avoid);
void ngx_hopgate_sessions_goaway(ngx_hopgate_worker_t *w);
void ngx_hopgate_sessions_close(ngx_hopgate_worker_t *w);
hg_time_t ngx_hopgate_now(void);
int ngx_hopgate_random(void *ctx, uint8_t *buf, size_t len);
int ngx_hopgate_cid_taken(void *ctx, const uint8_t *cid);
void ngx_hopgate_engine_log(void *ctx, int level, const char *msg);

/* ngx_hopgate_tunnel.c */
char *ngx_hopgate_tunnel_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_hopgate_tunnels_init(ngx_cycle_t *cycle,
    ngx_hopgate_worker_t *w);
void ngx_hopgate_tunnels_close(ngx_hopgate_worker_t *w);
void ngx_hopgate_tunnel_output(ngx_hopgate_session_t *s);
void ngx_hopgate_tunnel_detach(ngx_hopgate_session_t *s);

/* ngx_hopgate_halfopen.c */
ngx_int_t ngx_hopgate_halfopen_admit(struct sockaddr *sa, socklen_t len);
ngx_int_t ngx_hopgate_halfopen_add(ngx_hopgate_session_t *s,
    struct sockaddr *sa, socklen_t len);
void ngx_hopgate_halfopen_established(ngx_hopgate_session_t *s);
void ngx_hopgate_halfopen_freed(ngx_hopgate_session_t *s);

/* ngx_hopgate_pump.c */
ngx_int_t ngx_hopgate_pump_create(ngx_http_request_t *r,
    ngx_peer_connection_t *pc, ngx_str_t *domain, ngx_msec_t wait,
    uint64_t *session, ngx_uint_t answer_unknown);
void ngx_hopgate_pump_attach(ngx_hopgate_pump_t *p,
    ngx_hopgate_session_t *s);
void ngx_hopgate_pump_event(ngx_hopgate_session_t *s, hg_event_t *ev);
void ngx_hopgate_pump_fail(ngx_hopgate_pump_t *p, ngx_uint_t reason);
void ngx_hopgate_pump_detach(ngx_hopgate_pump_t *p);


/* ngx_hopgate_admin.c */
ngx_int_t ngx_hopgate_admin_init(ngx_conf_t *cf);
char *ngx_hopgate_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_hopgate_admin_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_hopgate_admin_authorized(ngx_http_request_t *r,
    ngx_http_hopgate_loc_conf_t *hlcf);

/* ngx_hopgate_dnsgate.c */
ngx_int_t ngx_hopgate_dnsgate_wrap(ngx_conf_t *cf,
    ngx_http_hopgate_main_conf_t *hmcf);

/* ngx_hopgate_upstream.c */
char *ngx_http_hopgate_upstream(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_hopgate_upstream_check(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);

/* ngx_hopgate_pages.c */
ngx_int_t ngx_hopgate_pages_init(ngx_conf_t *cf);
void ngx_hopgate_pages_mark(ngx_http_request_t *r);
ngx_int_t ngx_hopgate_pages_no_tunnel(ngx_http_hopgate_ctx_t *ctx);

#endif /* NGX_HTTP_HOPGATE_MODULE_H */
