/*
 * The balancer: `hopgate;` in an upstream block makes the request's tunnel
 * (the session for its domain in this worker) the upstream's first peer.
 * The block's `server` lines, if any, are fallbacks tried in order when
 * the tunnel fails, so proxy_next_upstream and backup servers behave as
 * with any upstream; when nothing is left, nginx answers 502 or 504
 * (branded unless error_page says otherwise).
 *
 *     upstream tunnels { hopgate; server 127.0.0.1:8081 backup; }
 *     location / { proxy_pass http://tunnels; }
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/un.h>

#include "ngx_http_hopgate_module.h"


typedef struct {
    ngx_http_hopgate_upstream_conf_t  *conf;
    ngx_http_request_t                *request;
    ngx_str_t                          domain;
    ngx_str_t                          name;
    ngx_uint_t                         next_fallback;
    uint64_t                           session;    /* of the last try */
    ngx_uint_t                         tunnel_tries;
    u_char                             buf[NGX_HOPGATE_DOMAIN_MAX + 1];
    u_char                             name_buf[NGX_HOPGATE_DOMAIN_MAX
                                                + sizeof("hopgate:")];
} ngx_http_hopgate_peer_data_t;


static ngx_int_t ngx_http_hopgate_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_hopgate_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_hopgate_peer_get(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_hopgate_peer_free(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);

char *ngx_http_hopgate_upstream(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/* the peer address nginx shows for a tunnel ($upstream_addr) */
static struct sockaddr_un  ngx_http_hopgate_sockaddr = { AF_UNIX, "hopgate" };


char *
ngx_http_hopgate_upstream(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate\" must be the only balancer in "
                           "upstream \"%V\"", &uscf->host);
        return NGX_CONF_ERROR;
    }

    uscf->peer.init_upstream = ngx_http_hopgate_upstream_init;

    /*
     * nginx insists on a server in every upstream block; the tunnel needs
     * none, so an empty placeholder marked down stands in for it
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

    uscf->flags = NGX_HTTP_UPSTREAM_CREATE
                  |NGX_HTTP_UPSTREAM_WEIGHT
                  |NGX_HTTP_UPSTREAM_MAX_FAILS
                  |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                  |NGX_HTTP_UPSTREAM_DOWN
                  |NGX_HTTP_UPSTREAM_BACKUP;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hopgate_upstream_init(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                         i, j;
    ngx_addr_t                        *addr;
    ngx_http_upstream_server_t        *server;
    ngx_http_hopgate_upstream_conf_t  *hucf;

    hucf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_upstream_conf_t));
    if (hucf == NULL) {
        return NGX_ERROR;
    }

    hucf->fallback = ngx_array_create(cf->pool, 2, sizeof(ngx_addr_t));
    if (hucf->fallback == NULL) {
        return NGX_ERROR;
    }

    /* primary servers first, then backup ones, each in the given order */
    if (us->servers) {
        server = us->servers->elts;

        for (j = 0; j < 2; j++) {
            for (i = 0; i < us->servers->nelts; i++) {
                if (server[i].backup != j || server[i].down
                    || server[i].naddrs == 0)
                {
                    continue;
                }

                addr = ngx_array_push_n(hucf->fallback, server[i].naddrs);
                if (addr == NULL) {
                    return NGX_ERROR;
                }

                ngx_memcpy(addr, server[i].addrs,
                           server[i].naddrs * sizeof(ngx_addr_t));
            }
        }
    }

    us->peer.init = ngx_http_hopgate_peer_init;
    us->peer.data = hucf;

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

    if (ngx_hopgate_domain_normalize(&route, pd->buf, &len) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hopgate: \"%V\" is not a domain to route by", &route);
        return NGX_DECLINED;
    }

    pd->domain.data = pd->buf;
    pd->domain.len = len;

    pd->name.data = pd->name_buf;
    pd->name.len = ngx_sprintf(pd->name_buf, "hopgate:%V", &pd->domain)
                   - pd->name_buf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_hopgate_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_int_t                      rc;
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

    /*
     * The tunnel may be tried twice: a request whose session died under
     * it (the agent was killed) goes again on another session, if nginx
     * deems it safe to repeat. Without a domain only fallbacks remain.
     */
    pd->tunnel_tries = (rc == NGX_OK) ? 2 : 0;

    r->upstream->peer.get = ngx_http_hopgate_peer_get;
    r->upstream->peer.free = ngx_http_hopgate_peer_free;
    r->upstream->peer.data = pd;
    r->upstream->peer.tries = pd->tunnel_tries + pd->conf->fallback->nelts;

    ngx_hopgate_pages_mark(r);

    return NGX_OK;
}


static ngx_int_t
ngx_http_hopgate_peer_get(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    ngx_addr_t                   *addr;
    ngx_http_hopgate_loc_conf_t  *hlcf;

    if (pd->tunnel_tries) {
        pd->tunnel_tries--;

        pc->sockaddr = (struct sockaddr *) &ngx_http_hopgate_sockaddr;
        pc->socklen = sizeof(ngx_http_hopgate_sockaddr);
        pc->name = &pd->name;

        hlcf = ngx_http_get_module_loc_conf(pd->request,
                                            ngx_http_hopgate_module);

        if (ngx_hopgate_pump_create(pd->request, pc, &pd->domain,
                                    hlcf->connect_timeout, &pd->session)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (pd->session == 0 && pd->tunnel_tries) {
            /* it waits for a session: one wait is all a request gets */
            pd->tunnel_tries = 0;
            pc->tries--;
        }

        /* a connected socket, as the keepalive balancer hands over */
        return NGX_DONE;
    }

    if (pd->next_fallback < pd->conf->fallback->nelts) {
        addr = pd->conf->fallback->elts;
        addr = &addr[pd->next_fallback++];

        pc->sockaddr = addr->sockaddr;
        pc->socklen = addr->socklen;
        pc->name = &addr->name;

        return NGX_OK;
    }

    return NGX_BUSY;
}


static void
ngx_http_hopgate_peer_free(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_hopgate_peer_data_t  *pd = data;

    ngx_hopgate_domain_t  *d;

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
