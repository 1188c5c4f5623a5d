/*
 * The stream carrier (hg.h): an agent and an edge engine over a byte
 * pipe that splits writes and reads anywhere (t/unit/sim_pipe.h). HELLO
 * and HELLO_ACK; bulk data both ways intact, split into 1 to 7 byte
 * pieces and in large ones, in packets far larger than a datagram; a
 * shell that stops reading holds the sender to its windows and buffers,
 * and everything arrives once it reads again; many streams at once; a
 * length of 0 or over 16 KiB and a packet that does not decode close the
 * connection with a protocol error the peer is told; keepalive PINGs keep
 * a quiet connection up and silence ends it at the idle timeout; the
 * agent's GOAWAY ends its session after its last stream; the datagram
 * calls refuse a stream-carried connection.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hg_conn.h"
#include "sim.h"
#include "sim_pipe.h"
#include "tap.h"


#define SEED        20261204
#define KIB         1024ULL
#define MIB         (1024 * KIB)
#define MAX_STREAMS 64


typedef struct {
    int64_t     edge_id;              /* the edge's handle */
    int64_t     agent_id;             /* the agent's (the same number) */
    uint64_t    down_total;           /* edge -> agent */
    uint64_t    up_total;             /* agent -> edge */
    uint64_t    down_written;
    uint64_t    down_read;
    uint64_t    up_written;
    uint64_t    up_read;
    int         down_fin;
    int         up_fin;
    int         down_shut;
    int         up_shut;
    int         edge_closed;
    int         agent_closed;
    uint64_t    bad;                  /* bytes that were not the pattern */
} bulk_stream_t;

typedef struct {
    bulk_stream_t  s[MAX_STREAMS];
    int            n;                 /* streams to open */
    int            opened;
    uint64_t       down_total;
    uint64_t       up_total;
    int            agent_reads;       /* 0: the agent application waits */
    size_t         agent_held_peak;   /* bytes the agent engine held */
    size_t         edge_held_peak;
} bulk_t;


static uint8_t
pattern(uint64_t stream, uint64_t off)
{
    return (uint8_t) (off * 131 + (off >> 9) + stream * 7);
}


static bulk_stream_t *
bulk_find(bulk_t *b, int side, int64_t id)
{
    int  i;

    for (i = 0; i < b->opened; i++) {
        if ((side == SIM_PIPE_EDGE ? b->s[i].edge_id : b->s[i].agent_id)
            == id)
        {
            return &b->s[i];
        }
    }

    return NULL;
}


static void
bulk_write(hg_conn_t *c, int64_t id, uint64_t sid, uint64_t *written,
    uint64_t total, int *shut)
{
    uint8_t   buf[16384];
    size_t    n, i;
    ssize_t   w;

    while (*written < total) {
        n = total - *written < sizeof(buf) ? total - *written : sizeof(buf);
        for (i = 0; i < n; i++) {
            buf[i] = pattern(sid, *written + i);
        }

        w = hg_stream_write(c, id, buf, n);
        if (w <= 0) {
            return;
        }
        *written += (uint64_t) w;
    }

    if (!*shut) {
        hg_stream_shutdown(c, id);
        *shut = 1;
    }
}


static void
bulk_read(hg_conn_t *c, int64_t id, uint64_t sid, uint64_t *read, int *fin,
    uint64_t *bad)
{
    uint8_t   buf[16384];
    ssize_t   n, i;
    int       f;

    for ( ;; ) {
        f = 0;
        n = hg_stream_read(c, id, buf, sizeof(buf), &f);
        if (n < 0) {
            return;
        }

        for (i = 0; i < n; i++) {
            if (buf[i] != pattern(sid, *read + (uint64_t) i)) {
                (*bad)++;
            }
        }
        *read += (uint64_t) n;

        if (f) {
            *fin = 1;
            return;
        }

        if (n == 0) {
            return;
        }
    }
}


static size_t
conn_held(hg_conn_t *c)
{
    hg_cstream_t  *cs;
    size_t         n;

    n = 0;
    for (cs = c->first; cs; cs = cs->next) {
        n += hg_stream_memory(cs->s);
    }

    return n;
}


