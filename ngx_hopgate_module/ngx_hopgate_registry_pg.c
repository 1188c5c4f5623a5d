/*
 * The PostgreSQL registry, `hopgate_registry postgresql://...` (or a
 * key=value connection string).
 *
 * Each worker holds two connections (ngx_hopgate_pg.c): one for queries
 * (key checks, admin calls) and one that LISTENs on "hopgate_registry",
 * where a trigger on the domains table announces every change. A verified
 * (domain, key hash) is cached for hopgate_registry_cache_ttl; a change
 * notification drops the domain from the cache and, when the domain was
 * unregistered, disabled or given a new key, closes its live sessions in
 * this worker.
 *
 * The cache is trusted only while the LISTEN connection is up (otherwise a
 * change could go unnoticed) - or while the database is unreachable: then
 * nothing can change, and cached keys keep working, even past their TTL,
 * until it is back. Keys not in the cache are refused as "registry
 * unavailable", which agents retry.
 *
 * Requests for a domain with no session ask whether it is registered at
 * all (a 404 if not): answered from the key cache, from a cache of such
 * answers kept by the same rules, or by one query per domain however
 * many requests wait for it, at most NGX_HOPGATE_PG_LOOKUPS at a time.
 *
 * Schema migrations are versioned statements compiled in below, applied by
 * every worker when its query connection comes up, inside one transaction
 * under an advisory lock: the first worker of the first node applies what
 * is missing, the others wait for the lock (asynchronously) and find
 * nothing to do. The .so and the schema it expects cannot drift apart.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <openssl/crypto.h>

#include "ngx_http_hopgate_module.h"
#include "ngx_hopgate_registry.h"
#include "ngx_hopgate_pg.h"


#define NGX_HOPGATE_PG_SCHEMA_VERSION  1
#define NGX_HOPGATE_PG_CACHE_MAX       10000
#define NGX_HOPGATE_PG_HEARTBEAT       10000     /* ms, LISTEN connection */
#define NGX_HOPGATE_PG_CHANNEL         "hopgate_registry"
#define NGX_HOPGATE_PG_LOOKUPS         64        /* queries in flight */


typedef struct {
    ngx_str_t                        conninfo;      /* NUL-terminated */
    ngx_http_hopgate_main_conf_t    *hmcf;

    /* a worker's state */
    ngx_hopgate_pg_t                 query;
    ngx_hopgate_pg_t                 listen;
    ngx_event_t                      heartbeat;
    ngx_rbtree_t                     cache;
    ngx_rbtree_node_t                cache_sentinel;
    ngx_queue_t                      lru;           /* most recent first */
    ngx_uint_t                       ncached;
    ngx_uint_t                       generation;    /* bumped by changes */
    ngx_queue_t                      checks;
    ngx_queue_t                      calls;
    ngx_rbtree_t                     known;         /* lookups' answers */
    ngx_rbtree_node_t                known_sentinel;
    ngx_queue_t                      known_lru;
    ngx_uint_t                       nknown;
    ngx_queue_t                      lookups;
    ngx_uint_t                       nlookups;
    unsigned                         listening:1;
    unsigned                         revalidating:1;
    unsigned                         started:1;
} ngx_hopgate_pgreg_t;


