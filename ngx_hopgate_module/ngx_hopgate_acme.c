/*
 * hopgate_acme: certificates for registered domains. This file holds the
 * directives, the shared zone (domains, certificates, challenge tokens,
 * the leader), the election of the one worker that runs the ACME client
 * (a heartbeat in the zone; a worker that exits, reloads or dies is
 * replaced within a few seconds), and that worker's once-a-second tick:
 * list the registry, note new and removed domains, then let the client
 * order what is missing or due.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_TICK         1000    /* ms */
#define NGX_HOPGATE_ACME_LEADER_TTL   3       /* s without a heartbeat */
#define NGX_HOPGATE_ACME_LIST_EVERY   2       /* s between listings */
#define NGX_HOPGATE_ACME_LIST_NOTIFY  10      /* s, with NOTIFY as well */


static ngx_int_t ngx_http_hopgate_acme_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_hopgate_acme_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_acme_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_hopgate_acme_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_acme_merge_srv_conf(ngx_conf_t *cf,
    void *parent, void *child);
static void *ngx_http_hopgate_acme_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_acme_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_hopgate_acme_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hopgate_acme_fallback(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_acme_backoff(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_acme_key_type(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_acme_db_key_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_acme_certificates(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_hopgate_acme_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_hopgate_acme_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_hopgate_acme_init_process(ngx_cycle_t *cycle);
static void ngx_http_hopgate_acme_exit_process(ngx_cycle_t *cycle);
static void ngx_hopgate_acme_tick(ngx_event_t *ev);
static void ngx_hopgate_acme_list(void);
static void ngx_hopgate_acme_listed(ngx_hopgate_admin_call_t *call);
static void ngx_hopgate_acme_registry_changed(ngx_str_t *domain);


ngx_http_hopgate_acme_main_conf_t  *ngx_hopgate_acme_conf;
ngx_hopgate_registry_t             *ngx_hopgate_acme_gate;  /* or NULL */

static ngx_event_t                  ngx_hopgate_acme_tick_ev;
static ngx_hopgate_registry_t      *ngx_hopgate_acme_registry;
static ngx_hopgate_admin_call_t    *ngx_hopgate_acme_listing;
static time_t                       ngx_hopgate_acme_listed_at;
static ngx_uint_t                   ngx_hopgate_acme_leading;


static ngx_command_t  ngx_http_hopgate_acme_commands[] = {

    { ngx_string("hopgate_acme"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hopgate_acme_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_email"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, email),
      NULL },

    { ngx_string("hopgate_acme_state"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, state),
      NULL },

    { ngx_string("hopgate_acme_ca"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, ca),
      NULL },

    { ngx_string("hopgate_acme_renew_before"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, renew_before),
      NULL },

    { ngx_string("hopgate_acme_key_type"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hopgate_acme_key_type,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_hopgate_acme_fallback,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, zone_size),
      NULL },

    { ngx_string("hopgate_acme_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_hopgate_acme_backoff,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, timeout),
      NULL },

    { ngx_string("hopgate_acme_max_orders"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_acme_main_conf_t, max_orders),
      NULL },

    { ngx_string("hopgate_acme_db_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hopgate_acme_db_key_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_certificates"),
      NGX_HTTP_SRV_CONF|NGX_CONF_NOARGS,
      ngx_http_hopgate_acme_certificates,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_acme_challenge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_acme_challenge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hopgate_acme_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_hopgate_acme_postconfiguration, /* postconfiguration */

    ngx_http_hopgate_acme_create_main_conf, /* create main configuration */
    ngx_http_hopgate_acme_init_main_conf,  /* init main configuration */

    ngx_http_hopgate_acme_create_srv_conf, /* create server configuration */
    ngx_http_hopgate_acme_merge_srv_conf,  /* merge server configuration */

    ngx_http_hopgate_acme_create_loc_conf, /* create location configuration */
    ngx_http_hopgate_acme_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_hopgate_acme_module = {
    NGX_MODULE_V1,
    &ngx_http_hopgate_acme_module_ctx,     /* module context */
    ngx_http_hopgate_acme_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_hopgate_acme_init_module,     /* init module */
    ngx_http_hopgate_acme_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hopgate_acme_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static const char  *ngx_hopgate_acme_state_names[] = {
    "none", "ordering", "valid", "failed"
};


const char *
ngx_hopgate_acme_state_name(ngx_uint_t state)
{
    return state < NGX_HOPGATE_ACME_NSTATES
           ? ngx_hopgate_acme_state_names[state] : "unknown";
}


/* ---- configuration ------------------------------------------------------- */

static void *
ngx_http_hopgate_acme_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_acme_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    amcf->renew_before = NGX_CONF_UNSET;
    amcf->key_type = NGX_CONF_UNSET_UINT;
    amcf->zone_size = NGX_CONF_UNSET_SIZE;
    amcf->backoff_min = NGX_CONF_UNSET;
    amcf->backoff_max = NGX_CONF_UNSET;
    amcf->timeout = NGX_CONF_UNSET_MSEC;
    amcf->max_orders = NGX_CONF_UNSET_UINT;
    amcf->log = &cf->cycle->new_log;

    return amcf;
}


static char *
ngx_http_hopgate_acme_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    ngx_file_info_t  fi;

    ngx_conf_init_value(amcf->renew_before, 0);
    ngx_conf_init_uint_value(amcf->key_type, NGX_HOPGATE_ACME_KEY_ECDSA);
    ngx_conf_init_size_value(amcf->zone_size, 16 * 1024 * 1024);
    ngx_conf_init_value(amcf->backoff_min, 60);
    ngx_conf_init_value(amcf->backoff_max, 86400);
    ngx_conf_init_msec_value(amcf->timeout, 30000);
    ngx_conf_init_uint_value(amcf->max_orders, 4);

    if (amcf->directory.len == 0) {
        return NGX_CONF_OK;
    }

    if (amcf->state.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme\" needs \"hopgate_acme_state\" "
                           "(a directory for the account, keys and "
                           "certificates)");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &amcf->state, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (amcf->ca.len) {
        if (ngx_conf_full_name(cf->cycle, &amcf->ca, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (ngx_file_info(amcf->ca.data, &fi)
            == NGX_FILE_ERROR)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "\"hopgate_acme_ca\": cannot read \"%V\"",
                               &amcf->ca);
            return NGX_CONF_ERROR;
        }
    }

    if (amcf->email.len
        && (ngx_strlchr(amcf->email.data,
                        amcf->email.data + amcf->email.len, '@') == NULL
            || ngx_strlchr(amcf->email.data,
                           amcf->email.data + amcf->email.len, ' ')))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_email\" takes an e-mail address, "
                           "not \"%V\"", &amcf->email);
        return NGX_CONF_ERROR;
    }

    if (amcf->zone_size < 256 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_zone\" must be at least 256k");
        return NGX_CONF_ERROR;
    }

    if (amcf->max_orders < 1 || amcf->max_orders > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_max_orders\" must be between 1 "
                           "and 64, not %ui", amcf->max_orders);
        return NGX_CONF_ERROR;
    }

    if (amcf->timeout < 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_timeout\" must be at least 100ms");
        return NGX_CONF_ERROR;
    }

    if (amcf->fallback_cert.len == 0
        && ngx_hopgate_acme_self_signed(cf->pool, &amcf->fallback_cert,
                                        &amcf->fallback_key)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "hopgate acme: cannot make "
                           "the self-signed fallback certificate");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_acme_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    ngx_str_t  *value;

    if (amcf->directory.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncasecmp(value[1].data, (u_char *) "https://", 8) != 0
        && ngx_strncasecmp(value[1].data, (u_char *) "http://", 7) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme\" takes the URL of an ACME "
                           "directory (https://...), not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    amcf->directory = value[1];

    return NGX_CONF_OK;
}


/* reads the whole of a small file at configuration time */
static ngx_int_t
ngx_http_hopgate_acme_read(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *out)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 1024 * 1024)
    {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (out->data == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = read(fd, out->data, ngx_file_size(&fi));
    ngx_close_file(fd);

    if (n != ngx_file_size(&fi)) {
        return NGX_ERROR;
    }

    out->data[n] = '\0';
    out->len = n;

    return NGX_OK;
}


static char *
ngx_http_hopgate_acme_fallback(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    time_t      nb, na;
    EVP_PKEY   *pkey;
    ngx_str_t  *value;

    if (amcf->fallback_cert.len) {
        return "is duplicate, or comes after a server with "
               "\"hopgate_acme_certificates\"";
    }

    value = cf->args->elts;

    if (ngx_http_hopgate_acme_read(cf, &value[1], &amcf->fallback_cert)
        != NGX_OK
        || ngx_hopgate_acme_cert_times(amcf->fallback_cert.data,
                                       amcf->fallback_cert.len, &nb, &na)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"hopgate_acme_fallback\": cannot read a PEM "
                           "certificate from \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_hopgate_acme_read(cf, &value[2], &amcf->fallback_key)
        != NGX_OK
        || (pkey = ngx_hopgate_acme_key_parse(amcf->fallback_key.data,
                                              amcf->fallback_key.len))
           == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"hopgate_acme_fallback\": cannot read a PEM "
                           "private key from \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    EVP_PKEY_free(pkey);

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_acme_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    ngx_str_t  *value;

    if (amcf->backoff_min != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    amcf->backoff_min = ngx_parse_time(&value[1], 1);
    amcf->backoff_max = cf->args->nelts == 3 ? ngx_parse_time(&value[2], 1)
                                             : 86400;

    if (amcf->backoff_min == (time_t) NGX_ERROR || amcf->backoff_min < 1
        || amcf->backoff_max == (time_t) NGX_ERROR
        || amcf->backoff_max < amcf->backoff_min)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_backoff\" takes a first delay of "
                           "at least 1s and a longer (or equal) maximum");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_acme_key_type(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    ngx_str_t  *value;

    if (amcf->key_type != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "ecdsa") == 0) {
        amcf->key_type = NGX_HOPGATE_ACME_KEY_ECDSA;

    } else if (ngx_strcmp(value[1].data, "rsa") == 0) {
        amcf->key_type = NGX_HOPGATE_ACME_KEY_RSA;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_key_type\" takes \"ecdsa\" "
                           "(P-256) or \"rsa\" (2048 bits), not \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the secret that seals private keys in the database: its SHA-256 */
static char *
ngx_http_hopgate_acme_db_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = conf;

    u_char     *p, *last;
    unsigned    len;
    ngx_str_t  *value, text;

    if (amcf->db_key_set) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_hopgate_acme_read(cf, &value[1], &text) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"hopgate_acme_db_key_file\": cannot read "
                           "\"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    p = text.data;
    last = text.data + text.len;

    while (last > p && (last[-1] == '\n' || last[-1] == '\r'
                        || last[-1] == ' '))
    {
        last--;
    }

    if (last - p < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_db_key_file\": \"%V\" must hold "
                           "a secret of at least 32 characters (e.g. "
                           "openssl rand -hex 32)", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (!EVP_Digest(p, last - p, amcf->db_key, &len, EVP_sha256(), NULL)) {
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(text.data, text.len);
    amcf->db_key_set = 1;

    return NGX_CONF_OK;
}


static void *
ngx_http_hopgate_acme_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_acme_srv_conf_t  *ascf;

    ascf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_acme_srv_conf_t));
    if (ascf == NULL) {
        return NULL;
    }

    ascf->certificates = NGX_CONF_UNSET;

    return ascf;
}


/*
 * hopgate_acme_certificates in a server: its ssl_certificate, if any, is
 * the fallback; without one, the fallback is given to nginx as "data:"
 * now, so that the ssl module makes the server's context and `nginx -t`
 * does not ask for a certificate.
 */
static char *
ngx_http_hopgate_acme_certificates(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_hopgate_acme_srv_conf_t  *ascf = conf;

    u_char                             *p;
    ngx_str_t                          *s;
    ngx_http_ssl_srv_conf_t            *sscf;
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    if (ascf->certificates != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    ascf->certificates = 1;

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_acme_module);
    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_ssl_module);

    if (sscf->certificates != NGX_CONF_UNSET_PTR) {
        return NGX_CONF_OK;
    }

    if (amcf->fallback_cert.len == 0
        && ngx_hopgate_acme_self_signed(cf->pool, &amcf->fallback_cert,
                                        &amcf->fallback_key)
           != NGX_OK)
    {
        return "cannot make the self-signed fallback certificate";
    }

    sscf->certificates = ngx_array_create(cf->pool, 1, sizeof(ngx_str_t));
    sscf->certificate_keys = ngx_array_create(cf->pool, 1, sizeof(ngx_str_t));
    if (sscf->certificates == NULL || sscf->certificate_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push(sscf->certificates);
    p = ngx_pnalloc(cf->pool, amcf->fallback_cert.len + sizeof("data:"));
    if (s == NULL || p == NULL) {
        return NGX_CONF_ERROR;
    }
    s->len = ngx_sprintf(p, "data:%V", &amcf->fallback_cert) - p;
    s->data = p;

    s = ngx_array_push(sscf->certificate_keys);
    p = ngx_pnalloc(cf->pool, amcf->fallback_key.len + sizeof("data:"));
    if (s == NULL || p == NULL) {
        return NGX_CONF_ERROR;
    }
    s->len = ngx_sprintf(p, "data:%V", &amcf->fallback_key) - p;
    s->data = p;

    ascf->injected = sscf->certificates;

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_acme_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_hopgate_acme_srv_conf_t  *conf = child;

    ngx_http_ssl_srv_conf_t            *sscf;
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    if (conf->certificates != 1) {
        return NGX_CONF_OK;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_acme_module);

    if (amcf->directory.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_certificates\" needs "
                           "\"hopgate_acme\" in the http{} block");
        return NGX_CONF_ERROR;
    }

    if (conf->injected && conf->injected->nelts > 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ssl_certificate\" must come before "
                           "\"hopgate_acme_certificates\" in a server (or "
                           "be left out: the fallback is served)");
        return NGX_CONF_ERROR;
    }

    /* the ssl module merged this server before us */
    sscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_ssl_module);

    if (sscf->ssl.ctx == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_certificates\" needs a "
                           "\"listen ... ssl\" in its server");
        return NGX_CONF_ERROR;
    }

    if (sscf->certificate_values) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_certificates\" cannot be used "
                           "with variables in \"ssl_certificate\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_hopgate_acme_cert_attach(cf, sscf->ssl.ctx) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_hopgate_acme_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_acme_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_acme_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    return alcf;
}