static void
bulk_app(sim_pipe_t *p)
{
    bulk_t          *b = p->user;
    hg_conn_t       *edge = p->end[SIM_PIPE_EDGE].conn;
    hg_conn_t       *agent = p->end[SIM_PIPE_AGENT].conn;
    hg_stream_meta_t meta;
    bulk_stream_t   *s;
    size_t           held;
    int              i;

    while (hg_conn_is_ready(edge) && b->opened < b->n) {
        memset(&meta, 0, sizeof(meta));
        snprintf(meta.host, sizeof(meta.host), "pipe.test");
        snprintf(meta.request_id, sizeof(meta.request_id), "r%d",
                 b->opened);

        s = &b->s[b->opened];
        s->edge_id = hg_stream_open(edge, &meta);
        if (s->edge_id < 0) {
            break;
        }
        s->agent_id = -1;
        s->down_total = b->down_total;
        s->up_total = b->up_total;
        b->opened++;
    }

    for (i = 0; i < b->opened; i++) {
        s = &b->s[i];

        if (!s->edge_closed) {
            bulk_write(edge, s->edge_id, (uint64_t) i, &s->down_written,
                       s->down_total, &s->down_shut);
            bulk_read(edge, s->edge_id, 1000 + (uint64_t) i, &s->up_read,
                      &s->up_fin, &s->bad);
        }

        if (s->agent_id >= 0 && !s->agent_closed) {
            bulk_write(agent, s->agent_id, 1000 + (uint64_t) i,
                       &s->up_written, s->up_total, &s->up_shut);
            if (b->agent_reads) {
                bulk_read(agent, s->agent_id, (uint64_t) i, &s->down_read,
                          &s->down_fin, &s->bad);
            }
        }
    }

    held = conn_held(agent);
    if (held > b->agent_held_peak) {
        b->agent_held_peak = held;
    }

    held = conn_held(edge);
    if (held > b->edge_held_peak) {
        b->edge_held_peak = held;
    }
}


static void
bulk_event(sim_pipe_t *p, int side, const hg_event_t *ev)
{
    bulk_t         *b = p->user;
    bulk_stream_t  *s;
    int             i;

    if (side == SIM_PIPE_AGENT && ev->type == HG_EV_STREAM_OPENED) {
        for (i = 0; i < b->opened; i++) {
            if (b->s[i].edge_id == ev->stream_id) {
                b->s[i].agent_id = ev->stream_id;
            }
        }
        return;
    }

    if (ev->type == HG_EV_STREAM_CLOSED) {
        s = bulk_find(b, side, ev->stream_id);
        if (s) {
            if (side == SIM_PIPE_EDGE) {
                s->edge_closed = 1;
            } else {
                s->agent_closed = 1;
            }
        }
    }
}


static int
bulk_done(sim_pipe_t *p)
{
    bulk_t  *b = p->user;
    int      i;

    if (b->opened < b->n) {
        return 0;
    }

    for (i = 0; i < b->n; i++) {
        if (!b->s[i].edge_closed || !b->s[i].agent_closed) {
            return 0;
        }
    }

    return 1;
}


/* the first stream's data is arriving */
static int
flowing_done(sim_pipe_t *p)
{
    bulk_t  *b = p->user;

    return b->opened > 0 && b->s[0].down_read > 0;
}


static int
ready_done(sim_pipe_t *p)
{
    return p->ready && hg_conn_is_ready(p->end[SIM_PIPE_EDGE].conn);
}


static void
small_windows(hg_config_t *cfg)
{
    sim_pipe_config(cfg);
    cfg->stream_window = 64 * KIB;
    cfg->conn_window = 256 * KIB;
    cfg->stream_send_buffer = 64 * KIB;
    cfg->max_out_of_order = 256 * KIB;
}


/* ---- the tests -------------------------------------------------------------- */

static void
test_hello(void)
{
    sim_pipe_t     p;
    hg_config_t    cfg;
    const uint8_t *acid, *ecid;

    sim_pipe_config(&cfg);

    if (sim_pipe_init(&p, SEED, &cfg, 64 * KIB, 64 * KIB, 3) != 0) {
        tap_ok(0, "hello: set up");
        return;
    }

    tap_is_int(hg_conn_carrier(p.end[SIM_PIPE_AGENT].conn),
               HG_CARRIER_STREAM, "hello: the agent's carrier is a stream");
    tap_ok(hg_conn_cid(p.end[SIM_PIPE_AGENT].conn) == NULL,
           "hello: the agent has no id before HELLO_ACK");

    tap_ok(sim_pipe_run(&p, ready_done, 5 * HG_SEC),
           "hello: HELLO and HELLO_ACK over 1 to 3 byte pieces");
    tap_is_int(p.worker_index, 3, "hello: READY tells the worker index");

    acid = hg_conn_cid(p.end[SIM_PIPE_AGENT].conn);
    ecid = hg_conn_cid(p.end[SIM_PIPE_EDGE].conn);
    tap_ok(acid && ecid && memcmp(acid, ecid, HG_CID_LEN) == 0
           && memcmp(ecid, "\x03pipe", 5) == 0,
           "hello: the agent adopts the edge's id, which has the prefix");

    tap_is_int(hg_conn_recv(p.end[SIM_PIPE_AGENT].conn,
                            (const uint8_t *) "\x11xxxxxxxxxxxxxxxx", 17,
                            NULL, 0, p.now),
               HG_ERR, "hello: hg_conn_recv refuses a stream connection");
    tap_is_int(hg_conn_send(p.end[SIM_PIPE_AGENT].conn,
                            p.end[SIM_PIPE_AGENT].out, HG_MTU_MAX, p.now),
               HG_ERR, "hello: hg_conn_send refuses a stream connection");

    sim_pipe_free(&p);
}


