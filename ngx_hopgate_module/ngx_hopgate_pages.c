/*
 * Branded error pages for tunnelled requests: when nginx answers a request
 * that went to a hopgate upstream with its own 404 (no such tunnel), 502
 * or 504 page, the body says what happened instead of the bare nginx
 * page: the domain, the time, the request id ($request_id, as in the
 * edge's and the agent's logs), and which hop of visitor - edge - tunnel
 * - local service failed, so that whoever sees it knows whom to tell.
 * An error_page for the code takes precedence: its internal redirect
 * clears the mark this filter looks for.
 *
 * The 404 is nginx's answer too: the pump answers 404 on the carrier for
 * a domain that is not registered, and nginx is told to take that as the
 * upstream's "not found" (intercept_404, as for memcached), so that
 * error_page 404 applies as it does to any 404.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


/* where the request's way broke */
typedef enum {
    NGX_HOPGATE_HOP_EDGE = 0,
    NGX_HOPGATE_HOP_TUNNEL,
    NGX_HOPGATE_HOP_SERVICE
} ngx_hopgate_hop_e;


typedef struct {
    ngx_uint_t                   status;
    const char                  *title;
    ngx_hopgate_hop_e            hop;
    const char                  *what;   /* "%s": the domain */
    const char                  *todo;   /* for the site's owner */
} ngx_hopgate_page_t;


