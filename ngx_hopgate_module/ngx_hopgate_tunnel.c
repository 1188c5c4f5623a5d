/*
 * hopgate_tunnel: tunnel sessions on TLS over TCP, for agents whose
 * network drops UDP.
 *
 *     server {
 *         listen 443 ssl http2;
 *         location = /.hopgate/tunnel { hopgate_tunnel; }
 *     }
 *
 * The agent asks with "GET /.hopgate/tunnel HTTP/1.1", "Connection:
 * Upgrade" and "Upgrade: hopgate/1" (HTTP/1.1 by ALPN, so http2 on the
 * listener changes nothing); the answer is "101 Switching Protocols",
 * after which the connection carries the engine's stream carrier
 * (length-prefixed packets, docs/protocol.md) until either side ends it.
 * nginx's TLS and certificate are the outer layer, and everything nginx
 * applies to the location applies to tunnels: allow/deny, limit_conn,
 * the access log (one line when the tunnel ends, status 101).
 *
 * The request stays alive for the tunnel's life, as an upgraded upstream
 * keeps it (ngx_http_upstream_upgrade): its read and write handlers are
 * ours, and c->recv/c->send do the TLS. The session joins the worker's
 * tables like one on UDP (ngx_hopgate_session.c), so the balancer, the
 * registry check, metrics, status, GOAWAY on reload and CLOSE at exit do
 * not know the difference.
 *
 * Backpressure: the engine is asked for packets only while the write
 * buffer has room (a socket that takes nothing fills it, then the
 * streams' send buffers, then hg_stream_write says 0 to the pumps); what
 * the agent sends is always read, since flow control bounds it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_TUNNEL_TOKEN    "hopgate/1"
#define NGX_HOPGATE_TUNNEL_OUT      (256 * 1024)  /* write buffer */
#define NGX_HOPGATE_TUNNEL_IN       (32 * 1024)   /* one read */
#define NGX_HOPGATE_TUNNEL_READS    16            /* reads per event */
#define NGX_HOPGATE_TUNNEL_MIN_ROOM 16384         /* a packet's worth */
#define NGX_HOPGATE_TUNNEL_MAX      20000         /* sessions per worker */
#define NGX_HOPGATE_TUNNEL_LINGER   5000          /* ms to flush a CLOSE */


struct ngx_hopgate_tunnel_s {
    ngx_queue_t               link;       /* the worker's tunnels */
    ngx_http_request_t       *request;
    ngx_hopgate_session_t    *session;    /* NULL once it ended */
    u_char                   *out;
    size_t                    out_pos;
    size_t                    out_len;
    u_char                   *in;
    unsigned                  lost:1;     /* the connection failed */
    unsigned                  done:1;     /* the request is finalized */
};


static ngx_int_t ngx_hopgate_tunnel_handler(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_tunnel_check(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_tunnel_connection_upgrade(ngx_http_request_t *r);
static ngx_int_t ngx_hopgate_tunnel_has_token(ngx_table_elt_t *h,
    const char *token);
static ngx_int_t ngx_hopgate_tunnel_start(ngx_http_request_t *r);
static void ngx_hopgate_tunnel_read(ngx_http_request_t *r);
static void ngx_hopgate_tunnel_write(ngx_http_request_t *r);
static void ngx_hopgate_tunnel_lost(ngx_hopgate_tunnel_t *t,
    const char *why);
static void ngx_hopgate_tunnel_finish(ngx_hopgate_tunnel_t *t);
static void ngx_hopgate_tunnel_cleanup(void *data);
static void ngx_hopgate_tunnel_exit_watch(ngx_event_t *rev);


char *
ngx_hopgate_tunnel_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_hopgate_main_conf_t  *hmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_hopgate_tunnel_handler;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_hopgate_module);
    hmcf->tunnel = 1;

    return NGX_CONF_OK;
}


/* ---- the upgrade --------------------------------------------------------- */

static ngx_int_t
ngx_hopgate_tunnel_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_hopgate_tunnel_check(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_hopgate_tunnel_start(r);
}


