/*
 * Round-trip time on an idle session: the only packets are the session's
 * own (HELLO, HELLO_ACK, keepalive PINGs), and every one of them is acked
 * by a lone ACK that has nothing to pair with. A delayed ACK's wait must
 * not be taken for path RTT (RFC 9002 5.3): on a 0.1 ms round trip, both
 * ends' smoothed and minimum RTT stay well under a millisecond.
 */

#include <stdio.h>
#include <string.h>

#include "hg_conn.h"
#include "sim.h"
#include "tap.h"


#define SEED  20260301


static sim_link_cfg_t  loopback = {
    .delay = 50             /* microseconds each way */
};


static void
show(const char *who, hg_conn_t *c, hg_conn_stats_t *st)
{
    hg_conn_get_stats(c, st);

    tap_diag("  %s: srtt %.3f ms, min rtt %.3f ms, latest %.3f ms, rttvar "
             "%.3f ms, %llu packets sent", who, (double) st->srtt / HG_MS,
             (double) st->min_rtt / HG_MS, (double) st->latest_rtt / HG_MS,
             (double) st->rttvar / HG_MS,
             (unsigned long long) st->packets_sent);
}


static void
test_idle_loopback(void)
{
    sim_t            sim;
    hg_config_t      cfg;
    hg_conn_stats_t  agent, edge;

    sim_config(&cfg);

    if (sim_init(&sim, SEED, &loopback, &loopback, &cfg) != 0
        || sim_add_agent(&sim, "rtt.test", "key") < 0)
    {
        tap_ok(0, "simulator set up");
        return;
    }

    /* several keepalive rounds (5 s apart in the simulator's config) */
    sim_run(&sim, NULL, sim.now + 60 * HG_SEC);

    tap_ok(sim.agents[0].ready && !sim.agents[0].closed,
           "idle loopback: the session is up after a minute");

    show("agent", sim.agents[0].conn, &agent);
    show("edge", sim.agents[0].edge, &edge);

    tap_ok(agent.srtt < HG_MS, "the agent's smoothed rtt is under 1 ms "
           "(%.3f ms)", (double) agent.srtt / HG_MS);
    tap_ok(agent.min_rtt < HG_MS, "and its min rtt (%.3f ms)",
           (double) agent.min_rtt / HG_MS);
    tap_ok(edge.srtt < HG_MS, "the edge's smoothed rtt is under 1 ms "
           "(%.3f ms)", (double) edge.srtt / HG_MS);
    tap_ok(edge.min_rtt < HG_MS, "and its min rtt (%.3f ms)",
           (double) edge.min_rtt / HG_MS);

    sim_free(&sim);
}


int
main(void)
{
    test_idle_loopback();

    return tap_done();
}