static ngx_int_t ngx_hopgate_pages_header(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_pages_body(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_hopgate_page_t *ngx_hopgate_pages_pick(ngx_http_request_t *r,
    ngx_http_hopgate_ctx_t *ctx);
static ngx_int_t ngx_hopgate_pages_render(ngx_http_request_t *r,
    ngx_http_hopgate_ctx_t *ctx, ngx_hopgate_page_t *page);


static ngx_http_output_header_filter_pt  ngx_hopgate_next_header;
static ngx_http_output_body_filter_pt    ngx_hopgate_next_body;

static ngx_int_t                         ngx_hopgate_request_id_index;


static ngx_hopgate_page_t  ngx_hopgate_page_no_such_tunnel = {
    NGX_HTTP_NOT_FOUND, "no such tunnel", NGX_HOPGATE_HOP_EDGE,
    "This edge has no tunnel for <b>%s</b>: the name is not registered.",
    "Check the address. If this is your site, register the domain with "
    "the edge's operator and start <code>hopgate-agent</code> for it."
};

static ngx_hopgate_page_t  ngx_hopgate_page_offline = {
    NGX_HTTP_BAD_GATEWAY, "tunnel offline", NGX_HOPGATE_HOP_TUNNEL,
    "The tunnel for <b>%s</b> is down: no agent is connected for it "
    "right now.",
    "If this is your site, start <code>hopgate-agent</code> and try again."
};

static ngx_hopgate_page_t  ngx_hopgate_page_refused = {
    NGX_HTTP_BAD_GATEWAY, "local service unavailable",
    NGX_HOPGATE_HOP_SERVICE,
    "The agent for <b>%s</b> is connected, but its local service refused "
    "the request or failed.",
    "If this is your site, check that the service the agent forwards to "
    "is running."
};

static ngx_hopgate_page_t  ngx_hopgate_page_edge = {
    NGX_HTTP_BAD_GATEWAY, "edge error", NGX_HOPGATE_HOP_EDGE,
    "The edge could not carry the request for <b>%s</b>.",
    "Tell the edge's operator, with the request id."
};

static ngx_hopgate_page_t  ngx_hopgate_page_timed_out = {
    NGX_HTTP_GATEWAY_TIME_OUT, "tunnel timed out", NGX_HOPGATE_HOP_SERVICE,
    "The agent for <b>%s</b> is connected, but its local service did not "
    "answer in time.",
    "If this is your site, check why the service the agent forwards to is "
    "slow."
};


static const char  *ngx_hopgate_hops[] = {
    "edge", "tunnel", "local service"
};


ngx_int_t
ngx_hopgate_pages_init(ngx_conf_t *cf)
{
    ngx_str_t  name = ngx_string("request_id");

    ngx_hopgate_request_id_index = ngx_http_get_variable_index(cf, &name);
    if (ngx_hopgate_request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    ngx_hopgate_next_header = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_hopgate_pages_header;

    ngx_hopgate_next_body = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_hopgate_pages_body;

    return NGX_OK;
}


/* the request goes to a hopgate upstream */
void
ngx_hopgate_pages_mark(ngx_http_request_t *r)
{
    ngx_http_hopgate_ctx_t   *ctx;

    if (ngx_http_get_module_ctx(r, ngx_http_hopgate_module)) {
        return;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_hopgate_ctx_t));
    if (ctx) {
        ctx->request = r;
        ngx_http_set_ctx(r, ctx, ngx_http_hopgate_module);
    }
}


/*
 * The pump answers 404 for a domain that is not registered: nginx takes
 * it as the upstream's "not found" and answers with its own 404 page,
 * for this request only (a copy of the upstream settings, as
 * lua-nginx-module makes to change a request's timeouts).
 */
ngx_int_t
ngx_hopgate_pages_no_tunnel(ngx_http_hopgate_ctx_t *ctx)
{
    ngx_http_request_t        *r = ctx->request;
    ngx_http_upstream_conf_t  *conf;

    if (r->upstream == NULL) {
        return NGX_ERROR;
    }

    conf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
    if (conf == NULL) {
        return NGX_ERROR;
    }

    *conf = *r->upstream->conf;
    conf->intercept_404 = 1;
    r->upstream->conf = conf;

    ctx->unknown = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_pages_header(ngx_http_request_t *r)
{
    ngx_hopgate_page_t       *page;
    ngx_http_hopgate_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);

    /* only nginx's own error response */
    if (ctx == NULL || r != r->main || r->err_status == 0
        || r->headers_out.status != r->err_status)
    {
        return ngx_hopgate_next_header(r);
    }

    page = ngx_hopgate_pages_pick(r, ctx);
    if (page == NULL) {
        return ngx_hopgate_next_header(r);
    }

    if (ngx_hopgate_pages_render(r, ctx, page) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->branded = r->err_status;

    r->headers_out.content_length_n = ctx->page.len;
    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_str_set(&r->headers_out.content_type, "text/html");
    r->headers_out.content_type_len = sizeof("text/html") - 1;
    r->headers_out.charset.len = 0;

    return ngx_hopgate_next_header(r);
}


/* which page, if any: never one for a response the upstream made */
static ngx_hopgate_page_t *
ngx_hopgate_pages_pick(ngx_http_request_t *r, ngx_http_hopgate_ctx_t *ctx)
{
    switch (r->err_status) {

    case NGX_HTTP_NOT_FOUND:
        /* the pump's own 404, taken by nginx as the upstream's */
        return ctx->unknown ? &ngx_hopgate_page_no_such_tunnel : NULL;

    case NGX_HTTP_BAD_GATEWAY:
        break;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        return (r->upstream && r->upstream->headers_in.status_n)
               ? NULL : &ngx_hopgate_page_timed_out;

    default:
        return NULL;
    }

    if (r->upstream && r->upstream->headers_in.status_n) {
        return NULL;
    }

    switch (ctx->failed) {

    case NGX_HOPGATE_STREAM_AGENT_RESET + 1:
        return &ngx_hopgate_page_refused;

    case NGX_HOPGATE_STREAM_INTERNAL + 1:
        return &ngx_hopgate_page_edge;

    default:
        return &ngx_hopgate_page_offline;
    }
}


#define NGX_HOPGATE_PAGE_HEAD                                                \
    "<!DOCTYPE html>\n"                                                      \
    "<html lang=\"en\"><head><meta charset=\"utf-8\">"                       \
    "<title>%ui &ndash; %s</title>"                                          \
    "<style>body{font-family:system-ui,sans-serif;background:#0f172a;"       \
    "color:#e2e8f0;display:flex;align-items:center;justify-content:center;"  \
    "min-height:100vh;margin:0}main{max-width:36rem;padding:2rem}"           \
    "h1{font-size:1.5rem}p{color:#94a3b8}small{color:#64748b}"               \
    "ol{display:flex;gap:.5rem;list-style:none;padding:0}"                   \
    "li{padding:.25rem .5rem;border-radius:.25rem;background:#1e293b}"       \
    "li.ok{color:#86efac}li.failed{color:#fca5a5;font-weight:bold}"          \
    "dt{color:#64748b}dd{margin:0 0 .5rem 0;font-family:monospace}</style>"  \
    "</head><body><main><h1>%ui &ndash; %s</h1>"


/* the page for this request, in its pool */
static ngx_int_t
ngx_hopgate_pages_render(ngx_http_request_t *r, ngx_http_hopgate_ctx_t *ctx,
    ngx_hopgate_page_t *page)
{
    u_char                     *p, *last;
    u_char                      domain[NGX_HOPGATE_DOMAIN_MAX * 6 + 1];
    size_t                      len;
    ngx_tm_t                    tm;
    ngx_str_t                   name;
    ngx_uint_t                  i;
    ngx_http_variable_value_t  *id;

    /* the domain routed by, else the Host as sent */
    if (ctx->tunnel.domain_len) {
        name.data = ctx->tunnel.domain;
        name.len = ctx->tunnel.domain_len;

    } else if (r->headers_in.server.len) {
        name.data = r->headers_in.server.data;
        name.len = ngx_min(r->headers_in.server.len, NGX_HOPGATE_DOMAIN_MAX);

    } else {
        ngx_str_set(&name, "(none)");
    }

    *(u_char *) ngx_escape_html(domain, name.data, name.len) = '\0';

    id = ngx_http_get_indexed_variable(r, ngx_hopgate_request_id_index);
    if (id == NULL || id->not_found) {
        id = &ngx_http_variable_null_value;
    }

    ngx_gmtime(ngx_time(), &tm);

    len = sizeof(NGX_HOPGATE_PAGE_HEAD) + 2048 + ngx_strlen(domain) * 2;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->page.data = p;
    last = p + len;

    p = ngx_slprintf(p, last, NGX_HOPGATE_PAGE_HEAD, page->status,
                     page->title, page->status, page->title);

    p = ngx_slprintf(p, last, "<p>");
    p = ngx_slprintf(p, last, page->what, domain);
    p = ngx_slprintf(p, last, "</p><p>%s</p>", page->todo);

    /* visitor, then the hops up to the failed one */
    p = ngx_slprintf(p, last, "<ol><li class=\"ok\">visitor</li>");

    for (i = 0; i < sizeof(ngx_hopgate_hops) / sizeof(char *); i++) {
        p = ngx_slprintf(p, last, "<li%s>%s</li>",
                         i < page->hop ? " class=\"ok\""
                         : (i == page->hop ? " class=\"failed\"" : ""),
                         ngx_hopgate_hops[i]);
    }

    p = ngx_slprintf(p, last,
                     "</ol><p>Failed at: <b>%s</b></p>"
                     "<dl><dt>site</dt><dd>%s</dd>"
                     "<dt>time</dt>"
                     "<dd>%4d-%02d-%02d %02d:%02d:%02d UTC</dd>"
                     "<dt>request id</dt><dd>%v</dd></dl>"
                     "<p>Whoever runs this site can find the request by "
                     "its id in the edge's and the agent's logs.</p>"
                     "<small>HopGate</small></main></body></html>\n",
                     ngx_hopgate_hops[page->hop], domain,
                     tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                     tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, id);

    ctx->page.len = p - ctx->page.data;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_pages_body(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                *b;
    ngx_chain_t              *cl, out;
    ngx_http_hopgate_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);

    if (ctx == NULL || !ctx->branded) {
        return ngx_hopgate_next_body(r, in);
    }

    /* nginx's page is consumed unsent; ours goes instead, once */
    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->branded == 1) {
        return NGX_OK;
    }

    ctx->branded = 1;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->page.data;
    b->last = ctx->page.data + ctx->page.len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_hopgate_next_body(r, &out);
}
