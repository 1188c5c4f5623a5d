/*
 * The ACME client (RFC 8555), run by the one elected worker: the
 * directory, nonces (a badNonce answer is retried with the fresh nonce it
 * carries), the account (ES256 JWS), and orders, each a small state
 * machine: new order, the HTTP-01 authorization (token published in the
 * shared zone so every worker answers it), the challenge, polling with
 * Retry-After, finalize with a CSR, the certificate chain. A failed order
 * backs its domain off exponentially (or as long as a 429 says); the
 * number of orders at once is bounded by hopgate_acme_max_orders.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <jansson.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_NONCES        16
#define NGX_HOPGATE_ACME_NONCE_MAX     128
#define NGX_HOPGATE_ACME_BAD_NONCES    10     /* retries of one request */
#define NGX_HOPGATE_ACME_POLL          500    /* ms, without Retry-After */
#define NGX_HOPGATE_ACME_POLL_MAX      120    /* polls of one order */
#define NGX_HOPGATE_ACME_PUBLISH       2000   /* ms: other edges copy tokens
                                                 from the database each s */


typedef struct ngx_hopgate_acme_call_s   ngx_hopgate_acme_call_t;
typedef struct ngx_hopgate_acme_order_s  ngx_hopgate_acme_order_t;

typedef void (*ngx_hopgate_acme_call_pt)(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json);


/* one signed request, resent on badNonce */
struct ngx_hopgate_acme_call_s {
    ngx_pool_t                  *pool;
    ngx_str_t                    url;
    ngx_str_t                    payload;    /* empty: POST-as-GET */
    unsigned                     jwk:1;      /* the key, not the kid */
    unsigned                     plain:1;    /* unsigned GET */
    ngx_uint_t                   bad_nonces;
    ngx_hopgate_acme_call_pt     handler;
    void                        *data;
    ngx_hopgate_acme_http_t     *http;
};


typedef enum {
    NGX_HOPGATE_ACME_ORDER_DNS = 0,          /* hopgate_expect_ips */
    NGX_HOPGATE_ACME_ORDER_NEW,
    NGX_HOPGATE_ACME_ORDER_AUTHZ,
    NGX_HOPGATE_ACME_ORDER_PUBLISH,          /* the token reaching edges */
    NGX_HOPGATE_ACME_ORDER_CHALLENGE,
    NGX_HOPGATE_ACME_ORDER_POLL_AUTHZ,
    NGX_HOPGATE_ACME_ORDER_FINALIZE,
    NGX_HOPGATE_ACME_ORDER_POLL_ORDER,
    NGX_HOPGATE_ACME_ORDER_CERTIFICATE
} ngx_hopgate_acme_order_step_e;


struct ngx_hopgate_acme_order_s {
    ngx_queue_t                  link;
    ngx_pool_t                  *pool;
    ngx_hopgate_acme_call_t      call;
    ngx_event_t                  wait;       /* between polls */
    ngx_str_t                    domain;
    ngx_str_t                    url;
    ngx_str_t                    authz;
    ngx_str_t                    challenge;
    ngx_str_t                    finalize;
    ngx_str_t                    certificate;
    ngx_str_t                    token;
    EVP_PKEY                    *key;
    ngx_uint_t                   step;
    ngx_uint_t                   polls;
    time_t                       started;
    unsigned                     renewal:1;
    unsigned                     replacing:1;    /* from another CA */
    unsigned                     gating:1;   /* the DNS gate is asked */
    u_char                       name[NGX_HOPGATE_DOMAIN_MAX + 1];
};


typedef enum {
    NGX_HOPGATE_ACME_CLIENT_IDLE = 0,    /* the directory is next */
    NGX_HOPGATE_ACME_CLIENT_DIRECTORY,
    NGX_HOPGATE_ACME_CLIENT_ACCOUNT,
    NGX_HOPGATE_ACME_CLIENT_READY
} ngx_hopgate_acme_client_state_e;


typedef struct {
    ngx_pool_t                  *pool;
    ngx_log_t                   *log;
    ngx_uint_t                   state;
    time_t                       next_try;   /* directory, account */
    ngx_uint_t                   failures;
    ngx_hopgate_acme_call_t      call;       /* directory, account */
    ngx_str_t                    new_nonce;
    ngx_str_t                    new_account;
    ngx_str_t                    new_order;
    EVP_PKEY                    *account;
    ngx_str_t                    jwk;
    ngx_str_t                    thumbprint;
    ngx_str_t                    kid;
    ngx_queue_t                  orders;
    ngx_uint_t                   norders;
    ngx_uint_t                   nnonces;
    size_t                       nonce_len[NGX_HOPGATE_ACME_NONCES];
    u_char                       nonces[NGX_HOPGATE_ACME_NONCES]
                                       [NGX_HOPGATE_ACME_NONCE_MAX];
} ngx_hopgate_acme_client_t;


static void ngx_hopgate_acme_call_send(ngx_hopgate_acme_call_t *call);
static void ngx_hopgate_acme_call_nonce(void *data,
    ngx_hopgate_acme_response_t *resp);
static void ngx_hopgate_acme_call_done(void *data,
    ngx_hopgate_acme_response_t *resp);
static void ngx_hopgate_acme_call_cancel(ngx_hopgate_acme_call_t *call);
static void ngx_hopgate_acme_directory(ngx_hopgate_acme_client_t *cl);
static void ngx_hopgate_acme_directory_done(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json);
static void ngx_hopgate_acme_account(ngx_hopgate_acme_client_t *cl);
static void ngx_hopgate_acme_account_done(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json);
static void ngx_hopgate_acme_client_fail(ngx_hopgate_acme_client_t *cl,
    const char *what, ngx_hopgate_acme_response_t *resp, json_t *json);
static ngx_int_t ngx_hopgate_acme_order_start(ngx_hopgate_acme_client_t *cl,
    u_char *name, size_t len, ngx_uint_t renewal);
