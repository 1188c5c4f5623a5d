/*
 * HopGate metrics: counters in a shared-memory zone that every worker
 * adds to, so one scrape of any worker sees the whole edge; per-session
 * records in the same zone for hopgate_status; the hooks the rest of the
 * module calls when something worth counting happens.
 *
 *   ngx_http_hopgate_metrics_module.c  directives, process hooks
 *   ngx_hopgate_metrics_zone.c         the shared zone, worker slots
 *   ngx_hopgate_metrics.c              the hooks, the 1 Hz harvest
 *   ngx_hopgate_metrics_prometheus.c   /metrics: Prometheus exposition
 *   ngx_hopgate_status.c               hopgate_status: sessions as JSON
 *   ngx_hopgate_variables.c            $hopgate_* variables
 *
 * Without hopgate_metrics_zone the hooks do nothing.
 */

#ifndef NGX_HOPGATE_METRICS_H
#define NGX_HOPGATE_METRICS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include "hg.h"
#include "ngx_hopgate_body.h"


/* how a handshake ended: hopgate_handshakes_total{result} */
typedef enum {
    NGX_HOPGATE_HS_OK = 0,
    NGX_HOPGATE_HS_BAD_KEY,
    NGX_HOPGATE_HS_UNKNOWN_DOMAIN,
    NGX_HOPGATE_HS_DISABLED,
    NGX_HOPGATE_HS_REGISTRY_DOWN,
    NGX_HOPGATE_HS_DNS_GATE,
    NGX_HOPGATE_HS_TIMEOUT,
    NGX_HOPGATE_HS_COOKIE_FAIL,
    NGX_HOPGATE_HS_BUSY,
    NGX_HOPGATE_HS_GOING_AWAY,
    NGX_HOPGATE_HS_ERROR,
    NGX_HOPGATE_HS_N
} ngx_hopgate_handshake_result_e;


/* why a request's tunnel part failed: hopgate_streams_failed_total{reason} */
typedef enum {
    NGX_HOPGATE_STREAM_NO_TUNNEL = 0,   /* no session came up in time */
    NGX_HOPGATE_STREAM_LIMIT,           /* the session took no more */
    NGX_HOPGATE_STREAM_TUNNEL_CLOSED,   /* the session ended under it */
    NGX_HOPGATE_STREAM_AGENT_RESET,     /* the agent or its target failed */
    NGX_HOPGATE_STREAM_CLIENT_CLOSED,   /* nginx dropped the connection */
    NGX_HOPGATE_STREAM_INTERNAL,        /* out of memory and the like */
    NGX_HOPGATE_STREAM_UNKNOWN_DOMAIN,  /* no such tunnel: a 404 */
    NGX_HOPGATE_STREAM_N
} ngx_hopgate_stream_fail_e;


typedef struct ngx_hopgate_metrics_domain_s  ngx_hopgate_metrics_domain_t;
typedef struct ngx_hopgate_metrics_record_s  ngx_hopgate_metrics_record_t;


/* what the metrics keep for a session (inside ngx_hopgate_session_t) */
typedef struct {
    ngx_hopgate_metrics_domain_t  *domain;   /* shared, once ready */
    ngx_hopgate_metrics_record_t  *record;   /* shared, for hopgate_status */
    hg_conn_stats_t                counted;  /* added to the zone so far */
    ngx_uint_t                     state;    /* as counted in the gauges */
    time_t                         since;    /* wall clock, when ready */
    unsigned                       verdict:1;    /* result counted */
} ngx_hopgate_metrics_session_t;


/* the request's tunnel, for $hopgate_* (inside the module's request ctx) */
typedef struct {
    struct ngx_hopgate_pump_s     *pump;     /* while it lives */
    uint64_t                       session;
    int64_t                        stream;
    hg_time_t                      rtt;
    size_t                         domain_len;
    size_t                         addr_len;
    u_char                         domain[254];
    u_char                         addr[NGX_SOCKADDR_STRLEN];
    unsigned                       attached:1;
    unsigned                       cleanup:1;
} ngx_hopgate_metrics_request_t;


/* ---- the zone: shared by every worker, kept across reloads ------------- */