static char *
ngx_http_hopgate_acme_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_hopgate_acme_loc_conf_t  *conf = child;

    ngx_http_hopgate_acme_main_conf_t  *amcf;

    if (!conf->challenge) {
        return NGX_CONF_OK;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_acme_module);

    if (amcf->directory.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_challenge\" needs "
                           "\"hopgate_acme\" in the http{} block");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_hopgate_acme_postconfiguration(ngx_conf_t *cf)
{
    ngx_str_t                           name;
    ngx_http_hopgate_main_conf_t       *hmcf;
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_hopgate_acme_module);
    if (amcf->directory.len == 0) {
        return NGX_OK;
    }

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hopgate_module);

    if (hmcf->reg == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme\" needs \"hopgate_registry\": "
                           "only registered domains get certificates");
        return NGX_ERROR;
    }

    if (hmcf->reg->ops->admin == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme\": the registry cannot list its "
                           "domains");
        return NGX_ERROR;
    }

    ngx_str_set(&name, "hopgate_acme_zone");

    amcf->zone = ngx_shared_memory_add(cf, &name, amcf->zone_size,
                                       &ngx_http_hopgate_acme_module);
    if (amcf->zone == NULL) {
        return NGX_ERROR;
    }

    if (amcf->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_acme_zone\" is already in use");
        return NGX_ERROR;
    }

    amcf->zone->init = ngx_http_hopgate_acme_init_zone;
    amcf->zone->data = amcf;

    return NGX_OK;
}


