/*
 * The byte-pipe simulator (sim_pipe.h).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "sim_pipe.h"


#define SIM_PIPE_TURN  10                /* virtual microseconds a busy turn
                                            takes */

static const uint8_t  sim_pipe_prefix[] = { 3, 'p', 'i', 'p', 'e' };


static int
sim_pipe_random(void *ctx, uint8_t *buf, size_t len)
{
    uint64_t  *rng = ctx;
    size_t     i;

    for (i = 0; i < len; i++) {
        buf[i] = (uint8_t) sim_rand(rng);
    }

    return 0;
}


void
sim_pipe_config(hg_config_t *cfg)
{
    hg_config_defaults(cfg);
    cfg->idle_timeout = 30 * HG_SEC;
    cfg->keepalive = 5 * HG_SEC;
    cfg->handshake_timeout = 20 * HG_SEC;
}


static int
sim_pipe_end_init(sim_pipe_end_t *e, size_t out_cap, size_t sock_cap)
{
    e->out = malloc(out_cap);
    e->sock = malloc(sock_cap);
    e->out_cap = out_cap;
    e->sock_cap = sock_cap;

    return e->out && e->sock ? 0 : -1;
}


int
sim_pipe_init(sim_pipe_t *p, uint64_t seed, const hg_config_t *cfg,
    size_t out_cap, size_t sock_cap, size_t max_segment)
{
    hg_config_t          c;
    hg_hello_t           hello;
    struct sockaddr_in   sin;

    memset(p, 0, sizeof(*p));
    p->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
    p->now = 1000 * HG_SEC;
    p->max_segment = max_segment;

    c = *cfg;
    c.cb.random = sim_pipe_random;
    c.cb.ctx = &p->rng;

    memset(&hello, 0, sizeof(hello));
    hello.domain = "pipe.test";
    hello.api_key = "key";
    hello.agent_version = "test";
    hello.agent_id = "a1";
    hello.worker_hint = -1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(40000);
    sin.sin_addr.s_addr = htonl(0x7f000001);

    if (sim_pipe_end_init(&p->end[0], out_cap, sock_cap) != 0
        || sim_pipe_end_init(&p->end[1], out_cap, sock_cap) != 0)
    {
        return -1;
    }

    p->end[SIM_PIPE_AGENT].conn = hg_conn_stream_client_new(&c, &hello,
                                                            p->now);
    p->end[SIM_PIPE_EDGE].conn = hg_conn_stream_server_new(&c,
                                     sim_pipe_prefix, sizeof(sim_pipe_prefix),
                                     (struct sockaddr *) &sin, sizeof(sin),
                                     p->now);

    return p->end[0].conn && p->end[1].conn ? 0 : -1;
}


void
sim_pipe_free(sim_pipe_t *p)
{
    int  i;

    for (i = 0; i < 2; i++) {
        hg_conn_free(p->end[i].conn);
        free(p->end[i].out);
        free(p->end[i].sock);
        p->end[i].conn = NULL;
    }
}


void
sim_pipe_inject(sim_pipe_t *p, int side, const uint8_t *buf, size_t len)
{
    sim_pipe_end_t  *e = &p->end[side];

    if (len > e->sock_cap - e->sock_len) {
        len = e->sock_cap - e->sock_len;
    }

    memcpy(e->sock + e->sock_len, buf, len);
    e->sock_len += len;
}


static size_t
sim_pipe_segment(sim_pipe_t *p, size_t avail)
{
    size_t  n;

    n = 1 + (size_t) (sim_rand(&p->rng) % p->max_segment);

    return n < avail ? n : avail;
}


