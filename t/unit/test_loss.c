/*
 * Bulk transfers under impairment: every byte of every stream arrives
 * intact (SHA-256 compared) at 0, 1, 5 and 20% loss with reordering and
 * duplication, and with 1% corruption; bursty loss too. Prints the table
 * of loss rate against goodput and retransmissions. Failures name the seed
 * (HG_SEED=n replays one).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


#define STREAMS   4
#define MIB       (1024 * 1024)


typedef struct {
    const char  *name;
    double       loss;
    double       burst_enter;
    double       corrupt;
    uint64_t     down_bytes;
} scenario_t;


static void
link_for(const scenario_t *sc, sim_link_cfg_t *l)
{
    memset(l, 0, sizeof(*l));
    l->delay = 15 * HG_MS;
    l->jitter = 2 * HG_MS;
    l->reorder = 0.02;
    l->reorder_delay = 6 * HG_MS;
    l->duplicate = 0.01;
    l->bandwidth_bps = 40 * 1000 * 1000;
    l->queue_limit = 256;
    l->loss = sc->loss;
    l->corrupt = sc->corrupt;

    if (sc->burst_enter > 0) {
        l->burst_enter = sc->burst_enter;
        l->burst_exit = 0.3;
        l->burst_loss = 0.7;
    }
}


static void
run(const scenario_t *sc, uint64_t seed)
{
    sim_t            sim;
    sim_link_cfg_t   up, down;
    hg_config_t      cfg;
    sim_bulk_t       b;
    hg_conn_stats_t  es, as;
    hg_time_t        start, took;
    double           goodput, retx;
    int              ok;

    link_for(sc, &up);
    link_for(sc, &down);
    sim_config(&cfg);

    if (sim_init(&sim, seed, &up, &down, &cfg) != 0
        || sim_add_agent(&sim, "bulk.test", "key") < 0)
    {
        tap_ok(0, "%s: simulator set up", sc->name);
        return;
    }

    sim_bulk_init(&b, 0, STREAMS, sc->down_bytes, sc->down_bytes / 4);
    sim_bulk_attach(&sim, &b);

    start = sim.now;
    ok = sim_run(&sim, sim_bulk_done, sim.now + 600 * HG_SEC);
    took = sim.now - start;

    if (!tap_ok(ok, "%s: %d streams x %.1f MiB down + %.2f MiB up complete",
                sc->name, STREAMS, (double) sc->down_bytes / MIB,
                (double) sc->down_bytes / 4 / MIB))
    {
        tap_diag("seed %llu; stopped at %.1f s virtual",
                 (unsigned long long) seed, (double) took / HG_SEC);
    }

    if (!tap_ok(sim_bulk_verify(&b) == 0, "%s: every stream hashes as sent",
                sc->name))
    {
        tap_diag("seed %llu: %s", (unsigned long long) seed, b.error);
    }

    hg_conn_get_stats(sim.agents[0].edge, &es);
    hg_conn_get_stats(sim.agents[0].conn, &as);

    goodput = took ? (double) sim_bulk_bytes(&b) * 8 / ((double) took
                                                        / HG_SEC) / 1e6
                   : 0;
    retx = es.packets_sent + as.packets_sent
           ? (double) (es.packets_retransmitted + as.packets_retransmitted)
             / (double) (es.packets_sent + as.packets_sent)
           : 0;

    tap_diag("| %-22s | %5.1f%% | %8.2f Mbit/s | %5.1f%% | %6.2f s | "
             "%5llu lost | %4llu corrupt |",
             sc->name, sc->loss * 100, goodput, retx * 100,
             (double) took / HG_SEC,
             (unsigned long long) (es.packets_lost + as.packets_lost),
             (unsigned long long) (sim.up.stats.corrupted
                                   + sim.down.stats.corrupted));

    sim_bulk_free(&b);
    sim_free(&sim);
}


int
main(void)
{
    static const scenario_t  scenarios[] = {
        { "no loss",            0.00, 0,    0,    2 * MIB },
        { "1% loss",            0.01, 0,    0,    2 * MIB },
        { "5% loss",            0.05, 0,    0,    2 * MIB },
        { "20% loss",           0.20, 0,    0,    MIB / 2 },
        { "1% corruption",      0.00, 0,    0.01, 2 * MIB },
        { "bursty loss",        0.00, 0.01, 0,    MIB },
    };

    uint64_t  seed;
    size_t    i;
    char     *env;

    env = getenv("HG_SEED");
    seed = env ? strtoull(env, NULL, 10) : 20261126;

    tap_diag("| scenario               | loss   | goodput         | retx   "
             "| time     | packets    | datagrams    |");

    for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        run(&scenarios[i], seed + i);
    }

    return tap_done();
}
