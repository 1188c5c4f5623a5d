/*
 * Path validation and the anti-amplification limit; see hg_path.h.
 */

#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "hg_conn.h"


static int hg_path_same(const struct sockaddr *a, socklen_t alen,
    const struct sockaddr_storage *b, socklen_t blen, int port);
static void hg_path_start(hg_conn_t *c, const struct sockaddr *to,
    socklen_t tolen, size_t received);
static void hg_path_confirm(hg_conn_t *c);
static void hg_path_back(hg_conn_t *c, const char *why);
static void hg_path_stop(hg_path_t *p);
static const char *hg_path_text(const struct sockaddr_storage *sa,
    char *buf, size_t size);


void
hg_path_init(hg_conn_t *c)
{
    hg_path_t  *p = &c->path;

    memcpy(&p->validated, &c->peer, c->peerlen);
    p->validated_len = c->peerlen;
    hg_path_stop(p);
}


static void
hg_path_stop(hg_path_t *p)
{
    p->validating = 0;
    p->challenge_due = 0;
    p->back_due = 0;
    p->back_sent = 0;
    p->starved = 0;
    p->nchallenges = 0;
    p->received = 0;
    p->sent = 0;
    p->abandon_at = HG_TIME_INFINITE;
    p->retry_at = HG_TIME_INFINITE;
}


/* ---- input -------------------------------------------------------------- */

void
hg_path_on_datagram(hg_conn_t *c, const struct sockaddr *from,
    socklen_t fromlen, size_t len)
{
    int         newest, echo, back_echo;
    hg_path_t  *p = &c->path;

    newest = p->input_newest;
    echo = p->input_echo;
    back_echo = p->input_back_echo;
    p->input_newest = 0;
    p->input_echo = 0;
    p->input_back_echo = 0;

    if (c->role != HG_ROLE_SERVER || from == NULL
        || fromlen > sizeof(c->peer))
    {
        return;
    }

    if (hg_path_same(from, fromlen, &c->peer, c->peerlen, 1)) {
        if (p->validating) {
            p->received += len;
            p->starved = 0;

            if (echo) {
                hg_path_confirm(c);
            }
        }

        return;
    }

    if (p->validating
        && hg_path_same(from, fromlen, &p->validated, p->validated_len, 1))
    {
        if (back_echo) {
            /* the peer never left: the move was a forwarded copy */
            hg_path_back(c, "the peer answered at");
            return;
        }

        if (newest) {
            /* RFC 9000 9.3.3: the other address was a detour or a forgery */
            hg_path_back(c, "the peer is back at");
            return;
        }
    }

    /*
     * RFC 9000 9.3: only the newest packet that is not a mere probe
     * moves the session; a late one from an address left behind does not
     */
    if (!newest) {
        return;
    }

    hg_path_start(c, from, fromlen, len);
}


void
hg_path_on_challenge(hg_conn_t *c, uint64_t data)
{
    /* one answer per packet is enough: the latest challenge's */
    c->path.response = data;
    c->path.response_due = 1;
}


void
hg_path_on_response(hg_conn_t *c, uint64_t data)
{
    unsigned    i;
    hg_path_t  *p = &c->path;

    if (!p->validating) {
        return;
    }

    if (p->back_sent && data == p->back_challenge) {
        p->input_back_echo = 1;
        return;
    }

    for (i = 0; i < p->nchallenges && i < HG_PATH_CHALLENGES; i++) {
        if (p->challenges[i] == data) {
            /* it counts if it came from the address being validated */
            p->input_echo = 1;
            return;
        }
    }
}


/* ---- moving ------------------------------------------------------------- */