#define NGX_HOPGATE_METRICS_WORKERS   512     /* worker slots */
#define NGX_HOPGATE_METRICS_BUCKETS   12
#define NGX_HOPGATE_METRICS_ADDR_LEN                                         \
    (NGX_INET6_ADDRSTRLEN + sizeof("[]:65535"))

/* session states in hopgate_sessions{state} */
enum {
    NGX_HOPGATE_SS_NONE = 0,
    NGX_HOPGATE_SS_HANDSHAKE,
    NGX_HOPGATE_SS_READY,
    NGX_HOPGATE_SS_DRAINING,
    NGX_HOPGATE_SS_N
};

/* registry query results in hopgate_registry_queries_total{result} */
enum {
    NGX_HOPGATE_REG_OK = 0,
    NGX_HOPGATE_REG_BAD_KEY,
    NGX_HOPGATE_REG_UNKNOWN_DOMAIN,
    NGX_HOPGATE_REG_DISABLED,
    NGX_HOPGATE_REG_ERROR,
    NGX_HOPGATE_REG_N
};


/* per-bucket (not cumulative) counts; the last one is +Inf */
typedef struct {
    ngx_atomic_t                   count[NGX_HOPGATE_METRICS_BUCKETS + 1];
    ngx_atomic_t                   sum;      /* microseconds */
} ngx_hopgate_histogram_t;


struct ngx_hopgate_metrics_domain_s {
    ngx_str_node_t                 sn;
    ngx_queue_t                    queue;
    ngx_atomic_t                   streams_opened;
    ngx_atomic_t                   streams_failed;
    ngx_atomic_t                   stream_bytes[2];  /* sent, received */
    ngx_atomic_t                   packets_sent;
    ngx_atomic_t                   packets_lost;
    ngx_hopgate_histogram_t        rtt;
    ngx_uint_t                     sessions; /* counted under the lock */
    u_char                         name[1];
};


/* a live session, for hopgate_status; its owner refreshes it each second */
struct ngx_hopgate_metrics_record_s {
    ngx_queue_t                    queue;
    ngx_hopgate_metrics_domain_t  *domain;
    uint64_t                       id;
    ngx_uint_t                     slot;     /* the owner's worker slot */
    time_t                         since;
    ngx_atomic_t                   state;
    ngx_atomic_t                   rtt;      /* microseconds */
    ngx_atomic_t                   cwnd;
    ngx_atomic_t                   packets_sent;
    ngx_atomic_t                   packets_lost;
    ngx_atomic_t                   streams;
    ngx_atomic_t                   bytes_sent;
    ngx_atomic_t                   bytes_received;
    ngx_uint_t                     transport;    /* 1: the stream carrier */
    size_t                         domain_len;
    size_t                         addr_len;
    size_t                         version_len;
    u_char                        *domain_name;
    u_char                        *addr;     /* ..._ADDR_LEN bytes */
    u_char                        *version;
};


/* a worker process: its pid and its sessions' gauges */
typedef struct {
    ngx_pid_t                      pid;
    ngx_int_t                      worker;
    ngx_atomic_t                   sessions[NGX_HOPGATE_SS_N];
    ngx_atomic_t                   transport[2]; /* ready or draining:
                                                    udp, tcp */
} ngx_hopgate_metrics_worker_t;


typedef struct {
    uint32_t                       magic;
    time_t                         created;
    ngx_atomic_t                   handshakes[NGX_HOPGATE_HS_N];
    ngx_atomic_t                   streams_opened;
    ngx_atomic_t                   streams_failed[NGX_HOPGATE_STREAM_N];
    ngx_atomic_t                   stream_bytes[2];    /* sent, received */
    ngx_atomic_t                   datagram_bytes[2];
    ngx_atomic_t                   packets[2];
    ngx_atomic_t                   packets_lost;
    ngx_atomic_t                   packets_retransmitted;
    ngx_atomic_t                   malformed;
    ngx_atomic_t                   registry[NGX_HOPGATE_REG_N];
    ngx_atomic_t                   zone_full;
    ngx_hopgate_histogram_t        rtt;
    ngx_hopgate_histogram_t        registry_latency;
    ngx_rbtree_t                   domains;
    ngx_rbtree_node_t              sentinel;
    ngx_queue_t                    domain_list;
    ngx_uint_t                     ndomains;
    ngx_hopgate_metrics_domain_t  *other;
    ngx_queue_t                    records;
    ngx_hopgate_metrics_worker_t   workers[NGX_HOPGATE_METRICS_WORKERS];
} ngx_hopgate_metrics_shctx_t;


