/*
 * The TCP carrier of a session, for networks that drop UDP: a TCP
 * connection to the edge's hopgate_tunnel location (--tcp-server, port
 * 443 by default), through an HTTP proxy's CONNECT when one is set, TLS
 * with the same trust as DTLS (--ca, --pin, the system store; an IP
 * address must be in the certificate's IP SANs) and ALPN http/1.1, then
 * "GET /.hopgate/tunnel" with "Upgrade: hopgate/1"; after the 101, the
 * engine's stream carrier (hg_conn_recv_bytes, hg_conn_send_bytes).
 *
 * Everything is non-blocking on the agent's epoll loop. The engine is
 * asked for packets only while the write buffer has room, so a slow edge
 * fills it, then the streams' send buffers, and the local targets are
 * read no faster than the edge takes their bytes.
 */

#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "agent.h"


#define AGENT_TCP_READ   (32 * 1024)


typedef enum {
    AGENT_TCP_CONNECTING = 0,     /* connect() in progress */
    AGENT_TCP_PROXY,              /* CONNECT sent: the proxy's answer */
    AGENT_TCP_TLS,                /* the handshake */
    AGENT_TCP_UPGRADE,            /* the GET sent: the edge's answer */
    AGENT_TCP_TUNNEL              /* packets */
} agent_tcp_phase_t;

struct agent_tcp_s {
    agent_tcp_phase_t  phase;
    SSL               *ssl;
    uint8_t           *out;
    size_t             out_pos;
    size_t             out_len;
    char               head[AGENT_TCP_HEAD_MAX + 1];
    size_t             head_len;
    uint32_t           events;        /* epoll interest now */
    uint32_t           tls_want;      /* what the handshake waits for */
};


static int agent_tcp_connected(agent_session_t *s);
static void agent_tcp_proxy_request(agent_session_t *s);
static int agent_tcp_head(agent_session_t *s, const char *who);
static void agent_tcp_tls_start(agent_session_t *s);
static void agent_tcp_tls_step(agent_session_t *s);
static void agent_tcp_tls_failed(agent_session_t *s, int rc);
static void agent_tcp_upgrade_request(agent_session_t *s);
static void agent_tcp_read(agent_session_t *s);
static int agent_tcp_write(agent_session_t *s);
static void agent_tcp_interest(agent_session_t *s);
static void agent_tcp_lost(agent_session_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


/* --tcp-server, its TLS context and the proxy, from the settings */
int
agent_tcp_setup(agent_t *a, const agent_config_t *cfg)
{
    hg_tls_client_opts_t  opts;
    SSL_CTX              *ctx;
    agent_proxy_t         proxy;
    char                  err[512], host[256];
    const char           *colon;

    if (cfg->tcp_server) {
        agent_split_host(cfg->tcp_server, host, sizeof(host));
        colon = strrchr(cfg->tcp_server, ':');
        snprintf(a->tcp_port, sizeof(a->tcp_port), "%s", colon + 1);

    } else {
        agent_split_host(cfg->server, host, sizeof(host));
        snprintf(a->tcp_port, sizeof(a->tcp_port), "443");
    }

    snprintf(a->tcp_host, sizeof(a->tcp_host), "%s", host);

    if (agent_proxy_choose(&proxy, cfg->proxy, a->tcp_host, err,
                           sizeof(err))
        != HG_OK)
    {
        agent_log(AGENT_LOG_ERROR, "%s", err);
        return -1;
    }

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = cfg->ca;
    opts.pin_sha256 = cfg->pin;
    opts.insecure = cfg->insecure;
    opts.server_name = cfg->server_name ? cfg->server_name : a->tcp_host;
    opts.stream = 1;

    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (ctx == NULL) {
        agent_log(AGENT_LOG_ERROR, "%s", err);
        return -1;
    }

    if (a->tls) {
        SSL_CTX_free(a->tls);
    }

    a->tls = ctx;
    a->proxy = proxy;

    return 0;
}


/* ---- connecting ------------------------------------------------------------ */

int
agent_tcp_start(agent_session_t *s)
{
    agent_t          *a = s->agent;
    agent_tcp_t      *t;
    struct addrinfo   hints, *res;
    const char       *host, *port;
    int               rc, one;

    t = calloc(1, sizeof(agent_tcp_t));
    if (t == NULL) {
        return -1;
    }

    t->out = malloc(AGENT_TCP_OUT);
    if (t->out == NULL) {
        free(t);
        return -1;
    }

    s->tcp = t;

    host = a->proxy.set ? a->proxy.host : a->tcp_host;
    port = a->proxy.set ? a->proxy.port : a->tcp_port;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        agent_log(AGENT_LOG_WARN, "cannot resolve %s%s: %s",
                  a->proxy.set ? "the proxy " : "", host, gai_strerror(rc));
        return -1;
    }

    s->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK
                                   | SOCK_CLOEXEC, 0);
    if (s->fd == -1) {
        freeaddrinfo(res);
        return -1;
    }

    one = 1;
    (void) setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    rc = connect(s->fd, res->ai_addr, res->ai_addrlen);
    memcpy(&s->peer, res->ai_addr, res->ai_addrlen);
    s->peerlen = res->ai_addrlen;
    freeaddrinfo(res);

    if (rc == -1 && errno != EINPROGRESS) {
        close(s->fd);
        s->fd = -1;
        agent_log(AGENT_LOG_WARN, "cannot connect to %s:%s: %s", host, port,
                  strerror(errno));
        return -1;
    }

    s->tag.kind = AGENT_FD_TUNNEL;
    t->phase = AGENT_TCP_CONNECTING;
    t->events = EPOLLOUT;

    if (agent_watch(a, s->fd, t->events, &s->tag) != 0) {
        close(s->fd);
        s->fd = -1;
        return -1;
    }

    if (a->proxy.set) {
        agent_log(AGENT_LOG_DEBUG, "connecting through the proxy %s",
                  a->proxy.shown);
    }

    return 0;
}


