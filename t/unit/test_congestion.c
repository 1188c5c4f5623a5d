/*
 * Congestion control on a bottleneck: 10 Mbit/s, 20 ms each way, a queue
 * of 64 datagrams on the edge->agent direction. One long download uses at
 * least 80% of it as goodput, measured after the first seconds, and
 * overflows the queue rarely; with 1% random loss it is held to the
 * NewReno throughput formula (Mathis et al.) MSS/RTT * 1.22/sqrt(p); two
 * sessions sharing the bottleneck split it fairly, whether they start
 * together or one joins late. Every case prints its figures; seeds are
 * fixed, and a failure names its seed.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "hg_conn.h"
#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


#define BOTTLENECK_BPS  10000000ULL
#define WARMUP          (5 * HG_SEC)
#define FOREVER         (1ULL << 40)      /* a download that never ends */


static void
bottleneck(double loss, sim_link_cfg_t *up, sim_link_cfg_t *down)
{
    memset(up, 0, sizeof(*up));
    memset(down, 0, sizeof(*down));

    up->delay = 20 * HG_MS;

    down->delay = 20 * HG_MS;
    down->bandwidth_bps = BOTTLENECK_BPS;
    down->queue_limit = 64;
    down->loss = loss;
}


static double
mbit(uint64_t bytes, hg_time_t t)
{
    return t ? (double) bytes * 8 / ((double) t / HG_SEC) / 1e6 : 0;
}


/*
 * The formula's MSS is a segment's payload, what goodput counts: the most
 * stream bytes one of the edge's packets carried, read from its recovery
 * record after each send.
 */
static uint64_t  mss_seen;
static uint64_t  mss_inspected;


static int
watch_mss(sim_t *sim, int dir, const uint8_t *dgram, size_t len)
{
    hg_conn_t               *edge = sim->agents[0].edge;
    const hg_sent_packet_t  *pkt;
    size_t                   i;

    (void) dgram;
    (void) len;

    if (dir != 1 || edge == NULL || edge->rec.next_pn == mss_inspected) {
        return 0;
    }

    mss_inspected = edge->rec.next_pn;
    pkt = &edge->rec.ring[(mss_inspected - 1) & (edge->rec.ring_cap - 1)];

    for (i = 0; i < pkt->nframes; i++) {
        if (pkt->frames[i].type == HG_SF_STREAM
            && pkt->frames[i].len > mss_seen)
        {
            mss_seen = pkt->frames[i].len;
        }
    }

    return 0;
}


/* ---- one long download --------------------------------------------------- */

typedef struct {
    double           goodput;         /* Mbit/s over the measured span */
    uint64_t         sent;            /* datagrams into the bottleneck */
    uint64_t         queue_drops;
    uint64_t         steady_sent;
    uint64_t         steady_drops;
    hg_conn_stats_t  edge;
} download_t;


static int
download(uint64_t seed, double loss, hg_time_t measure, download_t *d)
{
    sim_t           sim;
    sim_link_cfg_t  up, down;
    hg_config_t     cfg;
    sim_bulk_t      b;
    uint64_t        read0, sent0, drops0;
    hg_time_t       t0;

    bottleneck(loss, &up, &down);
    sim_config(&cfg);

    if (sim_init(&sim, seed, &up, &down, &cfg) != 0
        || sim_add_agent(&sim, "download.test", "key") < 0)
    {
        return -1;
    }

    mss_inspected = 0;
    sim.drop = watch_mss;

    sim_bulk_init(&b, 0, 1, FOREVER, 0);
    sim_bulk_attach(&sim, &b);

    sim_run(&sim, NULL, sim.now + WARMUP);

    read0 = b.agent_read_total;
    sent0 = sim.down.stats.sent;
    drops0 = sim.down.stats.queue_drops;
    t0 = sim.now;

    sim_run(&sim, NULL, sim.now + measure);

    d->goodput = mbit(b.agent_read_total - read0, sim.now - t0);
    d->sent = sim.down.stats.sent;
    d->queue_drops = sim.down.stats.queue_drops;
    d->steady_sent = sim.down.stats.sent - sent0;
    d->steady_drops = sim.down.stats.queue_drops - drops0;
    hg_conn_get_stats(sim.agents[0].edge, &d->edge);

    sim_bulk_free(&b);
    sim_free(&sim);

    return 0;
}


