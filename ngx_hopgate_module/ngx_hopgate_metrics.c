/*
 * Metrics: counters in a shared-memory zone (hopgate_metrics_zone) that
 * every worker adds to, and the Prometheus text exposition of them
 * (location = /metrics { hopgate_metrics; }).
 *
 * Counters are atomic adds, done where the event happens (a handshake
 * decided, a stream opened or failed) or, for what the engine counts
 * itself (packets, bytes, losses), as deltas of the session's statistics
 * taken each second, when a stream ends and when the session ends.
 * Session gauges live in per-worker slots, so a worker that dies takes
 * its gauges with it. Per-domain series are kept for at most
 * hopgate_metrics_max_domains domains; the others add up under
 * domain="_other".
 *
 * The zone keeps its data across reloads (nginx hands the old zone to the
 * new cycle when name and size are unchanged): counters never reset while
 * the master runs.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_METRICS_MAGIC     0x68676d31    /* the layout: "hgm1" */
#define NGX_HOPGATE_METRICS_TICK      1000
#define NGX_HOPGATE_METRICS_MIN_SIZE  (128 * 1024)
#define NGX_HOPGATE_METRICS_OTHER     "_other"


static ngx_int_t ngx_http_hopgate_metrics_preconfiguration(ngx_conf_t *cf);
static void *ngx_http_hopgate_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_metrics_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_hopgate_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_hopgate_metrics_zone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_metrics_max_domains(ngx_conf_t *cf,
    void *post, void *data);
static char *ngx_http_hopgate_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_hopgate_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_hopgate_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_hopgate_metrics_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_hopgate_metrics_handler(ngx_http_request_t *r);

static void ngx_hopgate_metrics_tick(ngx_event_t *ev);
static void ngx_hopgate_metrics_harvest(ngx_hopgate_session_t *s,
    hg_conn_stats_t *st);
static void ngx_hopgate_metrics_session_ready(ngx_hopgate_session_t *s);
static void ngx_hopgate_metrics_record(ngx_hopgate_session_t *s,
    hg_conn_stats_t *st);
static ngx_hopgate_metrics_domain_t *ngx_hopgate_metrics_domain(
    ngx_str_t *name, ngx_uint_t create);
static void ngx_hopgate_metrics_observe(ngx_hopgate_histogram_t *h,
    const uint64_t *bounds, uint64_t usec);
static void ngx_hopgate_metrics_free_slot(ngx_hopgate_metrics_zone_t *zone,
    ngx_uint_t slot);


/* histogram bounds, microseconds */
static const uint64_t  ngx_hopgate_rtt_bounds[NGX_HOPGATE_METRICS_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000
};

static const uint64_t  ngx_hopgate_registry_bounds[NGX_HOPGATE_METRICS_BUCKETS]
    = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    1000000
};


/* label values, in the order of the enums */
static const char  *ngx_hopgate_handshake_results[NGX_HOPGATE_HS_N] = {
    "ok", "bad_key", "unknown_domain", "disabled", "registry_down",
    "dns_gate", "timeout", "cookie_fail", "busy", "going_away", "error"
};

static const char  *ngx_hopgate_stream_reasons[NGX_HOPGATE_STREAM_N] = {
    "no_tunnel", "stream_limit", "tunnel_closed", "agent_reset",
    "client_closed", "internal"
};

static const char  *ngx_hopgate_session_states[NGX_HOPGATE_SS_N] = {
    NULL, "handshake", "ready", "draining"
};

static const char  *ngx_hopgate_registry_results[NGX_HOPGATE_REG_N] = {
    "ok", "bad_key", "unknown_domain", "disabled", "error"
};


/* this process's view: NULL when there is no zone */
static ngx_hopgate_metrics_zone_t    *ngx_hopgate_metrics;
static ngx_hopgate_metrics_worker_t  *ngx_hopgate_metrics_slot;
static ngx_uint_t                     ngx_hopgate_metrics_slot_index;
static ngx_uint_t                     ngx_hopgate_metrics_max;
static ngx_event_t                    ngx_hopgate_metrics_timer;

/* what the worker and its listeners counted that is already in the zone */
static uint64_t                       ngx_hopgate_metrics_malformed;
static hg_listener_stats_t           *ngx_hopgate_metrics_listeners;


static ngx_conf_post_t  ngx_http_hopgate_metrics_max_domains_post = {
    ngx_http_hopgate_metrics_max_domains
};


