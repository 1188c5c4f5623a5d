/*
 * Branded error pages for tunnelled requests: when nginx answers a request
 * that went to a hopgate upstream with its own 502 or 504 page, the body
 * says what happened ("tunnel offline", "tunnel timed out") instead of the
 * bare nginx page. An error_page for the code takes precedence: its
 * internal redirect clears the mark this filter looks for.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


static ngx_int_t ngx_hopgate_pages_header(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_pages_body(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_hopgate_next_header;
static ngx_http_output_body_filter_pt    ngx_hopgate_next_body;


#define NGX_HOPGATE_PAGE(title, text)                                        \
    "<!DOCTYPE html>\n"                                                      \
    "<html lang=\"en\"><head><meta charset=\"utf-8\">"                       \
    "<title>" title "</title>"                                               \
    "<style>body{font-family:system-ui,sans-serif;background:#0f172a;"       \
    "color:#e2e8f0;display:flex;align-items:center;justify-content:center;"  \
    "min-height:100vh;margin:0}main{max-width:32rem;padding:2rem}"           \
    "h1{font-size:1.5rem}p{color:#94a3b8}small{color:#64748b}</style>"       \
    "</head><body><main><h1>" title "</h1><p>" text "</p>"                   \
    "<small>HopGate</small></main></body></html>\n"

static ngx_str_t  ngx_hopgate_page_502 = ngx_string(
    NGX_HOPGATE_PAGE("502 &ndash; tunnel offline",
                     "No agent is connected for this site right now, or it "
                     "could not reach its local service. If this is your "
                     "site, start <code>hopgate-agent</code> and try again.")
);

static ngx_str_t  ngx_hopgate_page_504 = ngx_string(
    NGX_HOPGATE_PAGE("504 &ndash; tunnel timed out",
                     "The agent for this site is connected, but its local "
                     "service did not answer in time.")
);


ngx_int_t
ngx_hopgate_pages_init(ngx_conf_t *cf)
{
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
        ngx_http_set_ctx(r, ctx, ngx_http_hopgate_module);
    }
}


static ngx_int_t
ngx_hopgate_pages_header(ngx_http_request_t *r)
{
    ngx_str_t                *page;
    ngx_http_hopgate_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);

    /*
     * only nginx's own error response: its status is r->err_status, and
     * the upstream never produced a header of its own
     */
    if (ctx == NULL || r != r->main || r->err_status == 0
        || r->headers_out.status != r->err_status
        || (r->upstream && r->upstream->headers_in.status_n))
    {
        return ngx_hopgate_next_header(r);
    }

    switch (r->err_status) {
    case NGX_HTTP_BAD_GATEWAY:
        page = &ngx_hopgate_page_502;
        break;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        page = &ngx_hopgate_page_504;
        break;
    default:
        return ngx_hopgate_next_header(r);
    }

    ctx->branded = r->err_status;

    r->headers_out.content_length_n = page->len;
    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_str_set(&r->headers_out.content_type, "text/html");
    r->headers_out.content_type_len = sizeof("text/html") - 1;
    r->headers_out.charset.len = 0;

    return ngx_hopgate_next_header(r);
}


static ngx_int_t
ngx_hopgate_pages_body(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                *b;
    ngx_str_t                *page;
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

    page = ctx->branded == NGX_HTTP_GATEWAY_TIME_OUT ? &ngx_hopgate_page_504
                                                     : &ngx_hopgate_page_502;
    ctx->branded = 1;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = page->data;
    b->last = page->data + page->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_hopgate_next_body(r, &out);
}
