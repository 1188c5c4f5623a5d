/*
 * The agent's sessions: one per worker of the edge, so that a request
 * landing in any nginx worker finds a tunnel there. The first HELLO_ACK
 * tells the worker count; further sessions are aimed at the missing
 * workers through the datagram prefix (steered by the edge's reuseport
 * BPF program). When the edge cannot steer, a session lands on a worker
 * already covered; it is closed and the agent dials again from a new
 * source port, which hashes elsewhere.
 *
 * Over TCP (agent_tcp.c) nothing can be aimed: a connection lands on
 * whichever worker accepts it. HELLO then names the worker wanted, and
 * the edge refuses a session of ours in a worker we already cover
 * (HG_CODE_DUPLICATE), so the agent dials one TCP session at a time
 * until every worker is covered. Which carrier new sessions use is
 * agent_transport.c's decision; coverage counts the sessions of that
 * carrier only.
 *
 * Failures back off exponentially with jitter (fast first retry, capped,
 * reset after a stable period). A GOAWAY is answered by dialling the
 * replacement first; the old session finishes its streams.
 */

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/rand.h>
#include <openssl/x509.h>

#include "agent.h"


#define AGENT_DUPLICATE_BUDGET  32    /* coverage re-dials in a row */
#define AGENT_DUPLICATE_PAUSE   (200 * HG_MS)   /* then, between tries */


static void agent_session_free(agent_session_t *s);
static void agent_schedule_redial(agent_t *a, hg_time_t now, int failure);
static void agent_retire_covering(agent_t *a, agent_session_t *s);
static int agent_edge_restarting(const agent_t *a, hg_time_t now);
static int agent_session_refused(agent_session_t *s);


int
agent_random(void *ctx, uint8_t *buf, size_t len)
{
    (void) ctx;

    return RAND_bytes(buf, (int) len) == 1 ? 0 : -1;
}


/* xorshift for backoff jitter: not a secret */
static double
agent_jitter(agent_t *a)
{
    uint64_t  x;

    x = a->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    a->rng = x;

    return (double) (x >> 11) / (double) (1ULL << 53);
}


static int
agent_resolve(agent_t *a, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo   hints, *res;
    int               rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;

    rc = getaddrinfo(a->server_host, a->server_port, &hints, &res);
    if (rc != 0) {
        agent_log(AGENT_LOG_WARN, "cannot resolve %s: %s", a->server_host,
                  gai_strerror(rc));
        return -1;
    }

    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);

    return 0;
}


const char *
agent_carrier_name(hg_carrier_t carrier)
{
    return carrier == HG_CARRIER_STREAM ? "tcp" : "udp";
}


/* where a session's carrier goes, for messages */
static void
agent_session_endpoint(const agent_session_t *s, char *buf, size_t len)
{
    const agent_t  *a = s->agent;

    if (s->carrier == HG_CARRIER_STREAM) {
        snprintf(buf, len, "%s:%s over tcp", a->tcp_host, a->tcp_port);
    } else {
        snprintf(buf, len, "%s:%s", a->server_host, a->server_port);
    }
}


static int
agent_session_udp_open(agent_session_t *s, const hg_hello_t *hello,
    hg_time_t now)
{
    int          pmtu;
    agent_t     *a = s->agent;
    const char  *sni;

    if (agent_resolve(a, &s->peer, &s->peerlen) != 0) {
        return -1;
    }

    /* a new socket is a new source port: it hashes to some worker anew */
    s->fd = socket(s->peer.ss_family, SOCK_DGRAM | SOCK_NONBLOCK
                                      | SOCK_CLOEXEC, 0);
    if (s->fd == -1
        || connect(s->fd, (struct sockaddr *) &s->peer, s->peerlen) == -1)
    {
        agent_log(AGENT_LOG_WARN, "cannot open a UDP socket to %s:%s: %s",
                  a->server_host, a->server_port, strerror(errno));
        return -1;
    }

    /* never fragmented: a datagram too large for the path is refused */
    pmtu = IP_PMTUDISC_DO;
    (void) setsockopt(s->fd, s->peer.ss_family == AF_INET6 ? IPPROTO_IPV6
                                                           : IPPROTO_IP,
                      s->peer.ss_family == AF_INET6 ? IPV6_MTU_DISCOVER
                                                    : IP_MTU_DISCOVER,
                      &pmtu, sizeof(pmtu));

    /* SNI carries host names only; the TLS context checks the identity */
    sni = a->cfg.server_name ? a->cfg.server_name : a->server_host;
    if (agent_is_ip(sni)) {
        sni = NULL;
    }

    s->conn = hg_conn_client_new(&a->engine, a->ssl, sni, hello,
                                 (struct sockaddr *) &s->peer, s->peerlen,
                                 now);
    if (s->conn == NULL || agent_watch(a, s->fd, EPOLLIN, &s->tag) != 0) {
        agent_log(AGENT_LOG_ERROR, "cannot start a session");
        return -1;
    }

    return 0;
}


