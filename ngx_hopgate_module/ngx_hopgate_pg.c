/*
 * An asynchronous PostgreSQL connection inside an nginx worker (see the
 * header).
 *
 * libpq's socket is watched through a dup() of it, so the registration in
 * nginx's event loop has a lifetime we control: libpq may close its socket
 * and open another while connecting (several hosts or addresses), and it
 * may even get the same number back. After every PQconnectPoll() we compare
 * the socket's identity (its inode) with the one we watch, and re-register
 * when it changed. Events are level-triggered: libpq does not promise to
 * read a socket dry, which edge-triggered epoll would need.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_hopgate_pg.h"


#define NGX_HOPGATE_PG_BACKOFF_MIN  250
#define NGX_HOPGATE_PG_BACKOFF_MAX  5000


static void ngx_hopgate_pg_connect(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_connect_poll(ngx_hopgate_pg_t *pg);
static ngx_int_t ngx_hopgate_pg_watch(ngx_hopgate_pg_t *pg,
    ngx_uint_t read, ngx_uint_t write);
static void ngx_hopgate_pg_unwatch(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_io(ngx_event_t *ev);
static void ngx_hopgate_pg_timer(ngx_event_t *ev);
static void ngx_hopgate_pg_kick_handler(ngx_event_t *ev);
static void ngx_hopgate_pg_kick(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_send_next(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_flush(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_read(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_notifies(ngx_hopgate_pg_t *pg);
static void ngx_hopgate_pg_finish(ngx_hopgate_pg_query_t *q,
    const char *err);
static void ngx_hopgate_pg_fail_queue(ngx_hopgate_pg_t *pg,
    const char *why);
static void ngx_hopgate_pg_query_timer(ngx_event_t *ev);
static void ngx_hopgate_pg_query_free(ngx_hopgate_pg_query_t *q);
static void ngx_hopgate_pg_notice(void *arg, const char *message);


void
ngx_hopgate_pg_start(ngx_hopgate_pg_t *pg)
{
    ngx_queue_init(&pg->queue);

    pg->timer.handler = ngx_hopgate_pg_timer;
    pg->timer.data = pg;
    pg->timer.log = pg->log;
    pg->timer.cancelable = 1;

    pg->kick.handler = ngx_hopgate_pg_kick_handler;
    pg->kick.data = pg;
    pg->kick.log = pg->log;

    ngx_hopgate_pg_connect(pg);
}


void
ngx_hopgate_pg_stop(ngx_hopgate_pg_t *pg)
{
    ngx_queue_t             *q;
    ngx_hopgate_pg_query_t  *query;

    pg->stopped = 1;

    if (pg->timer.timer_set) {
        ngx_del_timer(&pg->timer);
    }

    if (pg->kick.posted) {
        ngx_delete_posted_event(&pg->kick);
    }

    ngx_hopgate_pg_unwatch(pg);

    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    if (pg->active) {
        ngx_hopgate_pg_query_free(pg->active);
        pg->active = NULL;
    }

    while (!ngx_queue_empty(&pg->queue)) {
        q = ngx_queue_head(&pg->queue);
        query = ngx_queue_data(q, ngx_hopgate_pg_query_t, link);
        ngx_hopgate_pg_query_free(query);
    }

    pg->state = NGX_HOPGATE_PG_DOWN;
}


static void
ngx_hopgate_pg_connect(ngx_hopgate_pg_t *pg)
{
    const char  *keywords[3], *values[3];

    /* the owner's string, expanded; a name for pg_stat_activity */
    keywords[0] = "dbname";
    values[0] = pg->conninfo;
    keywords[1] = "fallback_application_name";
    values[1] = pg->application;
    keywords[2] = NULL;
    values[2] = NULL;

    pg->conn = PQconnectStartParams(keywords, values, 1);

    if (pg->conn == NULL || PQstatus(pg->conn) == CONNECTION_BAD) {
        ngx_hopgate_pg_reset(pg, pg->conn ? PQerrorMessage(pg->conn)
                                          : "out of memory");
        return;
    }

    /* the server's notices go to nginx's debug log, not to stderr */
    PQsetNoticeProcessor(pg->conn, ngx_hopgate_pg_notice, pg);

    pg->state = NGX_HOPGATE_PG_CONNECTING;
    ngx_add_timer(&pg->timer, pg->timeout);

    /* before the first poll, libpq says: act as if it wanted to write */
    if (ngx_hopgate_pg_watch(pg, 0, 1) != NGX_OK) {
        ngx_hopgate_pg_reset(pg, "cannot watch the socket");
    }
}