static void ngx_hopgate_acme_order_next(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json);
static void ngx_hopgate_acme_order_wait(ngx_event_t *ev);
static void ngx_hopgate_acme_order_fail(ngx_hopgate_acme_order_t *o,
    ngx_hopgate_acme_response_t *resp, json_t *json, const char *why);
static void ngx_hopgate_acme_order_free(ngx_hopgate_acme_order_t *o);
static void ngx_hopgate_acme_order_gated(void *data,
    ngx_hopgate_verdict_t *verdict);
static void ngx_hopgate_acme_order_begin(ngx_hopgate_acme_order_t *o);


static ngx_hopgate_acme_client_t  *ngx_hopgate_acme_client;


/* ---- lifecycle ----------------------------------------------------------- */

ngx_int_t
ngx_hopgate_acme_client_start(ngx_cycle_t *cycle)
{
    ngx_pool_t                 *pool;
    ngx_queue_t                *q;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_client_t  *cl;

    if (ngx_hopgate_acme_client) {
        return NGX_OK;
    }

    if (ngx_hopgate_acme_http_init(cycle, &ngx_hopgate_acme_conf->ca,
                                   ngx_hopgate_acme_conf->timeout)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    pool = ngx_create_pool(4096, cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    cl = ngx_pcalloc(pool, sizeof(ngx_hopgate_acme_client_t));
    if (cl == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    cl->pool = pool;
    cl->log = cycle->log;
    ngx_queue_init(&cl->orders);

    /* orders of a worker that died are not running any more */
    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&shm->domains);
         q != ngx_queue_sentinel(&shm->domains);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);
        if (d->state == NGX_HOPGATE_ACME_ORDERING) {
            d->state = d->version ? NGX_HOPGATE_ACME_VALID
                                  : NGX_HOPGATE_ACME_NONE;
        }
    }

    shm->running = 0;

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_hopgate_acme_client = cl;

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "hopgate acme: worker %P runs the ACME client for %V",
                  ngx_pid, &ngx_hopgate_acme_conf->directory);

    return NGX_OK;
}


void
ngx_hopgate_acme_client_stop(void)
{
    ngx_queue_t                *q;
    ngx_hopgate_acme_order_t   *o;
    ngx_hopgate_acme_client_t  *cl;

    cl = ngx_hopgate_acme_client;
    if (cl == NULL) {
        return;
    }

    while (!ngx_queue_empty(&cl->orders)) {
        q = ngx_queue_head(&cl->orders);
        o = ngx_queue_data(q, ngx_hopgate_acme_order_t, link);
        ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                      "hopgate acme: order for %V abandoned: this worker "
                      "is leaving", &o->domain);
        ngx_hopgate_acme_order_free(o);
    }

    ngx_hopgate_acme_call_cancel(&cl->call);

    if (cl->account) {
        EVP_PKEY_free(cl->account);
    }

    ngx_hopgate_acme_client = NULL;
    ngx_destroy_pool(cl->pool);

    ngx_hopgate_acme_http_exit();
}