agent_session_t *
agent_session_dial(agent_t *a, hg_carrier_t carrier, int aimed_at,
    hg_time_t now)
{
    agent_session_t  *s;
    hg_hello_t        hello;
    int               rc;

    if (a->nsessions == AGENT_MAX_SESSIONS) {
        return NULL;
    }

    s = calloc(1, sizeof(agent_session_t));
    if (s == NULL) {
        return NULL;
    }

    s->agent = a;
    s->fd = -1;
    s->carrier = carrier;
    s->aimed_at = aimed_at;
    s->worker = -1;
    s->dialled = now;
    s->tag.kind = AGENT_FD_SESSION;
    s->tag.ptr = s;

    memset(&hello, 0, sizeof(hello));
    hello.domain = a->cfg.domain;
    hello.api_key = a->cfg.key;
    hello.agent_version = HG_VERSION_STRING;
    hello.agent_id = a->agent_id;
    hello.worker_hint = aimed_at;

    if (carrier == HG_CARRIER_STREAM) {
        s->conn = hg_conn_stream_client_new(&a->engine, &hello, now);
        rc = s->conn ? agent_tcp_start(s) : -1;

    } else {
        rc = agent_session_udp_open(s, &hello, now);
    }

    if (rc != 0) {
        agent_tcp_free(s);
        if (s->conn) {
            hg_conn_free(s->conn);
        }
        if (s->fd != -1) {
            close(s->fd);
        }
        free(s);
        return NULL;
    }

    a->sessions[a->nsessions++] = s;

    if (aimed_at >= 0) {
        agent_log(AGENT_LOG_DEBUG, "dialling %s:%s for worker %d over %s",
                  carrier == HG_CARRIER_STREAM ? a->tcp_host
                                               : a->server_host,
                  carrier == HG_CARRIER_STREAM ? a->tcp_port
                                               : a->server_port,
                  aimed_at, agent_carrier_name(carrier));
    } else {
        agent_log(AGENT_LOG_DEBUG, "dialling %s:%s over %s",
                  carrier == HG_CARRIER_STREAM ? a->tcp_host
                                               : a->server_host,
                  carrier == HG_CARRIER_STREAM ? a->tcp_port
                                               : a->server_port,
                  agent_carrier_name(carrier));
    }

    agent_session_flush(s);

    return s;
}


/*
 * The agent ended the session outside the engine (its TCP carrier
 * failed): the engine is closed with the reason, and the session ends
 * through the same events as any other. Nothing reaches the edge.
 */
void
agent_session_failed(agent_session_t *s, uint32_t code, const char *why)
{
    uint8_t  drop[1024];

    hg_conn_close(s->conn, code, why);

    if (s->carrier == HG_CARRIER_STREAM) {
        while (hg_conn_send_bytes(s->conn, drop, sizeof(drop), agent_now())
               > 0)
        {
            /* void */
        }
    }

    agent_session_events(s);
}


/*
 * Everything the engine has to send, handed to the kernel in batches with
 * sendmmsg(): one system call for up to AGENT_SEND_BATCH datagrams.
 */