static void
hg_path_start(hg_conn_t *c, const struct sockaddr *to, socklen_t tolen,
    size_t received)
{
    char        text[80];
    hg_time_t   timeout;
    hg_path_t  *p = &c->path;

    memcpy(&c->peer, to, tolen);
    c->peerlen = tolen;

    hg_path_stop(p);
    p->validating = 1;
    p->challenge_due = 1;
    p->back_due = 1;
    p->received = received;
    p->started = c->now;

    /* RFC 9000 8.2.4: three PTOs, and a floor for a fast path's tiny PTO */
    timeout = 3 * hg_recovery_pto(&c->rec);
    if (timeout < HG_PATH_TIMEOUT_MIN) {
        timeout = HG_PATH_TIMEOUT_MIN;
    }

    p->abandon_at = c->now + timeout;

    hg_conn_log(c, HG_LOG_INFO, "peer moved to %s: validating the path",
                hg_path_text(&c->peer, text, sizeof(text)));
    hg_conn_event(c, HG_EV_PEER_MIGRATED, -1, 0);
}


static void
hg_path_confirm(hg_conn_t *c)
{
    int         port_only;
    char        text[80];
    uint64_t    in_flight, events;
    hg_path_t  *p = &c->path;

    port_only = hg_path_same((struct sockaddr *) &c->peer, c->peerlen,
                             &p->validated, p->validated_len, 0);

    memcpy(&p->validated, &c->peer, c->peerlen);
    p->validated_len = c->peerlen;
    c->stats.paths_validated++;

    hg_conn_log(c, HG_LOG_INFO, "path to %s validated in %llu ms",
                hg_path_text(&c->peer, text, sizeof(text)),
                (unsigned long long) ((c->now - p->started) / HG_MS));

    hg_path_stop(p);

    if (port_only) {
        return;
    }

    /*
     * RFC 9000 9.4: another host is another path, with a window of its
     * own to find; packets sent on the old one, lost with it, do not
     * shrink the new one (its recovery starts now)
     */
    in_flight = c->cc.bytes_in_flight;
    events = c->cc.congestion_events;
    (void) hg_cc_init(&c->cc, c->cfg.congestion, c->cfg.mtu);
    c->cc.bytes_in_flight = in_flight;
    c->cc.congestion_events = events;
    c->cc.recovery_start = c->now;
    hg_pacer_init(&c->pacer, c->cfg.mtu);
}


/* to the validated address again, the validation abandoned */
static void
hg_path_back(hg_conn_t *c, const char *why)
{
    char        from[80], to[80];
    hg_path_t  *p = &c->path;

    hg_conn_log(c, HG_LOG_INFO, "path to %s abandoned: %s %s",
                hg_path_text(&c->peer, from, sizeof(from)), why,
                hg_path_text(&p->validated, to, sizeof(to)));

    memcpy(&c->peer, &p->validated, p->validated_len);
    c->peerlen = p->validated_len;

    hg_path_stop(p);
    hg_conn_event(c, HG_EV_PEER_MIGRATED, -1, 0);
}


/* ---- output ------------------------------------------------------------- */

size_t
hg_path_allowance(const hg_conn_t *c)
{
    uint64_t  limit;

    if (!c->path.validating) {
        return SIZE_MAX;
    }

    limit = HG_PATH_AMPLIFICATION * c->path.received;

    return limit > c->path.sent ? (size_t) (limit - c->path.sent) : 0;
}


void
hg_path_on_sent(hg_conn_t *c, size_t len)
{
    if (c->path.validating) {
        c->path.sent += len;
    }
}


void
hg_path_set_starved(hg_conn_t *c)
{
    if (c->path.validating) {
        c->path.starved = 1;
    }
}


int
hg_path_starved(const hg_conn_t *c)
{
    return c->path.starved;
}


int
hg_path_frames_due(const hg_conn_t *c)
{
    return c->path.challenge_due || c->path.response_due;
}


