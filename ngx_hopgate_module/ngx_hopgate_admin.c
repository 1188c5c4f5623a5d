/*
 * The admin API: `location /api/v1/admin/ { hopgate_admin; }` with
 * `hopgate_admin_key_file PATH` (the bearer token).
 *
 *   GET  .../domains                 list
 *   POST .../domains/register        {domain, memo}        -> client_api_key
 *   POST .../domains/unregister      {domain, client_api_key}
 *   POST .../domains/rotate          {domain}              -> client_api_key
 *   POST .../domains/disable         {domain}
 *   POST .../domains/enable          {domain}
 *
 * Every answer is JSON with "success"; failures carry "error". The body is
 * read asynchronously, at most 16k of it (a chunked body is cut off with a
 * 413 where it passes that), and the answer is sent when the registry
 * backend has one (a database round trip): the request holds a reference
 * (r->main->count) meanwhile, and a cleanup cancels the call if the
 * request goes away first.
 *
 * Client keys are "hg_" and 64 hex digits (32 random bytes): the prefix
 * lets secret scanners spot a leaked key; only its SHA-256 is stored.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <jansson.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_ADMIN_BODY_MAX   16384
#define NGX_HOPGATE_ADMIN_MEMO_MAX   1024
#define NGX_HOPGATE_ADMIN_TOKEN_MIN  16
#define NGX_HOPGATE_KEY_PREFIX       "hg_"
#define NGX_HOPGATE_KEY_LEN          (sizeof(NGX_HOPGATE_KEY_PREFIX) - 1 + 64)


typedef struct {
    ngx_hopgate_admin_call_t     call;
    ngx_http_request_t          *request;
    u_char                       key[NGX_HOPGATE_KEY_LEN + 1];
    unsigned                     pending:1;
} ngx_hopgate_admin_ctx_t;


typedef struct {
    ngx_str_t                    name;
    ngx_hopgate_admin_op_e       op;
} ngx_hopgate_admin_route_t;


static ngx_int_t ngx_hopgate_admin_handler(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_admin_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_hopgate_admin_read_body(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_admin_too_large(ngx_http_request_t *r);
static ngx_hopgate_admin_ctx_t *ngx_hopgate_admin_ctx(ngx_http_request_t *r,
    ngx_hopgate_admin_op_e op);
static ngx_int_t ngx_hopgate_admin_route(ngx_http_request_t *r,
    ngx_hopgate_admin_op_e *op);
static void ngx_hopgate_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_admin_parse(ngx_http_request_t *r,
    ngx_hopgate_admin_ctx_t *ctx, u_char *body, size_t len,
    const char **error);
static ngx_int_t ngx_hopgate_admin_start(ngx_http_request_t *r,
    ngx_hopgate_admin_ctx_t *ctx);
static void ngx_hopgate_admin_done(ngx_hopgate_admin_call_t *call);
static void ngx_hopgate_admin_cleanup(void *data);
static ngx_int_t ngx_hopgate_admin_answer(ngx_http_request_t *r,
    ngx_hopgate_admin_ctx_t *ctx);
static ngx_int_t ngx_hopgate_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
static ngx_int_t ngx_hopgate_admin_send(ngx_http_request_t *r,
    ngx_uint_t status, json_t *json);


static ngx_http_request_body_filter_pt  ngx_hopgate_admin_next_body_filter;


static ngx_hopgate_admin_route_t  ngx_hopgate_admin_routes[] = {
    { ngx_string("register"), NGX_HOPGATE_ADMIN_REGISTER },
    { ngx_string("unregister"), NGX_HOPGATE_ADMIN_UNREGISTER },
    { ngx_string("rotate"), NGX_HOPGATE_ADMIN_ROTATE },
    { ngx_string("disable"), NGX_HOPGATE_ADMIN_DISABLE },
    { ngx_string("enable"), NGX_HOPGATE_ADMIN_ENABLE },
    { ngx_null_string, 0 }
};


static const char  *ngx_hopgate_admin_verbs[] = {
    "listed", "registered", "unregistered", "rotated the key of",
    "disabled", "enabled"
};


/* ---- directives ---------------------------------------------------------- */

