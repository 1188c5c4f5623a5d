/*
 * HopGate for nginx: configuration shared by the module's files.
 */

#ifndef NGX_HTTP_HOPGATE_MODULE_H
#define NGX_HTTP_HOPGATE_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "hg.h"


typedef struct {
    ngx_sockaddr_t               sockaddr;
    socklen_t                    socklen;
    ngx_str_t                    addr_text;
    unsigned                     reuseport:1;
} ngx_http_hopgate_listen_t;


typedef struct {
    ngx_array_t                  listen;     /* ngx_http_hopgate_listen_t */
    size_t                       mtu;
} ngx_http_hopgate_main_conf_t;


extern ngx_module_t  ngx_http_hopgate_module;

#endif /* NGX_HTTP_HOPGATE_MODULE_H */
