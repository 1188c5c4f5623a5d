/*
 * Where certificates live: in the shared zone, which every worker serves
 * from, and in hopgate_acme_state, which outlives the zone:
 *
 *   STATE/account.key            the ACME account's key (PEM, 0600)
 *   STATE/certs/DOMAIN.crt       the chain the CA sent (PEM)
 *   STATE/certs/DOMAIN.key       its private key (PEM, 0600)
 *   STATE/certs/DOMAIN.ca        the directory URL of the CA that issued it
 *
 * The directory is 0700 and the workers'. A fresh start (not a reload)
 * loads it into the zone, so a restart orders nothing while certificates
 * are valid. Only the elected worker writes, once per certificate; files
 * are written aside and renamed, so a crash leaves the old one or the
 * new one, never half of either.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "ngx_hopgate_acme.h"


static ngx_int_t ngx_hopgate_acme_store_path(u_char *buf, size_t size,
    ngx_str_t *domain, const char *ext);


ngx_int_t
ngx_hopgate_acme_store_init(ngx_cycle_t *cycle,
    ngx_http_hopgate_acme_main_conf_t *amcf)
{
    u_char      path[NGX_MAX_PATH];
    u_char     *dirs[2];
    ngx_uint_t  i;

    ngx_snprintf(path, sizeof(path), "%V/certs%Z", &amcf->state);
    dirs[0] = amcf->state.data;
    dirs[1] = path;

    for (i = 0; i < 2; i++) {
        if (ngx_create_dir(dirs[i], 0700) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "\"hopgate_acme_state\": cannot create \"%s\"",
                          dirs[i]);
            return NGX_ERROR;
        }

        if (chmod((char *) dirs[i], 0700) == -1) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "\"hopgate_acme_state\": chmod(\"%s\") failed",
                          dirs[i]);
            return NGX_ERROR;
        }

        if (geteuid() == 0 && amcf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT
            && chown((char *) dirs[i], amcf->user, amcf->group) == -1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "\"hopgate_acme_state\": chown(\"%s\") failed",
                          dirs[i]);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_acme_store_path(u_char *buf, size_t size, ngx_str_t *domain,
    const char *ext)
{
    u_char  *p;

    if (domain) {
        p = ngx_snprintf(buf, size - 1, "%V/certs/%V%s",
                         &ngx_hopgate_acme_conf->state, domain, ext);
    } else {
        p = ngx_snprintf(buf, size - 1, "%V/%s",
                         &ngx_hopgate_acme_conf->state, ext);
    }

    if (p == buf + size - 1) {
        return NGX_ERROR;
    }

    *p = '\0';

    return NGX_OK;
}


/* the whole of a small file, in memory from ngx_alloc() */
static u_char *
ngx_hopgate_acme_store_read(u_char *path, size_t *len, ngx_log_t *log)
{
    u_char           *data;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return NULL;
    }

    data = NULL;

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR
        && ngx_file_size(&fi) > 0 && ngx_file_size(&fi) < 256 * 1024)
    {
        data = ngx_alloc(ngx_file_size(&fi), log);

        if (data) {
            n = read(fd, data, ngx_file_size(&fi));
            if (n != ngx_file_size(&fi)) {
                ngx_free(data);
                data = NULL;

            } else {
                *len = n;
            }
        }
    }

    ngx_close_file(fd);

    return data;
}


static ngx_int_t
ngx_hopgate_acme_store_write(u_char *path, ngx_str_t *data, ngx_log_t *log)
{
    u_char    tmp[NGX_MAX_PATH];
    ssize_t   n;
    ngx_fd_t  fd;

    ngx_snprintf(tmp, sizeof(tmp), "%s.tmp%Z", path);

    fd = ngx_open_file(tmp, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE, 0600);
    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "hopgate acme: cannot write \"%s\"", tmp);
        return NGX_ERROR;
    }

    n = write(fd, data->data, data->len);
    ngx_close_file(fd);

    if (n != (ssize_t) data->len) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "hopgate acme: short write to \"%s\"", tmp);
        (void) ngx_delete_file(tmp);
        return NGX_ERROR;
    }

    if (ngx_rename_file(tmp, path) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "hopgate acme: rename(\"%s\", \"%s\") failed",
                      tmp, path);
        (void) ngx_delete_file(tmp);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* with the zone locked: a blob in the slab instead of the old one */
