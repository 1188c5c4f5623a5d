/*
 * An asynchronous PostgreSQL connection inside an nginx worker: libpq in
 * non-blocking mode (PQconnectStart/PQconnectPoll, PQsendQueryParams),
 * its socket in nginx's event loop, a queue of queries run one at a time,
 * a timeout on the connect and on every query, and reconnection with
 * backoff. Nothing here ever blocks the worker.
 *
 * Callbacks (setup, down, notify, a query's done) always run from nginx
 * events, never from within the call that queued the work.
 */

#ifndef NGX_HOPGATE_PG_H
#define NGX_HOPGATE_PG_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <libpq-fe.h>


#define NGX_HOPGATE_PG_MAX_PARAMS   4

/* query flags */
#define NGX_HOPGATE_PG_SIMPLE_QUERY       0x01    /* PQsendQuery: no parameters,
                                               several statements */
#define NGX_HOPGATE_PG_SETUP_QUERY        0x02    /* runs before the connection
                                               is declared ready */


typedef struct ngx_hopgate_pg_s        ngx_hopgate_pg_t;
typedef struct ngx_hopgate_pg_query_s  ngx_hopgate_pg_query_t;

/*
 * err is NULL on success, else why the query failed; res is the result
 * (the first failed one of several), or NULL when there is none
 * (connection lost, timed out). res is cleared when the callback returns.
 */
typedef void (*ngx_hopgate_pg_done_pt)(void *data, PGresult *res,
    const char *err);
typedef void (*ngx_hopgate_pg_event_pt)(ngx_hopgate_pg_t *pg);
typedef void (*ngx_hopgate_pg_notify_pt)(ngx_hopgate_pg_t *pg,
    const char *channel, const char *payload);


typedef enum {
    NGX_HOPGATE_PG_DOWN = 0,       /* no connection; a retry is scheduled */
    NGX_HOPGATE_PG_CONNECTING,
    NGX_HOPGATE_PG_SETUP,        /* connected, running setup queries */
    NGX_HOPGATE_PG_READY
} ngx_hopgate_pg_state_e;


struct ngx_hopgate_pg_s {
    /* set by the owner before ngx_hopgate_pg_start() */
    const char                  *conninfo;
    const char                  *name;       /* for logs */
    const char                  *application;    /* application_name,
                                                    unless conninfo sets
                                                    one */
    ngx_msec_t                   timeout;    /* connect, and each query */
    ngx_log_t                   *log;
    ngx_hopgate_pg_event_pt      setup;      /* connected: send setup
                                                queries, then call
                                                ngx_hopgate_pg_ready() */
    ngx_hopgate_pg_event_pt      down;       /* the connection was lost */
    ngx_hopgate_pg_notify_pt     notify;
    void                        *data;

    /* private */
    PGconn                      *conn;
    ngx_connection_t            *c;          /* watches a dup() of */
    dev_t                        sock_dev;   /* libpq's socket, this one */
    ino_t                        sock_ino;
    ngx_event_t                  timer;      /* connect timeout, retry */
    ngx_event_t                  kick;       /* posted: send what's queued */
    ngx_queue_t                  queue;
    ngx_hopgate_pg_query_t      *active;
    ngx_hopgate_pg_state_e       state;
    ngx_msec_t                   backoff;
    ngx_uint_t                   failures;   /* in a row, for the logs */
    unsigned                     polling_write:1;
    unsigned                     stopped:1;
};


struct ngx_hopgate_pg_query_s {
    ngx_queue_t                  link;
    ngx_hopgate_pg_t            *pg;
    ngx_event_t                  timer;
    ngx_hopgate_pg_done_pt       done;       /* NULL once cancelled */
    void                        *data;
    const char                  *sql;
    int                          nparams;
    const char                  *values[NGX_HOPGATE_PG_MAX_PARAMS];
    PGresult                    *result;
    ngx_uint_t                   flags;
    unsigned                     queued:1;
    unsigned                     sent:1;
    u_char                       storage[];  /* the parameters' text */
};


void ngx_hopgate_pg_start(ngx_hopgate_pg_t *pg);
void ngx_hopgate_pg_stop(ngx_hopgate_pg_t *pg);
void ngx_hopgate_pg_ready(ngx_hopgate_pg_t *pg);
void ngx_hopgate_pg_reset(ngx_hopgate_pg_t *pg, const char *why);

/*
 * Queue a query. values are NUL-terminated text parameters ($1...), copied;
 * sql must outlive the query (a literal). NULL on out-of-memory.
 */
ngx_hopgate_pg_query_t *ngx_hopgate_pg_query(ngx_hopgate_pg_t *pg,
    const char *sql, int nparams, const char **values, ngx_uint_t flags,
    ngx_hopgate_pg_done_pt done, void *data);

/* done will not be called; the query's answer, if any, is dropped */
void ngx_hopgate_pg_cancel(ngx_hopgate_pg_query_t *q);

#endif /* NGX_HOPGATE_PG_H */
