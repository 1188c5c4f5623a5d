/*
 * The file registry, `hopgate_registry file:PATH`: one "domain hex-sha256"
 * line per domain (comments and blank lines allowed), re-read when the
 * file changes; keys are compared by hash, in constant time. It answers
 * every check at once.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/crypto.h>

#include "ngx_http_hopgate_module.h"
#include "ngx_hopgate_registry.h"


#define NGX_HOPGATE_REGISTRY_RECHECK  1000      /* ms between stat() */


typedef struct {
    ngx_str_t                    domain;
    u_char                       hash[32];
    ngx_uint_t                   line;
} ngx_hopgate_entry_t;


typedef struct {
    ngx_str_t                    path;
    ngx_hopgate_entry_t         *entries;       /* sorted by domain */
    ngx_uint_t                   nentries;
    u_char                      *text;          /* the entries' names */
    time_t                       mtime;
    off_t                        size;
    ngx_msec_t                   checked;
} ngx_hopgate_file_t;


static void ngx_hopgate_registry_file_cleanup(void *data);
static ngx_int_t ngx_hopgate_registry_load(ngx_hopgate_file_t *reg,
    ngx_log_t *log, u_char *err, size_t errlen);
static ngx_int_t ngx_hopgate_file_check(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data);
static ngx_int_t ngx_hopgate_file_lookup(ngx_hopgate_file_t *reg,
    ngx_str_t *domain, ngx_str_t *key, ngx_hopgate_verdict_t *verdict);
static ngx_hopgate_entry_t *ngx_hopgate_file_find(ngx_hopgate_file_t *reg,
    ngx_str_t *domain);
static ngx_int_t ngx_hopgate_file_known(ngx_hopgate_registry_t *r,
    ngx_str_t *domain, ngx_hopgate_lookup_pt done, void *data);


static ngx_int_t ngx_hopgate_file_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call);


const ngx_hopgate_registry_ops_t  ngx_hopgate_registry_file_ops = {
    "file",
    NULL,
    NULL,
    ngx_hopgate_file_check,
    NULL,
    ngx_hopgate_file_admin,
    NULL,
    ngx_hopgate_file_known,
    NULL
};


/* ---- the file registry ------------------------------------------------- */

void *
ngx_hopgate_registry_file_create(ngx_conf_t *cf, ngx_str_t *path)
{
    u_char               err[512];
    ngx_pool_cleanup_t  *cln;
    ngx_hopgate_file_t  *reg;

    reg = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_file_t));
    if (reg == NULL) {
        return NULL;
    }

    /*
     * The table and the text are ngx_alloc()ed, since a worker replaces
     * them when the file changes; they go with the cycle, or every reload
     * would leave the master a copy.
     */
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_hopgate_registry_file_cleanup;
    cln->data = reg;

    reg->path = *path;

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


static void
ngx_hopgate_registry_file_cleanup(void *data)
{
    ngx_hopgate_file_t  *reg = data;

    if (reg->entries) {
        ngx_free(reg->entries);
        reg->entries = NULL;
    }

    if (reg->text) {
        ngx_free(reg->text);
        reg->text = NULL;
    }

    reg->nentries = 0;
}


