/*
 * Session behaviour of the engine in the simulator: handshake and HELLO,
 * rejection with a reason, streams and their limits, idle timeout and
 * keepalive, GOAWAY drain, CLOSE reasons, NAT rebinding; the connection
 * id taken only from HELLO_ACK, stateless resets with tokens, ids drawn
 * again on a collision.
 */

#include <stdio.h>
#include <string.h>

#include <netinet/in.h>

#include "hg_conn.h"
#include "sim.h"
#include "sim_bulk.h"
#include "tap.h"


static sim_link_cfg_t  clean_link = { .delay = 10 * HG_MS };


static int
all_ready(sim_t *sim)
{
    int  i;

    for (i = 0; i < sim->nagents; i++) {
        if (!sim->agents[i].ready) {
            return 0;
        }
    }

    return sim->nagents > 0;
}


static int
agent0_closed(sim_t *sim)
{
    return sim->agents[0].closed;
}


static int
setup(sim_t *sim, uint64_t seed, const hg_config_t *cfg)
{
    hg_config_t  c;

    if (cfg == NULL) {
        sim_config(&c);
        cfg = &c;
    }

    if (sim_init(sim, seed, &clean_link, &clean_link, cfg) != 0) {
        return -1;
    }

    return sim_add_agent(sim, "app.example.com", "secret-key");
}


