/*
 * A deterministic network simulator for the tunnel engine: engines talk
 * over virtual links with a virtual clock and a seeded RNG. Nothing reads
 * the real clock, so a run is a pure function of its seed and knobs; a
 * failing test prints its seed and can be replayed exactly.
 *
 * SIM_LOG=1 in the environment prints the engines' logs with the virtual
 * time.
 *
 * Topology: any number of agents (clients) and one edge (a listener plus
 * the connections it accepts). All agent->edge datagrams share the "up"
 * link and all edge->agent datagrams the "down" link, so sessions compete
 * for a bottleneck as they would behind one router.
 */

#ifndef HG_SIM_H
#define HG_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "hg.h"
#include "testcert.h"


typedef struct {
    double      loss;             /* independent loss probability */
    double      burst_enter;      /* Gilbert-Elliott: good -> bad */
    double      burst_exit;       /*                  bad -> good */
    double      burst_loss;       /* loss probability in the bad state */
    hg_time_t   delay;            /* one-way propagation delay */
    hg_time_t   jitter;           /* uniform extra delay, order kept */
    double      reorder;          /* probability of being held back */
    hg_time_t   reorder_delay;    /* how long a held-back datagram waits */
    double      duplicate;
    double      corrupt;          /* one random byte flipped */
    uint64_t    bandwidth_bps;    /* serialisation rate; 0: unlimited */
    size_t      queue_limit;      /* bottleneck queue, datagrams */
} sim_link_cfg_t;

typedef struct {
    uint64_t    sent;
    uint64_t    delivered;
    uint64_t    lost;             /* random and burst loss */
    uint64_t    queue_drops;
    uint64_t    duplicated;
    uint64_t    corrupted;
    uint64_t    bytes_delivered;
    size_t      max_queue;
} sim_link_stats_t;

typedef struct sim_packet_s  sim_packet_t;

typedef struct {
    sim_link_cfg_t    cfg;
    sim_link_stats_t  stats;
    uint64_t          rng;
    int               bad;            /* Gilbert-Elliott state */
    hg_time_t         busy_until;     /* bottleneck serialisation */
    hg_time_t         last_at;        /* latest in-order delivery time */
    sim_packet_t     *heap;           /* by delivery time */
    size_t            n;
    size_t            cap;
    uint64_t          seq;            /* FIFO among equal times */
} sim_link_t;

void sim_link_init(sim_link_t *l, const sim_link_cfg_t *cfg, uint64_t seed);
void sim_link_free(sim_link_t *l);
void sim_link_send(sim_link_t *l, hg_time_t now, const uint8_t *data,
    size_t len, int from, int to);
hg_time_t sim_link_next(const sim_link_t *l);
/* the next datagram due by `now`; 0 when none */
size_t sim_link_pop(sim_link_t *l, hg_time_t now, uint8_t *buf, int *from,
    int *to);
/* datagrams queued at the bottleneck and not yet serialised at `now` */
size_t sim_link_queued(const sim_link_t *l, hg_time_t now);

uint64_t sim_rand(uint64_t *state);
double sim_uniform(uint64_t *state);


/* ---- the harness --------------------------------------------------------- */

#define SIM_MAX_AGENTS  8
#define SIM_MAX_ADDRS   128           /* endpoint numbers counted */
#define SIM_EDGE        0             /* endpoint number of the edge */

typedef struct sim_s  sim_t;

/* called for every event an engine emits; agent is -1 for the edge */
typedef void (*sim_event_cb)(sim_t *sim, int agent, hg_conn_t *c,
    const hg_event_t *ev);
/* called once per loop turn to let the applications make progress */
typedef void (*sim_app_cb)(sim_t *sim);

typedef struct {
    hg_conn_t   *conn;            /* the agent's side */
    hg_conn_t   *edge;            /* the edge's side, once accepted */
    int          addr;            /* current endpoint number */
    int          ready;
    int          rejected;
    uint32_t     reject_code;
    int          closed;
    uint32_t     close_code;
    char         close_text[256];
} sim_agent_t;

struct sim_s {
    hg_time_t        now;
    uint64_t         seed;
    uint64_t         rng;
    sim_link_t       up;
    sim_link_t       down;
    hg_config_t      cfg;
    SSL_CTX         *server_ctx;
    SSL_CTX         *client_ctx;
    hg_listener_t   *listener;
    sim_agent_t      agents[SIM_MAX_AGENTS];
    int              nagents;
    int              next_addr;
    /* edge connections not (yet) matched to an agent */
    hg_conn_t       *orphans[SIM_MAX_AGENTS * 4];
    int              norphans;
    sim_event_cb     on_event;
    sim_app_cb       on_app;
    void            *user;
    int              accept_hello;    /* 1: accept, else reject code */
    uint32_t         reject_code;
    uint64_t         edge_datagrams;
    /* targeted loss: drop the next N datagrams in a direction */
    int              drop_up;
    int              drop_down;
    /* or decide per datagram (1: drop); dir 0 up, 1 down */
    int            (*drop)(sim_t *sim, int dir, const uint8_t *dgram,
                           size_t len);
    /* and may rewrite it on the way (before the drop decision) */
    void           (*mangle)(sim_t *sim, int dir, uint8_t *dgram,
                             size_t len);
    hg_testcert_t    certs;
    hg_time_t        stalled_since;
    /* datagram bytes the edge sent to each endpoint, and got from it */
    uint64_t         edge_bytes_to[SIM_MAX_ADDRS];
    uint64_t         edge_bytes_from[SIM_MAX_ADDRS];
};

/* server/client TLS from fresh test certificates */
int sim_init(sim_t *sim, uint64_t seed, const sim_link_cfg_t *up,
    const sim_link_cfg_t *down, const hg_config_t *cfg);
void sim_free(sim_t *sim);

/* starts an agent handshake; returns its index */
int sim_add_agent(sim_t *sim, const char *domain, const char *key);

/* a NAT rebinding: the agent's datagrams now come from a new address */
void sim_rebind(sim_t *sim, int agent);

/*
 * A datagram to the edge from endpoint `from`, whoever that is (a copy
 * of an agent's datagram forwarded from elsewhere); what the edge sends
 * to an endpoint no agent has is lost.
 */
void sim_inject(sim_t *sim, int from, const uint8_t *dgram, size_t len);

/* endpoint n is 10.0.0.n:4000+n; the edge is endpoint 0 */
void sim_addr(int n, struct sockaddr_in *sin);
int sim_addr_number(const struct sockaddr *sa);

/*
 * Runs until done(sim) is true or the virtual clock passes `until`.
 * Returns 1 when done() became true.
 */
int sim_run(sim_t *sim, int (*done)(sim_t *sim), hg_time_t until);

/* the default config the simulator tests start from */
void sim_config(hg_config_t *cfg);

/* the deterministic content of stream `id` at byte `offset` */
void sim_pattern(uint64_t id, uint64_t offset, uint8_t *buf, size_t len);

#endif /* HG_SIM_H */