char *
ngx_hopgate_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_loc_conf_t  *hlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (hlcf->admin) {
        return "is duplicate";
    }

    hlcf->admin = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_hopgate_admin_handler;

    return NGX_CONF_OK;
}


/* postconfiguration: the body size limit, as a request body filter */
ngx_int_t
ngx_hopgate_admin_init(ngx_conf_t *cf)
{
    ngx_hopgate_admin_next_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_hopgate_admin_body_filter;

    return NGX_OK;
}


/* the token is read at configuration time; only its SHA-256 is kept */
char *
ngx_hopgate_admin_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_loc_conf_t  *hlcf = conf;

    u_char     buf[1024], *p, *last;
    ssize_t    n;
    ngx_fd_t   fd;
    ngx_str_t  path, *value, token;

    if (hlcf->admin_key != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"hopgate_admin_key_file\": cannot open \"%V\"",
                           &path);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));
    ngx_close_file(fd);

    if (n < 0 || (size_t) n == sizeof(buf)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_admin_key_file\": cannot read \"%V\" "
                           "(at most %uz bytes)", &path, sizeof(buf) - 1);
        return NGX_CONF_ERROR;
    }

    p = buf;
    last = buf + n;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == '\n' || last[-1] == '\r'
                        || last[-1] == ' ' || last[-1] == '\t'))
    {
        last--;
    }

    token.data = p;
    token.len = last - p;

    if (token.len < NGX_HOPGATE_ADMIN_TOKEN_MIN
        || ngx_strlchr(p, last, ' ') || ngx_strlchr(p, last, '\n'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_admin_key_file\": \"%V\" must hold one "
                           "token of at least %d characters without spaces",
                           &path, NGX_HOPGATE_ADMIN_TOKEN_MIN);
        return NGX_CONF_ERROR;
    }

    hlcf->admin_key = ngx_palloc(cf->pool, 32);
    if (hlcf->admin_key == NULL
        || ngx_hopgate_key_hash(&token, hlcf->admin_key) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_CONF_OK;
}


/* ---- the handler ------------------------------------------------------------ */

static ngx_int_t
ngx_hopgate_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_hopgate_admin_op_e         op;
    ngx_hopgate_admin_ctx_t       *ctx;
    ngx_http_hopgate_loc_conf_t   *hlcf;
    ngx_http_hopgate_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hopgate_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hopgate_module);

    if (ngx_hopgate_admin_authorized(r, hlcf) != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.www_authenticate = ngx_list_push(&r->headers_out.headers);
        if (r->headers_out.www_authenticate == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.www_authenticate->hash = 1;
        ngx_str_set(&r->headers_out.www_authenticate->key,
                    "WWW-Authenticate");
        ngx_str_set(&r->headers_out.www_authenticate->value,
                    "Bearer realm=\"hopgate admin\"");

        return ngx_hopgate_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "a valid bearer token is required");
    }

    rc = ngx_hopgate_admin_route(r, &op);
    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_HTTP_NOT_ALLOWED) {
            return ngx_hopgate_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                           "wrong method for this endpoint");
        }

        return ngx_hopgate_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "no such endpoint");
    }

    if (hmcf->reg == NULL || hmcf->reg->ops->admin == NULL) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_hopgate_admin_error(r, NGX_HTTP_NOT_IMPLEMENTED,
                                       "this registry has no admin API");
    }

    if (op == NGX_HOPGATE_ADMIN_LIST) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx = ngx_hopgate_admin_ctx(r, op);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = ngx_hopgate_admin_start(r, ctx);

        if (rc == NGX_AGAIN) {
            /* answered later, from the registry's event */
            r->main->count++;
            return NGX_DONE;
        }

        return rc;
    }

    if (r->headers_in.content_length_n > NGX_HOPGATE_ADMIN_BODY_MAX) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_hopgate_admin_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "the body is too large");
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_hopgate_admin_body);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return ngx_hopgate_admin_too_large(r);
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    /* the rest comes later: a 413 then is ours too, in JSON */
    if (rc == NGX_AGAIN
#if (NGX_HTTP_V2)
        && r->stream == NULL
#endif
       )
    {
        r->read_event_handler = ngx_hopgate_admin_read_body;
    }

    return NGX_DONE;
}


