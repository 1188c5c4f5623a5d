/*
 * The registry: which domains exist and the SHA-256 of each one's client
 * key. `hopgate_registry file:PATH` reads one "domain hex-sha256" line per
 * domain (comments and blank lines allowed) and re-reads the file when it
 * changes; keys are compared by hash, in constant time.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_REGISTRY_RECHECK  1000      /* ms between stat() */


typedef struct {
    ngx_str_t                    domain;
    u_char                       hash[32];
} ngx_hopgate_entry_t;


struct ngx_hopgate_registry_s {
    ngx_str_t                    path;
    ngx_hopgate_entry_t         *entries;       /* sorted by domain */
    ngx_uint_t                   nentries;
    u_char                      *text;          /* the entries' names */
    time_t                       mtime;
    off_t                        size;
    ngx_msec_t                   checked;
};


static ngx_int_t ngx_hopgate_registry_load(ngx_hopgate_registry_t *reg,
    ngx_log_t *log, u_char *err, size_t errlen);


/* ---- domains -------------------------------------------------------------- */

/*
 * Lower case, no trailing dot, no ":port"; letters, digits, hyphens and
 * dots only, labels of 1 to 63 characters. IDNA names arrive as punycode
 * ("xn--...") and pass as they are.
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


/* ---- the file registry ------------------------------------------------- */

ngx_hopgate_registry_t *
ngx_hopgate_registry_create(ngx_conf_t *cf, ngx_str_t *spec)
{
    u_char                   err[512];
    ngx_hopgate_registry_t  *reg;

    if (spec->len <= sizeof("file:") - 1
        || ngx_strncmp(spec->data, "file:", sizeof("file:") - 1) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_registry\" must be \"file:PATH\", "
                           "not \"%V\"", spec);
        return NULL;
    }

    reg = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_registry_t));
    if (reg == NULL) {
        return NULL;
    }

    reg->path.data = spec->data + sizeof("file:") - 1;
    reg->path.len = spec->len - (sizeof("file:") - 1);

    if (ngx_conf_full_name(cf->cycle, &reg->path, 1) != NGX_OK) {
        return NULL;
    }

    /* a broken registry fails `nginx -t`, with the line that is wrong */
    if (ngx_hopgate_registry_load(reg, cf->log, err, sizeof(err))
        != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"hopgate_registry\": %s",
                           err);
        return NULL;
    }

    return reg;
}


static int
ngx_hopgate_entry_cmp(const void *a, const void *b)
{
    const ngx_hopgate_entry_t  *x = a, *y = b;
    ngx_int_t                   rc;

    rc = ngx_memn2cmp(x->domain.data, y->domain.data, x->domain.len,
                      y->domain.len);

    return rc < 0 ? -1 : (rc > 0 ? 1 : 0);
}


static ngx_int_t
ngx_hopgate_hex32(u_char *hex, size_t len, u_char *out)
{
    size_t     i;
    ngx_int_t  hi, lo;

    if (len != 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < 32; i++) {
        hi = ngx_hextoi(hex + 2 * i, 1);
        lo = ngx_hextoi(hex + 2 * i + 1, 1);
        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_ERROR;
        }
        out[i] = (u_char) (hi * 16 + lo);
    }

    return NGX_OK;
}


