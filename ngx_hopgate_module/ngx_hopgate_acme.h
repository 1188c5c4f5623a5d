/*
 * ACME certificates for registered domains (RFC 8555), inside nginx.
 *
 *   ngx_hopgate_acme.c            directives, the shared zone, the election
 *                                 of the worker that runs the client, its
 *                                 tick (registry listing, scheduling)
 *   ngx_hopgate_acme_client.c     the RFC 8555 client: account, orders
 *   ngx_hopgate_acme_jws.c        keys, JWK thumbprints, JWS, CSRs
 *   ngx_hopgate_acme_http.c       libcurl's multi interface on nginx events
 *   ngx_hopgate_acme_store.c      certificates in the zone and the state dir
 *   ngx_hopgate_acme_pg.c         sharing them through PostgreSQL
 *   ngx_hopgate_acme_cert.c       the handshake-time certificate callback
 *   ngx_hopgate_acme_challenge.c  HTTP-01 tokens and their location handler
 *   ngx_hopgate_acme_status.c     its metrics and admin API fields
 *
 * See docs/acme.md for the design.
 */

#ifndef NGX_HOPGATE_ACME_H
#define NGX_HOPGATE_ACME_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <jansson.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_ACME_CHALLENGES    64     /* tokens published at once */
#define NGX_HOPGATE_ACME_WANTED        64     /* on-demand names queued */
#define NGX_HOPGATE_ACME_TOKEN_MAX     128
#define NGX_HOPGATE_ACME_KEYAUTH_MAX   256
#define NGX_HOPGATE_ACME_ERROR_MAX     192


/* a domain's certificate state, as the metrics and the admin API show it */
typedef enum {
    NGX_HOPGATE_ACME_NONE = 0,       /* registered, nothing yet */
    NGX_HOPGATE_ACME_ORDERING,       /* an order is running */
    NGX_HOPGATE_ACME_VALID,          /* a certificate is served */
    NGX_HOPGATE_ACME_FAILED,         /* the last order failed, backing off */
    NGX_HOPGATE_ACME_NSTATES
} ngx_hopgate_acme_state_e;


typedef enum {
    NGX_HOPGATE_ACME_RESULT_ISSUED = 0,
    NGX_HOPGATE_ACME_RESULT_FAILED,
    NGX_HOPGATE_ACME_RESULT_RATE_LIMITED,
    NGX_HOPGATE_ACME_NRESULTS
} ngx_hopgate_acme_result_e;


