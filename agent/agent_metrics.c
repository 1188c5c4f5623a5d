/*
 * The agent's own metrics (--metrics HOST:PORT): a tiny HTTP/1.0 responder
 * on the event loop that answers GET /metrics in the Prometheus text
 * format (0.0.4): sessions by state and per edge worker, each worker's
 * RTT, open streams, and counters of reconnects, streams, and of the
 * local targets' errors, bytes and wake-ups. One request per connection; a client that sends nothing for a
 * few seconds is dropped, and a handful of connections at a time is all
 * it takes.
 */

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"


#define AGENT_METRICS_CONNS     16
#define AGENT_METRICS_TIMEOUT   (5 * HG_SEC)
#define AGENT_METRICS_REQUEST   2048


struct agent_metrics_conn_s {
    agent_t                 *agent;
    agent_fd_t               tag;
    int                      fd;
    int                      listening;
    hg_time_t                deadline;
    char                     in[AGENT_METRICS_REQUEST];
    size_t                   inlen;
    char                    *out;
    size_t                   outlen;
    size_t                   sent;
    agent_metrics_conn_t    *next;
};


/* a growing text buffer */
typedef struct {
    char                    *data;
    size_t                   len;
    size_t                   cap;
    int                      failed;
} agent_text_t;


static void agent_metrics_accept(agent_metrics_conn_t *l);
static void agent_metrics_read(agent_metrics_conn_t *c);
static void agent_metrics_write(agent_metrics_conn_t *c);
static void agent_metrics_close(agent_metrics_conn_t *c);


int
agent_metrics_start(agent_t *a)
{
    struct addrinfo        hints, *res;
    agent_metrics_conn_t  *l;
    char                   host[256];
    const char            *colon;
    size_t                 hostlen;
    int                    fd, rc, on;

    if (a->cfg.metrics == NULL) {
        return 0;
    }

    colon = strrchr(a->cfg.metrics, ':');
    hostlen = (size_t) (colon - a->cfg.metrics);

    if (a->cfg.metrics[0] == '[') {
        snprintf(host, sizeof(host), "%.*s", (int) hostlen - 2,
                 a->cfg.metrics + 1);
    } else {
        snprintf(host, sizeof(host), "%.*s", (int) hostlen, a->cfg.metrics);
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;

    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        agent_log(AGENT_LOG_ERROR, "--metrics %s: %s", a->cfg.metrics,
                  gai_strerror(rc));
        return -1;
    }

    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    on = 1;

    if (fd == -1
        || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1
        || bind(fd, res->ai_addr, res->ai_addrlen) == -1
        || listen(fd, AGENT_METRICS_CONNS) == -1)
    {
        agent_log(AGENT_LOG_ERROR, "--metrics %s: cannot listen: %s",
                  a->cfg.metrics, strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        freeaddrinfo(res);
        return -1;
    }

    freeaddrinfo(res);

    l = calloc(1, sizeof(agent_metrics_conn_t));
    if (l == NULL) {
        close(fd);
        return -1;
    }

    l->agent = a;
    l->fd = fd;
    l->listening = 1;
    l->deadline = HG_TIME_INFINITE;
    l->tag.kind = AGENT_FD_METRICS;
    l->tag.ptr = l;

    if (agent_watch(a, fd, EPOLLIN, &l->tag) != 0) {
        close(fd);
        free(l);
        return -1;
    }

    a->metrics = l;

    agent_log(AGENT_LOG_INFO, "metrics on http://%s/metrics",
              a->cfg.metrics);

    return 0;
}


void
agent_metrics_io(agent_metrics_conn_t *c, uint32_t events)
{
    if (c->listening) {
        agent_metrics_accept(c);
        return;
    }

    if (c->out == NULL && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        agent_metrics_read(c);
        return;
    }

    if (c->out && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
        agent_metrics_write(c);
    }
}


/* drops clients that keep a connection without finishing a request */
void
agent_metrics_tick(agent_t *a, hg_time_t now)
{
    agent_metrics_conn_t  *c, *next;

    if (a->metrics == NULL) {
        return;
    }

    for (c = a->metrics->next; c; c = next) {
        next = c->next;
        if (now >= c->deadline) {
            agent_metrics_close(c);
        }
    }
}


void
agent_metrics_stop(agent_t *a)
{
    agent_metrics_conn_t  *l = a->metrics;

    if (l == NULL) {
        return;
    }

    while (l->next) {
        agent_metrics_close(l->next);
    }

    agent_unwatch(a, l->fd);
    close(l->fd);
    free(l);
    a->metrics = NULL;
}


static void
agent_metrics_accept(agent_metrics_conn_t *l)
{
    agent_metrics_conn_t  *c;
    int                    fd, n;

    for ( ;; ) {
        fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            return;
        }

        n = 0;
        for (c = l->next; c; c = c->next) {
            n++;
        }

        c = n < AGENT_METRICS_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (c == NULL) {
            close(fd);
            continue;
        }

        c->agent = l->agent;
        c->fd = fd;
        c->deadline = agent_now() + AGENT_METRICS_TIMEOUT;
        c->tag.kind = AGENT_FD_METRICS;
        c->tag.ptr = c;

        if (agent_watch(l->agent, fd, EPOLLIN, &c->tag) != 0) {
            close(fd);
            free(c);
            continue;
        }

        c->next = l->next;
        l->next = c;
    }
}


