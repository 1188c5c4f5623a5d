/*
 * The balancer: `hopgate;` in an upstream block makes the request's tunnel
 * (the session for its domain in this worker) the upstream's first peer.
 * The block's `server` lines, if any, are fallbacks tried when the tunnel
 * fails, by nginx's own round-robin balancer, which this one wraps the
 * way the keepalive module wraps its balancer: so weight, max_fails,
 * fail_timeout, max_conns, down and backup behave as in any upstream, and
 * so do proxy_next_upstream and error_page. When nothing is left, nginx
 * answers 502 or 504 (branded unless error_page says otherwise).
 *
 *     upstream tunnels { hopgate; server 127.0.0.1:8081 backup; }
 *     location / { proxy_pass http://tunnels; }
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


typedef struct {
    ngx_http_hopgate_upstream_conf_t  *conf;
    ngx_http_request_t                *request;
    ngx_str_t                          domain;
    uint64_t                           session;    /* of the last try */
    ngx_uint_t                         tunnel_tries;
    ngx_http_upstream_rr_peer_data_t  *fallback;   /* NULL: no servers */
    unsigned                           tunnel:1;   /* the current try */
    u_char                             buf[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_http_hopgate_peer_data_t;


static ngx_int_t ngx_http_hopgate_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_hopgate_fallback_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_hopgate_upstream_conf_t *hucf);
static ngx_int_t ngx_http_hopgate_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_hopgate_peer_get(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_hopgate_peer_free(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_hopgate_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_hopgate_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif


/*
 * The peer address nginx keeps for a tunnel: no address family, so that
 * logs show the upstream as "http://DOMAIN/URI"; its name is the domain.
 */
static struct sockaddr  ngx_http_hopgate_sockaddr = { AF_UNSPEC, { 0 } };


char *
ngx_http_hopgate_upstream(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf, **up;
    ngx_http_hopgate_main_conf_t  *hmcf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate\" must be the only balancer in "
                           "upstream \"%V\"", &uscf->host);
        return NGX_CONF_ERROR;
    }

    uscf->peer.init_upstream = ngx_http_hopgate_upstream_init;

    /* checked once the http block is read (a balancer may replace us) */
    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hopgate_module);

    up = ngx_array_push(&hmcf->upstreams);
    if (up == NULL) {
        return NGX_CONF_ERROR;
    }

    *up = uscf;

    /*
     * nginx insists on a server in every upstream block; the tunnel needs
     * none, so a nameless placeholder marked down stands in for it
     */
    if (uscf->servers == NULL) {
        uscf->servers = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_upstream_server_t));
        if (uscf->servers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    us = ngx_array_push(uscf->servers);
    if (us == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
    us->down = 1;

    return NGX_CONF_OK;
}


/* the upstream's balancer is still ours after the http block */
ngx_int_t
ngx_http_hopgate_upstream_check(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    if (us->peer.init_upstream == ngx_http_hopgate_upstream_init) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"hopgate\" cannot be combined with \"keepalive\" or "
                  "another balancer in upstream \"%V\" in %s:%ui",
                  &us->host, us->file_name, us->line);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_hopgate_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_hopgate_main_conf_t      *hmcf;
    ngx_http_hopgate_upstream_conf_t  *hucf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hopgate_module);

    if (hmcf->listen.nelts == 0 && !hmcf->tunnel) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "upstream \"%V\" in %s:%ui uses \"hopgate\", which "
                      "needs \"hopgate_listen\" (with "
                      "\"hopgate_certificate\" and \"hopgate_registry\") "
                      "in the http block, or a \"hopgate_tunnel\" "
                      "location", &us->host, us->file_name, us->line);
        return NGX_ERROR;
    }

    hucf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_upstream_conf_t));
    if (hucf == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_hopgate_fallback_init(cf, us, hucf) != NGX_OK) {
        return NGX_ERROR;
    }

    us->peer.init = ngx_http_hopgate_peer_init;
    us->peer.data = hucf;

    return NGX_OK;
}


/*
 * The server lines (all but our placeholder) become a round-robin
 * upstream of their own. Those are all tried after the tunnel anyway, so
 * when every one is a backup they are made the primary set: nginx wants
 * one, and the order stays the same.
 */
static ngx_int_t
ngx_http_hopgate_fallback_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us, ngx_http_hopgate_upstream_conf_t *hucf)
{
    ngx_uint_t                     i, primary;
    ngx_array_t                   *servers;
    ngx_http_upstream_server_t    *server, *s;
    ngx_http_upstream_srv_conf_t  *fallback;

    servers = ngx_array_create(cf->pool, us->servers->nelts,
                               sizeof(ngx_http_upstream_server_t));
    if (servers == NULL) {
        return NGX_ERROR;
    }

    primary = 0;
    server = us->servers->elts;

    for (i = 0; i < us->servers->nelts; i++) {
        if (server[i].name.len == 0) {
            continue;
        }

        s = ngx_array_push(servers);
        if (s == NULL) {
            return NGX_ERROR;
        }

        *s = server[i];
        primary += !s->backup;
    }

    if (servers->nelts == 0) {
        return NGX_OK;
    }

    if (primary == 0) {
        s = servers->elts;
        for (i = 0; i < servers->nelts; i++) {
            s[i].backup = 0;
        }
    }

    fallback = ngx_palloc(cf->pool, sizeof(ngx_http_upstream_srv_conf_t));
    if (fallback == NULL) {
        return NGX_ERROR;
    }

    *fallback = *us;
    fallback->servers = servers;

    if (ngx_http_upstream_init_round_robin(cf, fallback) != NGX_OK) {
        return NGX_ERROR;
    }

    hucf->fallback = fallback;

    return NGX_OK;
}