static void
test_utilisation(void)
{
    download_t  d;
    uint64_t    seed;
    double      share, ratio;

    seed = 31;

    if (download(seed, 0, 40 * HG_SEC, &d) != 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    share = d.goodput * 1e6 / BOTTLENECK_BPS;
    ratio = d.sent ? (double) d.queue_drops / d.sent : 1;

    if (!tap_ok(share >= 0.80, "one download: goodput %.2f Mbit/s is %.1f%% "
                "of the 10 Mbit/s bottleneck (>= 80%%)", d.goodput,
                share * 100))
    {
        tap_diag("seed %llu", (unsigned long long) seed);
    }

    if (!tap_ok(ratio < 0.02, "one download: the queue overflowed for "
                "%.2f%% of the datagrams (< 2%%)", ratio * 100))
    {
        tap_diag("seed %llu", (unsigned long long) seed);
    }

    tap_diag("  10 Mbit/s, 40 ms, queue 64: goodput %.2f Mbit/s (%.1f%%) "
             "over 40 s after a 5 s start", d.goodput, share * 100);
    tap_diag("  queue drops %llu of %llu datagrams (%.2f%%), %llu of %llu "
             "after the start (%.3f%%)",
             (unsigned long long) d.queue_drops,
             (unsigned long long) d.sent, ratio * 100,
             (unsigned long long) d.steady_drops,
             (unsigned long long) d.steady_sent,
             d.steady_sent ? 100.0 * d.steady_drops / d.steady_sent : 0);
    tap_diag("  cwnd %llu bytes, srtt %.1f ms, min rtt %.1f ms, %llu "
             "congestion events, %llu PTOs",
             (unsigned long long) d.edge.cwnd,
             (double) d.edge.srtt / HG_MS, (double) d.edge.min_rtt / HG_MS,
             (unsigned long long) d.edge.congestion_events,
             (unsigned long long) d.edge.pto_count);
}


/* ---- random loss --------------------------------------------------------- */

/*
 * Four seeds, 40 s each, pooled: one seed's luck moves a 40 s figure by
 * several percent either way.
 */
static void
test_random_loss(void)
{
    static const uint64_t  seeds[] = { 41, 42, 43, 44 };

    download_t  d;
    double      p, goodput, srtt, bound, datagram_bound, worst, best;
    uint64_t    mss, worst_seed, best_seed;
    size_t      i, n;

    p = 0.01;
    n = sizeof(seeds) / sizeof(seeds[0]);
    goodput = 0;
    srtt = 0;
    worst = 1e9;
    worst_seed = 0;
    best = 0;
    best_seed = 0;
    mss_seen = 0;

    for (i = 0; i < n; i++) {
        if (download(seeds[i], p, 40 * HG_SEC, &d) != 0) {
            tap_ok(0, "simulator set up");
            return;
        }

        goodput += d.goodput / n;
        srtt += (double) d.edge.srtt / HG_SEC / n;

        if (d.goodput < worst) {
            worst = d.goodput;
            worst_seed = seeds[i];
        }

        if (d.goodput > best) {
            best = d.goodput;
            best_seed = seeds[i];
        }

        tap_diag("  1%% loss, seed %llu: goodput %.2f Mbit/s, srtt %.1f ms, "
                 "%llu lost, %llu congestion events, %llu PTOs",
                 (unsigned long long) seeds[i], d.goodput,
                 (double) d.edge.srtt / HG_MS,
                 (unsigned long long) d.edge.packets_lost,
                 (unsigned long long) d.edge.congestion_events,
                 (unsigned long long) d.edge.pto_count);
    }

    mss = mss_seen;
    bound = (double) mss * 8 / srtt * 1.22 / sqrt(p) / 1e6;
    datagram_bound = (double) HG_MTU_DEFAULT * 8 / 0.040 * 1.22 / sqrt(p)
                     / 1e6;

    tap_diag("  1%% loss: goodput %.2f Mbit/s; formula with MSS %llu "
             "(payload) and RTT %.1f ms (srtt): %.2f Mbit/s (%.0f%%)",
             goodput, (unsigned long long) mss, srtt * 1e3, bound,
             100 * goodput / bound);
    tap_diag("  1%% loss: formula with MSS %d (datagram) and RTT 40 ms: "
             "%.2f Mbit/s (%.0f%%)", HG_MTU_DEFAULT, datagram_bound,
             100 * goodput / datagram_bound);

    /*
     * The formula is an approximation, not a floor: its 1.22 = sqrt(3/2)
     * is the sawtooth of a window that grows one packet per RTT and
     * halves on a loss that comes once every 1/p packets. RFC 9002's
     * NewReno under random loss differs from that both ways: several
     * losses in one round are one congestion event (fewer halvings than
     * the formula counts), while retransmissions cost goodput and a loss
     * late in a round is found a round later. An ideal model of it
     * (every packet acknowledged at once, no pacing, 3-packet and 9/8
     * thresholds, recovery by send time) averages 1.17/sqrt(p) packets
     * per RTT when the window holds whole packets and 1.26/sqrt(p) when
     * it is used to the byte, 96-103% of the formula; see
     * docs/protocol.md, congestion control. So the pooled figure must lie
     * within 5% of the formula either way: below it, the controller
     * wastes its window (without filling the window's remainder, keeping
     * avoidance progress across a reduction, or acknowledging a burst's
     * end promptly it falls to 93-94%); above it, it backs off too little
     * (a reduction to 0.7 instead of 0.5 of the window gives 134%).
     */
    if (!tap_ok(goodput >= 0.95 * bound && goodput <= 1.05 * bound,
                "1%% loss: within 5%% of the formula over the four seeds "
                "(%.0f%%)", 100 * goodput / bound))
    {
        tap_diag("seeds 41-44");
    }

    if (!tap_ok(worst >= 0.9 * bound && best <= 1.1 * bound,
                "1%% loss: every seed within 10%% of the formula (%.0f%% "
                "to %.0f%%)", 100 * worst / bound, 100 * best / bound))
    {
        tap_diag("seed %llu", (unsigned long long) (worst < 0.9 * bound
                                                    ? worst_seed
                                                    : best_seed));
    }
}


/* ---- two sessions -------------------------------------------------------- */

/* sim_bulk serves one agent: dispatch the loop's calls to two of them */
static sim_bulk_t     two[2];
static sim_app_cb     bulk_app;
static sim_event_cb   bulk_event;


static void
two_app(sim_t *sim)
{
    int  i;

    for (i = 0; i < 2; i++) {
        if (two[i].agent < sim->nagents) {
            sim->user = &two[i];
            bulk_app(sim);
        }
    }
}


static void
two_event(sim_t *sim, int agent, hg_conn_t *c, const hg_event_t *ev)
{
    int  i;

    for (i = 0; i < 2; i++) {
        sim->user = &two[i];
        bulk_event(sim, agent, c, ev);
    }
}


static void
test_fairness(const char *what, uint64_t seed, hg_time_t join)
{
    sim_t           sim;
    sim_link_cfg_t  up, down;
    hg_config_t     cfg;
    uint64_t        read0[2], got[2], total;
    double          share[2], sum;
    hg_time_t       t0, span;
    int             i;

    bottleneck(0, &up, &down);
    sim_config(&cfg);

    if (sim_init(&sim, seed, &up, &down, &cfg) != 0
        || sim_add_agent(&sim, "one.test", "key") < 0)
    {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&two[0], 0, 1, FOREVER, 0);
    sim_bulk_init(&two[1], 1, 1, FOREVER, 0);
    sim_bulk_attach(&sim, &two[0]);

    bulk_app = sim.on_app;
    bulk_event = sim.on_event;
    sim.on_app = two_app;
    sim.on_event = two_event;

    sim_run(&sim, NULL, sim.now + join);

    if (sim_add_agent(&sim, "two.test", "key") < 0) {
        tap_ok(0, "second agent");
        return;
    }

    sim_run(&sim, NULL, sim.now + WARMUP);

    for (i = 0; i < 2; i++) {
        read0[i] = two[i].agent_read_total;
    }

    t0 = sim.now;
    span = 40 * HG_SEC;
    sim_run(&sim, NULL, sim.now + span);

    total = 0;
    for (i = 0; i < 2; i++) {
        got[i] = two[i].agent_read_total - read0[i];
        total += got[i];
    }

    for (i = 0; i < 2; i++) {
        share[i] = total ? (double) got[i] / total : 0;
    }

    sum = mbit(total, sim.now - t0);

    for (i = 0; i < 2; i++) {
        if (!tap_ok(share[i] >= 0.35 && share[i] <= 0.65, "%s: session %d "
                    "gets %.1f%% of the total (35-65%%)", what, i + 1,
                    share[i] * 100))
        {
            tap_diag("seed %llu", (unsigned long long) seed);
        }
    }

    tap_diag("  %s: %.2f + %.2f = %.2f Mbit/s (%.1f%% of the bottleneck) "
             "over %llu s; queue drops %llu", what,
             mbit(got[0], sim.now - t0), mbit(got[1], sim.now - t0), sum,
             sum * 1e6 / BOTTLENECK_BPS * 100,
             (unsigned long long) (span / HG_SEC),
             (unsigned long long) sim.down.stats.queue_drops);

    for (i = 0; i < 2; i++) {
        sim_bulk_free(&two[i]);
    }

    sim_free(&sim);
}


int
main(void)
{
    test_utilisation();
    test_random_loss();
    test_fairness("started together", 51, 0);
    test_fairness("second joins 10 s late", 52, 10 * HG_SEC);

    return tap_done();
}