/*
 * A chunked body announces no length: the limit is applied as it is
 * decoded (the chunked filter counts it in content_length_n), so that
 * nothing past 16k is read, buffered or written to a temporary file.
 */
static ngx_int_t
ngx_hopgate_admin_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_hopgate_loc_conf_t  *hlcf;

    if (r->headers_in.chunked
        && r->headers_in.content_length_n > NGX_HOPGATE_ADMIN_BODY_MAX)
    {
        hlcf = ngx_http_get_module_loc_conf(r, ngx_http_hopgate_module);

        if (hlcf->admin) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "hopgate admin: chunked body over %d bytes, "
                          "not read further", NGX_HOPGATE_ADMIN_BODY_MAX);
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }
    }

    return ngx_hopgate_admin_next_body_filter(r, in);
}


/*
 * nginx's own body read handler, but its errors are answered here: the
 * read stops where the filter above says so
 */
static void
ngx_hopgate_admin_read_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    /* in a buffered read this reads on, and calls the post handler */
    rc = ngx_http_read_unbuffered_request_body(r);

    if (rc == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ngx_http_finalize_request(r, ngx_hopgate_admin_too_large(r));
        return;
    }

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_hopgate_admin_too_large(ngx_http_request_t *r)
{
    /* the rest of the body stays unread: nginx drains it as it closes */
    r->keepalive = 0;
    r->lingering_close = 1;

    return ngx_hopgate_admin_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "the body is too large");
}


/*
 * The call's state lives in the request's pool, not in the module's ctx
 * slot: that one is the branded pages' (and the tunnel's) request ctx.
 */
static ngx_hopgate_admin_ctx_t *
ngx_hopgate_admin_ctx(ngx_http_request_t *r, ngx_hopgate_admin_op_e op)
{
    ngx_hopgate_admin_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_hopgate_admin_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;
    ctx->call.op = op;
    ctx->call.pool = r->pool;
    ctx->call.done = ngx_hopgate_admin_done;
    ctx->call.data = ctx;

    return ctx;
}


/*
 * "Authorization: Bearer TOKEN", compared by SHA-256 in constant time;
 * hopgate_status asks it too
 */
ngx_int_t
ngx_hopgate_admin_authorized(ngx_http_request_t *r,
    ngx_http_hopgate_loc_conf_t *hlcf)
{
    u_char           hash[32];
    ngx_str_t        token;
    ngx_table_elt_t  *h;

    h = r->headers_in.authorization;

    if (h == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "hopgate admin: no bearer token");
        return NGX_DECLINED;
    }

    token = h->value;

    if (token.len < sizeof("Bearer ") - 1
        || ngx_strncasecmp(token.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "hopgate admin: the Authorization header is not a "
                      "bearer token");
        return NGX_DECLINED;
    }

    token.data += sizeof("Bearer ") - 1;
    token.len -= sizeof("Bearer ") - 1;

    while (token.len && token.data[0] == ' ') {
        token.data++;
        token.len--;
    }

    if (hlcf->admin_key == NGX_CONF_UNSET_PTR || hlcf->admin_key == NULL
        || ngx_hopgate_key_hash(&token, hash) != NGX_OK
        || CRYPTO_memcmp(hash, hlcf->admin_key, 32) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "hopgate admin: wrong bearer token");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* ".../domains" and ".../domains/OP" */