void
agent_session_flush(agent_session_t *s)
{
    static uint8_t   bufs[AGENT_SEND_BATCH][HG_MTU_MAX + 64];
    struct mmsghdr   msgs[AGENT_SEND_BATCH];
    struct iovec     iov[AGENT_SEND_BATCH];
    ssize_t          n;
    hg_time_t        now;
    int              count, sent;

    if (s->conn == NULL || s->failure != AGENT_FAIL_NONE) {
        return;
    }

    if (s->carrier == HG_CARRIER_STREAM) {
        agent_tcp_flush(s);
        return;
    }

    now = agent_now();

    do {
        count = 0;

        while (count < AGENT_SEND_BATCH
               && (n = hg_conn_send(s->conn, bufs[count],
                                    sizeof(bufs[count]), now)) > 0)
        {
            iov[count].iov_base = bufs[count];
            iov[count].iov_len = (size_t) n;
            memset(&msgs[count], 0, sizeof(struct mmsghdr));
            msgs[count].msg_hdr.msg_iov = &iov[count];
            msgs[count].msg_hdr.msg_iovlen = 1;
            count++;
        }

        for (sent = 0; sent < count; /* void */) {
            n = sendmmsg(s->fd, msgs + sent, count - sent, 0);
            if (n <= 0) {
                if (errno == ECONNREFUSED && agent_session_refused(s)) {
                    return;
                }

                if (errno != EAGAIN && errno != EINTR
                    && errno != ECONNREFUSED)
                {
                    agent_log(AGENT_LOG_DEBUG, "sendmmsg() failed: %s",
                              strerror(errno));
                }
                /* dropped datagrams: the engine's recovery repeats them */
                break;
            }
            sent += (int) n;
        }

    } while (count == AGENT_SEND_BATCH);
}


