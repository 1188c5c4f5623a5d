/*
 * The deterministic simulator: virtual links and the loop that drives the
 * engines. See sim.h.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"


static int sim_dropped(sim_t *sim, int dir, const uint8_t *dgram,
    size_t len);


struct sim_packet_s {
    hg_time_t   at;
    uint64_t    seq;
    int         from;
    int         to;
    size_t      len;
    uint8_t     data[HG_MTU_MAX];
};


/* ---- randomness ------------------------------------------------------------ */

uint64_t
sim_rand(uint64_t *state)
{
    uint64_t  x;

    /* xorshift64* */
    x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;

    return x * 0x2545f4914f6cdd1dULL;
}


double
sim_uniform(uint64_t *state)
{
    return (double) (sim_rand(state) >> 11) / (double) (1ULL << 53);
}


/* ---- links ------------------------------------------------------------------- */

void
sim_link_init(sim_link_t *l, const sim_link_cfg_t *cfg, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    l->cfg = *cfg;
    l->rng = seed ? seed : 1;
}


void
sim_link_free(sim_link_t *l)
{
    free(l->heap);
    memset(l, 0, sizeof(*l));
}


static int
sim_before(const sim_packet_t *a, const sim_packet_t *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}


static void
sim_heap_push(sim_link_t *l, const sim_packet_t *p)
{
    size_t         i, parent;
    sim_packet_t   tmp;

    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->heap = realloc(l->heap, l->cap * sizeof(sim_packet_t));
        if (l->heap == NULL) {
            abort();
        }
    }

    i = l->n++;
    l->heap[i] = *p;

    while (i > 0) {
        parent = (i - 1) / 2;
        if (!sim_before(&l->heap[i], &l->heap[parent])) {
            break;
        }
        tmp = l->heap[i];
        l->heap[i] = l->heap[parent];
        l->heap[parent] = tmp;
        i = parent;
    }
}


static void
sim_heap_pop(sim_link_t *l, sim_packet_t *out)
{
    size_t         i, c;
    sim_packet_t   tmp;

    *out = l->heap[0];
    l->heap[0] = l->heap[--l->n];
    i = 0;

    for ( ;; ) {
        c = 2 * i + 1;
        if (c >= l->n) {
            break;
        }
        if (c + 1 < l->n && sim_before(&l->heap[c + 1], &l->heap[c])) {
            c++;
        }
        if (!sim_before(&l->heap[c], &l->heap[i])) {
            break;
        }
        tmp = l->heap[i];
        l->heap[i] = l->heap[c];
        l->heap[c] = tmp;
        i = c;
    }
}


size_t
sim_link_queued(const sim_link_t *l, hg_time_t now)
{
    hg_time_t  per;

    if (l->cfg.bandwidth_bps == 0 || l->busy_until <= now) {
        return 0;
    }

    /* datagrams still waiting, estimated from the backlog in time */
    per = (hg_time_t) (HG_MTU_DEFAULT * 8 * HG_SEC / l->cfg.bandwidth_bps);

    return (size_t) ((l->busy_until - now) / (per ? per : 1));
}


static int
sim_link_drop(sim_link_t *l)
{
    double  p;

    if (l->cfg.burst_enter > 0) {
        if (!l->bad && sim_uniform(&l->rng) < l->cfg.burst_enter) {
            l->bad = 1;
        } else if (l->bad && sim_uniform(&l->rng) < l->cfg.burst_exit) {
            l->bad = 0;
        }
    }

    p = l->bad ? l->cfg.burst_loss : l->cfg.loss;

    return p > 0 && sim_uniform(&l->rng) < p;
}