static ngx_command_t  ngx_http_hopgate_metrics_commands[] = {

    { ngx_string("hopgate_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_hopgate_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_metrics_max_domains"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_metrics_main_conf_t, max_domains),
      &ngx_http_hopgate_metrics_max_domains_post },

    { ngx_string("hopgate_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_hopgate_metrics,
      0,
      0,
      NULL },

    { ngx_string("hopgate_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_status_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hopgate_metrics_module_ctx = {
    ngx_http_hopgate_metrics_preconfiguration, /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_hopgate_metrics_create_main_conf, /* create main configuration */
    ngx_http_hopgate_metrics_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hopgate_metrics_create_loc_conf,  /* create location conf */
    ngx_http_hopgate_metrics_merge_loc_conf    /* merge location conf */
};


ngx_module_t  ngx_http_hopgate_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_hopgate_metrics_module_ctx,  /* module context */
    ngx_http_hopgate_metrics_commands,     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_hopgate_metrics_init_process, /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hopgate_metrics_exit_process, /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- configuration ------------------------------------------------------ */

static ngx_int_t
ngx_http_hopgate_metrics_preconfiguration(ngx_conf_t *cf)
{
    return ngx_hopgate_variables_add(cf);
}


static void *
ngx_http_hopgate_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->zone = NULL;
     *     mmcf->used = { 0, NULL };
     */

    mmcf->max_domains = NGX_CONF_UNSET_UINT;

    return mmcf;
}


static char *
ngx_http_hopgate_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf = conf;

    ngx_conf_init_uint_value(mmcf->max_domains, 100);

    if (mmcf->used.len && mmcf->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"hopgate_metrics_zone\" in the "
                           "http block", &mmcf->used);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_hopgate_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_metrics_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_metrics_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->status = 0;
     */

    return mlcf;
}


/* the hopgate module's location settings are merged by now */
static char *
ngx_http_hopgate_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_hopgate_metrics_loc_conf_t  *conf = child;

    ngx_http_hopgate_loc_conf_t  *hlcf;

    if (!conf->status) {
        return NGX_CONF_OK;
    }

    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_hopgate_module);

    if (hlcf->admin_key == NULL || hlcf->admin_key == NGX_CONF_UNSET_PTR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_status\" needs "
                           "\"hopgate_admin_key_file\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf = conf;

    ssize_t                      size;
    ngx_str_t                   *value;
    ngx_hopgate_metrics_zone_t  *zone;

    if (mmcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" of the "
                           "\"hopgate_metrics_zone\" directive", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < NGX_HOPGATE_METRICS_MIN_SIZE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_zone\" size must be at least "
                           "128k, not \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_metrics_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mmcf->zone = ngx_shared_memory_add(cf, &value[1], size,
                                       &ngx_http_hopgate_metrics_module);
    if (mmcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (mmcf->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_zone\": zone \"%V\" is "
                           "already used", &value[1]);
        return NGX_CONF_ERROR;
    }

    mmcf->zone->init = ngx_http_hopgate_metrics_init_zone;
    mmcf->zone->data = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_metrics_max_domains(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *n = data;

    if (*n < 1 || *n > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_max_domains\" must be between "
                           "1 and 100000, not %ui", *n);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t              *clcf;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_hopgate_metrics_handler;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_metrics_module);
    mmcf->used = cmd->name;

    return NGX_CONF_OK;
}


/*
 * A zone from the previous cycle (same name and size) is taken over as it
 * is: that is what keeps the counters across a reload.
 */
static ngx_int_t
ngx_http_hopgate_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_hopgate_metrics_zone_t  *ozone = data;

    size_t                        len;
    ngx_str_t                     other;
    ngx_hopgate_metrics_zone_t   *zone;
    ngx_hopgate_metrics_shctx_t  *sh;

    zone = shm_zone->data;

    if (ozone) {
        zone->shpool = ozone->shpool;
        zone->sh = ozone->sh;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(zone->shpool, sizeof(ngx_hopgate_metrics_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool->data = sh;

    sh->magic = NGX_HOPGATE_METRICS_MAGIC;
    sh->created = ngx_time();

    ngx_rbtree_init(&sh->domains, &sh->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->domain_list);
    ngx_queue_init(&sh->records);

    len = sizeof(" in hopgate_metrics_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in hopgate_metrics_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* running out of zone memory is counted, not logged each time */
    zone->shpool->log_nomem = 0;

    /* the catch-all entry exists from the start, outside the bound */
    ngx_str_set(&other, NGX_HOPGATE_METRICS_OTHER);

    len = offsetof(ngx_hopgate_metrics_domain_t, name) + other.len + 1;

    sh->other = ngx_slab_calloc(zone->shpool, len);
    if (sh->other == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(sh->other->name, other.data, other.len);
    sh->other->sn.str.data = sh->other->name;
    sh->other->sn.str.len = other.len;
    ngx_queue_init(&sh->other->queue);

    return NGX_OK;
}


/* ---- process hooks ---------------------------------------------------- */

static ngx_int_t
ngx_http_hopgate_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                             i;
    ngx_hopgate_metrics_zone_t            *zone;
    ngx_hopgate_metrics_shctx_t           *sh;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_hopgate_metrics_module);

    if (mmcf == NULL || mmcf->zone == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    zone = mmcf->zone->data;
    sh = zone->sh;

    if (sh->magic != NGX_HOPGATE_METRICS_MAGIC) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "hopgate_metrics_zone \"%V\" was made by another "
                      "version of the module: give the zone a new name",
                      &mmcf->zone->shm.name);
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_hopgate_metrics_reap(zone);

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        if (sh->workers[i].pid == 0) {
            ngx_memzero(&sh->workers[i], sizeof(ngx_hopgate_metrics_worker_t));
            sh->workers[i].pid = ngx_pid;
            sh->workers[i].worker = ngx_worker;
            ngx_hopgate_metrics_slot = &sh->workers[i];
            ngx_hopgate_metrics_slot_index = i;
            break;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (ngx_hopgate_metrics_slot == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "hopgate: %d worker processes report metrics "
                      "already; this one's sessions are not shown",
                      NGX_HOPGATE_METRICS_WORKERS);
    }

    ngx_hopgate_metrics = zone;
    ngx_hopgate_metrics_max = mmcf->max_domains;

    ngx_hopgate_metrics_timer.handler = ngx_hopgate_metrics_tick;
    ngx_hopgate_metrics_timer.log = cycle->log;
    ngx_hopgate_metrics_timer.data = zone;
    ngx_hopgate_metrics_timer.cancelable = 1;

    ngx_add_timer(&ngx_hopgate_metrics_timer, NGX_HOPGATE_METRICS_TICK);

    return NGX_OK;
}


static void
ngx_http_hopgate_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_hopgate_metrics_zone_t  *zone = ngx_hopgate_metrics;

    if (zone == NULL) {
        return;
    }

    ngx_hopgate_metrics = NULL;

    if (ngx_hopgate_metrics_slot) {
        ngx_shmtx_lock(&zone->shpool->mutex);
        ngx_hopgate_metrics_free_slot(zone, ngx_hopgate_metrics_slot_index);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_hopgate_metrics_slot = NULL;
    }
}


/* under the lock: the slot and the records of its sessions go */
static void
ngx_hopgate_metrics_free_slot(ngx_hopgate_metrics_zone_t *zone,
    ngx_uint_t slot)
{
    ngx_queue_t                   *q, *next;
    ngx_hopgate_metrics_record_t  *rec;

    for (q = ngx_queue_head(&zone->sh->records);
         q != ngx_queue_sentinel(&zone->sh->records);
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_hopgate_metrics_record_t, queue);

        if (rec->slot == slot) {
            ngx_queue_remove(q);
            ngx_slab_free_locked(zone->shpool, rec);
        }
    }

    ngx_memzero(&zone->sh->workers[slot],
                sizeof(ngx_hopgate_metrics_worker_t));
}


