/*
 * The event queue: every event raised reaches the shell. Room for a
 * stream's events is reserved when the stream is created, so when memory
 * runs out the stream is refused (a peer's stream closes the connection,
 * which says so; hg_stream_open fails) and no event is dropped: a lost
 * STREAM_CLOSED would leak the shell's carrier and the engine's stream.
 *
 * Allocation failures are injected by the linker (this program is linked
 * with --wrap=malloc,calloc,realloc, see the Makefile): no real component
 * makes malloc fail on cue. They are armed only while the agent's engine
 * takes a datagram or the edge opens a stream, never inside OpenSSL or
 * the simulator.
 */

#include <stdlib.h>
#include <string.h>

#include "sim.h"
#include "tap.h"


#define TEST_STREAMS      40          /* 80 events held: past the first
                                         queue size */
#define TEST_STREAM_DATA  100
#define TEST_SWEEP_MAX    4000


void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);


/*
 * The fault: while armed, allocation number fail_at fails, and with
 * `persist` every one after it too (fail_at 1: all of them).
 */
static struct {
    int       armed;
    int       persist;
    uint64_t  count;                  /* allocations while armed */
    uint64_t  fail_at;
    uint64_t  failed;
} test_fault;


static int
test_fault_hit(void)
{
    if (!test_fault.armed) {
        return 0;
    }

    test_fault.count++;

    if (test_fault.fail_at != 0
        && (test_fault.count == test_fault.fail_at
            || (test_fault.persist && test_fault.count > test_fault.fail_at)))
    {
        test_fault.failed++;
        return 1;
    }

    return 0;
}


void *
__wrap_malloc(size_t size)
{
    return test_fault_hit() ? NULL : __real_malloc(size);
}


void *
__wrap_calloc(size_t n, size_t size)
{
    return test_fault_hit() ? NULL : __real_calloc(n, size);
}


void *
__wrap_realloc(void *p, size_t size)
{
    return test_fault_hit() ? NULL : __real_realloc(p, size);
}


/* ---- a session, then a wire between the two engines ------------------- */

static sim_link_cfg_t  clean_link = { .delay = 10 * HG_MS };

/* what the agent's shell was told */
typedef struct {
    int       opened[TEST_STREAMS];
    int       readable[TEST_STREAMS];
    int       stream_closed[TEST_STREAMS];
    int       closed;
    uint32_t  close_code;
    int       events;
} test_seen_t;


static int
test_ready(sim_t *sim)
{
    return sim->agents[0].ready && sim->agents[0].edge != NULL;
}


static int
test_setup(sim_t *sim, uint64_t seed)
{
    hg_config_t  cfg;

    sim_config(&cfg);

    if (sim_init(sim, seed, &clean_link, &clean_link, &cfg) != 0
        || sim_add_agent(sim, "app.example.com", "secret-key") < 0)
    {
        return -1;
    }

    return sim_run(sim, test_ready, sim->now + 5 * HG_SEC) ? 0 : -1;
}


/*
 * Datagrams go straight from one engine to the other, a millisecond of
 * virtual time per round; the edge's events are taken and ignored, the
 * agent's wait for the test. The fault is armed around the agent's input.
 */
static void
test_wire(sim_t *sim, int rounds, int fault)
{
    int                  i;
    ssize_t              n;
    uint8_t              buf[HG_MTU_MAX + 64];
    hg_event_t           ev;
    hg_conn_t           *agent, *edge;
    struct sockaddr_in   edge_addr, agent_addr;

    agent = sim->agents[0].conn;
    edge = sim->agents[0].edge;
    sim_addr(SIM_EDGE, &edge_addr);
    sim_addr(sim->agents[0].addr, &agent_addr);

    for (i = 0; i < rounds; i++) {
        sim->now += HG_MS;

        if (hg_conn_deadline(edge) <= sim->now) {
            hg_conn_timeout(edge, sim->now);
        }

        while ((n = hg_conn_send(edge, buf, sizeof(buf), sim->now)) > 0) {
            test_fault.armed = fault;
            hg_conn_recv(agent, buf, (size_t) n,
                         (struct sockaddr *) &edge_addr, sizeof(edge_addr),
                         sim->now);
            test_fault.armed = 0;
        }

        if (hg_conn_deadline(agent) <= sim->now) {
            hg_conn_timeout(agent, sim->now);
        }

        while ((n = hg_conn_send(agent, buf, sizeof(buf), sim->now)) > 0) {
            hg_conn_recv(edge, buf, (size_t) n,
                         (struct sockaddr *) &agent_addr, sizeof(agent_addr),
                         sim->now);
        }

        while (hg_conn_next_event(edge, &ev) == HG_OK) {
            /* the edge's side is not under test */
        }
    }
}