static ngx_int_t
ngx_hopgate_acme_store_blob(ngx_slab_pool_t *shpool, u_char **blob,
    size_t *blen, u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_slab_alloc_locked(shpool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, data, len);

    if (*blob) {
        ngx_slab_free_locked(shpool, *blob);
    }

    *blob = p;
    *blen = len;

    return NGX_OK;
}


/* with the zone locked */
static ngx_int_t
ngx_hopgate_acme_store_set(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm, ngx_str_t *domain, ngx_str_t *chain,
    ngx_str_t *key, time_t not_before, time_t not_after, uint32_t ca,
    ngx_log_t *log)
{
    u_char                     *cert, *pkey;
    ngx_hopgate_acme_domain_t  *d;

    d = ngx_hopgate_acme_domain_add(shpool, shm, domain->data, domain->len);
    if (d == NULL) {
        goto nomem;
    }

    cert = ngx_slab_alloc_locked(shpool, chain->len);
    pkey = ngx_slab_alloc_locked(shpool, key->len);

    if (cert == NULL || pkey == NULL) {
        if (cert) {
            ngx_slab_free_locked(shpool, cert);
        }
        if (pkey) {
            ngx_slab_free_locked(shpool, pkey);
        }
        goto nomem;
    }

    if (d->cert) {
        ngx_slab_free_locked(shpool, d->cert);
        ngx_slab_free_locked(shpool, d->key);
    }

    ngx_memcpy(cert, chain->data, chain->len);
    ngx_memcpy(pkey, key->data, key->len);

    d->cert = cert;
    d->cert_len = chain->len;
    d->key = pkey;
    d->key_len = key->len;
    d->not_before = not_before;
    d->not_after = not_after;
    d->ca = ca;
    d->version = shm->next_version++;
    d->state = NGX_HOPGATE_ACME_VALID;
    d->failures = 0;
    d->next_try = 0;
    d->warned = 0;
    d->error[0] = '\0';

    (void) ngx_atomic_fetch_add(&shm->generation, 1);

    return NGX_OK;

nomem:

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "hopgate acme: no room for %V's certificate in "
                  "hopgate_acme_zone (make it larger)", domain);

    return NGX_ERROR;
}


/* the chain's first certificate must be for the key we made */
static ngx_int_t
ngx_hopgate_acme_store_check(ngx_str_t *chain, ngx_str_t *key)
{
    BIO        *bio;
    X509       *x;
    EVP_PKEY   *pkey;
    ngx_int_t   rc;

    bio = BIO_new_mem_buf(chain->data, (int) chain->len);
    if (bio == NULL) {
        return NGX_ERROR;
    }

    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    pkey = ngx_hopgate_acme_key_parse(key->data, key->len);

    rc = (x && pkey && X509_check_private_key(x, pkey) == 1)
         ? NGX_OK : NGX_ERROR;

    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();

    return rc;
}