ngx_int_t
ngx_hopgate_acme_client_running(u_char *name, size_t len)
{
    ngx_queue_t               *q;
    ngx_hopgate_acme_order_t  *o;

    if (ngx_hopgate_acme_client == NULL) {
        return 0;
    }

    for (q = ngx_queue_head(&ngx_hopgate_acme_client->orders);
         q != ngx_queue_sentinel(&ngx_hopgate_acme_client->orders);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_hopgate_acme_order_t, link);
        if (o->domain.len == len
            && ngx_strncmp(o->domain.data, name, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static time_t
ngx_hopgate_acme_backoff(ngx_uint_t failures, time_t retry_after)
{
    time_t  delay, max;

    delay = ngx_hopgate_acme_conf->backoff_min;
    max = ngx_hopgate_acme_conf->backoff_max;

    while (--failures > 0 && delay < max) {
        delay *= 2;
    }

    delay = ngx_min(delay, max);

    return ngx_max(delay, retry_after);
}


/*
 * Once a second in the elected worker: the directory and the account
 * first, then orders for registered domains that need a certificate
 * (none yet, or due for renewal) and are not backing off.
 */
void
ngx_hopgate_acme_client_tick(void)
{
    size_t                      lens[16];
    u_char                      names[16][NGX_HOPGATE_DOMAIN_MAX + 1];
    time_t                      now;
    ngx_uint_t                  n, i, room, renewal[16];
    ngx_queue_t                *q;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_client_t  *cl;

    cl = ngx_hopgate_acme_client;
    if (cl == NULL) {
        return;
    }

    now = ngx_time();

    /* with PostgreSQL, only the edge holding the lock orders */
    if (!ngx_hopgate_acme_pg_may_order()) {
        return;
    }

    if (cl->state == NGX_HOPGATE_ACME_CLIENT_IDLE) {
        if (now >= cl->next_try) {
            ngx_hopgate_acme_directory(cl);
        }
        return;
    }

    if (cl->state != NGX_HOPGATE_ACME_CLIENT_READY) {
        return;
    }

    room = ngx_hopgate_acme_conf->max_orders - cl->norders;
    room = ngx_min(room, 16);

    if (room == 0) {
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    n = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&shm->domains);
         q != ngx_queue_sentinel(&shm->domains) && n < room;
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);

        if (!d->registered || d->state == NGX_HOPGATE_ACME_ORDERING
            || d->next_try > now)
        {
            continue;
        }

        if (d->version && now < ngx_hopgate_acme_renew_at(d)
            && !ngx_hopgate_acme_foreign(d))
        {
            continue;
        }

        lens[n] = d->sn.str.len;
        ngx_memcpy(names[n], d->name, lens[n]);
        renewal[n] = d->version == 0 ? 0 : ngx_hopgate_acme_foreign(d) ? 2 : 1;
        d->state = NGX_HOPGATE_ACME_ORDERING;
        n++;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    for (i = 0; i < n; i++) {
        if (ngx_hopgate_acme_order_start(cl, names[i], lens[i], renewal[i])
            != NGX_OK)
        {
            ngx_shmtx_lock(&shpool->mutex);
            d = ngx_hopgate_acme_domain_find(shm, names[i], lens[i]);
            if (d) {
                d->state = d->version ? NGX_HOPGATE_ACME_VALID
                                      : NGX_HOPGATE_ACME_FAILED;
                d->next_try = now + ngx_hopgate_acme_conf->backoff_min;
            }
            ngx_shmtx_unlock(&shpool->mutex);
        }
    }
}


/* ---- signed requests ----------------------------------------------------- */

static ngx_int_t
ngx_hopgate_acme_nonce_pop(ngx_hopgate_acme_client_t *cl, ngx_str_t *nonce,
    ngx_pool_t *pool)
{
    if (cl->nnonces == 0) {
        return NGX_DECLINED;
    }

    cl->nnonces--;

    nonce->len = cl->nonce_len[cl->nnonces];
    nonce->data = ngx_pnalloc(pool, nonce->len);
    if (nonce->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(nonce->data, cl->nonces[cl->nnonces], nonce->len);

    return NGX_OK;
}


static void
ngx_hopgate_acme_nonce_push(ngx_hopgate_acme_client_t *cl, ngx_str_t *nonce)
{
    if (nonce->len == 0 || nonce->len > NGX_HOPGATE_ACME_NONCE_MAX) {
        return;
    }

    if (cl->nnonces == NGX_HOPGATE_ACME_NONCES) {
        /* the oldest is the likeliest to have expired */
        ngx_memmove(cl->nonce_len, cl->nonce_len + 1,
                    (NGX_HOPGATE_ACME_NONCES - 1) * sizeof(size_t));
        ngx_memmove(cl->nonces, cl->nonces + 1,
                    (NGX_HOPGATE_ACME_NONCES - 1) * NGX_HOPGATE_ACME_NONCE_MAX);
        cl->nnonces--;
    }

    ngx_memcpy(cl->nonces[cl->nnonces], nonce->data, nonce->len);
    cl->nonce_len[cl->nnonces] = nonce->len;
    cl->nnonces++;
}


static void
ngx_hopgate_acme_call_fail(ngx_hopgate_acme_call_t *call, const char *why)
{
    ngx_hopgate_acme_response_t  resp;

    ngx_memzero(&resp, sizeof(ngx_hopgate_acme_response_t));
    resp.error = why;
    resp.body.data = (u_char *) "";

    call->handler(call, &resp, NULL);
}


static void
ngx_hopgate_acme_call_send(ngx_hopgate_acme_call_t *call)
{
    ngx_int_t                   rc;
    ngx_str_t                   nonce, body, *kid;
    ngx_hopgate_acme_client_t  *cl;

    cl = ngx_hopgate_acme_client;

    if (call->plain) {
        call->http = ngx_hopgate_acme_http(&call->url, NULL, 0,
                                           ngx_hopgate_acme_call_done, call);
        if (call->http == NULL) {
            ngx_hopgate_acme_call_fail(call, "cannot start a request");
        }
        return;
    }

    rc = ngx_hopgate_acme_nonce_pop(cl, &nonce, call->pool);

    if (rc == NGX_DECLINED) {
        /* no nonce in hand: fetch one first */
        call->http = ngx_hopgate_acme_http(&cl->new_nonce, NULL, 1,
                                           ngx_hopgate_acme_call_nonce, call);
        if (call->http == NULL) {
            ngx_hopgate_acme_call_fail(call, "cannot start a request");
        }
        return;
    }

    kid = call->jwk ? NULL : &cl->kid;

    if (rc != NGX_OK
        || ngx_hopgate_acme_jws(cl->account, call->pool, &cl->jwk, kid,
                                &nonce, &call->url, &call->payload, &body)
           != NGX_OK)
    {
        ngx_hopgate_acme_call_fail(call, "cannot sign the request");
        return;
    }

    call->http = ngx_hopgate_acme_http(&call->url, &body, 0,
                                       ngx_hopgate_acme_call_done, call);
    if (call->http == NULL) {
        ngx_hopgate_acme_call_fail(call, "cannot start a request");
    }
}


static void
ngx_hopgate_acme_call_nonce(void *data, ngx_hopgate_acme_response_t *resp)
{
    ngx_hopgate_acme_call_t  *call = data;

    call->http = NULL;

    if (resp->nonce.len == 0) {
        resp->error = resp->error ? resp->error : "no Replay-Nonce from "
                                                  "newNonce";
        resp->status = 0;
        call->handler(call, resp, NULL);
        return;
    }

    ngx_hopgate_acme_nonce_push(ngx_hopgate_acme_client, &resp->nonce);
    ngx_hopgate_acme_call_send(call);
}


static ngx_uint_t
ngx_hopgate_acme_problem_is(json_t *json, const char *type)
{
    const char  *t;

    t = json_string_value(json_object_get(json, "type"));

    return t && ngx_strcmp(t, type) == 0;
}


static void
ngx_hopgate_acme_call_done(void *data, ngx_hopgate_acme_response_t *resp)
{
    ngx_hopgate_acme_call_t  *call = data;

    json_t  *json;

    call->http = NULL;

    ngx_hopgate_acme_nonce_push(ngx_hopgate_acme_client, &resp->nonce);

    json = NULL;

    if (resp->status && resp->body.len
        && ngx_strlcasestrn(resp->content_type.data,
                            resp->content_type.data + resp->content_type.len,
                            (u_char *) "json", 4 - 1)
           != NULL)
    {
        json = json_loadb((char *) resp->body.data, resp->body.len, 0, NULL);
    }

    if (resp->status == 400 && json
        && ngx_hopgate_acme_problem_is(json,
                                       "urn:ietf:params:acme:error:badNonce")
        && call->bad_nonces++ < NGX_HOPGATE_ACME_BAD_NONCES)
    {
        ngx_log_error(NGX_LOG_INFO, ngx_hopgate_acme_client->log, 0,
                      "hopgate acme: badNonce from %V, retrying with a "
                      "fresh nonce", &call->url);
        json_decref(json);
        ngx_hopgate_acme_call_send(call);
        return;
    }

    call->handler(call, resp, json);

    if (json) {
        json_decref(json);
    }
}


static void
ngx_hopgate_acme_call_cancel(ngx_hopgate_acme_call_t *call)
{
    if (call->http) {
        ngx_hopgate_acme_http_cancel(call->http);
        call->http = NULL;
    }
}


static ngx_int_t
ngx_hopgate_acme_json_str(json_t *json, const char *key, ngx_pool_t *pool,
    ngx_str_t *out)
{
    json_t  *v;

    v = json_object_get(json, key);
    if (!json_is_string(v)) {
        return NGX_DECLINED;
    }

    out->len = json_string_length(v);
    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, json_string_value(v), out->len);
    out->data[out->len] = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_acme_str_copy(ngx_pool_t *pool, ngx_str_t *src, ngx_str_t *dst)
{
    dst->data = ngx_pnalloc(pool, src->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';
    dst->len = src->len;

    return NGX_OK;
}


/* "HTTP 403 urn:...:unauthorized: detail" or the transport error */
static void
ngx_hopgate_acme_describe(ngx_hopgate_acme_response_t *resp, json_t *json,
    u_char *buf, size_t size)
{
    u_char      *p;
    const char  *type, *detail;

    if (resp == NULL) {
        ngx_cpystrn(buf, (u_char *) "-", size);
        return;
    }

    if (resp->status == 0) {
        p = ngx_snprintf(buf, size - 1, "%s",
                         resp->error ? resp->error : "no answer");
        *p = '\0';
        return;
    }

    type = json ? json_string_value(json_object_get(json, "type")) : NULL;
    detail = json ? json_string_value(json_object_get(json, "detail")) : NULL;

    p = ngx_snprintf(buf, size - 1, "HTTP %l%s%s%s%s", resp->status,
                     type ? " " : "", type ? type : "",
                     detail ? ": " : "", detail ? detail : "");
    *p = '\0';
}


/* ---- directory and account ----------------------------------------------- */

static void
ngx_hopgate_acme_directory(ngx_hopgate_acme_client_t *cl)
{
    ngx_hopgate_acme_call_t  *call;

    cl->state = NGX_HOPGATE_ACME_CLIENT_DIRECTORY;

    call = &cl->call;
    ngx_memzero(call, sizeof(ngx_hopgate_acme_call_t));
    call->pool = cl->pool;
    call->url = ngx_hopgate_acme_conf->directory;
    call->plain = 1;
    call->handler = ngx_hopgate_acme_directory_done;
    call->data = cl;

    ngx_hopgate_acme_call_send(call);
}


static void
ngx_hopgate_acme_directory_done(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json)
{
    ngx_hopgate_acme_client_t  *cl = call->data;

    if (resp->status != 200 || json == NULL
        || ngx_hopgate_acme_json_str(json, "newNonce", cl->pool,
                                     &cl->new_nonce) != NGX_OK
        || ngx_hopgate_acme_json_str(json, "newAccount", cl->pool,
                                     &cl->new_account) != NGX_OK
        || ngx_hopgate_acme_json_str(json, "newOrder", cl->pool,
                                     &cl->new_order) != NGX_OK)
    {
        ngx_hopgate_acme_client_fail(cl, "directory", resp, json);
        return;
    }

    ngx_hopgate_acme_account(cl);
}


static ngx_int_t
ngx_hopgate_acme_account_key(ngx_hopgate_acme_client_t *cl)
{
    ngx_str_t                pem;
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    if (cl->account) {
        return NGX_OK;
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    if (shm->account_key) {
        cl->account = ngx_hopgate_acme_key_parse(shm->account_key,
                                                 shm->account_key_len);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (cl->account == NULL) {
        cl->account = ngx_hopgate_acme_key_generate(
                                                NGX_HOPGATE_ACME_KEY_ECDSA);
        if (cl->account == NULL
            || ngx_hopgate_acme_key_pem(cl->account, cl->pool, &pem)
               != NGX_OK
            || ngx_hopgate_acme_store_account(&pem, cl->log, 1) != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                          "hopgate acme: cannot make the account key");
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                      "hopgate acme: new account key made");
    }

    return ngx_hopgate_acme_jwk(cl->account, cl->pool, &cl->jwk,
                                &cl->thumbprint);
}


static void
ngx_hopgate_acme_account(ngx_hopgate_acme_client_t *cl)
{
    json_t                   *req, *contact;
    char                     *text;
    u_char                   *mailto;
    ngx_hopgate_acme_call_t  *call;

    cl->state = NGX_HOPGATE_ACME_CLIENT_ACCOUNT;

    if (ngx_hopgate_acme_account_key(cl) != NGX_OK) {
        ngx_hopgate_acme_client_fail(cl, "account key", NULL, NULL);
        return;
    }

    req = json_object();
    json_object_set_new(req, "termsOfServiceAgreed", json_true());

    if (ngx_hopgate_acme_conf->email.len) {
        mailto = ngx_pnalloc(cl->pool, ngx_hopgate_acme_conf->email.len
                                       + sizeof("mailto:"));
        if (mailto) {
            ngx_sprintf(mailto, "mailto:%V%Z", &ngx_hopgate_acme_conf->email);
            contact = json_array();
            json_array_append_new(contact, json_string((char *) mailto));
            json_object_set_new(req, "contact", contact);
        }
    }

    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    call = &cl->call;
    ngx_memzero(call, sizeof(ngx_hopgate_acme_call_t));
    call->pool = cl->pool;
    call->url = cl->new_account;
    call->jwk = 1;
    call->handler = ngx_hopgate_acme_account_done;
    call->data = cl;

    if (text == NULL) {
        ngx_hopgate_acme_client_fail(cl, "account", NULL, NULL);
        return;
    }

    call->payload.len = ngx_strlen(text);
    call->payload.data = ngx_pnalloc(cl->pool, call->payload.len);
    if (call->payload.data) {
        ngx_memcpy(call->payload.data, text, call->payload.len);
    }

    free(text);

    ngx_hopgate_acme_call_send(call);
}


static void
ngx_hopgate_acme_account_done(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json)
{
    ngx_hopgate_acme_client_t  *cl = call->data;

    if ((resp->status != 200 && resp->status != 201)
        || resp->location.len == 0
        || ngx_hopgate_acme_str_copy(cl->pool, &resp->location, &cl->kid)
           != NGX_OK)
    {
        ngx_hopgate_acme_client_fail(cl, "account", resp, json);
        return;
    }

    cl->state = NGX_HOPGATE_ACME_CLIENT_READY;
    cl->failures = 0;

    ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                  "hopgate acme: account %V %s", &cl->kid,
                  resp->status == 201 ? "created" : "in use");

    ngx_hopgate_acme_client_tick();
}


static void
ngx_hopgate_acme_client_fail(ngx_hopgate_acme_client_t *cl,
    const char *what, ngx_hopgate_acme_response_t *resp, json_t *json)
{
    u_char  why[512];
    time_t  delay;

    ngx_hopgate_acme_describe(resp, json, why, sizeof(why));

    cl->failures++;
    delay = ngx_hopgate_acme_backoff(cl->failures,
                                     resp ? resp->retry_after : 0);
    cl->next_try = ngx_time() + delay;
    cl->state = NGX_HOPGATE_ACME_CLIENT_IDLE;

    ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                  "hopgate acme: %s failed: %s; retrying in %Ts", what, why,
                  delay);
}


/* ---- orders -------------------------------------------------------------- */

static void
ngx_hopgate_acme_order_shm_state(ngx_hopgate_acme_order_t *o,
    ngx_int_t delta)
{
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    shm->running += delta;
    if (shm->running > shm->running_max) {
        shm->running_max = shm->running;
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


static ngx_int_t
ngx_hopgate_acme_order_start(ngx_hopgate_acme_client_t *cl, u_char *name,
    size_t len, ngx_uint_t renewal)
{
    char                      *text;
    json_t                    *req, *ids, *id;
    ngx_pool_t                *pool;
    ngx_hopgate_acme_order_t  *o;

    pool = ngx_create_pool(4096, cl->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    o = ngx_pcalloc(pool, sizeof(ngx_hopgate_acme_order_t));
    if (o == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    o->pool = pool;
    ngx_memcpy(o->name, name, len);
    o->domain.data = o->name;
    o->domain.len = len;
    o->started = ngx_time();
    o->renewal = renewal != 0;
    o->replacing = renewal == 2;

    o->wait.handler = ngx_hopgate_acme_order_wait;
    o->wait.data = o;
    o->wait.log = cl->log;
    o->wait.cancelable = 1;

    id = json_object();
    json_object_set_new(id, "type", json_string("dns"));
    json_object_set_new(id, "value", json_stringn((char *) name, len));
    ids = json_array();
    json_array_append_new(ids, id);
    req = json_object();
    json_object_set_new(req, "identifiers", ids);

    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    if (text == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    o->call.payload.len = ngx_strlen(text);
    o->call.payload.data = ngx_pnalloc(pool, o->call.payload.len);
    if (o->call.payload.data == NULL) {
        free(text);
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_memcpy(o->call.payload.data, text, o->call.payload.len);
    free(text);

    o->call.pool = pool;
    o->call.url = cl->new_order;
    o->call.handler = ngx_hopgate_acme_order_next;
    o->call.data = o;

    ngx_queue_insert_tail(&cl->orders, &o->link);
    cl->norders++;
    ngx_hopgate_acme_order_shm_state(o, 1);

    if (ngx_hopgate_acme_gate == NULL) {
        ngx_hopgate_acme_order_begin(o);
        return NGX_OK;
    }

    /* the domain must point at this edge first, as for agents */
    {
        ngx_int_t               rc;
        ngx_hopgate_verdict_t   verdict;

        o->step = NGX_HOPGATE_ACME_ORDER_DNS;
        o->gating = 1;

        rc = ngx_hopgate_acme_gate->ops->check(ngx_hopgate_acme_gate,
                                               &o->domain, NULL, &verdict,
                                               ngx_hopgate_acme_order_gated,
                                               o);
        if (rc != NGX_AGAIN) {
            ngx_hopgate_acme_order_gated(o, &verdict);
        }
    }

    return NGX_OK;
}


static void
ngx_hopgate_acme_order_begin(ngx_hopgate_acme_order_t *o)
{
    ngx_hopgate_acme_client_t  *cl = ngx_hopgate_acme_client;

    o->step = NGX_HOPGATE_ACME_ORDER_NEW;

    ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                  "hopgate acme: %s order for %V (%ui of %ui running)%s",
                  o->renewal ? "renewal" : "new", &o->domain, cl->norders,
                  ngx_hopgate_acme_conf->max_orders,
                  o->replacing ? ": its certificate is from another CA"
                               : "");

    ngx_hopgate_acme_call_send(&o->call);
}


/* the DNS gate's answer: order, or wait and ask again (not an order) */
static void
ngx_hopgate_acme_order_gated(void *data, ngx_hopgate_verdict_t *verdict)
{
    ngx_hopgate_acme_order_t  *o = data;

    time_t                      delay;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;

    o->gating = 0;

    if (verdict->rc == NGX_OK) {
        ngx_hopgate_acme_order_begin(o);
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    delay = ngx_hopgate_acme_backoff(1, 0);

    ngx_shmtx_lock(&shpool->mutex);

    d = ngx_hopgate_acme_domain_find(shm, o->domain.data, o->domain.len);
    if (d) {
        d->failures++;
        delay = ngx_hopgate_acme_backoff(d->failures, 0);
        d->next_try = ngx_time() + delay;
        ngx_snprintf(d->error, sizeof(d->error) - 1, "DNS gate: %s%Z",
                     verdict->why ? verdict->why : "refused");
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_error(NGX_LOG_WARN, ngx_hopgate_acme_client->log, 0,
                  "hopgate acme: not ordering for %V: %s (dns gate); "
                  "asking again in %Ts", &o->domain,
                  verdict->why ? verdict->why : "refused", delay);

    ngx_hopgate_acme_order_free(o);
}


/* the next request of an order: POST-as-GET unless a payload is given */
static void
ngx_hopgate_acme_order_request(ngx_hopgate_acme_order_t *o, ngx_uint_t step,
    ngx_str_t *url, char *payload)
{
    o->step = step;
    o->call.url = *url;
    o->call.bad_nonces = 0;

    if (payload) {
        o->call.payload.data = (u_char *) payload;
        o->call.payload.len = ngx_strlen(payload);

    } else {
        o->call.payload.data = (u_char *) "";
        o->call.payload.len = 0;
    }

    ngx_hopgate_acme_call_send(&o->call);
}


static void
ngx_hopgate_acme_order_poll(ngx_hopgate_acme_order_t *o, ngx_uint_t step,
    ngx_hopgate_acme_response_t *resp)
{
    ngx_msec_t  delay;

    if (++o->polls > NGX_HOPGATE_ACME_POLL_MAX) {
        ngx_hopgate_acme_order_fail(o, NULL, NULL,
                                    "the CA took too long to decide");
        return;
    }

    o->step = step;

    delay = resp->retry_after ? (ngx_msec_t) ngx_min(resp->retry_after, 60)
                                * 1000
                              : NGX_HOPGATE_ACME_POLL;

    ngx_add_timer(&o->wait, delay);
}


static void
ngx_hopgate_acme_order_wait(ngx_event_t *ev)
{
    ngx_hopgate_acme_order_t  *o = ev->data;

    if (o->step == NGX_HOPGATE_ACME_ORDER_PUBLISH) {
        ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_CHALLENGE,
                                       &o->challenge, "{}");

    } else if (o->step == NGX_HOPGATE_ACME_ORDER_POLL_AUTHZ) {
        ngx_hopgate_acme_order_request(o, o->step, &o->authz, NULL);

    } else {
        ngx_hopgate_acme_order_request(o, o->step, &o->url, NULL);
    }
}


static void
ngx_hopgate_acme_order_log(ngx_hopgate_acme_order_t *o, const char *what)
{
    ngx_log_error(NGX_LOG_NOTICE, ngx_hopgate_acme_client->log, 0,
                  "hopgate acme: order for %V: %s", &o->domain, what);
}


/* the order's authorization: find its http-01 challenge and publish it */
static void
ngx_hopgate_acme_order_authz(ngx_hopgate_acme_order_t *o, json_t *json)
{
    size_t       i;
    json_t      *ch;
    u_char      *ka;
    ngx_str_t    keyauth, *tp;
    const char  *status, *type;

    status = json_string_value(json_object_get(json, "status"));

    if (status && ngx_strcmp(status, "valid") == 0) {
        ngx_hopgate_acme_order_log(o, "authorization already valid");
        ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_POLL_ORDER,
                                       &o->url, NULL);
        return;
    }

    if (status == NULL || ngx_strcmp(status, "pending") != 0) {
        ngx_hopgate_acme_order_fail(o, NULL, json, "authorization is not "
                                    "pending");
        return;
    }

    json_array_foreach(json_object_get(json, "challenges"), i, ch) {
        type = json_string_value(json_object_get(ch, "type"));
        if (type == NULL || ngx_strcmp(type, "http-01") != 0) {
            continue;
        }

        if (ngx_hopgate_acme_json_str(ch, "url", o->pool, &o->challenge)
            != NGX_OK
            || ngx_hopgate_acme_json_str(ch, "token", o->pool, &o->token)
               != NGX_OK)
        {
            break;
        }

        tp = &ngx_hopgate_acme_client->thumbprint;
        keyauth.len = o->token.len + 1 + tp->len;
        ka = ngx_pnalloc(o->pool, keyauth.len);
        if (ka == NULL) {
            break;
        }

        ngx_sprintf(ka, "%V.%V", &o->token, tp);
        keyauth.data = ka;

        if (ngx_hopgate_acme_token_put(&o->token, &keyauth) != NGX_OK) {
            ngx_hopgate_acme_order_fail(o, NULL, NULL, "no room for the "
                                        "challenge token");
            return;
        }

        ngx_hopgate_acme_order_log(o, "http-01 challenge published, "
                                   "asking the CA to validate");

        if (ngx_hopgate_acme_pg_enabled) {
            /* any edge may get the CA's request: let them all know */
            o->step = NGX_HOPGATE_ACME_ORDER_PUBLISH;
            ngx_add_timer(&o->wait, NGX_HOPGATE_ACME_PUBLISH);
            return;
        }

        ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_CHALLENGE,
                                       &o->challenge, "{}");
        return;
    }

    ngx_hopgate_acme_order_fail(o, NULL, NULL, "no http-01 challenge "
                                "offered");
}


static void
ngx_hopgate_acme_order_finalize(ngx_hopgate_acme_order_t *o)
{
    u_char     *payload;
    ngx_str_t   csr;

    o->key = ngx_hopgate_acme_key_generate(ngx_hopgate_acme_conf->key_type);

    if (o->key == NULL
        || ngx_hopgate_acme_csr(o->key, &o->domain, o->pool, &csr) != NGX_OK)
    {
        ngx_hopgate_acme_order_fail(o, NULL, NULL, "cannot make the key "
                                    "or the CSR");
        return;
    }

    payload = ngx_pnalloc(o->pool, csr.len + sizeof("{\"csr\":\"\"}"));
    if (payload == NULL) {
        ngx_hopgate_acme_order_fail(o, NULL, NULL, "out of memory");
        return;
    }

    ngx_sprintf(payload, "{\"csr\":\"%V\"}%Z", &csr);

    ngx_hopgate_acme_order_log(o, "authorized; finalizing");

    ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_FINALIZE,
                                   &o->finalize, (char *) payload);
}


/* an order object (RFC 8555 7.1.3): what its status says comes next */
static void
ngx_hopgate_acme_order_status(ngx_hopgate_acme_order_t *o,
    ngx_hopgate_acme_response_t *resp, json_t *json)
{
    const char  *status;

    status = json_string_value(json_object_get(json, "status"));
    if (status == NULL) {
        ngx_hopgate_acme_order_fail(o, resp, json, "order has no status");
        return;
    }

    if (o->finalize.len == 0
        && ngx_hopgate_acme_json_str(json, "finalize", o->pool, &o->finalize)
           != NGX_OK)
    {
        ngx_hopgate_acme_order_fail(o, resp, json, "order has no finalize "
                                    "URL");
        return;
    }

    if (ngx_strcmp(status, "ready") == 0) {
        ngx_hopgate_acme_order_finalize(o);
        return;
    }

    if (ngx_strcmp(status, "valid") == 0) {
        if (ngx_hopgate_acme_json_str(json, "certificate", o->pool,
                                      &o->certificate)
            != NGX_OK)
        {
            ngx_hopgate_acme_order_fail(o, resp, json, "valid order has no "
                                        "certificate URL");
            return;
        }

        ngx_hopgate_acme_order_log(o, "valid; downloading the certificate");
        ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_CERTIFICATE,
                                       &o->certificate, NULL);
        return;
    }

    if (ngx_strcmp(status, "processing") == 0
        || (ngx_strcmp(status, "pending") == 0
            && o->step != NGX_HOPGATE_ACME_ORDER_NEW))
    {
        ngx_hopgate_acme_order_poll(o, NGX_HOPGATE_ACME_ORDER_POLL_ORDER,
                                    resp);
        return;
    }

    if (ngx_strcmp(status, "pending") == 0) {
        json_t  *authz;

        authz = json_array_get(json_object_get(json, "authorizations"), 0);
        if (!json_is_string(authz)) {
            ngx_hopgate_acme_order_fail(o, resp, json, "pending order has "
                                        "no authorization");
            return;
        }

        o->authz.len = json_string_length(authz);
        o->authz.data = ngx_pnalloc(o->pool, o->authz.len);
        if (o->authz.data == NULL) {
            ngx_hopgate_acme_order_fail(o, resp, json, "out of memory");
            return;
        }
        ngx_memcpy(o->authz.data, json_string_value(authz), o->authz.len);

        ngx_hopgate_acme_order_request(o, NGX_HOPGATE_ACME_ORDER_AUTHZ,
                                       &o->authz, NULL);
        return;
    }

    ngx_hopgate_acme_order_fail(o, resp, json, "order is invalid");
}


static void
ngx_hopgate_acme_order_issued(ngx_hopgate_acme_order_t *o,
    ngx_hopgate_acme_response_t *resp)
{
    u_char       buf[128];
    ngx_str_t    key;
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    if (ngx_hopgate_acme_key_pem(o->key, o->pool, &key) != NGX_OK
        || ngx_hopgate_acme_store_put(&o->domain, &resp->body, &key,
                                      &ngx_hopgate_acme_conf->directory,
                                      ngx_hopgate_acme_client->log, 1)
           != NGX_OK)
    {
        ngx_hopgate_acme_order_fail(o, NULL, NULL, "the certificate could "
                                    "not be stored");
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    (void) ngx_atomic_fetch_add(&shm->results[NGX_HOPGATE_ACME_RESULT_ISSUED],
                                1);

    ngx_snprintf(buf, sizeof(buf), "certificate issued in %Ts%Z",
                 ngx_time() - o->started);
    ngx_hopgate_acme_order_log(o, (char *) buf);

    ngx_hopgate_acme_order_free(o);
}


static void
ngx_hopgate_acme_order_next(ngx_hopgate_acme_call_t *call,
    ngx_hopgate_acme_response_t *resp, json_t *json)
{
    ngx_hopgate_acme_order_t  *o = call->data;

    const char  *status;

    if (resp->status < 200 || resp->status > 299) {
        ngx_hopgate_acme_order_fail(o, resp, json, NULL);
        return;
    }

    switch (o->step) {

    case NGX_HOPGATE_ACME_ORDER_DNS:
        return;

    case NGX_HOPGATE_ACME_ORDER_NEW:
        if (json == NULL || resp->location.len == 0
            || ngx_hopgate_acme_str_copy(o->pool, &resp->location, &o->url)
               != NGX_OK)
        {
            ngx_hopgate_acme_order_fail(o, resp, json, "no order URL");
            return;
        }

        ngx_hopgate_acme_order_log(o, "created");
        ngx_hopgate_acme_order_status(o, resp, json);
        return;

    case NGX_HOPGATE_ACME_ORDER_AUTHZ:
        if (json == NULL) {
            ngx_hopgate_acme_order_fail(o, resp, json, "bad authorization");
            return;
        }

        ngx_hopgate_acme_order_authz(o, json);
        return;

    case NGX_HOPGATE_ACME_ORDER_PUBLISH:
        return;

    case NGX_HOPGATE_ACME_ORDER_CHALLENGE:
        o->polls = 0;
        ngx_hopgate_acme_order_poll(o, NGX_HOPGATE_ACME_ORDER_POLL_AUTHZ,
                                    resp);
        return;

    case NGX_HOPGATE_ACME_ORDER_POLL_AUTHZ:
        status = json ? json_string_value(json_object_get(json, "status"))
                      : NULL;

        if (status && ngx_strcmp(status, "valid") == 0) {
            ngx_hopgate_acme_token_drop(&o->token);
            o->token.len = 0;
            ngx_hopgate_acme_order_log(o, "authorization valid");
            o->polls = 0;
            ngx_hopgate_acme_order_request(o,
                                           NGX_HOPGATE_ACME_ORDER_POLL_ORDER,
                                           &o->url, NULL);
            return;
        }

        if (status && (ngx_strcmp(status, "pending") == 0
                       || ngx_strcmp(status, "processing") == 0))
        {
            ngx_hopgate_acme_order_poll(o, o->step, resp);
            return;
        }

        {
            size_t   i;
            json_t  *ch, *err;

            /* the challenge's error says why validation failed */
            json_array_foreach(json_object_get(json, "challenges"), i, ch) {
                err = json_object_get(ch, "error");
                if (err) {
                    ngx_hopgate_acme_order_fail(o, resp, err,
                                                "authorization invalid");
                    return;
                }
            }
        }

        ngx_hopgate_acme_order_fail(o, resp, json, "authorization invalid");
        return;

    case NGX_HOPGATE_ACME_ORDER_FINALIZE:
    case NGX_HOPGATE_ACME_ORDER_POLL_ORDER:
        if (json == NULL) {
            ngx_hopgate_acme_order_fail(o, resp, json, "bad order");
            return;
        }

        ngx_hopgate_acme_order_status(o, resp, json);
        return;

    case NGX_HOPGATE_ACME_ORDER_CERTIFICATE:
        ngx_hopgate_acme_order_issued(o, resp);
        return;
    }
}


static void
ngx_hopgate_acme_order_fail(ngx_hopgate_acme_order_t *o,
    ngx_hopgate_acme_response_t *resp, json_t *json, const char *why)
{
    u_char                      detail[512], *p;
    time_t                      delay, now;
    ngx_uint_t                  result, failures;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_client_t  *cl;

    cl = ngx_hopgate_acme_client;

    if (resp || json) {
        if (resp == NULL) {
            ngx_hopgate_acme_response_t  none;

            ngx_memzero(&none, sizeof(none));
            none.status = 400;
            ngx_hopgate_acme_describe(&none, json, detail, sizeof(detail));

        } else {
            ngx_hopgate_acme_describe(resp, json, detail, sizeof(detail));
        }

        if (why) {
            p = ngx_snprintf(detail + ngx_strlen(detail),
                             sizeof(detail) - ngx_strlen(detail) - 1,
                             " (%s)", why);
            *p = '\0';
        }

    } else {
        ngx_cpystrn(detail, (u_char *) why, sizeof(detail));
    }

    result = (resp && resp->status == 429)
             ? NGX_HOPGATE_ACME_RESULT_RATE_LIMITED
             : NGX_HOPGATE_ACME_RESULT_FAILED;

    now = ngx_time();
    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    failures = 1;
    delay = ngx_hopgate_acme_backoff(1, 0);

    d = ngx_hopgate_acme_domain_find(shm, o->domain.data, o->domain.len);
    if (d) {
        d->failures++;
        failures = d->failures;
        delay = ngx_hopgate_acme_backoff(d->failures,
                                         resp ? resp->retry_after : 0);
        d->next_try = now + delay;
        d->state = d->version ? NGX_HOPGATE_ACME_VALID
                              : NGX_HOPGATE_ACME_FAILED;
        ngx_cpystrn(d->error, detail, sizeof(d->error));
    }

    ngx_shmtx_unlock(&shpool->mutex);

    (void) ngx_atomic_fetch_add(&shm->results[result], 1);

    ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                  "hopgate acme: order for %V failed: %s; retrying in %Ts "
                  "(failure %ui in a row)", &o->domain, detail, delay,
                  failures);

    /* a CA that forgot us (a restarted test CA, say): register again */
    if (json
        && (ngx_hopgate_acme_problem_is(json,
                              "urn:ietf:params:acme:error:accountDoesNotExist")
            || (ngx_hopgate_acme_problem_is(json,
                              "urn:ietf:params:acme:error:unauthorized")
                && o->step == NGX_HOPGATE_ACME_ORDER_NEW)))
    {
        if (cl->state == NGX_HOPGATE_ACME_CLIENT_READY) {
            cl->state = NGX_HOPGATE_ACME_CLIENT_IDLE;
            cl->next_try = now;
        }
    }

    ngx_hopgate_acme_order_free(o);
}


static void
ngx_hopgate_acme_order_free(ngx_hopgate_acme_order_t *o)
{
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_client_t  *cl;

    cl = ngx_hopgate_acme_client;

    ngx_hopgate_acme_call_cancel(&o->call);

    if (o->gating) {
        ngx_hopgate_acme_gate->ops->cancel(ngx_hopgate_acme_gate, o);
    }

    if (o->wait.timer_set) {
        ngx_del_timer(&o->wait);
    }

    if (o->token.len) {
        ngx_hopgate_acme_token_drop(&o->token);
    }

    if (o->key) {
        EVP_PKEY_free(o->key);
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);

    d = ngx_hopgate_acme_domain_find(shm, o->domain.data, o->domain.len);
    if (d && d->state == NGX_HOPGATE_ACME_ORDERING) {
        d->state = d->version ? NGX_HOPGATE_ACME_VALID
                              : NGX_HOPGATE_ACME_NONE;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_hopgate_acme_order_shm_state(o, -1);

    ngx_queue_remove(&o->link);
    cl->norders--;

    ngx_destroy_pool(o->pool);
}