static void
agent_metrics_close(agent_metrics_conn_t *c)
{
    agent_metrics_conn_t  *p;

    for (p = c->agent->metrics; p->next; p = p->next) {
        if (p->next == c) {
            p->next = c->next;
            break;
        }
    }

    agent_unwatch(c->agent, c->fd);
    close(c->fd);
    free(c->out);
    free(c);
}


/* ---- the text ---------------------------------------------------------- */

static void
agent_text(agent_text_t *t, const char *fmt, ...)
{
    va_list   ap;
    int       n;
    char     *p;
    size_t    cap;

    for ( ;; ) {
        if (t->failed) {
            return;
        }

        va_start(ap, fmt);
        n = vsnprintf(t->data ? t->data + t->len : NULL,
                      t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);

        if (n < 0) {
            t->failed = 1;
            return;
        }

        if (t->data && (size_t) n < t->cap - t->len) {
            t->len += (size_t) n;
            return;
        }

        cap = t->cap ? t->cap * 2 : 4096;
        while (cap < t->len + (size_t) n + 1) {
            cap *= 2;
        }

        p = realloc(t->data, cap);
        if (p == NULL) {
            t->failed = 1;
            return;
        }

        t->data = p;
        t->cap = cap;
    }
}


/* a label value: backslash, double quote and newline are escaped */
static const char *
agent_label(const char *in, char *out, size_t cap)
{
    size_t  n;

    for (n = 0; in && *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[n++] = '\\';
            out[n++] = *in;
        } else if (*in == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *in;
        }
    }

    out[n] = '\0';

    return out;
}


