/*
 * HopGate for nginx: the module definition and its configuration.
 *
 * Directives live here; the listener, sessions, upstream peer, registry
 * and the rest each have a file of their own.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


static void *ngx_http_hopgate_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_hopgate_listen(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_hopgate_check_mtu(ngx_conf_t *cf, void *post,
    void *data);


static ngx_conf_post_t  ngx_http_hopgate_mtu_post = {
    ngx_http_hopgate_check_mtu
};


static ngx_command_t  ngx_http_hopgate_commands[] = {

    { ngx_string("hopgate_listen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_hopgate_listen,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_mtu"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_main_conf_t, mtu),
      &ngx_http_hopgate_mtu_post },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hopgate_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_hopgate_create_main_conf,     /* create main configuration */
    ngx_http_hopgate_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_hopgate_module = {
    NGX_MODULE_V1,
    &ngx_http_hopgate_module_ctx,          /* module context */
    ngx_http_hopgate_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_hopgate_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&hmcf->listen, cf->pool, 2,
                       sizeof(ngx_http_hopgate_listen_t))
        != NGX_OK)
    {
        return NULL;
    }

    hmcf->mtu = NGX_CONF_UNSET_SIZE;

    return hmcf;
}


static char *
ngx_http_hopgate_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hopgate_main_conf_t  *hmcf = conf;

    ngx_conf_init_size_value(hmcf->mtu, HG_MTU_DEFAULT);

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
