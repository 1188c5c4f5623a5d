/*
 * Which carrier new sessions use (--transport).
 *
 * udp and tcp: always that one. auto: UDP first. When a UDP handshake
 * has had no answer for AGENT_UDP_PATIENCE while no UDP session is up,
 * or the edge's UDP port is unreachable, new sessions go over TLS/TCP
 * (the UDP dials still under way may finish: they become probes). Once
 * on TCP, a UDP probe goes every --udp-retry seconds (60; jittered by a
 * fifth); the first UDP session to come up (a probe or one left over)
 * moves new sessions back to UDP, and once UDP sessions cover every
 * worker the TCP sessions are drained with GOAWAY: the edge opens no new
 * stream on them, the ones open finish, and each closes after its last,
 * so no request in flight fails.
 *
 * The coverage of agent_session.c counts the carrier in use only, so a
 * move fills every worker anew while the other carrier's sessions keep
 * serving.
 */

#include <stdint.h>
#include <string.h>

#include "agent.h"


static void agent_transport_to_tcp(agent_t *a, hg_time_t now,
    const char *why);
static void agent_transport_drain_other(agent_t *a);
static hg_time_t agent_transport_reprobe(agent_t *a, hg_time_t now);


void
agent_transport_init(agent_t *a)
{
    a->carrier = a->cfg.transport == AGENT_TRANSPORT_TCP ? HG_CARRIER_STREAM
                                                         : HG_CARRIER_DATAGRAM;
    a->udp_waiting = HG_TIME_INFINITE;
    a->probe_at = HG_TIME_INFINITE;
}


static int
agent_transport_auto(const agent_t *a)
{
    return a->cfg.transport == AGENT_TRANSPORT_AUTO && !a->draining
           && !a->done;
}


/* the carrier's ready sessions cover every worker the edge has */
static int
agent_transport_covers(agent_t *a, hg_carrier_t carrier)
{
    uint64_t          seen;
    agent_session_t  *s;
    int               i;

    if (a->worker_count == 0) {
        return 0;
    }

    seen = 0;
    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        if (s->state == AGENT_SS_READY && s->carrier == carrier
            && s->worker >= 0 && s->worker < 64)
        {
            seen |= 1ULL << s->worker;
        }
    }

    return a->worker_count >= 64
           ? 0 : seen == (1ULL << a->worker_count) - 1;
}


void
agent_transport_tick(agent_t *a, hg_time_t now)
{
    agent_session_t  *s, *probe;
    hg_time_t         oldest;
    int               i, udp_up, tcp_up;

    if (!agent_transport_auto(a)) {
        return;
    }

    oldest = HG_TIME_INFINITE;
    udp_up = 0;
    tcp_up = 0;
    probe = NULL;

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];

        if (s->carrier != HG_CARRIER_DATAGRAM) {
            tcp_up |= s->state == AGENT_SS_READY;
            continue;
        }

        if (s->state == AGENT_SS_READY) {
            udp_up = 1;
        }

        if (s->state == AGENT_SS_CONNECTING) {
            if (s->probe) {
                probe = s;
            } else if (s->dialled < oldest) {
                oldest = s->dialled;
            }
        }
    }

    if (a->carrier == HG_CARRIER_DATAGRAM) {
        a->udp_waiting = udp_up ? HG_TIME_INFINITE : oldest;

        if (!udp_up && oldest != HG_TIME_INFINITE
            && now - oldest >= AGENT_UDP_PATIENCE)
        {
            agent_transport_to_tcp(a, now, "no answer over UDP in 2 s");
        }
        return;
    }

    /* on TCP: a probe that had its chance gives way to the next one */
    if (probe && now - probe->dialled >= AGENT_UDP_PATIENCE) {
        agent_log(AGENT_LOG_DEBUG, "UDP probe: still no answer, next in "
                  "about %d s", a->cfg.udp_retry);
        probe->state = AGENT_SS_DEAD;
        hg_conn_close(probe->conn, HG_CODE_NORMAL, "probe unanswered");
        probe = NULL;
    }

    /*
     * while TCP does not work either (the edge is down, or restarting),
     * UDP is tried with every redial: whichever comes up first wins
     */
    if (probe == NULL && (now >= a->probe_at
                          || (!tcp_up && now >= a->redial_at)))
    {
        a->probe_at = agent_transport_reprobe(a, now);
        agent_log(AGENT_LOG_DEBUG, "trying UDP to %s:%s again",
                  a->server_host, a->server_port);

        s = agent_session_dial(a, HG_CARRIER_DATAGRAM, 0, now);
        if (s) {
            s->probe = 1;
        }
    }

    if (agent_transport_covers(a, a->carrier)) {
        agent_transport_drain_other(a);
    }
}


