/*
 * HTTP-01 (RFC 8555 8.3): the elected worker publishes each pending
 * challenge's token and key authorization in the shared zone; any worker
 * answers the CA's GET /.well-known/acme-challenge/TOKEN from there:
 *
 *   location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_TOKEN_TTL  600       /* s, an abandoned token */


static ngx_int_t ngx_hopgate_acme_challenge_handler(ngx_http_request_t *r);


char *
ngx_hopgate_acme_challenge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_acme_loc_conf_t  *alcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->challenge) {
        return "is duplicate";
    }

    alcf->challenge = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_hopgate_acme_challenge_handler;

    return NGX_CONF_OK;
}


/* base64url characters only: what RFC 8555 allows in a token */
static ngx_int_t
ngx_hopgate_acme_token_valid(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len >= NGX_HOPGATE_ACME_TOKEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')
              || (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


ngx_int_t
ngx_hopgate_acme_token_put(ngx_str_t *token, ngx_str_t *keyauth)
{
    time_t                     now;
    ngx_uint_t                 i;
    ngx_slab_pool_t           *shpool;
    ngx_hopgate_acme_shm_t    *shm;
    ngx_hopgate_acme_token_t  *t, *free;

    if (!ngx_hopgate_acme_token_valid(token->data, token->len)
        || keyauth->len >= NGX_HOPGATE_ACME_KEYAUTH_MAX)
    {
        return NGX_ERROR;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    now = ngx_time();
    free = NULL;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
        t = &shm->tokens[i];

        if (t->token_len && t->expires < now) {
            t->token_len = 0;
        }

        if (t->token_len == 0 && free == NULL) {
            free = t;
        }
    }

    if (free) {
        ngx_memcpy(free->token, token->data, token->len);
        ngx_memcpy(free->keyauth, keyauth->data, keyauth->len);
        free->keyauth_len = keyauth->len;
        free->expires = now + NGX_HOPGATE_ACME_TOKEN_TTL;
        free->token_len = token->len;
        free->remote = 0;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (free == NULL) {
        return NGX_ERROR;
    }

    /* other edges answer it too */
    ngx_hopgate_acme_pg_token(token, keyauth);

    return NGX_OK;
}


/*
 * The database's pending tokens (all edges'): those of this edge's own
 * orders stay; the mirrored ones become exactly this set.
 */
void
ngx_hopgate_acme_token_mirror(ngx_str_t *tokens, ngx_str_t *keyauths,
    ngx_uint_t n)
{
    time_t                     now;
    ngx_uint_t                 i, j;
    ngx_slab_pool_t           *shpool;
    ngx_hopgate_acme_shm_t    *shm;
    ngx_hopgate_acme_token_t  *t;

    shm = ngx_hopgate_acme_shm(&shpool);
    now = ngx_time();

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
        shm->tokens[i].seen = 0;
    }

    for (j = 0; j < n; j++) {
        if (!ngx_hopgate_acme_token_valid(tokens[j].data, tokens[j].len)
            || keyauths[j].len >= NGX_HOPGATE_ACME_KEYAUTH_MAX)
        {
            continue;
        }

        t = NULL;

        for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
            if (shm->tokens[i].token_len == tokens[j].len
                && ngx_strncmp(shm->tokens[i].token, tokens[j].data,
                               tokens[j].len) == 0)
            {
                t = &shm->tokens[i];
                break;
            }
        }

        for (i = 0; t == NULL && i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
            if (shm->tokens[i].token_len == 0) {
                t = &shm->tokens[i];
                ngx_memcpy(t->token, tokens[j].data, tokens[j].len);
                ngx_memcpy(t->keyauth, keyauths[j].data, keyauths[j].len);
                t->keyauth_len = keyauths[j].len;
                t->expires = now + NGX_HOPGATE_ACME_TOKEN_TTL;
                t->token_len = tokens[j].len;
                t->remote = 1;
            }
        }

        if (t) {
            t->seen = 1;
        }
    }

    for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
        t = &shm->tokens[i];
        if (t->token_len && t->remote && !t->seen) {
            t->token_len = 0;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


void
ngx_hopgate_acme_token_drop(ngx_str_t *token)
{
    ngx_uint_t                 i;
    ngx_slab_pool_t           *shpool;
    ngx_hopgate_acme_shm_t    *shm;
    ngx_hopgate_acme_token_t  *t;

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
        t = &shm->tokens[i];

        if (t->token_len == token->len
            && ngx_strncmp(t->token, token->data, token->len) == 0)
        {
            t->token_len = 0;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
    ngx_hopgate_acme_pg_token(token, NULL);
}


static ngx_int_t
ngx_hopgate_acme_challenge_handler(ngx_http_request_t *r)
{
    u_char                     keyauth[NGX_HOPGATE_ACME_KEYAUTH_MAX];
    u_char                    *token, *slash;
    size_t                     len, klen;
    ngx_int_t                  rc;
    ngx_buf_t                 *b;
    ngx_uint_t                 i;
    ngx_chain_t                out;
    ngx_slab_pool_t           *shpool;
    ngx_hopgate_acme_shm_t    *shm;
    ngx_hopgate_acme_token_t  *t;

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (ngx_hopgate_acme_conf == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    /* the last path segment is the token */
    slash = r->uri.data + r->uri.len;
    while (slash > r->uri.data && slash[-1] != '/') {
        slash--;
    }

    token = slash;
    len = r->uri.data + r->uri.len - token;

    if (!ngx_hopgate_acme_token_valid(token, len)) {
        return NGX_HTTP_NOT_FOUND;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    klen = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HOPGATE_ACME_CHALLENGES; i++) {
        t = &shm->tokens[i];

        if (t->token_len == len && ngx_strncmp(t->token, token, len) == 0) {
            klen = t->keyauth_len;
            ngx_memcpy(keyauth, t->keyauth, klen);
            break;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (klen == 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "hopgate acme: answered the http-01 challenge %*s",
                  len, token);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = klen;
    ngx_str_set(&r->headers_out.content_type, "application/octet-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (r->method == NGX_HTTP_HEAD) {
        return ngx_http_send_header(r);
    }

    b = ngx_create_temp_buf(r->pool, klen);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, keyauth, klen);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}