void
ngx_hopgate_metrics_reap(ngx_hopgate_metrics_zone_t *zone)
{
    ngx_uint_t                     i;
    ngx_hopgate_metrics_worker_t  *mw;

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        mw = &zone->sh->workers[i];

        if (mw->pid == 0 || mw->pid == ngx_pid) {
            continue;
        }

        if (kill(mw->pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "hopgate: worker process %P is gone, dropping "
                          "its sessions from the metrics", mw->pid);
            ngx_hopgate_metrics_free_slot(zone, i);
        }
    }
}


/* ---- the hooks ---------------------------------------------------------- */

static void
ngx_hopgate_metrics_add(ngx_atomic_t *counter, uint64_t n)
{
    if (n) {
        (void) ngx_atomic_fetch_add(counter, (ngx_atomic_int_t) n);
    }
}


/* what grew since `counted`; the engine's counters only grow */
static uint64_t
ngx_hopgate_metrics_delta(uint64_t now, uint64_t *counted)
{
    uint64_t  d;

    if (now <= *counted) {
        return 0;
    }

    d = now - *counted;
    *counted = now;

    return d;
}


static void
ngx_hopgate_metrics_observe(ngx_hopgate_histogram_t *h,
    const uint64_t *bounds, uint64_t usec)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HOPGATE_METRICS_BUCKETS; i++) {
        if (usec <= bounds[i]) {
            break;
        }
    }

    ngx_hopgate_metrics_add(&h->count[i], 1);
    ngx_hopgate_metrics_add(&h->sum, usec);
}


void
ngx_hopgate_metrics_handshake(ngx_uint_t result)
{
    if (ngx_hopgate_metrics) {
        ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->handshakes[result],
                                1);
    }
}


void
ngx_hopgate_metrics_verdict(ngx_hopgate_session_t *s, ngx_int_t rc,
    uint32_t code)
{
    ngx_uint_t  result;

    if (rc == NGX_OK) {
        result = NGX_HOPGATE_HS_OK;

    } else {
        switch (code) {
        case HG_CODE_BAD_KEY:
            result = NGX_HOPGATE_HS_BAD_KEY;
            break;
        case HG_CODE_UNKNOWN_DOMAIN:
            result = NGX_HOPGATE_HS_UNKNOWN_DOMAIN;
            break;
        case HG_CODE_DISABLED:
        case HG_CODE_REVOKED:
            result = NGX_HOPGATE_HS_DISABLED;
            break;
        case HG_CODE_REGISTRY_DOWN:
            result = NGX_HOPGATE_HS_REGISTRY_DOWN;
            break;
        case HG_CODE_DNS_GATE:
            result = NGX_HOPGATE_HS_DNS_GATE;
            break;
        case HG_CODE_BUSY:
            result = NGX_HOPGATE_HS_BUSY;
            break;
        case HG_CODE_GOING_AWAY:
            result = NGX_HOPGATE_HS_GOING_AWAY;
            break;
        case HG_CODE_HANDSHAKE_TIMEOUT:
            result = NGX_HOPGATE_HS_TIMEOUT;
            break;
        default:
            result = NGX_HOPGATE_HS_ERROR;
            break;
        }
    }

    s->metrics.verdict = 1;

    ngx_hopgate_metrics_handshake(result);
}


void
ngx_hopgate_metrics_registry(ngx_int_t rc, uint32_t code, uint64_t usec)
{
    ngx_uint_t                    result;
    ngx_hopgate_metrics_shctx_t  *sh;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    sh = ngx_hopgate_metrics->sh;

    if (rc == NGX_OK) {
        result = NGX_HOPGATE_REG_OK;

    } else if (rc == NGX_ERROR) {
        result = NGX_HOPGATE_REG_ERROR;

    } else {
        switch (code) {
        case HG_CODE_BAD_KEY:
            result = NGX_HOPGATE_REG_BAD_KEY;
            break;
        case HG_CODE_UNKNOWN_DOMAIN:
            result = NGX_HOPGATE_REG_UNKNOWN_DOMAIN;
            break;
        case HG_CODE_DISABLED:
        case HG_CODE_REVOKED:
            result = NGX_HOPGATE_REG_DISABLED;
            break;
        default:
            result = NGX_HOPGATE_REG_ERROR;
            break;
        }
    }

    ngx_hopgate_metrics_add(&sh->registry[result], 1);
    ngx_hopgate_metrics_observe(&sh->registry_latency,
                                ngx_hopgate_registry_bounds, usec);
}


/* the session's state as the gauges count it */
static ngx_uint_t
ngx_hopgate_metrics_state(ngx_hopgate_session_t *s)
{
    if (s->ready) {
        return (s->draining || ngx_hopgate_worker->exiting)
               ? NGX_HOPGATE_SS_DRAINING : NGX_HOPGATE_SS_READY;
    }

    /* once ready, a session that is no more is closing */
    return s->metrics.domain ? NGX_HOPGATE_SS_DRAINING
                             : NGX_HOPGATE_SS_HANDSHAKE;
}


