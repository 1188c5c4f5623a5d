/*
 * The bulk-transfer application; see sim_bulk.h.
 */

#include <stdio.h>
#include <string.h>

#include "sim_bulk.h"


#define SIM_CHUNK  16384


void
sim_bulk_init(sim_bulk_t *b, int agent, int nstreams, uint64_t down_bytes,
    uint64_t up_bytes)
{
    int  i;

    memset(b, 0, sizeof(*b));
    b->agent = agent;
    b->nstreams = nstreams > SIM_BULK_MAX_STREAMS ? SIM_BULK_MAX_STREAMS
                                                  : nstreams;
    b->down_bytes = down_bytes;
    b->up_bytes = up_bytes;

    for (i = 0; i < b->nstreams; i++) {
        b->s[i].id = -1;
        b->s[i].down_hash = EVP_MD_CTX_new();
        b->s[i].up_hash = EVP_MD_CTX_new();
        EVP_DigestInit_ex(b->s[i].down_hash, EVP_sha256(), NULL);
        EVP_DigestInit_ex(b->s[i].up_hash, EVP_sha256(), NULL);
    }
}


void
sim_bulk_free(sim_bulk_t *b)
{
    int  i;

    for (i = 0; i < b->nstreams; i++) {
        EVP_MD_CTX_free(b->s[i].down_hash);
        EVP_MD_CTX_free(b->s[i].up_hash);
    }
}


static sim_bulk_stream_t *
sim_bulk_find(sim_bulk_t *b, int64_t id)
{
    int  i;

    for (i = 0; i < b->opened; i++) {
        if (b->s[i].id == id) {
            return &b->s[i];
        }
    }

    return NULL;
}


/* writes the pattern into a stream while the engine takes it */
static void
sim_bulk_write(hg_conn_t *c, int64_t id, uint64_t *written, uint64_t total,
    unsigned *fin)
{
    uint8_t   buf[SIM_CHUNK];
    size_t    want, room;
    ssize_t   n;

    while (*written < total) {
        want = total - *written < SIM_CHUNK ? total - *written : SIM_CHUNK;

        /* the pattern costs time: make only what the engine will take */
        room = hg_stream_writable(c, id);
        if (room == 0) {
            return;
        }

        if (want > room) {
            want = room;
        }

        sim_pattern((uint64_t) id, *written, buf, want);

        n = hg_stream_write(c, id, buf, want);
        if (n <= 0) {
            return;
        }

        *written += (uint64_t) n;
    }

    if (!*fin) {
        if (hg_stream_shutdown(c, id) == HG_OK) {
            *fin = 1;
        }
    }
}


/* reads up to budget bytes; returns bytes read */
static uint64_t
sim_bulk_read(hg_conn_t *c, int64_t id, EVP_MD_CTX *hash, uint64_t *read,
    unsigned *done, uint64_t budget)
{
    uint8_t   buf[SIM_CHUNK];
    uint64_t  total;
    ssize_t   n;
    int       fin;

    total = 0;

    while (!*done && budget > 0) {
        n = hg_stream_read(c, id, buf,
                           budget < SIM_CHUNK ? budget : SIM_CHUNK, &fin);
        if (n < 0) {
            return total;
        }

        EVP_DigestUpdate(hash, buf, (size_t) n);
        *read += (uint64_t) n;
        total += (uint64_t) n;
        budget -= (uint64_t) n;

        if (fin) {
            *done = 1;
        }

        if (n == 0) {
            return total;
        }
    }

    return total;
}


static void
sim_bulk_edge(sim_t *sim, sim_bulk_t *b, hg_conn_t *edge)
{
    sim_bulk_stream_t  *st;
    hg_stream_meta_t    meta;
    int64_t             id;
    unsigned            fin, done;
    int                 i;

    while (b->opened < b->nstreams && hg_conn_can_open_stream(edge)) {
        memset(&meta, 0, sizeof(meta));
        snprintf(meta.client_addr, sizeof(meta.client_addr), "192.0.2.1");
        snprintf(meta.scheme, sizeof(meta.scheme), "https");
        snprintf(meta.host, sizeof(meta.host), "bulk.test");
        snprintf(meta.request_id, sizeof(meta.request_id), "req-%d",
                 b->opened);

        id = hg_stream_open(edge, &meta);
        if (id < 0) {
            break;
        }

        if (b->opened == 0) {
            b->started = sim->now;
        }

        b->s[b->opened++].id = id;
    }

    for (i = 0; i < b->opened; i++) {
        st = &b->s[i];
        if (st->abandoned) {
            continue;
        }

        fin = st->down_fin;
        sim_bulk_write(edge, st->id, &st->down_written, b->down_bytes, &fin);
        st->down_fin = fin;

        done = st->up_done;
        sim_bulk_read(edge, st->id, st->up_hash, &st->up_read, &done,
                      UINT64_MAX);
        st->up_done = done;
    }
}