void
sim_link_send(sim_link_t *l, hg_time_t now, const uint8_t *data, size_t len,
    int from, int to)
{
    sim_packet_t  p;
    hg_time_t     start, tx;
    size_t        queued;
    int           copies, i;

    l->stats.sent++;

    if (len > HG_MTU_MAX) {
        l->stats.lost++;
        return;
    }

    if (sim_link_drop(l)) {
        l->stats.lost++;
        return;
    }

    /* the bottleneck: serialise at bandwidth, drop tail past the queue */
    start = now;
    if (l->cfg.bandwidth_bps) {
        queued = sim_link_queued(l, now);
        if (l->cfg.queue_limit && queued >= l->cfg.queue_limit) {
            l->stats.queue_drops++;
            return;
        }
        if (queued > l->stats.max_queue) {
            l->stats.max_queue = queued;
        }

        tx = (hg_time_t) len * 8 * HG_SEC / l->cfg.bandwidth_bps;
        start = l->busy_until > now ? l->busy_until : now;
        l->busy_until = start + tx;
        start += tx;
    }

    copies = 1;
    if (l->cfg.duplicate > 0 && sim_uniform(&l->rng) < l->cfg.duplicate) {
        copies = 2;
        l->stats.duplicated++;
    }

    for (i = 0; i < copies; i++) {
        memcpy(p.data, data, len);
        p.len = len;
        p.from = from;
        p.to = to;
        p.seq = l->seq++;
        p.at = start + l->cfg.delay;

        if (l->cfg.jitter) {
            /* delay varies, but a link keeps order: only `reorder` breaks it */
            p.at += sim_rand(&l->rng) % (l->cfg.jitter + 1);
            if (p.at < l->last_at) {
                p.at = l->last_at;
            }
        }

        l->last_at = p.at;

        if (l->cfg.reorder > 0 && sim_uniform(&l->rng) < l->cfg.reorder) {
            p.at += l->cfg.reorder_delay;
        }

        if (l->cfg.corrupt > 0 && sim_uniform(&l->rng) < l->cfg.corrupt) {
            p.data[sim_rand(&l->rng) % len] ^=
                (uint8_t) (1 + sim_rand(&l->rng) % 255);
            l->stats.corrupted++;
        }

        sim_heap_push(l, &p);
    }
}


hg_time_t
sim_link_next(const sim_link_t *l)
{
    return l->n ? l->heap[0].at : HG_TIME_INFINITE;
}


size_t
sim_link_pop(sim_link_t *l, hg_time_t now, uint8_t *buf, int *from, int *to)
{
    sim_packet_t  p;

    if (l->n == 0 || l->heap[0].at > now) {
        return 0;
    }

    sim_heap_pop(l, &p);
    memcpy(buf, p.data, p.len);
    *from = p.from;
    *to = p.to;

    l->stats.delivered++;
    l->stats.bytes_delivered += p.len;

    return p.len;
}


/* ---- addresses --------------------------------------------------------------- */

void
sim_addr(int n, struct sockaddr_in *sin)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t) (4000 + n));
    sin->sin_addr.s_addr = htonl(0x0a000000u + (uint32_t) n);
}


int
sim_addr_number(const struct sockaddr *sa)
{
    const struct sockaddr_in  *sin = (const struct sockaddr_in *) sa;

    return (int) (ntohl(sin->sin_addr.s_addr) & 0xffffff);
}


/* ---- setup ---------------------------------------------------------------- */

/* SIM_LOG=1: the engines' logs on stderr, stamped with the virtual time */
static void
sim_log(void *ctx, int level, const char *msg)
{
    sim_t  *sim = ctx;

    (void) level;

    fprintf(stderr, "sim %llu.%06llu %s\n",
            (unsigned long long) (sim->now / HG_SEC),
            (unsigned long long) (sim->now % HG_SEC), msg);
}


static int
sim_random(void *ctx, uint8_t *buf, size_t len)
{
    sim_t   *sim = ctx;
    size_t   i;

    for (i = 0; i < len; i++) {
        buf[i] = (uint8_t) sim_rand(&sim->rng);
    }

    return 0;
}


void
sim_config(hg_config_t *cfg)
{
    hg_config_defaults(cfg);
    cfg->idle_timeout = 30 * HG_SEC;
    cfg->keepalive = 5 * HG_SEC;
    cfg->handshake_timeout = 20 * HG_SEC;
}


int
sim_init(sim_t *sim, uint64_t seed, const sim_link_cfg_t *up,
    const sim_link_cfg_t *down, const hg_config_t *cfg)
{
    char                  err[256];
    hg_tls_client_opts_t  opts;

    memset(sim, 0, sizeof(*sim));
    sim->seed = seed;
    sim->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
    sim->next_addr = 1;
    sim->accept_hello = 1;
    sim->now = 1000 * HG_SEC;

    sim_link_init(&sim->up, up, sim_rand(&sim->rng));
    sim_link_init(&sim->down, down, sim_rand(&sim->rng));

    sim->cfg = *cfg;
    sim->cfg.cb.random = sim_random;
    sim->cfg.cb.ctx = sim;

    if (getenv("SIM_LOG") != NULL) {
        sim->cfg.cb.log = sim_log;
    }

    if (hg_testcert_make_tmp(&sim->certs) != 0) {
        fprintf(stderr, "sim: cannot write test certificates\n");
        return -1;
    }

    sim->server_ctx = hg_tls_server_ctx(sim->certs.cert, sim->certs.key,
                                        err, sizeof(err));
    if (sim->server_ctx == NULL) {
        fprintf(stderr, "sim: server ctx: %s\n", err);
        return -1;
    }

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = sim->certs.ca;

    sim->client_ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (sim->client_ctx == NULL) {
        fprintf(stderr, "sim: client ctx: %s\n", err);
        return -1;
    }

    sim->listener = hg_listener_new(&sim->cfg, sim->server_ctx,
                                    (const uint8_t *) "\0", 1, sim->now);
    if (sim->listener == NULL) {
        fprintf(stderr, "sim: listener\n");
        return -1;
    }

    return 0;
}


