/*
 * One request's carrier: a socketpair whose one end nginx's upstream code
 * uses as the peer connection, and whose other end this file pumps into a
 * tunnel stream and back. Reading from one side happens only when the
 * other can take the bytes (the stream's send buffer, the socket's send
 * buffer), so a body of any size passes with bounded memory.
 *
 * A pump may wait for a session (hopgate_connect_timeout) before its
 * stream exists; nginx's request bytes then simply wait in the socket.
 * It waits only for a domain that is registered (or while the registry
 * cannot say): for any other, it answers 404 itself, at once, and nginx
 * shows its page for that (branded as "no such tunnel", or error_page).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_PUMP_BUFFER  65536


static void ngx_hopgate_pump_read(ngx_event_t *rev);
static void ngx_hopgate_pump_write(ngx_event_t *wev);
static void ngx_hopgate_pump_up(ngx_hopgate_pump_t *p);
static void ngx_hopgate_pump_down(ngx_hopgate_pump_t *p);
static void ngx_hopgate_pump_wait_expired(ngx_event_t *ev);
static void ngx_hopgate_pump_free(ngx_hopgate_pump_t *p);
static void ngx_hopgate_pump_meta(ngx_hopgate_pump_t *p,
    ngx_http_request_t *r);
static void ngx_hopgate_pump_known(void *data, ngx_int_t rc);
static void ngx_hopgate_pump_unknown(ngx_hopgate_pump_t *p);
static void ngx_hopgate_pump_drain(ngx_hopgate_pump_t *p);
static ngx_log_t *ngx_hopgate_pump_log(ngx_hopgate_pump_t *p);


static ngx_connection_t *
ngx_hopgate_pump_conn(ngx_socket_t fd, ngx_log_t *log)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(fd, log);
    if (c == NULL) {
        ngx_close_socket(fd);
        return NULL;
    }

    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;
    c->tcp_nopush = NGX_TCP_NOPUSH_DISABLED;
    c->tcp_nodelay = NGX_TCP_NODELAY_DISABLED;
    c->read->log = log;
    c->write->log = log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->start_time = ngx_current_msec;

    return c;
}


/*
 * Hands nginx a connected socket for the request (NGX_OK) and carries it
 * into a stream of a session for `domain`, now or once one comes up.
 * *session: on input a session to avoid (0: none); on output the session
 * used, or 0 when the pump has to wait for one. A domain known not to be
 * registered is answered with a 404 when `answer_unknown` is set, else
 * it is NGX_DECLINED and nothing is made (the caller has fallbacks).
 */