void
agent_tcp_io(agent_session_t *s, uint32_t events)
{
    agent_tcp_t  *t = s->tcp;

    if (t == NULL || s->state == AGENT_SS_DEAD || hg_conn_is_closed(s->conn))
    {
        return;
    }

    switch (t->phase) {

    case AGENT_TCP_CONNECTING:
        if (agent_tcp_connected(s) != 0) {
            return;
        }

        if (s->agent->proxy.set) {
            agent_tcp_proxy_request(s);
        } else {
            agent_tcp_tls_start(s);
        }
        break;

    case AGENT_TCP_PROXY:
        if (events & EPOLLOUT) {
            if (agent_tcp_write(s) != 0) {
                return;
            }
        }

        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            agent_tcp_read(s);
        }
        break;

    case AGENT_TCP_TLS:
        agent_tcp_tls_step(s);
        break;

    case AGENT_TCP_UPGRADE:
    case AGENT_TCP_TUNNEL:
        agent_tcp_read(s);
        if (s->tcp && s->tcp->phase == AGENT_TCP_TUNNEL) {
            agent_session_events(s);
        }
        agent_tcp_flush(s);
        return;
    }

    if (s->tcp) {
        agent_tcp_interest(s);
    }
}


static int
agent_tcp_connected(agent_session_t *s)
{
    agent_t    *a = s->agent;
    int         err;
    socklen_t   len;

    err = 0;
    len = sizeof(err);

    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
        err = errno;
    }

    if (err == 0) {
        return 0;
    }

    if (a->proxy.set) {
        agent_tcp_lost(s, "cannot connect to the proxy %s: %s",
                       a->proxy.shown, strerror(err));
    } else {
        agent_tcp_lost(s, "cannot connect to %s:%s: %s", a->tcp_host,
                       a->tcp_port, strerror(err));
    }

    return -1;
}


static void
agent_tcp_proxy_request(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    char          auth[800], target[300];
    int           n;

    snprintf(target, sizeof(target), strchr(a->tcp_host, ':') ? "[%s]:%s"
                                                               : "%s:%s",
             a->tcp_host, a->tcp_port);

    auth[0] = '\0';
    if (a->proxy.auth) {
        memcpy(auth, "Proxy-Authorization: ", 21);
        if (agent_proxy_authorization(&a->proxy, auth + 21,
                                      sizeof(auth) - 24)
            != HG_OK)
        {
            agent_tcp_lost(s, "the proxy's user and password are too long");
            return;
        }
        strcat(auth, "\r\n");
    }

    n = snprintf((char *) t->out, AGENT_TCP_OUT,
                 "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s"
                 "User-Agent: hopgate-agent/%s\r\n\r\n",
                 target, target, auth, HG_VERSION_STRING);

    t->out_pos = 0;
    t->out_len = (size_t) n;
    t->head_len = 0;
    t->phase = AGENT_TCP_PROXY;

    (void) agent_tcp_write(s);
}


/*
 * The response head read so far: 1 when it is whole, 0 while it is not,
 * -1 when it is too long (the session failed).
 */