/* parse "domain hash" lines into a new table; the old one stays on error */
static ngx_int_t
ngx_hopgate_registry_parse(ngx_hopgate_registry_t *reg, u_char *text,
    size_t size, u_char *err, size_t errlen)
{
    u_char               *p, *end, *eol, *dom, *hash, *name;
    size_t                dlen, hlen, nlen;
    ngx_uint_t            line, n, cap;
    ngx_str_t             raw;
    ngx_hopgate_entry_t  *entries, *e;

    cap = 16;
    entries = ngx_alloc(cap * sizeof(ngx_hopgate_entry_t), ngx_cycle->log);
    if (entries == NULL) {
        return NGX_ERROR;
    }

    n = 0;
    line = 0;
    name = text;    /* names are written over the text, which only shrinks */
    end = text + size;

    for (p = text; p < end; p = eol + 1) {
        line++;

        eol = ngx_strlchr(p, end, '\n');
        if (eol == NULL) {
            eol = end;
        }

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == eol || *p == '#' || *p == '\r') {
            continue;
        }

        dom = p;
        while (p < eol && *p != ' ' && *p != '\t') {
            p++;
        }
        dlen = p - dom;

        while (p < eol && (*p == ' ' || *p == '\t')) {
            p++;
        }

        hash = p;
        while (p < eol && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }
        hlen = p - hash;

        while (p < eol && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (n == cap) {
            cap *= 2;
            e = ngx_alloc(cap * sizeof(ngx_hopgate_entry_t), ngx_cycle->log);
            if (e == NULL) {
                ngx_free(entries);
                return NGX_ERROR;
            }
            ngx_memcpy(e, entries, n * sizeof(ngx_hopgate_entry_t));
            ngx_free(entries);
            entries = e;
        }

        e = &entries[n];
        raw.data = dom;
        raw.len = dlen;

        if (hlen == 0 || p != eol
            || ngx_hopgate_hex32(hash, hlen, e->hash) != NGX_OK)
        {
            ngx_snprintf(err, errlen, "%V:%ui: expected \"domain "
                         "sha256-hex\" (64 hex digits)%Z", &reg->path, line);
            ngx_free(entries);
            return NGX_ERROR;
        }

        if (ngx_hopgate_domain_normalize(&raw, name, &nlen) != NGX_OK) {
            ngx_snprintf(err, errlen, "%V:%ui: \"%*s\" is not a domain name%Z",
                         &reg->path, line, dlen, dom);
            ngx_free(entries);
            return NGX_ERROR;
        }

        e->domain.data = name;
        e->domain.len = nlen;
        name += nlen + 1;
        n++;
    }

    ngx_qsort(entries, n, sizeof(ngx_hopgate_entry_t), ngx_hopgate_entry_cmp);

    if (reg->entries) {
        ngx_free(reg->entries);
    }

    reg->entries = entries;
    reg->nentries = n;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_registry_load(ngx_hopgate_registry_t *reg, ngx_log_t *log,
    u_char *err, size_t errlen)
{
    u_char           *text;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(reg->path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_snprintf(err, errlen, "cannot open \"%V\": %s%Z", &reg->path,
                     strerror(ngx_errno));
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 64 * 1024 * 1024)
    {
        ngx_snprintf(err, errlen, "cannot read \"%V\" (over 64m?)%Z",
                     &reg->path);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    text = ngx_alloc(ngx_file_size(&fi) + 1, log);
    if (text == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = read(fd, text, ngx_file_size(&fi));
    ngx_close_file(fd);

    if (n != ngx_file_size(&fi)) {
        ngx_snprintf(err, errlen, "short read of \"%V\"%Z", &reg->path);
        ngx_free(text);
        return NGX_ERROR;
    }

    if (ngx_hopgate_registry_parse(reg, text, (size_t) n, err, errlen)
        != NGX_OK)
    {
        ngx_free(text);
        return NGX_ERROR;
    }

    if (reg->text) {
        ngx_free(reg->text);
    }

    reg->text = text;
    reg->mtime = ngx_file_mtime(&fi);
    reg->size = ngx_file_size(&fi);

    return NGX_OK;
}


/* re-reads the file when it changed, at most once a second */
static void
ngx_hopgate_registry_refresh(ngx_hopgate_registry_t *reg, ngx_log_t *log)
{
    u_char           err[512];
    ngx_file_info_t  fi;

    if (ngx_current_msec - reg->checked < NGX_HOPGATE_REGISTRY_RECHECK
        && reg->checked != 0)
    {
        return;
    }

    reg->checked = ngx_current_msec;

    if (ngx_file_info(reg->path.data, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "hopgate: registry \"%V\" is unreadable, keeping the "
                      "last good copy", &reg->path);
        return;
    }

    if (ngx_file_mtime(&fi) == reg->mtime && ngx_file_size(&fi) == reg->size)
    {
        return;
    }

    if (ngx_hopgate_registry_load(reg, log, err, sizeof(err)) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "hopgate: registry not reloaded: %s", err);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "hopgate: registry \"%V\" reloaded, %ui domains",
                  &reg->path, reg->nentries);
}


ngx_int_t
ngx_hopgate_registry_check(ngx_hopgate_registry_t *reg, ngx_str_t *domain,
    ngx_str_t *key, ngx_log_t *log, uint32_t *code, const char **why)
{
    u_char                digest[32];
    unsigned              len;
    ngx_uint_t            lo, hi, mid;
    ngx_int_t             rc;
    ngx_hopgate_entry_t  *e;

    ngx_hopgate_registry_refresh(reg, log);

    lo = 0;
    hi = reg->nentries;
    e = NULL;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_memn2cmp(domain->data, reg->entries[mid].domain.data,
                          domain->len, reg->entries[mid].domain.len);
        if (rc == 0) {
            e = &reg->entries[mid];
            break;
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    if (e == NULL) {
        *code = HG_CODE_UNKNOWN_DOMAIN;
        *why = "domain is not registered";
        return NGX_DECLINED;
    }

    if (EVP_Digest(key->data, key->len, digest, &len, EVP_sha256(), NULL)
        != 1)
    {
        *code = HG_CODE_INTERNAL;
        *why = "cannot hash the key";
        return NGX_DECLINED;
    }

    if (CRYPTO_memcmp(digest, e->hash, sizeof(digest)) != 0) {
        *code = HG_CODE_BAD_KEY;
        *why = "the key does not match the domain";
        return NGX_DECLINED;
    }

    return NGX_OK;
}
