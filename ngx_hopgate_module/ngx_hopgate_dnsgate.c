/*
 * The DNS gate, `hopgate_expect_ips ADDRESS...` with nginx's `resolver`:
 * before the registry is asked about a domain, the domain must resolve
 * (A/AAAA, through nginx's asynchronous resolver) to one of the edge's
 * addresses. It wraps the registry and implements the same interface, so
 * the HELLO path does not know it is there: a check runs the resolution,
 * then hands over to the wrapped registry.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_hopgate_module.h"


typedef struct {
    ngx_hopgate_registry_t      *next;
    ngx_array_t                 *expect;     /* ngx_addr_t */
    ngx_resolver_t              *resolver;
    ngx_msec_t                   timeout;
    ngx_queue_t                  pending;
    u_char                       why[512];   /* the last refusal */
} ngx_hopgate_dnsgate_t;


typedef struct {
    ngx_queue_t                  link;
    ngx_hopgate_dnsgate_t       *gate;
    ngx_resolver_ctx_t          *rctx;
    ngx_hopgate_verdict_pt       done;
    void                        *data;
    ngx_hopgate_verdict_t        verdict;
    ngx_str_t                    domain;
    ngx_str_t                    key;
    unsigned                     in_check:1;
    unsigned                     resolved:1;
    u_char                       text[];     /* domain, then the key */
} ngx_hopgate_dnsgate_check_t;


static ngx_int_t ngx_hopgate_dnsgate_init_process(ngx_hopgate_registry_t *r,
    ngx_cycle_t *cycle);
static void ngx_hopgate_dnsgate_exit_process(ngx_hopgate_registry_t *r);
static ngx_int_t ngx_hopgate_dnsgate_check(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data);
static void ngx_hopgate_dnsgate_cancel(ngx_hopgate_registry_t *r,
    void *data);
static ngx_int_t ngx_hopgate_dnsgate_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call);
static void ngx_hopgate_dnsgate_admin_cancel(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call);
static ngx_int_t ngx_hopgate_dnsgate_lookup(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_hopgate_lookup_pt done, void *data);
static void ngx_hopgate_dnsgate_lookup_cancel(ngx_hopgate_registry_t *r,
    void *data);
static void ngx_hopgate_dnsgate_resolved(ngx_resolver_ctx_t *rctx);
static void ngx_hopgate_dnsgate_free(ngx_hopgate_dnsgate_check_t *ck);


const ngx_hopgate_registry_ops_t  ngx_hopgate_dnsgate_ops = {
    "dns gate",
    ngx_hopgate_dnsgate_init_process,
    ngx_hopgate_dnsgate_exit_process,
    ngx_hopgate_dnsgate_check,
    ngx_hopgate_dnsgate_cancel,
    ngx_hopgate_dnsgate_admin,
    ngx_hopgate_dnsgate_admin_cancel,
    ngx_hopgate_dnsgate_lookup,
    ngx_hopgate_dnsgate_lookup_cancel
};


/* hopgate_expect_ips and `resolver` were read: put the gate in front */
ngx_int_t
ngx_hopgate_dnsgate_wrap(ngx_conf_t *cf, ngx_http_hopgate_main_conf_t *hmcf)
{
    ngx_hopgate_dnsgate_t     *gate;
    ngx_hopgate_registry_t    *reg;
    ngx_http_core_loc_conf_t  *clcf;

    if (hmcf->expect_ips == NULL) {
        return NGX_OK;
    }

    if (hmcf->reg == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_expect_ips\" needs \"hopgate_registry\"");
        return NGX_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver == NULL || clcf->resolver->connections.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_expect_ips\" needs a \"resolver\" in "
                           "the http{} block");
        return NGX_ERROR;
    }

    gate = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_dnsgate_t));
    reg = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_registry_t));
    if (gate == NULL || reg == NULL) {
        return NGX_ERROR;
    }

    gate->next = hmcf->reg;
    gate->expect = hmcf->expect_ips;
    gate->resolver = clcf->resolver;
    gate->timeout = clcf->resolver_timeout == NGX_CONF_UNSET_MSEC
                    ? 30000 : clcf->resolver_timeout;
    ngx_queue_init(&gate->pending);

    reg->ops = &ngx_hopgate_dnsgate_ops;
    reg->backend = gate;
    reg->spec = gate->next->spec;

    hmcf->reg = reg;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_dnsgate_init_process(ngx_hopgate_registry_t *r,
    ngx_cycle_t *cycle)
{
    ngx_hopgate_dnsgate_t  *gate = r->backend;

    if (gate->next->ops->init_process) {
        return gate->next->ops->init_process(gate->next, cycle);
    }

    return NGX_OK;
}