void
ngx_hopgate_metrics_session_update(ngx_hopgate_session_t *s)
{
    ngx_uint_t  state;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    state = ngx_hopgate_metrics_state(s);

    if (state == s->metrics.state) {
        return;
    }

    if (ngx_hopgate_metrics_slot) {
        if (s->metrics.state != NGX_HOPGATE_SS_NONE) {
            ngx_hopgate_metrics_slot->sessions[s->metrics.state]--;
        }
        ngx_hopgate_metrics_slot->sessions[state]++;
    }

    s->metrics.state = state;

    if (state != NGX_HOPGATE_SS_HANDSHAKE && s->metrics.domain == NULL) {
        ngx_hopgate_metrics_session_ready(s);
    }

    if (s->metrics.record) {
        s->metrics.record->state = state;
    }
}


/* a session was accepted: its domain's series and its status record */
static void
ngx_hopgate_metrics_session_ready(ngx_hopgate_session_t *s)
{
    u_char                        *p;
    size_t                         size;
    ngx_str_t                      name;
    hg_conn_stats_t                st;
    ngx_slab_pool_t               *shpool;
    ngx_hopgate_metrics_record_t  *rec;

    /* what the handshake cost counts for the edge, not for the domain */
    ngx_hopgate_metrics_harvest(s, &st);

    name.data = s->domain_name;
    name.len = s->domain_len;

    shpool = ngx_hopgate_metrics->shpool;

    ngx_shmtx_lock(&shpool->mutex);

    s->metrics.domain = ngx_hopgate_metrics_domain(&name, 1);
    s->metrics.since = ngx_time();

    size = sizeof(ngx_hopgate_metrics_record_t) + s->domain_len
           + NGX_HOPGATE_METRICS_ADDR_LEN + sizeof(s->agent_version);

    /* without a slot of its own the worker publishes no sessions */
    if (ngx_hopgate_metrics_slot == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    rec = ngx_slab_calloc_locked(shpool, size);

    if (rec == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->zone_full, 1);
        return;
    }

    rec->domain = s->metrics.domain;
    rec->id = s->id;
    rec->slot = ngx_hopgate_metrics_slot_index;
    rec->since = s->metrics.since;
    rec->state = s->metrics.state;

    p = (u_char *) (rec + 1);

    rec->domain_name = p;
    rec->domain_len = s->domain_len;
    p = ngx_cpymem(p, s->domain_name, s->domain_len);

    rec->addr = p;
    p += NGX_HOPGATE_METRICS_ADDR_LEN;

    /* the agent's own words: printable ASCII only */
    rec->version = p;
    for (size = 0; s->agent_version[size]; size++) {
        *p++ = (s->agent_version[size] >= 0x20
                && s->agent_version[size] < 0x7f)
               ? s->agent_version[size] : '?';
    }
    rec->version_len = size;

    ngx_queue_insert_tail(&ngx_hopgate_metrics->sh->records, &rec->queue);

    ngx_shmtx_unlock(&shpool->mutex);

    s->metrics.record = rec;

    ngx_hopgate_metrics_record(s, &st);
}


/* under the lock: the domain's entry, or "_other" past the bound */
static ngx_hopgate_metrics_domain_t *
ngx_hopgate_metrics_domain(ngx_str_t *name, ngx_uint_t create)
{
    size_t                         size;
    uint32_t                       hash;
    ngx_hopgate_metrics_shctx_t   *sh = ngx_hopgate_metrics->sh;
    ngx_hopgate_metrics_domain_t  *d;

    hash = ngx_crc32_short(name->data, name->len);

    d = (ngx_hopgate_metrics_domain_t *)
        ngx_str_rbtree_lookup(&sh->domains, name, hash);

    if (d) {
        return d;
    }

    if (!create || sh->ndomains >= ngx_hopgate_metrics_max) {
        return sh->other;
    }

    size = offsetof(ngx_hopgate_metrics_domain_t, name) + name->len + 1;

    d = ngx_slab_calloc_locked(ngx_hopgate_metrics->shpool, size);
    if (d == NULL) {
        ngx_hopgate_metrics_add(&sh->zone_full, 1);
        return sh->other;
    }

    ngx_memcpy(d->name, name->data, name->len);
    d->sn.str.data = d->name;
    d->sn.str.len = name->len;
    d->sn.node.key = hash;

    ngx_rbtree_insert(&sh->domains, &d->sn.node);
    ngx_queue_insert_tail(&sh->domain_list, &d->queue);
    sh->ndomains++;

    return d;
}


/* adds what the session's engine counted since the last time */
static void
ngx_hopgate_metrics_harvest(ngx_hopgate_session_t *s, hg_conn_stats_t *st)
{
    uint64_t                       n;
    hg_conn_stats_t               *c;
    ngx_hopgate_metrics_shctx_t   *sh = ngx_hopgate_metrics->sh;
    ngx_hopgate_metrics_domain_t  *d;

    hg_conn_get_stats(s->conn, st);

    c = &s->metrics.counted;
    d = s->metrics.domain;

    n = ngx_hopgate_metrics_delta(st->packets_sent, &c->packets_sent);
    ngx_hopgate_metrics_add(&sh->packets[0], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->packets_sent, n);
    }

    n = ngx_hopgate_metrics_delta(st->packets_lost, &c->packets_lost);
    ngx_hopgate_metrics_add(&sh->packets_lost, n);
    if (d) {
        ngx_hopgate_metrics_add(&d->packets_lost, n);
    }

    n = ngx_hopgate_metrics_delta(st->stream_bytes_sent,
                                  &c->stream_bytes_sent);
    ngx_hopgate_metrics_add(&sh->stream_bytes[0], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->stream_bytes[0], n);
    }

    n = ngx_hopgate_metrics_delta(st->stream_bytes_received,
                                  &c->stream_bytes_received);
    ngx_hopgate_metrics_add(&sh->stream_bytes[1], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->stream_bytes[1], n);
    }

    ngx_hopgate_metrics_add(&sh->packets[1],
        ngx_hopgate_metrics_delta(st->packets_received,
                                  &c->packets_received));
    ngx_hopgate_metrics_add(&sh->packets_retransmitted,
        ngx_hopgate_metrics_delta(st->packets_retransmitted,
                                  &c->packets_retransmitted));
    ngx_hopgate_metrics_add(&sh->datagram_bytes[0],
        ngx_hopgate_metrics_delta(st->bytes_sent, &c->bytes_sent));
    ngx_hopgate_metrics_add(&sh->datagram_bytes[1],
        ngx_hopgate_metrics_delta(st->bytes_received, &c->bytes_received));
}