static int
agent_tcp_head(agent_session_t *s, const char *who)
{
    agent_tcp_t  *t = s->tcp;

    t->head[t->head_len] = '\0';

    if (strstr(t->head, "\r\n\r\n") != NULL) {
        return 1;
    }

    if (t->head_len == AGENT_TCP_HEAD_MAX) {
        agent_tcp_lost(s, "%s sent a response head over %d bytes", who,
                       AGENT_TCP_HEAD_MAX);
        return -1;
    }

    return 0;
}


/* "HTTP/1.1 403 Forbidden": the code and the line, for messages */
static int
agent_tcp_status(const char *head, char *line, size_t cap)
{
    size_t  n;

    n = strcspn(head, "\r\n");
    snprintf(line, cap, "%.*s", (int) (n < 200 ? n : 200), head);

    if (strncmp(head, "HTTP/1.", 7) != 0 || strlen(head) < 12) {
        return -1;
    }

    return atoi(head + 9);
}


static void
agent_tcp_proxy_answer(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    char          line[256], *end;
    int           code;

    code = agent_tcp_status(t->head, line, sizeof(line));

    if (code == 200) {
        end = strstr(t->head, "\r\n\r\n");
        if ((size_t) (end + 4 - t->head) != t->head_len) {
            agent_tcp_lost(s, "the proxy %s sent bytes before TLS began",
                           a->proxy.shown);
            return;
        }

        agent_log(AGENT_LOG_DEBUG, "the proxy %s connected us to %s:%s",
                  a->proxy.shown, a->tcp_host, a->tcp_port);
        agent_tcp_tls_start(s);
        return;
    }

    /* 407, as RFC 9110 has it; some proxies (tinyproxy) answer 401 */
    if (code == 407 || code == 401) {
        agent_tcp_lost(s, "the proxy %s wants %s credentials (\"%s\"): "
                       "give them as --proxy http://USER:PASS@%s:%s",
                       a->proxy.shown, a->proxy.auth ? "other" : "",
                       line, a->proxy.host, a->proxy.port);
        return;
    }

    agent_tcp_lost(s, "the proxy %s refused to connect us to %s:%s: \"%s\"",
                   a->proxy.shown, a->tcp_host, a->tcp_port, line);
}


/* ---- TLS --------------------------------------------------------------------- */

static void
agent_tcp_tls_start(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    const char   *sni;

    t->ssl = SSL_new(a->tls);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, s->fd) != 1) {
        agent_tcp_lost(s, "cannot start TLS");
        return;
    }

    /* SNI carries host names only; the context checks the identity */
    sni = a->cfg.server_name ? a->cfg.server_name : a->tcp_host;
    if (!agent_is_ip(sni)) {
        (void) SSL_set_tlsext_host_name(t->ssl, sni);
    }

    t->phase = AGENT_TCP_TLS;
    t->out_pos = 0;
    t->out_len = 0;

    agent_tcp_tls_step(s);
}


static void
agent_tcp_tls_step(agent_session_t *s)
{
    agent_tcp_t  *t = s->tcp;
    int           rc, err;

    ERR_clear_error();
    rc = SSL_connect(t->ssl);

    if (rc == 1) {
        agent_log(AGENT_LOG_DEBUG, "TLS established with %s:%s (%s, %s)",
                  s->agent->tcp_host, s->agent->tcp_port,
                  SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
        agent_tcp_upgrade_request(s);
        return;
    }

    err = SSL_get_error(t->ssl, rc);

    if (err == SSL_ERROR_WANT_READ) {
        t->tls_want = EPOLLIN;
        return;
    }

    if (err == SSL_ERROR_WANT_WRITE) {
        t->tls_want = EPOLLIN | EPOLLOUT;
        return;
    }

    agent_tcp_tls_failed(s, err);
}


/* worded as the DTLS layer words it, so the same checks apply */
static void
agent_tcp_tls_failed(agent_session_t *s, int err)
{
    agent_t        *a = s->agent;
    char            why[512];
    long            result;
    unsigned long   e;
    const char     *reason;

    result = SSL_get_verify_result(s->tcp->ssl);
    e = ERR_peek_error();

    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL
        && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
    {
        if (result == X509_V_ERR_APPLICATION_VERIFICATION) {
            snprintf(why, sizeof(why),
                     "server public key does not match the pinned SHA-256");
        } else {
            snprintf(why, sizeof(why), "certificate verify failed: %s",
                     X509_verify_cert_error_string(result));
        }

    } else if (e != 0) {
        reason = ERR_reason_error_string(e);
        snprintf(why, sizeof(why), "TLS with %s:%s failed: %s",
                 a->tcp_host, a->tcp_port, reason ? reason : "unknown");

    } else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, sizeof(why), "%s:%s closed the connection during "
                 "the TLS handshake", a->tcp_host, a->tcp_port);

    } else {
        snprintf(why, sizeof(why), "TLS with %s:%s failed", a->tcp_host,
                 a->tcp_port);
    }

    ERR_clear_error();
    agent_session_failed(s, HG_CODE_TLS, why);
}


