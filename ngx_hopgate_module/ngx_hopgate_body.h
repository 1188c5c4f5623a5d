/*
 * A response body built from pool buffers (ngx_hopgate_body.c).
 */

#ifndef NGX_HOPGATE_BODY_H
#define NGX_HOPGATE_BODY_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct {
    ngx_pool_t                    *pool;
    ngx_chain_t                   *first;
    ngx_chain_t                  **last;
    ngx_buf_t                     *buf;
    off_t                          size;
} ngx_hopgate_body_t;


/* appends; no single call may write more than 2048 bytes */
ngx_int_t ngx_hopgate_body_printf(ngx_hopgate_body_t *out,
    const char *fmt, ...);

/* a 200 with the body and its length */
ngx_int_t ngx_hopgate_body_send(ngx_http_request_t *r, ngx_hopgate_body_t *out,
    ngx_str_t *type);

#endif /* NGX_HOPGATE_BODY_H */
