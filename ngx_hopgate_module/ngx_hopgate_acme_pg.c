/*
 * ACME state shared through PostgreSQL, when the registry is there: every
 * edge behind DNS round-robin must answer the CA's validation and serve
 * the same certificates. The elected worker of each edge keeps one
 * connection (ngx_hopgate_pg.c, never blocking) and, once a second,
 *
 *   - tries for a session-level advisory lock: the edge that holds it is
 *     the one that orders (the account's key is in the database too, so
 *     whichever edge holds it next uses the same account);
 *   - copies certificates newer than the last it saw (by revision) into
 *     the zone and the state dir;
 *   - mirrors the pending challenge tokens into the zone.
 *
 * The ordering edge writes its tokens, certificates and account key there
 * as it goes (schema migration 2 in ngx_hopgate_registry_pg.c). Private
 * keys are sealed with AES-256-GCM under hopgate_acme_db_key_file when it
 * is set (every edge needs the same file); without it they are PEM text,
 * and the tables need the protection of a secret (see docs/acme.md).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_hopgate_acme.h"
#include "ngx_hopgate_pg.h"


#define NGX_HOPGATE_ACME_PG_LOCK  "7236837434516873318"  /* "hopgatf" */


typedef struct {
    ngx_hopgate_pg_t             pg;
    ngx_log_t                   *log;
    int64_t                      revision;   /* the newest certificate seen */
    unsigned                     started:1;
    unsigned                     locked:1;
    unsigned                     account:1;  /* the account key is synced */
    unsigned                     locking:1;
    unsigned                     syncing:1;
} ngx_hopgate_acme_pg_t;