static void
ngx_hopgate_pg_connect_poll(ngx_hopgate_pg_t *pg)
{
    ngx_int_t  rc;

    switch (PQconnectPoll(pg->conn)) {

    case PGRES_POLLING_READING:
        rc = ngx_hopgate_pg_watch(pg, 1, 0);
        break;

    case PGRES_POLLING_WRITING:
        rc = ngx_hopgate_pg_watch(pg, 0, 1);
        break;

    case PGRES_POLLING_OK:

        if (PQsetnonblocking(pg->conn, 1) != 0
            || ngx_hopgate_pg_watch(pg, 1, 0) != NGX_OK)
        {
            ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
            return;
        }

        if (pg->timer.timer_set) {
            ngx_del_timer(&pg->timer);
        }

        if (pg->failures) {
            ngx_log_error(NGX_LOG_NOTICE, pg->log, 0,
                          "hopgate: %s connection to PostgreSQL is back "
                          "after %ui failed attempts", pg->name,
                          pg->failures);
        }

        pg->failures = 0;
        pg->backoff = 0;
        pg->state = NGX_HOPGATE_PG_SETUP;
        pg->setup(pg);
        ngx_hopgate_pg_kick(pg);
        return;

    default: /* PGRES_POLLING_FAILED */
        ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
        return;
    }

    if (rc != NGX_OK) {
        ngx_hopgate_pg_reset(pg, "cannot watch the socket");
    }
}


static void
ngx_hopgate_pg_notice(void *arg, const char *message)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ((ngx_hopgate_pg_t *) arg)->log, 0,
                   "hopgate: %s: PostgreSQL says: %s",
                   ((ngx_hopgate_pg_t *) arg)->name, message);
}


/* the owner's setup queries are done: the rest of the queue may go */
void
ngx_hopgate_pg_ready(ngx_hopgate_pg_t *pg)
{
    if (pg->state == NGX_HOPGATE_PG_SETUP) {
        pg->state = NGX_HOPGATE_PG_READY;
        ngx_hopgate_pg_kick(pg);
    }
}


/*
 * Drop the connection and try again: at once after losing a working
 * connection, with a growing delay after failed attempts. A failed attempt
 * fails the queue too: the database is down, and waiting queries should
 * hear so now rather than at their timeouts.
 */
void
ngx_hopgate_pg_reset(ngx_hopgate_pg_t *pg, const char *why)
{
    u_char                   msg[256], *p, *last;
    ngx_msec_t               delay;
    ngx_uint_t               established;
    ngx_hopgate_pg_query_t  *q;

    last = ngx_cpymem(msg, why, ngx_min(ngx_strlen(why), sizeof(msg) - 1));
    *last = '\0';

    /* libpq's messages end with a newline, and may have several lines */
    for (p = msg; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = (p[1] == '\0') ? '\0' : ' ';
        }
    }

    established = pg->state >= NGX_HOPGATE_PG_SETUP;

    ngx_hopgate_pg_unwatch(pg);

    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    if (pg->timer.timer_set) {
        ngx_del_timer(&pg->timer);
    }

    pg->state = NGX_HOPGATE_PG_DOWN;

    q = pg->active;
    pg->active = NULL;

    if (established) {
        ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                      "hopgate: %s connection to PostgreSQL lost: %s",
                      pg->name, msg);
        delay = 0;

    } else {
        if (pg->failures++ == 0) {
            ngx_log_error(NGX_LOG_ERR, pg->log, 0,
                          "hopgate: %s connection to PostgreSQL failed: %s",
                          pg->name, msg);
        } else {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pg->log, 0,
                           "hopgate: %s connection failed again: %s",
                           pg->name, msg);
        }

        pg->backoff = pg->backoff ? ngx_min(pg->backoff * 2,
                                            NGX_HOPGATE_PG_BACKOFF_MAX)
                                  : NGX_HOPGATE_PG_BACKOFF_MIN;
        delay = pg->backoff - pg->backoff / 4
                + (ngx_msec_t) ngx_random() % (pg->backoff / 2 + 1);
    }

    ngx_add_timer(&pg->timer, delay);

    if (q) {
        ngx_hopgate_pg_finish(q, (char *) msg);
    }

    if (!established) {
        ngx_hopgate_pg_fail_queue(pg, (char *) msg);
    }

    if (pg->down) {
        pg->down(pg);
    }
}