static void
ngx_hopgate_dnsgate_exit_process(ngx_hopgate_registry_t *r)
{
    ngx_queue_t                  *q;
    ngx_hopgate_dnsgate_t        *gate = r->backend;
    ngx_hopgate_dnsgate_check_t  *ck;

    while (!ngx_queue_empty(&gate->pending)) {
        q = ngx_queue_head(&gate->pending);
        ck = ngx_queue_data(q, ngx_hopgate_dnsgate_check_t, link);
        ngx_queue_remove(q);
        ngx_resolve_name_done(ck->rctx);
        ngx_hopgate_dnsgate_free(ck);
    }

    if (gate->next->ops->exit_process) {
        gate->next->ops->exit_process(gate->next);
    }
}


static ngx_int_t
ngx_hopgate_dnsgate_check(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data)
{
    ngx_hopgate_dnsgate_t        *gate = r->backend;
    ngx_resolver_ctx_t           *rctx;
    ngx_hopgate_dnsgate_check_t  *ck;

    verdict->rc = NGX_DECLINED;
    verdict->code = HG_CODE_INTERNAL;
    verdict->why = "out of memory";

    ck = ngx_calloc(sizeof(ngx_hopgate_dnsgate_check_t) + domain->len
                    + key->len + 2, ngx_cycle->log);
    if (ck == NULL) {
        return NGX_DECLINED;
    }

    ck->gate = gate;
    ck->done = done;
    ck->data = data;
    ck->domain.data = ck->text;
    ck->domain.len = domain->len;
    ngx_memcpy(ck->domain.data, domain->data, domain->len);
    ck->key.data = ck->text + domain->len + 1;
    ck->key.len = key->len;
    ngx_memcpy(ck->key.data, key->data, key->len);

    rctx = ngx_resolve_start(gate->resolver, NULL);
    if (rctx == NULL || rctx == NGX_NO_RESOLVER) {
        ngx_hopgate_dnsgate_free(ck);
        verdict->why = "the DNS gate has no resolver";
        return NGX_DECLINED;
    }

    rctx->name = ck->domain;
    rctx->handler = ngx_hopgate_dnsgate_resolved;
    rctx->data = ck;
    rctx->timeout = gate->timeout;
    ck->rctx = rctx;

    ck->in_check = 1;

    if (ngx_resolve_name(rctx) != NGX_OK) {
        /* the resolver freed rctx */
        ngx_hopgate_dnsgate_free(ck);
        verdict->why = "the resolver failed";
        return NGX_DECLINED;
    }

    ck->in_check = 0;

    if (!ck->resolved) {
        ngx_queue_insert_tail(&gate->pending, &ck->link);
        return NGX_AGAIN;
    }

    /* answered from the resolver's cache, within the call */
    *verdict = ck->verdict;
    ngx_hopgate_dnsgate_free(ck);

    if (verdict->rc != NGX_OK) {
        return NGX_DECLINED;
    }

    return gate->next->ops->check(gate->next, domain, key, verdict, done,
                                  data);
}


/* did the domain resolve to one of ours? the verdict says */
static void
ngx_hopgate_dnsgate_judge(ngx_hopgate_dnsgate_check_t *ck,
    ngx_resolver_ctx_t *rctx)
{
    u_char                 *p, *last;
    ngx_uint_t              i, j;
    ngx_addr_t             *expect;
    ngx_hopgate_dnsgate_t  *gate = ck->gate;

    ck->verdict.rc = NGX_DECLINED;
    ck->verdict.code = HG_CODE_DNS_GATE;
    ck->verdict.why = (char *) gate->why;

    last = gate->why + sizeof(gate->why) - 1;

    if (rctx->state) {
        p = ngx_slprintf(gate->why, last, "%V does not resolve (%s)",
                         &ck->domain, ngx_resolver_strerror(rctx->state));
        *p = '\0';
        return;
    }

    expect = gate->expect->elts;

    for (i = 0; i < rctx->naddrs; i++) {
        for (j = 0; j < gate->expect->nelts; j++) {
            if (ngx_cmp_sockaddr(rctx->addrs[i].sockaddr,
                                 rctx->addrs[i].socklen,
                                 expect[j].sockaddr, expect[j].socklen, 0)
                == NGX_OK)
            {
                ck->verdict.rc = NGX_OK;
                return;
            }
        }
    }

    p = ngx_slprintf(gate->why, last, "%V resolves to ", &ck->domain);

    for (i = 0; i < rctx->naddrs && i < 4; i++) {
        p = ngx_slprintf(p, last, "%s", i ? ", " : "");
        p += ngx_sock_ntop(rctx->addrs[i].sockaddr, rctx->addrs[i].socklen,
                           p, last - p, 0);
    }

    p = ngx_slprintf(p, last, "%s, not to this edge (", i < rctx->naddrs
                                                         ? ", ..." : "");

    for (j = 0; j < gate->expect->nelts; j++) {
        p = ngx_slprintf(p, last, "%s%V", j ? ", " : "", &expect[j].name);
    }

    p = ngx_slprintf(p, last, ")");
    *p = '\0';
}