ngx_int_t
ngx_hopgate_pump_create(ngx_http_request_t *r, ngx_peer_connection_t *pc,
    ngx_str_t *domain, ngx_msec_t wait, uint64_t *session,
    ngx_uint_t answer_unknown)
{
    int                     fds[2];
    ngx_int_t               known;
    ngx_connection_t       *c;
    ngx_hopgate_pump_t     *p;
    ngx_hopgate_domain_t   *d;
    ngx_hopgate_session_t  *s;

    if (ngx_hopgate_worker == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "hopgate: no \"hopgate_listen\" is configured");
        return NGX_ERROR;
    }

    p = ngx_calloc(sizeof(ngx_hopgate_pump_t), r->connection->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p->wait = wait;
    p->answer_unknown = answer_unknown;

    d = domain->len ? ngx_hopgate_domain_get(domain, 0) : NULL;
    s = d ? ngx_hopgate_domain_pick(d, *session) : NULL;
    *session = s ? s->id : 0;

    /* no session: waiting is worth it only for a domain that exists */
    known = NGX_OK;

    if (s == NULL) {
        known = domain->len
                ? ngx_hopgate_registry_lookup(ngx_hopgate_worker->conf->reg,
                                              domain, ngx_hopgate_pump_known,
                                              p)
                : NGX_DECLINED;

        if (known == NGX_DECLINED && !answer_unknown) {
            ngx_hopgate_metrics_stream_failed(p,
                                           NGX_HOPGATE_STREAM_UNKNOWN_DOMAIN);
            ngx_free(p);
            return NGX_DECLINED;
        }

        p->lookup = (known == NGX_AGAIN);
    }

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   fds)
        == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_socket_errno,
                      "socketpair() failed");
        ngx_hopgate_pump_free(p);
        return NGX_ERROR;
    }

    /* nginx's end: the upstream code reads and writes it like a socket */
    c = ngx_hopgate_pump_conn(fds[0], pc->log);
    if (c == NULL) {
        ngx_close_socket(fds[1]);
        ngx_hopgate_pump_free(p);
        return NGX_ERROR;
    }

    /*
     * When the pump fails nginx sees a reset or an early close: the pump
     * says why, once; nginx's own line about the socket would mislead.
     */
    c->log_error = NGX_ERROR_INFO;

    /* ours */
    p->conn = ngx_hopgate_pump_conn(fds[1], ngx_cycle->log);
    if (p->conn == NULL) {
        ngx_close_connection(c);
        ngx_hopgate_pump_free(p);
        return NGX_ERROR;
    }

    if (ngx_add_conn(c) == NGX_ERROR || ngx_add_conn(p->conn) == NGX_ERROR) {
        ngx_close_connection(c);
        ngx_hopgate_pump_free(p);
        return NGX_ERROR;
    }

    pc->connection = c;

    ngx_hopgate_variables_link(r, p, domain);

    p->conn->data = p;
    p->conn->read->handler = ngx_hopgate_pump_read;
    p->conn->write->handler = ngx_hopgate_pump_write;
    p->stream_id = -1;
    ngx_queue_init(&p->link);

    ngx_hopgate_pump_meta(p, r);

    /*
     * From here on nginx owns a connected socket: a failure closes our end
     * and nginx sees the peer fail, as with any upstream.
     */
    if (s) {
        ngx_hopgate_pump_attach(p, s);
        return NGX_OK;
    }

    if (known == NGX_DECLINED) {
        ngx_hopgate_pump_unknown(p);
        return NGX_OK;
    }

    /* no session yet: the agent may be reconnecting */
    d = ngx_hopgate_domain_get(domain, 1);
    if (d == NULL) {
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_INTERNAL);
        return NGX_OK;
    }

    p->waiting = d;
    ngx_queue_insert_tail(&d->waiters, &p->link);

    p->wait_timer.handler = ngx_hopgate_pump_wait_expired;
    p->wait_timer.data = p;
    p->wait_timer.log = ngx_cycle->log;
    ngx_add_timer(&p->wait_timer, wait);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "hopgate: waiting for a tunnel for \"%V\"", domain);

    return NGX_OK;
}


/* what the agent learns about the request: address, scheme, host, id */
static void
ngx_hopgate_pump_meta(ngx_hopgate_pump_t *p, ngx_http_request_t *r)
{
    ngx_str_t                  name;
    ngx_http_variable_value_t *vv;

    ngx_cpystrn((u_char *) p->meta.client_addr, r->connection->addr_text.data,
                ngx_min(sizeof(p->meta.client_addr),
                        r->connection->addr_text.len + 1));

#if (NGX_HTTP_SSL)
    ngx_cpystrn((u_char *) p->meta.scheme,
                (u_char *) (r->connection->ssl ? "https" : "http"),
                sizeof(p->meta.scheme));
#else
    ngx_cpystrn((u_char *) p->meta.scheme, (u_char *) "http",
                sizeof(p->meta.scheme));
#endif

    if (r->headers_in.host) {
        ngx_cpystrn((u_char *) p->meta.host, r->headers_in.host->value.data,
                    ngx_min(sizeof(p->meta.host),
                            r->headers_in.host->value.len + 1));
    }

    /* the same id as nginx's $request_id, so logs on both ends join */
    ngx_str_set(&name, "request_id");
    vv = ngx_http_get_variable(r, &name, ngx_hash_key(name.data, name.len));

    if (vv && !vv->not_found) {
        ngx_cpystrn((u_char *) p->meta.request_id, vv->data,
                    ngx_min(sizeof(p->meta.request_id), (size_t) vv->len + 1));
    }
}


