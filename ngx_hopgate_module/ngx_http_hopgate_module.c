/*
 * HopGate for nginx: the module definition, its directives, and the
 * process hooks that set up each worker's tunnel endpoint.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


static ngx_int_t ngx_http_hopgate_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_hopgate_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_hopgate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_hopgate_listen(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hopgate_registry(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hopgate_expect_ips(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hopgate_check_mtu(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_hopgate_check_streams(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_hopgate_check_buffer(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_hopgate_check_file(ngx_conf_t *cf, void *post,
    void *data);
static void ngx_http_hopgate_ssl_cleanup(void *data);
static ngx_int_t ngx_http_hopgate_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_hopgate_init_process(ngx_cycle_t *cycle);
static void ngx_http_hopgate_exit_process(ngx_cycle_t *cycle);


ngx_hopgate_worker_t  *ngx_hopgate_worker;

/* a worker with a registry but no tunnels (an admin-only nginx) */
static ngx_hopgate_registry_t  *ngx_http_hopgate_registry_only;


static ngx_conf_post_t  ngx_http_hopgate_mtu_post = {
    ngx_http_hopgate_check_mtu
};

static ngx_conf_post_t  ngx_http_hopgate_streams_post = {
    ngx_http_hopgate_check_streams
};

static ngx_conf_post_t  ngx_http_hopgate_buffer_post = {
    ngx_http_hopgate_check_buffer
};

static ngx_conf_post_t  ngx_http_hopgate_file_post = {
    ngx_http_hopgate_check_file
};