static ngx_int_t
ngx_hopgate_admin_route(ngx_http_request_t *r, ngx_hopgate_admin_op_e *op)
{
    u_char                     *p, *end, *slash;
    ngx_str_t                   tail;
    ngx_hopgate_admin_route_t  *route;

    p = r->uri.data;
    end = r->uri.data + r->uri.len;

    if (end > p && end[-1] == '/') {
        end--;
    }

    slash = end;
    while (slash > p && slash[-1] != '/') {
        slash--;
    }

    tail.data = slash;
    tail.len = end - slash;

    if (tail.len == sizeof("domains") - 1
        && ngx_strncmp(tail.data, "domains", tail.len) == 0)
    {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        *op = NGX_HOPGATE_ADMIN_LIST;
        return NGX_OK;
    }

    /* the segment before must be "domains" */
    if (slash - p < (ssize_t) sizeof("/domains/") - 1
        || ngx_strncmp(slash - (sizeof("/domains/") - 1), "/domains/",
                       sizeof("/domains/") - 1) != 0)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    for (route = ngx_hopgate_admin_routes; route->name.len; route++) {
        if (route->name.len == tail.len
            && ngx_strncmp(route->name.data, tail.data, tail.len) == 0)
        {
            if (r->method != NGX_HTTP_POST) {
                return NGX_HTTP_NOT_ALLOWED;
            }

            *op = route->op;
            return NGX_OK;
        }
    }

    return NGX_HTTP_NOT_FOUND;
}