/* the edge opens TEST_STREAMS streams, each with a little data and FIN */
static int
test_open_streams(sim_t *sim, int64_t *ids)
{
    int         i;
    uint8_t     data[TEST_STREAM_DATA];
    hg_conn_t  *edge = sim->agents[0].edge;

    for (i = 0; i < TEST_STREAMS; i++) {
        ids[i] = hg_stream_open(edge, NULL);
        if (ids[i] < 0) {
            return -1;
        }

        sim_pattern((uint64_t) ids[i], 0, data, sizeof(data));

        if (hg_stream_write(edge, ids[i], data, sizeof(data))
            != (ssize_t) sizeof(data)
            || hg_stream_shutdown(edge, ids[i]) != HG_OK)
        {
            return -1;
        }
    }

    return 0;
}


static int
test_index(const int64_t *ids, int64_t id)
{
    int  i;

    for (i = 0; i < TEST_STREAMS; i++) {
        if (ids[i] == id) {
            return i;
        }
    }

    return -1;
}


/* the agent's shell takes its events */
static void
test_drain(hg_conn_t *agent, const int64_t *ids, test_seen_t *seen)
{
    int          i;
    hg_event_t   ev;

    while (hg_conn_next_event(agent, &ev) == HG_OK) {
        seen->events++;
        i = test_index(ids, ev.stream_id);

        switch (ev.type) {

        case HG_EV_STREAM_OPENED:
            if (i >= 0) {
                seen->opened[i]++;
            }
            break;

        case HG_EV_STREAM_READABLE:
            if (i >= 0) {
                seen->readable[i]++;
            }
            break;

        case HG_EV_STREAM_CLOSED:
            if (i >= 0) {
                seen->stream_closed[i]++;
            }
            break;

        case HG_EV_CLOSED:
            seen->closed++;
            seen->close_code = ev.code;
            break;

        default:
            break;
        }
    }
}


/*
 * No event lost: each stream reached the agent's shell whole (opened and
 * readable), or the connection reported its end; and a connection that
 * ended reported it, exactly once.
 */
static const char *
test_nothing_lost(hg_conn_t *agent, const test_seen_t *seen)
{
    int  i;

    if (seen->closed > 1) {
        return "CLOSED reported twice";
    }

    if (!hg_conn_is_ready(agent) && seen->closed == 0) {
        return "the connection ended without CLOSED";
    }

    for (i = 0; i < TEST_STREAMS; i++) {
        if (seen->opened[i] > 1 || seen->readable[i] > 1
            || seen->stream_closed[i] > 1)
        {
            return "an event came twice";
        }

        if ((!seen->opened[i] || !seen->readable[i]) && seen->closed == 0) {
            return "a stream's event was lost";
        }
    }

    return NULL;
}


/* ---- the tests ---------------------------------------------------------- */

static void
test_no_fault(void)
{
    sim_t         sim;
    test_seen_t   seen;
    int64_t       ids[TEST_STREAMS];
    const char   *why;

    if (test_setup(&sim, 1) != 0 || test_open_streams(&sim, ids) != 0) {
        tap_ok(0, "session set up");
        sim_free(&sim);
        return;
    }

    test_wire(&sim, 200, 0);

    memset(&seen, 0, sizeof(seen));
    test_drain(sim.agents[0].conn, ids, &seen);
    why = test_nothing_lost(sim.agents[0].conn, &seen);

    tap_ok(why == NULL && seen.closed == 0,
           "%d streams' events wait for the shell, none lost (%s)",
           TEST_STREAMS, why ? why : "ok");

    sim_free(&sim);
}


/*
 * The allocations the agent's engine makes while it takes the streams,
 * with their events piling up, fail from number k on (persist), or only
 * number k, for every k: whichever it is, nothing reported is lost, and
 * a connection that cannot go on says so.
 */