/* the owner's periodic refresh of a session's status record */
static void
ngx_hopgate_metrics_record(ngx_hopgate_session_t *s, hg_conn_stats_t *st)
{
    ngx_hopgate_metrics_record_t  *rec = s->metrics.record;

    rec->rtt = st->srtt;
    rec->cwnd = st->cwnd;
    rec->packets_sent = st->packets_sent;
    rec->packets_lost = st->packets_lost;
    rec->streams = s->streams;
    rec->bytes_sent = st->stream_bytes_sent;
    rec->bytes_received = st->stream_bytes_received;

    /* the agent's address moves with its NAT */
    if (rec->addr_len != s->addr_len
        || ngx_memcmp(rec->addr, s->addr_text, s->addr_len) != 0)
    {
        rec->addr_len = ngx_min(s->addr_len, NGX_HOPGATE_METRICS_ADDR_LEN);
        ngx_memcpy(rec->addr, s->addr_text, rec->addr_len);
    }
}


void
ngx_hopgate_metrics_session_close(ngx_hopgate_session_t *s)
{
    hg_conn_stats_t  st;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_harvest(s, &st);

    /* a session that never got an answer did not finish its handshake */
    if (!s->metrics.verdict) {
        ngx_hopgate_metrics_handshake(NGX_HOPGATE_HS_TIMEOUT);
        s->metrics.verdict = 1;
    }

    if (ngx_hopgate_metrics_slot && s->metrics.state != NGX_HOPGATE_SS_NONE)
    {
        ngx_hopgate_metrics_slot->sessions[s->metrics.state]--;
    }

    s->metrics.state = NGX_HOPGATE_SS_NONE;

    if (s->metrics.record) {
        ngx_shmtx_lock(&ngx_hopgate_metrics->shpool->mutex);
        ngx_queue_remove(&s->metrics.record->queue);
        ngx_slab_free_locked(ngx_hopgate_metrics->shpool, s->metrics.record);
        ngx_shmtx_unlock(&ngx_hopgate_metrics->shpool->mutex);
        s->metrics.record = NULL;
    }
}


void
ngx_hopgate_metrics_stream_open(ngx_hopgate_pump_t *p)
{
    ngx_hopgate_metrics_domain_t  *d;

    /*
     * the request's $hopgate_* values are taken now, with or without a
     * zone
     */
    ngx_hopgate_variables_attach(p);

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->streams_opened, 1);

    /* the requests that waited for the session go before its first run */
    if (p->session->metrics.domain == NULL) {
        ngx_hopgate_metrics_session_update(p->session);
    }

    d = p->session->metrics.domain;
    if (d) {
        ngx_hopgate_metrics_add(&d->streams_opened, 1);
    }
}


void
ngx_hopgate_metrics_stream_failed(ngx_hopgate_pump_t *p, ngx_uint_t reason)
{
    ngx_str_t                      name;
    ngx_hopgate_metrics_domain_t  *d;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->streams_failed[reason],
                            1);

    if (p->session) {
        d = p->session->metrics.domain;

    } else {
        /*
         * a request that found no session: its domain's entry if it has
         * one (a Host header makes no entry)
         */
        if (p->waiting) {
            name.data = p->waiting->name;
            name.len = ngx_strlen(p->waiting->name);

        } else if (p->ctx) {
            name.data = p->ctx->tunnel.domain;
            name.len = p->ctx->tunnel.domain_len;

        } else {
            ngx_str_null(&name);
        }

        ngx_shmtx_lock(&ngx_hopgate_metrics->shpool->mutex);
        d = ngx_hopgate_metrics_domain(&name, 0);
        ngx_shmtx_unlock(&ngx_hopgate_metrics->shpool->mutex);
    }

    if (d) {
        ngx_hopgate_metrics_add(&d->streams_failed, 1);
    }
}


/* a stream ended: its bytes count now, not at the next tick */
void
ngx_hopgate_metrics_stream_close(ngx_hopgate_pump_t *p)
{
    hg_conn_stats_t  st;

    if (ngx_hopgate_metrics && p->session) {
        ngx_hopgate_metrics_harvest(p->session, &st);
    }
}


/* ---- each second -------------------------------------------------------- */

static void
ngx_hopgate_metrics_listeners_tick(ngx_hopgate_worker_t *w)
{
    ngx_uint_t                    i;
    hg_listener_stats_t          *counted;
    const hg_listener_stats_t    *st;
    ngx_hopgate_metrics_shctx_t  *sh = ngx_hopgate_metrics->sh;

    ngx_hopgate_metrics_add(&sh->malformed,
        ngx_hopgate_metrics_delta(w->malformed,
                                  &ngx_hopgate_metrics_malformed));

    if (w->nlisteners == 0) {
        return;
    }

    if (ngx_hopgate_metrics_listeners == NULL) {
        ngx_hopgate_metrics_listeners = ngx_pcalloc(ngx_cycle->pool,
                               w->nlisteners * sizeof(hg_listener_stats_t));
        if (ngx_hopgate_metrics_listeners == NULL) {
            return;
        }
    }

    for (i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].engine == NULL) {
            continue;
        }

        st = hg_listener_stats(w->listeners[i].engine);
        counted = &ngx_hopgate_metrics_listeners[i];

        ngx_hopgate_metrics_add(&sh->handshakes[NGX_HOPGATE_HS_COOKIE_FAIL],
            ngx_hopgate_metrics_delta(st->cookie_failures,
                                      &counted->cookie_failures));
        ngx_hopgate_metrics_add(&sh->malformed,
            ngx_hopgate_metrics_delta(st->malformed, &counted->malformed));
    }
}