/* the body is in: parse it, then ask the registry */
static void
ngx_hopgate_admin_body(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    size_t                    len;
    ssize_t                   n;
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    const char               *error;
    ngx_hopgate_admin_op_e    op;
    ngx_hopgate_admin_ctx_t  *ctx;

    if (ngx_hopgate_admin_route(r, &op) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx = ngx_hopgate_admin_ctx(r, op);
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (r->request_body == NULL) {
        ngx_http_finalize_request(r, ngx_hopgate_admin_error(r,
                                  NGX_HTTP_BAD_REQUEST, "no request body"));
        return;
    }

    len = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > NGX_HOPGATE_ADMIN_BODY_MAX) {
        ngx_http_finalize_request(r, ngx_hopgate_admin_error(r,
                                  NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "the body is too large"));
        return;
    }

    body = ngx_pnalloc(r->pool, len + 1);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                ngx_http_finalize_request(r,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }
            p += n;

        } else if (b->last != b->pos) {
            /* not the empty last buffer of a chunked body (pos NULL) */
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    error = NULL;
    rc = ngx_hopgate_admin_parse(r, ctx, body, p - body, &error);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_hopgate_admin_error(r, rc, error));
        return;
    }

    rc = ngx_hopgate_admin_start(r, ctx);

    if (rc == NGX_AGAIN) {
        /* the read body's reference keeps the request until we answer */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_hopgate_admin_string(json_t *obj, const char *name, ngx_str_t *out,
    ngx_uint_t required, const char **error)
{
    json_t  *v;

    v = json_object_get(obj, name);

    if (v == NULL || json_is_null(v)) {
        if (required) {
            *error = name[0] == 'd' ? "missing field: domain"
                                    : "missing field: client_api_key";
            return NGX_HTTP_BAD_REQUEST;
        }

        ngx_str_null(out);
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        *error = name[0] == 'd' ? "domain must be a string"
                 : name[0] == 'm' ? "memo must be a string"
                                  : "client_api_key must be a string";
        return NGX_HTTP_BAD_REQUEST;
    }

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    return NGX_OK;
}


/* what may be registered: labels begin and end with a letter or digit */
static ngx_int_t
ngx_hopgate_admin_hostname(u_char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((i == 0 || name[i - 1] == '.' || i == len - 1
             || name[i + 1] == '.')
            && !((name[i] >= 'a' && name[i] <= 'z')
                 || (name[i] >= '0' && name[i] <= '9')))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_admin_parse(ngx_http_request_t *r, ngx_hopgate_admin_ctx_t *ctx,
    u_char *body, size_t len, const char **error)
{
    u_char                     *domain, *memo, random[32];
    size_t                      dlen;
    json_t                     *json;
    ngx_int_t                   rc;
    ngx_str_t                   raw, key;
    json_error_t                jerr;
    ngx_hopgate_admin_call_t   *call = &ctx->call;

    json = json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &jerr);

    if (json == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hopgate admin: malformed JSON at line %d column %d: "
                      "%s", jerr.line, jerr.column, jerr.text);
        *error = "malformed JSON";
        return NGX_HTTP_BAD_REQUEST;
    }

    rc = NGX_HTTP_BAD_REQUEST;

    if (!json_is_object(json)) {
        *error = "the body must be a JSON object";
        goto done;
    }

    rc = ngx_hopgate_admin_string(json, "domain", &raw, 1, error);
    if (rc != NGX_OK) {
        goto done;
    }

    domain = ngx_pnalloc(r->pool, NGX_HOPGATE_DOMAIN_MAX + 1);
    if (domain == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (ngx_strlchr(raw.data, raw.data + raw.len, '\0') != NULL
        || ngx_hopgate_domain_normalize(&raw, domain, &dlen) != NGX_OK
        || ngx_hopgate_admin_hostname(domain, dlen) != NGX_OK)
    {
        *error = "domain is not a hostname";
        rc = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    call->domain.data = domain;
    call->domain.len = dlen;

    rc = ngx_hopgate_admin_string(json, "memo", &raw, 0, error);
    if (rc != NGX_OK) {
        goto done;
    }

    if (raw.len > NGX_HOPGATE_ADMIN_MEMO_MAX) {
        *error = "memo is longer than 1024 bytes";
        rc = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    if (raw.len) {
        memo = ngx_pnalloc(r->pool, raw.len);
        if (memo == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
        ngx_memcpy(memo, raw.data, raw.len);
        call->memo.data = memo;
        call->memo.len = raw.len;
    }

    switch (call->op) {

    case NGX_HOPGATE_ADMIN_UNREGISTER:
        rc = ngx_hopgate_admin_string(json, "client_api_key", &key, 1,
                                      error);
        if (rc != NGX_OK) {
            goto done;
        }

        if (ngx_hopgate_key_hash(&key, call->key_hash) != NGX_OK) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
        break;

    case NGX_HOPGATE_ADMIN_REGISTER:
    case NGX_HOPGATE_ADMIN_ROTATE:
        /* a new key: 32 random bytes from the OS, shown once */
        if (RAND_bytes(random, sizeof(random)) != 1) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        ngx_memcpy(ctx->key, NGX_HOPGATE_KEY_PREFIX,
                   sizeof(NGX_HOPGATE_KEY_PREFIX) - 1);
        ngx_hex_dump(ctx->key + sizeof(NGX_HOPGATE_KEY_PREFIX) - 1, random,
                     sizeof(random));
        ngx_explicit_memzero(random, sizeof(random));

        key.data = ctx->key;
        key.len = NGX_HOPGATE_KEY_LEN;

        if (ngx_hopgate_key_hash(&key, call->key_hash) != NGX_OK) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }
        break;

    default:
        break;
    }

    rc = NGX_OK;

done:

    json_decref(json);

    return rc;
}


/* ask the registry: NGX_AGAIN, or the answer's rc for finalizing */
static ngx_int_t
ngx_hopgate_admin_start(ngx_http_request_t *r, ngx_hopgate_admin_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_http_cleanup_t            *cln;
    ngx_http_hopgate_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_hopgate_module);

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_hopgate_admin_cleanup;
    cln->data = ctx;

    rc = hmcf->reg->ops->admin(hmcf->reg, &ctx->call);

    if (rc == NGX_AGAIN) {
        ctx->pending = 1;
        return NGX_AGAIN;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_hopgate_admin_answer(r, ctx);
}


static void
ngx_hopgate_admin_done(ngx_hopgate_admin_call_t *call)
{
    ngx_hopgate_admin_ctx_t  *ctx = call->data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;
    ctx->pending = 0;

    ngx_http_finalize_request(r, ngx_hopgate_admin_answer(r, ctx));
    ngx_http_run_posted_requests(c);
}


static void
ngx_hopgate_admin_cleanup(void *data)
{
    ngx_hopgate_admin_ctx_t  *ctx = data;

    ngx_http_hopgate_main_conf_t  *hmcf;

    if (!ctx->pending) {
        return;
    }

    ctx->pending = 0;

    hmcf = ngx_http_get_module_main_conf(ctx->request,
                                         ngx_http_hopgate_module);

    if (hmcf->reg->ops->admin_cancel) {
        hmcf->reg->ops->admin_cancel(hmcf->reg, &ctx->call);
    }
}


/* this worker's live sessions of a domain: one per connected agent */
static ngx_uint_t
ngx_hopgate_admin_sessions(ngx_str_t *domain)
{
    ngx_uint_t             n;
    ngx_queue_t           *q;
    ngx_hopgate_domain_t  *d;

    d = ngx_hopgate_domain_get(domain, 0);
    if (d == NULL) {
        return 0;
    }

    n = 0;
    for (q = ngx_queue_head(&d->sessions);
         q != ngx_queue_sentinel(&d->sessions);
         q = ngx_queue_next(q))
    {
        n++;
    }

    return n;
}


static json_t *
ngx_hopgate_admin_text(ngx_str_t *s)
{
    json_t  *j;

    j = json_stringn((char *) s->data, s->len);

    return j ? j : json_string("");
}


static ngx_int_t
ngx_hopgate_admin_answer(ngx_http_request_t *r, ngx_hopgate_admin_ctx_t *ctx)
{
    json_t                    *json, *list, *item;
    ngx_uint_t                 i;
    ngx_hopgate_admin_row_t   *row;
    ngx_hopgate_admin_call_t  *call = &ctx->call;

    if (call->status != NGX_HTTP_OK) {
        if (call->status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "hopgate admin: %s: %s",
                          ngx_hopgate_admin_verbs[call->op], call->error);
        }

        return ngx_hopgate_admin_error(r, call->status,
                                       call->error ? call->error : "failed");
    }

    json = json_object();
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_object_set_new(json, "success", json_true());

    if (call->op == NGX_HOPGATE_ADMIN_LIST) {
        list = json_array();
        json_object_set_new(json, "domains", list);

        row = call->rows ? call->rows->elts : NULL;

        for (i = 0; row && i < call->rows->nelts; i++) {
            item = json_object();
            json_object_set_new(item, "domain",
                                ngx_hopgate_admin_text(&row[i].domain));
            json_object_set_new(item, "memo",
                                ngx_hopgate_admin_text(&row[i].memo));
            json_object_set_new(item, "created", row[i].created.len
                                ? ngx_hopgate_admin_text(&row[i].created)
                                : json_null());
            json_object_set_new(item, "disabled",
                                json_boolean(row[i].disabled));
            json_object_set_new(item, "sessions", json_integer(
                ngx_hopgate_admin_sessions(&row[i].domain)));
            json_array_append_new(list, item);
        }

        return ngx_hopgate_admin_send(r, NGX_HTTP_OK, json);
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "hopgate admin: %s \"%V\"",
                  ngx_hopgate_admin_verbs[call->op], &call->domain);

    json_object_set_new(json, "domain", ngx_hopgate_admin_text(&call->domain));

    if (call->op == NGX_HOPGATE_ADMIN_REGISTER
        || call->op == NGX_HOPGATE_ADMIN_ROTATE)
    {
        json_object_set_new(json, "client_api_key",
                            json_stringn((char *) ctx->key,
                                         NGX_HOPGATE_KEY_LEN));
    }

    if (call->op == NGX_HOPGATE_ADMIN_REGISTER) {
        json_object_set_new(json, "memo", ngx_hopgate_admin_text(&call->memo));
    }

    return ngx_hopgate_admin_send(r, NGX_HTTP_OK, json);
}


static ngx_int_t
ngx_hopgate_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    json_t  *json;

    json = json_pack("{s:b, s:s}", "success", 0, "error", error);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_hopgate_admin_send(r, status, json);
}


/* sends the JSON (and frees it); the rc is for ngx_http_finalize_request */
static ngx_int_t
ngx_hopgate_admin_send(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json)
{
    char             *text;
    size_t            len;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    text = json_dumps(json, JSON_COMPACT);
    json_decref(json);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = '\n';
    free(text);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    /* a key is shown once: no cache may keep a copy */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