static void
run_bulk(const char *name, int nstreams, uint64_t down, uint64_t up,
    size_t segment, hg_time_t limit, int small)
{
    sim_pipe_t       p;
    hg_config_t      cfg;
    bulk_t          *b;
    hg_conn_stats_t  st;
    uint64_t         bad, down_read, up_read;
    int              i, done;

    if (small) {
        small_windows(&cfg);
    } else {
        sim_pipe_config(&cfg);
    }

    b = calloc(1, sizeof(bulk_t));
    if (b == NULL
        || sim_pipe_init(&p, SEED + segment, &cfg, 256 * KIB, 256 * KIB,
                         segment)
           != 0)
    {
        tap_ok(0, "%s: set up", name);
        free(b);
        return;
    }

    b->n = nstreams;
    b->down_total = down;
    b->up_total = up;
    b->agent_reads = 1;
    p.user = b;
    p.on_app = bulk_app;
    p.on_event = bulk_event;

    done = sim_pipe_run(&p, bulk_done, limit);

    bad = down_read = up_read = 0;
    for (i = 0; i < b->opened; i++) {
        bad += b->s[i].bad;
        down_read += b->s[i].down_read;
        up_read += b->s[i].up_read;
    }

    tap_ok(done, "%s: every stream finished both ways", name);
    tap_is_int(down_read, (uint64_t) nstreams * down,
               "%s: every byte reached the agent", name);
    tap_is_int(up_read, (uint64_t) nstreams * up,
               "%s: every byte reached the edge", name);
    tap_is_int(bad, 0, "%s: all of it intact and in order", name);
    tap_ok(!p.end[0].recv_err && !p.end[1].recv_err,
           "%s: no input was refused", name);

    hg_conn_get_stats(p.end[SIM_PIPE_EDGE].conn, &st);
    tap_ok(st.packets_lost == 0 && st.packets_retransmitted == 0
           && st.pto_count == 0,
           "%s: nothing lost, retransmitted or probed", name);

    if (segment > 4096 && nstreams == 1) {
        /* a datagram holds 1.4 KiB: these packets are ten times that */
        tap_ok(st.packets_sent < (down / 8192) + 64,
               "%s: %llu packets for %llu bytes (up to 16 KiB each)", name,
               (unsigned long long) st.packets_sent,
               (unsigned long long) down);
    }

    sim_pipe_free(&p);
    free(b);
}


