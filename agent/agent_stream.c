/*
 * Each tunnel stream becomes a non-blocking TCP connection to the local
 * target, pumped both ways with backpressure: bytes are read from one
 * side only when the other can take them, so memory per stream is one
 * buffer whatever the body size. A refused or reset local connection
 * resets the stream, so nginx answers at once instead of waiting.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "agent.h"


static void agent_stream_pump_up(agent_stream_t *st);
static void agent_stream_pump_down(agent_stream_t *st);
static void agent_stream_interest(agent_stream_t *st);
static void agent_stream_free(agent_stream_t *st);


static void
agent_stream_fail(agent_stream_t *st, uint64_t code, const char *outcome)
{
    agent_session_t  *s = st->session;

    if (code == HG_STREAM_ERR_REFUSED || code == HG_STREAM_ERR_RESET) {
        s->agent->target_errors++;
    }

    agent_log_stream(st, outcome);
    hg_stream_reset(s->conn, st->id, code);
    hg_stream_set_user(s->conn, st->id, NULL);
    agent_stream_free(st);
    agent_session_flush(s);
}


void
agent_stream_opened(agent_session_t *s, int64_t id,
    const hg_stream_meta_t *meta)
{
    agent_t         *a = s->agent;
    agent_stream_t  *st;
    int              rc;

    st = calloc(1, sizeof(agent_stream_t));
    if (st == NULL) {
        hg_stream_reset(s->conn, id, HG_STREAM_ERR_REFUSED);
        return;
    }

    st->session = s;
    st->id = id;
    st->fd = -1;
    st->opened = agent_now();
    st->tag.kind = AGENT_FD_STREAM;
    st->tag.ptr = st;

    if (meta) {
        st->meta = *meta;
    }

    st->next = s->stream_list;
    if (s->stream_list) {
        s->stream_list->prev = st;
    }
    s->stream_list = st;

    hg_stream_set_user(s->conn, id, st);

    st->fd = socket(a->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK
                                         | SOCK_CLOEXEC, 0);
    if (st->fd == -1) {
        agent_stream_fail(st, HG_STREAM_ERR_REFUSED, "no socket");
        return;
    }

    rc = connect(st->fd, (struct sockaddr *) &a->target, a->targetlen);
    if (rc == -1 && errno != EINPROGRESS) {
        agent_stream_fail(st, HG_STREAM_ERR_REFUSED, "local target refused");
        return;
    }

    st->state = AGENT_ST_CONNECTING;
    st->events = EPOLLOUT;

    if (agent_watch(a, st->fd, st->events, &st->tag) != 0) {
        agent_stream_fail(st, HG_STREAM_ERR_REFUSED, "epoll failed");
        return;
    }

    agent_log(AGENT_LOG_DEBUG, "stream %lld opened for %s (%s, request %s)",
              (long long) id, st->meta.client_addr, st->meta.scheme,
              st->meta.request_id);
}


static void
agent_stream_connected(agent_stream_t *st)
{
    int        err, one;
    socklen_t  len;

    err = 0;
    len = sizeof(err);

    if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
        err = errno;
    }

    if (err) {
        agent_stream_fail(st, HG_STREAM_ERR_REFUSED, "local target refused");
        return;
    }

    one = 1;
    (void) setsockopt(st->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    st->state = AGENT_ST_OPEN;
    agent_stream_pump_down(st);

    if (st->state == AGENT_ST_OPEN) {
        agent_stream_pump_up(st);
    }
}


void
agent_stream_io(agent_stream_t *st, uint32_t events)
{
    agent_session_t  *s = st->session;

    if (st->state == AGENT_ST_CLOSED) {
        /* ended earlier in this epoll batch; freed after it */
        return;
    }

    if (st->state == AGENT_ST_CONNECTING) {
        agent_stream_connected(st);

    } else {
        if (events & (EPOLLOUT | EPOLLERR)) {
            agent_stream_pump_down(st);
        }

        if (st->state == AGENT_ST_OPEN
            && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        {
            s->agent->target_wakeups++;
            agent_stream_pump_up(st);
        }
    }

    agent_session_flush(s);
}


/* local target -> tunnel, while the tunnel's send buffer has room */
static void
agent_stream_pump_up(agent_stream_t *st)
{
    hg_conn_t  *c = st->session->conn;
    uint8_t     buf[AGENT_PUMP_BUFFER];
    size_t      space;
    ssize_t     n;

    while (!st->local_eof) {
        space = hg_stream_writable(c, st->id);
        if (space == 0) {
            st->blocked_up = 1;
            break;
        }

        n = read(st->fd, buf, space < sizeof(buf) ? space : sizeof(buf));

        if (n > 0) {
            agent_parse_response(st, buf, (size_t) n);
            if (hg_stream_write(c, st->id, buf, (size_t) n) != n) {
                agent_stream_fail(st, HG_STREAM_ERR_CANCELLED,
                                  "tunnel stream gone");
                return;
            }
            st->bytes_resp += (uint64_t) n;
            st->session->agent->target_read += (uint64_t) n;
            continue;
        }

        if (n == 0) {
            st->local_eof = 1;
            hg_stream_shutdown(c, st->id);
            break;
        }

        if (errno == EAGAIN || errno == EINTR) {
            break;
        }

        agent_stream_fail(st, HG_STREAM_ERR_RESET, "local target reset");
        return;
    }

    agent_stream_interest(st);
}