void
agent_session_readable(agent_session_t *s)
{
    static uint8_t   bufs[AGENT_SEND_BATCH][2048];
    struct mmsghdr   msgs[AGENT_SEND_BATCH];
    struct iovec     iov[AGENT_SEND_BATCH];
    hg_time_t        now;
    int              budget, i, n;

    if (s->failure != AGENT_FAIL_NONE) {
        return;
    }

    now = agent_now();

    /* recvmmsg(): a batch of datagrams per system call */
    for (budget = 8; budget > 0; budget--) {
        for (i = 0; i < AGENT_SEND_BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof(bufs[i]);
            memset(&msgs[i], 0, sizeof(struct mmsghdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }

        n = recvmmsg(s->fd, msgs, AGENT_SEND_BATCH, MSG_DONTWAIT, NULL);
        if (n == -1 && errno == ECONNREFUSED) {
            if (agent_session_refused(s)) {
                return;
            }
            continue;
        }

        if (n <= 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            hg_conn_recv(s->conn, bufs[i], msgs[i].msg_len,
                         (struct sockaddr *) &s->peer, s->peerlen, now);
        }

        if (n < AGENT_SEND_BATCH) {
            break;
        }
    }

    agent_session_events(s);
    agent_session_flush(s);
}


/* an edge that was serving went away a moment ago: a restart, likely */
static int
agent_edge_restarting(const agent_t *a, hg_time_t now)
{
    return a->edge_lost_at != HG_TIME_INFINITE
           && now - a->edge_lost_at < AGENT_RESTART_WINDOW;
}


/*
 * The connected socket reports an ICMP port unreachable as ECONNREFUSED:
 * nothing listens on the edge's UDP port (down, or restarting). A
 * handshake fails at once instead of at its timeout, and the redial
 * follows the usual backoff; s->failure says why for the redial logic.
 * An ICMP message is not authenticated, so a live session heeds it only
 * once it has gone quiet, as with a stateless reset. Returns whether the
 * session failed.
 */
static int
agent_session_refused(agent_session_t *s)
{
    agent_t    *a = s->agent;
    int         connecting;
    hg_time_t   now;

    if (s->state == AGENT_SS_DEAD) {
        return 0;
    }

    connecting = s->state == AGENT_SS_CONNECTING;

    if (!connecting && hg_conn_is_responsive(s->conn)) {
        agent_log(AGENT_LOG_DEBUG, "worker %d: connection refused, ignored "
                  "while the session answers", s->worker);
        return 0;
    }

    s->failure = AGENT_FAIL_REFUSED;
    s->state = AGENT_SS_DEAD;

    if (a->draining || a->done) {
        return 1;
    }

    now = agent_now();

    if (!connecting) {
        agent_log(AGENT_LOG_WARN, "session to worker %d lost: connection "
                  "refused (nothing listens on %s:%s any more)", s->worker,
                  a->server_host, a->server_port);
        a->edge_lost_at = now;

    } else if (agent_edge_restarting(a, now)) {
        /* the edge is coming back: a refusal costs it nothing, keep close */
        agent_log(AGENT_LOG_INFO, "cannot connect to %s:%s yet: connection "
                  "refused, trying again in %.1f s", a->server_host,
                  a->server_port, (double) AGENT_RESTART_RETRY / HG_SEC);
        if (a->redial_at <= now || a->redial_at > now + AGENT_RESTART_RETRY)
        {
            a->redial_at = now + AGENT_RESTART_RETRY;
        }
        return 1;

    } else {
        agent_log(AGENT_LOG_WARN, "cannot connect to %s:%s: connection "
                  "refused (nothing listens on that UDP port)",
                  a->server_host, a->server_port);
    }

    agent_schedule_redial(a, now, 1);

    /* auto: TCP at once, past the backoff */
    if (connecting) {
        agent_transport_udp_failed(a, "its UDP port is unreachable");
    }

    return 1;
}


/* ---- coverage ---------------------------------------------------------------- */

int
agent_session_live(const agent_session_t *s)
{
    return s->state == AGENT_SS_CONNECTING || s->state == AGENT_SS_READY;
}


/* the ready sessions that served s's worker index before s came */
static void
agent_retire_covering(agent_t *a, agent_session_t *s)
{
    agent_session_t  *old;
    int               i;

    for (i = 0; i < a->nsessions; i++) {
        old = a->sessions[i];
        if (old == s || old->state != AGENT_SS_READY
            || old->worker != s->worker || old->carrier != s->carrier)
        {
            continue;
        }

        agent_log(AGENT_LOG_INFO, "worker %d: session %016llx replaced by "
                  "%016llx (the edge restarted?)", s->worker,
                  (unsigned long long) old->session_id,
                  (unsigned long long) s->session_id);
        old->state = AGENT_SS_DRAINING;
        hg_conn_goaway(old->conn, HG_CODE_GOING_AWAY, "replaced");
        hg_conn_ping(old->conn);
        agent_session_flush(old);
    }
}


/* a live session of the carrier in use serves (or aims at) worker w */
static int
agent_covered(agent_t *a, int w, const agent_session_t *except)
{
    agent_session_t  *s;
    int               i;

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        if (s == except || !agent_session_live(s)
            || s->carrier != a->carrier || s->probe)
        {
            continue;
        }

        if (s->state == AGENT_SS_READY ? s->worker == w
                                       : s->aimed_at == w)
        {
            return 1;
        }
    }

    return 0;
}


static int
agent_connecting(agent_t *a)
{
    int  i;

    for (i = 0; i < a->nsessions; i++) {
        if (a->sessions[i]->state == AGENT_SS_CONNECTING
            && a->sessions[i]->carrier == a->carrier
            && !a->sessions[i]->probe)
        {
            return 1;
        }
    }

    return 0;
}


static void
agent_fill_coverage(agent_t *a, hg_time_t now)
{
    uint32_t  w;

    if (a->draining || a->done || now < a->redial_at) {
        return;
    }

    if (a->worker_count == 0) {
        /* aimed at worker 0: steered, the handshake stays in one worker */
        if (!agent_connecting(a) && !agent_covered(a, 0, NULL)) {
            if (agent_session_dial(a, a->carrier, 0, now) == NULL) {
                agent_schedule_redial(a, now, 1);
            }
        }
        return;
    }

    /* a TCP connection lands where it lands: one dial at a time */
    if (a->carrier == HG_CARRIER_STREAM && agent_connecting(a)) {
        return;
    }

    for (w = 0; w < a->worker_count; w++) {
        if (!agent_covered(a, (int) w, NULL)) {
            if (agent_session_dial(a, a->carrier, (int) w, now) == NULL) {
                agent_schedule_redial(a, now, 1);
                return;
            }

            if (a->carrier == HG_CARRIER_STREAM) {
                return;
            }
        }
    }
}


static void
agent_schedule_redial(agent_t *a, hg_time_t now, int failure)
{
    hg_time_t  delay;
    unsigned   shift;
    char       status[320];

    if (!failure) {
        a->redial_at = now;
        return;
    }

    a->failures++;
    a->stable_since = HG_TIME_INFINITE;

    /* the first retry is fast; then doubling up to the cap, with jitter */
    shift = a->failures > 8 ? 8 : a->failures - 1;
    delay = AGENT_BACKOFF_FIRST << shift;
    if (delay > AGENT_BACKOFF_MAX) {
        delay = AGENT_BACKOFF_MAX;
    }
    delay = (hg_time_t) ((double) delay * (0.5 + 0.5 * agent_jitter(a)));

    if (now + delay > a->redial_at || a->redial_at <= now) {
        a->redial_at = now + delay;
    }

    a->reconnects++;
    agent_log(AGENT_LOG_INFO, "reconnecting in %.1f s",
              (double) delay / HG_SEC);

    /* what `systemctl status` shows while the edge cannot be reached */
    snprintf(status, sizeof(status), "dialling %s:%s again in %.1f s",
             a->server_host, a->server_port, (double) delay / HG_SEC);
    agent_notify_status(status);
}


/* ---- session events ---------------------------------------------------------- */

static void
agent_session_ready(agent_session_t *s, const hg_event_t *ev)
{
    agent_t          *a = s->agent;
    char              where[300];
    hg_conn_stats_t   st;

    s->state = AGENT_SS_READY;
    a->duplicates = 0;
    s->worker = (int) ev->worker_index;
    s->worker_count = ev->worker_count;
    s->session_id = ev->session_id;
    s->ready_at = agent_now();

    if (ev->worker_count > 0 && ev->worker_count <= AGENT_MAX_WORKERS) {
        a->worker_count = ev->worker_count;
    }

    hg_conn_get_stats(s->conn, &st);

    /*
     * The edge refuses a second session of ours in one worker process
     * (HG_CODE_DUPLICATE), so a session we hold for the same worker index
     * is with a process that has gone (a restart, or a crash the keepalive
     * has not found yet): it stops counting for the worker, and its probe
     * shows soon whether anything still answers there.
     */
    agent_retire_covering(a, s);

    agent_session_endpoint(s, where, sizeof(where));

    if (s->carrier == HG_CARRIER_STREAM) {
        agent_log(AGENT_LOG_INFO, "connected to worker %d/%u of %s "
                  "(session %016llx)%s%s", s->worker,
                  s->worker_count, where,
                  (unsigned long long) s->session_id,
                  a->proxy.set ? " through " : "",
                  a->proxy.set ? a->proxy.shown : "");
    } else {
        agent_log(AGENT_LOG_INFO, "connected to worker %d/%u of %s "
                  "(session %016llx, rtt %.1f ms) over udp", s->worker,
                  s->worker_count, where,
                  (unsigned long long) s->session_id,
                  (double) st.srtt / HG_MS);
    }

    agent_notify_connected(a, s->worker, s->worker_count);

    if (a->stable_since == HG_TIME_INFINITE) {
        a->stable_since = s->ready_at;
    }

    a->identity_failures = 0;

    agent_transport_ready(s);
}


/*
 * The chain verified but the certificate is not the edge's: the wrong
 * --server, --server-name or certificate. Retrying cannot fix that, but a
 * few tries ride out an edge whose certificate is being replaced.
 */
static int
agent_identity_failed(agent_session_t *s, const hg_event_t *ev)
{
    agent_t     *a = s->agent;
    const char  *name;

    if (ev->code != HG_CODE_TLS || ev->text == NULL
        || (strstr(ev->text, X509_verify_cert_error_string(
                                 X509_V_ERR_HOSTNAME_MISMATCH)) == NULL
            && strstr(ev->text, X509_verify_cert_error_string(
                                    X509_V_ERR_IP_ADDRESS_MISMATCH)) == NULL))
    {
        return 0;
    }

    name = a->cfg.server_name ? a->cfg.server_name : a->server_host;

    if (++a->identity_failures < AGENT_IDENTITY_TRIES) {
        agent_log(AGENT_LOG_WARN, "cannot connect to %s:%s: the edge's "
                  "certificate is not valid for %s (%s)", a->server_host,
                  a->server_port, name, ev->text);
        agent_schedule_redial(a, agent_now(), 1);
        return 1;
    }

    agent_log(AGENT_LOG_ERROR, "giving up on %s:%s: its certificate is not "
              "valid for %s (%s; %u tries). Connect by a name the "
              "certificate carries, or name it with --server-name",
              a->server_host, a->server_port, name, ev->text,
              a->identity_failures);
    a->exit_code = AGENT_EXIT_ERROR;
    a->done = 1;

    return 1;
}


static void
agent_session_closed(agent_session_t *s, const hg_event_t *ev)
{
    agent_t    *a = s->agent;
    int         was_ready, expected, probe;
    char        where[300];
    hg_time_t   now;

    was_ready = s->state == AGENT_SS_READY;
    expected = s->state == AGENT_SS_DRAINING || s->state == AGENT_SS_DEAD
               || ev->code == HG_CODE_GOING_AWAY || a->draining;

    s->state = AGENT_SS_DEAD;
    now = agent_now();
    probe = s->probe;
    agent_session_endpoint(s, where, sizeof(where));

    if (a->draining || a->done) {
        return;
    }

    /* a UDP try while on TCP: agent_transport.c tries again later */
    if (probe && !hg_code_is_auth_failure(ev->code)) {
        agent_log(AGENT_LOG_DEBUG, "UDP probe to %s ended: %s", where,
                  ev->text && *ev->text ? ev->text : hg_code_name(ev->code));
        return;
    }

    /* the edge revoked the key or disabled the domain: no retry loop */
    if (hg_code_is_auth_failure(ev->code)) {
        agent_log(AGENT_LOG_ERROR, "closed by %s:%s: %s (%s)",
                  a->server_host, a->server_port,
                  ev->text && *ev->text ? ev->text : hg_code_name(ev->code),
                  hg_code_name(ev->code));
        a->exit_code = AGENT_EXIT_REJECTED;
        a->done = 1;
        return;
    }

    if (ev->code == HG_CODE_RESET) {
        /* the edge restarted: dial again at once */
        agent_log(AGENT_LOG_INFO, "worker %d lost the session (edge "
                  "restarted?): re-dialling", s->worker);
        a->worker_count = 0;
        a->edge_lost_at = now;
        agent_schedule_redial(a, now, 0);
        return;
    }

    if (expected && ev->code != HG_CODE_IDLE_TIMEOUT) {
        if (ev->code == HG_CODE_GOING_AWAY) {
            agent_log(AGENT_LOG_INFO, "worker %d closed the session: %s",
                      s->worker, ev->text && *ev->text ? ev->text
                                                       : "going away");
            if (was_ready) {
                /* not a drain we were told of: the edge is stopping */
                a->edge_lost_at = now;
            }
        }
        agent_schedule_redial(a, now, 0);
        return;
    }

    if (!was_ready && agent_identity_failed(s, ev)) {
        return;
    }

    if (was_ready) {
        agent_log(AGENT_LOG_WARN, "session to worker %d (%s) closed: %s "
                  "(%s)", s->worker, agent_carrier_name(s->carrier),
                  ev->text && *ev->text ? ev->text : hg_code_name(ev->code),
                  hg_code_name(ev->code));

        /*
         * a TCP connection that served and broke (a reset on the way, a
         * NAT that forgot it) is dialled again at once; if the edge is
         * gone, the dials fail and back off
         */
        if (ev->code == HG_CODE_CARRIER) {
            agent_schedule_redial(a, now, 0);
            return;
        }
    } else {
        /* a certificate or pin mismatch must be visible at the default */
        agent_log(AGENT_LOG_WARN, "cannot connect to %s: %s (%s)", where,
                  ev->text && *ev->text ? ev->text : hg_code_name(ev->code),
                  hg_code_name(ev->code));
    }

    agent_schedule_redial(a, now, 1);
}


static void
agent_session_rejected(agent_session_t *s, const hg_event_t *ev)
{
    agent_t  *a = s->agent;

    s->state = AGENT_SS_DEAD;

    if (hg_code_is_auth_failure(ev->code)) {
        agent_log(AGENT_LOG_ERROR, "rejected by %s:%s: %s (%s)",
                  a->server_host, a->server_port,
                  ev->text ? ev->text : "", hg_code_name(ev->code));
        a->exit_code = AGENT_EXIT_REJECTED;
        a->done = 1;
        return;
    }

    if (ev->code == HG_CODE_DUPLICATE) {
        /*
         * the kernel gave us to a worker we serve: another port. A worker
         * that a run of tries never reaches (TCP without reuseport on
         * the edge's listen: whichever worker wakes first accepts) is
         * tried again with backoff, not in a hot loop.
         */
        if (++a->duplicates <= AGENT_DUPLICATE_BUDGET) {
            agent_log(AGENT_LOG_DEBUG, "landed on a worker already covered: "
                      "re-dialling");
            agent_schedule_redial(a, agent_now(), 0);
            return;
        }

        if (a->duplicates == AGENT_DUPLICATE_BUDGET + 1) {
            agent_log(AGENT_LOG_INFO, "%u dials in a row landed on workers "
                      "already covered: trying every %llu ms", a->duplicates,
                      (unsigned long long) (AGENT_DUPLICATE_PAUSE / HG_MS));
        }

        a->redial_at = agent_now() + AGENT_DUPLICATE_PAUSE;
        return;
    }

    agent_log(AGENT_LOG_WARN, "refused by %s:%s: %s (%s)", a->server_host,
              a->server_port, ev->text ? ev->text : "",
              hg_code_name(ev->code));
    agent_schedule_redial(a, agent_now(), 1);
}


void
agent_session_events(agent_session_t *s)
{
    agent_t     *a = s->agent;
    hg_event_t   ev;

    while (s->conn && hg_conn_next_event(s->conn, &ev) == HG_OK) {

        switch (ev.type) {

        case HG_EV_HANDSHAKE_DONE:
            /* the TCP carrier logs its own steps */
            if (s->carrier == HG_CARRIER_DATAGRAM) {
                agent_log(AGENT_LOG_DEBUG, "DTLS established with %s:%s",
                          a->server_host, a->server_port);
            }
            break;

        case HG_EV_READY:
            agent_session_ready(s, &ev);
            break;

        case HG_EV_REJECTED:
            agent_session_rejected(s, &ev);
            break;

        case HG_EV_GOAWAY:
            agent_log(AGENT_LOG_INFO, "worker %d is going away (%s): "
                      "dialling its replacement", s->worker,
                      ev.text && *ev.text ? ev.text : "no reason");
            if (s->state == AGENT_SS_READY
                || s->state == AGENT_SS_CONNECTING)
            {
                s->state = AGENT_SS_DRAINING;
            }
            agent_schedule_redial(a, agent_now(), 0);
            break;

        case HG_EV_CLOSED:
            if (s->state != AGENT_SS_DEAD || a->done) {
                agent_session_closed(s, &ev);
            }
            break;

        case HG_EV_STREAM_OPENED:
            s->streams++;
            a->streams_total++;
            agent_stream_opened(s, ev.stream_id, ev.meta);
            break;

        default:
            agent_stream_event(s, &ev);
            break;
        }
    }
}


/* ---- the manager --------------------------------------------------------------- */

void
agent_parse_server(agent_t *a)
{
    const char  *colon;
    size_t       hostlen;

    colon = strrchr(a->cfg.server, ':');
    hostlen = (size_t) (colon - a->cfg.server);

    if (a->cfg.server[0] == '[') {
        snprintf(a->server_host, sizeof(a->server_host), "%.*s",
                 (int) hostlen - 2, a->cfg.server + 1);
    } else {
        snprintf(a->server_host, sizeof(a->server_host), "%.*s",
                 (int) hostlen, a->cfg.server);
    }

    snprintf(a->server_port, sizeof(a->server_port), "%s", colon + 1);
}


int
agent_sessions_start(agent_t *a)
{
    uint8_t  id[8];
    int      i;

    agent_parse_server(a);

    if (RAND_bytes(id, sizeof(id)) != 1) {
        return -1;
    }

    for (i = 0; i < 8; i++) {
        snprintf(a->agent_id + 2 * i, 3, "%02x", id[i]);
    }

    memcpy(&a->rng, id, sizeof(a->rng));
    a->rng |= 1;
    a->redial_at = 0;
    a->stable_since = HG_TIME_INFINITE;
    a->edge_lost_at = HG_TIME_INFINITE;

    agent_transport_init(a);
    agent_fill_coverage(a, agent_now());

    return 0;
}


static void
agent_session_free(agent_session_t *s)
{
    agent_t  *a = s->agent;
    int       i;

    for (i = 0; i < a->nsessions; i++) {
        if (a->sessions[i] == s) {
            a->sessions[i] = a->sessions[--a->nsessions];
            break;
        }
    }

    while (s->stream_list) {
        agent_stream_abort(s->stream_list);
    }

    /* a CLOSE still in the TCP carrier's buffer goes if it can */
    if (s->carrier == HG_CARRIER_STREAM && s->state != AGENT_SS_DEAD) {
        agent_tcp_flush(s);
    }

    agent_tcp_free(s);

    if (s->fd != -1) {
        agent_unwatch(a, s->fd);
        close(s->fd);
    }

    hg_conn_free(s->conn);
    free(s);
}


void
agent_sessions_tick(agent_t *a, hg_time_t now)
{
    agent_session_t  *s;
    int               i, live;

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];

        if (s->failure != AGENT_FAIL_NONE) {
            continue;
        }

        if (hg_conn_deadline(s->conn) <= now) {
            hg_conn_timeout(s->conn, now);
        }

        agent_session_events(s);
        agent_session_flush(s);
    }

    /*
     * sessions whose engine is done, or that failed outside it, are freed
     * (their streams are gone)
     */
    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        if (s->failure != AGENT_FAIL_NONE || hg_conn_is_closed(s->conn)) {
            agent_session_free(s);
            i--;
        }
    }

    if (a->stable_since != HG_TIME_INFINITE
        && now - a->stable_since > AGENT_STABLE_PERIOD && a->failures)
    {
        a->failures = 0;
    }

    agent_transport_tick(a, now);

    if (a->draining) {
        live = a->nsessions;
        if (live == 0 || now >= a->drain_deadline) {
            if (live) {
                agent_log(AGENT_LOG_WARN, "drain timeout: closing %d "
                          "session(s)", live);
            }
            a->done = 1;
        }
        return;
    }

    agent_fill_coverage(a, now);
}


