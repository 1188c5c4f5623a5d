/*
 * No stall: the losses that hang a transport without timers (the seed's
 * per-stream ARQ died of them) are each recovered within a bound derived
 * from the probe timeout. A case drops one chosen datagram (or every
 * datagram of one direction for a while), measures how long the session
 * takes to get past it, and compares that with
 *
 *     PTO   = srtt + max(4 * rttvar, 1 ms) + max_ack_delay
 *     bound = PTO + 2 * PTO + srtt
 *
 * from the recovering side's measured RTT: one probe, a second one after
 * the doubled timer should the first be lost too, and the round trip that
 * delivers the repair. DTLS handshake flights have their own timer
 * (HG_DTLS_RTO_INITIAL); their bound is the clean handshake time plus
 * that timer plus one RTT. Every case prints its figures. Failures name
 * the seed.
 */

#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>

#include "hg_conn.h"
#include "hg_dtls.h"
#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


#define SEED      20260101
#define KIB       1024


typedef enum {
    DROP_NONE = 0,
    DROP_NTH,                 /* the nth datagram of a direction */
    DROP_FIRST_APP,           /* the first DTLS application record */
    DROP_FIN,                 /* the first packet carrying a FIN */
    DROP_FIN_ALONE,           /* the first packet carrying a bare FIN */
    DROP_ALL                  /* everything, until the rule changes */
} drop_kind_t;


/* the one loss a case inflicts; dir 0 is agent->edge, 1 edge->agent */
typedef struct {
    drop_kind_t  kind;
    int          dir;
    int          nth;
    int          seen[2];
    uint64_t     inspected_pn;  /* packets of the sender looked at */
    int          dropped;
    hg_time_t    dropped_at;
    uint64_t     ptos_at_drop;  /* the sender's PTO count then */
    hg_time_t    srtt_at_drop;
    hg_time_t    first_probe_at;
} drop_rule_t;


static drop_rule_t     rule;

/* 20 ms each way, a 20 Mbit/s path: a 40 ms RTT with room to grow */
static sim_link_cfg_t  stall_link = {
    .delay = 20 * HG_MS,
    .bandwidth_bps = 20 * 1000 * 1000,
    .queue_limit = 256
};

/* the same path with background loss, jitter, reordering, duplicates */
static sim_link_cfg_t  lossy_link = {
    .delay = 20 * HG_MS,
    .bandwidth_bps = 20 * 1000 * 1000,
    .queue_limit = 256,
    .loss = 0.03,
    .jitter = 2 * HG_MS,
    .reorder = 0.02,
    .reorder_delay = 6 * HG_MS,
    .duplicate = 0.01
};

/*
 * A blackout on the lossy path with this seed once left the edge with
 * more in flight than its collapsed window and its keepalive due: the
 * PING could not leave, the keepalive time stayed in the past, and the
 * engine reported that deadline again and again (the shell would spin).
 */
#define LOSSY_SEED  2


/* ---- targeted loss ------------------------------------------------------- */

/* the packet hg_conn_send just built, if this datagram is a new one */
static const hg_sent_packet_t *
just_sent(hg_conn_t *c)
{
    if (c == NULL || c->rec.next_pn == rule.inspected_pn) {
        return NULL;
    }

    rule.inspected_pn = c->rec.next_pn;

    return &c->rec.ring[(c->rec.next_pn - 1) & (c->rec.ring_cap - 1)];
}


static int
carries_fin(const hg_sent_packet_t *pkt, int alone)
{
    size_t  i;

    for (i = 0; pkt && i < pkt->nframes; i++) {
        if (pkt->frames[i].type == HG_SF_STREAM && pkt->frames[i].fin
            && (!alone || pkt->frames[i].len == 0))
        {
            return 1;
        }
    }

    return 0;
}