typedef struct {
    ngx_slab_pool_t               *shpool;
    ngx_hopgate_metrics_shctx_t   *sh;
} ngx_hopgate_metrics_zone_t;


typedef struct {
    ngx_shm_zone_t                *zone;
    ngx_uint_t                     max_domains;
    ngx_str_t                      used;     /* a directive that needs it */
} ngx_http_hopgate_metrics_main_conf_t;


typedef struct {
    ngx_flag_t                     status;   /* hopgate_status here */
} ngx_http_hopgate_metrics_loc_conf_t;


extern ngx_module_t  ngx_http_hopgate_metrics_module;


/* ---- between the metrics files ------------------------------------------ */

/* this process's view (ngx_hopgate_metrics_zone.c): NULL without a zone */
extern ngx_hopgate_metrics_zone_t    *ngx_hopgate_metrics;
extern ngx_hopgate_metrics_worker_t  *ngx_hopgate_metrics_slot;
extern ngx_uint_t                     ngx_hopgate_metrics_slot_index;
extern ngx_uint_t                     ngx_hopgate_metrics_max;

/* histogram bounds, microseconds */
extern const uint64_t  ngx_hopgate_rtt_bounds[NGX_HOPGATE_METRICS_BUCKETS];
extern const uint64_t
    ngx_hopgate_registry_bounds[NGX_HOPGATE_METRICS_BUCKETS];

ngx_int_t ngx_hopgate_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_hopgate_metrics_attach(ngx_cycle_t *cycle,
    ngx_shm_zone_t *shm_zone, ngx_uint_t max_domains);
void ngx_hopgate_metrics_detach(void);

/*
 * For the handlers, under the zone's lock: forget the workers that died
 * without a word (a crash) and their sessions.
 */
void ngx_hopgate_metrics_reap(ngx_hopgate_metrics_zone_t *zone);

/* ngx_hopgate_metrics.c: the harvest each second, in a worker with a zone */
void ngx_hopgate_metrics_start(ngx_cycle_t *cycle);

/* ngx_hopgate_metrics_prometheus.c */
char *ngx_hopgate_prometheus_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_hopgate_acme_status.c: the ACME series, if hopgate_acme is on */
ngx_int_t ngx_hopgate_acme_metrics(ngx_hopgate_body_t *out,
    ngx_uint_t max_domains);


/* hooks: each is a no-op without a metrics zone */
struct ngx_hopgate_session_s;
struct ngx_hopgate_pump_s;

void ngx_hopgate_metrics_session_update(struct ngx_hopgate_session_s *s);
void ngx_hopgate_metrics_session_close(struct ngx_hopgate_session_s *s);
void ngx_hopgate_metrics_verdict(struct ngx_hopgate_session_s *s,
    ngx_int_t rc, uint32_t code);
void ngx_hopgate_metrics_handshake(ngx_uint_t result);
void ngx_hopgate_metrics_stream_open(struct ngx_hopgate_pump_s *p);
void ngx_hopgate_metrics_stream_failed(struct ngx_hopgate_pump_s *p,
    ngx_uint_t reason);
void ngx_hopgate_metrics_stream_close(struct ngx_hopgate_pump_s *p);

/*
 * For registry backends: one query that reached the backing store (not a
 * cache hit), its verdict (rc NGX_OK or NGX_DECLINED with an HG_CODE_*,
 * NGX_ERROR when the store failed) and how long it took in microseconds.
 */
void ngx_hopgate_metrics_registry(ngx_int_t rc, uint32_t code,
    uint64_t usec);

/* ngx_hopgate_status.c */
char *ngx_hopgate_status_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_hopgate_variables.c */
ngx_int_t ngx_hopgate_variables_add(ngx_conf_t *cf);
void ngx_hopgate_variables_link(ngx_http_request_t *r,
    struct ngx_hopgate_pump_s *p, ngx_str_t *domain);
void ngx_hopgate_variables_attach(struct ngx_hopgate_pump_s *p);
void ngx_hopgate_variables_unlink(struct ngx_hopgate_pump_s *p);

#endif /* NGX_HOPGATE_METRICS_H */