void
ngx_hopgate_pump_attach(ngx_hopgate_pump_t *p, ngx_hopgate_session_t *s)
{
    int64_t  id;

    if (p->waiting) {
        ngx_queue_remove(&p->link);
        ngx_queue_init(&p->link);
        ngx_hopgate_domain_release(p->waiting);
        p->waiting = NULL;
    }

    if (p->wait_timer.timer_set) {
        ngx_del_timer(&p->wait_timer);
    }

    if (p->lookup) {
        p->lookup = 0;
        ngx_hopgate_registry_lookup_cancel(ngx_hopgate_worker->conf->reg, p);
    }

    id = hg_stream_open(s->conn, &p->meta);
    if (id < 0) {
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_LIMIT);
        return;
    }

    hg_stream_set_user(s->conn, id, p);

    p->session = s;
    p->stream_id = id;
    s->streams++;
    ngx_queue_insert_tail(&s->pumps, &p->link);

    ngx_hopgate_metrics_stream_open(p);

    /* what nginx wrote while we waited goes now */
    ngx_hopgate_pump_up(p);
    ngx_hopgate_session_kick(s);
}


static void
ngx_hopgate_pump_wait_expired(ngx_event_t *ev)
{
    ngx_hopgate_pump_t  *p = ev->data;

    ngx_log_error(NGX_LOG_ERR, ngx_hopgate_pump_log(p), 0,
                  "hopgate: no tunnel for \"%s\" came up in time (no agent "
                  "connected within %Mms)",
                  p->waiting ? p->waiting->name : (u_char *) "", p->wait);

    ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_NO_TUNNEL);
}


/* the registry's answer for a waiting pump */
static void
ngx_hopgate_pump_known(void *data, ngx_int_t rc)
{
    ngx_hopgate_pump_t  *p = data;

    p->lookup = 0;

    /* registered, or not known now: the wait goes on */
    if (rc != NGX_DECLINED || p->waiting == NULL) {
        return;
    }

    if (!p->answer_unknown) {
        ngx_log_error(NGX_LOG_INFO, ngx_hopgate_pump_log(p), 0,
                      "hopgate: no tunnel is registered for \"%s\", "
                      "trying the fallback servers", p->waiting->name);

        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_UNKNOWN_DOMAIN);
        return;
    }

    ngx_hopgate_pump_unknown(p);
}


/*
 * No such tunnel: the pump answers 404 on the carrier, and nginx answers
 * the client with its page for 404 (ours, or error_page). What nginx
 * still sends is read and dropped until it closes its end.
 */
static void
ngx_hopgate_pump_unknown(ngx_hopgate_pump_t *p)
{
    static const char  head[] = "HTTP/1.1 404 Not Found\r\n"
                                "Content-Length: 0\r\n"
                                "Connection: close\r\n\r\n";

    if (p->waiting) {
        ngx_queue_remove(&p->link);
        ngx_queue_init(&p->link);
        ngx_hopgate_domain_release(p->waiting);
        p->waiting = NULL;
    }

    if (p->wait_timer.timer_set) {
        ngx_del_timer(&p->wait_timer);
    }

    ngx_log_error(NGX_LOG_INFO, ngx_hopgate_pump_log(p), 0,
                  "hopgate: no tunnel is registered for \"%*s\"",
                  p->ctx ? p->ctx->tunnel.domain_len : 0,
                  p->ctx ? p->ctx->tunnel.domain : (u_char *) "");

    ngx_hopgate_metrics_stream_failed(p, NGX_HOPGATE_STREAM_UNKNOWN_DOMAIN);

    if (p->ctx == NULL || ngx_hopgate_pages_no_tunnel(p->ctx) != NGX_OK
        || send(p->conn->fd, head, sizeof(head) - 1, 0)
           != (ssize_t) sizeof(head) - 1)
    {
        ngx_hopgate_pump_free(p);
        return;
    }

    (void) shutdown(p->conn->fd, SHUT_WR);

    p->answered = 1;
    ngx_hopgate_pump_drain(p);
}