static int
drop_by_rule(sim_t *sim, int dir, const uint8_t *dgram, size_t len)
{
    hg_conn_t  *sender;
    int         n, hit;

    n = rule.seen[dir]++;

    if (dir != rule.dir || rule.kind == DROP_NONE) {
        return 0;
    }

    sender = dir ? sim->agents[0].edge : sim->agents[0].conn;

    switch (rule.kind) {

    case DROP_NTH:
        hit = (n == rule.nth);
        break;

    case DROP_FIRST_APP:
        hit = !rule.dropped && len > HG_PREFIX_LEN
              && dgram[HG_PREFIX_LEN] == SSL3_RT_APPLICATION_DATA;
        break;

    case DROP_FIN:
    case DROP_FIN_ALONE:
        hit = !rule.dropped
              && carries_fin(just_sent(sender), rule.kind == DROP_FIN_ALONE);
        break;

    case DROP_ALL:
        hit = 1;
        break;

    default:
        hit = 0;
    }

    if (rule.dropped && rule.first_probe_at == 0 && sender != NULL
        && sender->stats.pto_count > rule.ptos_at_drop)
    {
        rule.first_probe_at = sim->now;
    }

    if (hit) {
        rule.dropped++;
        rule.dropped_at = sim->now;

        if (sender != NULL) {
            rule.ptos_at_drop = sender->stats.pto_count;
            rule.srtt_at_drop = sender->rec.smoothed_rtt;
        }
    }

    return hit;
}


static void
rule_set(drop_kind_t kind, int dir, int nth)
{
    memset(&rule, 0, sizeof(rule));
    rule.kind = kind;
    rule.dir = dir;
    rule.nth = nth;
}


/* ---- bounds -------------------------------------------------------------- */

static hg_time_t
pto_of(const hg_conn_stats_t *st, hg_time_t max_ack_delay)
{
    hg_time_t  var;

    var = 4 * st->rttvar;
    if (var < HG_MS) {
        var = HG_MS;
    }

    return st->srtt + var + max_ack_delay;
}


/* a probe, a second one after the doubled timer, and the round trip */
static hg_time_t
stall_bound(hg_conn_t *c, hg_time_t max_ack_delay, hg_time_t *pto)
{
    hg_conn_stats_t  st;

    hg_conn_get_stats(c, &st);
    *pto = pto_of(&st, max_ack_delay);

    return *pto + 2 * *pto + st.srtt;
}


static double
ms(hg_time_t t)
{
    return (double) t / HG_MS;
}


/*
 * The first probe itself carries the lost frames (RFC 9002 6.2.4), so
 * the case completes `trips` one-way trips after it (plus a quarter RTT
 * of slack); a bare PING probe would need a round trip more to learn of
 * the loss first.
 */
static void
first_probe_repairs(const char *what, hg_time_t took, int trips)
{
    hg_time_t  probe, limit;

    probe = rule.first_probe_at ? rule.first_probe_at - rule.dropped_at : 0;
    limit = probe + trips * rule.srtt_at_drop / 2 + rule.srtt_at_drop / 4;

    tap_ok(rule.first_probe_at != 0 && took <= limit, "%s: the first probe "
           "(%.0f ms after the loss) carries the repair (%.0f ms <= %.0f ms)",
           what, ms(probe), ms(took), ms(limit));
}


/* ---- setup --------------------------------------------------------------- */

static int
setup_on(sim_t *sim, const hg_config_t *cfg, const sim_link_cfg_t *link,
    uint64_t seed)
{
    if (sim_init(sim, seed, link, link, cfg) != 0) {
        return -1;
    }

    sim->drop = drop_by_rule;

    return sim_add_agent(sim, "stall.test", "key");
}


static int
setup(sim_t *sim, const hg_config_t *cfg)
{
    return setup_on(sim, cfg, &stall_link, SEED);
}


static int
agent_ready(sim_t *sim)
{
    return sim->agents[0].ready;
}


/* the path's RTT as both ends measure it, once traffic has flowed */
static void
settle_rtt(sim_t *sim)
{
    hg_stream_meta_t  meta;
    int64_t           id;
    int               fin;
    uint8_t           buf[64];

    memset(&meta, 0, sizeof(meta));
    id = hg_stream_open(sim->agents[0].edge, &meta);
    if (id >= 0) {
        hg_stream_write(sim->agents[0].edge, id, (const uint8_t *) "x", 1);
    }

    sim_run(sim, NULL, sim->now + 300 * HG_MS);

    if (id >= 0) {
        (void) hg_stream_read(sim->agents[0].conn, id, buf, sizeof(buf),
                              &fin);
    }

    sim_run(sim, NULL, sim->now + 300 * HG_MS);
}