/* only an upgrade to our protocol, as a request of its own, passes */
static ngx_int_t
ngx_hopgate_tunnel_check(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;
    const char       *why;

    why = NULL;

    if (r->http_version != NGX_HTTP_VERSION_11) {
        why = "not HTTP/1.1 (an HTTP/2 or HTTP/1.0 request cannot upgrade)";

    } else if (r->method != NGX_HTTP_GET) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hopgate: tunnel request with method \"%V\", not GET",
                      &r->method_name);
        return NGX_HTTP_NOT_ALLOWED;

    } else if (r->headers_in.upgrade == NULL
               || !ngx_hopgate_tunnel_connection_upgrade(r))
    {
        why = "no \"Connection: Upgrade\" and \"Upgrade: "
              NGX_HOPGATE_TUNNEL_TOKEN "\"";

    } else if (!ngx_hopgate_tunnel_has_token(r->headers_in.upgrade,
                                             NGX_HOPGATE_TUNNEL_TOKEN))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hopgate: tunnel request for \"Upgrade: %V\"; this "
                      "edge speaks " NGX_HOPGATE_TUNNEL_TOKEN,
                      &r->headers_in.upgrade->value);
        why = "";

    } else if (r->headers_in.content_length_n > 0
               || r->headers_in.chunked)
    {
        why = "a request body";

    } else if (r != r->main) {
        why = "a subrequest";

    } else if (ngx_hopgate_worker == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (why == NULL) {
        return NGX_OK;
    }

    if (*why) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "hopgate: tunnel request refused: %s", why);
    }

    /*
     * tell the client what would be understood (HTTP/1 only: HTTP/2
     * forbids connection headers)
     */
    h = r->http_version < NGX_HTTP_VERSION_20
        ? ngx_list_push(&r->headers_out.headers) : NULL;
    if (h) {
        h->hash = 1;
        ngx_str_set(&h->key, "Upgrade");
        ngx_str_set(&h->value, NGX_HOPGATE_TUNNEL_TOKEN);
    }

    return NGX_HTTP_BAD_REQUEST;
}


/* nginx 1.22 keeps no pointer to Connection: its lines are looked up */
static ngx_int_t
ngx_hopgate_tunnel_connection_upgrade(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Connection") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Connection",
                               sizeof("Connection") - 1) == 0
            && ngx_hopgate_tunnel_has_token(&h[i], "upgrade"))
        {
            return 1;
        }
    }
}


