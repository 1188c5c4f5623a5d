/*
 * Path validation in the simulator: the edge follows a NAT rebinding in
 * the middle of a transfer, but sends a new address no more than three
 * times what it received from there until a PATH_RESPONSE from there
 * echoes its PATH_CHALLENGE; a copy of an agent's packet forwarded from
 * a third address buys at most that, and the session goes back to the
 * agent's real address (at once when the agent speaks again, else when
 * the validation times out). Both ends answer PATH_CHALLENGE.
 */

#include <stdio.h>
#include <string.h>

#include "hg_codec.h"
#include "hg_conn.h"
#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


#define FORGED          99            /* where the forwarded copies come
                                         from */
#define TEST_CHALLENGE  0x0123456789abcdefULL
#define TEST_PN         (1ULL << 40)  /* ahead of anything really sent */


static sim_link_cfg_t  clean_link = { .delay = 10 * HG_MS };
static sim_link_cfg_t  rough_link = { .delay = 10 * HG_MS,
                                      .jitter = 2 * HG_MS,
                                      .loss = 0.01, .reorder = 0.05,
                                      .reorder_delay = 5 * HG_MS };

/* what the tests do to the path, and what they see of it */
static struct {
    int            forge;             /* forward copies of the agent's next
                                         datagrams from FORGED */
    int            silence;           /* the agent's datagrams are lost */
    int            unproven[SIM_MAX_ADDRS];   /* watched for the 3x limit */
    uint64_t       over_limit;        /* datagrams past it */
    int            migrated;          /* PEER_MIGRATED at the edge */
    hg_time_t      migrated_at[4];
    uint64_t       write_on_move;     /* the edge's app writes this much */
    sim_event_cb   next_event;        /* the bulk application's */
} path;


static int
path_drop(sim_t *sim, int dir, const uint8_t *dgram, size_t len)
{
    int              peer;
    hg_conn_t       *edge;
    hg_conn_stats_t  st;

    if (dir == 0) {
        if (path.forge > 0) {
            path.forge--;
            /* the copy races ahead: the original is then a replay */
            sim_inject(sim, FORGED, dgram, len);
        }

        return path.silence;
    }

    edge = sim->agents[0].edge;
    peer = sim_addr_number(hg_conn_peer(edge, NULL));
    hg_conn_get_stats(edge, &st);

    if (peer != FORGED && st.paths_validated > 0) {
        /* the rebinding's address is proven now */
        path.unproven[peer] = 0;
    }

    /* edge_bytes_to counts this datagram already */
    if (path.unproven[peer]
        && sim->edge_bytes_to[peer] > 3 * sim->edge_bytes_from[peer])
    {
        path.over_limit++;
    }

    return 0;
}


static void
path_event(sim_t *sim, int agent, hg_conn_t *c, const hg_event_t *ev)
{
    int64_t   id;
    uint8_t   buf[16384];
    uint64_t  n;

    if (agent < 0 && ev->type == HG_EV_PEER_MIGRATED) {
        if (path.migrated < 4) {
            path.migrated_at[path.migrated] = sim->now;
        }
        path.migrated++;

        /* data to send the moment the session moves: no window in the way */
        if (path.write_on_move > 0) {
            id = hg_stream_open(c, NULL);

            for (n = 0; id >= 0 && n < path.write_on_move; n += sizeof(buf)) {
                memset(buf, 'x', sizeof(buf));
                hg_stream_write(c, id, buf, sizeof(buf));
            }

            path.write_on_move = 0;
        }
    }

    if (path.next_event) {
        path.next_event(sim, agent, c, ev);
    }
}


static int
ready(sim_t *sim)
{
    return sim->agents[0].ready && sim->agents[0].edge != NULL;
}


static int
setup(sim_t *sim, uint64_t seed, const sim_link_cfg_t *link)
{
    hg_config_t  cfg;

    memset(&path, 0, sizeof(path));
    sim_config(&cfg);

    if (sim_init(sim, seed, link, link, &cfg) != 0
        || sim_add_agent(sim, "app.example.com", "secret-key") < 0
        || !sim_run(sim, ready, sim->now + 5 * HG_SEC))
    {
        return -1;
    }

    sim->drop = path_drop;
    sim->on_event = path_event;

    return 0;
}