typedef struct {
    ngx_str_node_t                   sn;
    ngx_queue_t                      lru;
    u_char                           hash[32];
    ngx_msec_t                       expires;
    u_char                           name[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_pgreg_cached_t;


/* a key check waiting for the database */
typedef struct {
    ngx_queue_t                      link;
    ngx_hopgate_pgreg_t             *reg;
    ngx_hopgate_pg_query_t          *query;
    ngx_hopgate_verdict_pt           done;
    void                            *data;
    ngx_uint_t                       generation;
    ngx_uint_t                       retried;
    hg_time_t                        sent;
    u_char                           hash[32];
    u_char                           domain[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_pgreg_check_t;


/* whether a domain is registered, as the database last said */
typedef struct {
    ngx_str_node_t                   sn;
    ngx_queue_t                      lru;
    ngx_msec_t                       expires;
    unsigned                         registered:1;
    u_char                           name[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_pgreg_known_t;


/* the query of a domain's lookup, and the requests waiting for it */
typedef struct {
    ngx_queue_t                      link;
    ngx_hopgate_pgreg_t             *reg;
    ngx_hopgate_pg_query_t          *query;
    ngx_queue_t                      waiters;
    ngx_uint_t                       generation;
    size_t                           len;
    u_char                           domain[NGX_HOPGATE_DOMAIN_MAX + 1];
} ngx_hopgate_pgreg_lookup_t;


typedef struct {
    ngx_queue_t                      link;
    ngx_hopgate_lookup_pt            done;
    void                            *data;
} ngx_hopgate_pgreg_waiter_t;


/* an admin call waiting for the database */
typedef struct {
    ngx_queue_t                      link;
    ngx_hopgate_pgreg_t             *reg;
    ngx_hopgate_pg_query_t          *query;
    ngx_hopgate_admin_call_t        *call;
} ngx_hopgate_pgreg_call_t;


static ngx_int_t ngx_hopgate_pgreg_init_process(ngx_hopgate_registry_t *r,
    ngx_cycle_t *cycle);
static void ngx_hopgate_pgreg_exit_process(ngx_hopgate_registry_t *r);
static ngx_int_t ngx_hopgate_pgreg_check(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data);
static void ngx_hopgate_pgreg_cancel(ngx_hopgate_registry_t *r, void *data);
static ngx_int_t ngx_hopgate_pgreg_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call);
static void ngx_hopgate_pgreg_admin_cancel(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call);
static ngx_int_t ngx_hopgate_pgreg_lookup(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_hopgate_lookup_pt done, void *data);
static void ngx_hopgate_pgreg_lookup_cancel(ngx_hopgate_registry_t *r,
    void *data);
static void ngx_hopgate_pgreg_looked_up(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_known_put(ngx_hopgate_pgreg_t *reg,
    u_char *domain, size_t len, ngx_uint_t registered);
static void ngx_hopgate_pgreg_known_drop(ngx_hopgate_pgreg_t *reg,
    ngx_hopgate_pgreg_known_t *k);
static void ngx_hopgate_pgreg_known_flush(ngx_hopgate_pgreg_t *reg);
static void ngx_hopgate_pgreg_lookups_free(ngx_hopgate_pgreg_t *reg);

static void ngx_hopgate_pgreg_query_setup(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pgreg_migrated(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_configured(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_listen_setup(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pgreg_listening(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_listen_down(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pgreg_revalidate(ngx_hopgate_pgreg_t *reg);
static void ngx_hopgate_pgreg_revalidated(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_notify(ngx_hopgate_pg_t *pg,
    const char *channel, const char *payload);
static void ngx_hopgate_pgreg_heartbeat(ngx_event_t *ev);
static void ngx_hopgate_pgreg_heartbeat_done(void *data, PGresult *res,
    const char *err);
static ngx_int_t ngx_hopgate_pgreg_send_check(ngx_hopgate_pgreg_check_t *ck);
static void ngx_hopgate_pgreg_checked(void *data, PGresult *res,
    const char *err);
static void ngx_hopgate_pgreg_answered(void *data, PGresult *res,
    const char *err);

static ngx_hopgate_pgreg_cached_t *ngx_hopgate_pgreg_cache_find(
    ngx_hopgate_pgreg_t *reg, u_char *domain, size_t len);
static void ngx_hopgate_pgreg_cache_put(ngx_hopgate_pgreg_t *reg,
    u_char *domain, size_t len, u_char *hash);
static void ngx_hopgate_pgreg_cache_drop(ngx_hopgate_pgreg_t *reg,
    ngx_hopgate_pgreg_cached_t *e);
static void ngx_hopgate_pgreg_cache_flush(ngx_hopgate_pgreg_t *reg);


const ngx_hopgate_registry_ops_t  ngx_hopgate_registry_pg_ops = {
    "postgresql",
    ngx_hopgate_pgreg_init_process,
    ngx_hopgate_pgreg_exit_process,
    ngx_hopgate_pgreg_check,
    ngx_hopgate_pgreg_cancel,
    ngx_hopgate_pgreg_admin,
    ngx_hopgate_pgreg_admin_cancel,
    ngx_hopgate_pgreg_lookup,
    ngx_hopgate_pgreg_lookup_cancel
};


/*
 * The migrations: one implicit transaction (a multi-statement simple
 * query), serialised across workers and nodes by a transaction-level
 * advisory lock; each version applied once, recorded in
 * hopgate_schema_migrations. Append new versions; never edit old ones.
 * The last statement reports the schema's version.
 */
static const char  ngx_hopgate_pgreg_migrations[] =
    "SELECT pg_advisory_xact_lock(7236837434516873317);"     /* "hopgate" */

    "CREATE TABLE IF NOT EXISTS hopgate_schema_migrations ("
    "  version integer PRIMARY KEY,"
    "  description text NOT NULL,"
    "  applied_at timestamptz NOT NULL DEFAULT now());"

    "DO $migration$ BEGIN"
    " IF NOT EXISTS (SELECT 1 FROM hopgate_schema_migrations"
    "                WHERE version = 1) THEN"

    "  CREATE TABLE domains ("
    "    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    "    domain text NOT NULL UNIQUE"
    "      CHECK (domain = lower(domain) AND domain !~ '[.:]$'),"
    "    key_hash bytea NOT NULL CHECK (octet_length(key_hash) = 32),"
    "    memo text NOT NULL DEFAULT '',"
    "    created_at timestamptz NOT NULL DEFAULT now(),"
    "    updated_at timestamptz NOT NULL DEFAULT now(),"
    "    disabled boolean NOT NULL DEFAULT false);"

    "  CREATE FUNCTION hopgate_domains_touch() RETURNS trigger"
    "  LANGUAGE plpgsql AS $fn$ BEGIN"
    "    NEW.updated_at := now(); RETURN NEW;"
    "  END $fn$;"

    "  CREATE TRIGGER domains_touch BEFORE UPDATE ON domains"
    "  FOR EACH ROW EXECUTE FUNCTION hopgate_domains_touch();"

    /* "<change> <domain>" on every change, whoever makes it */
    "  CREATE FUNCTION hopgate_domains_notify() RETURNS trigger"
    "  LANGUAGE plpgsql AS $fn$ BEGIN"
    "    IF TG_OP = 'INSERT' THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'registered ' || NEW.domain);"
    "    ELSIF TG_OP = 'DELETE' THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'unregistered ' || OLD.domain);"
    "    ELSIF NEW.domain <> OLD.domain THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'unregistered ' || OLD.domain);"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'registered ' || NEW.domain);"
    "    ELSIF NEW.key_hash <> OLD.key_hash THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'rotated ' || NEW.domain);"
    "    ELSIF NEW.disabled AND NOT OLD.disabled THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'disabled ' || NEW.domain);"
    "    ELSIF OLD.disabled AND NOT NEW.disabled THEN"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'enabled ' || NEW.domain);"
    "    ELSE"
    "      PERFORM pg_notify('" NGX_HOPGATE_PG_CHANNEL "',"
    "                        'updated ' || NEW.domain);"
    "    END IF;"
    "    RETURN NULL;"
    "  END $fn$;"

    "  CREATE TRIGGER domains_notify AFTER INSERT OR UPDATE OR DELETE"
    "  ON domains FOR EACH ROW EXECUTE FUNCTION hopgate_domains_notify();"

    "  INSERT INTO hopgate_schema_migrations (version, description)"
    "  VALUES (1, 'domains with hashed keys; change notifications');"
    " END IF;"
    "END $migration$;"

    "SELECT max(version) FROM hopgate_schema_migrations;";


static const char  ngx_hopgate_pgreg_sql_check[] =
    "SELECT encode(key_hash, 'hex'), disabled FROM domains"
    " WHERE domain = $1";

static const char  ngx_hopgate_pgreg_sql_lookup[] =
    "SELECT 1 FROM domains WHERE domain = $1";

static const char  ngx_hopgate_pgreg_sql_revalidate[] =
    "SELECT domain, encode(key_hash, 'hex'), disabled FROM domains"
    " WHERE domain = ANY($1::text[])";

static const char  ngx_hopgate_pgreg_sql_timeout[] =
    "SELECT set_config('statement_timeout', $1, false)";

static const char  ngx_hopgate_pgreg_sql_list[] =
    "SELECT domain, memo,"
    " to_char(created_at AT TIME ZONE 'UTC',"
    "         'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " disabled FROM domains ORDER BY domain";

static const char  ngx_hopgate_pgreg_sql_register[] =
    "INSERT INTO domains (domain, key_hash, memo)"
    " VALUES ($1, decode($2, 'hex'), $3)"
    " ON CONFLICT (domain) DO NOTHING RETURNING id";

/* found, deleted: (0, 0) unknown, (1, 0) wrong key, (1, 1) done */
static const char  ngx_hopgate_pgreg_sql_unregister[] =
    "WITH d AS (SELECT id, key_hash = decode($2, 'hex') AS ok"
    "           FROM domains WHERE domain = $1 FOR UPDATE),"
    " gone AS (DELETE FROM domains"
    "          WHERE id IN (SELECT id FROM d WHERE ok) RETURNING id)"
    " SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM gone)";

static const char  ngx_hopgate_pgreg_sql_rotate[] =
    "UPDATE domains SET key_hash = decode($2, 'hex')"
    " WHERE domain = $1 RETURNING id";

static const char  ngx_hopgate_pgreg_sql_disable[] =
    "UPDATE domains SET disabled = $2::boolean"
    " WHERE domain = $1 RETURNING id";


/* ---- configuration ----------------------------------------------------- */

void *
ngx_hopgate_registry_pg_create(ngx_conf_t *cf, ngx_str_t *conninfo)
{
    char                 *err;
    size_t                len;
    PQconninfoOption     *opts;
    ngx_hopgate_pgreg_t  *reg;

    reg = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_pgreg_t));
    if (reg == NULL) {
        return NULL;
    }

    reg->conninfo.len = conninfo->len;
    reg->conninfo.data = ngx_pnalloc(cf->pool, conninfo->len + 1);
    if (reg->conninfo.data == NULL) {
        return NULL;
    }

    ngx_cpystrn(reg->conninfo.data, conninfo->data, conninfo->len + 1);

    /* syntax only: nginx -t does not connect */
    err = NULL;
    opts = PQconninfoParse((char *) reg->conninfo.data, &err);

    if (opts == NULL) {
        /* libpq ends its messages with a newline */
        len = err ? ngx_strlen(err) : 0;
        while (len && (err[len - 1] == '\n' || err[len - 1] == ' ')) {
            err[--len] = '\0';
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_registry\": invalid PostgreSQL "
                           "connection string: %s",
                           err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }
        return NULL;
    }

    PQconninfoFree(opts);

    reg->hmcf = ngx_http_conf_get_module_main_conf(cf,
                                                   ngx_http_hopgate_module);

    return reg;
}


/* ---- a worker's connections -------------------------------------------- */

static ngx_int_t
ngx_hopgate_pgreg_init_process(ngx_hopgate_registry_t *r, ngx_cycle_t *cycle)
{
    ngx_hopgate_pgreg_t  *reg = r->backend;

    ngx_rbtree_init(&reg->cache, &reg->cache_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&reg->lru);
    ngx_queue_init(&reg->checks);
    ngx_queue_init(&reg->calls);
    ngx_rbtree_init(&reg->known, &reg->known_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&reg->known_lru);
    ngx_queue_init(&reg->lookups);

    reg->query.conninfo = (char *) reg->conninfo.data;
    reg->query.name = "registry";
    reg->query.application = "hopgate-registry";
    reg->query.timeout = reg->hmcf->registry_timeout;
    reg->query.log = cycle->log;
    reg->query.setup = ngx_hopgate_pgreg_query_setup;
    reg->query.data = reg;

    reg->listen.conninfo = (char *) reg->conninfo.data;
    reg->listen.name = "registry LISTEN";
    reg->listen.application = "hopgate-listen";
    reg->listen.timeout = reg->hmcf->registry_timeout;
    reg->listen.log = cycle->log;
    reg->listen.setup = ngx_hopgate_pgreg_listen_setup;
    reg->listen.down = ngx_hopgate_pgreg_listen_down;
    reg->listen.notify = ngx_hopgate_pgreg_notify;
    reg->listen.data = reg;

    reg->heartbeat.handler = ngx_hopgate_pgreg_heartbeat;
    reg->heartbeat.data = reg;
    reg->heartbeat.log = cycle->log;
    reg->heartbeat.cancelable = 1;

    reg->started = 1;

    ngx_hopgate_pg_start(&reg->query);
    ngx_hopgate_pg_start(&reg->listen);

    return NGX_OK;
}


static void
ngx_hopgate_pgreg_exit_process(ngx_hopgate_registry_t *r)
{
    ngx_hopgate_pgreg_t  *reg = r->backend;

    if (!reg->started) {
        return;
    }

    if (reg->heartbeat.timer_set) {
        ngx_del_timer(&reg->heartbeat);
    }

    ngx_hopgate_pg_stop(&reg->query);
    ngx_hopgate_pg_stop(&reg->listen);
    ngx_hopgate_pgreg_cache_flush(reg);
    ngx_hopgate_pgreg_known_flush(reg);
    ngx_hopgate_pgreg_lookups_free(reg);
    reg->started = 0;
}


static void
ngx_hopgate_pgreg_query_setup(ngx_hopgate_pg_t *pg)
{
    if (ngx_hopgate_pg_query(pg, ngx_hopgate_pgreg_migrations, 0, NULL,
                             NGX_HOPGATE_PG_SIMPLE_QUERY
                             |NGX_HOPGATE_PG_SETUP_QUERY,
                             ngx_hopgate_pgreg_migrated, pg->data)
        == NULL)
    {
        ngx_hopgate_pg_reset(pg, "out of memory");
    }
}


static void
ngx_hopgate_pgreg_migrated(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_t  *reg = data;

    u_char      timeout[NGX_INT_T_LEN + 1];
    ngx_int_t   version;
    const char *values[1];

    if (err) {
        ngx_log_error(NGX_LOG_ERR, reg->query.log, 0,
                      "hopgate: registry schema migration failed: %s", err);
        ngx_hopgate_pg_reset(&reg->query, "schema migration failed");
        return;
    }

    version = 0;
    if (res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        version = ngx_atoi((u_char *) PQgetvalue(res, 0, 0),
                           ngx_strlen(PQgetvalue(res, 0, 0)));
    }

    if (version > NGX_HOPGATE_PG_SCHEMA_VERSION) {
        ngx_log_error(NGX_LOG_WARN, reg->query.log, 0,
                      "hopgate: the registry schema is at version %i, "
                      "newer than this module's %d", version,
                      NGX_HOPGATE_PG_SCHEMA_VERSION);
    }

    /* the server ends a query we gave up on */
    ngx_sprintf(timeout, "%M%Z", reg->query.timeout);
    values[0] = (char *) timeout;

    if (ngx_hopgate_pg_query(&reg->query, ngx_hopgate_pgreg_sql_timeout, 1,
                             values, NGX_HOPGATE_PG_SETUP_QUERY,
                             ngx_hopgate_pgreg_configured, reg)
        == NULL)
    {
        ngx_hopgate_pg_reset(&reg->query, "out of memory");
    }
}


static void
ngx_hopgate_pgreg_configured(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_t  *reg = data;

    if (err) {
        ngx_hopgate_pg_reset(&reg->query, err);
        return;
    }

    ngx_hopgate_pg_ready(&reg->query);
}


static void
ngx_hopgate_pgreg_listen_setup(ngx_hopgate_pg_t *pg)
{
    if (ngx_hopgate_pg_query(pg, "LISTEN " NGX_HOPGATE_PG_CHANNEL, 0, NULL,
                             NGX_HOPGATE_PG_SETUP_QUERY,
                             ngx_hopgate_pgreg_listening, pg->data)
        == NULL)
    {
        ngx_hopgate_pg_reset(pg, "out of memory");
    }
}


static void
ngx_hopgate_pgreg_listening(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_t  *reg = data;

    if (err) {
        ngx_hopgate_pg_reset(&reg->listen, err);
        return;
    }

    /* whatever changed while we were not listening is unknown: ask */
    reg->generation++;
    reg->listening = 1;
    ngx_hopgate_pgreg_known_flush(reg);
    ngx_hopgate_pgreg_revalidate(reg);

    ngx_hopgate_pg_ready(&reg->listen);

    if (!reg->heartbeat.timer_set) {
        ngx_add_timer(&reg->heartbeat, NGX_HOPGATE_PG_HEARTBEAT);
    }
}


/*
 * Back to LISTENing after a gap: a change made meanwhile sent its
 * notification to nobody. Every cached (domain, key) - which includes the
 * keys of this worker's live sessions - is checked again; the cache is not
 * trusted until the answer, and a domain found gone, disabled or with
 * another key has its sessions closed as if notified.
 */
static void
ngx_hopgate_pgreg_revalidate(ngx_hopgate_pgreg_t *reg)
{
    u_char                      *p;
    size_t                       size;
    ngx_queue_t                 *q;
    const char                  *values[1];
    ngx_hopgate_pgreg_cached_t  *e;

    if (ngx_queue_empty(&reg->lru)) {
        return;
    }

    /* a text[] literal: names are hostnames (letters, digits, - _ .) */
    size = sizeof("{}");
    for (q = ngx_queue_head(&reg->lru);
         q != ngx_queue_sentinel(&reg->lru);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_hopgate_pgreg_cached_t, lru);
        size += e->sn.str.len + 1;
    }

    p = ngx_alloc(size, reg->query.log);
    if (p == NULL) {
        ngx_hopgate_pgreg_cache_flush(reg);
        return;
    }

    values[0] = (char *) p;
    *p++ = '{';

    for (q = ngx_queue_head(&reg->lru);
         q != ngx_queue_sentinel(&reg->lru);
         q = ngx_queue_next(q))
    {
        e = ngx_queue_data(q, ngx_hopgate_pgreg_cached_t, lru);
        if (p[-1] != '{') {
            *p++ = ',';
        }
        p = ngx_cpymem(p, e->sn.str.data, e->sn.str.len);
    }

    *p++ = '}';
    *p = '\0';

    reg->revalidating = 1;

    if (ngx_hopgate_pg_query(&reg->query, ngx_hopgate_pgreg_sql_revalidate,
                             1, values, 0, ngx_hopgate_pgreg_revalidated,
                             reg)
        == NULL)
    {
        reg->revalidating = 0;
        ngx_hopgate_pgreg_cache_flush(reg);
    }

    ngx_free((void *) values[0]);
}


static void
ngx_hopgate_pgreg_revalidated(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_t  *reg = data;

    int                          i, n;
    u_char                       stored[32];
    uint32_t                     code;
    ngx_str_t                    domain;
    ngx_uint_t                   j;
    const char                  *hex, *reason;
    ngx_queue_t                 *q, *next;
    ngx_hopgate_pgreg_cached_t  *e;

    reg->revalidating = 0;

    if (err) {
        /* nothing known either way: forget, leave the sessions be */
        ngx_hopgate_pgreg_cache_flush(reg);
        return;
    }

    n = PQntuples(res);

    for (q = ngx_queue_head(&reg->lru);
         q != ngx_queue_sentinel(&reg->lru);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_hopgate_pgreg_cached_t, lru);

        code = HG_CODE_REVOKED;
        reason = "domain unregistered";

        for (i = 0; i < n; i++) {
            if ((size_t) PQgetlength(res, i, 0) != e->sn.str.len
                || ngx_strncmp(PQgetvalue(res, i, 0), e->sn.str.data,
                               e->sn.str.len) != 0)
            {
                continue;
            }

            hex = PQgetvalue(res, i, 1);
            if (ngx_strlen(hex) != 64) {
                break;
            }

            for (j = 0; j < 32; j++) {
                stored[j] = (u_char) (ngx_hextoi((u_char *) hex + 2 * j, 2));
            }

            if (CRYPTO_memcmp(stored, e->hash, 32) != 0) {
                reason = "key rotated: the old key is revoked";

            } else if (PQgetvalue(res, i, 2)[0] == 't') {
                code = HG_CODE_DISABLED;
                reason = "domain disabled";

            } else {
                reason = NULL;
            }

            break;
        }

        if (reason == NULL) {
            continue;
        }

        ngx_log_error(NGX_LOG_NOTICE, reg->query.log, 0,
                      "hopgate: \"%V\" changed while the registry was not "
                      "listening: %s", &e->sn.str, reason);

        domain.len = e->sn.str.len;
        domain.data = ngx_alloc(domain.len, reg->query.log);
        if (domain.data == NULL) {
            continue;
        }

        ngx_memcpy(domain.data, e->sn.str.data, domain.len);
        ngx_hopgate_pgreg_cache_drop(reg, e);
        ngx_hopgate_sessions_revoke(&domain, code, reason);
        ngx_free(domain.data);
    }
}


static void
ngx_hopgate_pgreg_listen_down(ngx_hopgate_pg_t *pg)
{
    ngx_hopgate_pgreg_t  *reg = pg->data;

    reg->listening = 0;
}


/* a quiet LISTEN connection could be dead without our knowing: ask */
static void
ngx_hopgate_pgreg_heartbeat(ngx_event_t *ev)
{
    ngx_hopgate_pgreg_t  *reg = ev->data;

    if (reg->listen.state == NGX_HOPGATE_PG_READY) {
        (void) ngx_hopgate_pg_query(&reg->listen, "SELECT 1", 0, NULL, 0,
                                    ngx_hopgate_pgreg_heartbeat_done, reg);
    }

    ngx_add_timer(&reg->heartbeat, NGX_HOPGATE_PG_HEARTBEAT);
}


static void
ngx_hopgate_pgreg_heartbeat_done(void *data, PGresult *res, const char *err)
{
    /* a failure already reset the connection */
}


/* "<change> <domain>" from the domains table's trigger */
static void
ngx_hopgate_pgreg_notify(ngx_hopgate_pg_t *pg, const char *channel,
    const char *payload)
{
    ngx_hopgate_pgreg_t  *reg = pg->data;

    size_t                       len;
    uint32_t                     code;
    ngx_str_t                    change, domain;
    const char                  *sp, *reason;
    ngx_hopgate_pgreg_known_t   *k;
    ngx_hopgate_pgreg_cached_t  *e;

    sp = ngx_strchr(payload, ' ');
    if (sp == NULL) {
        return;
    }

    change.data = (u_char *) payload;
    change.len = sp - payload;
    domain.data = (u_char *) sp + 1;
    domain.len = ngx_strlen(sp + 1);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pg->log, 0,
                   "hopgate: registry change: %V \"%V\"", &change, &domain);

    reg->generation++;

    e = ngx_hopgate_pgreg_cache_find(reg, domain.data, domain.len);
    if (e) {
        ngx_hopgate_pgreg_cache_drop(reg, e);
    }

    k = (ngx_hopgate_pgreg_known_t *)
        ngx_str_rbtree_lookup(&reg->known, &domain,
                              ngx_crc32_short(domain.data, domain.len));
    if (k) {
        ngx_hopgate_pgreg_known_drop(reg, k);
    }

    len = change.len;

    if (len == sizeof("unregistered") - 1
        && ngx_strncmp(change.data, "unregistered", len) == 0)
    {
        code = HG_CODE_REVOKED;
        reason = "domain unregistered";

    } else if (len == sizeof("rotated") - 1
               && ngx_strncmp(change.data, "rotated", len) == 0)
    {
        code = HG_CODE_REVOKED;
        reason = "key rotated: the old key is revoked";

    } else if (len == sizeof("disabled") - 1
               && ngx_strncmp(change.data, "disabled", len) == 0)
    {
        code = HG_CODE_DISABLED;
        reason = "domain disabled";

    } else {
        return;
    }

    ngx_hopgate_sessions_revoke(&domain, code, reason);
}


/* ---- key checks ---------------------------------------------------------- */

static ngx_int_t
ngx_hopgate_pgreg_check(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data)
{
    u_char                       hash[32];
    ngx_uint_t                   reachable, trusted;
    ngx_hopgate_pgreg_t         *reg = r->backend;
    ngx_hopgate_pgreg_check_t   *ck;
    ngx_hopgate_pgreg_cached_t  *e;

    verdict->rc = NGX_DECLINED;

    if (ngx_hopgate_key_hash(key, hash) != NGX_OK) {
        verdict->code = HG_CODE_INTERNAL;
        verdict->why = "cannot hash the key";
        return NGX_DECLINED;
    }

    reachable = reg->query.state == NGX_HOPGATE_PG_READY;

    e = ngx_hopgate_pgreg_cache_find(reg, domain->data, domain->len);

    if (e) {
        trusted = reachable ? (reg->listening && !reg->revalidating
                               && (ngx_msec_int_t) (e->expires
                                                    - ngx_current_msec) > 0)
                            : 1;

        if (trusted && CRYPTO_memcmp(e->hash, hash, 32) == 0) {
            ngx_queue_remove(&e->lru);
            ngx_queue_insert_head(&reg->lru, &e->lru);
            verdict->rc = NGX_OK;
            return NGX_OK;
        }
    }

    if (reg->query.state == NGX_HOPGATE_PG_DOWN) {
        verdict->code = HG_CODE_REGISTRY_DOWN;
        verdict->why = "registry unavailable";
        return NGX_DECLINED;
    }

    ck = ngx_calloc(sizeof(ngx_hopgate_pgreg_check_t), ngx_cycle->log);
    if (ck == NULL) {
        verdict->code = HG_CODE_INTERNAL;
        verdict->why = "out of memory";
        return NGX_DECLINED;
    }

    ck->reg = reg;
    ck->done = done;
    ck->data = data;
    ngx_memcpy(ck->hash, hash, 32);
    ngx_memcpy(ck->domain, domain->data, domain->len);

    if (ngx_hopgate_pgreg_send_check(ck) != NGX_OK) {
        ngx_free(ck);
        verdict->code = HG_CODE_INTERNAL;
        verdict->why = "out of memory";
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&reg->checks, &ck->link);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_hopgate_pgreg_send_check(ngx_hopgate_pgreg_check_t *ck)
{
    const char  *values[1];

    values[0] = (char *) ck->domain;
    ck->generation = ck->reg->generation;
    ck->sent = ngx_hopgate_now();

    ck->query = ngx_hopgate_pg_query(&ck->reg->query,
                                     ngx_hopgate_pgreg_sql_check, 1, values,
                                     0, ngx_hopgate_pgreg_checked, ck);

    return ck->query ? NGX_OK : NGX_ERROR;
}


static void
ngx_hopgate_pgreg_checked(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_check_t  *ck = data;

    u_char                  stored[32];
    ngx_int_t               hi, lo;
    ngx_uint_t              i;
    const char             *hex;
    ngx_hopgate_pgreg_t    *reg = ck->reg;
    ngx_hopgate_verdict_t   v;

    ck->query = NULL;
    v.rc = NGX_DECLINED;

    if (err) {
        ngx_log_error(NGX_LOG_WARN, reg->query.log, 0,
                      "hopgate: registry check for \"%s\" failed: %s",
                      ck->domain, err);
        v.code = HG_CODE_REGISTRY_DOWN;
        v.why = "registry unavailable";
        goto done;
    }

    if (PQntuples(res) != 1) {
        v.code = HG_CODE_UNKNOWN_DOMAIN;
        v.why = "domain is not registered";
        goto done;
    }

    hex = PQgetvalue(res, 0, 0);

    if (ngx_strlen(hex) != 64) {
        v.code = HG_CODE_INTERNAL;
        v.why = "the registry holds a malformed key hash";
        goto done;
    }

    for (i = 0; i < 32; i++) {
        hi = ngx_hextoi((u_char *) hex + 2 * i, 1);
        lo = ngx_hextoi((u_char *) hex + 2 * i + 1, 1);
        stored[i] = (u_char) (hi * 16 + lo);
    }

    if (CRYPTO_memcmp(stored, ck->hash, 32) != 0) {
        v.code = HG_CODE_BAD_KEY;
        v.why = "the key does not match the domain";
        goto done;
    }

    if (PQgetvalue(res, 0, 1)[0] == 't') {
        v.code = HG_CODE_DISABLED;
        v.why = "domain disabled";
        goto done;
    }

    /*
     * The domain changed while we asked (its notification came first):
     * this answer may predate the change, so ask once more.
     */
    if (ck->generation != reg->generation && !ck->retried) {
        ck->retried = 1;
        if (ngx_hopgate_pgreg_send_check(ck) == NGX_OK) {
            return;
        }
    }

    if (ck->generation == reg->generation) {
        ngx_hopgate_pgreg_cache_put(reg, ck->domain,
                                    ngx_strlen(ck->domain), ck->hash);
    }

    v.rc = NGX_OK;
    v.code = HG_CODE_OK;

done:

    ngx_hopgate_metrics_registry(err ? NGX_ERROR : v.rc, v.code,
                                 ngx_hopgate_now() - ck->sent);

    ngx_queue_remove(&ck->link);
    ck->done(ck->data, &v);
    ngx_free(ck);
}


static void
ngx_hopgate_pgreg_cancel(ngx_hopgate_registry_t *r, void *data)
{
    ngx_queue_t                *q;
    ngx_hopgate_pgreg_t        *reg = r->backend;
    ngx_hopgate_pgreg_check_t  *ck;

    for (q = ngx_queue_head(&reg->checks);
         q != ngx_queue_sentinel(&reg->checks);
         q = ngx_queue_next(q))
    {
        ck = ngx_queue_data(q, ngx_hopgate_pgreg_check_t, link);

        if (ck->data == data) {
            if (ck->query) {
                ngx_hopgate_pg_cancel(ck->query);
            }

            ngx_queue_remove(&ck->link);
            ngx_free(ck);
            return;
        }
    }
}


/* ---- the cache ------------------------------------------------------------ */

static ngx_hopgate_pgreg_cached_t *
ngx_hopgate_pgreg_cache_find(ngx_hopgate_pgreg_t *reg, u_char *domain,
    size_t len)
{
    ngx_str_t  name;

    name.data = domain;
    name.len = len;

    return (ngx_hopgate_pgreg_cached_t *)
           ngx_str_rbtree_lookup(&reg->cache, &name,
                                 ngx_crc32_short(domain, len));
}


static void
ngx_hopgate_pgreg_cache_put(ngx_hopgate_pgreg_t *reg, u_char *domain,
    size_t len, u_char *hash)
{
    ngx_queue_t                 *q;
    ngx_hopgate_pgreg_cached_t  *e;

    if (reg->hmcf->registry_cache_ttl == 0 || len > NGX_HOPGATE_DOMAIN_MAX) {
        return;
    }

    e = ngx_hopgate_pgreg_cache_find(reg, domain, len);

    if (e == NULL) {
        if (reg->ncached >= NGX_HOPGATE_PG_CACHE_MAX) {
            q = ngx_queue_last(&reg->lru);
            ngx_hopgate_pgreg_cache_drop(reg,
                ngx_queue_data(q, ngx_hopgate_pgreg_cached_t, lru));
        }

        e = ngx_calloc(sizeof(ngx_hopgate_pgreg_cached_t), ngx_cycle->log);
        if (e == NULL) {
            return;
        }

        ngx_memcpy(e->name, domain, len);
        e->sn.str.data = e->name;
        e->sn.str.len = len;
        e->sn.node.key = ngx_crc32_short(domain, len);
        ngx_rbtree_insert(&reg->cache, &e->sn.node);
        reg->ncached++;

    } else {
        ngx_queue_remove(&e->lru);
    }

    ngx_queue_insert_head(&reg->lru, &e->lru);
    ngx_memcpy(e->hash, hash, 32);
    e->expires = ngx_current_msec + reg->hmcf->registry_cache_ttl;
}


static void
ngx_hopgate_pgreg_cache_drop(ngx_hopgate_pgreg_t *reg,
    ngx_hopgate_pgreg_cached_t *e)
{
    ngx_rbtree_delete(&reg->cache, &e->sn.node);
    ngx_queue_remove(&e->lru);
    ngx_free(e);
    reg->ncached--;
}


static void
ngx_hopgate_pgreg_cache_flush(ngx_hopgate_pgreg_t *reg)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&reg->lru)) {
        q = ngx_queue_head(&reg->lru);
        ngx_hopgate_pgreg_cache_drop(reg,
            ngx_queue_data(q, ngx_hopgate_pgreg_cached_t, lru));
    }
}


/* ---- is a domain registered? ------------------------------------------- */

static ngx_int_t
ngx_hopgate_pgreg_lookup(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_hopgate_lookup_pt done, void *data)
{
    ngx_uint_t                   trusted;
    const char                  *values[1];
    ngx_queue_t                 *q;
    ngx_hopgate_pgreg_t         *reg = r->backend;
    ngx_hopgate_pgreg_known_t   *k;
    ngx_hopgate_pgreg_cached_t  *e;
    ngx_hopgate_pgreg_lookup_t  *lk;
    ngx_hopgate_pgreg_waiter_t  *w;

    if (domain->len > NGX_HOPGATE_DOMAIN_MAX) {
        return NGX_DECLINED;
    }

    /*
     * Answers are trusted as keys are: while every change is heard, or
     * while the database is unreachable (then nothing changes in it);
     * in that case only a registered domain is known, the others wait.
     */
    if (reg->query.state != NGX_HOPGATE_PG_READY) {
        trusted = 1;

    } else {
        trusted = reg->listening && !reg->revalidating;
    }

    e = ngx_hopgate_pgreg_cache_find(reg, domain->data, domain->len);

    if (e && trusted) {
        return NGX_OK;
    }

    k = (ngx_hopgate_pgreg_known_t *)
        ngx_str_rbtree_lookup(&reg->known, domain,
                              ngx_crc32_short(domain->data, domain->len));

    if (k && trusted
        && (reg->query.state != NGX_HOPGATE_PG_READY
            || (ngx_msec_int_t) (k->expires - ngx_current_msec) > 0))
    {
        if (k->registered) {
            return NGX_OK;
        }

        if (reg->query.state == NGX_HOPGATE_PG_READY) {
            return NGX_DECLINED;
        }
    }

    if (reg->query.state == NGX_HOPGATE_PG_DOWN) {
        return NGX_ERROR;
    }

    w = ngx_alloc(sizeof(ngx_hopgate_pgreg_waiter_t), ngx_cycle->log);
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->done = done;
    w->data = data;

    /* one query per domain, however many requests wait for it */
    for (q = ngx_queue_head(&reg->lookups);
         q != ngx_queue_sentinel(&reg->lookups);
         q = ngx_queue_next(q))
    {
        lk = ngx_queue_data(q, ngx_hopgate_pgreg_lookup_t, link);

        if (lk->len == domain->len
            && ngx_memcmp(lk->domain, domain->data, domain->len) == 0)
        {
            ngx_queue_insert_tail(&lk->waiters, &w->link);
            return NGX_AGAIN;
        }
    }

    if (reg->nlookups >= NGX_HOPGATE_PG_LOOKUPS) {
        ngx_free(w);
        return NGX_ERROR;
    }

    lk = ngx_calloc(sizeof(ngx_hopgate_pgreg_lookup_t), ngx_cycle->log);
    if (lk == NULL) {
        ngx_free(w);
        return NGX_ERROR;
    }

    lk->reg = reg;
    lk->generation = reg->generation;
    lk->len = domain->len;
    ngx_memcpy(lk->domain, domain->data, domain->len);
    ngx_queue_init(&lk->waiters);

    values[0] = (char *) lk->domain;

    lk->query = ngx_hopgate_pg_query(&reg->query, ngx_hopgate_pgreg_sql_lookup,
                                     1, values, 0,
                                     ngx_hopgate_pgreg_looked_up, lk);
    if (lk->query == NULL) {
        ngx_free(lk);
        ngx_free(w);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&lk->waiters, &w->link);
    ngx_queue_insert_tail(&reg->lookups, &lk->link);
    reg->nlookups++;

    return NGX_AGAIN;
}


static void
ngx_hopgate_pgreg_looked_up(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_lookup_t  *lk = data;

    ngx_int_t                    rc;
    ngx_queue_t                 *q;
    ngx_hopgate_pgreg_t         *reg = lk->reg;
    ngx_hopgate_pgreg_waiter_t  *w;

    if (err) {
        ngx_log_error(NGX_LOG_WARN, reg->query.log, 0,
                      "hopgate: registry lookup of \"%s\" failed: %s",
                      lk->domain, err);
        rc = NGX_ERROR;

    } else {
        rc = PQntuples(res) ? NGX_OK : NGX_DECLINED;

        /* an answer older than a change to the domain is not kept */
        if (lk->generation == reg->generation) {
            ngx_hopgate_pgreg_known_put(reg, lk->domain, lk->len,
                                        rc == NGX_OK);
        }
    }

    ngx_queue_remove(&lk->link);
    reg->nlookups--;

    while (!ngx_queue_empty(&lk->waiters)) {
        q = ngx_queue_head(&lk->waiters);
        ngx_queue_remove(q);
        w = ngx_queue_data(q, ngx_hopgate_pgreg_waiter_t, link);
        w->done(w->data, rc);
        ngx_free(w);
    }

    ngx_free(lk);
}


static void
ngx_hopgate_pgreg_lookup_cancel(ngx_hopgate_registry_t *r, void *data)
{
    ngx_queue_t                 *q, *wq;
    ngx_hopgate_pgreg_t         *reg = r->backend;
    ngx_hopgate_pgreg_lookup_t  *lk;
    ngx_hopgate_pgreg_waiter_t  *w;

    for (q = ngx_queue_head(&reg->lookups);
         q != ngx_queue_sentinel(&reg->lookups);
         q = ngx_queue_next(q))
    {
        lk = ngx_queue_data(q, ngx_hopgate_pgreg_lookup_t, link);

        for (wq = ngx_queue_head(&lk->waiters);
             wq != ngx_queue_sentinel(&lk->waiters);
             wq = ngx_queue_next(wq))
        {
            w = ngx_queue_data(wq, ngx_hopgate_pgreg_waiter_t, link);

            if (w->data != data) {
                continue;
            }

            ngx_queue_remove(wq);
            ngx_free(w);

            /* the query runs on; its answer is still worth keeping */
            return;
        }
    }
}


/* the worker exits: the queries are gone, their waiters hear nothing */
static void
ngx_hopgate_pgreg_lookups_free(ngx_hopgate_pgreg_t *reg)
{
    ngx_queue_t                 *q, *wq;
    ngx_hopgate_pgreg_lookup_t  *lk;

    while (!ngx_queue_empty(&reg->lookups)) {
        q = ngx_queue_head(&reg->lookups);
        ngx_queue_remove(q);
        lk = ngx_queue_data(q, ngx_hopgate_pgreg_lookup_t, link);

        while (!ngx_queue_empty(&lk->waiters)) {
            wq = ngx_queue_head(&lk->waiters);
            ngx_queue_remove(wq);
            ngx_free(ngx_queue_data(wq, ngx_hopgate_pgreg_waiter_t, link));
        }

        ngx_free(lk);
    }

    reg->nlookups = 0;
}


static void
ngx_hopgate_pgreg_known_put(ngx_hopgate_pgreg_t *reg, u_char *domain,
    size_t len, ngx_uint_t registered)
{
    ngx_str_t                   name;
    ngx_queue_t                *q;
    ngx_hopgate_pgreg_known_t  *k;

    if (reg->hmcf->registry_cache_ttl == 0) {
        return;
    }

    name.data = domain;
    name.len = len;

    k = (ngx_hopgate_pgreg_known_t *)
        ngx_str_rbtree_lookup(&reg->known, &name,
                              ngx_crc32_short(domain, len));

    if (k == NULL) {
        if (reg->nknown >= NGX_HOPGATE_PG_CACHE_MAX) {
            q = ngx_queue_last(&reg->known_lru);
            ngx_hopgate_pgreg_known_drop(reg,
                ngx_queue_data(q, ngx_hopgate_pgreg_known_t, lru));
        }

        k = ngx_calloc(sizeof(ngx_hopgate_pgreg_known_t), ngx_cycle->log);
        if (k == NULL) {
            return;
        }

        ngx_memcpy(k->name, domain, len);
        k->sn.str.data = k->name;
        k->sn.str.len = len;
        k->sn.node.key = ngx_crc32_short(domain, len);
        ngx_rbtree_insert(&reg->known, &k->sn.node);
        reg->nknown++;

    } else {
        ngx_queue_remove(&k->lru);
    }

    ngx_queue_insert_head(&reg->known_lru, &k->lru);
    k->registered = registered;
    k->expires = ngx_current_msec + reg->hmcf->registry_cache_ttl;
}


static void
ngx_hopgate_pgreg_known_drop(ngx_hopgate_pgreg_t *reg,
    ngx_hopgate_pgreg_known_t *k)
{
    ngx_rbtree_delete(&reg->known, &k->sn.node);
    ngx_queue_remove(&k->lru);
    ngx_free(k);
    reg->nknown--;
}


static void
ngx_hopgate_pgreg_known_flush(ngx_hopgate_pgreg_t *reg)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&reg->known_lru)) {
        q = ngx_queue_head(&reg->known_lru);
        ngx_hopgate_pgreg_known_drop(reg,
            ngx_queue_data(q, ngx_hopgate_pgreg_known_t, lru));
    }
}


/* ---- the admin API ------------------------------------------------------ */

static ngx_int_t
ngx_hopgate_pgreg_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call)
{
    int                        n;
    u_char                     hex[65], domain[NGX_HOPGATE_DOMAIN_MAX + 1];
    u_char                    *memo;
    const char                *sql, *values[3];
    ngx_hopgate_pgreg_t       *reg = r->backend;
    ngx_hopgate_pgreg_call_t  *pc;

    if (reg->query.state == NGX_HOPGATE_PG_DOWN) {
        call->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        call->error = "registry unavailable";
        return NGX_OK;
    }

    ngx_cpystrn(domain, call->domain.data,
                ngx_min(call->domain.len + 1, sizeof(domain)));
    ngx_hex_dump(hex, call->key_hash, 32);
    hex[64] = '\0';

    memo = ngx_pnalloc(call->pool, call->memo.len + 1);
    if (memo == NULL) {
        return NGX_ERROR;
    }
    ngx_cpystrn(memo, call->memo.data, call->memo.len + 1);

    values[0] = (char *) domain;
    values[1] = (char *) hex;
    values[2] = (char *) memo;

    switch (call->op) {

    case NGX_HOPGATE_ADMIN_LIST:
        sql = ngx_hopgate_pgreg_sql_list;
        n = 0;
        break;

    case NGX_HOPGATE_ADMIN_REGISTER:
        sql = ngx_hopgate_pgreg_sql_register;
        n = 3;
        break;

    case NGX_HOPGATE_ADMIN_UNREGISTER:
        sql = ngx_hopgate_pgreg_sql_unregister;
        n = 2;
        break;

    case NGX_HOPGATE_ADMIN_ROTATE:
        sql = ngx_hopgate_pgreg_sql_rotate;
        n = 2;
        break;

    default: /* disable, enable */
        sql = ngx_hopgate_pgreg_sql_disable;
        values[1] = call->op == NGX_HOPGATE_ADMIN_DISABLE ? "true" : "false";
        n = 2;
        break;
    }

    pc = ngx_pcalloc(call->pool, sizeof(ngx_hopgate_pgreg_call_t));
    if (pc == NULL) {
        return NGX_ERROR;
    }

    pc->reg = reg;
    pc->call = call;
    pc->query = ngx_hopgate_pg_query(&reg->query, sql, n, values, 0,
                                     ngx_hopgate_pgreg_answered, pc);
    if (pc->query == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&reg->calls, &pc->link);

    return NGX_AGAIN;
}