int
hg_path_challenge_data(hg_conn_t *c, uint64_t *data)
{
    uint8_t   b[8];
    size_t    i;

    if (c->cfg.cb.random(c->cfg.cb.ctx, b, sizeof(b)) != 0) {
        /* no unpredictable challenge, no validation */
        hg_path_back(c, "no random bytes for a challenge: back to");
        return HG_ERR;
    }

    *data = 0;

    for (i = 0; i < sizeof(b); i++) {
        *data = *data << 8 | b[i];
    }

    return HG_OK;
}


void
hg_path_challenge_sent(hg_conn_t *c, uint64_t data)
{
    hg_path_t  *p = &c->path;
    unsigned    shift;

    p->challenges[p->nchallenges % HG_PATH_CHALLENGES] = data;
    p->nchallenges++;
    p->challenge_due = 0;

    /* the next one after a PTO, doubling: a lost challenge is not resent */
    shift = p->nchallenges - 1 < 5 ? p->nchallenges - 1 : 5;
    p->retry_at = c->now + (hg_recovery_pto(&c->rec) << shift);
}


int
hg_path_back_due(const hg_conn_t *c)
{
    return c->path.back_due;
}


const struct sockaddr *
hg_path_validated(const hg_conn_t *c, socklen_t *len)
{
    *len = c->path.validated_len;

    return (const struct sockaddr *) &c->path.validated;
}


void
hg_path_back_sent(hg_conn_t *c, uint64_t data)
{
    /* once: if that address is gone, the timeout says so */
    c->path.back_challenge = data;
    c->path.back_due = 0;
    c->path.back_sent = 1;
}


hg_time_t
hg_path_deadline(const hg_conn_t *c)
{
    if (!c->path.validating) {
        return HG_TIME_INFINITE;
    }

    return c->path.abandon_at < c->path.retry_at ? c->path.abandon_at
                                                 : c->path.retry_at;
}


void
hg_path_timeout(hg_conn_t *c, hg_time_t now)
{
    hg_path_t  *p = &c->path;

    if (!p->validating) {
        return;
    }

    if (now >= p->abandon_at) {
        c->stats.path_failures++;
        hg_path_back(c, "no answer in time: back to");
        return;
    }

    if (now >= p->retry_at) {
        p->challenge_due = 1;
        p->retry_at = HG_TIME_INFINITE;
    }
}


/* ---- addresses ---------------------------------------------------------- */

/* the same host, and with `port` the same port */
static int
hg_path_same(const struct sockaddr *a, socklen_t alen,
    const struct sockaddr_storage *b, socklen_t blen, int port)
{
    const struct sockaddr_in   *a4, *b4;
    const struct sockaddr_in6  *a6, *b6;

    if (a->sa_family != b->ss_family) {
        return 0;
    }

    switch (a->sa_family) {

    case AF_INET:
        a4 = (const struct sockaddr_in *) a;
        b4 = (const struct sockaddr_in *) b;
        return a4->sin_addr.s_addr == b4->sin_addr.s_addr
               && (!port || a4->sin_port == b4->sin_port);

    case AF_INET6:
        a6 = (const struct sockaddr_in6 *) a;
        b6 = (const struct sockaddr_in6 *) b;
        return memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0
               && a6->sin6_scope_id == b6->sin6_scope_id
               && (!port || a6->sin6_port == b6->sin6_port);

    default:
        return alen == blen && memcmp(a, b, alen) == 0;
    }
}


static const char *
hg_path_text(const struct sockaddr_storage *sa, char *buf, size_t size)
{
    char                        host[INET6_ADDRSTRLEN];
    const struct sockaddr_in   *sin;
    const struct sockaddr_in6  *sin6;

    switch (sa->ss_family) {

    case AF_INET:
        sin = (const struct sockaddr_in *) sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, ntohs(sin->sin_port));
        break;

    case AF_INET6:
        sin6 = (const struct sockaddr_in6 *) sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, ntohs(sin6->sin6_port));
        break;

    default:
        snprintf(buf, size, "an address of family %d", sa->ss_family);
        break;
    }

    return buf;
}