/* the domain a request is routed by: hopgate_route, else its Host */
static ngx_int_t
ngx_http_hopgate_route(ngx_http_request_t *r,
    ngx_http_hopgate_peer_data_t *pd)
{
    size_t                        len;
    ngx_str_t                     route;
    ngx_http_hopgate_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hopgate_module);

    if (hlcf->route) {
        if (ngx_http_complex_value(r, hlcf->route, &route) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (r->headers_in.server.len) {
        route = r->headers_in.server;

    } else {
        ngx_str_null(&route);
    }

    /* like a domain that is not registered: no such tunnel */
    if (ngx_hopgate_domain_normalize(&route, pd->buf, &len) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hopgate: \"%V\" is not a domain to route by", &route);
        return NGX_DECLINED;
    }

    pd->domain.data = pd->buf;
    pd->domain.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hopgate_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_int_t                      rc;
    ngx_uint_t                     fallback_tries;
    ngx_http_upstream_t           *u = r->upstream;
    ngx_http_hopgate_peer_data_t  *pd;

    pd = ngx_pcalloc(r->pool, sizeof(ngx_http_hopgate_peer_data_t));
    if (pd == NULL) {
        return NGX_ERROR;
    }

    pd->conf = us->peer.data;
    pd->request = r;

    rc = ngx_http_hopgate_route(r, pd);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    fallback_tries = 0;

    if (pd->conf->fallback) {
        /* round robin keeps its state where the peer data goes */
        u->peer.data = NULL;

        if (ngx_http_upstream_init_round_robin_peer(r, pd->conf->fallback)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        pd->fallback = u->peer.data;
        fallback_tries = u->peer.tries;
    }

    /*
     * The tunnel may be tried twice: a request whose session died under
     * it (the agent was killed) goes again on another session, if nginx
     * deems it safe to repeat. Without a domain only fallbacks remain, or
     * the tunnel's "no such tunnel" answer when there are none.
     */
    if (rc == NGX_OK) {
        pd->tunnel_tries = 2;

    } else {
        ngx_str_null(&pd->domain);
        pd->tunnel_tries = pd->fallback ? 0 : 1;
    }

    u->peer.get = ngx_http_hopgate_peer_get;
    u->peer.free = ngx_http_hopgate_peer_free;
    u->peer.data = pd;
    u->peer.tries = pd->tunnel_tries + fallback_tries;
#if (NGX_HTTP_SSL)
    u->peer.set_session = ngx_http_hopgate_set_session;
    u->peer.save_session = ngx_http_hopgate_save_session;
#endif

    ngx_hopgate_pages_mark(r);

    return NGX_OK;
}


static ngx_int_t
ngx_http_hopgate_peer_get(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    ngx_int_t                     rc;
    ngx_http_hopgate_loc_conf_t  *hlcf;

    if (pd->tunnel_tries) {
        pd->tunnel_tries--;

        hlcf = ngx_http_get_module_loc_conf(pd->request,
                                            ngx_http_hopgate_module);

        rc = ngx_hopgate_pump_create(pd->request, pc, &pd->domain,
                                     hlcf->connect_timeout, &pd->session,
                                     pd->fallback == NULL);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            /* only a try nginx goes on with has an address: it frees it */
            pd->tunnel = 1;
            pc->sockaddr = &ngx_http_hopgate_sockaddr;
            pc->socklen = sizeof(ngx_http_hopgate_sockaddr);
            pc->name = &pd->domain;

            if (pd->session == 0 && pd->tunnel_tries) {
                /* it waits for a session: one wait is all a request gets */
                pd->tunnel_tries = 0;
                pc->tries--;
            }

            /* a connected socket, as the keepalive balancer hands over */
            return NGX_DONE;
        }

        /* NGX_DECLINED: no such tunnel, the fallbacks are next */
        pc->tries -= 1 + pd->tunnel_tries;
        pd->tunnel_tries = 0;
    }

    pd->tunnel = 0;

    if (pd->fallback) {
        return ngx_http_upstream_get_round_robin_peer(pc, pd->fallback);
    }

    return NGX_BUSY;
}


static void
ngx_http_hopgate_peer_free(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    ngx_hopgate_domain_t  *d;

    if (!pd->tunnel) {
        ngx_http_upstream_free_round_robin_peer(pc, pd->fallback, state);
        return;
    }

    if (pc->tries) {
        pc->tries--;
    }

    /* a second try of the tunnel is worth it only with another session */
    if (pd->tunnel_tries && (state & NGX_PEER_FAILED)) {
        d = ngx_hopgate_domain_get(&pd->domain, 0);

        if (d == NULL || ngx_hopgate_domain_pick(d, pd->session) == NULL) {
            pd->tunnel_tries = 0;
            if (pc->tries) {
                pc->tries--;
            }
        }
    }
}


#if (NGX_HTTP_SSL)

/* TLS sessions are the fallback servers' business: the tunnel has none */
static ngx_int_t
ngx_http_hopgate_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    if (pd->tunnel) {
        return NGX_OK;
    }

    return ngx_http_upstream_set_round_robin_peer_session(pc, pd->fallback);
}


static void
ngx_http_hopgate_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    if (!pd->tunnel) {
        ngx_http_upstream_save_round_robin_peer_session(pc, pd->fallback);
    }
}

#endif
