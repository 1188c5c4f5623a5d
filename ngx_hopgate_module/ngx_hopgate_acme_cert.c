/*
 * Serving ACME certificates at handshake time: OpenSSL's certificate
 * callback on the SSL_CTX of every server with hopgate_acme_certificates
 * (what openresty's ssl_certificate_by_lua does) picks the certificate
 * for the SNI name. Each worker keeps parsed X509/EVP_PKEY objects in a
 * cache of its own, filled from the shared zone the first time a name is
 * asked for, and checked against the zone only when its generation moved
 * (a certificate issued, renewed or dropped): a handshake parses no PEM.
 *
 * A name with no certificate keeps the server's own (the fallback); if
 * the registry does not know it yet, it is queued for the elected worker,
 * which lists the registry at once and orders if the name is there.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_CACHE_MISSES  4096   /* names without a cert */
#define NGX_HOPGATE_ACME_ASK_EVERY     5      /* s between asks per name */


typedef struct {
    ngx_str_node_t               sn;
    ngx_queue_t                  link;
    ngx_uint_t                   version;    /* 0: no certificate */
    X509                        *cert;
    STACK_OF(X509)              *chain;
    EVP_PKEY                    *key;
    time_t                       asked;
    u_char                       name[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_acme_cached_t;


static int ngx_hopgate_acme_cert_cb(SSL *ssl, void *arg);


static ngx_rbtree_t        ngx_hopgate_acme_cache;
static ngx_rbtree_node_t   ngx_hopgate_acme_cache_sentinel;
static ngx_queue_t         ngx_hopgate_acme_cache_all;
static ngx_uint_t          ngx_hopgate_acme_cache_misses;
static ngx_atomic_uint_t   ngx_hopgate_acme_cache_generation;
static ngx_uint_t          ngx_hopgate_acme_cache_ready;


ngx_int_t
ngx_hopgate_acme_cert_attach(ngx_conf_t *cf, SSL_CTX *ctx)
{
    SSL_CTX_set_cert_cb(ctx, ngx_hopgate_acme_cert_cb, NULL);

    return NGX_OK;
}


static void
ngx_hopgate_acme_cache_init(void)
{
    ngx_rbtree_init(&ngx_hopgate_acme_cache,
                    &ngx_hopgate_acme_cache_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&ngx_hopgate_acme_cache_all);
    ngx_hopgate_acme_cache_generation = (ngx_atomic_uint_t) -1;
    ngx_hopgate_acme_cache_ready = 1;
}


static void
ngx_hopgate_acme_cache_free(ngx_hopgate_acme_cached_t *e)
{
    ngx_rbtree_delete(&ngx_hopgate_acme_cache, &e->sn.node);
    ngx_queue_remove(&e->link);

    if (e->version == 0) {
        ngx_hopgate_acme_cache_misses--;
    }

    X509_free(e->cert);
    EVP_PKEY_free(e->key);

    if (e->chain) {
        sk_X509_pop_free(e->chain, X509_free);
    }

    ngx_free(e);
}


void
ngx_hopgate_acme_cert_exit(void)
{
    ngx_queue_t                *q;
    ngx_hopgate_acme_cached_t  *e;

    if (!ngx_hopgate_acme_cache_ready) {
        return;
    }

    while (!ngx_queue_empty(&ngx_hopgate_acme_cache_all)) {
        q = ngx_queue_head(&ngx_hopgate_acme_cache_all);
        e = ngx_queue_data(q, ngx_hopgate_acme_cached_t, link);
        ngx_hopgate_acme_cache_free(e);
    }
}


/* the zone changed: drop what no longer matches it */
static void
ngx_hopgate_acme_cache_revalidate(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm)
{
    ngx_uint_t                  stale;
    ngx_queue_t                *q, *next;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_cached_t  *e;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_hopgate_acme_cache_generation = shm->generation;

    for (q = ngx_queue_head(&ngx_hopgate_acme_cache_all);
         q != ngx_queue_sentinel(&ngx_hopgate_acme_cache_all);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_hopgate_acme_cached_t, link);

        d = ngx_hopgate_acme_domain_find(shm, e->name, e->sn.str.len);

        stale = (d == NULL) ? (e->version != 0)
                            : (d->version != e->version);

        if (stale) {
            ngx_hopgate_acme_cache_free(e);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


static ngx_int_t
ngx_hopgate_acme_cache_parse(ngx_hopgate_acme_cached_t *e, u_char *cert,
    size_t cert_len, u_char *key, size_t key_len)
{
    BIO   *bio;
    X509  *x;

    bio = BIO_new_mem_buf(cert, (int) cert_len);
    if (bio == NULL) {
        return NGX_ERROR;
    }

    e->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    e->chain = sk_X509_new_null();

    if (e->cert == NULL || e->chain == NULL) {
        BIO_free(bio);
        return NGX_ERROR;
    }

    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(e->chain, x)) {
            X509_free(x);
            BIO_free(bio);
            return NGX_ERROR;
        }
    }

    BIO_free(bio);
    ERR_clear_error();     /* the end of the chain reads as an error */

    e->key = ngx_hopgate_acme_key_parse(key, key_len);

    return e->key ? NGX_OK : NGX_ERROR;
}


/* a name this worker has not looked at since the zone last changed */
static ngx_hopgate_acme_cached_t *
ngx_hopgate_acme_cache_fill(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm, u_char *name, size_t len)
{
    u_char                     *cert, *key;
    size_t                      cert_len, key_len;
    ngx_uint_t                  version, i;
    ngx_hopgate_acme_domain_t  *d;
    ngx_hopgate_acme_cached_t  *e;

    if (ngx_hopgate_acme_cache_misses >= NGX_HOPGATE_ACME_CACHE_MISSES) {
        /* names that SNI made up must not grow the cache without end */
        ngx_queue_t  *q, *next;

        for (q = ngx_queue_head(&ngx_hopgate_acme_cache_all);
             q != ngx_queue_sentinel(&ngx_hopgate_acme_cache_all);
             q = next)
        {
            next = ngx_queue_next(q);
            e = ngx_queue_data(q, ngx_hopgate_acme_cached_t, link);
            if (e->version == 0) {
                ngx_hopgate_acme_cache_free(e);
            }
        }
    }

    e = ngx_calloc(sizeof(ngx_hopgate_acme_cached_t), ngx_cycle->log);
    if (e == NULL) {
        return NULL;
    }

    ngx_memcpy(e->name, name, len);
    e->sn.str.data = e->name;
    e->sn.str.len = len;
    e->sn.node.key = ngx_crc32_short(name, len);

    cert = NULL;
    key = NULL;
    cert_len = 0;
    key_len = 0;
    version = 0;

    ngx_shmtx_lock(&shpool->mutex);

    d = ngx_hopgate_acme_domain_find(shm, name, len);

    if (d && d->version && d->registered) {
        /* copied out: parsing is done without the lock */
        cert = ngx_alloc(d->cert_len + d->key_len, ngx_cycle->log);
        if (cert) {
            key = cert + d->cert_len;
            ngx_memcpy(cert, d->cert, d->cert_len);
            ngx_memcpy(key, d->key, d->key_len);
            cert_len = d->cert_len;
            key_len = d->key_len;
            version = d->version;
        }

    } else if (d == NULL || !d->registered) {
        /* on demand: the leader lists the registry and orders if listed */
        for (i = 0; i < shm->nwanted; i++) {
            if (ngx_strncmp(shm->wanted[i], name, len) == 0
                && shm->wanted[i][len] == '\0')
            {
                break;
            }
        }

        if (i == shm->nwanted && i < NGX_HOPGATE_ACME_WANTED) {
            ngx_memcpy(shm->wanted[i], name, len);
            shm->wanted[i][len] = '\0';
            shm->nwanted++;
        }
    }

    e->asked = ngx_time();

    ngx_shmtx_unlock(&shpool->mutex);

    if (cert) {
        if (ngx_hopgate_acme_cache_parse(e, cert, cert_len, key, key_len)
            == NGX_OK)
        {
            e->version = version;

        } else {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "hopgate acme: %*s's certificate in the zone does "
                          "not parse", len, name);
            X509_free(e->cert);
            EVP_PKEY_free(e->key);
            if (e->chain) {
                sk_X509_pop_free(e->chain, X509_free);
            }
            e->cert = NULL;
            e->key = NULL;
            e->chain = NULL;
        }

        ngx_free(cert);
    }

    if (e->version == 0) {
        ngx_hopgate_acme_cache_misses++;
    }

    ngx_rbtree_insert(&ngx_hopgate_acme_cache, &e->sn.node);
    ngx_queue_insert_tail(&ngx_hopgate_acme_cache_all, &e->link);

    return e;
}


static int
ngx_hopgate_acme_cert_cb(SSL *ssl, void *arg)
{
    u_char                      name[NGX_HOPGATE_DOMAIN_MAX + 1];
    size_t                      len;
    ngx_str_t                   raw, key;
    const char                 *sni;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_cached_t  *e;

    if (ngx_hopgate_acme_conf == NULL) {
        return 1;
    }

    sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni == NULL) {
        return 1;
    }

    raw.data = (u_char *) sni;
    raw.len = ngx_strlen(sni);

    if (raw.len > NGX_HOPGATE_DOMAIN_MAX
        || ngx_hopgate_domain_normalize(&raw, name, &len) != NGX_OK)
    {
        return 1;
    }

    if (!ngx_hopgate_acme_cache_ready) {
        ngx_hopgate_acme_cache_init();
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    if (shm->generation != ngx_hopgate_acme_cache_generation) {
        ngx_hopgate_acme_cache_revalidate(shpool, shm);
    }

    key.data = name;
    key.len = len;

    e = (ngx_hopgate_acme_cached_t *)
            ngx_str_rbtree_lookup(&ngx_hopgate_acme_cache, &key,
                                  ngx_crc32_short(name, len));

    if (e && e->version == 0
        && ngx_time() - e->asked >= NGX_HOPGATE_ACME_ASK_EVERY)
    {
        /* ask again now and then: the registry may know it by now */
        ngx_hopgate_acme_cache_free(e);
        e = NULL;
    }

    if (e == NULL) {
        e = ngx_hopgate_acme_cache_fill(shpool, shm, name, len);
        if (e == NULL) {
            return 1;
        }
    }

    if (e->version == 0) {
        return 1;     /* the fallback */
    }

    /* the fallback may be of another key type: it must not be chosen */
    SSL_certs_clear(ssl);

    if (SSL_use_cert_and_key(ssl, e->cert, e->key, e->chain, 1) != 1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "hopgate acme: SSL_use_cert_and_key() failed for %V",
                      &key);
        ERR_clear_error();
    }

    return 1;
}
