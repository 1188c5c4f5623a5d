/*
 * HTTPS to the ACME server without blocking the worker: libcurl's multi
 * interface driven by nginx's event loop. libcurl tells us which sockets
 * to watch (CURLMOPT_SOCKETFUNCTION: each becomes an nginx connection
 * with level-triggered events) and when to wake it (CURLMOPT_TIMERFUNCTION:
 * one nginx timer); name resolution is libcurl's threaded resolver, so DNS
 * never blocks either. A request's callback runs from the event loop,
 * never from within ngx_hopgate_acme_http().
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <curl/curl.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_BODY_MAX    (1024 * 1024)
#define NGX_HOPGATE_ACME_CONNS_MAX   8


struct ngx_hopgate_acme_http_s {
    ngx_queue_t                  link;       /* ngx_hopgate_acme_http_all */
    CURL                        *easy;
    ngx_hopgate_acme_http_pt     done;
    void                        *data;
    struct curl_slist           *headers;
    u_char                      *body;
    size_t                       len;
    size_t                       cap;
    unsigned                     too_big:1;
    time_t                       retry_after;
    size_t                       nonce_len;
    size_t                       location_len;
    size_t                       type_len;
    u_char                       nonce[256];
    u_char                       location[2048];
    u_char                       type[128];
    char                         errbuf[CURL_ERROR_SIZE];
};


static int ngx_hopgate_acme_http_socket(CURL *easy, curl_socket_t s,
    int what, void *userp, void *socketp);
static int ngx_hopgate_acme_http_timer(CURLM *multi, long timeout_ms,
    void *userp);
static void ngx_hopgate_acme_http_expired(ngx_event_t *ev);
static void ngx_hopgate_acme_http_ready(ngx_event_t *ev);
static void ngx_hopgate_acme_http_finish(void);
static void ngx_hopgate_acme_http_free(ngx_hopgate_acme_http_t *h);
static size_t ngx_hopgate_acme_http_write(char *ptr, size_t size,
    size_t nmemb, void *userdata);
static size_t ngx_hopgate_acme_http_header(char *ptr, size_t size,
    size_t nmemb, void *userdata);


static CURLM        *ngx_hopgate_acme_multi;
static ngx_event_t   ngx_hopgate_acme_http_timer_ev;
static ngx_str_t     ngx_hopgate_acme_http_ca;
static ngx_msec_t    ngx_hopgate_acme_http_timeout;
static ngx_uint_t    ngx_hopgate_acme_http_count;
static ngx_queue_t   ngx_hopgate_acme_http_all;
static ngx_log_t    *ngx_hopgate_acme_http_log;


ngx_int_t
ngx_hopgate_acme_http_init(ngx_cycle_t *cycle, ngx_str_t *ca,
    ngx_msec_t timeout)
{
    if (ngx_hopgate_acme_multi) {
        return NGX_OK;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "hopgate acme: curl_global_init() failed");
        return NGX_ERROR;
    }

    ngx_hopgate_acme_multi = curl_multi_init();
    if (ngx_hopgate_acme_multi == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "hopgate acme: curl_multi_init() failed");
        return NGX_ERROR;
    }

    curl_multi_setopt(ngx_hopgate_acme_multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_hopgate_acme_http_socket);
    curl_multi_setopt(ngx_hopgate_acme_multi, CURLMOPT_TIMERFUNCTION,
                      ngx_hopgate_acme_http_timer);
    curl_multi_setopt(ngx_hopgate_acme_multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      (long) NGX_HOPGATE_ACME_CONNS_MAX);

    ngx_queue_init(&ngx_hopgate_acme_http_all);
    ngx_hopgate_acme_http_log = cycle->log;
    ngx_hopgate_acme_http_ca = *ca;
    ngx_hopgate_acme_http_timeout = timeout;

    ngx_hopgate_acme_http_timer_ev.handler = ngx_hopgate_acme_http_expired;
    ngx_hopgate_acme_http_timer_ev.log = cycle->log;
    ngx_hopgate_acme_http_timer_ev.data = ngx_hopgate_acme_multi;
    ngx_hopgate_acme_http_timer_ev.cancelable = 1;

    return NGX_OK;
}