static void
ngx_hopgate_metrics_tick(ngx_event_t *ev)
{
    hg_conn_stats_t                st;
    ngx_rbtree_node_t             *node;
    ngx_hopgate_worker_t          *w = ngx_hopgate_worker;
    ngx_hopgate_session_t         *s;
    ngx_hopgate_metrics_domain_t  *d;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    if (w) {
        ngx_hopgate_metrics_listeners_tick(w);
    }

    if (w && w->by_cid.root != w->by_cid.sentinel) {

        for (node = ngx_rbtree_min(w->by_cid.root, w->by_cid.sentinel);
             node;
             node = ngx_rbtree_next(&w->by_cid, node))
        {
            s = (ngx_hopgate_session_t *)
                ((u_char *) node - offsetof(ngx_hopgate_session_t,
                                            cid_node));

            ngx_hopgate_metrics_harvest(s, &st);
            ngx_hopgate_metrics_session_update(s);

            /* the RTT histograms: one sample per ready session a second */
            d = s->metrics.domain;

            if (s->metrics.state == NGX_HOPGATE_SS_READY && st.srtt) {
                ngx_hopgate_metrics_observe(&ngx_hopgate_metrics->sh->rtt,
                                            ngx_hopgate_rtt_bounds, st.srtt);
                if (d) {
                    ngx_hopgate_metrics_observe(&d->rtt,
                                                ngx_hopgate_rtt_bounds,
                                                st.srtt);
                }
            }

            if (s->metrics.record) {
                ngx_hopgate_metrics_record(s, &st);
            }
        }
    }

    ngx_add_timer(ev, NGX_HOPGATE_METRICS_TICK);
}


/* ---- the exposition ----------------------------------------------------- */