static void
ngx_hopgate_pump_drain(ngx_hopgate_pump_t *p)
{
    u_char   buf[4096];
    ssize_t  n;

    for ( ;; ) {
        n = recv(p->conn->fd, buf, sizeof(buf), 0);

        if (n > 0) {
            continue;
        }

        if (n == -1 && (ngx_socket_errno == NGX_EAGAIN
                        || ngx_socket_errno == NGX_EINTR))
        {
            return;
        }

        /* nginx is done with it */
        ngx_hopgate_pump_free(p);
        return;
    }
}


/* the request's log while it lives: its lines say which request it was */
static ngx_log_t *
ngx_hopgate_pump_log(ngx_hopgate_pump_t *p)
{
    return p->ctx ? p->ctx->request->connection->log : ngx_cycle->log;
}


/* ---- the two directions --------------------------------------------- */

static void
ngx_hopgate_pump_read(ngx_event_t *rev)
{
    ngx_connection_t    *c = rev->data;
    ngx_hopgate_pump_t  *p = c->data;

    if (p->session) {
        ngx_hopgate_pump_up(p);

    } else if (p->answered) {
        ngx_hopgate_pump_drain(p);
    }
}


static void
ngx_hopgate_pump_write(ngx_event_t *wev)
{
    ngx_connection_t    *c = wev->data;
    ngx_hopgate_pump_t  *p = c->data;

    if (p->session) {
        ngx_hopgate_pump_down(p);
    }
}


/* nginx -> tunnel: the request */
static void
ngx_hopgate_pump_up(ngx_hopgate_pump_t *p)
{
    u_char      buf[NGX_HOPGATE_PUMP_BUFFER];
    size_t      space;
    ssize_t     n;
    hg_conn_t  *conn;

    conn = p->session->conn;

    while (!p->socket_eof) {
        space = hg_stream_writable(conn, p->stream_id);
        if (space == 0) {
            /* resumed by HG_EV_STREAM_WRITABLE */
            p->blocked = 1;
            break;
        }

        n = recv(p->conn->fd, buf, ngx_min(space, sizeof(buf)), 0);

        if (n > 0) {
            if (hg_stream_write(conn, p->stream_id, buf, (size_t) n) != n) {
                ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_TUNNEL_CLOSED);
                return;
            }
            continue;
        }

        if (n == 0) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "hopgate: stream %L: request complete",
                           p->stream_id);
            p->socket_eof = 1;
            hg_stream_shutdown(conn, p->stream_id);
            break;
        }

        if (ngx_socket_errno == NGX_EAGAIN || ngx_socket_errno == NGX_EINTR)
        {
            break;
        }

        /* nginx dropped the connection: the client went away */
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_CLIENT_CLOSED);
        return;
    }

    ngx_hopgate_session_kick(p->session);
}


/* tunnel -> nginx: the response */
static void
ngx_hopgate_pump_down(ngx_hopgate_pump_t *p)
{
    ssize_t     n;
    int         fin;
    hg_conn_t  *conn;

    conn = p->session->conn;

    for ( ;; ) {
        if (p->buf_len > 0) {
            n = send(p->conn->fd, p->buf + p->buf_pos, p->buf_len, 0);

            if (n > 0) {
                p->buf_pos += n;
                p->buf_len -= n;
                continue;
            }

            if (n == -1 && (ngx_socket_errno == NGX_EAGAIN
                            || ngx_socket_errno == NGX_EINTR))
            {
                /* resumed by the write event */
                break;
            }

            ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_CLIENT_CLOSED);
            return;
        }

        if (p->stream_fin) {
            break;
        }

        if (p->buf == NULL) {
            p->buf = ngx_alloc(NGX_HOPGATE_PUMP_BUFFER, ngx_cycle->log);
            if (p->buf == NULL) {
                ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_INTERNAL);
                return;
            }
        }

        n = hg_stream_read(conn, p->stream_id, p->buf,
                           NGX_HOPGATE_PUMP_BUFFER, &fin);

        if (n >= 0) {
            p->buf_pos = 0;
            p->buf_len = (size_t) n;
            if (fin) {
                p->stream_fin = 1;
            }
            continue;
        }

        if (n == HG_AGAIN) {
            break;
        }

        /* the agent reset the stream: its target refused or failed */
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_AGENT_RESET);
        return;
    }

    if (p->stream_fin && p->buf_len == 0 && !p->write_shut) {
        /* the response is complete: nginx reads EOF */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "hopgate: stream %L: response complete",
                       p->stream_id);
        p->write_shut = 1;
        (void) shutdown(p->conn->fd, SHUT_WR);
    }

    ngx_hopgate_session_kick(p->session);
}


