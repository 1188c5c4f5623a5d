/*
 * The Prometheus text exposition (0.0.4) of the metrics zone:
 *
 *     location = /metrics { hopgate_metrics; }
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


static ngx_int_t ngx_hopgate_prometheus_handler(ngx_http_request_t *r);


/* label values, in the order of the enums */
static const char  *ngx_hopgate_handshake_results[NGX_HOPGATE_HS_N] = {
    "ok", "bad_key", "unknown_domain", "disabled", "registry_down",
    "dns_gate", "timeout", "cookie_fail", "busy", "going_away", "error"
};

static const char  *ngx_hopgate_stream_reasons[NGX_HOPGATE_STREAM_N] = {
    "no_tunnel", "stream_limit", "tunnel_closed", "agent_reset",
    "client_closed", "internal", "unknown_domain"
};

static const char  *ngx_hopgate_session_states[NGX_HOPGATE_SS_N] = {
    NULL, "handshake", "ready", "draining"
};

static const char  *ngx_hopgate_session_transports[2] = {
    "udp", "tcp"
};

static const char  *ngx_hopgate_registry_results[NGX_HOPGATE_REG_N] = {
    "ok", "bad_key", "unknown_domain", "disabled", "error"
};


char *
ngx_hopgate_prometheus_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t              *clcf;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_hopgate_prometheus_handler;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_metrics_module);
    mmcf->used = cmd->name;

    return NGX_CONF_OK;
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
ngx_hopgate_metrics_family(ngx_hopgate_body_t *out, const char *name,
    const char *type, const char *help)
{
    return ngx_hopgate_body_printf(out, "# HELP %s %s\n# TYPE %s %s\n",
                                  name, help, name, type);
}


/* labels: `extra` is `,name="value"` or "" */
static ngx_int_t
ngx_hopgate_metrics_histogram(ngx_hopgate_body_t *out, const char *name,
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

        if (ngx_hopgate_body_printf(out, "%s_bucket{%s%sle=\"%s\"} %uL\n",
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
        return ngx_hopgate_body_printf(out, "%s_sum{%s} %s\n%s_count{%s} %uL\n",
                                      name, labels, sum, name, labels, total);
    }

    return ngx_hopgate_body_printf(out, "%s_sum %s\n%s_count %uL\n",
                                  name, sum, name, total);
}


static ngx_int_t
ngx_hopgate_metrics_labelled(ngx_hopgate_body_t *out, const char *name,
    const char *label, const char **values, ngx_atomic_t *counters,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (values[i] == NULL) {
            continue;
        }

        if (ngx_hopgate_body_printf(out, "%s{%s=\"%s\"} %uA\n", name, label,
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
ngx_hopgate_metrics_edge_family(ngx_hopgate_body_t *out,
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

    return ngx_hopgate_body_printf(out, "%s %uA\n", f->name,
                                  *(ngx_atomic_t *) field);
}


static ngx_int_t
ngx_hopgate_metrics_edge(ngx_hopgate_body_t *out,
    ngx_hopgate_metrics_shctx_t *sh)
{
    ngx_uint_t             i, j, workers;
    ngx_atomic_uint_t      sessions[NGX_HOPGATE_SS_N], transport[2];
    ngx_hopgate_family_t  *f;

    /* the gauges: the live workers' slots added up */
    ngx_memzero(sessions, sizeof(sessions));
    ngx_memzero(transport, sizeof(transport));
    workers = 0;

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        if (sh->workers[i].pid == 0) {
            continue;
        }

        workers++;
        for (j = 0; j < NGX_HOPGATE_SS_N; j++) {
            sessions[j] += sh->workers[i].sessions[j];
        }

        transport[0] += sh->workers[i].transport[0];
        transport[1] += sh->workers[i].transport[1];
    }

    if (ngx_hopgate_metrics_family(out, "hopgate_worker_processes", "gauge",
            "Worker processes reporting (old ones drain after a reload).")
        != NGX_OK
        || ngx_hopgate_body_printf(out, "hopgate_worker_processes %ui\n",
                                  workers)
           != NGX_OK
        || ngx_hopgate_metrics_family(out, "hopgate_sessions", "gauge",
                                      "Tunnel sessions by state.")
           != NGX_OK
        || ngx_hopgate_metrics_labelled(out, "hopgate_sessions", "state",
                                        ngx_hopgate_session_states,
                                        sessions, NGX_HOPGATE_SS_N)
           != NGX_OK
        || ngx_hopgate_metrics_family(out, "hopgate_sessions_by_transport",
               "gauge", "Ready and draining sessions by carrier: udp "
               "(DTLS), tcp (hopgate_tunnel).")
           != NGX_OK
        || ngx_hopgate_metrics_labelled(out, "hopgate_sessions_by_transport",
                                        "transport",
                                        ngx_hopgate_session_transports,
                                        transport, 2)
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

    return ngx_hopgate_body_printf(out, "hopgate_metrics_domains %ui\n",
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
ngx_hopgate_metrics_domain_sample(ngx_hopgate_body_t *out,
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
        return ngx_hopgate_body_printf(out, "%s{%s} %ui\n", name, labels,
                                      d->sessions);

    case NGX_HOPGATE_DOMAIN_STREAMS_OPENED:
        return ngx_hopgate_body_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->streams_opened);

    case NGX_HOPGATE_DOMAIN_STREAMS_FAILED:
        return ngx_hopgate_body_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->streams_failed);

    case NGX_HOPGATE_DOMAIN_BYTES:
        return ngx_hopgate_body_printf(out,
                                      "%s{%s,direction=\"sent\"} %uA\n"
                                      "%s{%s,direction=\"received\"} %uA\n",
                                      name, labels, d->stream_bytes[0],
                                      name, labels, d->stream_bytes[1]);

    case NGX_HOPGATE_DOMAIN_PACKETS_SENT:
        return ngx_hopgate_body_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->packets_sent);

    case NGX_HOPGATE_DOMAIN_PACKETS_LOST:
        return ngx_hopgate_body_printf(out, "%s{%s} %uA\n", name, labels,
                                      d->packets_lost);

    default: /* NGX_HOPGATE_DOMAIN_RTT */
        return ngx_hopgate_metrics_histogram(out, name, &d->rtt,
                                             ngx_hopgate_rtt_bounds,
                                             (char *) labels);
    }
}


static ngx_int_t
ngx_hopgate_metrics_domains(ngx_hopgate_body_t *out,
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
ngx_hopgate_prometheus_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_str_t                              type;
    ngx_hopgate_body_t                     out;
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

    ngx_memzero(&out, sizeof(ngx_hopgate_body_t));
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

    return ngx_hopgate_body_send(r, &out, &type);
}
