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

/* SHA-256 of the key text, as stored */
ngx_int_t ngx_hopgate_key_hash(ngx_str_t *key, u_char out[32]);

/* the file backend (ngx_hopgate_registry_file.c) */
extern const ngx_hopgate_registry_ops_t  ngx_hopgate_registry_file_ops;
void *ngx_hopgate_registry_file_create(ngx_conf_t *cf, ngx_str_t *path);

/*
 * Implemented by the module for backends: close this worker's live
 * sessions of a domain (its key was revoked, rotated or disabled).
 */
void ngx_hopgate_sessions_revoke(ngx_str_t *domain, uint32_t code,
    const char *reason);

#endif /* NGX_HOPGATE_REGISTRY_H */