/* ---- engine events and the end -------------------------------------- */

void
ngx_hopgate_pump_event(ngx_hopgate_session_t *s, hg_event_t *ev)
{
    ngx_hopgate_pump_t  *p;

    if (ev->stream_id < 0) {
        return;
    }

    p = hg_stream_user(s->conn, ev->stream_id);
    if (p == NULL) {
        return;
    }

    switch (ev->type) {

    case HG_EV_STREAM_READABLE:
        ngx_hopgate_pump_down(p);
        break;

    case HG_EV_STREAM_WRITABLE:
        p->blocked = 0;
        ngx_hopgate_pump_up(p);
        break;

    case HG_EV_STREAM_RESET:
    case HG_EV_STREAM_STOP:
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_AGENT_RESET);
        break;

    case HG_EV_STREAM_CLOSED:
        /* both directions finished: nothing is left to carry */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "hopgate: stream %L: closed", p->stream_id);
        hg_stream_set_user(s->conn, ev->stream_id, NULL);
        p->stream_id = -1;
        ngx_hopgate_pump_detach(p);
        ngx_hopgate_pump_free(p);
        break;

    default:
        break;
    }
}


void
ngx_hopgate_pump_detach(ngx_hopgate_pump_t *p)
{
    if (p->session) {
        ngx_hopgate_metrics_stream_close(p);
        ngx_queue_remove(&p->link);
        ngx_queue_init(&p->link);
        p->session->streams--;
        p->session = NULL;
    }
}


/*
 * The exchange ends early: the stream is reset, our end of the socket
 * closes, so nginx sees the peer fail (a 502 before a response began).
 */
void
ngx_hopgate_pump_fail(ngx_hopgate_pump_t *p, ngx_uint_t reason)
{
    ngx_hopgate_session_t  *s = p->session;

    /* the quiet ones are logged elsewhere or are nginx's own business */
    static const char  *why[NGX_HOPGATE_STREAM_N] = {
        NULL,
        "the tunnel takes no more streams",
        "the tunnel closed",
        "the agent reset the stream",
        NULL,
        "out of memory",
        NULL
    };

    if (why[reason]) {
        ngx_log_error(NGX_LOG_INFO, ngx_hopgate_pump_log(p), 0,
                      "hopgate: stream %L: %s", p->stream_id, why[reason]);
    }

    /* for the error page: which hop failed */
    if (p->ctx) {
        p->ctx->failed = reason + 1;
    }

    ngx_hopgate_metrics_stream_failed(p, reason);

    if (p->waiting) {
        ngx_queue_remove(&p->link);
        ngx_queue_init(&p->link);
        ngx_hopgate_domain_release(p->waiting);
        p->waiting = NULL;
    }

    if (s && p->stream_id >= 0) {
        hg_stream_set_user(s->conn, p->stream_id, NULL);
        hg_stream_reset(s->conn, p->stream_id, HG_STREAM_ERR_CANCELLED);
        ngx_hopgate_session_kick(s);
    }

    ngx_hopgate_pump_detach(p);
    ngx_hopgate_pump_free(p);
}


static void
ngx_hopgate_pump_free(ngx_hopgate_pump_t *p)
{
    if (p->lookup) {
        p->lookup = 0;
        ngx_hopgate_registry_lookup_cancel(ngx_hopgate_worker->conf->reg, p);
    }

    ngx_hopgate_variables_unlink(p);

    if (p->wait_timer.timer_set) {
        ngx_del_timer(&p->wait_timer);
    }

    if (p->conn) {
        ngx_close_connection(p->conn);
        p->conn = NULL;
    }

    if (p->buf) {
        ngx_free(p->buf);
    }

    ngx_free(p);
}