ngx_int_t
ngx_hopgate_out_printf(ngx_hopgate_out_t *out, const char *fmt, ...)
{
    u_char       *p;
    va_list       args;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    /* no line is longer: a label value is at most a domain name */
    if (out->buf == NULL || out->buf->end - out->buf->last < 2048) {
        b = ngx_create_temp_buf(out->pool, 32768);
        if (b == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(out->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        if (out->last == NULL) {
            out->last = &out->first;
        }

        *out->last = cl;
        out->last = &cl->next;
        out->buf = b;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(out->buf->last, out->buf->end, fmt, args);
    va_end(args);

    out->size += p - out->buf->last;
    out->buf->last = p;

    return NGX_OK;
}


ngx_int_t
ngx_hopgate_out_send(ngx_http_request_t *r, ngx_hopgate_out_t *out,
    ngx_str_t *type)
{
    ngx_int_t  rc;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = out->size;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only || out->buf == NULL)
    {
        return rc;
    }

    out->buf->last_buf = (r == r->main) ? 1 : 0;
    out->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, out->first);
}


/* microseconds as decimal seconds, exactly: 2500 -> 0.0025 */
static u_char *
ngx_hopgate_metrics_seconds(u_char *buf, uint64_t usec)
{
    u_char  *p;

    p = ngx_sprintf(buf, "%uL", usec / 1000000);

    if (usec % 1000000) {
        p = ngx_sprintf(p, ".%06uL", usec % 1000000);
        while (p[-1] == '0') {
            p--;
        }
    }

    return p;
}


static ngx_int_t
ngx_hopgate_metrics_family(ngx_hopgate_out_t *out, const char *name,
    const char *type, const char *help)
{
    return ngx_hopgate_out_printf(out, "# HELP %s %s\n# TYPE %s %s\n",
                                  name, help, name, type);
}


/* labels: `extra` is `,name="value"` or "" */
static ngx_int_t
ngx_hopgate_metrics_histogram(ngx_hopgate_out_t *out, const char *name,
    ngx_hopgate_histogram_t *h, const uint64_t *bounds, const char *labels)
{
    u_char      le[32], sum[32];
    uint64_t    total;
    ngx_uint_t  i;

    total = 0;

    for (i = 0; i <= NGX_HOPGATE_METRICS_BUCKETS; i++) {
        total += h->count[i];

        if (i < NGX_HOPGATE_METRICS_BUCKETS) {
            *ngx_hopgate_metrics_seconds(le, bounds[i]) = '\0';
        } else {
            ngx_cpystrn(le, (u_char *) "+Inf", sizeof(le));
        }

        if (ngx_hopgate_out_printf(out, "%s_bucket{%s%sle=\"%s\"} %uL\n",
                                   name, labels, *labels ? "," : "", le,
                                   total)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* _count is the +Inf bucket as read, so the two always agree */
    *ngx_hopgate_metrics_seconds(sum, h->sum) = '\0';

    if (*labels) {
        return ngx_hopgate_out_printf(out, "%s_sum{%s} %s\n%s_count{%s} %uL\n",
                                      name, labels, sum, name, labels, total);
    }

    return ngx_hopgate_out_printf(out, "%s_sum %s\n%s_count %uL\n",
                                  name, sum, name, total);
}


static ngx_int_t
ngx_hopgate_metrics_labelled(ngx_hopgate_out_t *out, const char *name,
    const char *label, const char **values, ngx_atomic_t *counters,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }

        if (ngx_hopgate_out_printf(out, "%s{%s=\"%s\"} %uA\n", name, label,
                                   values[i], counters[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the edge's families, in the order of the exposition */
typedef struct {
    const char          *name;
    const char          *type;
    const char          *help;
    size_t               offset;     /* in ngx_hopgate_metrics_shctx_t */
    const char          *label;      /* NULL: one sample */
    const char         **values;     /* the label's values */
    ngx_uint_t           n;
    const uint64_t      *bounds;     /* a histogram's */
} ngx_hopgate_family_t;


static const char  *ngx_hopgate_directions[] = { "sent", "received" };

#define ngx_hopgate_sh(field)  offsetof(ngx_hopgate_metrics_shctx_t, field)

static ngx_hopgate_family_t  ngx_hopgate_edge_families[] = {

    { "hopgate_handshakes_total", "counter",
      "Agent handshakes by result.",
      ngx_hopgate_sh(handshakes), "result", ngx_hopgate_handshake_results,
      NGX_HOPGATE_HS_N, NULL },

    { "hopgate_streams_opened_total", "counter",
      "Requests that got a tunnel stream.",
      ngx_hopgate_sh(streams_opened), NULL, NULL, 0, NULL },

    { "hopgate_streams_failed_total", "counter",
      "Requests whose tunnel part failed, by reason.",
      ngx_hopgate_sh(streams_failed), "reason", ngx_hopgate_stream_reasons,
      NGX_HOPGATE_STREAM_N, NULL },

    { "hopgate_stream_bytes_total", "counter",
      "Request and response bytes carried by streams (sent: to agents).",
      ngx_hopgate_sh(stream_bytes), "direction", ngx_hopgate_directions, 2,
      NULL },

    { "hopgate_datagram_bytes_total", "counter",
      "UDP payload bytes of tunnel sessions.",
      ngx_hopgate_sh(datagram_bytes), "direction", ngx_hopgate_directions,
      2, NULL },

    { "hopgate_packets_total", "counter",
      "Tunnel packets.",
      ngx_hopgate_sh(packets), "direction", ngx_hopgate_directions, 2,
      NULL },

    { "hopgate_packets_lost_total", "counter",
      "Sent packets declared lost.",
      ngx_hopgate_sh(packets_lost), NULL, NULL, 0, NULL },

    { "hopgate_packets_retransmitted_total", "counter",
      "Packets that carried frames again after a loss.",
      ngx_hopgate_sh(packets_retransmitted), NULL, NULL, 0, NULL },

    { "hopgate_rtt_seconds", "histogram",
      "Smoothed round-trip time of ready sessions, sampled each second.",
      ngx_hopgate_sh(rtt), NULL, NULL, 0, ngx_hopgate_rtt_bounds },

    { "hopgate_registry_queries_total", "counter",
      "Registry look-ups of agents' keys by result.",
      ngx_hopgate_sh(registry), "result", ngx_hopgate_registry_results,
      NGX_HOPGATE_REG_N, NULL },

    { "hopgate_registry_query_duration_seconds", "histogram",
      "How long registry look-ups took.",
      ngx_hopgate_sh(registry_latency), NULL, NULL, 0,
      ngx_hopgate_registry_bounds },

    { "hopgate_malformed_datagrams_total", "counter",
      "Datagrams dropped as not ours or invalid.",
      ngx_hopgate_sh(malformed), NULL, NULL, 0, NULL },

    { "hopgate_metrics_zone_full_total", "counter",
      "Domains or sessions the metrics zone had no room for.",
      ngx_hopgate_sh(zone_full), NULL, NULL, 0, NULL },

    { NULL, NULL, NULL, 0, NULL, NULL, 0, NULL }
};


static ngx_int_t
ngx_hopgate_metrics_edge_family(ngx_hopgate_out_t *out,
    ngx_hopgate_metrics_shctx_t *sh, ngx_hopgate_family_t *f)
{
    u_char  *field;

    field = (u_char *) sh + f->offset;

    if (ngx_hopgate_metrics_family(out, f->name, f->type, f->help)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (f->bounds) {
        return ngx_hopgate_metrics_histogram(out, f->name,
                                             (ngx_hopgate_histogram_t *)
                                             field, f->bounds, "");
    }

    if (f->label) {
        return ngx_hopgate_metrics_labelled(out, f->name, f->label,
                                            f->values,
                                            (ngx_atomic_t *) field, f->n);
    }

    return ngx_hopgate_out_printf(out, "%s %uA\n", f->name,
                                  *(ngx_atomic_t *) field);
}


static ngx_int_t
ngx_hopgate_metrics_edge(ngx_hopgate_out_t *out,
    ngx_hopgate_metrics_shctx_t *sh)
{
    ngx_uint_t             i, j, workers;
    ngx_atomic_uint_t      sessions[NGX_HOPGATE_SS_N];
    ngx_hopgate_family_t  *f;

    /* the gauges: the live workers' slots added up */
    ngx_memzero(sessions, sizeof(sessions));
    workers = 0;

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        if (sh->workers[i].pid == 0) {
            continue;
        }

        workers++;
        for (j = 0; j < NGX_HOPGATE_SS_N; j++) {
            sessions[j] += sh->workers[i].sessions[j];
        }
    }

    if (ngx_hopgate_metrics_family(out, "hopgate_worker_processes", "gauge",
            "Worker processes reporting (old ones drain after a reload).")
        != NGX_OK
        || ngx_hopgate_out_printf(out, "hopgate_worker_processes %ui\n",
                                  workers)
           != NGX_OK
        || ngx_hopgate_metrics_family(out, "hopgate_sessions", "gauge",
                                      "Tunnel sessions by state.")
           != NGX_OK
        || ngx_hopgate_metrics_labelled(out, "hopgate_sessions", "state",
                                        ngx_hopgate_session_states,
                                        sessions, NGX_HOPGATE_SS_N)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (f = ngx_hopgate_edge_families; f->name; f++) {
        if (ngx_hopgate_metrics_edge_family(out, sh, f) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_hopgate_metrics_family(out, "hopgate_metrics_domains", "gauge",
            "Domains with series of their own (the others add up as "
            "_other).")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_hopgate_out_printf(out, "hopgate_metrics_domains %ui\n",
                                  sh->ndomains);
}


/* a per-domain family: one sample per domain, "_other" last */
typedef enum {
    NGX_HOPGATE_DOMAIN_SESSIONS = 0,
    NGX_HOPGATE_DOMAIN_STREAMS_OPENED,
    NGX_HOPGATE_DOMAIN_STREAMS_FAILED,
    NGX_HOPGATE_DOMAIN_BYTES,
    NGX_HOPGATE_DOMAIN_PACKETS_SENT,
    NGX_HOPGATE_DOMAIN_PACKETS_LOST,
    NGX_HOPGATE_DOMAIN_RTT,
    NGX_HOPGATE_DOMAIN_N
} ngx_hopgate_domain_family_e;


static const struct {
    const char  *name;
    const char  *type;
    const char  *help;
} ngx_hopgate_domain_families[NGX_HOPGATE_DOMAIN_N] = {
    { "hopgate_domain_sessions", "gauge",
      "Ready and draining sessions of the domain." },
    { "hopgate_domain_streams_opened_total", "counter",
      "Requests of the domain that got a tunnel stream." },
    { "hopgate_domain_streams_failed_total", "counter",
      "Requests of the domain whose tunnel part failed." },
    { "hopgate_domain_stream_bytes_total", "counter",
      "Bytes carried by the domain's streams (sent: to the agent)." },
    { "hopgate_domain_packets_sent_total", "counter",
      "Packets sent to the domain's agents." },
    { "hopgate_domain_packets_lost_total", "counter",
      "Packets to the domain's agents declared lost." },
    { "hopgate_domain_rtt_seconds", "histogram",
      "Smoothed round-trip time of the domain's ready sessions, sampled "
      "each second." }
};


static ngx_int_t
ngx_hopgate_metrics_domain_sample(ngx_hopgate_out_t *out,
    ngx_uint_t family, ngx_hopgate_metrics_domain_t *d)
{
    u_char       labels[NGX_HOPGATE_DOMAIN_MAX * 2 + 16], *p;
    ngx_uint_t   i;
    const char  *name;

    name = ngx_hopgate_domain_families[family].name;

    /* label values escape \, " and newline; domain names have none */
    p = ngx_cpymem(labels, "domain=\"", sizeof("domain=\"") - 1);
    for (i = 0; i < d->sn.str.len; i++) {
        if (d->name[i] == '\\' || d->name[i] == '"') {
            *p++ = '\\';
        }
        *p++ = d->name[i];
    }
    *p++ = '"';
    *p = '\0';

    switch (family) {

    case NGX_HOPGATE_DOMAIN_SESSIONS:
        return ngx_hopgate_out_printf(out, "%s{%s} %ui\n", name, labels,
                                      d->sessions);

    case NGX_HOPGATE_DOMAIN_STREAMS_OPENED:
        return ngx_hopgate_out_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->streams_opened);

    case NGX_HOPGATE_DOMAIN_STREAMS_FAILED:
        return ngx_hopgate_out_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->streams_failed);

    case NGX_HOPGATE_DOMAIN_BYTES:
        return ngx_hopgate_out_printf(out,
                                      "%s{%s,direction=\"sent\"} %uA\n"
                                      "%s{%s,direction=\"received\"} %uA\n",
                                      name, labels, d->stream_bytes[0],
                                      name, labels, d->stream_bytes[1]);

    case NGX_HOPGATE_DOMAIN_PACKETS_SENT:
        return ngx_hopgate_out_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->packets_sent);

    case NGX_HOPGATE_DOMAIN_PACKETS_LOST:
        return ngx_hopgate_out_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->packets_lost);

    default: /* NGX_HOPGATE_DOMAIN_RTT */
        return ngx_hopgate_metrics_histogram(out, name, &d->rtt,
                                             ngx_hopgate_rtt_bounds,
                                             (char *) labels);
    }
}


static ngx_int_t
ngx_hopgate_metrics_domains(ngx_hopgate_out_t *out,
    ngx_hopgate_metrics_shctx_t *sh)
{
    ngx_uint_t                     f;
    ngx_queue_t                   *q;
    ngx_hopgate_metrics_record_t  *rec;
    ngx_hopgate_metrics_domain_t  *d;

    /* sessions per domain: counted from the live records */
    for (q = ngx_queue_head(&sh->domain_list);
         q != ngx_queue_sentinel(&sh->domain_list);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_metrics_domain_t, queue);
        d->sessions = 0;
    }

    sh->other->sessions = 0;

    for (q = ngx_queue_head(&sh->records);
         q != ngx_queue_sentinel(&sh->records);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_hopgate_metrics_record_t, queue);
        rec->domain->sessions++;
    }

    for (f = 0; f < NGX_HOPGATE_DOMAIN_N; f++) {

        if (ngx_hopgate_metrics_family(out, ngx_hopgate_domain_families[f].name,
                                       ngx_hopgate_domain_families[f].type,
                                       ngx_hopgate_domain_families[f].help)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (q = ngx_queue_head(&sh->domain_list);
             q != ngx_queue_sentinel(&sh->domain_list);
             q = ngx_queue_next(q))
        {
            d = ngx_queue_data(q, ngx_hopgate_metrics_domain_t, queue);

            if (ngx_hopgate_metrics_domain_sample(out, f, d) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        if (ngx_hopgate_metrics_domain_sample(out, f, sh->other) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_hopgate_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_str_t                              type;
    ngx_hopgate_out_t                      out;
    ngx_hopgate_metrics_zone_t            *zone;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_hopgate_metrics_module);
    zone = mmcf->zone->data;

    ngx_memzero(&out, sizeof(ngx_hopgate_out_t));
    out.pool = r->pool;

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_hopgate_metrics_reap(zone);

    rc = ngx_hopgate_metrics_edge(&out, zone->sh);
    if (rc == NGX_OK) {
        rc = ngx_hopgate_metrics_domains(&out, zone->sh);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (rc == NGX_OK) {
        rc = ngx_hopgate_acme_metrics(&out, mmcf->max_domains);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&type, "text/plain; version=0.0.4; charset=utf-8");

    return ngx_hopgate_out_send(r, &out, &type);
}