hg_time_t
agent_transport_deadline(agent_t *a)
{
    if (!agent_transport_auto(a)) {
        return HG_TIME_INFINITE;
    }

    if (a->carrier == HG_CARRIER_DATAGRAM) {
        return a->udp_waiting == HG_TIME_INFINITE
               ? HG_TIME_INFINITE : a->udp_waiting + AGENT_UDP_PATIENCE;
    }

    return a->probe_at;
}


/* the edge's UDP port is unreachable (ICMP): TCP at once, in auto */
void
agent_transport_udp_failed(agent_t *a, const char *why)
{
    int  i;

    if (!agent_transport_auto(a) || a->carrier != HG_CARRIER_DATAGRAM) {
        return;
    }

    for (i = 0; i < a->nsessions; i++) {
        if (a->sessions[i]->carrier == HG_CARRIER_DATAGRAM
            && a->sessions[i]->state == AGENT_SS_READY)
        {
            return;
        }
    }

    agent_transport_to_tcp(a, agent_now(), why);
}


static void
agent_transport_to_tcp(agent_t *a, hg_time_t now, const char *why)
{
    agent_session_t  *s;
    int               i;

    a->carrier = HG_CARRIER_STREAM;
    a->switches++;
    a->udp_waiting = HG_TIME_INFINITE;
    a->probe_at = agent_transport_reprobe(a, now);

    /* the UDP dials under way may still come up: then UDP is back */
    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];
        if (s->carrier == HG_CARRIER_DATAGRAM
            && s->state == AGENT_SS_CONNECTING)
        {
            s->probe = 1;
            s->dialled = now;
        }
    }

    agent_log(AGENT_LOG_WARN, "%s:%s: %s; switching to TLS/TCP via %s:%s%s%s "
              "(UDP is tried again every %d s)", a->server_host,
              a->server_port, why, a->tcp_host, a->tcp_port,
              a->proxy.set ? " through the proxy " : "",
              a->proxy.set ? a->proxy.shown : "", a->cfg.udp_retry);

    /* dial now, whatever backoff UDP had run into */
    a->redial_at = now;
    a->failures = 0;
}


/* a session came up: a UDP one while on TCP means UDP is back */
void
agent_transport_ready(agent_session_t *s)
{
    agent_t  *a = s->agent;

    if (s->carrier == HG_CARRIER_DATAGRAM && s->probe) {
        s->probe = 0;

        if (agent_transport_auto(a) && a->carrier == HG_CARRIER_STREAM) {
            a->carrier = HG_CARRIER_DATAGRAM;
            a->switches++;
            a->probe_at = HG_TIME_INFINITE;
            a->redial_at = agent_now();

            agent_log(AGENT_LOG_WARN, "UDP to %s:%s answers again: moving "
                      "back to UDP; the TCP sessions drain once UDP covers "
                      "every worker", a->server_host, a->server_port);
        }
    }

    if (agent_transport_auto(a) && s->carrier == a->carrier
        && agent_transport_covers(a, a->carrier))
    {
        agent_transport_drain_other(a);
    }
}


/* GOAWAY for the ready sessions of the carrier no longer in use */
static void
agent_transport_drain_other(agent_t *a)
{
    agent_session_t  *s;
    int               i, n;

    n = 0;

    for (i = 0; i < a->nsessions; i++) {
        s = a->sessions[i];

        if (s->carrier == a->carrier || s->state != AGENT_SS_READY) {
            continue;
        }

        s->state = AGENT_SS_DRAINING;
        hg_conn_goaway(s->conn, HG_CODE_NORMAL,
                       a->carrier == HG_CARRIER_DATAGRAM ? "moving to UDP"
                                                         : "moving to TCP");
        agent_session_flush(s);
        n++;
    }

    if (n) {
        agent_log(AGENT_LOG_INFO, "every worker is covered over %s: "
                  "draining %d %s session(s)",
                  agent_carrier_name(a->carrier), n,
                  agent_carrier_name(a->carrier == HG_CARRIER_DATAGRAM
                                     ? HG_CARRIER_STREAM
                                     : HG_CARRIER_DATAGRAM));
    }
}


/* AGENT_UDP_REPROBE from now, give or take a fifth */
static hg_time_t
agent_transport_reprobe(agent_t *a, hg_time_t now)
{
    uint64_t  x;
    double    f;

    x = a->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    a->rng = x;

    f = 0.8 + 0.4 * ((double) (x >> 11) / (double) (1ULL << 53));

    return now + (hg_time_t) ((double) a->cfg.udp_retry * HG_SEC * f);
}
