/*
 * The registry: which domains exist and whether a key opens one. Backends
 * (the file registry, PostgreSQL) implement one interface; a check may
 * answer at once or later (a database round trip), and a backend may
 * revoke a domain's live sessions when its key stops being valid.
 */

#ifndef NGX_HOPGATE_REGISTRY_H
#define NGX_HOPGATE_REGISTRY_H

#include <ngx_config.h>
#include <ngx_core.h>


typedef struct ngx_hopgate_registry_s  ngx_hopgate_registry_t;

/* the answer to a key check */
typedef struct {
    ngx_int_t                    rc;         /* NGX_OK or NGX_DECLINED */
    uint32_t                     code;       /* HG_CODE_* when declined */
    const char                  *why;        /* static text */
} ngx_hopgate_verdict_t;

typedef void (*ngx_hopgate_verdict_pt)(void *data,
    ngx_hopgate_verdict_t *verdict);

/* the answer to a lookup: NGX_OK, NGX_DECLINED or NGX_ERROR, see below */
typedef void (*ngx_hopgate_lookup_pt)(void *data, ngx_int_t rc);

/* an admin API call, answered by the backend */
typedef enum {
    NGX_HOPGATE_ADMIN_LIST = 0,
    NGX_HOPGATE_ADMIN_REGISTER,
    NGX_HOPGATE_ADMIN_UNREGISTER,
    NGX_HOPGATE_ADMIN_ROTATE,
    NGX_HOPGATE_ADMIN_DISABLE,
    NGX_HOPGATE_ADMIN_ENABLE
} ngx_hopgate_admin_op_e;

/* a domain as listed */
typedef struct {
    ngx_str_t                    domain;
    ngx_str_t                    memo;
    ngx_str_t                    created;    /* ISO 8601, UTC; may be empty */
    ngx_uint_t                   disabled;
} ngx_hopgate_admin_row_t;

typedef struct ngx_hopgate_admin_call_s  ngx_hopgate_admin_call_t;

typedef void (*ngx_hopgate_admin_pt)(ngx_hopgate_admin_call_t *call);

struct ngx_hopgate_admin_call_s {
    ngx_hopgate_admin_op_e       op;
    ngx_str_t                    domain;     /* normalised */
    ngx_str_t                    memo;
    u_char                       key_hash[32];   /* register, rotate: of
                                                    the new key; unregister:
                                                    of the key given */
    ngx_pool_t                  *pool;       /* for the rows */
    ngx_hopgate_admin_pt         done;
    void                        *data;

    /* the answer */
    ngx_uint_t                   status;     /* HTTP: 200, 404, 409, ... */
    const char                  *error;      /* static text, status >= 400 */
    ngx_array_t                 *rows;       /* list: admin_row_t */
};

typedef struct {
    const char                  *name;

    /* in each worker; the backend may open connections, set timers */
    ngx_int_t                  (*init_process)(ngx_hopgate_registry_t *reg,
                                               ngx_cycle_t *cycle);
    void                       (*exit_process)(ngx_hopgate_registry_t *reg);

    /*
     * domain is normalised, key is the text the agent sent. NGX_OK or
     * NGX_DECLINED with *verdict filled now, or NGX_AGAIN: `done` is
     * called later with `data` (never from within this call), unless
     * cancel(data) comes first.
     */
    ngx_int_t                  (*check)(ngx_hopgate_registry_t *reg,
                                        ngx_str_t *domain, ngx_str_t *key,
                                        ngx_hopgate_verdict_t *verdict,
                                        ngx_hopgate_verdict_pt done,
                                        void *data);
    void                       (*cancel)(ngx_hopgate_registry_t *reg,
                                         void *data);

    /*
     * The admin API. NGX_OK: the answer is in *call now; NGX_AGAIN:
     * call->done(call) comes later (never from within this call), unless
     * admin_cancel(call) comes first. NULL: the backend has no admin API.
     */
    ngx_int_t                  (*admin)(ngx_hopgate_registry_t *reg,
                                        ngx_hopgate_admin_call_t *call);
    void                       (*admin_cancel)(ngx_hopgate_registry_t *reg,
                                               ngx_hopgate_admin_call_t *call);

    /*
     * Whether a domain (normalised) is registered, for a request that
     * found no session: NGX_OK yes (disabled domains too), NGX_DECLINED
     * no, NGX_ERROR not known now (the store is unreachable, or busy), or
     * NGX_AGAIN: `done` is called later with one of the three and `data`
     * (never from within this call), unless lookup_cancel(data) comes
     * first. NULL: never known.
     */
    ngx_int_t                  (*lookup)(ngx_hopgate_registry_t *reg,
                                         ngx_str_t *domain,
                                         ngx_hopgate_lookup_pt done,
                                         void *data);
    void                       (*lookup_cancel)(ngx_hopgate_registry_t *reg,
                                                void *data);
} ngx_hopgate_registry_ops_t;

struct ngx_hopgate_registry_s {
    const ngx_hopgate_registry_ops_t  *ops;
    void                              *backend;
    ngx_str_t                          spec;
};


/* "file:PATH", or a PostgreSQL URI or key=value string */
ngx_hopgate_registry_t *ngx_hopgate_registry_create(ngx_conf_t *cf,
    ngx_str_t *spec);

/* lower case, no trailing dot or :port, hostname characters only */
ngx_int_t ngx_hopgate_domain_normalize(ngx_str_t *in, u_char *out,
    size_t *outlen);

/* the lookup of any backend (NGX_ERROR for one without) */
ngx_int_t ngx_hopgate_registry_lookup(ngx_hopgate_registry_t *reg,
    ngx_str_t *domain, ngx_hopgate_lookup_pt done, void *data);
void ngx_hopgate_registry_lookup_cancel(ngx_hopgate_registry_t *reg,
    void *data);

/* SHA-256 of the key text, as stored */
ngx_int_t ngx_hopgate_key_hash(ngx_str_t *key, u_char out[32]);

/* the file backend (ngx_hopgate_registry_file.c) */
extern const ngx_hopgate_registry_ops_t  ngx_hopgate_registry_file_ops;
void *ngx_hopgate_registry_file_create(ngx_conf_t *cf, ngx_str_t *path);

/* the PostgreSQL backend (ngx_hopgate_registry_pg.c) */
extern const ngx_hopgate_registry_ops_t  ngx_hopgate_registry_pg_ops;
void *ngx_hopgate_registry_pg_create(ngx_conf_t *cf, ngx_str_t *conninfo);

/*
 * The DNS gate (ngx_hopgate_dnsgate.c): wraps a registry; a domain must
 * first resolve to one of the expected addresses.
 */
extern const ngx_hopgate_registry_ops_t  ngx_hopgate_dnsgate_ops;

/*
 * Implemented by the module for backends: close this worker's live
 * sessions of a domain (its key was revoked, rotated or disabled).
 */
void ngx_hopgate_sessions_revoke(ngx_str_t *domain, uint32_t code,
    const char *reason);

#endif /* NGX_HOPGATE_REGISTRY_H */