/* ---- the shared zone ----------------------------------------------------- */

static ngx_int_t
ngx_http_hopgate_acme_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_hopgate_acme_main_conf_t  *amcf = shm_zone->data;

    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data) {
        /* a reload: certificates, tokens and the leader carry over */
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    shm = ngx_slab_calloc(shpool, sizeof(ngx_hopgate_acme_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&shm->rbtree, &shm->sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&shm->domains);
    shm->next_version = 1;

    shpool->data = shm;
    shm_zone->data = shm;

    shpool->log_ctx = (u_char *) " in hopgate_acme_zone";
    shpool->log_nomem = 0;

    /* a fresh start: what the state dir kept is served at once */
    return ngx_hopgate_acme_store_load(shpool, shm, amcf, shm_zone->shm.log);
}


ngx_hopgate_acme_shm_t *
ngx_hopgate_acme_shm(ngx_slab_pool_t **shpool)
{
    ngx_shm_zone_t  *zone;

    zone = ngx_hopgate_acme_conf->zone;
    *shpool = (ngx_slab_pool_t *) zone->shm.addr;

    return zone->data;
}


ngx_hopgate_acme_domain_t *
ngx_hopgate_acme_domain_find(ngx_hopgate_acme_shm_t *shm, u_char *name,
    size_t len)
{
    ngx_str_t        key;
    ngx_str_node_t  *sn;

    key.data = name;
    key.len = len;

    sn = ngx_str_rbtree_lookup(&shm->rbtree, &key, ngx_crc32_short(name, len));
    if (sn == NULL) {
        return NULL;
    }

    return (ngx_hopgate_acme_domain_t *) sn;
}


/* with the zone locked */
ngx_hopgate_acme_domain_t *
ngx_hopgate_acme_domain_add(ngx_slab_pool_t *shpool,
    ngx_hopgate_acme_shm_t *shm, u_char *name, size_t len)
{
    ngx_hopgate_acme_domain_t  *d;

    if (len == 0 || len > NGX_HOPGATE_DOMAIN_MAX) {
        return NULL;
    }

    d = ngx_hopgate_acme_domain_find(shm, name, len);
    if (d) {
        return d;
    }

    d = ngx_slab_calloc_locked(shpool, sizeof(ngx_hopgate_acme_domain_t));
    if (d == NULL) {
        return NULL;
    }

    ngx_memcpy(d->name, name, len);
    d->sn.str.data = d->name;
    d->sn.str.len = len;
    d->sn.node.key = ngx_crc32_short(name, len);

    ngx_rbtree_insert(&shm->rbtree, &d->sn.node);
    ngx_queue_insert_tail(&shm->domains, &d->link);
    shm->ndomains++;

    return d;
}


/* when renewal is due: renew_before ahead of expiry (clamped) */
time_t
ngx_hopgate_acme_renew_at(ngx_hopgate_acme_domain_t *d)
{
    time_t  life, before;

    life = d->not_after - d->not_before;
    before = ngx_hopgate_acme_conf->renew_before;

    if (before == 0) {
        before = life / 3;
    }

    /*
     * renew_before beyond two thirds of the lifetime would renew a fresh
     * certificate at once, and again, and again: renewal then starts a
     * third into the lifetime instead
     */
    if (before > life * 2 / 3) {
        if (!d->warned) {
            d->warned = 1;
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "hopgate acme: \"hopgate_acme_renew_before\" %T "
                          "is over two thirds of the %Ts lifetime of %V's "
                          "certificate; renewing it a third into its "
                          "lifetime", before, life, &d->sn.str);
        }
        before = life * 2 / 3;
    }

    return d->not_after - before;
}