hg_time_t
agent_sessions_deadline(agent_t *a)
{
    hg_time_t  t, d;
    int        i;

    t = a->draining ? a->drain_deadline : a->redial_at;
    if (!a->draining && a->redial_at <= agent_now() && a->nsessions > 0) {
        t = HG_TIME_INFINITE;
    }

    for (i = 0; i < a->nsessions; i++) {
        d = hg_conn_deadline(a->sessions[i]->conn);
        if (d < t) {
            t = d;
        }
    }

    d = agent_transport_deadline(a);

    return d < t ? d : t;
}


void
agent_sessions_drain(agent_t *a)
{
    int  i;

    a->draining = 1;
    a->drain_deadline = agent_now() + AGENT_DRAIN_TIMEOUT;

    for (i = 0; i < a->nsessions; i++) {
        hg_conn_goaway(a->sessions[i]->conn, HG_CODE_NORMAL,
                       "agent shutting down");
        agent_session_flush(a->sessions[i]);
    }
}


static int
agent_same(const char *x, const char *y)
{
    if (x == NULL || y == NULL) {
        return x == y;
    }

    return strcmp(x, y) == 0;
}


/*
 * SIGHUP: re-read the configuration (flags and environment still win).
 * A new target applies to new streams; a new edge, domain, key or trust
 * setting replaces every session, the old ones draining first.
 */
