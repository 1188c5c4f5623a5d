/*
 * The registry interface: choosing a backend from the directive, and what
 * every backend shares (domain names, key hashes).
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/evp.h>

#include "ngx_http_hopgate_module.h"
#include "ngx_hopgate_registry.h"


ngx_hopgate_registry_t *
ngx_hopgate_registry_create(ngx_conf_t *cf, ngx_str_t *spec)
{
    ngx_str_t                path;
    ngx_hopgate_registry_t  *reg;

    reg = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_registry_t));
    if (reg == NULL) {
        return NULL;
    }

    reg->spec = *spec;

    if (spec->len > sizeof("file:") - 1
        && ngx_strncmp(spec->data, "file:", sizeof("file:") - 1) == 0)
    {
        path.data = spec->data + sizeof("file:") - 1;
        path.len = spec->len - (sizeof("file:") - 1);

        reg->ops = &ngx_hopgate_registry_file_ops;
        reg->backend = ngx_hopgate_registry_file_create(cf, &path);

        return reg->backend ? reg : NULL;
    }

    if ((spec->len > sizeof("postgresql://") - 1
         && ngx_strncmp(spec->data, "postgresql://",
                        sizeof("postgresql://") - 1) == 0)
        || (spec->len > sizeof("postgres://") - 1
            && ngx_strncmp(spec->data, "postgres://",
                           sizeof("postgres://") - 1) == 0)
        || ngx_strlchr(spec->data, spec->data + spec->len, '=') != NULL)
    {
        reg->ops = &ngx_hopgate_registry_pg_ops;
        reg->backend = ngx_hopgate_registry_pg_create(cf, spec);

        return reg->backend ? reg : NULL;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"hopgate_registry\" must be \"file:PATH\" or a "
                       "PostgreSQL connection string (\"postgresql://...\" "
                       "or \"host=... dbname=...\"), not \"%V\"", spec);

    return NULL;
}


ngx_int_t
ngx_hopgate_registry_lookup(ngx_hopgate_registry_t *reg, ngx_str_t *domain,
    ngx_hopgate_lookup_pt done, void *data)
{
    if (reg->ops->lookup == NULL) {
        return NGX_ERROR;
    }

    return reg->ops->lookup(reg, domain, done, data);
}


void
ngx_hopgate_registry_lookup_cancel(ngx_hopgate_registry_t *reg, void *data)
{
    if (reg->ops->lookup_cancel) {
        reg->ops->lookup_cancel(reg, data);
    }
}


/*
 * Lower case, no trailing dot, no ":port"; letters, digits, hyphens,
 * underscores and dots only, labels of 1 to 63 characters. IDNA names
 * arrive as punycode ("xn--...") and pass as they are.
 */
ngx_int_t
ngx_hopgate_domain_normalize(ngx_str_t *in, u_char *out, size_t *outlen)
{
    size_t   i, n, label;
    u_char   ch;

    n = in->len;

    for (i = 0; i < n; i++) {
        if (in->data[i] == ':') {
            n = i;
            break;
        }
    }

    if (n > 0 && in->data[n - 1] == '.') {
        n--;
    }

    if (n == 0 || n > NGX_HOPGATE_DOMAIN_MAX) {
        return NGX_ERROR;
    }

    label = 0;

    for (i = 0; i < n; i++) {
        ch = ngx_tolower(in->data[i]);

        if (ch == '.') {
            if (label == 0) {
                return NGX_ERROR;
            }
            label = 0;

        } else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                   || ch == '-' || ch == '_')
        {
            if (++label > 63) {
                return NGX_ERROR;
            }

        } else {
            return NGX_ERROR;
        }

        out[i] = ch;
    }

    if (label == 0) {
        return NGX_ERROR;
    }

    out[n] = '\0';
    *outlen = n;

    return NGX_OK;
}


ngx_int_t
ngx_hopgate_key_hash(ngx_str_t *key, u_char out[32])
{
    unsigned  len;

    if (EVP_Digest(key->data, key->len, out, &len, EVP_sha256(), NULL) != 1
        || len != 32)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