void
sim_free(sim_t *sim)
{
    int  i;

    for (i = 0; i < sim->nagents; i++) {
        hg_conn_free(sim->agents[i].conn);
        hg_conn_free(sim->agents[i].edge);
    }

    for (i = 0; i < sim->norphans; i++) {
        hg_conn_free(sim->orphans[i]);
    }

    hg_listener_free(sim->listener);
    SSL_CTX_free(sim->server_ctx);
    SSL_CTX_free(sim->client_ctx);
    sim_link_free(&sim->up);
    sim_link_free(&sim->down);
    hg_testcert_remove(&sim->certs);
}


int
sim_add_agent(sim_t *sim, const char *domain, const char *key)
{
    sim_agent_t         *a;
    struct sockaddr_in   edge;
    hg_hello_t           hello;

    if (sim->nagents == SIM_MAX_AGENTS) {
        return -1;
    }

    a = &sim->agents[sim->nagents];
    memset(a, 0, sizeof(*a));
    a->addr = sim->next_addr++;

    memset(&hello, 0, sizeof(hello));
    hello.domain = domain;
    hello.api_key = key;
    hello.agent_version = "sim";
    hello.agent_id = "sim-agent";
    hello.worker_hint = -1;

    sim_addr(SIM_EDGE, &edge);

    a->conn = hg_conn_client_new(&sim->cfg, sim->client_ctx, NULL, &hello,
                                 (struct sockaddr *) &edge, sizeof(edge),
                                 sim->now);
    if (a->conn == NULL) {
        return -1;
    }

    return sim->nagents++;
}


void
sim_rebind(sim_t *sim, int agent)
{
    sim->agents[agent].addr = sim->next_addr++;
}


void
sim_inject(sim_t *sim, int from, const uint8_t *dgram, size_t len)
{
    sim_link_send(&sim->up, sim->now, dgram, len, from, SIM_EDGE);
}


/* ---- the loop ------------------------------------------------------------------ */

static int
sim_agent_by_addr(sim_t *sim, int addr)
{
    int  i;

    for (i = 0; i < sim->nagents; i++) {
        if (sim->agents[i].addr == addr) {
            return i;
        }
    }

    return -1;
}


/* the edge's connection for a datagram: by connection id, then address */
static hg_conn_t *
sim_edge_lookup(sim_t *sim, const uint8_t *dgram, size_t len, int from)
{
    hg_prefix_t              prefix;
    const uint8_t           *cid;
    const struct sockaddr   *peer;
    hg_conn_t               *c;
    int                      i;

    if (hg_prefix_parse(dgram, len, &prefix) != HG_OK) {
        return NULL;
    }

    for (i = 0; i < sim->nagents; i++) {
        c = sim->agents[i].edge;
        if (c == NULL) {
            continue;
        }

        if (prefix.flags & HG_PREFIX_FLAG_CID) {
            cid = hg_conn_cid(c);
            if (cid && memcmp(cid, prefix.cid, HG_CID_LEN) == 0) {
                return c;
            }
            continue;
        }

        peer = hg_conn_peer(c, NULL);
        if (sim_addr_number(peer) == from) {
            return c;
        }
    }

    return NULL;
}