static void
test_every_allocation(int persist)
{
    sim_t         sim;
    test_seen_t   seen;
    int64_t       ids[TEST_STREAMS];
    const char   *why, *first;
    uint64_t      k, total, ended, internal, first_k;

    if (test_setup(&sim, 3) != 0 || test_open_streams(&sim, ids) != 0) {
        tap_ok(0, "session set up");
        sim_free(&sim);
        return;
    }

    memset(&test_fault, 0, sizeof(test_fault));
    test_wire(&sim, 200, 1);
    total = test_fault.count;
    sim_free(&sim);

    ended = 0;
    internal = 0;
    first = NULL;
    first_k = 0;

    for (k = 1; k <= total && k <= TEST_SWEEP_MAX; k++) {
        if (test_setup(&sim, 3) != 0 || test_open_streams(&sim, ids) != 0) {
            first = "session set up";
            first_k = k;
            sim_free(&sim);
            break;
        }

        memset(&test_fault, 0, sizeof(test_fault));
        test_fault.fail_at = k;
        test_fault.persist = persist;
        test_wire(&sim, 200, 1);

        memset(&seen, 0, sizeof(seen));
        test_drain(sim.agents[0].conn, ids, &seen);
        why = test_nothing_lost(sim.agents[0].conn, &seen);

        if (why != NULL && first == NULL) {
            first = why;
            first_k = k;
        }

        ended += seen.closed;
        internal += seen.closed && seen.close_code == HG_CODE_INTERNAL;
        sim_free(&sim);
    }

    tap_ok(total > TEST_STREAMS && total <= TEST_SWEEP_MAX,
           "the agent's engine allocates %llu times taking %d streams",
           (unsigned long long) total, TEST_STREAMS);
    tap_ok(first == NULL, "whichever %s, no event is lost%s%s",
           persist ? "allocation memory runs out at" : "one of them fails",
           first ? ": " : "", first ? first : "");
    if (first != NULL) {
        tap_diag("first at allocation %llu", (unsigned long long) first_k);
    }
    tap_is_int(internal, ended,
               "a connection that ended said why: an internal error "
               "(%llu of %llu)", (unsigned long long) ended,
               (unsigned long long) total);
    tap_ok(ended > 0, "some failures did end the connection");
}


/*
 * Our own stream: hg_stream_open refuses it cleanly when memory is out,
 * and the connection goes on.
 */
static void
test_open_refused(void)
{
    sim_t        sim;
    int64_t      id;
    hg_conn_t   *edge;

    if (test_setup(&sim, 4) != 0) {
        tap_ok(0, "session set up");
        sim_free(&sim);
        return;
    }

    edge = sim.agents[0].edge;

    memset(&test_fault, 0, sizeof(test_fault));
    test_fault.fail_at = 1;
    test_fault.persist = 1;
    test_fault.armed = 1;
    id = hg_stream_open(edge, NULL);
    test_fault.armed = 0;

    tap_is_int(id, HG_ERR_NOMEM, "hg_stream_open says HG_ERR_NOMEM");
    tap_is_int(hg_conn_open_streams(edge), 0, "and opened nothing");
    tap_ok(hg_conn_is_ready(edge), "the connection goes on");
    tap_ok(hg_stream_open(edge, NULL) >= 0,
           "and opens a stream once memory is back");

    sim_free(&sim);
}


/*
 * Readiness that comes and goes while the shell is away queues one event,
 * not one per change: the shell reads the state when it takes it.
 */
static void
test_readable_merges(void)
{
    int           i, fin;
    sim_t         sim;
    uint8_t       data[TEST_STREAM_DATA];
    int64_t       ids[TEST_STREAMS];
    hg_conn_t    *edge, *agent;
    test_seen_t   seen;

    if (test_setup(&sim, 5) != 0) {
        tap_ok(0, "session set up");
        sim_free(&sim);
        return;
    }

    edge = sim.agents[0].edge;
    agent = sim.agents[0].conn;

    memset(ids, 0xff, sizeof(ids));
    ids[0] = hg_stream_open(edge, NULL);

    for (i = 0; i < 10; i++) {
        sim_pattern((uint64_t) ids[0], 0, data, sizeof(data));
        hg_stream_write(edge, ids[0], data, sizeof(data));
        test_wire(&sim, 30, 0);

        /* the agent reads all without taking its events */
        while (hg_stream_read(agent, ids[0], data, sizeof(data), &fin) > 0) {
            /* void */
        }
    }

    memset(&seen, 0, sizeof(seen));
    test_drain(agent, ids, &seen);

    tap_is_int(seen.opened[0], 1, "one STREAM_OPENED");
    tap_is_int(seen.readable[0], 1,
               "one STREAM_READABLE for ten arrivals read in between");

    sim_free(&sim);
}


int
main(void)
{
    test_no_fault();
    test_every_allocation(1);
    test_every_allocation(0);
    test_open_refused();
    test_readable_merges();

    return tap_done();
}