static void
test_backpressure(void)
{
    sim_pipe_t       p;
    hg_config_t      cfg;
    bulk_t          *b;
    uint64_t         written_stalled;
    int              done;

    /* windows larger than the shell's buffers: those bind first */
    sim_pipe_config(&cfg);
    cfg.stream_window = 1 * MIB;
    cfg.conn_window = 4 * MIB;
    cfg.stream_send_buffer = 64 * KIB;
    b = calloc(1, sizeof(bulk_t));

    if (b == NULL
        || sim_pipe_init(&p, SEED + 7, &cfg, 32 * KIB, 64 * KIB, 1500) != 0)
    {
        tap_ok(0, "backpressure: set up");
        free(b);
        return;
    }

    b->n = 1;
    b->down_total = 8 * MIB;
    b->up_total = 0;
    b->agent_reads = 1;
    p.user = b;
    p.on_app = bulk_app;
    p.on_event = bulk_event;

    /* up and flowing; then the agent's shell stops reading its socket */
    sim_pipe_run(&p, flowing_done, 2 * HG_SEC);
    p.end[SIM_PIPE_AGENT].stalled = 1;
    sim_pipe_run(&p, NULL, 1 * HG_SEC);
    written_stalled = b->s[0].down_written;
    b->edge_held_peak = 0;
    sim_pipe_run(&p, NULL, 10 * HG_SEC);

    tap_ok(b->s[0].down_written < 8 * MIB,
           "backpressure: the edge could not write everything");
    tap_ok(b->s[0].down_written - written_stalled < 1024,
           "backpressure: nothing more was accepted in 10 s of a stalled "
           "reader (%llu bytes)",
           (unsigned long long) (b->s[0].down_written - written_stalled));
    tap_ok(p.end[SIM_PIPE_EDGE].out_len + 512 > p.end[SIM_PIPE_EDGE].out_cap,
           "backpressure: the edge shell's buffer is full (%zu of %zu)",
           p.end[SIM_PIPE_EDGE].out_len, p.end[SIM_PIPE_EDGE].out_cap);
    tap_ok(b->edge_held_peak <= cfg.stream_send_buffer + 16 * KIB,
           "backpressure: the edge engine holds at most its send buffer "
           "(%zu)", b->edge_held_peak);
    tap_is_int(hg_stream_writable(p.end[SIM_PIPE_EDGE].conn,
                                  b->s[0].edge_id), 0,
               "backpressure: the edge application is told to wait");
    tap_ok(!hg_conn_is_closed(p.end[SIM_PIPE_AGENT].conn)
           && !hg_conn_is_closed(p.end[SIM_PIPE_EDGE].conn),
           "backpressure: a stall shorter than the idle timeout ends "
           "nothing");

    /* the agent's application stops reading instead: windows hold */
    p.end[SIM_PIPE_AGENT].stalled = 0;
    b->agent_reads = 0;
    b->agent_held_peak = 0;
    sim_pipe_run(&p, NULL, 10 * HG_SEC);
    tap_ok(b->agent_held_peak <= cfg.stream_window,
           "backpressure: an application that does not read makes the "
           "agent hold at most the stream window (%zu)",
           b->agent_held_peak);

    b->agent_reads = 1;
    done = sim_pipe_run(&p, bulk_done, 60 * HG_SEC);
    tap_ok(done && b->s[0].down_read == 8 * MIB && b->s[0].bad == 0,
           "backpressure: reading again, all 8 MiB arrive intact");

    sim_pipe_free(&p);
    free(b);
}


static void
inject_after_ready(const char *name, const uint8_t *bytes, size_t len,
    const char *why)
{
    sim_pipe_t   p;
    hg_config_t  cfg;
    int          other;

    sim_pipe_config(&cfg);

    if (sim_pipe_init(&p, SEED + 11, &cfg, 64 * KIB, 64 * KIB, 64) != 0) {
        tap_ok(0, "%s: set up", name);
        return;
    }

    sim_pipe_run(&p, ready_done, 5 * HG_SEC);

    /* from the agent's side of the pipe, as a broken agent would send */
    sim_pipe_inject(&p, SIM_PIPE_AGENT, bytes, len);
    sim_pipe_run(&p, NULL, 3 * HG_SEC);

    tap_ok(p.end[SIM_PIPE_EDGE].recv_err,
           "%s: the edge refuses the bytes", name);
    tap_ok(p.end[SIM_PIPE_EDGE].closed,
           "%s: the edge's connection is over and its carrier shut", name);
    tap_is_int(p.end[SIM_PIPE_AGENT].close_code, HG_CODE_PROTOCOL,
               "%s: the agent is told: a protocol violation", name);
    other = strstr(p.end[SIM_PIPE_AGENT].close_text, why) != NULL;
    tap_ok(other, "%s: with the reason (\"%s\")", name,
           p.end[SIM_PIPE_AGENT].close_text);

    sim_pipe_free(&p);
}


static int
closed_done(sim_pipe_t *p)
{
    return hg_conn_is_closed(p->end[0].conn)
           && hg_conn_is_closed(p->end[1].conn);
}


