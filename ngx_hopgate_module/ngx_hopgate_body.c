/*
 * A response body built from pool buffers with printf-style calls, sent
 * with a Content-Length: what /metrics and hopgate_status answer with.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


ngx_int_t
ngx_hopgate_body_printf(ngx_hopgate_body_t *out, const char *fmt, ...)
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
ngx_hopgate_body_send(ngx_http_request_t *r, ngx_hopgate_body_t *out,
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