static int
ngx_hopgate_entry_cmp(const void *a, const void *b)
{
    const ngx_hopgate_entry_t  *x = a, *y = b;
    ngx_int_t                   rc;

    rc = ngx_memn2cmp(x->domain.data, y->domain.data, x->domain.len,
                      y->domain.len);

    if (rc == 0) {
        /* a domain's lines in file order, for the one that counts */
        rc = (ngx_int_t) x->line - (ngx_int_t) y->line;
    }

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


/*
 * parse "domain hash" lines into a new table; the old one stays on error.
 * A domain on several lines is a mistake worth a warning: the last line
 * counts, as when a line is edited by appending a new one.
 */
static ngx_int_t
ngx_hopgate_registry_parse(ngx_hopgate_file_t *reg, u_char *text,
    size_t size, ngx_log_t *log, u_char *err, size_t errlen)
{
    u_char               *p, *end, *eol, *dom, *hash, *name;
    size_t                dlen, hlen, nlen;
    ngx_uint_t            line, n, cap, i, kept;
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
        e->line = line;
        name += nlen + 1;
        n++;
    }

    ngx_qsort(entries, n, sizeof(ngx_hopgate_entry_t), ngx_hopgate_entry_cmp);

    kept = 0;

    for (i = 0; i < n; i++) {
        if (kept > 0
            && entries[kept - 1].domain.len == entries[i].domain.len
            && ngx_memcmp(entries[kept - 1].domain.data,
                          entries[i].domain.data, entries[i].domain.len)
               == 0)
        {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "\"hopgate_registry\": %V:%ui: \"%V\" is also "
                          "on line %ui; line %ui counts", &reg->path,
                          entries[i].line, &entries[i].domain,
                          entries[kept - 1].line, entries[i].line);
            entries[kept - 1] = entries[i];
            continue;
        }

        entries[kept++] = entries[i];
    }

    n = kept;

    if (reg->entries) {
        ngx_free(reg->entries);
    }

    reg->entries = entries;
    reg->nentries = n;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_registry_load(ngx_hopgate_file_t *reg, ngx_log_t *log,
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

    if (ngx_hopgate_registry_parse(reg, text, (size_t) n, log, err, errlen)
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
ngx_hopgate_registry_refresh(ngx_hopgate_file_t *reg, ngx_log_t *log)
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


static ngx_int_t
ngx_hopgate_file_check(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_str_t *key, ngx_hopgate_verdict_t *verdict,
    ngx_hopgate_verdict_pt done, void *data)
{
    ngx_int_t            rc;
    hg_time_t            started;
    ngx_hopgate_file_t  *reg = r->backend;

    started = ngx_hopgate_now();

    ngx_hopgate_registry_refresh(reg, ngx_cycle->log);

    rc = ngx_hopgate_file_lookup(reg, domain, key, verdict);

    ngx_hopgate_metrics_registry(rc, verdict->code,
                                 ngx_hopgate_now() - started);

    return rc;
}


static ngx_hopgate_entry_t *
ngx_hopgate_file_find(ngx_hopgate_file_t *reg, ngx_str_t *domain)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = reg->nentries;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_memn2cmp(domain->data, reg->entries[mid].domain.data,
                          domain->len, reg->entries[mid].domain.len);
        if (rc == 0) {
            return &reg->entries[mid];
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/* a request's question: the table in memory answers at once */
static ngx_int_t
ngx_hopgate_file_known(ngx_hopgate_registry_t *r, ngx_str_t *domain,
    ngx_hopgate_lookup_pt done, void *data)
{
    ngx_hopgate_file_t  *reg = r->backend;

    ngx_hopgate_registry_refresh(reg, ngx_cycle->log);

    return ngx_hopgate_file_find(reg, domain) ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_hopgate_file_lookup(ngx_hopgate_file_t *reg, ngx_str_t *domain,
    ngx_str_t *key, ngx_hopgate_verdict_t *verdict)
{
    u_char                digest[32];
    ngx_hopgate_entry_t  *e;

    e = ngx_hopgate_file_find(reg, domain);

    verdict->rc = NGX_DECLINED;

    if (e == NULL) {
        verdict->code = HG_CODE_UNKNOWN_DOMAIN;
        verdict->why = "domain is not registered";
        return NGX_DECLINED;
    }

    if (ngx_hopgate_key_hash(key, digest) != NGX_OK) {
        verdict->code = HG_CODE_INTERNAL;
        verdict->why = "cannot hash the key";
        return NGX_DECLINED;
    }

    if (CRYPTO_memcmp(digest, e->hash, sizeof(digest)) != 0) {
        verdict->code = HG_CODE_BAD_KEY;
        verdict->why = "the key does not match the domain";
        return NGX_DECLINED;
    }

    verdict->rc = NGX_OK;
    verdict->code = HG_CODE_OK;

    return NGX_OK;
}


/*
 * The admin API can list the file's domains; changes are made by editing
 * the file (every worker re-reads it), so the others answer 501.
 */
static ngx_int_t
ngx_hopgate_file_admin(ngx_hopgate_registry_t *r,
    ngx_hopgate_admin_call_t *call)
{
    ngx_uint_t                i;
    ngx_hopgate_file_t       *reg = r->backend;
    ngx_hopgate_admin_row_t  *row;

    if (call->op != NGX_HOPGATE_ADMIN_LIST) {
        call->status = NGX_HTTP_NOT_IMPLEMENTED;
        call->error = "the file registry is read-only here: edit the file "
                      "(nginx re-reads it when it changes) or use "
                      "hopgate_registry postgresql://...";
        return NGX_OK;
    }

    ngx_hopgate_registry_refresh(reg, ngx_cycle->log);

    call->rows = ngx_array_create(call->pool, reg->nentries + 1,
                                  sizeof(ngx_hopgate_admin_row_t));
    if (call->rows == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < reg->nentries; i++) {
        row = ngx_array_push(call->rows);
        ngx_memzero(row, sizeof(ngx_hopgate_admin_row_t));

        row->domain.data = ngx_pstrdup(call->pool, &reg->entries[i].domain);
        if (row->domain.data == NULL) {
            return NGX_ERROR;
        }
        row->domain.len = reg->entries[i].domain.len;
    }

    call->status = NGX_HTTP_OK;

    return NGX_OK;
}
