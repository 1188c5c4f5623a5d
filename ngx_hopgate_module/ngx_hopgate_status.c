/*
 * hopgate_status: the live tunnel sessions of every worker as JSON.
 *
 *     location = /hopgate/status {
 *         hopgate_status;
 *         hopgate_admin_key_file /etc/nginx/hopgate-admin.key;
 *     }
 *
 * Each worker publishes its ready sessions in the metrics zone (when they
 * connect, every second, when they close), so whichever worker answers
 * sees them all. Reading it takes the admin key as a bearer token.
 *
 *   {"sessions":[{"domain":"app.example.com","session":"00f3...",
 *     "worker":0,"pid":4242,"agent_addr":"203.0.113.9:53211",
 *     "agent_version":"0.1.0","state":"ready","transport":"udp",
 *     "connected_since":"2024-06-11T10:00:00Z","connected_seconds":3600,
 *     "rtt_ms":12.500,"loss_rate":0.0012,"cwnd_bytes":120000,
 *     "open_streams":2,"bytes_sent":1234,"bytes_received":56789}]}
 *
 * bytes_sent went to the agent (requests), bytes_received came from it;
 * transport is "udp" (DTLS) or "tcp" (hopgate_tunnel, where rtt_ms,
 * loss_rate and cwnd_bytes are 0: TCP keeps them).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


static ngx_int_t ngx_hopgate_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_status_session(ngx_hopgate_body_t *out,
    ngx_hopgate_metrics_shctx_t *sh, ngx_hopgate_metrics_record_t *rec,
    ngx_uint_t first);


char *
ngx_hopgate_status_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_metrics_loc_conf_t  *mlcf = conf;

    ngx_http_core_loc_conf_t              *clcf;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_hopgate_status_handler;
    mlcf->status = 1;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_metrics_module);
    mmcf->used = cmd->name;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_hopgate_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                              rc;
    ngx_str_t                              type;
    ngx_uint_t                             first;
    ngx_queue_t                           *q;
    ngx_table_elt_t                       *h;
    ngx_hopgate_body_t                     out;
    ngx_hopgate_metrics_zone_t            *zone;
    ngx_hopgate_metrics_record_t          *rec;
    ngx_http_hopgate_loc_conf_t           *hlcf;
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hopgate_module);

    if (ngx_hopgate_admin_authorized(r, hlcf) != NGX_OK) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "WWW-Authenticate");
        ngx_str_set(&h->value, "Bearer realm=\"hopgate\"");
        r->headers_out.www_authenticate = h;

        return NGX_HTTP_UNAUTHORIZED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_hopgate_metrics_module);
    zone = mmcf->zone->data;

    ngx_memzero(&out, sizeof(ngx_hopgate_body_t));
    out.pool = r->pool;

    rc = ngx_hopgate_body_printf(&out, "{\"sessions\":[");

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_hopgate_metrics_reap(zone);

    first = 1;

    for (q = ngx_queue_head(&zone->sh->records);
         rc == NGX_OK && q != ngx_queue_sentinel(&zone->sh->records);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_hopgate_metrics_record_t, queue);
        rc = ngx_hopgate_status_session(&out, zone->sh, rec, first);
        first = 0;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (rc != NGX_OK || ngx_hopgate_body_printf(&out, "]}\n") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&type, "application/json");

    return ngx_hopgate_body_send(r, &out, &type);
}


static ngx_int_t
ngx_hopgate_status_session(ngx_hopgate_body_t *out,
    ngx_hopgate_metrics_shctx_t *sh, ngx_hopgate_metrics_record_t *rec,
    ngx_uint_t first)
{
    u_char                         version[64 * 6];
    double                         loss;
    uint64_t                       sent, lost, rtt;
    ngx_tm_t                       tm;
    ngx_hopgate_metrics_worker_t  *mw;

    mw = &sh->workers[rec->slot];

    ngx_gmtime(rec->since, &tm);

    sent = rec->packets_sent;
    lost = rec->packets_lost;
    loss = sent ? (double) lost / (double) sent : 0;
    rtt = rec->rtt;

    /* printable ASCII was kept; quotes and backslashes want escaping */
    *(u_char *) ngx_escape_json(version, rec->version, rec->version_len)
        = '\0';

    return ngx_hopgate_body_printf(out,
        "%s{\"domain\":\"%*s\",\"session\":\"%016xL\",\"worker\":%i,"
        "\"pid\":%P,\"agent_addr\":\"%*s\",\"agent_version\":\"%s\","
        "\"state\":\"%s\",\"transport\":\"%s\",\"connected_since\":"
        "\"%4d-%02d-%02dT%02d:%02d:%02dZ\",\"connected_seconds\":%T,"
        "\"rtt_ms\":%uL.%03uL,\"loss_rate\":%.4f,\"cwnd_bytes\":%uA,"
        "\"open_streams\":%uA,\"bytes_sent\":%uA,\"bytes_received\":%uA}",
        first ? "" : ",", rec->domain_len, rec->domain_name, rec->id,
        mw->worker, mw->pid, rec->addr_len, rec->addr, version,
        rec->state == NGX_HOPGATE_SS_DRAINING ? "draining" : "ready",
        rec->transport ? "tcp" : "udp",
        tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
        tm.ngx_tm_min, tm.ngx_tm_sec, ngx_time() - rec->since,
        rtt / 1000, rtt % 1000, loss, rec->cwnd, rec->streams,
        rec->bytes_sent, rec->bytes_received);
}