/* the bulk application, with the path's event hook in front of it */
static void
attach_bulk(sim_t *sim, sim_bulk_t *b)
{
    sim_bulk_attach(sim, b);
    path.next_event = sim->on_event;
    sim->on_event = path_event;
}


static int
edge_peer(sim_t *sim)
{
    return sim_addr_number(hg_conn_peer(sim->agents[0].edge, NULL));
}


/* ---- rebinding ---------------------------------------------------------- */

static void
test_rebinding(const char *name, uint64_t seed, const sim_link_cfg_t *link)
{
    sim_t            sim;
    sim_bulk_t       b;
    hg_conn_stats_t  st;
    int              old;

    if (setup(&sim, seed, link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 1024 * 1024);
    attach_bulk(&sim, &b);

    sim_run(&sim, NULL, sim.now + 300 * HG_MS);
    tap_ok(!sim_bulk_done(&sim) && b.agent_read_total > 0,
           "%s: a transfer is under way", name);

    old = sim.agents[0].addr;
    sim_rebind(&sim, 0);
    path.unproven[sim.agents[0].addr] = 1;

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "%s: the transfer completes across a NAT rebinding", name);
    tap_ok(sim_bulk_verify(&b) == 0, "%s: intact %s", name, b.error);

    hg_conn_get_stats(sim.agents[0].edge, &st);
    tap_is_int(edge_peer(&sim), sim.agents[0].addr,
               "%s: the edge follows the agent's new address", name);
    tap_is_int(st.paths_validated, 1, "%s: after validating it", name);
    tap_is_int(st.path_failures, 0, "%s: at the first attempt", name);
    tap_is_int(path.migrated, 1,
               "%s: one move for the shell; late packets from the old "
               "address %d did not move it back", name, old);
    tap_is_int(path.over_limit, 0,
               "%s: until validated, at most 3x what came from there", name);
    tap_ok(sim.edge_bytes_to[sim.agents[0].addr]
           > 3 * sim.edge_bytes_from[sim.agents[0].addr],
           "%s: and without the limit after (%llu bytes sent, %llu got)",
           name,
           (unsigned long long) sim.edge_bytes_to[sim.agents[0].addr],
           (unsigned long long) sim.edge_bytes_from[sim.agents[0].addr]);
    tap_is_int(hg_listener_stats(sim.listener)->accepted, 1,
               "%s: no second handshake was needed", name);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/* ---- forwarded copies --------------------------------------------------- */

/*
 * A copy of the agent's PING from a third address while the agent then
 * falls silent: the edge tries the address, within the limit, and gives
 * up on it after max(3 PTO, 1 s).
 */
static void
test_forged_times_out(void)
{
    sim_t            sim;
    sim_bulk_t       b;
    hg_conn_stats_t  st;
    hg_time_t        took;
    int              real;

    if (setup(&sim, 11, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    real = sim.agents[0].addr;
    path.unproven[FORGED] = 1;
    path.forge = 1;
    path.silence = 1;
    hg_conn_ping(sim.agents[0].conn);

    sim_run(&sim, NULL, sim.now + 100 * HG_MS);
    tap_is_int(edge_peer(&sim), FORGED,
               "a forwarded copy of an authenticated packet moves the "
               "session, provisionally");
    tap_is_int(path.migrated, 1, "the shell is told");
    tap_ok(sim.edge_bytes_to[FORGED] > 0,
           "the edge challenges the new address (%llu bytes)",
           (unsigned long long) sim.edge_bytes_to[FORGED]);

    sim_run(&sim, NULL, sim.now + 2 * HG_SEC);
    hg_conn_get_stats(sim.agents[0].edge, &st);
    took = path.migrated_at[1] - path.migrated_at[0];

    tap_is_int(edge_peer(&sim), real,
               "unanswered, the session goes back to the validated address");
    tap_is_int(path.migrated, 2, "and the shell is told");
    tap_ok(took >= HG_PATH_TIMEOUT_MIN && took < HG_PATH_TIMEOUT_MIN
                                                 + 100 * HG_MS,
           "after the 1 s floor of 3 PTO (%llu ms)",
           (unsigned long long) (took / HG_MS));
    tap_is_int(st.path_failures, 1, "counted as a failed validation");
    tap_is_int(st.paths_validated, 0, "nothing was validated");
    tap_is_int(path.over_limit, 0,
               "the forged address never got more than 3x its bytes");
    tap_ok(sim.edge_bytes_to[FORGED] <= 3 * sim.edge_bytes_from[FORGED],
           "%llu bytes sent there for %llu received",
           (unsigned long long) sim.edge_bytes_to[FORGED],
           (unsigned long long) sim.edge_bytes_from[FORGED]);

    path.silence = 0;
    sim_bulk_init(&b, 0, 1, 1024 * 1024, 0);
    attach_bulk(&sim, &b);

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 10 * HG_SEC)
           && sim_bulk_verify(&b) == 0,
           "the session carries a transfer afterwards %s", b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


/*
 * A copy forwarded from a third address in the middle of a download: the
 * agent's next packet, from its validated address, takes the session
 * straight back.
 */
static void
test_forged_mid_transfer(void)
{
    sim_t            sim;
    sim_bulk_t       b;
    hg_conn_stats_t  st;
    hg_time_t        took;

    if (setup(&sim, 12, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 0);
    attach_bulk(&sim, &b);
    sim_run(&sim, NULL, sim.now + 300 * HG_MS);

    path.unproven[FORGED] = 1;
    path.forge = 1;

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "a download completes across a forwarded copy");
    tap_ok(sim_bulk_verify(&b) == 0, "intact %s", b.error);

    hg_conn_get_stats(sim.agents[0].edge, &st);
    took = path.migrated_at[1] - path.migrated_at[0];

    tap_is_int(path.migrated, 2, "the session moved, and came back");
    tap_ok(took < 20 * HG_MS,
           "back with the agent's next packet (%llu us)",
           (unsigned long long) took);
    tap_is_int(edge_peer(&sim), sim.agents[0].addr,
               "to the agent's address");
    tap_is_int(st.paths_validated + st.path_failures, 0,
               "no validation finished either way");
    tap_is_int(path.over_limit, 0, "the forged address got at most 3x");

    sim_bulk_free(&b);
    sim_free(&sim);
}


static int
moved_to_forged(sim_t *sim)
{
    return sim_addr_number(hg_conn_peer(sim->agents[0].edge, NULL)) == FORGED;
}


/*
 * The copy is the last the edge hears for 20 ms (the original and what
 * follows are lost): meanwhile it sends the copy's address no more than
 * 3x the copy, not its window's worth of the download, and the agent's
 * next datagram takes the session back.
 */
static void
test_forged_ahead(void)
{
    sim_t            sim;
    sim_bulk_t       b;
    hg_conn_stats_t  st;

    if (setup(&sim, 15, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 0);
    attach_bulk(&sim, &b);
    sim_run(&sim, NULL, sim.now + 300 * HG_MS);

    path.unproven[FORGED] = 1;
    path.forge = 1;
    path.silence = 1;

    tap_ok(sim_run(&sim, moved_to_forged, sim.now + HG_SEC),
           "a copy of the agent's datagram moves the session");
    sim_run(&sim, NULL, sim.now + 20 * HG_MS);
    tap_is_int(edge_peer(&sim), FORGED, "while the agent is not heard");
    tap_ok(sim.edge_bytes_to[FORGED] > 0
           && sim.edge_bytes_to[FORGED] <= 3 * sim.edge_bytes_from[FORGED],
           "which sends the copy's address %llu bytes for %llu",
           (unsigned long long) sim.edge_bytes_to[FORGED],
           (unsigned long long) sim.edge_bytes_from[FORGED]);

    path.silence = 0;
    sim_run(&sim, NULL, sim.now + 100 * HG_MS);
    hg_conn_get_stats(sim.agents[0].edge, &st);

    tap_is_int(edge_peer(&sim), sim.agents[0].addr,
               "the agent's next datagrams take it back");
    tap_is_int(st.path_failures, 0, "before the validation times out");

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC)
           && sim_bulk_verify(&b) == 0,
           "the download completes intact %s", b.error);
    tap_is_int(path.over_limit, 0, "the forged address got at most 3x");

    sim_bulk_free(&b);
    sim_free(&sim);
}


/*
 * A copy of the agent's last word (an ACK) while the agent has nothing
 * more to say: the edge's challenge to the validated address draws an
 * answer from there, and the session is back in a round trip rather than
 * at the validation's timeout.
 */
static void
test_forged_answered(void)
{
    sim_t            sim;
    hg_conn_stats_t  st;
    hg_time_t        took;

    if (setup(&sim, 16, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    path.unproven[FORGED] = 1;
    path.forge = 1;
    hg_conn_ping(sim.agents[0].edge);

    tap_ok(sim_run(&sim, moved_to_forged, sim.now + HG_SEC),
           "a copy of the agent's ACK moves the session");
    sim_run(&sim, NULL, sim.now + 200 * HG_MS);
    hg_conn_get_stats(sim.agents[0].edge, &st);
    took = path.migrated_at[1] - path.migrated_at[0];

    tap_is_int(edge_peer(&sim), sim.agents[0].addr,
               "the agent, challenged at its address, brings it back");
    tap_ok(path.migrated == 2 && took < 2 * 20 * HG_MS + 5 * HG_MS,
           "within a round trip or so (%llu ms)",
           (unsigned long long) (took / HG_MS));
    tap_is_int(st.path_failures, 0, "not at the validation's timeout");
    tap_is_int(path.over_limit, 0, "the forged address got at most 3x");

    sim_free(&sim);
}


/*
 * With data waiting and the window open, the edge sends an unvalidated
 * address exactly what the limit allows, counted in datagram bytes, and
 * more as more arrives from there.
 */
static void
test_amplification(void)
{
    sim_t       sim;
    uint64_t    first_in, first_out, in, out;

    if (setup(&sim, 13, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    path.unproven[FORGED] = 1;
    path.silence = 1;
    path.forge = 1;
    path.write_on_move = 256 * 1024;
    hg_conn_ping(sim.agents[0].conn);
    sim_run(&sim, NULL, sim.now + 30 * HG_MS);

    first_in = sim.edge_bytes_from[FORGED];
    first_out = sim.edge_bytes_to[FORGED];

    tap_ok(first_in > 0 && first_out <= 3 * first_in,
           "one %llu-byte datagram from the new address: at most %llu "
           "bytes back (%llu)", (unsigned long long) first_in,
           (unsigned long long) (3 * first_in),
           (unsigned long long) first_out);
    tap_ok(first_out + 64 > 3 * first_in,
           "the allowance is used when there is data to send");

    path.forge = 1;
    hg_conn_ping(sim.agents[0].conn);
    sim_run(&sim, NULL, sim.now + 30 * HG_MS);

    in = sim.edge_bytes_from[FORGED];
    out = sim.edge_bytes_to[FORGED];

    tap_ok(in > first_in && out > first_out && out <= 3 * in,
           "another datagram from there allows 3x more (%llu of %llu)",
           (unsigned long long) out, (unsigned long long) (3 * in));
    tap_is_int(path.over_limit, 0, "never more at any point");

    sim_free(&sim);
}


/* ---- PATH_CHALLENGE is answered ----------------------------------------- */

typedef struct {
    int       responses;
    uint64_t  data;
} test_capture_t;


static void
capture_plain(void *arg, const uint8_t *plain, size_t len)
{
    size_t              i;
    test_capture_t     *cap = arg;
    hg_codec_frame_t    frames[16], scratch;
    hg_codec_packet_t   pkt;
    const hg_codec_frame_t  *f;

    pkt.frames = frames;
    pkt.cap = 16;

    if (hg_codec_packet_check(plain, len, &pkt) != HG_OK) {
        return;
    }

    for (i = 0; i < pkt.nframes; i++) {
        f = hg_codec_packet_frame(&pkt, i, &scratch);
        if (f != NULL && f->kind == HOPGATE__FRAME__BODY_PATH_RESPONSE) {
            cap->responses++;
            cap->data = f->u.uints.v[0];
        }
    }
}


/* a packet with one PATH_CHALLENGE, sealed by `from` for its peer */
static size_t
seal_challenge(hg_conn_t *from, uint8_t *out, size_t cap)
{
    uint8_t            plain[64];
    size_t             len;
    ssize_t            n;
    hg_codec_uints_t   f;

    len = hg_codec_put_number(plain, TEST_PN);
    f.kind = HOPGATE__FRAME__BODY_PATH_CHALLENGE;
    f.v[0] = TEST_CHALLENGE;
    len = hg_codec_put_uints(plain + len, &f) - plain;

    n = hg_dtls_seal(from->dtls, plain, len, out + HG_PREFIX_LEN,
                     cap - HG_PREFIX_LEN);
    if (n < 0) {
        return 0;
    }

    hg_prefix_write(from, out);

    return (size_t) n + HG_PREFIX_LEN;
}


/* what `to` sends now, opened with its peer's keys */
static void
open_replies(sim_t *sim, hg_conn_t *to, hg_conn_t *peer,
    test_capture_t *cap)
{
    uint8_t  buf[HG_MTU_MAX + 64];
    ssize_t  n;

    memset(cap, 0, sizeof(*cap));

    while ((n = hg_conn_send(to, buf, sizeof(buf), sim->now)) > 0) {
        hg_dtls_recv(peer->dtls, buf + HG_PREFIX_LEN,
                     (size_t) n - HG_PREFIX_LEN, sim->now, capture_plain,
                     cap);
    }
}


static void
test_challenge_answered(void)
{
    sim_t               sim;
    uint8_t             dgram[HG_MTU_MAX + 64];
    size_t              len;
    hg_conn_t          *agent, *edge;
    test_capture_t      cap;
    struct sockaddr_in  sin;

    if (setup(&sim, 14, &clean_link) != 0) {
        tap_ok(0, "simulator set up");
        sim_free(&sim);
        return;
    }

    agent = sim.agents[0].conn;
    edge = sim.agents[0].edge;

    /* from a third address, and nothing but the challenge: a probe */
    len = seal_challenge(agent, dgram, sizeof(dgram));
    sim_addr(FORGED - 1, &sin);
    tap_is_int(hg_conn_recv(edge, dgram, len, (struct sockaddr *) &sin,
                            sizeof(sin), sim.now), HG_OK,
               "the edge takes a PATH_CHALLENGE");

    open_replies(&sim, edge, agent, &cap);
    tap_is_int(cap.responses, 1, "and answers it with a PATH_RESPONSE");
    tap_ok(cap.data == TEST_CHALLENGE, "echoing the data");
    tap_is_int(edge_peer(&sim), sim.agents[0].addr,
               "a probe alone does not move the session");

    len = seal_challenge(edge, dgram, sizeof(dgram));
    sim_addr(SIM_EDGE, &sin);
    tap_is_int(hg_conn_recv(agent, dgram, len, (struct sockaddr *) &sin,
                            sizeof(sin), sim.now), HG_OK,
               "the agent takes a PATH_CHALLENGE");

    open_replies(&sim, agent, edge, &cap);
    tap_is_int(cap.responses, 1, "and answers it too");
    tap_ok(cap.data == TEST_CHALLENGE, "echoing the data");

    sim_free(&sim);
}


int
main(void)
{
    test_rebinding("clean path", 8, &clean_link);
    test_rebinding("lossy, reordering path", 9, &rough_link);
    test_forged_times_out();
    test_forged_mid_transfer();
    test_forged_ahead();
    test_forged_answered();
    test_amplification();
    test_challenge_answered();

    return tap_done();
}
