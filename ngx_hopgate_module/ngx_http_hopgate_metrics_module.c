/*
 * The metrics module: its directives (hopgate_metrics_zone,
 * hopgate_metrics_max_domains, hopgate_metrics, hopgate_status), their
 * configuration, and the process hooks that attach each worker to the
 * zone and start the once-a-second harvest.
 *
 *   ngx_hopgate_metrics_zone.c        the shared zone, worker slots
 *   ngx_hopgate_metrics.c             the hooks and the 1 Hz harvest
 *   ngx_hopgate_metrics_prometheus.c  /metrics: the Prometheus exposition
 *   ngx_hopgate_status.c              hopgate_status: sessions as JSON
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_METRICS_MIN_SIZE  (128 * 1024)


static ngx_int_t ngx_http_hopgate_metrics_preconfiguration(ngx_conf_t *cf);
static void *ngx_http_hopgate_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_metrics_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_hopgate_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_hopgate_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_hopgate_metrics_zone(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_hopgate_metrics_max_domains(ngx_conf_t *cf,
    void *post, void *data);
static ngx_int_t ngx_http_hopgate_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_hopgate_metrics_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_t  ngx_http_hopgate_metrics_max_domains_post = {
    ngx_http_hopgate_metrics_max_domains
};


static ngx_command_t  ngx_http_hopgate_metrics_commands[] = {

    { ngx_string("hopgate_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_hopgate_metrics_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("hopgate_metrics_max_domains"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_hopgate_metrics_main_conf_t, max_domains),
      &ngx_http_hopgate_metrics_max_domains_post },

    { ngx_string("hopgate_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_prometheus_directive,
      0,
      0,
      NULL },

    { ngx_string("hopgate_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_hopgate_status_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_hopgate_metrics_module_ctx = {
    ngx_http_hopgate_metrics_preconfiguration, /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_hopgate_metrics_create_main_conf, /* create main configuration */
    ngx_http_hopgate_metrics_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_hopgate_metrics_create_loc_conf,  /* create location conf */
    ngx_http_hopgate_metrics_merge_loc_conf    /* merge location conf */
};


ngx_module_t  ngx_http_hopgate_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_hopgate_metrics_module_ctx,  /* module context */
    ngx_http_hopgate_metrics_commands,     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_hopgate_metrics_init_process, /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_hopgate_metrics_exit_process, /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* ---- configuration ------------------------------------------------------ */

static ngx_int_t
ngx_http_hopgate_metrics_preconfiguration(ngx_conf_t *cf)
{
    return ngx_hopgate_variables_add(cf);
}


static void *
ngx_http_hopgate_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->zone = NULL;
     *     mmcf->used = { 0, NULL };
     */

    mmcf->max_domains = NGX_CONF_UNSET_UINT;

    return mmcf;
}


static char *
ngx_http_hopgate_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf = conf;

    ngx_conf_init_uint_value(mmcf->max_domains, 100);

    if (mmcf->used.len && mmcf->zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" needs \"hopgate_metrics_zone\" in the "
                           "http block", &mmcf->used);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_hopgate_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_hopgate_metrics_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_hopgate_metrics_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->status = 0;
     */

    return mlcf;
}


/* the hopgate module's location settings are merged by now */
static char *
ngx_http_hopgate_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_hopgate_metrics_loc_conf_t  *conf = child;

    ngx_http_hopgate_loc_conf_t  *hlcf;

    if (!conf->status) {
        return NGX_CONF_OK;
    }

    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_hopgate_module);

    if (hlcf->admin_key == NULL || hlcf->admin_key == NGX_CONF_UNSET_PTR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_status\" needs "
                           "\"hopgate_admin_key_file\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_metrics_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf = conf;

    ssize_t                      size;
    ngx_str_t                   *value;
    ngx_hopgate_metrics_zone_t  *zone;

    if (mmcf->zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" of the "
                           "\"hopgate_metrics_zone\" directive", &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < NGX_HOPGATE_METRICS_MIN_SIZE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_zone\" size must be at least "
                           "128k, not \"%V\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_hopgate_metrics_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mmcf->zone = ngx_shared_memory_add(cf, &value[1], size,
                                       &ngx_http_hopgate_metrics_module);
    if (mmcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (mmcf->zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_zone\": zone \"%V\" is "
                           "already used", &value[1]);
        return NGX_CONF_ERROR;
    }

    mmcf->zone->init = ngx_hopgate_metrics_init_zone;
    mmcf->zone->data = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_hopgate_metrics_max_domains(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *n = data;

    if (*n < 1 || *n > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"hopgate_metrics_max_domains\" must be between "
                           "1 and 100000, not %ui", *n);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* ---- process hooks ---------------------------------------------------- */

static ngx_int_t
ngx_http_hopgate_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_http_hopgate_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_hopgate_metrics_module);

    if (mmcf == NULL || mmcf->zone == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    if (ngx_hopgate_metrics_attach(cycle, mmcf->zone, mmcf->max_domains)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_hopgate_metrics_start(cycle);

    return NGX_OK;
}


static void
ngx_http_hopgate_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_hopgate_metrics_detach();
}