/* a certificate of another CA than hopgate_acme's (staging, say) */
ngx_uint_t
ngx_hopgate_acme_foreign(ngx_hopgate_acme_domain_t *d)
{
    ngx_str_t  *dir;

    dir = &ngx_hopgate_acme_conf->directory;

    return d->ca != ngx_crc32_short(dir->data, dir->len);
}


/* ---- processes ----------------------------------------------------------- */

static ngx_msec_t
ngx_hopgate_acme_timeout(void)
{
    ngx_http_conf_ctx_t           *ctx;
    ngx_http_hopgate_main_conf_t  *hmcf;

    ctx = (ngx_http_conf_ctx_t *)
              ngx_cycle->conf_ctx[ngx_http_module.index];
    hmcf = ctx->main_conf[ngx_http_hopgate_module.ctx_index];

    return hmcf->registry_timeout;
}


static ngx_int_t
ngx_http_hopgate_acme_init_module(ngx_cycle_t *cycle)
{
    ngx_core_conf_t                    *ccf;
    ngx_http_conf_ctx_t                *ctx;
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    ctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    if (ctx == NULL) {
        return NGX_OK;
    }

    amcf = ctx->main_conf[ngx_http_hopgate_acme_module.ctx_index];
    if (amcf->directory.len == 0) {
        return NGX_OK;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);
    amcf->user = ccf->user;
    amcf->group = ccf->group;

    /* the state dir exists, 0700, the workers' own */
    return ngx_hopgate_acme_store_init(cycle, amcf);
}