static ngx_command_t  ngx_http_hopgate_commands[] = {

    { ngx_string("hopgate_listen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_hopgate_listen,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, certificate),
      &ngx_http_hopgate_file_post },

    { ngx_string("hopgate_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, certificate_key),
      &ngx_http_hopgate_file_post },

    { ngx_string("hopgate_mtu"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, mtu),
      &ngx_http_hopgate_mtu_post },

    { ngx_string("hopgate_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, idle_timeout),
      NULL },

    { ngx_string("hopgate_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, keepalive),
      NULL },

    { ngx_string("hopgate_handshake_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, handshake_timeout),
      NULL },

    { ngx_string("hopgate_max_streams"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, max_streams),
      &ngx_http_hopgate_streams_post },

    { ngx_string("hopgate_stream_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, stream_buffer),
      &ngx_http_hopgate_buffer_post },

    { ngx_string("hopgate_session_buffer"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, session_buffer),
      &ngx_http_hopgate_buffer_post },

    { ngx_string("hopgate_registry"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_hopgate_registry,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_registry_cache_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, registry_cache_ttl),
      NULL },

    { ngx_string("hopgate_registry_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, registry_timeout),
      NULL },

    { ngx_string("hopgate_expect_ips"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_hopgate_expect_ips,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_admin_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_admin_key_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_hopgate_admin_key_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_tunnel"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_tunnel_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS,
      ngx_http_hopgate_upstream,
      0,
      0,
      NULL },

    { ngx_string("hopgate_route"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hopgate_loc_conf_t, route),
      NULL },

    { ngx_string("hopgate_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_hopgate_loc_conf_t, connect_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hopgate_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_hopgate_postconfiguration,    /* postconfiguration */

    ngx_http_hopgate_create_main_conf,     /* create main configuration */
    ngx_http_hopgate_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hopgate_create_loc_conf,      /* create location configuration */
    ngx_http_hopgate_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_hopgate_module = {
    NGX_MODULE_V1,
    &ngx_http_hopgate_module_ctx,          /* module context */
    ngx_http_hopgate_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_hopgate_init_module,          /* init module */
    ngx_http_hopgate_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hopgate_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_hopgate_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                      i;
    ngx_http_upstream_srv_conf_t  **up;
    ngx_http_hopgate_main_conf_t   *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hopgate_module);

    up = hmcf->upstreams.elts;
    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (ngx_http_hopgate_upstream_check(cf, up[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    /* `resolver` is known by now */
    if (ngx_hopgate_dnsgate_wrap(cf, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_hopgate_admin_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_hopgate_pages_init(cf);
}


static void *
ngx_http_hopgate_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    /* each loaded configuration is a generation of workers */
    hmcf->generation = ngx_hopgate_next_generation();

    /*
     * set by ngx_pcalloc():
     *
     *     hmcf->certificate = { 0, NULL };
     *     hmcf->certificate_key = { 0, NULL };
     *     hmcf->registry = { 0, NULL };
     *     hmcf->reg = NULL;
     *     hmcf->ssl_ctx = NULL;
     */

    if (ngx_array_init(&hmcf->listen, cf->pool, 2,
                       sizeof(ngx_http_hopgate_listen_t))
        != NGX_OK
        || ngx_array_init(&hmcf->upstreams, cf->pool, 2,
                          sizeof(ngx_http_upstream_srv_conf_t *))
           != NGX_OK)
    {
        return NULL;
    }

    hmcf->mtu = NGX_CONF_UNSET_SIZE;
    hmcf->idle_timeout = NGX_CONF_UNSET_MSEC;
    hmcf->keepalive = NGX_CONF_UNSET_MSEC;
    hmcf->handshake_timeout = NGX_CONF_UNSET_MSEC;
    hmcf->max_streams = NGX_CONF_UNSET_UINT;
    hmcf->stream_buffer = NGX_CONF_UNSET_SIZE;
    hmcf->session_buffer = NGX_CONF_UNSET_SIZE;
    hmcf->registry_cache_ttl = NGX_CONF_UNSET_MSEC;
    hmcf->registry_timeout = NGX_CONF_UNSET_MSEC;
    hmcf->log = &cf->cycle->new_log;

    return hmcf;
}


/* the engine settings the directives describe */
static void
ngx_http_hopgate_engine_config(ngx_http_hopgate_main_conf_t *hmcf,
    hg_config_t *cfg)
{
    hg_config_defaults(cfg);

    cfg->mtu = hmcf->mtu;
    cfg->idle_timeout = (hg_time_t) hmcf->idle_timeout * HG_MS;
    cfg->keepalive = (hg_time_t) hmcf->keepalive * HG_MS;
    cfg->handshake_timeout = (hg_time_t) hmcf->handshake_timeout * HG_MS;
    cfg->max_streams = (uint32_t) hmcf->max_streams;
    cfg->stream_window = hmcf->stream_buffer;
    cfg->stream_send_buffer = hmcf->stream_buffer;
    cfg->conn_window = hmcf->session_buffer;
    cfg->max_out_of_order = hmcf->session_buffer;
    cfg->cb.random = ngx_hopgate_random;
    cfg->cb.log = ngx_hopgate_engine_log;
    cfg->cb.cid_taken = ngx_hopgate_cid_taken;
}


static char *
ngx_http_hopgate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hopgate_main_conf_t  *hmcf = conf;

    char                        err[256];
    ngx_uint_t                  i;
    const char                 *why, *directive;
    hg_config_t                 cfg;
    ngx_pool_cleanup_t         *cln;
    ngx_http_hopgate_listen_t  *hl;

    ngx_conf_init_size_value(hmcf->mtu, HG_MTU_DEFAULT);
    ngx_conf_init_msec_value(hmcf->idle_timeout, 60000);
    ngx_conf_init_msec_value(hmcf->keepalive, 15000);
    ngx_conf_init_msec_value(hmcf->handshake_timeout, 10000);
    ngx_conf_init_uint_value(hmcf->max_streams, 256);
    ngx_conf_init_size_value(hmcf->stream_buffer, 1024 * 1024);
    ngx_conf_init_size_value(hmcf->session_buffer, 16 * 1024 * 1024);
    ngx_conf_init_msec_value(hmcf->registry_cache_ttl, 60000);
    ngx_conf_init_msec_value(hmcf->registry_timeout, 5000);

    if (hmcf->registry_timeout < 100) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_registry_timeout\" must be at least "
                           "100ms, not %Mms", hmcf->registry_timeout);
        return NGX_CONF_ERROR;
    }

    if (hmcf->listen.nelts == 0 && !hmcf->tunnel) {
        return NGX_CONF_OK;
    }

    directive = hmcf->listen.nelts ? "hopgate_listen" : "hopgate_tunnel";

    if (hmcf->reg == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" needs \"hopgate_registry\" to check "
                           "agents' keys", directive);
        return NGX_CONF_ERROR;
    }

    if (hmcf->idle_timeout <= hmcf->keepalive) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_idle_timeout\" (%Mms) must exceed "
                           "\"hopgate_keepalive\" (%Mms)",
                           hmcf->idle_timeout, hmcf->keepalive);
        return NGX_CONF_ERROR;
    }

    if (hmcf->session_buffer < hmcf->stream_buffer) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_session_buffer\" must be at least "
                           "\"hopgate_stream_buffer\"");
        return NGX_CONF_ERROR;
    }

    ngx_http_hopgate_engine_config(hmcf, &cfg);

    why = hg_config_check(&cfg);
    if (why != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "hopgate: %s", why);
        return NGX_CONF_ERROR;
    }

    /* the tunnel location's TLS is the server's: no certificate of ours */
    if (hmcf->listen.nelts == 0) {
        return NGX_CONF_OK;
    }

    if (hmcf->certificate.len == 0 || hmcf->certificate_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_listen\" needs \"hopgate_certificate\" "
                           "and \"hopgate_certificate_key\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &hmcf->certificate, 1) != NGX_OK
        || ngx_conf_full_name(cf->cycle, &hmcf->certificate_key, 1)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the context goes with the cycle: a reload makes a new one */
    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_hopgate_ssl_cleanup;
    cln->data = hmcf;

    hmcf->ssl_ctx = hg_tls_server_ctx((char *) hmcf->certificate.data,
                                      (char *) hmcf->certificate_key.data,
                                      err, sizeof(err));
    if (hmcf->ssl_ctx == NULL) {
        /* the engine says which of the two files it could not use */
        directive = ngx_strncmp(err, "cannot load private key",
                                sizeof("cannot load private key") - 1) == 0
                    ? "hopgate_certificate_key" : "hopgate_certificate";

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%s\": %s", directive,
                           err);
        return NGX_CONF_ERROR;
    }

    /*
     * OpenSSL keeps a record's plaintext in its read buffer until the next
     * record overwrites it; a HELLO carries the agent's key
     */
    SSL_CTX_set_options(hmcf->ssl_ctx, SSL_OP_CLEANSE_PLAINTEXT);

    hl = hmcf->listen.elts;
    for (i = 0; i < hmcf->listen.nelts; i++) {
        hl[i].index = i;
        if (ngx_hopgate_listen_add(cf, &hl[i]) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void
ngx_http_hopgate_ssl_cleanup(void *data)
{
    ngx_http_hopgate_main_conf_t  *hmcf = data;

    if (hmcf->ssl_ctx) {
        SSL_CTX_free(hmcf->ssl_ctx);
        hmcf->ssl_ctx = NULL;
    }
}


static void *
ngx_http_hopgate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    hlcf->route = NGX_CONF_UNSET_PTR;
    hlcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    hlcf->admin_key = NGX_CONF_UNSET_PTR;

    return hlcf;
}


static char *
ngx_http_hopgate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_hopgate_loc_conf_t  *prev = parent;
    ngx_http_hopgate_loc_conf_t  *conf = child;

    ngx_http_hopgate_main_conf_t  *hmcf;

    ngx_conf_merge_ptr_value(conf->route, prev->route, NULL);
    ngx_conf_merge_msec_value(conf->connect_timeout, prev->connect_timeout,
                              5000);
    ngx_conf_merge_ptr_value(conf->admin_key, prev->admin_key, NULL);

    if (conf->admin) {
        hmcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_hopgate_module);

        if (conf->admin_key == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"hopgate_admin\" needs "
                               "\"hopgate_admin_key_file\"");
            return NGX_CONF_ERROR;
        }

        if (hmcf->reg == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"hopgate_admin\" needs \"hopgate_registry\"");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_listen(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_main_conf_t  *hmcf = conf;

    ngx_str_t                  *value;
    ngx_url_t                   u;
    ngx_uint_t                  i;
    ngx_http_hopgate_listen_t  *hl;

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.listen = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in \"%V\" of the \"hopgate_listen\" "
                               "directive", u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    if (u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no port in \"%V\" of the \"hopgate_listen\" "
                           "directive", &u.url);
        return NGX_CONF_ERROR;
    }

    if (u.family == AF_UNIX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_listen\" takes an IP address and a "
                           "UDP port, not \"%V\"", &u.url);
        return NGX_CONF_ERROR;
    }

    hl = hmcf->listen.elts;
    for (i = 0; i < hmcf->listen.nelts; i++) {
        if (ngx_cmp_sockaddr(&hl[i].sockaddr.sockaddr, hl[i].socklen,
                             &u.sockaddr.sockaddr, u.socklen, 1)
            == NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate \"hopgate_listen\" address "
                               "\"%V\" (also \"%V\")", &u.url,
                               &hl[i].addr_text);
            return NGX_CONF_ERROR;
        }
    }

    hl = ngx_array_push(&hmcf->listen);
    if (hl == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(hl, sizeof(ngx_http_hopgate_listen_t));
    ngx_memcpy(&hl->sockaddr, &u.sockaddr, u.socklen);
    hl->socklen = u.socklen;
    hl->addr_text = u.url;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "reuseport") == 0) {
            hl->reuseport = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" of the "
                           "\"hopgate_listen\" directive", &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_registry(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_main_conf_t  *hmcf = conf;

    ngx_str_t  *value;

    if (hmcf->reg != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    hmcf->registry = value[1];

    hmcf->reg = ngx_hopgate_registry_create(cf, &value[1]);
    if (hmcf->reg == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_expect_ips(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_main_conf_t  *hmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;
    ngx_addr_t  *addr;

    if (hmcf->expect_ips != NULL) {
        return "is duplicate";
    }

    hmcf->expect_ips = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_addr_t));
    if (hmcf->expect_ips == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        addr = ngx_array_push(hmcf->expect_ips);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_parse_addr(cf->pool, addr, value[i].data, value[i].len)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"hopgate_expect_ips\" takes IP addresses, "
                               "not \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        addr->name = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_check_mtu(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *mtu = data;

    if (*mtu < HG_MTU_MIN || *mtu > HG_MTU_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_mtu\" must be between %d and %d, "
                           "not %uz", HG_MTU_MIN, HG_MTU_MAX, *mtu);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_check_streams(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *n = data;

    if (*n < 1 || *n > 65536) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_max_streams\" must be between 1 and "
                           "65536, not %ui", *n);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_check_buffer(ngx_conf_t *cf, void *post, void *data)
{
    size_t  *size = data;

    if (*size < 16384 || *size > 1024 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be between 16k and 1g, not %uz",
                           &((ngx_str_t *) cf->args->elts)[0], *size);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a file that cannot be read is reported where it is named */
static char *
ngx_http_hopgate_check_file(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *path = data;

    ngx_fd_t  fd;

    if (ngx_conf_full_name(cf->cycle, path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(path->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot open \"%V\"",
                           &((ngx_str_t *) cf->args->elts)[0], path);
        return NGX_CONF_ERROR;
    }

    ngx_close_file(fd);

    return NGX_CONF_OK;
}


/* ---- process hooks ------------------------------------------------------ */

static ngx_http_hopgate_main_conf_t *
ngx_http_hopgate_conf(ngx_cycle_t *cycle)
{
    ngx_http_conf_ctx_t  *ctx;

    ctx = (ngx_http_conf_ctx_t *) cycle->conf_ctx[ngx_http_module.index];
    if (ctx == NULL) {
        return NULL;
    }

    return ctx->main_conf[ngx_http_hopgate_module.ctx_index];
}


static ngx_int_t
ngx_http_hopgate_init_module(ngx_cycle_t *cycle)
{
    ngx_http_hopgate_main_conf_t  *hmcf;

    hmcf = ngx_http_hopgate_conf(cycle);
    if (hmcf == NULL || hmcf->listen.nelts == 0) {
        return NGX_OK;
    }

    /* the sockets are open and bound now: configure and steer them */
    if (ngx_hopgate_listen_configure(cycle, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_hopgate_steer_attach(cycle, hmcf);
}


static ngx_int_t
ngx_http_hopgate_init_process(ngx_cycle_t *cycle)
{
    ngx_hopgate_worker_t          *w;
    ngx_http_hopgate_main_conf_t  *hmcf;

    hmcf = ngx_http_hopgate_conf(cycle);
    if (hmcf == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    if (hmcf->listen.nelts == 0 && !hmcf->tunnel) {
        /* no tunnels here, but maybe the admin API */
        if (hmcf->reg && hmcf->reg->ops->init_process) {
            ngx_http_hopgate_registry_only = hmcf->reg;
            return hmcf->reg->ops->init_process(hmcf->reg, cycle);
        }

        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_hopgate_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->conf = hmcf;

    ngx_rbtree_init(&w->by_cid, &w->by_cid_sentinel, ngx_rbtree_insert_value);
    ngx_rbtree_init(&w->by_addr, &w->by_addr_sentinel,
                    ngx_rbtree_insert_value);
    ngx_rbtree_init(&w->domains, &w->domains_sentinel,
                    ngx_rbtree_insert_value);

    ngx_http_hopgate_engine_config(hmcf, &w->engine);

    ngx_hopgate_worker = w;

    if (hmcf->reg->ops->init_process
        && hmcf->reg->ops->init_process(hmcf->reg, cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_hopgate_listeners_init(cycle, w) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_hopgate_tunnels_init(cycle, w);
}


static void
ngx_http_hopgate_exit_process(ngx_cycle_t *cycle)
{
    ngx_hopgate_registry_t  *reg;

    reg = ngx_http_hopgate_registry_only;
    if (reg) {
        ngx_http_hopgate_registry_only = NULL;
        if (reg->ops->exit_process) {
            reg->ops->exit_process(reg);
        }
    }

    if (ngx_hopgate_worker) {
        /* before the registry goes: a session may still be checked */
        ngx_hopgate_sessions_close(ngx_hopgate_worker);
        ngx_hopgate_tunnels_close(ngx_hopgate_worker);

        reg = ngx_hopgate_worker->conf->reg;
        if (reg->ops->exit_process) {
            reg->ops->exit_process(reg);
        }

        ngx_hopgate_listeners_close(ngx_hopgate_worker);
        ngx_hopgate_worker = NULL;
    }
}