/* the engine's output into the shell's buffer, then part of it out */
static int
sim_pipe_output(sim_pipe_t *p, int side)
{
    sim_pipe_end_t  *e = &p->end[side];
    ssize_t          n;
    size_t           k;
    int              moved;

    moved = 0;

    while (!e->closed && e->out_cap - e->out_len >= 512) {
        n = hg_conn_send_bytes(e->conn, e->out + e->out_len,
                               e->out_cap - e->out_len, p->now);
        if (n <= 0) {
            break;
        }
        e->out_len += (size_t) n;
        moved = 1;
    }

    if (e->out_len > e->out_peak) {
        e->out_peak = e->out_len;
    }

    if (p->blackhole || e->out_len == 0) {
        return moved;
    }

    k = sim_pipe_segment(p, e->out_len);
    if (k > e->sock_cap - e->sock_len) {
        k = e->sock_cap - e->sock_len;
    }

    if (k > 0) {
        memcpy(e->sock + e->sock_len, e->out, k);
        e->sock_len += k;
        memmove(e->out, e->out + k, e->out_len - k);
        e->out_len -= k;
        e->bytes_sent += k;
        moved = 1;
    }

    return moved;
}


/* part of what the peer's socket holds, into side's engine */
static int
sim_pipe_input(sim_pipe_t *p, int side)
{
    sim_pipe_end_t  *e = &p->end[side], *peer = &p->end[1 - side];
    size_t           k;

    if (p->blackhole || e->stalled || e->closed || peer->sock_len == 0) {
        return 0;
    }

    k = sim_pipe_segment(p, peer->sock_len);

    if (hg_conn_recv_bytes(e->conn, peer->sock, k, p->now) != HG_OK) {
        e->recv_err = 1;
    }

    memmove(peer->sock, peer->sock + k, peer->sock_len - k);
    peer->sock_len -= k;

    return 1;
}


static void
sim_pipe_events(sim_pipe_t *p, int side)
{
    sim_pipe_end_t  *e = &p->end[side];
    hg_event_t       ev;

    while (hg_conn_next_event(e->conn, &ev) == HG_OK) {

        if (side == SIM_PIPE_EDGE && ev.type == HG_EV_HELLO) {
            hg_conn_accept(e->conn, 42, 3, 4, NULL, 0);
        }

        if (side == SIM_PIPE_AGENT && ev.type == HG_EV_READY) {
            p->ready = 1;
            p->worker_index = ev.worker_index;
        }

        if (ev.type == HG_EV_CLOSED) {
            e->close_code = ev.code;
            snprintf(e->close_text, sizeof(e->close_text), "%s",
                     ev.text ? ev.text : "");
        }

        if (p->on_event) {
            p->on_event(p, side, &ev);
        }
    }
}


int
sim_pipe_step(sim_pipe_t *p)
{
    int  side, moved;

    moved = 0;

    if (p->on_app) {
        p->on_app(p);
    }

    for (side = 0; side < 2; side++) {
        sim_pipe_end_t  *e = &p->end[side];

        if (e->closed) {
            continue;
        }

        if (hg_conn_deadline(e->conn) <= p->now) {
            hg_conn_timeout(e->conn, p->now);
        }

        sim_pipe_events(p, side);
        moved |= sim_pipe_input(p, side);
        sim_pipe_events(p, side);
        moved |= sim_pipe_output(p, side);

        /* the shell shuts the carrier once the engine is done with it */
        if (hg_conn_is_closed(e->conn) && e->out_len == 0) {
            e->closed = 1;
        }
    }

    return moved;
}


int
sim_pipe_run(sim_pipe_t *p, int (*done)(sim_pipe_t *p), hg_time_t limit)
{
    hg_time_t  end, next, d;
    int        side;

    end = p->now + limit;

    while (p->now < end) {
        if (done && done(p)) {
            return 1;
        }

        if (sim_pipe_step(p)) {
            p->now += SIM_PIPE_TURN;
            continue;
        }

        /* nothing moved: on to the next deadline */
        next = end;
        for (side = 0; side < 2; side++) {
            if (!p->end[side].closed) {
                d = hg_conn_deadline(p->end[side].conn);
                next = d < next ? d : next;
            }
        }

        p->now = next > p->now + SIM_PIPE_TURN ? next
                                               : p->now + SIM_PIPE_TURN;
    }

    return done ? done(p) : 0;
}