static void
sim_deliver_edge(sim_t *sim, const uint8_t *dgram, size_t len, int from)
{
    struct sockaddr_in   sin;
    hg_conn_t           *c;
    uint8_t              reply[HG_MTU_MAX];
    size_t               replylen;
    int                  rc, agent;

    sim->edge_datagrams++;
    sim_addr(from, &sin);

    if (from >= 0 && from < SIM_MAX_ADDRS) {
        sim->edge_bytes_from[from] += len;
    }

    c = sim_edge_lookup(sim, dgram, len, from);
    if (c) {
        hg_conn_recv(c, dgram, len, (struct sockaddr *) &sin, sizeof(sin),
                     sim->now);
        return;
    }

    replylen = sizeof(reply);
    rc = hg_listener_accept(sim->listener, dgram, len,
                            (struct sockaddr *) &sin, sizeof(sin), sim->now,
                            reply, &replylen, &c);

    if (rc == HG_AGAIN) {
        if (!sim_dropped(sim, 1, reply, replylen)) {
            sim_link_send(&sim->down, sim->now, reply, replylen, SIM_EDGE,
                          from);
        }
        return;
    }

    if (rc != HG_OK) {
        return;
    }

    agent = sim_agent_by_addr(sim, from);
    if (agent >= 0 && sim->agents[agent].edge == NULL) {
        sim->agents[agent].edge = c;
    } else if (sim->norphans < (int) (sizeof(sim->orphans)
                                      / sizeof(sim->orphans[0])))
    {
        sim->orphans[sim->norphans++] = c;
    } else {
        hg_conn_free(c);
    }
}


static int
sim_dropped(sim_t *sim, int dir, const uint8_t *dgram, size_t len)
{
    int  *count;

    count = dir ? &sim->drop_down : &sim->drop_up;
    if (*count > 0) {
        (*count)--;
        return 1;
    }

    return sim->drop && sim->drop(sim, dir, dgram, len);
}


static void
sim_flush(sim_t *sim, hg_conn_t *c, sim_link_t *link, int from, int to)
{
    uint8_t                 buf[HG_MTU_MAX + 64];
    ssize_t                 n;
    int                     dir, other;
    socklen_t               len;
    const struct sockaddr  *sa;

    dir = (link == &sim->down);

    /* the edge's datagrams for another address than its peer's */
    while (dir
           && (n = hg_conn_send_probe(c, buf, sizeof(buf), sim->now, &sa,
                                      &len))
              > 0)
    {
        other = sim_addr_number(sa);

        if (other >= 0 && other < SIM_MAX_ADDRS) {
            sim->edge_bytes_to[other] += (uint64_t) n;
        }

        if (sim->mangle) {
            sim->mangle(sim, dir, buf, (size_t) n);
        }

        if (!sim_dropped(sim, dir, buf, (size_t) n)) {
            sim_link_send(link, sim->now, buf, (size_t) n, from, other);
        }
    }

    while ((n = hg_conn_send(c, buf, sizeof(buf), sim->now)) > 0) {
        if (dir && to >= 0 && to < SIM_MAX_ADDRS) {
            sim->edge_bytes_to[to] += (uint64_t) n;
        }

        if (sim->mangle) {
            sim->mangle(sim, dir, buf, (size_t) n);
        }

        if (!sim_dropped(sim, dir, buf, (size_t) n)) {
            sim_link_send(link, sim->now, buf, (size_t) n, from, to);
        }
    }
}


static void
sim_handle_events(sim_t *sim, int agent, hg_conn_t *c)
{
    hg_event_t    ev;
    sim_agent_t  *a;

    while (hg_conn_next_event(c, &ev) == HG_OK) {
        a = agent >= 0 ? &sim->agents[agent] : NULL;

        switch (ev.type) {

        case HG_EV_HELLO:
            if (sim->accept_hello) {
                hg_conn_accept(c, 1, 0, 1, NULL, 0);
            } else {
                hg_conn_reject(c, sim->reject_code, "rejected by the test");
            }
            break;

        case HG_EV_READY:
            if (a) {
                a->ready = 1;
            }
            break;

        case HG_EV_REJECTED:
            if (a) {
                a->rejected = 1;
                a->reject_code = ev.code;
            }
            break;

        case HG_EV_CLOSED:
            if (a) {
                a->closed = 1;
                a->close_code = ev.code;
                snprintf(a->close_text, sizeof(a->close_text), "%s",
                         ev.text ? ev.text : "");
            }
            break;

        default:
            break;
        }

        if (sim->on_event) {
            sim->on_event(sim, agent, c, &ev);
        }
    }
}


