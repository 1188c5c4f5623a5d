/*
 * A bulk-transfer application for the simulator: the edge opens streams
 * to one agent and both sides send the deterministic pattern (sim_pattern)
 * as fast as the engine takes it; each receiver hashes what arrives. The
 * reader can be paused or rate-limited to exercise flow control.
 */

#ifndef HG_SIM_BULK_H
#define HG_SIM_BULK_H

#include <openssl/evp.h>

#include "sim.h"


#define SIM_BULK_MAX_STREAMS  64

typedef struct {
    int64_t      id;
    uint64_t     down_written;        /* edge -> agent */
    uint64_t     down_read;
    uint64_t     up_written;          /* agent -> edge */
    uint64_t     up_read;
    unsigned     down_fin:1;
    unsigned     up_fin:1;
    unsigned     down_done:1;         /* agent read the FIN */
    unsigned     up_done:1;           /* edge read the FIN */
    unsigned     agent_knows:1;       /* STREAM_OPENED reached the agent */
    unsigned     held:1;              /* the agent does not read it */
    unsigned     abandoned:1;         /* the test reset it: not checked */
    EVP_MD_CTX  *down_hash;
    EVP_MD_CTX  *up_hash;
} sim_bulk_stream_t;

typedef struct {
    int                 agent;
    int                 nstreams;
    uint64_t            down_bytes;   /* per stream */
    uint64_t            up_bytes;
    uint64_t            read_rate;    /* agent reader, bytes/s; 0: free */
    int                 paused;       /* agent reader stopped */
    int                 opened;
    sim_bulk_stream_t   s[SIM_BULK_MAX_STREAMS];
    hg_time_t           started;
    hg_time_t           finished;
    uint64_t            agent_read_total;
    uint64_t            max_unread;   /* max down_written - down_read */
    char                error[256];
} sim_bulk_t;

void sim_bulk_init(sim_bulk_t *b, int agent, int nstreams,
    uint64_t down_bytes, uint64_t up_bytes);
void sim_bulk_free(sim_bulk_t *b);

/* installs the application on the simulator (sim->user = b) */
void sim_bulk_attach(sim_t *sim, sim_bulk_t *b);

/* sim_run's done(): every stream not abandoned complete both ways */
int sim_bulk_done(sim_t *sim);

/*
 * 0 when every received byte stream hashes as sent (abandoned streams
 * aside); else fills error
 */
int sim_bulk_verify(sim_bulk_t *b);

/* payload bytes delivered both ways */
uint64_t sim_bulk_bytes(const sim_bulk_t *b);

#endif /* HG_SIM_BULK_H */