static ngx_int_t
ngx_hopgate_pgreg_value(ngx_pool_t *pool, PGresult *res, int row, int col,
    ngx_str_t *out)
{
    out->len = PQgetlength(res, row, col);
    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, PQgetvalue(res, row, col), out->len + 1);

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_pgreg_rows(ngx_hopgate_admin_call_t *call, PGresult *res)
{
    int                       i, n;
    ngx_hopgate_admin_row_t  *row;

    n = PQntuples(res);

    call->rows = ngx_array_create(call->pool, n ? n : 1,
                                  sizeof(ngx_hopgate_admin_row_t));
    if (call->rows == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        row = ngx_array_push(call->rows);
        if (row == NULL
            || ngx_hopgate_pgreg_value(call->pool, res, i, 0, &row->domain)
               != NGX_OK
            || ngx_hopgate_pgreg_value(call->pool, res, i, 1, &row->memo)
               != NGX_OK
            || ngx_hopgate_pgreg_value(call->pool, res, i, 2, &row->created)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        row->disabled = PQgetvalue(res, i, 3)[0] == 't';
    }

    return NGX_OK;
}


static void
ngx_hopgate_pgreg_answered(void *data, PGresult *res, const char *err)
{
    ngx_hopgate_pgreg_call_t  *pc = data;

    ngx_hopgate_admin_call_t  *call = pc->call;

    ngx_queue_remove(&pc->link);
    pc->query = NULL;

    call->status = NGX_HTTP_OK;

    if (err) {
        ngx_log_error(NGX_LOG_ERR, pc->reg->query.log, 0,
                      "hopgate: admin call on \"%V\" failed: %s",
                      &call->domain, err);
        call->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        call->error = "registry unavailable";
        goto done;
    }

    switch (call->op) {

    case NGX_HOPGATE_ADMIN_LIST:
        if (ngx_hopgate_pgreg_rows(call, res) != NGX_OK) {
            call->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
            call->error = "out of memory";
        }
        break;

    case NGX_HOPGATE_ADMIN_REGISTER:
        if (PQntuples(res) == 0) {
            call->status = NGX_HTTP_CONFLICT;
            call->error = "domain is already registered";
        }
        break;

    case NGX_HOPGATE_ADMIN_UNREGISTER:
        if (PQgetvalue(res, 0, 0)[0] == '0') {
            call->status = NGX_HTTP_NOT_FOUND;
            call->error = "domain is not registered";

        } else if (PQgetvalue(res, 0, 1)[0] == '0') {
            call->status = NGX_HTTP_FORBIDDEN;
            call->error = "client_api_key does not match the domain";
        }
        break;

    default: /* rotate, disable, enable */
        if (PQntuples(res) == 0) {
            call->status = NGX_HTTP_NOT_FOUND;
            call->error = "domain is not registered";
        }
        break;
    }

done:

    call->done(call);
}


static void
ngx_hopgate_pgreg_admin_cancel(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call)
{
    ngx_queue_t               *q;
    ngx_hopgate_pgreg_t       *reg = r->backend;
    ngx_hopgate_pgreg_call_t  *pc;

    for (q = ngx_queue_head(&reg->calls);
         q != ngx_queue_sentinel(&reg->calls);
         q = ngx_queue_next(q))
    {
        pc = ngx_queue_data(q, ngx_hopgate_pgreg_call_t, link);

        if (pc->call == call) {
            if (pc->query) {
                /* a change already sent still happens; nobody hears */
                ngx_hopgate_pg_cancel(pc->query);
            }

            ngx_queue_remove(&pc->link);
            return;
        }
    }
}