static void
agent_family(agent_text_t *t, const char *name, const char *type,
    const char *help)
{
    agent_text(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}


static void
agent_metrics_body(agent_t *a, agent_text_t *t)
{
    agent_session_t  *s;
    agent_stream_t   *st;
    hg_conn_stats_t   stats;
    char              domain[512], server[512];
    unsigned          states[AGENT_SS_DEAD + 1], carriers[2];
    uint64_t          streams;
    int               i, w, ready;

    memset(states, 0, sizeof(states));
    memset(carriers, 0, sizeof(carriers));
    streams = 0;

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        states[s->state]++;
        if (s->state == AGENT_SS_READY || s->state == AGENT_SS_DRAINING) {
            carriers[s->carrier == HG_CARRIER_STREAM]++;
        }
        for (st = s->stream_list; st; st = st->next) {
            streams++;
        }
    }

    agent_family(t, "hopgate_agent_info", "gauge",
                 "The agent's version, domain and edge.");
    agent_text(t, "hopgate_agent_info{version=\"%s\",domain=\"%s\","
               "server=\"%s\"} 1\n", HG_VERSION_STRING,
               agent_label(a->cfg.domain, domain, sizeof(domain)),
               agent_label(a->cfg.server, server, sizeof(server)));

    agent_family(t, "hopgate_agent_start_time_seconds", "gauge",
                 "When the agent started, in seconds since the epoch.");
    agent_text(t, "hopgate_agent_start_time_seconds %lld\n",
               (long long) a->started);

    agent_family(t, "hopgate_agent_edge_workers", "gauge",
                 "Worker processes the edge reported (0 before the first "
                 "session).");
    agent_text(t, "hopgate_agent_edge_workers %u\n", a->worker_count);

    agent_family(t, "hopgate_agent_sessions", "gauge",
                 "Sessions to the edge by state.");
    agent_text(t, "hopgate_agent_sessions{state=\"connecting\"} %u\n"
               "hopgate_agent_sessions{state=\"ready\"} %u\n"
               "hopgate_agent_sessions{state=\"draining\"} %u\n",
               states[AGENT_SS_CONNECTING], states[AGENT_SS_READY],
               states[AGENT_SS_DRAINING]);

    agent_family(t, "hopgate_agent_transport_sessions", "gauge",
                 "Ready and draining sessions by the carrier they ride.");
    agent_text(t, "hopgate_agent_transport_sessions{transport=\"udp\"} %u\n"
               "hopgate_agent_transport_sessions{transport=\"tcp\"} %u\n",
               carriers[0], carriers[1]);

    agent_family(t, "hopgate_agent_transport", "gauge",
                 "The carrier new sessions use (1), by name.");
    agent_text(t, "hopgate_agent_transport{transport=\"udp\"} %d\n"
               "hopgate_agent_transport{transport=\"tcp\"} %d\n",
               a->carrier == HG_CARRIER_DATAGRAM,
               a->carrier == HG_CARRIER_STREAM);

    agent_family(t, "hopgate_agent_transport_switches_total", "counter",
                 "Moves between UDP and TCP (--transport auto).");
    agent_text(t, "hopgate_agent_transport_switches_total %llu\n",
               (unsigned long long) a->switches);

    agent_family(t, "hopgate_agent_worker_sessions", "gauge",
                 "Ready sessions per edge worker (0: a worker not covered "
                 "yet).");

    for (w = 0; w < (int) a->worker_count; w++) {
        ready = 0;
        for (i = 0; i < a->nsessions; i++) {
            s = a->sessions[i];
            ready += s->state == AGENT_SS_READY && s->worker == w;
        }
        agent_text(t, "hopgate_agent_worker_sessions{worker=\"%d\"} %d\n",
                   w, ready);
    }

    agent_family(t, "hopgate_agent_worker_rtt_seconds", "gauge",
                 "Smoothed round-trip time of the session to each edge "
                 "worker.");

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        if (s->state != AGENT_SS_READY) {
            continue;
        }

        hg_conn_get_stats(s->conn, &stats);
        agent_text(t, "hopgate_agent_worker_rtt_seconds{worker=\"%d\"} "
                   "%.6f\n", s->worker, (double) stats.srtt / HG_SEC);
    }

    agent_family(t, "hopgate_agent_open_streams", "gauge",
                 "Streams being served from the local target now.");
    agent_text(t, "hopgate_agent_open_streams %llu\n",
               (unsigned long long) streams);

    agent_family(t, "hopgate_agent_reconnects_total", "counter",
                 "Times the agent scheduled a re-dial after a failure.");
    agent_text(t, "hopgate_agent_reconnects_total %llu\n",
               (unsigned long long) a->reconnects);

    agent_family(t, "hopgate_agent_streams_total", "counter",
                 "Streams (requests) the edge opened to this agent.");
    agent_text(t, "hopgate_agent_streams_total %llu\n",
               (unsigned long long) a->streams_total);

    agent_family(t, "hopgate_agent_target_errors_total", "counter",
                 "Streams the local target refused or reset.");
    agent_text(t, "hopgate_agent_target_errors_total %llu\n",
               (unsigned long long) a->target_errors);

    agent_family(t, "hopgate_agent_target_bytes_total", "counter",
                 "Bytes read from (response) and written to (request) "
                 "local targets.");
    agent_text(t, "hopgate_agent_target_bytes_total{direction=\"resp\"} "
               "%llu\nhopgate_agent_target_bytes_total{direction=\"req\"} "
               "%llu\n", (unsigned long long) a->target_read,
               (unsigned long long) a->target_written);

    agent_family(t, "hopgate_agent_target_wakeups_total", "counter",
                 "Times a local target's socket woke the agent to be read.");
    agent_text(t, "hopgate_agent_target_wakeups_total %llu\n",
               (unsigned long long) a->target_wakeups);
}