static void ngx_hopgate_acme_pg_setup(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_acme_pg_down(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_acme_pg_locked(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_acme_pg_account_read(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_acme_pg_certs_read(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_acme_pg_tokens_read(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_acme_pg_written(void *data, PGresult *res,
    const char *err);


ngx_uint_t                      ngx_hopgate_acme_pg_enabled;
static ngx_hopgate_acme_pg_t    ngx_hopgate_acme_pg;


static u_char *
ngx_hopgate_acme_pg_key(void)
{
    return ngx_hopgate_acme_conf->db_key_set ? ngx_hopgate_acme_conf->db_key
                                             : NULL;
}


/* a private key as the database keeps it; NULL: out of memory */
static u_char *
ngx_hopgate_acme_pg_seal(ngx_str_t *pem, ngx_pool_t *pool)
{
    ngx_str_t  sealed;

    if (ngx_hopgate_acme_pg_key() == NULL) {
        return pem->data;
    }

    if (ngx_hopgate_acme_seal(ngx_hopgate_acme_pg_key(), pem, pool, &sealed)
        != NGX_OK)
    {
        return NULL;
    }

    return sealed.data;
}


/* a private key from the database: NGX_ERROR if it cannot be opened */
static ngx_int_t
ngx_hopgate_acme_pg_unseal(ngx_str_t *in, ngx_pool_t *pool, ngx_str_t *out,
    ngx_str_t *what)
{
    ngx_int_t  rc;

    rc = ngx_hopgate_acme_unseal(ngx_hopgate_acme_pg_key(), in, pool, out);

    if (rc == NGX_DECLINED) {
        *out = *in;
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_hopgate_acme_pg.log, 0,
                      "hopgate acme: the database's key for %V cannot be "
                      "opened: %s", what,
                      ngx_hopgate_acme_pg_key()
                      ? "not sealed with this edge's hopgate_acme_db_key_file"
                      : "it is sealed and hopgate_acme_db_key_file is not "
                        "set");
    }

    return rc;
}


ngx_int_t
ngx_hopgate_acme_pg_start(ngx_cycle_t *cycle, ngx_str_t *conninfo,
    ngx_msec_t timeout)
{
    ngx_hopgate_acme_pg_t  *ap = &ngx_hopgate_acme_pg;

    if (!ngx_hopgate_acme_pg_enabled || ap->started) {
        return NGX_OK;
    }

    ngx_memzero(ap, sizeof(ngx_hopgate_acme_pg_t));

    ap->log = cycle->log;
    ap->pg.conninfo = (char *) conninfo->data;
    ap->pg.name = "acme";
    ap->pg.application = "hopgate-acme";
    ap->pg.timeout = timeout;
    ap->pg.log = cycle->log;
    ap->pg.setup = ngx_hopgate_acme_pg_setup;
    ap->pg.down = ngx_hopgate_acme_pg_down;
    ap->pg.data = ap;
    ap->started = 1;

    ngx_hopgate_pg_start(&ap->pg);

    return NGX_OK;
}


void
ngx_hopgate_acme_pg_stop(void)
{
    ngx_hopgate_acme_pg_t  *ap = &ngx_hopgate_acme_pg;

    if (!ap->started) {
        return;
    }

    /* closing the session releases the advisory lock */
    ngx_hopgate_pg_stop(&ap->pg);
    ap->started = 0;
    ap->locked = 0;
}


/* may this edge order? Always, without PostgreSQL */
ngx_uint_t
ngx_hopgate_acme_pg_may_order(void)
{
    if (!ngx_hopgate_acme_pg_enabled) {
        return 1;
    }

    return ngx_hopgate_acme_pg.locked && ngx_hopgate_acme_pg.account;
}


static void
ngx_hopgate_acme_pg_setup(ngx_hopgate_pg_t *pg)
{
    ngx_hopgate_pg_ready(pg);
}


static void
ngx_hopgate_acme_pg_down(ngx_hopgate_pg_t *pg)
{
    ngx_hopgate_acme_pg_t  *ap = pg->data;

    if (ap->locked) {
        ngx_log_error(NGX_LOG_WARN, ap->log, 0,
                      "hopgate acme: lost the database connection, and "
                      "with it the ordering lock");
    }

    ap->locked = 0;
    ap->account = 0;
    ap->locking = 0;
    ap->syncing = 0;
}


static void
ngx_hopgate_acme_pg_send(const char *sql, int n, const char **values,
    ngx_hopgate_pg_done_pt done)
{
    ngx_hopgate_acme_pg_t  *ap = &ngx_hopgate_acme_pg;

    if (ngx_hopgate_pg_query(&ap->pg, sql, n, values, 0, done, ap) == NULL) {
        ngx_log_error(NGX_LOG_ERR, ap->log, 0,
                      "hopgate acme: cannot queue a database query");
    }
}


void
ngx_hopgate_acme_pg_tick(void)
{
    u_char                  rev[NGX_INT64_LEN + 1];
    const char             *values[1];
    ngx_hopgate_acme_pg_t  *ap = &ngx_hopgate_acme_pg;

    if (!ap->started || ap->pg.state != NGX_HOPGATE_PG_READY) {
        return;
    }

    if (!ap->locked && !ap->locking) {
        ap->locking = 1;
        ngx_hopgate_acme_pg_send("SELECT pg_try_advisory_lock("
                                 NGX_HOPGATE_ACME_PG_LOCK ")", 0, NULL,
                                 ngx_hopgate_acme_pg_locked);
    }

    if (!ap->syncing) {
        ap->syncing = 1;
        ngx_sprintf(rev, "%L%Z", ap->revision);
        values[0] = (char *) rev;

        ngx_hopgate_acme_pg_send("SELECT domain, chain, key, revision,"
                                 " directory"
                                 " FROM hopgate_acme_certificates"
                                 " WHERE revision > $1"
                                 " ORDER BY revision LIMIT 100", 1, values,
                                 ngx_hopgate_acme_pg_certs_read);
        ngx_hopgate_acme_pg_send("SELECT token, key_authorization"
                                 " FROM hopgate_acme_challenges"
                                 " WHERE expires > now() LIMIT 64", 0, NULL,
                                 ngx_hopgate_acme_pg_tokens_read);
    }
}


static void
ngx_hopgate_acme_pg_locked(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_acme_pg_t  *ap = data;

    const char  *values[1];

    ap->locking = 0;

    if (err || res == NULL || PQntuples(res) != 1) {
        return;
    }

    if (PQgetvalue(res, 0, 0)[0] != 't') {
        return;
    }

    ap->locked = 1;

    ngx_log_error(NGX_LOG_NOTICE, ap->log, 0,
                  "hopgate acme: this edge holds the ordering lock");

    values[0] = (char *) ngx_hopgate_acme_conf->directory.data;
    ngx_hopgate_acme_pg_send("SELECT key FROM hopgate_acme_accounts"
                             " WHERE directory = $1", 1, values,
                             ngx_hopgate_acme_pg_account_read);
}


static void
ngx_hopgate_acme_pg_account_read(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_acme_pg_t  *ap = data;

    ngx_int_t    rc;
    ngx_str_t    pem, raw, what = ngx_string("the account");
    ngx_pool_t  *pool;

    if (err || res == NULL) {
        ngx_log_error(NGX_LOG_ERR, ap->log, 0,
                      "hopgate acme: cannot read the account key: %s",
                      err ? err : "no answer");
        ngx_hopgate_pg_reset(&ap->pg, "account key unreadable");
        return;
    }

    if (PQntuples(res) == 1) {
        pool = ngx_create_pool(4096, ap->log);
        if (pool == NULL) {
            return;
        }

        raw.data = (u_char *) PQgetvalue(res, 0, 0);
        raw.len = PQgetlength(res, 0, 0);

        rc = ngx_hopgate_acme_pg_unseal(&raw, pool, &pem, &what);
        if (rc == NGX_OK) {
            rc = ngx_hopgate_acme_store_account(&pem, ap->log, 0);
        }

        ngx_destroy_pool(pool);

        if (rc != NGX_OK) {
            /* ordering with another account would fork the state */
            return;
        }
    }

    ap->account = 1;
}


static void
ngx_hopgate_acme_pg_certs_read(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_acme_pg_t  *ap = data;

    int          i;
    int64_t      rev;
    ngx_str_t    domain, chain, key, raw, directory;
    ngx_pool_t  *pool;

    if (err || res == NULL) {
        if (err) {
            ngx_log_error(NGX_LOG_ERR, ap->log, 0,
                          "hopgate acme: cannot read certificates: %s", err);
        }
        return;
    }

    pool = ngx_create_pool(4096, ap->log);
    if (pool == NULL) {
        return;
    }

    for (i = 0; i < PQntuples(res); i++) {
        domain.data = (u_char *) PQgetvalue(res, i, 0);
        domain.len = PQgetlength(res, i, 0);
        chain.data = (u_char *) PQgetvalue(res, i, 1);
        chain.len = PQgetlength(res, i, 1);
        raw.data = (u_char *) PQgetvalue(res, i, 2);
        raw.len = PQgetlength(res, i, 2);
        rev = ngx_atoof((u_char *) PQgetvalue(res, i, 3),
                        PQgetlength(res, i, 3));

        if (rev > ap->revision) {
            ap->revision = rev;
        }

        directory.data = (u_char *) PQgetvalue(res, i, 4);
        directory.len = PQgetlength(res, i, 4);

        if (ngx_hopgate_acme_pg_unseal(&raw, pool, &key, &domain) == NGX_OK)
        {
            (void) ngx_hopgate_acme_store_put(&domain, &chain, &key,
                                              &directory, ap->log, 0);
        }
    }

    ngx_destroy_pool(pool);
}


static void
ngx_hopgate_acme_pg_tokens_read(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_acme_pg_t  *ap = data;

    int        i, n;
    ngx_str_t  tokens[NGX_HOPGATE_ACME_CHALLENGES];
    ngx_str_t  keyauths[NGX_HOPGATE_ACME_CHALLENGES];

    ap->syncing = 0;

    if (err || res == NULL) {
        return;
    }

    n = ngx_min(PQntuples(res), NGX_HOPGATE_ACME_CHALLENGES);

    for (i = 0; i < n; i++) {
        tokens[i].data = (u_char *) PQgetvalue(res, i, 0);
        tokens[i].len = PQgetlength(res, i, 0);
        keyauths[i].data = (u_char *) PQgetvalue(res, i, 1);
        keyauths[i].len = PQgetlength(res, i, 1);
    }

    ngx_hopgate_acme_token_mirror(tokens, keyauths, n);
}


static void
ngx_hopgate_acme_pg_written(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_acme_pg_t  *ap = data;

    if (err) {
        ngx_log_error(NGX_LOG_ERR, ap->log, 0,
                      "hopgate acme: database write failed: %s", err);
    }
}


void
ngx_hopgate_acme_pg_certificate(ngx_str_t *domain, ngx_str_t *chain,
    ngx_str_t *key, ngx_str_t *directory)
{
    u_char       d[NGX_HOPGATE_DOMAIN_MAX + 1];
    ngx_pool_t  *pool;
    const char  *values[4];

    if (!ngx_hopgate_acme_pg.started) {
        return;
    }

    pool = ngx_create_pool(4096, ngx_hopgate_acme_pg.log);
    if (pool == NULL) {
        return;
    }

    /* PEM text has no NUL; the parameters must end with one */
    ngx_cpystrn(d, domain->data, ngx_min(domain->len + 1, sizeof(d)));
    values[0] = (char *) d;
    values[1] = (char *) chain->data;
    values[2] = (char *) ngx_hopgate_acme_pg_seal(key, pool);
    values[3] = (char *) directory->data;     /* a directive's: NUL-ended */

    if (values[2] == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    ngx_hopgate_acme_pg_send("INSERT INTO hopgate_acme_certificates"
                             " (domain, chain, key, directory)"
                             " VALUES ($1, $2, $3, $4)"
                             " ON CONFLICT (domain) DO UPDATE SET"
                             " chain = EXCLUDED.chain, key = EXCLUDED.key,"
                             " directory = EXCLUDED.directory,"
                             " revision = nextval('hopgate_acme_revision'),"
                             " updated_at = now()", 4, values,
                             ngx_hopgate_acme_pg_written);

    /* the query copied its parameters */
    ngx_destroy_pool(pool);
}


void
ngx_hopgate_acme_pg_uncertificate(ngx_str_t *domain)
{
    u_char       d[NGX_HOPGATE_DOMAIN_MAX + 1];
    const char  *values[1];

    if (!ngx_hopgate_acme_pg.started) {
        return;
    }

    ngx_cpystrn(d, domain->data, ngx_min(domain->len + 1, sizeof(d)));
    values[0] = (char *) d;

    ngx_hopgate_acme_pg_send("DELETE FROM hopgate_acme_certificates"
                             " WHERE domain = $1", 1, values,
                             ngx_hopgate_acme_pg_written);
}


/* keyauth NULL: the challenge is over */
void
ngx_hopgate_acme_pg_token(ngx_str_t *token, ngx_str_t *keyauth)
{
    u_char       t[NGX_HOPGATE_ACME_TOKEN_MAX + 1];
    u_char       k[NGX_HOPGATE_ACME_KEYAUTH_MAX + 1];
    const char  *values[2];

    if (!ngx_hopgate_acme_pg.started
        || token->len > NGX_HOPGATE_ACME_TOKEN_MAX
        || (keyauth && keyauth->len > NGX_HOPGATE_ACME_KEYAUTH_MAX))
    {
        return;
    }

    ngx_cpystrn(t, token->data, token->len + 1);
    values[0] = (char *) t;

    if (keyauth == NULL) {
        ngx_hopgate_acme_pg_send("DELETE FROM hopgate_acme_challenges"
                                 " WHERE token = $1 OR expires < now()", 1,
                                 values, ngx_hopgate_acme_pg_written);
        return;
    }

    ngx_cpystrn(k, keyauth->data, keyauth->len + 1);
    values[1] = (char *) k;

    ngx_hopgate_acme_pg_send("INSERT INTO hopgate_acme_challenges"
                             " VALUES ($1, $2, now() + interval '10 min')"
                             " ON CONFLICT (token) DO UPDATE SET"
                             " key_authorization = EXCLUDED.key_authorization,"
                             " expires = EXCLUDED.expires", 2, values,
                             ngx_hopgate_acme_pg_written);
}


void
ngx_hopgate_acme_pg_account(ngx_str_t *pem)
{
    ngx_pool_t  *pool;
    const char  *values[2];

    if (!ngx_hopgate_acme_pg.started) {
        return;
    }

    pool = ngx_create_pool(4096, ngx_hopgate_acme_pg.log);
    if (pool == NULL) {
        return;
    }

    values[0] = (char *) ngx_hopgate_acme_conf->directory.data;
    values[1] = (char *) ngx_hopgate_acme_pg_seal(pem, pool);

    if (values[1]) {
        ngx_hopgate_acme_pg_send("INSERT INTO hopgate_acme_accounts"
                                 " (directory, key) VALUES ($1, $2)"
                                 " ON CONFLICT (directory) DO UPDATE SET"
                                 " key = EXCLUDED.key", 2, values,
                                 ngx_hopgate_acme_pg_written);
    }

    ngx_destroy_pool(pool);
}