/* ---- the upgrade ------------------------------------------------------------- */

static void
agent_tcp_upgrade_request(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    char          host[300];
    int           n;

    if (strcmp(a->tcp_port, "443") == 0) {
        snprintf(host, sizeof(host), strchr(a->tcp_host, ':') ? "[%s]"
                                                              : "%s",
                 a->tcp_host);
    } else {
        snprintf(host, sizeof(host), strchr(a->tcp_host, ':') ? "[%s]:%s"
                                                              : "%s:%s",
                 a->tcp_host, a->tcp_port);
    }

    n = snprintf((char *) t->out, AGENT_TCP_OUT,
                 "GET " AGENT_TCP_PATH " HTTP/1.1\r\nHost: %s\r\n"
                 "Connection: Upgrade\r\nUpgrade: hopgate/1\r\n"
                 "User-Agent: hopgate-agent/%s\r\n\r\n",
                 host, HG_VERSION_STRING);

    t->out_pos = 0;
    t->out_len = (size_t) n;
    t->head_len = 0;
    t->phase = AGENT_TCP_UPGRADE;

    if (agent_tcp_write(s) == 0) {
        agent_tcp_interest(s);
    }
}


static void
agent_tcp_upgrade_answer(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    char          line[256], *end;
    size_t        rest;
    int           code;

    code = agent_tcp_status(t->head, line, sizeof(line));

    if (code != 101) {
        agent_tcp_lost(s, "https://%s:%s" AGENT_TCP_PATH " answered \"%s\" "
                       "to the tunnel upgrade%s", a->tcp_host, a->tcp_port,
                       line, code == 404 || code == 400 || code == 405
                       ? " (no hopgate_tunnel location there?)" : "");
        return;
    }

    t->phase = AGENT_TCP_TUNNEL;
    agent_log(AGENT_LOG_DEBUG, "the tunnel to %s:%s is open (HTTP Upgrade)",
              a->tcp_host, a->tcp_port);

    /* what followed the head is the tunnel's */
    end = strstr(t->head, "\r\n\r\n") + 4;
    rest = t->head_len - (size_t) (end - t->head);

    if (rest > 0) {
        (void) hg_conn_recv_bytes(s->conn, (uint8_t *) end, rest,
                                  agent_now());
    }
}


/* ---- the bytes ------------------------------------------------------------- */

static void
agent_tcp_read(agent_session_t *s)
{
    agent_t      *a = s->agent;
    agent_tcp_t  *t = s->tcp;
    uint8_t       buf[AGENT_TCP_READ];
    ssize_t       n;
    int           err, rc;

    for ( ;; ) {
        if (t->phase == AGENT_TCP_PROXY) {
            n = read(s->fd, t->head + t->head_len,
                     AGENT_TCP_HEAD_MAX - t->head_len);
            if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
                return;
            }

            if (n <= 0) {
                agent_tcp_lost(s, "the proxy %s closed the connection "
                               "before answering CONNECT", a->proxy.shown);
                return;
            }

            t->head_len += (size_t) n;

            rc = agent_tcp_head(s, "the proxy");
            if (rc == 1) {
                agent_tcp_proxy_answer(s);
            }
            if (rc != 0) {
                return;
            }
            continue;
        }

        ERR_clear_error();

        if (t->phase == AGENT_TCP_UPGRADE) {
            n = SSL_read(t->ssl, t->head + t->head_len,
                         (int) (AGENT_TCP_HEAD_MAX - t->head_len));
        } else {
            n = SSL_read(t->ssl, buf, sizeof(buf));
        }

        if (n <= 0) {
            err = SSL_get_error(t->ssl, (int) n);

            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                return;
            }

            if (t->phase == AGENT_TCP_UPGRADE) {
                agent_tcp_lost(s, "%s:%s closed the connection before "
                               "answering the tunnel upgrade", a->tcp_host,
                               a->tcp_port);
            } else {
                agent_tcp_lost(s, "the TCP connection to %s:%s %s",
                               a->tcp_host, a->tcp_port,
                               err == SSL_ERROR_ZERO_RETURN || n == 0
                               ? "was closed" : "failed");
            }
            return;
        }

        if (t->phase == AGENT_TCP_UPGRADE) {
            t->head_len += (size_t) n;

            rc = agent_tcp_head(s, a->tcp_host);
            if (rc == 1) {
                agent_tcp_upgrade_answer(s);
            }
            if (rc != 0) {
                return;
            }
            continue;
        }

        if (hg_conn_recv_bytes(s->conn, buf, (size_t) n, agent_now())
            != HG_OK)
        {
            agent_log(AGENT_LOG_WARN, "the edge at %s:%s broke the protocol "
                      "on the TCP carrier", a->tcp_host, a->tcp_port);
            return;
        }

        if (hg_conn_is_closed(s->conn)) {
            return;
        }
    }
}