/* ---- the exchange ------------------------------------------------------ */

static void
agent_metrics_respond(agent_metrics_conn_t *c, const char *status,
    const char *type, agent_text_t *body, int head)
{
    agent_text_t  t;

    memset(&t, 0, sizeof(t));

    agent_text(&t, "HTTP/1.0 %s\r\nContent-Type: %s\r\n"
               "Content-Length: %zu\r\nConnection: close\r\n\r\n%.*s",
               status, type, body->len, head ? 0 : (int) body->len,
               body->data ? body->data : "");

    free(body->data);

    if (t.failed) {
        free(t.data);
        agent_metrics_close(c);
        return;
    }

    c->out = t.data;
    c->outlen = t.len;
    c->sent = 0;

    if (agent_rewatch(c->agent, c->fd, EPOLLOUT, &c->tag) != 0) {
        agent_metrics_close(c);
        return;
    }

    agent_metrics_write(c);
}


static void
agent_metrics_read(agent_metrics_conn_t *c)
{
    agent_text_t   body;
    ssize_t        n;
    size_t         len;
    char          *eol, *target;
    int            head;

    n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen, 0);

    if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }

    if (n <= 0) {
        agent_metrics_close(c);
        return;
    }

    c->inlen += (size_t) n;
    c->in[c->inlen] = '\0';

    /* the head is all we look at, and only its first line */
    if (strstr(c->in, "\r\n\r\n") == NULL && strstr(c->in, "\n\n") == NULL
        && c->inlen < sizeof(c->in) - 1)
    {
        return;
    }

    memset(&body, 0, sizeof(body));

    /* the request line: METHOD TARGET VERSION */
    eol = strpbrk(c->in, "\r\n");
    if (eol) {
        *eol = '\0';
    }

    head = strncmp(c->in, "HEAD ", 5) == 0;
    target = strchr(c->in, ' ');

    if (!head && strncmp(c->in, "GET ", 4) != 0) {
        agent_text(&body, "only GET and HEAD\n");
        agent_metrics_respond(c, "405 Method Not Allowed", "text/plain",
                              &body, 0);
        return;
    }

    target++;
    len = strcspn(target, " ?");

    if (len != sizeof("/metrics") - 1
        || strncmp(target, "/metrics", len) != 0)
    {
        agent_text(&body, "try /metrics\n");
        agent_metrics_respond(c, "404 Not Found", "text/plain", &body, head);
        return;
    }

    agent_metrics_body(c->agent, &body);

    if (body.failed) {
        free(body.data);
        agent_metrics_close(c);
        return;
    }

    agent_metrics_respond(c, "200 OK",
                          "text/plain; version=0.0.4; charset=utf-8", &body,
                          head);
}


static void
agent_metrics_write(agent_metrics_conn_t *c)
{
    ssize_t  n;

    while (c->sent < c->outlen) {
        n = send(c->fd, c->out + c->sent, c->outlen - c->sent, 0);

        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            break;
        }

        c->sent += (size_t) n;
    }

    agent_metrics_close(c);
}