void
agent_sessions_reload(agent_t *a)
{
    agent_config_t  fresh;
    char            err[512];
    int             identity, retarget, i;

    memset(&fresh, 0, sizeof(fresh));

    if (agent_config_load(&fresh, a->argc, a->argv, err, sizeof(err))
        != AGENT_CMD_RUN)
    {
        agent_log(AGENT_LOG_ERROR, "configuration not reloaded: %s", err);
        agent_config_free(&fresh);
        return;
    }

    identity = !agent_same(fresh.server, a->cfg.server)
               || !agent_same(fresh.server_name, a->cfg.server_name)
               || !agent_same(fresh.domain, a->cfg.domain)
               || !agent_same(fresh.key, a->cfg.key)
               || !agent_same(fresh.ca, a->cfg.ca)
               || !agent_same(fresh.pin, a->cfg.pin)
               || fresh.insecure != a->cfg.insecure
               || fresh.mtu != a->cfg.mtu
               || fresh.transport != a->cfg.transport
               || !agent_same(fresh.tcp_server, a->cfg.tcp_server)
               || !agent_same(fresh.proxy, a->cfg.proxy);

    retarget = !agent_same(fresh.to, a->cfg.to);

    if (retarget) {
        if (agent_set_target(a, fresh.to) != 0) {
            agent_config_free(&fresh);
            return;
        }
        agent_log(AGENT_LOG_INFO, "new streams go to %s", fresh.to);
    }

    if (identity && agent_setup_tls(a, &fresh) != 0) {
        agent_config_free(&fresh);
        return;
    }

    agent_config_free(&a->cfg);
    a->cfg = fresh;
    agent_log_init(a->cfg.log_level);
    agent_check_key_file(&a->cfg);

    if (retarget) {
        agent_target_probe(a);
    }

    if (!identity) {
        agent_log(AGENT_LOG_INFO, "configuration re-read: sessions kept");
        return;
    }

    agent_log(AGENT_LOG_INFO, "edge, domain or key changed: replacing "
              "every session");

    for (i = 0; i < a->nsessions; i++) {
        hg_conn_goaway(a->sessions[i]->conn, HG_CODE_NORMAL,
                       "agent reconfigured");
        a->sessions[i]->state = AGENT_SS_DRAINING;
    }

    a->worker_count = 0;
    a->failures = 0;
    a->identity_failures = 0;
    a->redial_at = 0;
    agent_parse_server(a);
    agent_transport_init(a);
}


void
agent_sessions_free(agent_t *a)
{
    while (a->nsessions) {
        agent_session_free(a->sessions[0]);
    }
}