static ngx_int_t
ngx_http_hopgate_acme_init_process(ngx_cycle_t *cycle)
{
    ngx_http_conf_ctx_t                *ctx;
    ngx_http_hopgate_main_conf_t       *hmcf;
    ngx_http_hopgate_acme_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    if (ctx == NULL) {
        return NGX_OK;
    }

    amcf = ctx->main_conf[ngx_http_hopgate_acme_module.ctx_index];
    if (amcf->directory.len == 0) {
        return NGX_OK;
    }

    hmcf = ctx->main_conf[ngx_http_hopgate_module.ctx_index];

    ngx_hopgate_acme_conf = amcf;
    ngx_hopgate_acme_registry = hmcf->reg;

    /* hopgate_expect_ips: the registry is the DNS gate's wrapper */
    ngx_hopgate_acme_gate = hmcf->expect_ips ? hmcf->reg : NULL;

    /* with the PostgreSQL registry, the database is shared as well */
    ngx_hopgate_acme_pg_enabled =
        ngx_strncmp(hmcf->reg->spec.data, "file:", 5) != 0;

    ngx_hopgate_acme_tick_ev.handler = ngx_hopgate_acme_tick;
    ngx_hopgate_acme_tick_ev.log = cycle->log;
    ngx_hopgate_acme_tick_ev.data = amcf;
    ngx_hopgate_acme_tick_ev.cancelable = 1;

    /* soon, so a fresh edge starts ordering without a second's wait */
    ngx_add_timer(&ngx_hopgate_acme_tick_ev, 10);

    return NGX_OK;
}