/* tunnel -> local target, while the target's socket takes bytes */
static void
agent_stream_pump_down(agent_stream_t *st)
{
    hg_conn_t  *c = st->session->conn;
    ssize_t     n;
    int         fin;

    for ( ;; ) {
        if (st->pending_len > 0) {
            n = write(st->fd, st->pending + st->pending_off,
                      st->pending_len);
            if (n > 0) {
                st->pending_off += (size_t) n;
                st->pending_len -= (size_t) n;
                st->bytes_req += (uint64_t) n;
                st->session->agent->target_written += (uint64_t) n;
                continue;
            }

            if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
                break;
            }

            agent_stream_fail(st, HG_STREAM_ERR_RESET, "local target reset");
            return;
        }

        if (st->tunnel_fin) {
            break;
        }

        if (st->pending == NULL) {
            st->pending = malloc(AGENT_PUMP_BUFFER);
            if (st->pending == NULL) {
                agent_stream_fail(st, HG_STREAM_ERR_CANCELLED,
                                  "out of memory");
                return;
            }
        }

        n = hg_stream_read(c, st->id, st->pending, AGENT_PUMP_BUFFER, &fin);

        if (n > 0) {
            agent_parse_request(st, st->pending, (size_t) n);
            st->pending_off = 0;
            st->pending_len = (size_t) n;
            if (!fin) {
                continue;
            }
        }

        if (n >= 0 && fin) {
            st->tunnel_fin = 1;
            continue;
        }

        if (n == HG_AGAIN) {
            break;
        }

        agent_stream_fail(st, HG_STREAM_ERR_CANCELLED, "reset by the edge");
        return;
    }

    if (st->tunnel_fin && st->pending_len == 0 && !st->local_shut) {
        /* the request is complete: the target sees EOF */
        st->local_shut = 1;
        (void) shutdown(st->fd, SHUT_WR);
    }

    agent_stream_interest(st);
}


static void
agent_stream_interest(agent_stream_t *st)
{
    uint32_t  events;

    if (st->state != AGENT_ST_OPEN) {
        return;
    }

    events = 0;

    if (!st->local_eof && !st->blocked_up) {
        events |= EPOLLIN;
    }

    if (st->pending_len > 0) {
        events |= EPOLLOUT;
    }

    if (events != st->events) {
        st->events = events;
        agent_rewatch(st->session->agent, st->fd, events, &st->tag);
    }
}


void
agent_stream_event(agent_session_t *s, const hg_event_t *ev)
{
    agent_stream_t  *st;

    if (ev->stream_id < 0) {
        return;
    }

    st = hg_stream_user(s->conn, ev->stream_id);

    agent_log(AGENT_LOG_DEBUG, "stream %lld: event %d%s", (long long)
              ev->stream_id, (int) ev->type, st ? "" : " (no local side)");

    if (st == NULL) {
        return;
    }

    switch (ev->type) {

    case HG_EV_STREAM_READABLE:
        if (st->state == AGENT_ST_OPEN) {
            agent_stream_pump_down(st);
        }
        break;

    case HG_EV_STREAM_WRITABLE:
        st->blocked_up = 0;
        if (st->state == AGENT_ST_OPEN) {
            agent_stream_pump_up(st);
        }
        break;

    case HG_EV_STREAM_RESET:
    case HG_EV_STREAM_STOP:
        agent_stream_fail(st, HG_STREAM_ERR_CANCELLED, "reset by the edge");
        break;

    case HG_EV_STREAM_CLOSED:
        agent_log_stream(st, NULL);
        agent_stream_free(st);
        break;

    default:
        break;
    }
}


void
agent_stream_abort(agent_stream_t *st)
{
    agent_log_stream(st, "session lost");
    agent_stream_free(st);
}


static void
agent_stream_free(agent_stream_t *st)
{
    struct linger  lg;

    if (st->fd != -1) {
        if (!st->local_eof || !st->local_shut) {
            /* an aborted exchange: let the target see a reset */
            lg.l_onoff = 1;
            lg.l_linger = 0;
            (void) setsockopt(st->fd, SOL_SOCKET, SO_LINGER, &lg,
                              sizeof(lg));
        }

        agent_unwatch(st->session->agent, st->fd);
        close(st->fd);
    }

    if (st->prev) {
        st->prev->next = st->next;
    } else {
        st->session->stream_list = st->next;
    }

    if (st->next) {
        st->next->prev = st->prev;
    }

    st->state = AGENT_ST_CLOSED;
    free(st->pending);
    st->pending = NULL;

    /* epoll events of the current batch may still point at st */
    st->next = st->session->agent->graveyard;
    st->session->agent->graveyard = st;
}


void
agent_streams_reap(agent_t *a)
{
    agent_stream_t  *st;

    while ((st = a->graveyard) != NULL) {
        a->graveyard = st->next;
        free(st);
    }
}