static void
test_handshake(void)
{
    sim_t                        sim;
    const hg_listener_stats_t   *ls;
    hg_conn_stats_t              st;

    if (setup(&sim, 1, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    tap_ok(sim_run(&sim, all_ready, sim.now + 5 * HG_SEC),
           "handshake and HELLO complete");

    ls = hg_listener_stats(sim.listener);
    tap_is_int(ls->cookies_sent, 1, "one HelloVerifyRequest was sent");
    tap_is_int(ls->accepted, 1, "one connection was accepted");

    tap_ok(hg_conn_cid(sim.agents[0].conn) != NULL,
           "the agent learnt its connection id");
    tap_ok(memcmp(hg_conn_cid(sim.agents[0].conn),
                  hg_conn_cid(sim.agents[0].edge), HG_CID_LEN) == 0,
           "both ends agree on the connection id");

    hg_conn_get_stats(sim.agents[0].conn, &st);
    tap_ok(st.srtt >= 20 * HG_MS && st.srtt < 40 * HG_MS,
           "the agent measured the 20 ms RTT (%llu us)",
           (unsigned long long) st.srtt);

    sim_free(&sim);
}


static void
test_reject(void)
{
    sim_t  sim;

    if (setup(&sim, 2, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim.accept_hello = 0;
    sim.reject_code = HG_CODE_BAD_KEY;

    tap_ok(sim_run(&sim, agent0_closed, sim.now + 5 * HG_SEC),
           "a rejected agent's session ends");
    tap_ok(sim.agents[0].rejected, "the agent saw HG_EV_REJECTED");
    tap_is_int(sim.agents[0].reject_code, HG_CODE_BAD_KEY,
               "with the edge's code");
    tap_is_str(sim.agents[0].close_text, "rejected by the test",
               "and the edge's reason");
    tap_ok(hg_code_is_auth_failure(sim.agents[0].reject_code),
           "a bad key is an authentication failure (no retry)");

    sim_free(&sim);
}


static void
test_transfer(void)
{
    sim_t       sim;
    sim_bulk_t  b;

    if (setup(&sim, 3, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 4, 256 * 1024, 64 * 1024);
    sim_bulk_attach(&sim, &b);

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "4 streams, 256 KiB down and 64 KiB up each, complete");
    tap_ok(sim_bulk_verify(&b) == 0, "every byte arrived intact %s",
           b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


static void
test_stream_limit(void)
{
    sim_t        sim;
    hg_config_t  cfg;
    int64_t      id;
    int          i, opened;

    sim_config(&cfg);
    cfg.max_streams = 3;

    if (setup(&sim, 4, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_run(&sim, all_ready, sim.now + 5 * HG_SEC);

    opened = 0;
    for (i = 0; i < 5; i++) {
        id = hg_stream_open(sim.agents[0].edge, NULL);
        if (id >= 0) {
            opened++;
        } else {
            tap_is_int(id, HG_ERR_LIMIT, "stream %d refused with "
                       "HG_ERR_LIMIT", i);
        }
    }

    tap_is_int(opened, 3, "the agent's limit of 3 streams holds");

    sim_free(&sim);
}


static void
test_idle_timeout(void)
{
    sim_t        sim;
    hg_config_t  cfg;

    sim_config(&cfg);
    cfg.idle_timeout = 3 * HG_SEC;
    cfg.keepalive = 1 * HG_SEC;

    if (setup(&sim, 5, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_run(&sim, all_ready, sim.now + 5 * HG_SEC);
    sim_run(&sim, NULL, sim.now + 20 * HG_SEC);
    tap_ok(!sim.agents[0].closed, "keepalives hold an idle session for "
           "20 s with a 3 s idle timeout");

    /* the edge vanishes: nothing it sends arrives any more */
    sim.down.cfg.loss = 1.0;
    tap_ok(sim_run(&sim, agent0_closed, sim.now + 10 * HG_SEC),
           "an unreachable edge times out");
    tap_is_int(sim.agents[0].close_code, HG_CODE_IDLE_TIMEOUT,
               "with the idle timeout code");

    sim_free(&sim);
}


static int
goaway_done(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;

    return sim_bulk_done(sim) && sim->agents[0].closed
           && sim->agents[b->agent].edge != NULL;
}


static void
test_goaway(void)
{
    sim_t       sim;
    sim_bulk_t  b;

    if (setup(&sim, 6, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 0);
    sim_bulk_attach(&sim, &b);

    /* let the transfer start, then the edge goes away (a reload) */
    sim_run(&sim, NULL, sim.now + 150 * HG_MS);
    tap_ok(b.opened == 2 && !sim_bulk_done(&sim), "transfer in progress");

    hg_conn_goaway(sim.agents[0].edge, HG_CODE_GOING_AWAY, "reload");
    tap_ok(hg_conn_can_open_stream(sim.agents[0].edge),
           "the edge may still open streams after its GOAWAY (requests "
           "its worker already holds)");

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "open streams finish");
    tap_ok(sim_bulk_verify(&b) == 0, "drained streams are intact %s",
           b.error);

    sim_run(&sim, NULL, sim.now + 2 * HG_SEC);
    tap_ok(!sim.agents[0].closed && hg_conn_is_ready(sim.agents[0].edge),
           "an edge's session stays after GOAWAY until its shell closes it");

    hg_conn_close(sim.agents[0].edge, HG_CODE_GOING_AWAY, "reload done");
    tap_ok(sim_run(&sim, goaway_done, sim.now + 5 * HG_SEC),
           "then it closes");
    tap_is_int(sim.agents[0].close_code, HG_CODE_GOING_AWAY,
               "the agent sees the code on close");
    tap_is_str(sim.agents[0].close_text, "reload done", "and the reason");

    sim_bulk_free(&b);
    sim_free(&sim);
}


static void
test_agent_goaway(void)
{
    sim_t       sim;
    sim_bulk_t  b;

    if (setup(&sim, 7, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 0);
    sim_bulk_attach(&sim, &b);

    sim_run(&sim, NULL, sim.now + 150 * HG_MS);
    tap_ok(b.opened == 2 && !sim_bulk_done(&sim), "transfer in progress");

    /* the agent drains (SIGTERM) */
    hg_conn_goaway(sim.agents[0].conn, HG_CODE_GOING_AWAY, "agent stops");
    sim_run(&sim, NULL, sim.now + 100 * HG_MS);
    tap_ok(!hg_conn_can_open_stream(sim.agents[0].edge),
           "after the agent's GOAWAY the edge opens no stream");
    tap_is_int(hg_stream_open(sim.agents[0].edge, NULL), HG_ERR_STATE,
               "hg_stream_open refuses");

    tap_ok(sim_run(&sim, goaway_done, sim.now + 30 * HG_SEC),
           "open streams finish, then the agent's session closes");
    tap_ok(sim_bulk_verify(&b) == 0, "drained streams are intact %s",
           b.error);

    sim_bulk_free(&b);
    sim_free(&sim);
}


static void
test_close_reason(void)
{
    sim_t  sim;

    if (setup(&sim, 7, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_run(&sim, all_ready, sim.now + 5 * HG_SEC);
    hg_conn_close(sim.agents[0].edge, HG_CODE_REVOKED, "key rotated");

    tap_ok(sim_run(&sim, agent0_closed, sim.now + 2 * HG_SEC),
           "CLOSE reaches the agent");
    tap_is_int(sim.agents[0].close_code, HG_CODE_REVOKED, "with its code");
    tap_is_str(sim.agents[0].close_text, "key rotated", "and its reason");

    sim_run(&sim, NULL, sim.now + 3 * HG_SEC);
    tap_ok(hg_conn_is_closed(sim.agents[0].edge),
           "the edge's side is closed after draining");

    sim_free(&sim);
}


static void
test_rebinding(void)
{
    sim_t                   sim;
    sim_bulk_t              b;
    const struct sockaddr  *peer;
    const struct sockaddr_in *sin;

    if (setup(&sim, 8, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_bulk_init(&b, 0, 2, 8 * 1024 * 1024, 1024 * 1024);
    sim_bulk_attach(&sim, &b);

    sim_run(&sim, NULL, sim.now + 150 * HG_MS);
    tap_ok(!sim_bulk_done(&sim), "transfer in progress");

    sim_rebind(&sim, 0);

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "the transfer completes across a NAT rebinding");
    tap_ok(sim_bulk_verify(&b) == 0, "intact %s", b.error);

    peer = hg_conn_peer(sim.agents[0].edge, NULL);
    sin = (const struct sockaddr_in *) peer;
    tap_is_int(ntohs(sin->sin_port), 4000 + sim.agents[0].addr,
               "the edge follows the agent's new address");
    tap_is_int(hg_listener_stats(sim.listener)->accepted, 1,
               "no second handshake was needed");

    sim_bulk_free(&b);
    sim_free(&sim);
}


/* ---- the connection id and the stateless reset -------------------------- */

static uint64_t  mangled;
static uint64_t  agent_cid_mismatch;
static uint64_t  agent_with_cid;
static uint64_t  agent_routed_early;


/*
 * Down: once the session is READY, every edge datagram gets a rewritten
 * id in its prefix (the attack: one rewritten byte must not move a live
 * session). Up: count what the agent writes there.
 */
static void
rewrite_edge_cid(sim_t *sim, int dir, uint8_t *dgram, size_t len)
{
    const uint8_t  *cid;

    if (len < HG_PREFIX_LEN || !(dgram[0] & HG_PREFIX_FLAG_CID)) {
        return;
    }

    cid = sim->agents[0].edge ? hg_conn_cid(sim->agents[0].edge) : NULL;

    if (dir == 1) {
        if (sim->agents[0].ready) {
            dgram[1 + HG_CID_LEN - 1] ^= 0x5a;
            mangled++;
        }
        return;
    }

    if (!sim->agents[0].ready) {
        /* before HELLO_ACK: the edge's id, echoed for routing */
        if (cid && memcmp(dgram + 1, cid, HG_CID_LEN) == 0) {
            agent_routed_early++;
        }
        return;
    }

    agent_with_cid++;

    if (cid == NULL || memcmp(dgram + 1, cid, HG_CID_LEN) != 0) {
        agent_cid_mismatch++;
    }
}


static void
test_cid_from_hello_ack(void)
{
    sim_t       sim;
    sim_bulk_t  b;

    if (setup(&sim, 9, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    mangled = agent_cid_mismatch = agent_with_cid = agent_routed_early = 0;
    sim.mangle = rewrite_edge_cid;

    sim_bulk_init(&b, 0, 1, 2 * 1024 * 1024, 256 * 1024);
    sim_bulk_attach(&sim, &b);

    tap_ok(sim_run(&sim, sim_bulk_done, sim.now + 30 * HG_SEC),
           "a transfer completes while every edge prefix carries a "
           "rewritten id");
    tap_ok(sim_bulk_verify(&b) == 0, "intact %s", b.error);
    tap_ok(mangled > 100, "%llu edge datagrams were rewritten",
           (unsigned long long) mangled);
    tap_ok(agent_with_cid > 100 && agent_cid_mismatch == 0,
           "the agent wrote the id HELLO_ACK gave it into all %llu of its "
           "datagrams (%llu wrong)", (unsigned long long) agent_with_cid,
           (unsigned long long) agent_cid_mismatch);
    tap_ok(agent_routed_early > 0, "before HELLO_ACK it echoed the edge's "
           "id for routing (%llu datagrams)",
           (unsigned long long) agent_routed_early);

    sim_bulk_free(&b);
    sim_free(&sim);
}


static void
test_stateless_reset(void)
{
    sim_t           sim;
    uint8_t         reset[HG_RESET_LEN + 8];
    size_t          n;
    const uint8_t  *cid;

    if (setup(&sim, 10, NULL) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    tap_ok(sim_run(&sim, all_ready, sim.now + 5 * HG_SEC), "ready");
    cid = hg_conn_cid(sim.agents[0].edge);

    tap_is_int(hg_listener_reset(sim.listener, cid, HG_RESET_LEN, reset), 0,
               "no reset for a trigger no longer than the reset");

    n = hg_listener_reset(sim.listener, cid, 100, reset);
    tap_is_int(n, HG_RESET_LEN, "a reset is %d bytes", HG_RESET_LEN);

    /* a wrong token, then the bare prefix the old protocol sent */
    reset[n - 1] ^= 1;
    hg_conn_recv(sim.agents[0].conn, reset, n, NULL, 0, sim.now);
    hg_conn_recv(sim.agents[0].conn, reset, HG_PREFIX_LEN, NULL, 0,
                 sim.now);
    reset[n - 1] ^= 1;
    tap_ok(hg_conn_is_ready(sim.agents[0].conn),
           "a reset without the id's token is ignored");

    hg_conn_recv(sim.agents[0].conn, reset, n, NULL, 0, sim.now);
    tap_ok(hg_conn_is_closed(sim.agents[0].conn),
           "one with the token ends the session at once, quiet or not");

    sim_run(&sim, NULL, sim.now + 10 * HG_MS);
    tap_is_int(sim.agents[0].close_code, HG_CODE_RESET,
               "closed with HG_CODE_RESET");

    sim_free(&sim);
}


static int   taken_calls;
static int   taken_answer;


static int
cid_taken(void *ctx, const uint8_t *cid)
{
    (void) ctx;
    (void) cid;

    return taken_calls++ < taken_answer;
}


static void
test_cid_collision(void)
{
    sim_t        sim;
    hg_config_t  cfg;
    uint8_t      prefix[HG_CID_LEN];

    sim_config(&cfg);
    cfg.cb.cid_taken = cid_taken;
    taken_calls = 0;
    taken_answer = 2;

    if (setup(&sim, 11, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    tap_ok(sim_run(&sim, all_ready, sim.now + 5 * HG_SEC),
           "ready after two drawn ids were in use");
    tap_is_int(hg_listener_stats(sim.listener)->cid_collisions, 2,
               "the listener drew the id three times");

    sim_free(&sim);

    taken_calls = 0;
    taken_answer = 1000;

    if (setup(&sim, 12, &cfg) < 0) {
        tap_ok(0, "simulator set up");
        return;
    }

    sim_run(&sim, NULL, sim.now + 2 * HG_SEC);
    tap_ok(!sim.agents[0].ready && hg_listener_stats(sim.listener)->accepted
           == 0, "no session when no free id can be drawn");

    memset(prefix, 7, sizeof(prefix));
    tap_ok(hg_listener_new(&cfg, sim.server_ctx, prefix,
                           HG_CID_LEN - HG_CID_RANDOM_MIN + 1, sim.now)
           == NULL, "a listener leaves at least %d random bytes",
           HG_CID_RANDOM_MIN);

    sim_free(&sim);
}


/* ---- HELLO texts longer than the limit ---------------------------------- */

static int
zero_random(void *ctx, uint8_t *buf, size_t len)
{
    (void) ctx;
    memset(buf, 0, len);

    return 0;
}


static void
test_hello_limits(void)
{
    hg_config_t               cfg;
    hg_conn_t                *edge;
    hg_hello_t                hello;
    hg_event_t                ev;
    struct sockaddr_in        sin;
    char                      key[301];
    uint8_t                   body[1024];
    hg_codec_bytes_t          bytes;
    Hopgate__HelloFrame       f;
    Hopgate__TransportParams  params;
    int                       helloed;

    sim_config(&cfg);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';

    memset(&hello, 0, sizeof(hello));
    hello.domain = "app.example.com";
    hello.api_key = key;
    hello.worker_hint = -1;
    tap_ok(hg_conn_client_new(&cfg, NULL, NULL, &hello,
                              (struct sockaddr *) &sin, sizeof(sin), 0)
           == NULL, "an agent cannot start a session with a 300-character "
           "key");

    /* an edge that receives one anyway (another client) refuses it */
    cfg.cb.random = zero_random;
    edge = hg_conn_alloc(&cfg, HG_ROLE_SERVER, (struct sockaddr *) &sin,
                         sizeof(sin), 0);
    if (!tap_ok(edge != NULL, "a bare edge connection")) {
        return;
    }
    edge->state = HG_CS_HELLO;

    hopgate__transport_params__init(&params);
    params.max_streams = 8;
    params.stream_window = 65536;
    params.conn_window = 65536;
    hopgate__hello_frame__init(&f);
    f.domain = "app.example.com";
    f.api_key = key;
    f.params = &params;
    bytes.data = body;
    bytes.len = protobuf_c_message_pack(&f.base, body);

    hg_session_frame(edge, HOPGATE__FRAME__BODY_HELLO, &bytes);

    helloed = 0;
    while (hg_conn_next_event(edge, &ev) == HG_OK) {
        helloed |= ev.type == HG_EV_HELLO;
    }

    tap_ok(!helloed, "the edge's shell never sees that HELLO");
    tap_is_int(edge->close_code, HG_CODE_BAD_KEY,
               "the edge refuses it as a bad key");
    tap_is_str(edge->ack_text, "API key longer than 255 characters",
               "and says why");

    hg_conn_free(edge);
}


int
main(void)
{
    test_handshake();
    test_reject();
    test_transfer();
    test_stream_limit();
    test_idle_timeout();
    test_goaway();
    test_agent_goaway();
    test_close_reason();
    test_rebinding();
    test_cid_from_hello_ack();
    test_stateless_reset();
    test_cid_collision();
    test_hello_limits();

    return tap_done();
}