static void
ngx_hopgate_acme_resign(void)
{
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    if (!ngx_hopgate_acme_leading) {
        return;
    }

    ngx_hopgate_acme_leading = 0;
    ngx_hopgate_registry_changed = NULL;

    if (ngx_hopgate_acme_listing) {
        if (ngx_hopgate_acme_registry->ops->admin_cancel) {
            ngx_hopgate_acme_registry->ops->admin_cancel(
                                ngx_hopgate_acme_registry,
                                ngx_hopgate_acme_listing);
        }
        ngx_destroy_pool(ngx_hopgate_acme_listing->pool);
        ngx_hopgate_acme_listing = NULL;
    }

    ngx_hopgate_acme_client_stop();
    ngx_hopgate_acme_pg_stop();

    shm = ngx_hopgate_acme_shm(&shpool);

    ngx_shmtx_lock(&shpool->mutex);
    if (shm->leader == ngx_pid) {
        shm->leader = 0;
        shm->beat = 0;
    }
    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                  "hopgate acme: worker %P stops running the ACME client",
                  ngx_pid);
}


static void
ngx_http_hopgate_acme_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_hopgate_acme_conf == NULL) {
        return;
    }

    ngx_hopgate_acme_resign();
    ngx_hopgate_acme_cert_exit();

    if (ngx_hopgate_acme_tick_ev.timer_set) {
        ngx_del_timer(&ngx_hopgate_acme_tick_ev);
    }

    ngx_hopgate_acme_conf = NULL;
}


/*
 * The election: the leader writes a heartbeat every tick; another worker
 * takes over when there is none, when it is stale, or when the leader's
 * process is gone. An exiting worker (reload, shutdown) resigns first.
 */
static void
ngx_hopgate_acme_tick(ngx_event_t *ev)
{
    time_t                   now;
    ngx_pid_t                leader;
    ngx_uint_t               take;
    ngx_slab_pool_t         *shpool;
    ngx_hopgate_acme_shm_t  *shm;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        ngx_hopgate_acme_resign();
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    now = ngx_time();
    take = 0;

    ngx_shmtx_lock(&shpool->mutex);

    leader = shm->leader;

    if (leader == ngx_pid) {
        shm->beat = now;

    } else if (leader == 0 || now - shm->beat > NGX_HOPGATE_ACME_LEADER_TTL
               || (kill(leader, 0) == -1 && ngx_errno == NGX_ESRCH))
    {
        shm->leader = ngx_pid;
        shm->beat = now;
        take = 1;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (take) {
        if (ngx_hopgate_acme_client_start((ngx_cycle_t *) ngx_cycle)
            == NGX_OK
            && ngx_hopgate_acme_pg_start((ngx_cycle_t *) ngx_cycle,
                                         &ngx_hopgate_acme_registry->spec,
                                         ngx_hopgate_acme_timeout())
               == NGX_OK)
        {
            ngx_hopgate_acme_leading = 1;
            ngx_hopgate_registry_changed = ngx_hopgate_acme_registry_changed;

        } else {
            ngx_shmtx_lock(&shpool->mutex);
            shm->leader = 0;
            ngx_shmtx_unlock(&shpool->mutex);
        }
    }

    if (ngx_hopgate_acme_leading) {
        if (shm->nwanted
            || now - ngx_hopgate_acme_listed_at
               >= (ngx_hopgate_acme_pg_enabled ? NGX_HOPGATE_ACME_LIST_NOTIFY
                                               : NGX_HOPGATE_ACME_LIST_EVERY))
        {
            ngx_hopgate_acme_list();
        }

        ngx_hopgate_acme_pg_tick();
        ngx_hopgate_acme_client_tick();
    }

    ngx_add_timer(ev, NGX_HOPGATE_ACME_TICK);
}


/* ---- the registry's domains ---------------------------------------------- */

/* a NOTIFY: list again on the next tick, within a second */
static void
ngx_hopgate_acme_registry_changed(ngx_str_t *domain)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "hopgate acme: registry change for \"%V\"", domain);

    ngx_hopgate_acme_listed_at = 0;
}