/* a comma-separated header value holds the token (any case) */
static ngx_int_t
ngx_hopgate_tunnel_has_token(ngx_table_elt_t *h, const char *token)
{
    size_t   len;
    u_char  *p, *end, *start;

    if (h == NULL) {
        return 0;
    }

    len = ngx_strlen(token);
    p = h->value.data;
    end = p + h->value.len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        if ((size_t) (p - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_hopgate_tunnel_start(ngx_http_request_t *r)
{
    u_char                    prefix[1 + NGX_HOPGATE_TAG_LEN];
    hg_conn_t                *conn;
    ngx_int_t                 rc;
    ngx_table_elt_t          *h;
    ngx_connection_t         *c = r->connection;
    ngx_pool_cleanup_t       *cln;
    ngx_hopgate_tunnel_t     *t;
    ngx_hopgate_worker_t     *w = ngx_hopgate_worker;
    ngx_http_hopgate_ctx_t   *ctx;
    ngx_hopgate_session_t    *s;
    ngx_http_core_loc_conf_t *clcf;

    if (w->exiting || w->nsessions >= NGX_HOPGATE_TUNNEL_MAX) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0, "hopgate: tunnel refused: %s",
                      w->exiting ? "the worker is shutting down"
                                 : "too many sessions in this worker");
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_hopgate_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ctx->request = r;
        ngx_http_set_ctx(r, ctx, ngx_http_hopgate_module);
    }

    t = ngx_pcalloc(r->pool, sizeof(ngx_hopgate_tunnel_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (t == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t->out = ngx_palloc(r->pool, NGX_HOPGATE_TUNNEL_OUT);
    t->in = ngx_palloc(r->pool, NGX_HOPGATE_TUNNEL_IN);
    if (t->out == NULL || t->in == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* an id of this worker's, as its listener would give it */
    prefix[0] = (u_char) ngx_worker;
    ngx_memcpy(prefix + 1, w->tag, NGX_HOPGATE_TAG_LEN);

    conn = hg_conn_stream_server_new(&w->engine, prefix, sizeof(prefix),
                                     c->sockaddr, c->socklen,
                                     ngx_hopgate_now());
    if (conn == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s = ngx_hopgate_session_create(conn, c->sockaddr, c->socklen);
    if (s == NULL) {
        hg_conn_free(conn);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t->request = r;
    t->session = s;
    s->tunnel = t;
    ctx->carrier = t;
    cln->handler = ngx_hopgate_tunnel_cleanup;
    cln->data = t;
    ngx_queue_insert_tail(&w->tunnels, &t->link);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, NGX_HOPGATE_TUNNEL_TOKEN);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->header_only = 1;
    r->keepalive = 0;

    /* the request lives as long as the tunnel: finalized in _finish */
    r->main->count++;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK
        || ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR)
    {
        r->main->count--;
        ngx_hopgate_tunnel_lost(t, "cannot send the 101");
        return NGX_ERROR;
    }

    c->log->action = "carrying a hopgate tunnel";

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    if (clcf->tcp_nodelay) {
        (void) ngx_tcp_nodelay(c);
    }

#if (NGX_HTTP_SSL)
    /* the write buffer may move between an SSL_write and its retry */
    if (c->ssl) {
        SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
#endif

    r->read_event_handler = ngx_hopgate_tunnel_read;
    r->write_event_handler = ngx_hopgate_tunnel_write;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "hopgate: tunnel upgraded from %*s", s->addr_len,
                   s->addr_text);

    /* bytes the agent sent right after its request are the tunnel's */
    if (r->header_in->pos < r->header_in->last) {
        if (hg_conn_recv_bytes(s->conn, r->header_in->pos,
                               r->header_in->last - r->header_in->pos,
                               ngx_hopgate_now())
            != HG_OK)
        {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "hopgate: tunnel from %*s broke the protocol",
                          s->addr_len, s->addr_text);
        }
        r->header_in->pos = r->header_in->last;
    }

    ngx_hopgate_session_run(s);

    if (t->session) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    return NGX_DONE;
}


/* ---- the carrier ---------------------------------------------------------- */

static ngx_hopgate_tunnel_t *
ngx_hopgate_tunnel_of(ngx_http_request_t *r)
{
    ngx_http_hopgate_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_hopgate_module);

    return ctx ? ctx->carrier : NULL;
}


static void
ngx_hopgate_tunnel_read(ngx_http_request_t *r)
{
    ssize_t                 n;
    ngx_uint_t              reads;
    ngx_connection_t       *c = r->connection;
    ngx_hopgate_tunnel_t   *t;
    ngx_hopgate_session_t  *s;

    t = ngx_hopgate_tunnel_of(r);
    if (t == NULL || t->done) {
        return;
    }

    s = t->session;
    if (s == NULL) {
        ngx_hopgate_tunnel_finish(t);
        return;
    }

    for (reads = 0; reads < NGX_HOPGATE_TUNNEL_READS; reads++) {

        n = c->recv(c, t->in, NGX_HOPGATE_TUNNEL_IN);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_hopgate_tunnel_lost(t, n == 0 ? "the agent closed the "
                                                "connection"
                                              : "the connection failed");
            return;
        }

        if (hg_conn_recv_bytes(s->conn, t->in, (size_t) n,
                               ngx_hopgate_now())
            != HG_OK)
        {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "hopgate: tunnel from %*s broke the protocol, "
                          "closing it", s->addr_len, s->addr_text);
            break;
        }

        if (hg_conn_is_closed(s->conn)) {
            break;
        }
    }

    if (reads == NGX_HOPGATE_TUNNEL_READS) {
        /* more may wait: let other connections run first */
        ngx_post_event(c->read, &ngx_posted_events);
    }

    ngx_hopgate_session_run(s);

    if (t->session == NULL || t->done) {
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_hopgate_tunnel_lost(t, "cannot watch the connection");
    }
}


static void
ngx_hopgate_tunnel_write(ngx_http_request_t *r)
{
    ngx_connection_t      *c = r->connection;
    ngx_hopgate_tunnel_t  *t;

    t = ngx_hopgate_tunnel_of(r);
    if (t == NULL || t->done) {
        return;
    }

    if (c->write->timedout) {
        c->write->timedout = 0;
        ngx_hopgate_tunnel_lost(t, "the agent took nothing for too long");
        return;
    }

    if (t->session) {
        ngx_hopgate_session_run(t->session);
        return;
    }

    ngx_hopgate_tunnel_finish(t);
}


/* the session's run: its packets into the buffer, the buffer out */
void
ngx_hopgate_tunnel_output(ngx_hopgate_session_t *s)
{
    u_char                     drop[4096];
    ssize_t                    n;
    hg_time_t                  now;
    ngx_connection_t          *c;
    ngx_hopgate_tunnel_t      *t = s->tunnel;
    ngx_http_core_loc_conf_t  *clcf;

    now = ngx_hopgate_now();

    /* the connection is gone: what the engine says goes nowhere */
    if (t == NULL || t->lost) {
        while (hg_conn_send_bytes(s->conn, drop, sizeof(drop), now) > 0) {
            /* void */
        }
        return;
    }

    c = t->request->connection;

    for ( ;; ) {
        if (t->out_pos > 0
            && NGX_HOPGATE_TUNNEL_OUT - t->out_len
               < NGX_HOPGATE_TUNNEL_MIN_ROOM)
        {
            ngx_memmove(t->out, t->out + t->out_pos,
                        t->out_len - t->out_pos);
            t->out_len -= t->out_pos;
            t->out_pos = 0;
        }

        if (NGX_HOPGATE_TUNNEL_OUT - t->out_len >= 512) {
            n = hg_conn_send_bytes(s->conn, t->out + t->out_len,
                                   NGX_HOPGATE_TUNNEL_OUT - t->out_len, now);
            if (n > 0) {
                t->out_len += (size_t) n;
            }
        }

        if (t->out_pos == t->out_len || !c->write->ready) {
            break;
        }

        n = c->send(c, t->out + t->out_pos, t->out_len - t->out_pos);

        if (n == NGX_ERROR) {
            ngx_hopgate_tunnel_lost(t, "cannot write to the connection");
            return;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        t->out_pos += (size_t) n;

        if (t->out_pos == t->out_len) {
            t->out_pos = 0;
            t->out_len = 0;
        }
    }

    clcf = ngx_http_get_module_loc_conf(t->request, ngx_http_core_module);

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_hopgate_tunnel_lost(t, "cannot watch the connection");
        return;
    }

    /* a peer that takes nothing for send_timeout is gone */
    if (t->out_pos < t->out_len && !c->write->ready) {
        if (!c->write->timer_set) {
            ngx_add_timer(c->write, clcf->send_timeout);
        }

    } else if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }
}