/* the worker is leaving or giving up the client: drop every transfer */
void
ngx_hopgate_acme_http_exit(void)
{
    ngx_queue_t              *q;
    ngx_hopgate_acme_http_t  *h;

    if (ngx_hopgate_acme_multi == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_hopgate_acme_http_all)) {
        q = ngx_queue_head(&ngx_hopgate_acme_http_all);
        h = ngx_queue_data(q, ngx_hopgate_acme_http_t, link);
        ngx_hopgate_acme_http_cancel(h);
    }

    if (ngx_hopgate_acme_http_timer_ev.timer_set) {
        ngx_del_timer(&ngx_hopgate_acme_http_timer_ev);
    }

    /* closes the cached connections: their sockets leave through us */
    curl_multi_cleanup(ngx_hopgate_acme_multi);
    ngx_hopgate_acme_multi = NULL;
}


ngx_uint_t
ngx_hopgate_acme_http_active(void)
{
    return ngx_hopgate_acme_http_count;
}


ngx_hopgate_acme_http_t *
ngx_hopgate_acme_http(ngx_str_t *url, ngx_str_t *body, ngx_uint_t head,
    ngx_hopgate_acme_http_pt done, void *data)
{
    u_char                   *u;
    CURL                     *easy;
    ngx_hopgate_acme_http_t  *h;

    if (ngx_hopgate_acme_multi == NULL) {
        return NULL;
    }

    h = ngx_calloc(sizeof(ngx_hopgate_acme_http_t) + url->len + 1,
                   ngx_hopgate_acme_http_log);
    if (h == NULL) {
        return NULL;
    }

    u = (u_char *) (h + 1);
    ngx_memcpy(u, url->data, url->len);
    u[url->len] = '\0';

    easy = curl_easy_init();
    if (easy == NULL) {
        ngx_free(h);
        return NULL;
    }

    h->easy = easy;
    h->done = done;
    h->data = data;

    curl_easy_setopt(easy, CURLOPT_URL, (char *) u);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, h);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     (long) ngx_hopgate_acme_http_timeout);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) ngx_min(ngx_hopgate_acme_http_timeout, 10000));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "hopgate-acme/1");
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION,
                     ngx_hopgate_acme_http_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION,
                     ngx_hopgate_acme_http_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https,http");

    if (ngx_hopgate_acme_http_ca.len) {
        curl_easy_setopt(easy, CURLOPT_CAINFO,
                         (char *) ngx_hopgate_acme_http_ca.data);
    }

    /* the trust store is parsed once a day, not on every new connection */
    curl_easy_setopt(easy, CURLOPT_CA_CACHE_TIMEOUT, 86400L);

    /* no "Expect: 100-continue" round trip before a JWS */
    h->headers = curl_slist_append(NULL, "Expect:");

    if (body) {
        h->headers = curl_slist_append(h->headers,
                                       "Content-Type: application/jose+json");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) body->len);
        curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, (char *) body->data);

    } else if (head) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    }

    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h->headers);

    if (curl_multi_add_handle(ngx_hopgate_acme_multi, easy) != CURLM_OK) {
        ngx_hopgate_acme_http_free(h);
        return NULL;
    }

    ngx_hopgate_acme_http_count++;
    ngx_queue_insert_tail(&ngx_hopgate_acme_http_all, &h->link);

    return h;
}


void
ngx_hopgate_acme_http_cancel(ngx_hopgate_acme_http_t *h)
{
    curl_multi_remove_handle(ngx_hopgate_acme_multi, h->easy);
    ngx_hopgate_acme_http_count--;
    ngx_queue_remove(&h->link);
    ngx_hopgate_acme_http_free(h);
}


static void
ngx_hopgate_acme_http_free(ngx_hopgate_acme_http_t *h)
{
    curl_easy_cleanup(h->easy);
    curl_slist_free_all(h->headers);

    if (h->body) {
        ngx_free(h->body);
    }

    ngx_free(h);
}