static void
ngx_hopgate_dnsgate_resolved(ngx_resolver_ctx_t *rctx)
{
    ngx_hopgate_dnsgate_check_t  *ck = rctx->data;

    ngx_int_t               rc;
    ngx_hopgate_dnsgate_t  *gate = ck->gate;
    ngx_hopgate_verdict_t   v;

    ngx_hopgate_dnsgate_judge(ck, rctx);
    ngx_resolve_name_done(rctx);
    ck->rctx = NULL;

    if (ck->in_check) {
        ck->resolved = 1;
        return;
    }

    ngx_queue_remove(&ck->link);

    if (ck->verdict.rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate: DNS gate: %s", ck->verdict.why);
        ck->done(ck->data, &ck->verdict);
        ngx_hopgate_dnsgate_free(ck);
        return;
    }

    /* the wrapped registry now answers to the caller directly */
    rc = gate->next->ops->check(gate->next, &ck->domain, &ck->key, &v,
                                ck->done, ck->data);

    if (rc != NGX_AGAIN) {
        ck->done(ck->data, &v);
    }

    ngx_hopgate_dnsgate_free(ck);
}


static void
ngx_hopgate_dnsgate_cancel(ngx_hopgate_registry_t *r, void *data)
{
    ngx_queue_t                  *q;
    ngx_hopgate_dnsgate_t        *gate = r->backend;
    ngx_hopgate_dnsgate_check_t  *ck;

    for (q = ngx_queue_head(&gate->pending);
         q != ngx_queue_sentinel(&gate->pending);
         q = ngx_queue_next(q))
    {
        ck = ngx_queue_data(q, ngx_hopgate_dnsgate_check_t, link);

        if (ck->data == data) {
            ngx_queue_remove(q);
            ngx_resolve_name_done(ck->rctx);
            ngx_hopgate_dnsgate_free(ck);
            return;
        }
    }

    /* past the gate: the wrapped registry has it */
    if (gate->next->ops->cancel) {
        gate->next->ops->cancel(gate->next, data);
    }
}


/* the copy of the agent's key goes with the check, wiped */
static void
ngx_hopgate_dnsgate_free(ngx_hopgate_dnsgate_check_t *ck)
{
    ngx_explicit_memzero(ck->key.data, ck->key.len);
    ngx_free(ck);
}


static ngx_int_t
ngx_hopgate_dnsgate_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call)
{
    ngx_hopgate_dnsgate_t  *gate = r->backend;

    if (gate->next->ops->admin == NULL) {
        call->status = NGX_HTTP_NOT_IMPLEMENTED;
        call->error = "this registry has no admin API";
        return NGX_OK;
    }

    return gate->next->ops->admin(gate->next, call);
}


static void
ngx_hopgate_dnsgate_admin_cancel(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call)
{
    ngx_hopgate_dnsgate_t  *gate = r->backend;

    if (gate->next->ops->admin_cancel) {
        gate->next->ops->admin_cancel(gate->next, call);
    }
}


/* the gate stands before agents, not requests: the registry answers */
static ngx_int_t
ngx_hopgate_dnsgate_lookup(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_hopgate_lookup_pt done, void *data)
{
    ngx_hopgate_dnsgate_t  *gate = r->backend;

    return ngx_hopgate_registry_lookup(gate->next, domain, done, data);
}


static void
ngx_hopgate_dnsgate_lookup_cancel(ngx_hopgate_registry_t *r, void *data)
{
    ngx_hopgate_dnsgate_t  *gate = r->backend;

    ngx_hopgate_registry_lookup_cancel(gate->next, data);
}