/*
 * The connection cannot carry the session any more: the session ends
 * (its streams fail at once, so their requests get a 502 instead of
 * waiting), and the request with it.
 */
static void
ngx_hopgate_tunnel_lost(ngx_hopgate_tunnel_t *t, const char *why)
{
    ngx_hopgate_session_t  *s = t->session;

    t->lost = 1;

    if (s == NULL) {
        ngx_hopgate_tunnel_finish(t);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, t->request->connection->log, 0,
                  "hopgate: tunnel from %*s ended: %s", s->addr_len,
                  s->addr_text, why);

    hg_conn_close(s->conn, HG_CODE_NORMAL, why);

    /* the CLOSE goes nowhere; the session ends and detaches */
    ngx_hopgate_session_run(s);
}


/* the session ends: the tunnel flushes what is left, then closes */
void
ngx_hopgate_tunnel_detach(ngx_hopgate_session_t *s)
{
    ngx_hopgate_tunnel_t  *t = s->tunnel;

    s->tunnel = NULL;
    t->session = NULL;

    /* not now: the tunnel's own handler may be on the stack */
    ngx_post_event(t->request->connection->write, &ngx_posted_events);
}


static void
ngx_hopgate_tunnel_finish(ngx_hopgate_tunnel_t *t)
{
    ssize_t            n;
    ngx_connection_t  *c = t->request->connection;

    while (!t->lost && t->out_pos < t->out_len && c->write->ready) {
        n = c->send(c, t->out + t->out_pos, t->out_len - t->out_pos);
        if (n == NGX_ERROR) {
            t->lost = 1;
            break;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        t->out_pos += (size_t) n;
    }

    if (!t->lost && t->out_pos < t->out_len) {
        /* the CLOSE is on its way: a little while for it */
        if (ngx_handle_write_event(c->write, 0) == NGX_OK) {
            if (!c->write->timer_set) {
                ngx_add_timer(c->write, NGX_HOPGATE_TUNNEL_LINGER);
            }
            return;
        }
    }

    t->done = 1;
    ngx_queue_remove(&t->link);
    ngx_queue_init(&t->link);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    ngx_http_finalize_request(t->request, t->lost ? NGX_HTTP_CLOSE
                                                  : NGX_DONE);
}


/* nginx freed the request first (it terminated it) */
static void
ngx_hopgate_tunnel_cleanup(void *data)
{
    ngx_hopgate_tunnel_t   *t = data;
    ngx_hopgate_session_t  *s;

    if (!t->done) {
        ngx_queue_remove(&t->link);
        t->done = 1;
    }

    s = t->session;
    if (s == NULL) {
        return;
    }

    t->lost = 1;
    s->tunnel = NULL;
    t->session = NULL;

    hg_conn_close(s->conn, HG_CODE_NORMAL, "the connection was closed");
    ngx_hopgate_session_kick(s);
}


/* ---- the worker's tunnels -------------------------------------------------- */

/*
 * An edge with tunnels and no hopgate_listen still has to GOAWAY its
 * sessions when the worker quits: nginx tells idle connections, so a
 * connection of ours that never carries anything (a pipe) is one.
 */
ngx_int_t
ngx_hopgate_tunnels_init(ngx_cycle_t *cycle, ngx_hopgate_worker_t *w)
{
    int                fds[2];
    ngx_connection_t  *c;

    ngx_queue_init(&w->tunnels);

    if (!w->conf->tunnel || w->nlisteners > 0) {
        return NGX_OK;
    }

    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "pipe2() failed");
        return NGX_ERROR;
    }

    close(fds[1]);

    c = ngx_get_connection(fds[0], cycle->log);
    if (c == NULL) {
        close(fds[0]);
        return NGX_ERROR;
    }

    c->data = w;
    c->read->handler = ngx_hopgate_tunnel_exit_watch;
    c->read->log = cycle->log;
    c->idle = 1;

    w->exit_watch = c;

    return NGX_OK;
}


