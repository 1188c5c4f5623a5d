/*
 * Flow control: a reader that stops caps what the sender can write at the
 * stream window plus the stream send buffer, per stream, and at the
 * connection window plus the send buffers overall; the receiver never
 * holds more than a stream window per stream; the caps hold for a minute
 * of virtual time; resuming delivers every byte intact. A rate-limited
 * reader keeps memory bounded on both ends and is not slowed below its
 * rate. Streams that pin the whole connection window do not deadlock the
 * others once they are reset, from either end. A sender that ignores the
 * connection window is refused with a protocol error.
 *
 * Windows are small (64 KiB per stream, 256 KiB per connection) so the
 * caps bind early and byte counts stay moderate.
 */

#include <stdio.h>
#include <string.h>

#include "hg_conn.h"
#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


#define SEED         20260202
#define KIB          1024ULL
#define STREAM_WIN   (64 * KIB)
#define CONN_WIN     (256 * KIB)
#define SEND_BUF     (64 * KIB)


static sim_link_cfg_t  flow_link = {
    .delay = 20 * HG_MS,
    .bandwidth_bps = 50 * 1000 * 1000,
    .queue_limit = 256
};


static void
flow_config(hg_config_t *cfg)
{
    sim_config(cfg);
    cfg->stream_window = STREAM_WIN;
    cfg->conn_window = CONN_WIN;
    cfg->stream_send_buffer = SEND_BUF;
}


static int
setup(sim_t *sim, sim_bulk_t *b, int nstreams, uint64_t down_bytes)
{
    hg_config_t  cfg;

    flow_config(&cfg);

    if (sim_init(sim, SEED, &flow_link, &flow_link, &cfg) != 0
        || sim_add_agent(sim, "flow.test", "key") < 0)
    {
        return -1;
    }

    sim_bulk_init(b, 0, nstreams, down_bytes, 0);
    sim_bulk_attach(sim, b);

    return 0;
}


/* ---- what each end holds ------------------------------------------------- */

/* bytes the receiver holds against its window (received, not yet read) */
static uint64_t
unread(hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    cs = hg_cstream_find(c, id);
    if (cs == NULL || cs->s->reset_received || cs->s->stop_queued) {
        return 0;
    }

    return cs->s->recv_highest - cs->s->read;
}


static size_t
memory(hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    cs = hg_cstream_find(c, id);

    return cs ? hg_stream_memory(cs->s) : 0;
}


typedef struct {
    uint64_t  written;            /* by the edge's application, all streams */
    uint64_t  max_written;        /* the most on one stream */
    uint64_t  unread;             /* held by the agent, all streams */
    uint64_t  max_unread;         /* the most on one stream */
    size_t    memory;             /* stream buffers, both ends */
} flow_view_t;


static void
look(sim_t *sim, const sim_bulk_t *b, flow_view_t *v)
{
    const sim_bulk_stream_t  *st;
    uint64_t                  u;
    int                       i;

    memset(v, 0, sizeof(*v));

    for (i = 0; i < b->opened; i++) {
        st = &b->s[i];
        u = unread(sim->agents[0].conn, st->id);

        v->written += st->down_written;
        v->unread += u;
        v->memory += memory(sim->agents[0].conn, st->id)
                     + memory(sim->agents[0].edge, st->id);

        if (st->down_written > v->max_written) {
            v->max_written = st->down_written;
        }

        if (u > v->max_unread) {
            v->max_unread = u;
        }
    }
}


/* the caps of a stopped reader; 1 when all hold */
static int
caps_hold(const flow_view_t *v, int nstreams)
{
    return v->max_written <= STREAM_WIN + SEND_BUF
           && v->written <= CONN_WIN + nstreams * SEND_BUF
           && v->max_unread <= STREAM_WIN
           && v->unread <= CONN_WIN;
}


static void
show(const char *when, const flow_view_t *v)
{
    tap_diag("  %s: written %llu KiB (most on a stream %llu), unread at the "
             "agent %llu KiB (most %llu), stream memory %zu KiB", when,
             (unsigned long long) (v->written / KIB),
             (unsigned long long) (v->max_written / KIB),
             (unsigned long long) (v->unread / KIB),
             (unsigned long long) (v->max_unread / KIB), v->memory / KIB);
}


/* ---- a reader that stops ------------------------------------------------- */

