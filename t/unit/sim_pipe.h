/*
 * A byte-pipe simulator for the stream carrier: an agent and an edge
 * engine joined by a reliable byte stream with bounded socket buffers,
 * as TLS over TCP gives them. Every write and every read moves a random
 * number of bytes (1 to max_segment), so packets and their length
 * prefixes arrive split anywhere; each shell keeps a bounded output
 * buffer and asks the engine for more only when it has room, which is
 * the backpressure the real shells apply. The clock is virtual and the
 * choices are seeded: a run is a pure function of its seed.
 */

#ifndef HG_SIM_PIPE_H
#define HG_SIM_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "hg.h"


#define SIM_PIPE_AGENT  0
#define SIM_PIPE_EDGE   1

typedef struct sim_pipe_s  sim_pipe_t;

/* every event an engine raises; side is SIM_PIPE_AGENT or SIM_PIPE_EDGE */
typedef void (*sim_pipe_event_cb)(sim_pipe_t *p, int side,
    const hg_event_t *ev);
/* once a turn: the applications read and write their streams */
typedef void (*sim_pipe_app_cb)(sim_pipe_t *p);

typedef struct {
    hg_conn_t        *conn;
    uint8_t          *out;            /* the shell's write buffer */
    size_t            out_len;
    size_t            out_cap;
    size_t            out_peak;
    uint8_t          *sock;           /* bytes in flight towards the peer:
                                         the socket buffers */
    size_t            sock_len;
    size_t            sock_cap;
    int               stalled;        /* the shell reads nothing */
    int               recv_err;       /* hg_conn_recv_bytes said HG_ERR */
    int               closed;         /* the engine closed: carrier shut */
    uint32_t          close_code;
    char              close_text[256];
    uint64_t          bytes_sent;     /* into the socket */
} sim_pipe_end_t;

struct sim_pipe_s {
    hg_time_t          now;
    uint64_t           rng;
    size_t             max_segment;
    int                blackhole;     /* nothing moves either way */
    sim_pipe_end_t     end[2];
    sim_pipe_event_cb  on_event;
    sim_pipe_app_cb    on_app;
    void              *user;
    int                ready;         /* the agent got READY */
    uint32_t           worker_index;
};

/*
 * An agent and an edge connection for domain/key. out_cap is each
 * shell's write buffer, sock_cap each direction's socket buffers. The
 * edge accepts HELLO itself (worker 3 of 4) unless on_event takes HELLO
 * (then the callback answers).
 */
int sim_pipe_init(sim_pipe_t *p, uint64_t seed, const hg_config_t *cfg,
    size_t out_cap, size_t sock_cap, size_t max_segment);
void sim_pipe_free(sim_pipe_t *p);

/* one turn: output, writes, reads, events, timers; 1 if anything moved */
int sim_pipe_step(sim_pipe_t *p);

/*
 * Steps until done(p) or the virtual time passes `limit` more; a turn
 * in which nothing moves jumps to the next engine deadline. Returns 1 if
 * done was reached.
 */
int sim_pipe_run(sim_pipe_t *p, int (*done)(sim_pipe_t *p),
    hg_time_t limit);

/* raw bytes from side towards its peer, as if its shell wrote them */
void sim_pipe_inject(sim_pipe_t *p, int side, const uint8_t *buf,
    size_t len);

void sim_pipe_config(hg_config_t *cfg);

#endif /* HG_SIM_PIPE_H */