static void
sim_bulk_agent(sim_t *sim, sim_bulk_t *b, hg_conn_t *agent)
{
    sim_bulk_stream_t  *st;
    uint64_t            budget, allowed, got;
    unsigned            done, fin;
    int                 i;

    if (b->paused) {
        budget = 0;
    } else if (b->read_rate) {
        allowed = (sim->now - b->started) * b->read_rate / HG_SEC;
        budget = allowed > b->agent_read_total
                 ? allowed - b->agent_read_total : 0;
    } else {
        budget = UINT64_MAX;
    }

    for (i = 0; i < b->opened; i++) {
        st = &b->s[i];
        if (!st->agent_knows || st->abandoned) {
            continue;
        }

        fin = st->up_fin;
        sim_bulk_write(agent, st->id, &st->up_written, b->up_bytes, &fin);
        st->up_fin = fin;

        if (st->held) {
            continue;
        }

        done = st->down_done;
        got = sim_bulk_read(agent, st->id, st->down_hash, &st->down_read,
                            &done, budget);
        st->down_done = done;
        b->agent_read_total += got;
        budget -= budget == UINT64_MAX ? 0 : got;

        if (st->down_written - st->down_read > b->max_unread) {
            b->max_unread = st->down_written - st->down_read;
        }
    }
}


static void
sim_bulk_app(sim_t *sim)
{
    sim_bulk_t   *b = sim->user;
    sim_agent_t  *a = &sim->agents[b->agent];

    if (a->edge && hg_conn_is_ready(a->edge)) {
        sim_bulk_edge(sim, b, a->edge);
    }

    if (a->ready) {
        sim_bulk_agent(sim, b, a->conn);
    }

    if (!b->finished && sim_bulk_done(sim)) {
        b->finished = sim->now;
    }
}


static void
sim_bulk_event(sim_t *sim, int agent, hg_conn_t *c, const hg_event_t *ev)
{
    sim_bulk_t         *b = sim->user;
    sim_bulk_stream_t  *st;

    (void) c;

    if (agent != b->agent || ev->type != HG_EV_STREAM_OPENED) {
        return;
    }

    st = sim_bulk_find(b, ev->stream_id);
    if (st == NULL) {
        snprintf(b->error, sizeof(b->error), "agent saw unknown stream %lld",
                 (long long) ev->stream_id);
        return;
    }

    if (ev->meta == NULL || strcmp(ev->meta->host, "bulk.test") != 0) {
        snprintf(b->error, sizeof(b->error), "stream %lld lost its meta",
                 (long long) ev->stream_id);
    }

    st->agent_knows = 1;
}


void
sim_bulk_attach(sim_t *sim, sim_bulk_t *b)
{
    sim->user = b;
    sim->on_app = sim_bulk_app;
    sim->on_event = sim_bulk_event;
}


int
sim_bulk_done(sim_t *sim)
{
    sim_bulk_t  *b = sim->user;
    int          i;

    if (b->opened < b->nstreams) {
        return 0;
    }

    for (i = 0; i < b->nstreams; i++) {
        if (!b->s[i].abandoned && (!b->s[i].down_done || !b->s[i].up_done))
        {
            return 0;
        }
    }

    return 1;
}


static void
sim_bulk_expected(int64_t id, uint64_t bytes, uint8_t out[32])
{
    EVP_MD_CTX  *ctx;
    uint8_t      buf[SIM_CHUNK];
    uint64_t     off;
    size_t       n;
    unsigned     len;

    ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

    for (off = 0; off < bytes; off += n) {
        n = bytes - off < SIM_CHUNK ? bytes - off : SIM_CHUNK;
        sim_pattern((uint64_t) id, off, buf, n);
        EVP_DigestUpdate(ctx, buf, n);
    }

    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}


int
sim_bulk_verify(sim_bulk_t *b)
{
    sim_bulk_stream_t  *st;
    uint8_t             want[32], got[32];
    unsigned            len;
    int                 i;

    if (b->error[0]) {
        return -1;
    }

    for (i = 0; i < b->nstreams; i++) {
        st = &b->s[i];

        if (st->abandoned) {
            continue;
        }

        if (st->down_read != b->down_bytes || st->up_read != b->up_bytes) {
            snprintf(b->error, sizeof(b->error), "stream %lld: %llu/%llu "
                     "bytes down, %llu/%llu up", (long long) st->id,
                     (unsigned long long) st->down_read,
                     (unsigned long long) b->down_bytes,
                     (unsigned long long) st->up_read,
                     (unsigned long long) b->up_bytes);
            return -1;
        }

        sim_bulk_expected(st->id, b->down_bytes, want);
        EVP_DigestFinal_ex(st->down_hash, got, &len);
        if (memcmp(want, got, 32) != 0) {
            snprintf(b->error, sizeof(b->error), "stream %lld: download "
                     "hash differs", (long long) st->id);
            return -1;
        }

        sim_bulk_expected(st->id, b->up_bytes, want);
        EVP_DigestFinal_ex(st->up_hash, got, &len);
        if (memcmp(want, got, 32) != 0) {
            snprintf(b->error, sizeof(b->error), "stream %lld: upload "
                     "hash differs", (long long) st->id);
            return -1;
        }
    }

    return 0;
}


uint64_t
sim_bulk_bytes(const sim_bulk_t *b)
{
    uint64_t  total;
    int       i;

    total = 0;
    for (i = 0; i < b->nstreams; i++) {
        total += b->s[i].down_read + b->s[i].up_read;
    }

    return total;
}