static size_t
ngx_hopgate_acme_http_write(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_hopgate_acme_http_t  *h = userdata;

    size_t   n, cap;
    u_char  *p;

    n = size * nmemb;

    if (h->len + n > NGX_HOPGATE_ACME_BODY_MAX) {
        h->too_big = 1;
        return 0;
    }

    if (h->len + n + 1 > h->cap) {
        cap = ngx_max(h->cap * 2, h->len + n + 1);
        cap = ngx_max(cap, 4096);

        p = ngx_alloc(cap, ngx_hopgate_acme_http_log);
        if (p == NULL) {
            return 0;
        }

        if (h->body) {
            ngx_memcpy(p, h->body, h->len);
            ngx_free(h->body);
        }

        h->body = p;
        h->cap = cap;
    }

    ngx_memcpy(h->body + h->len, ptr, n);
    h->len += n;
    h->body[h->len] = '\0';

    return n;
}


/* copies a header's value, trimmed, if it fits */
static size_t
ngx_hopgate_acme_http_value(u_char *line, size_t len, size_t name_len,
    u_char *out, size_t size)
{
    u_char  *p, *end;

    p = line + name_len;
    end = line + len;

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (end > p && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    {
        end--;
    }

    if ((size_t) (end - p) >= size) {
        return 0;
    }

    ngx_memcpy(out, p, end - p);
    out[end - p] = '\0';

    return end - p;
}


static size_t
ngx_hopgate_acme_http_header(char *ptr, size_t size, size_t nmemb,
    void *userdata)
{
    ngx_hopgate_acme_http_t  *h = userdata;

    u_char     value[64];
    size_t     n, vlen;
    time_t     t;
    u_char    *line;
    ngx_int_t  secs;

    n = size * nmemb;
    line = (u_char *) ptr;

#define ngx_hopgate_acme_is(name)                                             \
    (n > sizeof(name) - 1                                                     \
     && ngx_strncasecmp(line, (u_char *) name, sizeof(name) - 1) == 0)

    if (ngx_hopgate_acme_is("HTTP/")) {
        /* a new response (after a 100 Continue, say): forget the last */
        h->nonce_len = 0;
        h->location_len = 0;
        h->type_len = 0;
        h->retry_after = 0;

    } else if (ngx_hopgate_acme_is("Replay-Nonce:")) {
        h->nonce_len = ngx_hopgate_acme_http_value(line, n,
                                                   sizeof("Replay-Nonce:") - 1,
                                                   h->nonce,
                                                   sizeof(h->nonce));

    } else if (ngx_hopgate_acme_is("Location:")) {
        h->location_len = ngx_hopgate_acme_http_value(line, n,
                                                   sizeof("Location:") - 1,
                                                   h->location,
                                                   sizeof(h->location));

    } else if (ngx_hopgate_acme_is("Content-Type:")) {
        h->type_len = ngx_hopgate_acme_http_value(line, n,
                                                  sizeof("Content-Type:") - 1,
                                                  h->type, sizeof(h->type));

    } else if (ngx_hopgate_acme_is("Retry-After:")) {
        vlen = ngx_hopgate_acme_http_value(line, n,
                                           sizeof("Retry-After:") - 1,
                                           value, sizeof(value));
        if (vlen) {
            secs = ngx_atoi(value, vlen);
            if (secs != NGX_ERROR) {
                h->retry_after = secs;

            } else {
                /* an HTTP-date */
                t = ngx_parse_http_time(value, vlen);
                if (t != NGX_ERROR && t > ngx_time()) {
                    h->retry_after = t - ngx_time();
                }
            }
        }
    }

#undef ngx_hopgate_acme_is

    return n;
}


/* ---- libcurl on nginx's event loop --------------------------------------- */

static void
ngx_hopgate_acme_http_watch(ngx_event_t *ev, ngx_uint_t event,
    ngx_uint_t want)
{
    if (want && !ev->active) {
        (void) ngx_add_event(ev, event, NGX_LEVEL_EVENT);

    } else if (!want && ev->active) {
        (void) ngx_del_event(ev, event, 0);
    }
}


static int
ngx_hopgate_acme_http_socket(CURL *easy, curl_socket_t s, int what,
    void *userp, void *socketp)
{
    ngx_connection_t  *c = socketp;

    if (what == CURL_POLL_REMOVE) {
        if (c) {
            /* libcurl closes the socket itself, after this */
            ngx_hopgate_acme_http_watch(c->read, NGX_READ_EVENT, 0);
            ngx_hopgate_acme_http_watch(c->write, NGX_WRITE_EVENT, 0);

            if (c->read->posted) {
                ngx_delete_posted_event(c->read);
            }

            if (c->write->posted) {
                ngx_delete_posted_event(c->write);
            }

            ngx_free_connection(c);
            c->fd = (ngx_socket_t) -1;

            curl_multi_assign(ngx_hopgate_acme_multi, s, NULL);
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_get_connection(s, ngx_hopgate_acme_http_log);
        if (c == NULL) {
            return -1;
        }

        c->read->handler = ngx_hopgate_acme_http_ready;
        c->write->handler = ngx_hopgate_acme_http_ready;
        c->read->log = ngx_hopgate_acme_http_log;
        c->write->log = ngx_hopgate_acme_http_log;

        curl_multi_assign(ngx_hopgate_acme_multi, s, c);
    }

    ngx_hopgate_acme_http_watch(c->read, NGX_READ_EVENT,
                                what & CURL_POLL_IN);
    ngx_hopgate_acme_http_watch(c->write, NGX_WRITE_EVENT,
                                what & CURL_POLL_OUT);

    return 0;
}


static int
ngx_hopgate_acme_http_timer(CURLM *multi, long timeout_ms, void *userp)
{
    ngx_event_t  *ev = &ngx_hopgate_acme_http_timer_ev;

    if (timeout_ms < 0) {
        if (ev->timer_set) {
            ngx_del_timer(ev);
        }

        return 0;
    }

    /* 0: as soon as the loop comes round, not from within libcurl */
    ngx_add_timer(ev, (ngx_msec_t) timeout_ms);

    return 0;
}


static void
ngx_hopgate_acme_http_expired(ngx_event_t *ev)
{
    int  running;

    if (ngx_hopgate_acme_multi == NULL) {
        return;
    }

    curl_multi_socket_action(ngx_hopgate_acme_multi, CURL_SOCKET_TIMEOUT, 0,
                             &running);

    ngx_hopgate_acme_http_finish();
}


static void
ngx_hopgate_acme_http_ready(ngx_event_t *ev)
{
    int                running, mask;
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    c = ev->data;
    fd = c->fd;
    mask = ev->write ? CURL_CSELECT_OUT : CURL_CSELECT_IN;

    /* c may be gone when this returns */
    curl_multi_socket_action(ngx_hopgate_acme_multi, fd, mask, &running);

    ngx_hopgate_acme_http_finish();
}


/* hands each finished transfer to its owner */
static void
ngx_hopgate_acme_http_finish(void)
{
    int                           left;
    long                          status;
    CURL                         *easy;
    CURLMsg                      *msg;
    CURLcode                      result;
    ngx_hopgate_acme_http_t      *h;
    ngx_hopgate_acme_response_t   resp;

    while (ngx_hopgate_acme_multi
           && (msg = curl_multi_info_read(ngx_hopgate_acme_multi, &left)))
    {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }

        easy = msg->easy_handle;
        result = msg->data.result;

        h = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &h);

        status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);

        curl_multi_remove_handle(ngx_hopgate_acme_multi, easy);
        ngx_hopgate_acme_http_count--;
        ngx_queue_remove(&h->link);

        ngx_memzero(&resp, sizeof(ngx_hopgate_acme_response_t));

        if (result != CURLE_OK) {
            resp.status = 0;
            resp.error = h->too_big ? "response over 1m"
                         : (h->errbuf[0] ? h->errbuf
                                         : curl_easy_strerror(result));

        } else {
            resp.status = status;
        }

        resp.body.data = h->body ? h->body : (u_char *) "";
        resp.body.len = h->len;
        resp.nonce.data = h->nonce;
        resp.nonce.len = h->nonce_len;
        resp.location.data = h->location;
        resp.location.len = h->location_len;
        resp.content_type.data = h->type;
        resp.content_type.len = h->type_len;
        resp.retry_after = h->retry_after;

        h->done(h->data, &resp);

        ngx_hopgate_acme_http_free(h);
    }
}