/* watch libpq's current socket for reading and/or writing */
static ngx_int_t
ngx_hopgate_pg_watch(ngx_hopgate_pg_t *pg, ngx_uint_t read, ngx_uint_t write)
{
    int                fd, dupfd;
    ngx_connection_t  *c;
    struct stat        st;

    fd = PQsocket(pg->conn);
    if (fd < 0 || fstat(fd, &st) == -1) {
        return NGX_ERROR;
    }

    c = pg->c;

    if (c && (pg->sock_dev != st.st_dev || pg->sock_ino != st.st_ino)) {
        /* libpq moved to another socket (the next address or host) */
        ngx_hopgate_pg_unwatch(pg);
        c = NULL;
    }

    if (c == NULL) {
        dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dupfd == -1) {
            ngx_log_error(NGX_LOG_ALERT, pg->log, ngx_errno,
                          "hopgate: dup() of the PostgreSQL socket failed");
            return NGX_ERROR;
        }

        c = ngx_get_connection(dupfd, pg->log);
        if (c == NULL) {
            close(dupfd);
            return NGX_ERROR;
        }

        c->data = pg;
        c->log = pg->log;
        c->read->log = pg->log;
        c->write->log = pg->log;
        c->read->handler = ngx_hopgate_pg_io;
        c->write->handler = ngx_hopgate_pg_io;

        pg->sock_dev = st.st_dev;
        pg->sock_ino = st.st_ino;
        pg->c = c;
    }

    if (read && !c->read->active) {
        if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!read && c->read->active) {
        if (ngx_del_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (write && !c->write->active) {
        if (ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (!write && c->write->active) {
        if (ngx_del_event(c->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    pg->polling_write = write;

    return NGX_OK;
}


static void
ngx_hopgate_pg_unwatch(ngx_hopgate_pg_t *pg)
{
    if (pg->c) {
        /* closes our dup only; libpq's socket is libpq's */
        ngx_close_connection(pg->c);
        pg->c = NULL;
    }
}


static void
ngx_hopgate_pg_io(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;
    ngx_hopgate_pg_t  *pg = c->data;

    switch (pg->state) {

    case NGX_HOPGATE_PG_CONNECTING:
        ngx_hopgate_pg_connect_poll(pg);
        return;

    case NGX_HOPGATE_PG_SETUP:
    case NGX_HOPGATE_PG_READY:
        if (ev->write) {
            ngx_hopgate_pg_flush(pg);
        } else {
            ngx_hopgate_pg_read(pg);
        }
        return;

    default:
        return;
    }
}


static void
ngx_hopgate_pg_timer(ngx_event_t *ev)
{
    ngx_hopgate_pg_t  *pg = ev->data;

    if (pg->state == NGX_HOPGATE_PG_DOWN) {
        ngx_hopgate_pg_connect(pg);
        return;
    }

    if (pg->state == NGX_HOPGATE_PG_CONNECTING) {
        ngx_hopgate_pg_reset(pg, "connection timed out");
    }
}


/* ---- queries ---------------------------------------------------------- */

ngx_hopgate_pg_query_t *
ngx_hopgate_pg_query(ngx_hopgate_pg_t *pg, const char *sql, int nparams,
    const char **values, ngx_uint_t flags, ngx_hopgate_pg_done_pt done,
    void *data)
{
    int                      i;
    u_char                  *p;
    size_t                   size;
    ngx_hopgate_pg_query_t  *q;

    if (nparams > NGX_HOPGATE_PG_MAX_PARAMS) {
        return NULL;
    }

    size = sizeof(ngx_hopgate_pg_query_t);
    for (i = 0; i < nparams; i++) {
        size += ngx_strlen(values[i]) + 1;
    }

    q = ngx_calloc(size, pg->log);
    if (q == NULL) {
        return NULL;
    }

    q->pg = pg;
    q->sql = sql;
    q->nparams = nparams;
    q->flags = flags;
    q->done = done;
    q->data = data;

    p = q->storage;
    for (i = 0; i < nparams; i++) {
        q->values[i] = (char *) p;
        p = ngx_cpymem(p, values[i], ngx_strlen(values[i]) + 1);
    }

    q->timer.handler = ngx_hopgate_pg_query_timer;
    q->timer.data = q;
    q->timer.log = pg->log;
    q->timer.cancelable = 1;
    ngx_add_timer(&q->timer, pg->timeout);

    if (flags & NGX_HOPGATE_PG_SETUP_QUERY) {
        ngx_queue_insert_head(&pg->queue, &q->link);
    } else {
        ngx_queue_insert_tail(&pg->queue, &q->link);
    }

    q->queued = 1;

    ngx_hopgate_pg_kick(pg);

    return q;
}


void
ngx_hopgate_pg_cancel(ngx_hopgate_pg_query_t *q)
{
    q->done = NULL;

    /* a query in flight stays until its answer (or timeout) clears it */
    if (!q->sent) {
        ngx_hopgate_pg_query_free(q);
    }
}


static void
ngx_hopgate_pg_query_free(ngx_hopgate_pg_query_t *q)
{
    if (q->queued) {
        ngx_queue_remove(&q->link);
    }

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    if (q->result) {
        PQclear(q->result);
    }

    ngx_free(q);
}


static void
ngx_hopgate_pg_query_timer(ngx_event_t *ev)
{
    ngx_hopgate_pg_query_t  *q = ev->data;
    ngx_hopgate_pg_t        *pg = q->pg;

    if (pg->active == q) {
        /*
         * no way to get this connection back without waiting (PQcancel
         * blocks): drop it; the server's statement_timeout ends the query
         */
        ngx_hopgate_pg_reset(pg, "query timed out");
        return;
    }

    ngx_hopgate_pg_finish(q, "timed out waiting for the database");
}


static void
ngx_hopgate_pg_kick(ngx_hopgate_pg_t *pg)
{
    if (!pg->kick.posted && !pg->stopped) {
        ngx_post_event(&pg->kick, &ngx_posted_events);
    }
}


static void
ngx_hopgate_pg_kick_handler(ngx_event_t *ev)
{
    ngx_hopgate_pg_send_next(ev->data);
}


static void
ngx_hopgate_pg_send_next(ngx_hopgate_pg_t *pg)
{
    int                      ok;
    ngx_queue_t             *link;
    ngx_hopgate_pg_query_t  *q;

    if (pg->active || ngx_queue_empty(&pg->queue)) {
        return;
    }

    link = ngx_queue_head(&pg->queue);
    q = ngx_queue_data(link, ngx_hopgate_pg_query_t, link);

    if (pg->state != NGX_HOPGATE_PG_READY
        && !(pg->state == NGX_HOPGATE_PG_SETUP
             && (q->flags & NGX_HOPGATE_PG_SETUP_QUERY)))
    {
        return;
    }

    ngx_queue_remove(link);
    q->queued = 0;

    if (q->flags & NGX_HOPGATE_PG_SIMPLE_QUERY) {
        ok = PQsendQuery(pg->conn, q->sql);

    } else {
        ok = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL,
                               q->values, NULL, NULL, 0);
    }

    q->sent = 1;
    pg->active = q;

    if (!ok) {
        ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
        return;
    }

    ngx_hopgate_pg_flush(pg);
}


static void
ngx_hopgate_pg_flush(ngx_hopgate_pg_t *pg)
{
    int  rc;

    rc = PQflush(pg->conn);

    if (rc == -1) {
        ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
        return;
    }

    if ((ngx_uint_t) rc != pg->polling_write
        && ngx_hopgate_pg_watch(pg, 1, rc == 1) != NGX_OK)
    {
        ngx_hopgate_pg_reset(pg, "cannot watch the socket");
    }
}


static void
ngx_hopgate_pg_read(ngx_hopgate_pg_t *pg)
{
    PGresult                *res;
    ExecStatusType           status;
    ngx_hopgate_pg_query_t  *q;

    if (PQconsumeInput(pg->conn) == 0) {
        ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
        return;
    }

    ngx_hopgate_pg_notifies(pg);

    while (pg->active && !PQisBusy(pg->conn)) {
        q = pg->active;
        res = PQgetResult(pg->conn);

        if (res == NULL) {
            /* the query is complete */
            pg->active = NULL;

            status = q->result ? PQresultStatus(q->result)
                               : PGRES_FATAL_ERROR;

            ngx_hopgate_pg_finish(q,
                (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK
                 || status == PGRES_EMPTY_QUERY)
                ? NULL
                : (q->result ? PQresultErrorMessage(q->result)
                             : PQerrorMessage(pg->conn)));

            if (pg->state == NGX_HOPGATE_PG_DOWN || pg->stopped) {
                return;
            }

            ngx_hopgate_pg_kick(pg);
            break;
        }

        /* several statements: keep the first failure, else the last */
        status = PQresultStatus(res);

        if (q->result == NULL) {
            q->result = res;

        } else if (PQresultStatus(q->result) != PGRES_FATAL_ERROR
                   && (status == PGRES_FATAL_ERROR
                       || status == PGRES_TUPLES_OK
                       || status == PGRES_COMMAND_OK))
        {
            PQclear(q->result);
            q->result = res;

        } else {
            PQclear(res);
        }
    }

    if (pg->state != NGX_HOPGATE_PG_DOWN && !pg->stopped) {
        ngx_hopgate_pg_notifies(pg);

        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            ngx_hopgate_pg_reset(pg, PQerrorMessage(pg->conn));
        }
    }
}


static void
ngx_hopgate_pg_notifies(ngx_hopgate_pg_t *pg)
{
    PGnotify  *n;

    while (pg->conn && (n = PQnotifies(pg->conn)) != NULL) {
        if (pg->notify) {
            pg->notify(pg, n->relname, n->extra);
        }

        PQfreemem(n);

        if (pg->state == NGX_HOPGATE_PG_DOWN || pg->stopped) {
            return;
        }
    }
}


/* the query is over: tell its owner (unless cancelled) and free it */
static void
ngx_hopgate_pg_finish(ngx_hopgate_pg_query_t *q, const char *err)
{
    ngx_hopgate_pg_done_pt  done;

    if (q->queued) {
        ngx_queue_remove(&q->link);
        q->queued = 0;
    }

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    done = q->done;
    q->done = NULL;

    if (done) {
        done(q->data, q->result, err);
    }

    ngx_hopgate_pg_query_free(q);
}


static void
ngx_hopgate_pg_fail_queue(ngx_hopgate_pg_t *pg, const char *why)
{
    ngx_queue_t             *link;
    ngx_hopgate_pg_query_t  *q;

    while (!ngx_queue_empty(&pg->queue)) {
        link = ngx_queue_head(&pg->queue);
        q = ngx_queue_data(link, ngx_hopgate_pg_query_t, link);
        ngx_hopgate_pg_finish(q, why);
    }
}
