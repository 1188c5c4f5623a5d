/*
 * Variables for log_format, add_header and the like: which tunnel carried
 * the request.
 *
 *   $hopgate_domain      the domain the request was routed by
 *   $hopgate_session     its session, 16 hex digits as in the edge's and
 *                        the agent's logs
 *   $hopgate_stream      the stream within the session
 *   $hopgate_agent_addr  the agent's address as the edge sees it
 *   $hopgate_rtt         the session's smoothed RTT when the stream
 *                        opened, in milliseconds
 *   $hopgate_worker      the nginx worker that served the request (its
 *                        sessions are the ones it can use)
 *
 * The values live in the module's request context. The pump fills them in
 * when its stream opens; a request and its pump may end in either order,
 * so each one forgets the other when it goes.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


typedef enum {
    NGX_HOPGATE_VAR_DOMAIN = 0,
    NGX_HOPGATE_VAR_SESSION,
    NGX_HOPGATE_VAR_STREAM,
    NGX_HOPGATE_VAR_AGENT_ADDR,
    NGX_HOPGATE_VAR_RTT,
    NGX_HOPGATE_VAR_WORKER
} ngx_hopgate_variable_e;


static ngx_int_t ngx_hopgate_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_hopgate_variables_cleanup(void *data);


static ngx_http_variable_t  ngx_hopgate_variables[] = {

    { ngx_string("hopgate_domain"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_DOMAIN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("hopgate_session"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_SESSION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("hopgate_stream"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_STREAM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("hopgate_agent_addr"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_AGENT_ADDR, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("hopgate_rtt"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_RTT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("hopgate_worker"), NULL, ngx_hopgate_variable,
      NGX_HOPGATE_VAR_WORKER, 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_hopgate_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_hopgate_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * The request's context. An internal redirect (error_page) empties the
 * request's module contexts, but the pool cleanup still knows ours, and
 * the access log of a failed request wants it most.
 */
static ngx_http_hopgate_ctx_t *
ngx_hopgate_variables_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_hopgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);
    if (ctx && ctx->tunnel.cleanup) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_hopgate_variables_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_hopgate_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                         *p;
    ngx_http_hopgate_ctx_t         *ctx;
    ngx_hopgate_metrics_request_t  *t;

    if (data == NGX_HOPGATE_VAR_WORKER) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%i", ngx_worker) - p;
        v->data = p;
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;

        return NGX_OK;
    }

    ctx = ngx_hopgate_variables_ctx(r);
    t = ctx ? &ctx->tunnel : NULL;

    if (t == NULL || (data != NGX_HOPGATE_VAR_DOMAIN && !t->attached)) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HOPGATE_VAR_DOMAIN:
        v->data = t->domain;
        v->len = t->domain_len;
        break;

    case NGX_HOPGATE_VAR_AGENT_ADDR:
        v->data = t->addr;
        v->len = t->addr_len;
        break;

    default:
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 2);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;

        if (data == NGX_HOPGATE_VAR_SESSION) {
            p = ngx_sprintf(p, "%016xL", t->session);

        } else if (data == NGX_HOPGATE_VAR_STREAM) {
            p = ngx_sprintf(p, "%L", t->stream);

        } else {
            p = ngx_sprintf(p, "%uL.%03uL", (uint64_t) t->rtt / 1000,
                            (uint64_t) t->rtt % 1000);
        }

        v->len = p - v->data;
        break;
    }

    if (v->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the request's tunnel is this pump (the first try, or a retry) */
void
ngx_hopgate_variables_link(ngx_http_request_t *r, ngx_hopgate_pump_t *p,
    ngx_str_t *domain)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_hopgate_ctx_t         *ctx;
    ngx_hopgate_metrics_request_t  *t;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);
    if (ctx == NULL) {
        return;
    }

    t = &ctx->tunnel;

    if (!t->cleanup) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return;
        }

        cln->handler = ngx_hopgate_variables_cleanup;
        cln->data = ctx;
        t->cleanup = 1;
    }

    if (t->pump) {
        /* the previous try's pump ends on its own */
        t->pump->ctx = NULL;
    }

    t->pump = p;
    p->ctx = ctx;

    t->attached = 0;
    t->domain_len = ngx_min(domain->len, sizeof(t->domain));
    ngx_memcpy(t->domain, domain->data, t->domain_len);
}


/* the pump's stream opened on a session */
void
ngx_hopgate_variables_attach(ngx_hopgate_pump_t *p)
{
    hg_conn_stats_t                 st;
    ngx_hopgate_session_t          *s = p->session;
    ngx_hopgate_metrics_request_t  *t;

    if (p->ctx == NULL) {
        return;
    }

    t = &p->ctx->tunnel;

    hg_conn_get_stats(s->conn, &st);

    t->session = s->id;
    t->stream = p->stream_id;
    t->rtt = st.srtt;
    t->addr_len = ngx_min(s->addr_len, sizeof(t->addr));
    ngx_memcpy(t->addr, s->addr_text, t->addr_len);
    t->attached = 1;
}


void
ngx_hopgate_variables_unlink(ngx_hopgate_pump_t *p)
{
    if (p->ctx) {
        p->ctx->tunnel.pump = NULL;
        p->ctx = NULL;
    }
}


/* the request is over: its pump may carry on for a while, alone */
static void
ngx_hopgate_variables_cleanup(void *data)
{
    ngx_http_hopgate_ctx_t  *ctx = data;

    if (ctx->tunnel.pump) {
        ctx->tunnel.pump->ctx = NULL;
        ctx->tunnel.pump = NULL;
    }
}