/* the buffer out: 0, or -1 when the session failed */
static int
agent_tcp_write(agent_session_t *s)
{
    agent_tcp_t  *t = s->tcp;
    ssize_t       n;
    int           err;

    while (t->out_pos < t->out_len) {
        if (t->phase == AGENT_TCP_PROXY) {
            n = write(s->fd, t->out + t->out_pos, t->out_len - t->out_pos);
            if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
                return 0;
            }

            if (n <= 0) {
                agent_tcp_lost(s, "cannot write to the proxy %s: %s",
                               s->agent->proxy.shown, strerror(errno));
                return -1;
            }

        } else {
            ERR_clear_error();
            n = SSL_write(t->ssl, t->out + t->out_pos,
                          (int) (t->out_len - t->out_pos));

            if (n <= 0) {
                err = SSL_get_error(t->ssl, (int) n);
                if (err == SSL_ERROR_WANT_WRITE
                    || err == SSL_ERROR_WANT_READ)
                {
                    return 0;
                }

                agent_tcp_lost(s, "cannot write to %s:%s",
                               s->agent->tcp_host, s->agent->tcp_port);
                return -1;
            }
        }

        t->out_pos += (size_t) n;
    }

    t->out_pos = 0;
    t->out_len = 0;

    return 0;
}


/* the engine's packets into the buffer while it has room, then out */
void
agent_tcp_flush(agent_session_t *s)
{
    agent_tcp_t  *t = s->tcp;
    ssize_t       n;
    hg_time_t     now;

    if (t == NULL || s->conn == NULL || s->state == AGENT_SS_DEAD) {
        return;
    }

    if (t->phase != AGENT_TCP_TUNNEL) {
        if (t->phase == AGENT_TCP_UPGRADE) {
            (void) agent_tcp_write(s);
        }
        agent_tcp_interest(s);
        return;
    }

    now = agent_now();

    for ( ;; ) {
        if (t->out_pos > 0 && AGENT_TCP_OUT - t->out_len < 16384) {
            memmove(t->out, t->out + t->out_pos, t->out_len - t->out_pos);
            t->out_len -= t->out_pos;
            t->out_pos = 0;
        }

        n = 0;
        if (AGENT_TCP_OUT - t->out_len >= 512) {
            n = hg_conn_send_bytes(s->conn, t->out + t->out_len,
                                   AGENT_TCP_OUT - t->out_len, now);
            if (n > 0) {
                t->out_len += (size_t) n;
            }
        }

        if (t->out_pos == t->out_len) {
            break;
        }

        if (agent_tcp_write(s) != 0) {
            return;
        }

        /* the socket took less than there was: wait for EPOLLOUT */
        if (t->out_len > 0 || n <= 0) {
            break;
        }
    }

    agent_tcp_interest(s);
}


static void
agent_tcp_interest(agent_session_t *s)
{
    agent_tcp_t  *t = s->tcp;
    uint32_t      want;

    switch (t->phase) {

    case AGENT_TCP_CONNECTING:
        want = EPOLLOUT;
        break;

    case AGENT_TCP_TLS:
        want = t->tls_want;
        break;

    default:
        want = EPOLLIN | (t->out_pos < t->out_len ? EPOLLOUT : 0);
        break;
    }

    if (want != t->events) {
        t->events = want;
        (void) agent_rewatch(s->agent, s->fd, want, &s->tag);
    }
}


/*
 * The carrier failed: the session ends as if the engine had, with the
 * reason, so that the session manager decides about a redial.
 */
static void
agent_tcp_lost(agent_session_t *s, const char *fmt, ...)
{
    va_list  ap;
    char     why[512];

    /* a second failure of a carrier already given up says nothing new */
    if (s->state == AGENT_SS_DEAD || hg_conn_is_closed(s->conn)) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);

    agent_session_failed(s, HG_CODE_CARRIER, why);
}


void
agent_tcp_free(agent_session_t *s)
{
    agent_tcp_t  *t = s->tcp;

    if (t == NULL) {
        return;
    }

    if (t->ssl) {
        SSL_free(t->ssl);
    }

    free(t->out);
    free(t);
    s->tcp = NULL;
}