ngx_int_t
ngx_hopgate_acme_store_put(ngx_str_t *domain, ngx_str_t *chain,
    ngx_str_t *key, ngx_str_t *directory, ngx_log_t *log, ngx_uint_t share)
{
    u_char                      crt[NGX_MAX_PATH], kpath[NGX_MAX_PATH];
    u_char                      capath[NGX_MAX_PATH];
    uint32_t                    ca;
    time_t                      nb, na;
    ngx_int_t                   rc;
    ngx_uint_t                  same;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;

    shm = ngx_hopgate_acme_shm(&shpool);

    /* the database gives back what we wrote: nothing to do then */
    ngx_shmtx_lock(&shpool->mutex);
    d = ngx_hopgate_acme_domain_find(shm, domain->data, domain->len);
    same = d && d->cert && d->cert_len == chain->len
           && ngx_memcmp(d->cert, chain->data, chain->len) == 0;
    ngx_shmtx_unlock(&shpool->mutex);

    if (same) {
        return NGX_OK;
    }

    if (ngx_hopgate_acme_cert_times(chain->data, chain->len, &nb, &na)
        != NGX_OK
        || ngx_hopgate_acme_store_check(chain, key) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "hopgate acme: the CA's answer for %V is not a PEM "
                      "certificate chain for our key", domain);
        return NGX_ERROR;
    }

    if (ngx_hopgate_acme_store_path(crt, sizeof(crt), domain, ".crt")
        != NGX_OK
        || ngx_hopgate_acme_store_path(kpath, sizeof(kpath), domain, ".key")
           != NGX_OK
        || ngx_hopgate_acme_store_path(capath, sizeof(capath), domain, ".ca")
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the key first: a certificate on disk always has its key */
    if (ngx_hopgate_acme_store_write(kpath, key, log) != NGX_OK
        || ngx_hopgate_acme_store_write(capath, directory, log) != NGX_OK
        || ngx_hopgate_acme_store_write(crt, chain, log) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ca = ngx_crc32_short(directory->data, directory->len);

    ngx_shmtx_lock(&shpool->mutex);
    rc = ngx_hopgate_acme_store_set(shpool, shm, domain, chain, key, nb, na,
                                    ca, log);
    ngx_shmtx_unlock(&shpool->mutex);

    if (rc == NGX_OK && share) {
        ngx_hopgate_acme_pg_certificate(domain, chain, key, directory);
    }

    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "hopgate acme: certificate for %V stored, valid for "
                      "%Ts more", domain, na - ngx_time());
    }

    return rc;
}


/* with the zone locked: the domain is gone from the registry */
void
ngx_hopgate_acme_store_drop(ngx_hopgate_acme_domain_t *d,
    ngx_slab_pool_t *shpool, ngx_log_t *log)
{
    u_char                   path[NGX_MAX_PATH];
    ngx_hopgate_acme_shm_t  *shm;

    shm = shpool->data;

    if (d->cert) {
        ngx_slab_free_locked(shpool, d->cert);
        ngx_slab_free_locked(shpool, d->key);
        d->cert = NULL;
        d->key = NULL;
    }

    d->cert_len = 0;
    d->key_len = 0;
    d->version = 0;
    d->not_before = 0;
    d->not_after = 0;
    d->state = NGX_HOPGATE_ACME_NONE;

    (void) ngx_atomic_fetch_add(&shm->generation, 1);

    ngx_hopgate_acme_pg_uncertificate(&d->sn.str);

    if (ngx_hopgate_acme_store_path(path, sizeof(path), &d->sn.str, ".crt")
        == NGX_OK)
    {
        (void) ngx_delete_file(path);
    }

    if (ngx_hopgate_acme_store_path(path, sizeof(path), &d->sn.str, ".key")
        == NGX_OK)
    {
        (void) ngx_delete_file(path);
    }

    if (ngx_hopgate_acme_store_path(path, sizeof(path), &d->sn.str, ".ca")
        == NGX_OK)
    {
        (void) ngx_delete_file(path);
    }
}


ngx_int_t
ngx_hopgate_acme_store_account(ngx_str_t *pem, ngx_log_t *log,
    ngx_uint_t share)
{
    u_char                   path[NGX_MAX_PATH];
    ngx_int_t                rc;
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    if (ngx_hopgate_acme_store_path(path, sizeof(path), NULL, "account.key")
        != NGX_OK
        || ngx_hopgate_acme_store_write(path, pem, log) != NGX_OK)
    {
        return NGX_ERROR;
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);
    rc = ngx_hopgate_acme_store_blob(shpool, &shm->account_key,
                                     &shm->account_key_len, pem->data,
                                     pem->len);
    ngx_shmtx_unlock(&shpool->mutex);

    if (rc == NGX_OK && share) {
        ngx_hopgate_acme_pg_account(pem);
    }

    return rc;
}