/* ---- DTLS handshake flights ---------------------------------------------- */

static hg_time_t
clean_handshake(void)
{
    sim_t        sim;
    hg_config_t  cfg;
    hg_time_t    start, took;

    rule_set(DROP_NONE, 0, 0);
    sim_config(&cfg);

    if (setup(&sim, &cfg) < 0) {
        return 0;
    }

    start = sim.now;
    took = sim_run(&sim, agent_ready, sim.now + 5 * HG_SEC)
           ? sim.now - start : 0;

    sim_free(&sim);

    return took;
}


static void
test_handshake_loss(const char *what, int dir, int nth, hg_time_t clean)
{
    sim_t            sim;
    hg_config_t      cfg;
    hg_conn_stats_t  st;
    hg_time_t        start, took, bound;
    int              ok;

    rule_set(DROP_NTH, dir, nth);
    sim_config(&cfg);

    if (setup(&sim, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    start = sim.now;
    ok = sim_run(&sim, agent_ready, sim.now + 10 * HG_SEC);
    took = sim.now - start;

    hg_conn_get_stats(sim.agents[0].conn, &st);
    bound = clean + HG_DTLS_RTO_INITIAL + (st.srtt ? st.srtt : 0);

    tap_ok(rule.dropped == 1, "%s: the datagram was dropped", what);

    if (!tap_ok(ok && took <= bound, "%s lost: READY after %.0f ms "
                "(bound %.0f ms)", what, ms(took), ms(bound)))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_diag("  %s: clean handshake %.0f ms + flight timer %.0f ms + srtt "
             "%.0f ms = %.0f ms; took %.0f ms", what, ms(clean),
             ms(HG_DTLS_RTO_INITIAL), ms(st.srtt), ms(bound), ms(took));

    sim_free(&sim);
}


/* ---- HELLO and HELLO_ACK ------------------------------------------------- */

static void
test_session_control_loss(const char *what, int dir)
{
    sim_t        sim;
    hg_config_t  cfg;
    hg_conn_t   *recovering;
    hg_time_t    took, bound, pto;
    int          ok;

    rule_set(DROP_FIRST_APP, dir, 0);
    sim_config(&cfg);

    if (setup(&sim, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    ok = sim_run(&sim, agent_ready, sim.now + 10 * HG_SEC);
    took = sim.now - rule.dropped_at;

    tap_ok(rule.dropped == 1, "%s: its datagram was dropped", what);

    /* the bound comes from the path as measured once both ends know it */
    settle_rtt(&sim);

    recovering = dir ? sim.agents[0].edge : sim.agents[0].conn;
    bound = stall_bound(recovering, cfg.max_ack_delay, &pto);

    if (!tap_ok(ok && took <= bound, "lost %s: READY %.0f ms after the "
                "loss (bound %.0f ms)", what, ms(took), ms(bound)))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_diag("  %s: PTO %.0f ms, bound %.0f ms, recovered in %.0f ms", what,
             ms(pto), ms(bound), ms(took));
    first_probe_repairs(what, took, dir ? 1 : 2);

    sim_free(&sim);
}


/* ---- the tail of a stream ------------------------------------------------ */

static int
down_done(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;

    return b->opened > 0 && b->s[0].down_done;
}


static int
up_done(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;

    return b->opened > 0 && b->s[0].up_done;
}


/* the datagram with a stream's last bytes and FIN is lost */
static void
test_tail_loss(const char *what, int dir)
{
    sim_t        sim;
    sim_bulk_t   b;
    hg_config_t  cfg;
    hg_conn_t   *sender;
    hg_time_t    took, bound, pto;
    int          ok;

    rule_set(DROP_FIN, dir, 0);
    sim_config(&cfg);

    if (setup(&sim, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 1, dir ? 256 * KIB : 0, dir ? 0 : 256 * KIB);
    sim_bulk_attach(&sim, &b);

    ok = sim_run(&sim, dir ? down_done : up_done, sim.now + 20 * HG_SEC);
    took = sim.now - rule.dropped_at;

    tap_ok(rule.dropped == 1, "%s: the packet with the FIN was dropped",
           what);

    sender = dir ? sim.agents[0].edge : sim.agents[0].conn;
    bound = stall_bound(sender, cfg.max_ack_delay, &pto);

    if (!tap_ok(ok && took <= bound, "%s: the stream ends %.0f ms after "
                "losing its last packet (bound %.0f ms)", what, ms(took),
                ms(bound)))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_diag("  %s: PTO %.0f ms, bound %.0f ms, recovered in %.0f ms", what,
             ms(pto), ms(bound), ms(took));
    first_probe_repairs(what, took, 1);

    sim_run(&sim, sim_bulk_done, sim.now + 5 * HG_SEC);
    tap_ok(sim_bulk_verify(&b) == 0, "%s: intact %s", what, b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/*
 * A FIN that travels alone: the edge sends some bytes, waits until they
 * are acknowledged, then shuts the stream down; that bare FIN is lost.
 */
typedef struct {
    int64_t     id;
    int         shut;
    int         agent_fin;
    uint64_t    agent_read;
    hg_time_t   fin_read_at;
} fin_app_t;


static void
fin_app(sim_t *sim)
{
    fin_app_t     *app = sim->user;
    hg_conn_t     *edge = sim->agents[0].edge;
    hg_cstream_t  *cs;
    uint8_t        buf[4096];
    ssize_t        n;
    int            fin;

    if (edge == NULL || !hg_conn_is_ready(edge)) {
        return;
    }

    if (app->id < 0) {
        app->id = hg_stream_open(edge, NULL);
        sim_pattern((uint64_t) app->id, 0, buf, sizeof(buf));
        hg_stream_write(edge, app->id, buf, sizeof(buf));
    }

    cs = hg_cstream_find(edge, app->id);

    if (!app->shut && cs && cs->s->acked == sizeof(buf)) {
        hg_stream_shutdown(edge, app->id);
        app->shut = 1;
    }

    while (!app->agent_fin && sim->agents[0].ready) {
        n = hg_stream_read(sim->agents[0].conn, app->id, buf, sizeof(buf),
                           &fin);
        if (n < 0) {
            break;
        }

        app->agent_read += (uint64_t) n;

        if (fin) {
            app->agent_fin = 1;
            app->fin_read_at = sim->now;
        }

        if (n == 0) {
            break;
        }
    }
}


static int
fin_read(sim_t *sim)
{
    fin_app_t  *app = sim->user;

    return app->agent_fin;
}


static void
test_lost_bare_fin(void)
{
    sim_t        sim;
    hg_config_t  cfg;
    fin_app_t    app;
    hg_time_t    took, bound, pto;
    int          ok;

    rule_set(DROP_FIN_ALONE, 1, 0);
    sim_config(&cfg);

    if (setup(&sim, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    memset(&app, 0, sizeof(app));
    app.id = -1;
    sim.user = &app;
    sim.on_app = fin_app;

    ok = sim_run(&sim, fin_read, sim.now + 20 * HG_SEC);
    took = sim.now - rule.dropped_at;

    tap_ok(rule.dropped == 1, "bare FIN: a packet with only the FIN was "
           "dropped");

    bound = stall_bound(sim.agents[0].edge, cfg.max_ack_delay, &pto);

    if (!tap_ok(ok && took <= bound, "bare FIN: the reader sees the end "
                "%.0f ms after the loss (bound %.0f ms)", ms(took),
                ms(bound)))
    {
        tap_diag("seed %llu", (unsigned long long) SEED);
    }

    tap_is_int(app.agent_read, 4096, "bare FIN: all bytes before it read");
    tap_diag("  bare FIN: PTO %.0f ms, bound %.0f ms, recovered in %.0f ms",
             ms(pto), ms(bound), ms(took));
    first_probe_repairs("bare FIN", took, 1);

    sim_free(&sim);
}


/* ---- every ACK of a window lost ------------------------------------------ */

static uint64_t  acked_at_restore;


static int
edge_heard_ack(sim_t *sim)
{
    hg_conn_t  *edge = sim->agents[0].edge;

    return edge->rec.largest_acked != UINT64_MAX
           && edge->rec.largest_acked > acked_at_restore;
}


static int
agent_read_some(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;

    return b->agent_read_total >= 512 * KIB;
}


/*
 * The schedule of probes from the start of a blackout of length `dark`:
 * at pto, 3 pto, 7 pto... The first one after the blackout is answered
 * one RTT later; one more interval of slack allows for the window's last
 * packets leaving after the blackout began.
 */
static hg_time_t
blackout_bound(hg_time_t pto, hg_time_t srtt, hg_time_t dark)
{
    hg_time_t  interval, elapsed;

    interval = pto;
    elapsed = pto;

    while (elapsed < dark) {
        interval *= 2;
        elapsed += interval;
    }

    return elapsed - dark + interval + srtt;
}


static void
test_ack_blackout(const char *what, hg_time_t dark,
    const sim_link_cfg_t *link, uint64_t seed)
{
    sim_t            sim;
    sim_bulk_t       b;
    hg_config_t      cfg;
    hg_conn_stats_t  before, after;
    hg_time_t        pto, bound, restored, took;
    uint64_t         in_flight;
    int              ok;

    rule_set(DROP_NONE, 0, 0);
    sim_config(&cfg);

    if (setup_on(&sim, &cfg, link, seed) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 1, 4 * 1024 * KIB, 0);
    sim_bulk_attach(&sim, &b);

    sim_run(&sim, agent_read_some, sim.now + 10 * HG_SEC);
    hg_conn_get_stats(sim.agents[0].edge, &before);
    pto = pto_of(&before, cfg.max_ack_delay);

    /* every agent->edge datagram is lost for `dark` */
    rule_set(DROP_ALL, 0, 0);
    sim_run(&sim, NULL, sim.now + dark);
    in_flight = sim.agents[0].edge->cc.bytes_in_flight;
    rule_set(DROP_NONE, 0, 0);

    restored = sim.now;
    acked_at_restore = sim.agents[0].edge->rec.largest_acked;
    bound = blackout_bound(pto, before.srtt, dark);

    ok = sim_run(&sim, edge_heard_ack, sim.now + 30 * HG_SEC);
    took = sim.now - restored;

    hg_conn_get_stats(sim.agents[0].edge, &after);

    tap_ok(rule.dropped == 0 && in_flight > 0 && after.pto_count
           > before.pto_count, "%s: the edge was left with %llu bytes "
           "unacknowledged and probed", what, (unsigned long long) in_flight);

    if (!tap_ok(ok && took <= bound, "%s: ACKs flow %.0f ms after the path "
                "returns (bound %.0f ms)", what, ms(took), ms(bound)))
    {
        tap_diag("seed %llu", (unsigned long long) seed);
    }

    tap_diag("  %s: PTO %.0f ms, srtt %.0f ms, %llu probes; bound %.0f ms, "
             "resumed in %.0f ms", what, ms(pto), ms(before.srtt),
             (unsigned long long) (after.pto_count - before.pto_count),
             ms(bound), ms(took));

    if (!tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
                "%s: the transfer completes", what))
    {
        tap_diag("seed %llu", (unsigned long long) seed);
    }

    tap_ok(sim_bulk_verify(&b) == 0, "%s: intact %s", what, b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


int
main(void)
{
    hg_time_t  clean;

    clean = clean_handshake();
    tap_ok(clean > 0, "a clean handshake completes (%.0f ms)", ms(clean));

    /* up: ClientHello, ClientHello+cookie, key exchange+Finished;
     * down: HelloVerifyRequest, server flight, ChangeCipherSpec+Finished */
    test_handshake_loss("first ClientHello", 0, 0, clean);
    test_handshake_loss("HelloVerifyRequest", 1, 0, clean);
    test_handshake_loss("ClientHello with cookie", 0, 1, clean);
    test_handshake_loss("server flight", 1, 1, clean);
    test_handshake_loss("client key exchange flight", 0, 2, clean);
    test_handshake_loss("server Finished", 1, 2, clean);

    test_session_control_loss("HELLO", 0);
    test_session_control_loss("HELLO_ACK", 1);

    test_tail_loss("download", 1);
    test_tail_loss("upload", 0);
    test_lost_bare_fin();

    test_ack_blackout("blackout 200 ms", 200 * HG_MS, &stall_link, SEED);
    test_ack_blackout("blackout 1.5 s", 1500 * HG_MS, &stall_link, SEED);
    test_ack_blackout("blackout 1.5 s on a lossy path", 1500 * HG_MS,
                      &lossy_link, LOSSY_SEED);

    return tap_done();
}