static void
ngx_hopgate_acme_list(void)
{
    ngx_int_t                  rc;
    ngx_pool_t                *pool;
    ngx_hopgate_registry_t    *reg;
    ngx_hopgate_admin_call_t  *call;

    if (ngx_hopgate_acme_listing) {
        return;
    }

    ngx_hopgate_acme_listed_at = ngx_time();

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    call = ngx_pcalloc(pool, sizeof(ngx_hopgate_admin_call_t));
    if (call == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    call->op = NGX_HOPGATE_ADMIN_LIST;
    call->pool = pool;
    call->done = ngx_hopgate_acme_listed;

    reg = ngx_hopgate_acme_registry;
    ngx_hopgate_acme_listing = call;

    rc = reg->ops->admin(reg, call);

    if (rc == NGX_AGAIN) {
        return;
    }

    if (rc == NGX_OK) {
        ngx_hopgate_acme_listed(call);
        return;
    }

    ngx_hopgate_acme_listing = NULL;
    ngx_destroy_pool(pool);
}


/*
 * The registry's answer: every listed domain is registered, every other
 * one is not (its certificate stops being served). A failed listing
 * changes nothing: the registry being down unregisters nobody.
 */
static void
ngx_hopgate_acme_listed(ngx_hopgate_admin_call_t *call)
{
    ngx_uint_t                  i, added, removed;
    ngx_queue_t                *q;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_admin_row_t    *rows;
    ngx_hopgate_acme_domain_t  *d;

    ngx_hopgate_acme_listing = NULL;

    if (call->status != NGX_HTTP_OK || call->rows == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "hopgate acme: the registry did not list its domains "
                      "(%ui %s); keeping what is known",
                      call->status, call->error ? call->error : "");
        ngx_destroy_pool(call->pool);
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);
    rows = call->rows->elts;
    added = 0;
    removed = 0;

    ngx_shmtx_lock(&shpool->mutex);

    shm->nwanted = 0;

    for (q = ngx_queue_head(&shm->domains);
         q != ngx_queue_sentinel(&shm->domains);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);
        d->listed = 0;
    }

    for (i = 0; i < call->rows->nelts; i++) {
        d = ngx_hopgate_acme_domain_add(shpool, shm, rows[i].domain.data,
                                        rows[i].domain.len);
        if (d == NULL) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "hopgate acme: no room for \"%V\" in "
                          "hopgate_acme_zone", &rows[i].domain);
            continue;
        }

        d->listed = 1;

        if (!d->registered) {
            d->registered = 1;
            d->failures = 0;
            d->next_try = 0;
            added++;
        }
    }

    for (q = ngx_queue_head(&shm->domains);
         q != ngx_queue_sentinel(&shm->domains);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);

        if (d->listed || !d->registered) {
            continue;
        }

        d->registered = 0;
        removed++;

        if (d->version) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "hopgate acme: %V is no longer registered: its "
                          "certificate is no longer served", &d->sn.str);
            ngx_hopgate_acme_store_drop(d, shpool, ngx_cycle->log);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (added || removed) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate acme: registry lists %ui domains (%ui new, "
                      "%ui gone)", call->rows->nelts, added, removed);
    }

    ngx_destroy_pool(call->pool);

    ngx_hopgate_acme_client_tick();
}