/* a fresh zone (nginx started): take in what the state dir kept */
ngx_int_t
ngx_hopgate_acme_store_load(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm, ngx_http_hopgate_acme_main_conf_t *amcf,
    ngx_log_t *log)
{
    u_char                     path[NGX_MAX_PATH], name[NGX_MAX_PATH];
    u_char                     norm[NGX_HOPGATE_DOMAIN_MAX + 1];
    size_t                     len, clen, klen, nlen;
    time_t                     nb, na;
    u_char                    *cert, *key, *data, *ca;
    size_t                     calen;
    uint32_t                   crc;
    DIR                       *dir;
    ngx_str_t                  domain, raw, chain, pkey;
    ngx_uint_t                 loaded;
    struct dirent             *de;
    ngx_hopgate_acme_domain_t *d;

    ngx_hopgate_acme_conf = amcf;

    ngx_snprintf(path, sizeof(path), "%V/account.key%Z", &amcf->state);

    data = ngx_hopgate_acme_store_read(path, &len, log);
    if (data) {
        (void) ngx_hopgate_acme_store_blob(shpool, &shm->account_key,
                                           &shm->account_key_len, data, len);
        ngx_free(data);
    }

    ngx_snprintf(path, sizeof(path), "%V/certs%Z", &amcf->state);

    dir = opendir((char *) path);
    if (dir == NULL) {
        ngx_hopgate_acme_conf = NULL;
        return NGX_OK;
    }

    loaded = 0;

    while ((de = readdir(dir)) != NULL) {
        len = ngx_strlen(de->d_name);

        if (len <= 4 || len - 4 > NGX_HOPGATE_DOMAIN_MAX
            || ngx_strcmp(de->d_name + len - 4, ".crt") != 0)
        {
            continue;
        }

        raw.data = (u_char *) de->d_name;
        raw.len = len - 4;

        if (ngx_hopgate_domain_normalize(&raw, norm, &nlen) != NGX_OK
            || nlen != raw.len || ngx_strncmp(norm, raw.data, nlen) != 0)
        {
            continue;
        }

        domain.data = norm;
        domain.len = nlen;

        ngx_hopgate_acme_store_path(name, sizeof(name), &domain, ".crt");
        cert = ngx_hopgate_acme_store_read(name, &clen, log);
        ngx_hopgate_acme_store_path(name, sizeof(name), &domain, ".key");
        key = ngx_hopgate_acme_store_read(name, &klen, log);
        ngx_hopgate_acme_store_path(name, sizeof(name), &domain, ".ca");
        ca = ngx_hopgate_acme_store_read(name, &calen, log);

        /* which CA issued it: a certificate of another is replaced */
        if (ca) {
            crc = ngx_crc32_short(ca, calen);
            ngx_free(ca);

        } else {
            crc = ngx_crc32_short(amcf->directory.data, amcf->directory.len);
        }

        if (cert && key
            && ngx_hopgate_acme_cert_times(cert, clen, &nb, &na) == NGX_OK
            && na > ngx_time())
        {
            chain.data = cert;
            chain.len = clen;
            pkey.data = key;
            pkey.len = klen;

            if (ngx_hopgate_acme_store_check(&chain, &pkey) == NGX_OK
                && ngx_hopgate_acme_store_set(shpool, shm, &domain, &chain,
                                              &pkey, nb, na, crc, log)
                   == NGX_OK)
            {
                /* it was registered when issued; the registry may say not */
                d = ngx_hopgate_acme_domain_find(shm, norm, nlen);
                d->registered = 1;
                loaded++;
            }
        }

        if (cert) {
            ngx_free(cert);
        }

        if (key) {
            ngx_free(key);
        }
    }

    closedir(dir);

    if (loaded) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "hopgate acme: %ui certificates loaded from \"%V\"",
                      loaded, &amcf->state);
    }

    /* the master keeps no pointer into a configuration it may free */
    ngx_hopgate_acme_conf = NULL;

    return NGX_OK;
}