static void
ngx_hopgate_tunnel_exit_watch(ngx_event_t *rev)
{
    ngx_connection_t      *c = rev->data;
    ngx_hopgate_worker_t  *w = c->data;

    if (!c->close) {
        return;
    }

    c->close = 0;
    c->idle = 0;

    if (!w->exiting) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate: worker shutting down, draining %ui "
                      "sessions", w->nsessions);
        w->exiting = 1;
        ngx_hopgate_sessions_goaway(w);
    }
}


/* the worker exits: sessions got their CLOSE, the connections go */
void
ngx_hopgate_tunnels_close(ngx_hopgate_worker_t *w)
{
    ngx_queue_t           *q;
    ngx_connection_t      *c;
    ngx_hopgate_tunnel_t  *t;

    if (w->exit_watch) {
        ngx_close_connection(w->exit_watch);
        w->exit_watch = NULL;
    }

    while (!ngx_queue_empty(&w->tunnels)) {
        q = ngx_queue_head(&w->tunnels);
        t = ngx_queue_data(q, ngx_hopgate_tunnel_t, link);

        if (t->session) {
            t->session->tunnel = NULL;
            t->session = NULL;
        }

        ngx_queue_remove(q);
        ngx_queue_init(q);
        t->done = 1;

        /* nothing runs posted requests any more: closed here and now */
        c = t->request->connection;
        ngx_http_free_request(t->request, 0);
        ngx_http_close_connection(c);
    }
}
