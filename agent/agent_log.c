/*
 * Log lines: a timestamp, a level, a message; one line per stream with
 * what happened on it (method, path and status parsed from the bytes that
 * went by, sizes, duration).
 *
 * When stderr is the journal (systemd sets JOURNAL_STREAM to its device
 * and inode), a line is "<PRIORITY>message": the journal stamps the time
 * itself and takes the syslog priority from the prefix, so that
 * `journalctl -p warning` finds the warnings.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "agent.h"


static int  agent_log_level = AGENT_LOG_INFO;
static int  agent_log_journal = -1;              /* -1: not checked yet */

static const char  *agent_level_names[] = { "error", "warn", "info",
                                            "debug" };

/* syslog's LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const int    agent_level_prio[] = { 3, 4, 6, 7 };


/* JOURNAL_STREAM is inherited: it counts only while it names our stderr */
static int
agent_log_to_journal(void)
{
    const char          *v;
    unsigned long long   dev, ino;
    struct stat          st;

    v = getenv("JOURNAL_STREAM");

    if (v == NULL || sscanf(v, "%llu:%llu", &dev, &ino) != 2
        || fstat(2, &st) != 0)
    {
        return 0;
    }

    return (unsigned long long) st.st_dev == dev
           && (unsigned long long) st.st_ino == ino;
}


void
agent_log_init(int level)
{
    agent_log_level = level;

    if (agent_log_journal == -1) {
        agent_log_journal = agent_log_to_journal();
    }
}


void
agent_log(int level, const char *fmt, ...)
{
    va_list          ap;
    struct timespec  ts;
    struct tm        tm;
    char             stamp[32];

    if (level > agent_log_level) {
        return;
    }

    if (agent_log_journal == 1) {
        fprintf(stderr, "<%d>", agent_level_prio[level]);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    fprintf(stderr, "%s.%03ldZ %s ", stamp, ts.tv_nsec / 1000000,
            agent_level_names[level]);

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);

    fputc('\n', stderr);
}


/* keeps the first bytes of a direction to find the HTTP head in */
static size_t
agent_head_append(char *head, size_t cap, size_t len, const uint8_t *buf,
    size_t n)
{
    size_t  take;

    if (len + 1 >= cap) {
        return len;
    }

    take = cap - 1 - len < n ? cap - 1 - len : n;
    memcpy(head + len, buf, take);
    head[len + take] = '\0';

    return len + take;
}


/* "GET /path HTTP/1.1" from the bytes going to the target */
void
agent_parse_request(agent_stream_t *st, const uint8_t *buf, size_t n)
{
    char  *sp, *sp2;

    if (st->method[0]) {
        return;
    }

    st->head_down_len = agent_head_append(st->head_down,
                                          sizeof(st->head_down),
                                          st->head_down_len, buf, n);

    sp = strchr(st->head_down, ' ');
    if (sp == NULL || sp - st->head_down >= (long) sizeof(st->method)) {
        return;
    }

    sp2 = strchr(sp + 1, ' ');
    if (sp2 == NULL && strchr(sp + 1, '\r') == NULL
        && st->head_down_len + 1 < sizeof(st->head_down))
    {
        return;
    }

    snprintf(st->method, sizeof(st->method), "%.*s",
             (int) (sp - st->head_down), st->head_down);
    snprintf(st->path, sizeof(st->path), "%.*s",
             sp2 ? (int) (sp2 - sp - 1) : (int) strcspn(sp + 1, "\r\n"),
             sp + 1);
}


/* "HTTP/1.1 200 OK" from the bytes coming back */
void
agent_parse_response(agent_stream_t *st, const uint8_t *buf, size_t n)
{
    int  status;

    if (st->status) {
        return;
    }

    st->head_up_len = agent_head_append(st->head_up, sizeof(st->head_up),
                                        st->head_up_len, buf, n);

    if (sscanf(st->head_up, "HTTP/%*d.%*d %3d", &status) == 1) {
        st->status = status;
    }
}


void
agent_log_stream(const agent_stream_t *st, const char *outcome)
{
    hg_time_t  took;
    char       status[8];

    took = agent_now() - st->opened;

    if (st->status) {
        snprintf(status, sizeof(status), "%d", st->status);
    } else {
        snprintf(status, sizeof(status), "-");
    }

    agent_log(outcome ? AGENT_LOG_WARN : AGENT_LOG_INFO,
              "stream %lld %s %s %s req=%llu resp=%llu %.1fms client=%s "
              "request=%s%s%s",
              (long long) st->id, st->method[0] ? st->method : "-",
              st->path[0] ? st->path : "-", status,
              (unsigned long long) st->bytes_req,
              (unsigned long long) st->bytes_resp, (double) took / HG_MS,
              st->meta.client_addr[0] ? st->meta.client_addr : "-",
              st->meta.request_id[0] ? st->meta.request_id : "-",
              outcome ? " " : "", outcome ? outcome : "");
}