/* one domain in the shared zone */
typedef struct {
    ngx_str_node_t               sn;         /* key: crc32 of the name */
    ngx_queue_t                  link;       /* shm->domains */
    ngx_uint_t                   state;      /* ngx_hopgate_acme_state_e */
    ngx_uint_t                   version;    /* of the certificate, 0: none */
    u_char                      *cert;       /* PEM chain, in the slab */
    size_t                       cert_len;
    u_char                      *key;        /* PEM, in the slab */
    size_t                       key_len;
    time_t                       not_before;
    time_t                       not_after;
    uint32_t                     ca;         /* crc32 of the issuer's
                                                directory URL */
    time_t                       next_try;   /* not before, after a failure */
    ngx_uint_t                   failures;   /* in a row */
    unsigned                     registered:1;
    unsigned                     listed:1;   /* in the last listing */
    unsigned                     wanted:1;   /* a handshake asked for it */
    unsigned                     warned:1;   /* renew_before was clamped */
    u_char                       error[NGX_HOPGATE_ACME_ERROR_MAX];
    u_char                       name[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_acme_domain_t;


typedef struct {
    size_t                       token_len;  /* 0: free */
    size_t                       keyauth_len;
    time_t                       expires;
    unsigned                     remote:1;   /* mirrored from the database */
    unsigned                     seen:1;
    u_char                       token[NGX_HOPGATE_ACME_TOKEN_MAX];
    u_char                       keyauth[NGX_HOPGATE_ACME_KEYAUTH_MAX];
} ngx_hopgate_acme_token_t;


/* the shared zone's contents */
typedef struct {
    ngx_rbtree_t                 rbtree;
    ngx_rbtree_node_t            sentinel;
    ngx_queue_t                  domains;
    ngx_uint_t                   ndomains;
    ngx_atomic_t                 generation; /* bumped on any change served */
    ngx_uint_t                   next_version;
    ngx_pid_t                    leader;     /* the worker running ACME */
    time_t                       beat;       /* its last heartbeat */
    u_char                      *account_key;   /* PEM, in the slab */
    size_t                       account_key_len;
    ngx_uint_t                   running;    /* orders under way */
    ngx_uint_t                   running_max;   /* the most at once */
    ngx_atomic_t                 results[NGX_HOPGATE_ACME_NRESULTS];
    ngx_hopgate_acme_token_t     tokens[NGX_HOPGATE_ACME_CHALLENGES];
    ngx_uint_t                   nwanted;
    u_char                       wanted[NGX_HOPGATE_ACME_WANTED]
                                       [NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_acme_shm_t;


typedef struct {
    ngx_str_t                    directory;  /* hopgate_acme URL */
    ngx_str_t                    email;
    ngx_str_t                    state;      /* the state dir */
    ngx_str_t                    ca;         /* trust for the ACME server */
    time_t                       renew_before;   /* 0: a third */
    ngx_uint_t                   key_type;   /* NGX_HOPGATE_ACME_KEY_* */
    ngx_str_t                    fallback_cert;  /* PEM text */
    ngx_str_t                    fallback_key;
    size_t                       zone_size;
    time_t                       backoff_min;
    time_t                       backoff_max;
    ngx_msec_t                   timeout;    /* one HTTP request */
    ngx_uint_t                   max_orders; /* at once */
    u_char                       db_key[32]; /* hopgate_acme_db_key_file */
    ngx_flag_t                   db_key_set;
    ngx_shm_zone_t              *zone;
    ngx_uid_t                    user;       /* the workers' */
    ngx_gid_t                    group;
    ngx_log_t                   *log;
} ngx_http_hopgate_acme_main_conf_t;


typedef struct {
    ngx_flag_t                   certificates;
    ngx_array_t                 *injected;   /* our fallback "data:" */
} ngx_http_hopgate_acme_srv_conf_t;


typedef struct {
    ngx_flag_t                   challenge;
} ngx_http_hopgate_acme_loc_conf_t;


#define NGX_HOPGATE_ACME_KEY_ECDSA  1
#define NGX_HOPGATE_ACME_KEY_RSA    2


extern ngx_module_t                        ngx_http_hopgate_acme_module;
extern ngx_http_hopgate_acme_main_conf_t  *ngx_hopgate_acme_conf;
extern ngx_hopgate_registry_t             *ngx_hopgate_acme_gate;


/* ngx_hopgate_acme.c */
ngx_hopgate_acme_shm_t *ngx_hopgate_acme_shm(ngx_slab_pool_t **shpool);
ngx_hopgate_acme_domain_t *ngx_hopgate_acme_domain_find(
    ngx_hopgate_acme_shm_t *shm, u_char *name, size_t len);
ngx_hopgate_acme_domain_t *ngx_hopgate_acme_domain_add(
    ngx_slab_pool_t *shpool, ngx_hopgate_acme_shm_t *shm, u_char *name,
    size_t len);
time_t ngx_hopgate_acme_renew_at(ngx_hopgate_acme_domain_t *d);
ngx_uint_t ngx_hopgate_acme_foreign(ngx_hopgate_acme_domain_t *d);
const char *ngx_hopgate_acme_state_name(ngx_uint_t state);

/* ngx_hopgate_acme_jws.c */
EVP_PKEY *ngx_hopgate_acme_key_generate(ngx_uint_t type);
EVP_PKEY *ngx_hopgate_acme_key_parse(u_char *pem, size_t len);
ngx_int_t ngx_hopgate_acme_key_pem(EVP_PKEY *pkey, ngx_pool_t *pool,
    ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_jwk(EVP_PKEY *pkey, ngx_pool_t *pool,
    ngx_str_t *jwk, ngx_str_t *thumbprint);
ngx_int_t ngx_hopgate_acme_jws(EVP_PKEY *pkey, ngx_pool_t *pool,
    ngx_str_t *jwk, ngx_str_t *kid, ngx_str_t *nonce, ngx_str_t *url,
    ngx_str_t *payload, ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_csr(EVP_PKEY *pkey, ngx_str_t *domain,
    ngx_pool_t *pool, ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_base64url(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_self_signed(ngx_pool_t *pool, ngx_str_t *cert,
    ngx_str_t *key);
ngx_int_t ngx_hopgate_acme_seal(u_char key[32], ngx_str_t *in,
    ngx_pool_t *pool, ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_unseal(u_char key[32], ngx_str_t *in,
    ngx_pool_t *pool, ngx_str_t *out);
ngx_int_t ngx_hopgate_acme_cert_times(u_char *pem, size_t len,
    time_t *not_before, time_t *not_after);

/* ngx_hopgate_acme_http.c */
typedef struct ngx_hopgate_acme_http_s  ngx_hopgate_acme_http_t;

typedef struct {
    long                         status;     /* 0: no answer */
    const char                  *error;      /* transport error text */
    ngx_str_t                    body;
    ngx_str_t                    nonce;      /* Replay-Nonce */
    ngx_str_t                    location;
    ngx_str_t                    content_type;
    time_t                       retry_after;    /* seconds; 0: none */
} ngx_hopgate_acme_response_t;

typedef void (*ngx_hopgate_acme_http_pt)(void *data,
    ngx_hopgate_acme_response_t *resp);

ngx_int_t ngx_hopgate_acme_http_init(ngx_cycle_t *cycle, ngx_str_t *ca,
    ngx_msec_t timeout);
void ngx_hopgate_acme_http_exit(void);
ngx_hopgate_acme_http_t *ngx_hopgate_acme_http(ngx_str_t *url,
    ngx_str_t *body, ngx_uint_t head, ngx_hopgate_acme_http_pt done,
    void *data);
void ngx_hopgate_acme_http_cancel(ngx_hopgate_acme_http_t *h);
ngx_uint_t ngx_hopgate_acme_http_active(void);

/* ngx_hopgate_acme_client.c */
ngx_int_t ngx_hopgate_acme_client_start(ngx_cycle_t *cycle);
void ngx_hopgate_acme_client_stop(void);
void ngx_hopgate_acme_client_tick(void);
ngx_int_t ngx_hopgate_acme_client_running(u_char *name, size_t len);

/* ngx_hopgate_acme_store.c */
ngx_int_t ngx_hopgate_acme_store_init(ngx_cycle_t *cycle,
    ngx_http_hopgate_acme_main_conf_t *amcf);
ngx_int_t ngx_hopgate_acme_store_load(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm, ngx_http_hopgate_acme_main_conf_t *amcf,
    ngx_log_t *log);
ngx_int_t ngx_hopgate_acme_store_put(ngx_str_t *domain, ngx_str_t *chain,
    ngx_str_t *key, ngx_str_t *directory, ngx_log_t *log, ngx_uint_t share);
void ngx_hopgate_acme_store_drop(ngx_hopgate_acme_domain_t *d,
    ngx_slab_pool_t *shpool, ngx_log_t *log);
ngx_int_t ngx_hopgate_acme_store_account(ngx_str_t *pem, ngx_log_t *log,
    ngx_uint_t share);

/* ngx_hopgate_acme_pg.c: sharing through PostgreSQL, when the registry is */
extern ngx_uint_t  ngx_hopgate_acme_pg_enabled;
ngx_int_t ngx_hopgate_acme_pg_start(ngx_cycle_t *cycle, ngx_str_t *conninfo,
    ngx_msec_t timeout);
void ngx_hopgate_acme_pg_stop(void);
void ngx_hopgate_acme_pg_tick(void);
ngx_uint_t ngx_hopgate_acme_pg_may_order(void);
void ngx_hopgate_acme_pg_certificate(ngx_str_t *domain, ngx_str_t *chain,
    ngx_str_t *key, ngx_str_t *directory);
void ngx_hopgate_acme_pg_uncertificate(ngx_str_t *domain);
void ngx_hopgate_acme_pg_token(ngx_str_t *token, ngx_str_t *keyauth);
void ngx_hopgate_acme_pg_account(ngx_str_t *pem);

/* ngx_hopgate_acme_cert.c */
ngx_int_t ngx_hopgate_acme_cert_attach(ngx_conf_t *cf, SSL_CTX *ctx);
void ngx_hopgate_acme_cert_exit(void);

/* ngx_hopgate_acme_status.c (ngx_hopgate_acme_metrics: in the metrics
 * header, for /metrics) */
void ngx_hopgate_acme_admin_row(json_t *item, ngx_str_t *domain);

/* ngx_hopgate_acme_challenge.c */
char *ngx_hopgate_acme_challenge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_hopgate_acme_token_put(ngx_str_t *token, ngx_str_t *keyauth);
void ngx_hopgate_acme_token_drop(ngx_str_t *token);
void ngx_hopgate_acme_token_mirror(ngx_str_t *tokens, ngx_str_t *keyauths,
    ngx_uint_t n);

#endif /* NGX_HOPGATE_ACME_H */