/* lets every engine speak and react, until all are quiet */
static void
sim_settle(sim_t *sim)
{
    sim_agent_t  *a;
    int           i;

    for (i = 0; i < sim->nagents; i++) {
        a = &sim->agents[i];
        sim_handle_events(sim, i, a->conn);
        if (a->edge) {
            sim_handle_events(sim, -1, a->edge);
        }
    }

    if (sim->on_app) {
        sim->on_app(sim);
    }

    for (i = 0; i < sim->nagents; i++) {
        a = &sim->agents[i];
        sim_flush(sim, a->conn, &sim->up, a->addr, SIM_EDGE);
        if (a->edge) {
            sim_flush(sim, a->edge, &sim->down, SIM_EDGE,
                      sim_addr_number(hg_conn_peer(a->edge, NULL)));
        }
    }

    for (i = 0; i < sim->norphans; i++) {
        sim_handle_events(sim, -1, sim->orphans[i]);
        sim_flush(sim, sim->orphans[i], &sim->down, SIM_EDGE,
                  sim_addr_number(hg_conn_peer(sim->orphans[i], NULL)));
    }
}


static hg_time_t
sim_next_time(sim_t *sim)
{
    hg_time_t  t, d;
    int        i;

    t = sim_link_next(&sim->up);
    d = sim_link_next(&sim->down);
    if (d < t) {
        t = d;
    }

    for (i = 0; i < sim->nagents; i++) {
        d = hg_conn_deadline(sim->agents[i].conn);
        if (d < t) {
            t = d;
        }
        if (sim->agents[i].edge) {
            d = hg_conn_deadline(sim->agents[i].edge);
            if (d < t) {
                t = d;
            }
        }
    }

    for (i = 0; i < sim->norphans; i++) {
        d = hg_conn_deadline(sim->orphans[i]);
        if (d < t) {
            t = d;
        }
    }

    return t;
}


static void
sim_fire_timers(sim_t *sim)
{
    sim_agent_t  *a;
    int           i;

    for (i = 0; i < sim->nagents; i++) {
        a = &sim->agents[i];
        if (hg_conn_deadline(a->conn) <= sim->now) {
            hg_conn_timeout(a->conn, sim->now);
        }
        if (a->edge && hg_conn_deadline(a->edge) <= sim->now) {
            hg_conn_timeout(a->edge, sim->now);
        }
    }

    for (i = 0; i < sim->norphans; i++) {
        if (hg_conn_deadline(sim->orphans[i]) <= sim->now) {
            hg_conn_timeout(sim->orphans[i], sim->now);
        }
    }
}


static void
sim_deliver(sim_t *sim)
{
    uint8_t              buf[HG_MTU_MAX];
    struct sockaddr_in   sin;
    size_t               len;
    int                  from, to, agent;

    while ((len = sim_link_pop(&sim->up, sim->now, buf, &from, &to)) > 0) {
        sim_deliver_edge(sim, buf, len, from);
    }

    while ((len = sim_link_pop(&sim->down, sim->now, buf, &from, &to)) > 0)
    {
        /* a datagram to an address the agent left is lost, as with NAT */
        agent = sim_agent_by_addr(sim, to);
        if (agent < 0) {
            continue;
        }

        sim_addr(SIM_EDGE, &sin);
        hg_conn_recv(sim->agents[agent].conn, buf, len,
                     (struct sockaddr *) &sin, sizeof(sin), sim->now);
    }
}


int
sim_run(sim_t *sim, int (*done)(sim_t *sim), hg_time_t until)
{
    hg_time_t  next;
    uint64_t   still;

    for (still = 0; ; ) {
        sim_settle(sim);

        if (done && done(sim)) {
            return 1;
        }

        next = sim_next_time(sim);
        if (next == HG_TIME_INFINITE || next > until) {
            sim->now = until;
            return done ? done(sim) : 0;
        }

        if (next > sim->now) {
            sim->now = next;
            still = 0;

        } else if (++still > 100000) {
            /* a deadline that never moves: an engine bug */
            fprintf(stderr, "sim: time stuck at %llu us (seed %llu)\n",
                    (unsigned long long) sim->now,
                    (unsigned long long) sim->seed);
            return 0;
        }

        sim_deliver(sim);
        sim_fire_timers(sim);
    }
}


/* ---- stream content --------------------------------------------------------- */

void
sim_pattern(uint64_t id, uint64_t offset, uint8_t *buf, size_t len)
{
    size_t    i;
    uint64_t  x;

    for (i = 0; i < len; i++) {
        x = (offset + i) * 0x9e3779b97f4a7c15ULL
            ^ (id + 1) * 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 29;
        buf[i] = (uint8_t) (x ^ (x >> 17));
    }
}