static void
test_keepalive(void)
{
    sim_pipe_t       p;
    hg_config_t      cfg;
    hg_conn_stats_t  a, e;
    hg_time_t        start;

    sim_pipe_config(&cfg);

    if (sim_pipe_init(&p, SEED + 13, &cfg, 64 * KIB, 64 * KIB, 100) != 0) {
        tap_ok(0, "keepalive: set up");
        return;
    }

    sim_pipe_run(&p, ready_done, 5 * HG_SEC);
    sim_pipe_run(&p, NULL, 120 * HG_SEC);

    hg_conn_get_stats(p.end[SIM_PIPE_AGENT].conn, &a);
    hg_conn_get_stats(p.end[SIM_PIPE_EDGE].conn, &e);

    tap_ok(hg_conn_is_ready(p.end[SIM_PIPE_AGENT].conn)
           && hg_conn_is_ready(p.end[SIM_PIPE_EDGE].conn),
           "keepalive: two idle minutes (30 s idle timeout) end nothing");
    tap_ok(a.packets_sent >= 20 && e.packets_sent >= 20
           && a.packets_sent <= 30 && e.packets_sent <= 30,
           "keepalive: each side PINGs every 5 s (%llu and %llu packets)",
           (unsigned long long) a.packets_sent,
           (unsigned long long) e.packets_sent);

    /* the path goes silent: nothing either way */
    p.blackhole = 1;
    start = p.now;
    sim_pipe_run(&p, closed_done, 60 * HG_SEC);

    tap_ok(closed_done(&p), "keepalive: silence ends both sides");
    /* counted from the last packet heard, a keepalive at most before */
    tap_ok(p.now - start >= 25 * HG_SEC && p.now - start <= 31 * HG_SEC,
           "keepalive: at the idle timeout (%.1f s)",
           (double) (p.now - start) / HG_SEC);
    tap_is_int(p.end[SIM_PIPE_AGENT].close_code, HG_CODE_IDLE_TIMEOUT,
               "keepalive: as an idle timeout");

    sim_pipe_free(&p);
}


/* the agent's GOAWAY while a stream runs: it ends after that stream */
static void
test_goaway(void)
{
    sim_pipe_t   p;
    hg_config_t  cfg;
    bulk_t      *b;
    int          done;

    sim_pipe_config(&cfg);
    b = calloc(1, sizeof(bulk_t));

    if (b == NULL
        || sim_pipe_init(&p, SEED + 17, &cfg, 64 * KIB, 64 * KIB, 5000) != 0)
    {
        tap_ok(0, "goaway: set up");
        free(b);
        return;
    }

    b->n = 1;
    b->down_total = 4 * MIB;
    b->up_total = 1 * MIB;
    b->agent_reads = 1;
    p.user = b;
    p.on_app = bulk_app;
    p.on_event = bulk_event;

    sim_pipe_run(&p, flowing_done, 2 * HG_SEC);
    tap_ok(b->opened == 1 && b->s[0].down_read > 0
           && b->s[0].down_read < 4 * MIB,
           "goaway: a stream is under way");

    hg_conn_goaway(p.end[SIM_PIPE_AGENT].conn, HG_CODE_NORMAL,
                   "moving to UDP");
    sim_pipe_run(&p, NULL, 20 * HG_MS);
    tap_ok(!hg_conn_can_open_stream(p.end[SIM_PIPE_EDGE].conn),
           "goaway: the edge may open no new stream");

    done = sim_pipe_run(&p, closed_done, 30 * HG_SEC);
    tap_ok(done, "goaway: both ends close");
    tap_ok(b->s[0].down_read == 4 * MIB && b->s[0].up_read == 1 * MIB
           && b->s[0].bad == 0,
           "goaway: the stream finished intact first");
    tap_is_int(p.end[SIM_PIPE_EDGE].close_code, HG_CODE_NORMAL,
               "goaway: the edge is told with the GOAWAY's code");

    sim_pipe_free(&p);
    free(b);
}


int
main(void)
{
    static const uint8_t  oversize[] = { 0x40, 0x01, 0x0a, 0x00 };
    static const uint8_t  zero[] = { 0x00, 0x00 };
    static const uint8_t  garbage[] = { 0x00, 0x05, 0xff, 0xff, 0xff,
                                        0xff, 0xff };

    test_hello();

    run_bulk("1-7 byte pieces", 1, 192 * KIB, 64 * KIB, 7, 600 * HG_SEC, 1);
    run_bulk("64 KiB pieces", 1, 32 * MIB, 8 * MIB, 65536, 600 * HG_SEC, 0);
    run_bulk("64 streams", 64, 64 * KIB, 32 * KIB, 4096, 600 * HG_SEC, 1);

    test_backpressure();

    inject_after_ready("oversize length", oversize, sizeof(oversize),
                       "packet length over 16384");
    inject_after_ready("zero length", zero, sizeof(zero), "packet length 0");
    inject_after_ready("garbage packet", garbage, sizeof(garbage),
                       "malformed packet");

    test_keepalive();
    test_goaway();

    return tap_done();
}