static void
test_paused_reader(void)
{
    sim_t        sim;
    sim_bulk_t   b;
    flow_view_t  v, worst;
    int          nstreams, t, held;

    nstreams = 8;

    if (setup(&sim, &b, nstreams, 1024 * KIB) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    b.paused = 1;
    sim_run(&sim, NULL, sim.now + 3 * HG_SEC);

    look(&sim, &b, &v);
    show("paused 3 s", &v);

    tap_is_int(b.opened, nstreams, "paused reader: %d streams opened",
               nstreams);
    tap_ok(v.max_written <= STREAM_WIN + SEND_BUF, "a stream's writer is "
           "capped at window + send buffer (%llu <= %llu KiB)",
           (unsigned long long) (v.max_written / KIB),
           (unsigned long long) ((STREAM_WIN + SEND_BUF) / KIB));
    tap_is_int(v.written, CONN_WIN + nstreams * SEND_BUF, "the writers "
               "together reach exactly the connection window + %d send "
               "buffers", nstreams);
    tap_ok(v.max_unread <= STREAM_WIN, "the agent holds at most a stream "
           "window per stream (%llu KiB)",
           (unsigned long long) (v.max_unread / KIB));
    tap_is_int(v.unread, CONN_WIN, "and the connection window in all");

    /* a minute more: nothing creeps past the caps */
    held = 1;
    worst = v;

    for (t = 0; t < 60; t++) {
        sim_run(&sim, NULL, sim.now + HG_SEC);
        look(&sim, &b, &v);

        held = held && caps_hold(&v, nstreams) && v.written == worst.written;

        if (v.memory > worst.memory) {
            worst.memory = v.memory;
        }
    }

    show("paused 63 s", &v);

    tap_ok(held, "the caps hold for 60 s more, the written total unmoved");
    tap_ok(!sim.agents[0].closed && hg_conn_is_ready(sim.agents[0].edge),
           "the stalled session stays up (keepalives)");
    tap_ok(worst.memory <= (size_t) nstreams * (STREAM_WIN + SEND_BUF
                                                + 2 * HG_BYTEBUF_BLOCK),
           "stream memory stays within the windows (%zu KiB)",
           worst.memory / KIB);

    b.paused = 0;

    if (!tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 60 * HG_SEC),
                "resumed: every stream completes"))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_ok(sim_bulk_verify(&b) == 0, "resumed: every byte intact %s",
           b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/* ---- a slow reader ------------------------------------------------------- */

static void
test_slow_reader(void)
{
    sim_t        sim;
    sim_bulk_t   b;
    flow_view_t  v, worst;
    uint64_t     rate, total;
    hg_time_t    took, ideal, until;
    int          nstreams, ok, held;

    nstreams = 2;
    rate = 100 * KIB;
    total = 2048 * KIB;

    if (setup(&sim, &b, nstreams, total) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    b.read_rate = rate;
    memset(&worst, 0, sizeof(worst));
    held = 1;
    ok = 0;

    until = sim.now + 120 * HG_SEC;

    while (sim.now < until) {
        ok = sim_run(&sim, sim_bulk_done, sim.now + 250 * HG_MS);
        look(&sim, &b, &v);

        /* a reading reader moves the connection window along */
        held = held && v.max_unread <= STREAM_WIN && v.unread <= CONN_WIN;

        if (v.max_unread > worst.max_unread) {
            worst.max_unread = v.max_unread;
        }

        if (v.memory > worst.memory) {
            worst.memory = v.memory;
        }

        if (ok) {
            break;
        }
    }

    took = b.finished - b.started;
    ideal = nstreams * total * HG_SEC / rate;

    if (!tap_ok(ok, "slow reader: %d x %llu KiB at %llu KiB/s complete",
                nstreams, (unsigned long long) (total / KIB),
                (unsigned long long) (rate / KIB)))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_ok(sim_bulk_verify(&b) == 0, "slow reader: intact %s", b.error);
    tap_ok(held, "slow reader: the agent held at most a window at every "
           "look (most unread %llu KiB, window %llu KiB)",
           (unsigned long long) (worst.max_unread / KIB),
           (unsigned long long) (STREAM_WIN / KIB));
    tap_ok(worst.memory <= (size_t) nstreams * (STREAM_WIN + SEND_BUF
                                                + 2 * HG_BYTEBUF_BLOCK),
           "slow reader: stream memory stays bounded (at most %zu KiB)",
           worst.memory / KIB);
    tap_ok(b.max_unread <= STREAM_WIN + SEND_BUF, "slow reader: written "
           "ahead of the reader by at most window + send buffer (%llu KiB)",
           (unsigned long long) (b.max_unread / KIB));

    /* window updates keep ahead of the reader: it never waits on them */
    tap_ok(took <= ideal + ideal / 20, "slow reader: done in %.2f s, the "
           "reader's pace being %.2f s", (double) took / HG_SEC,
           (double) ideal / HG_SEC);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/* ---- streams that pin the connection window ------------------------------ */

static uint64_t  closed_events[2];


static void
count_closed(sim_t *sim, int agent, hg_conn_t *c, const hg_event_t *ev)
{
    (void) sim;
    (void) c;

    if (ev->type == HG_EV_STREAM_CLOSED) {
        closed_events[agent >= 0 ? 0 : 1]++;
    }
}


static sim_event_cb  bulk_event;


static void
flow_event(sim_t *sim, int agent, hg_conn_t *c, const hg_event_t *ev)
{
    bulk_event(sim, agent, c, ev);
    count_closed(sim, agent, c, ev);
}


/*
 * Streams 0..held-1 are never read: together their windows exceed the
 * connection window, so they pin all of it and the other streams stop
 * too. Resetting them (by the reader, or by the writer) must give the
 * credit back and let the others finish.
 */
static void
test_pinned_window(int by_reader)
{
    const char   *who;
    sim_t         sim;
    sim_bulk_t    b;
    flow_view_t   v;
    hg_conn_t    *resetter;
    uint64_t      pinned, progress;
    int           nstreams, held, i, ok, others_done;

    who = by_reader ? "reader resets" : "writer resets";
    nstreams = 10;
    held = 6;

    if (setup(&sim, &b, nstreams, 512 * KIB) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    memset(closed_events, 0, sizeof(closed_events));
    bulk_event = sim.on_event;
    sim.on_event = flow_event;

    for (i = 0; i < held; i++) {
        b.s[i].held = 1;
    }

    sim_run(&sim, NULL, sim.now + 3 * HG_SEC);
    look(&sim, &b, &v);
    show(who, &v);

    pinned = 0;
    for (i = 0; i < held; i++) {
        pinned += unread(sim.agents[0].conn, b.s[i].id);
    }

    others_done = 0;
    for (i = held; i < nstreams; i++) {
        others_done += b.s[i].down_done;
    }

    tap_is_int(pinned, CONN_WIN, "%s: %d unread streams pin the whole "
               "connection window", who, held);
    tap_ok(others_done < nstreams - held, "%s: the other streams are "
           "starved meanwhile (%d of %d done)", who, others_done,
           nstreams - held);

    progress = b.agent_read_total;
    sim_run(&sim, NULL, sim.now + 2 * HG_SEC);
    tap_is_int(b.agent_read_total, progress, "%s: nothing moves while they "
               "hold it", who);

    resetter = by_reader ? sim.agents[0].conn : sim.agents[0].edge;

    for (i = 0; i < held; i++) {
        tap_is_int(hg_stream_reset(resetter, b.s[i].id,
                                   HG_STREAM_ERR_CANCELLED),
                   HG_OK, "%s: stream %lld reset", who,
                   (long long) b.s[i].id);
        b.s[i].abandoned = 1;
    }

    ok = sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC);

    if (!tap_ok(ok, "%s: the credit comes back and the other %d streams "
                "complete", who, nstreams - held))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_ok(sim_bulk_verify(&b) == 0, "%s: intact %s", who, b.error);

    sim_run(&sim, NULL, sim.now + 2 * HG_SEC);

    tap_is_int(hg_conn_open_streams(sim.agents[0].conn), 0,
               "%s: every stream closed at the agent", who);
    tap_is_int(hg_conn_open_streams(sim.agents[0].edge), 0,
               "%s: and at the edge", who);
    tap_ok(closed_events[0] == (uint64_t) nstreams
           && closed_events[1] == (uint64_t) nstreams,
           "%s: STREAM_CLOSED for each on both ends (%llu, %llu)", who,
           (unsigned long long) closed_events[0],
           (unsigned long long) closed_events[1]);
    tap_ok(sim.agents[0].conn->recv_read == sim.agents[0].conn->recv_highest,
           "%s: the agent accounts every byte as consumed (%llu)", who,
           (unsigned long long) sim.agents[0].conn->recv_read);

    sim_bulk_free(&b);
    sim_free(&sim);
}


static int
read_streams_done(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;
    int          i;

    if (b->opened < b->nstreams) {
        return 0;
    }

    for (i = 0; i < b->nstreams; i++) {
        if (!b->s[i].held && !b->s[i].down_done) {
            return 0;
        }
    }

    return 1;
}


/*
 * Unread streams pin three quarters of the connection window: the others
 * must go on in the last quarter. Granting credit only once half the
 * window was consumed starved them for good (they could consume a
 * quarter at most), with no reset to rescue them.
 */
static void
test_partly_pinned(void)
{
    sim_t        sim;
    sim_bulk_t   b;
    flow_view_t  v;
    uint64_t     pinned;
    int          nstreams, held, i, ok;

    nstreams = 7;
    held = 3;

    if (setup(&sim, &b, nstreams, 512 * KIB) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    for (i = 0; i < held; i++) {
        b.s[i].held = 1;
    }

    ok = sim_run(&sim, read_streams_done, sim.now + 30 * HG_SEC);
    look(&sim, &b, &v);
    show("3/4 pinned", &v);

    pinned = 0;
    for (i = 0; i < held; i++) {
        pinned += unread(sim.agents[0].conn, b.s[i].id);
    }

    tap_is_int(pinned, held * STREAM_WIN, "%d unread streams pin %llu of "
               "the %llu KiB connection window", held,
               (unsigned long long) (held * STREAM_WIN / KIB),
               (unsigned long long) (CONN_WIN / KIB));

    if (!tap_ok(ok, "the other %d streams complete in the rest (%.1f s)",
                nstreams - held, (double) (sim.now - b.started) / HG_SEC))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    for (i = 0; i < held; i++) {
        b.s[i].abandoned = 1;
    }

    tap_ok(sim_bulk_verify(&b) == 0, "3/4 pinned: the read streams are "
           "intact %s", b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/* ---- a sender past the connection window -------------------------------- */

static int
agent_closed(sim_t *sim)
{
    return sim->agents[0].closed;
}


/*
 * The edge is made to believe the agent's connection limit is unbounded
 * (its send_max, which only the agent's MAX_DATA should raise), while
 * every stream still keeps to its own window: 8 streams of 64 KiB come to
 * twice the 256 KiB connection window, and only the agent's connection
 * level check can notice.
 */
static void
test_conn_window_exceeded(void)
{
    sim_t        sim;
    sim_bulk_t   b;
    hg_conn_t   *agent;
    int          nstreams, closed;

    nstreams = 8;

    if (setup(&sim, &b, nstreams, 1024 * KIB) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    b.paused = 1;
    sim_run(&sim, NULL, sim.now + 500 * HG_MS);

    if (!tap_ok(sim.agents[0].ready && sim.agents[0].edge != NULL
                && !sim.agents[0].closed, "cheating sender: the session is "
                "up"))
    {
        sim_bulk_free(&b);
        sim_free(&sim);
        return;
    }

    agent = sim.agents[0].conn;

    tap_is_int(agent->recv_highest, CONN_WIN, "the honest edge stopped at "
               "the connection window");

    sim.agents[0].edge->send_max = UINT64_MAX;

    closed = sim_run(&sim, agent_closed, sim.now + 5 * HG_SEC);

    tap_ok(closed, "the agent ends the session");
    tap_is_int(sim.agents[0].close_code, HG_CODE_PROTOCOL, "with a "
               "protocol violation");
    tap_is_str(sim.agents[0].close_text, "connection flow control exceeded",
               "naming the connection window");

    /* the CLOSE crosses the 20 ms link */
    sim_run(&sim, NULL, sim.now + 200 * HG_MS);

    tap_is_int(sim.agents[0].edge->close_code, HG_CODE_PROTOCOL,
               "the edge learns the code from the agent's CLOSE");

    sim_bulk_free(&b);
    sim_free(&sim);
}


int
main(void)
{
    test_paused_reader();
    test_slow_reader();
    test_partly_pinned();
    test_pinned_window(1);
    test_pinned_window(0);
    test_conn_window_exceeded();

    return tap_done();
}
