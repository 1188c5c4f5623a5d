/*
 * The connection's streams: a hash table by id plus a list in opening
 * order (the send scheduler walks it round-robin), the public stream
 * calls, readiness events, and the end of a stream's life.
 *
 * A stream is closed once both directions are done; STREAM_CLOSED is then
 * queued, and the stream is freed when the shell takes that event, so a
 * pointer handed out with an earlier event (the meta of STREAM_OPENED)
 * stays valid until the shell has seen the stream end.
 */

#include <stdlib.h>
#include <string.h>

#include "hg_conn.h"


static void hg_conn_consumed(hg_conn_t *c, uint64_t n);


static size_t
hg_hash_id(int64_t id, size_t size)
{
    uint64_t  h;

    h = (uint64_t) id * 0x9e3779b97f4a7c15ULL;

    return (size_t) (h >> 32) & (size - 1);
}


int
hg_cstreams_init(hg_conn_t *c)
{
    size_t  size;

    size = 64;
    while (size < 2 * (size_t) c->cfg.max_streams && size < 65536) {
        size *= 2;
    }

    /* made with the first stream: a half-open handshake has none */
    c->table_size = size;

    return 0;
}


static void
hg_cstream_destroy(hg_conn_t *c, hg_cstream_t *cs)
{
    hg_cstream_t  **pp;

    for (pp = &c->table[hg_hash_id(cs->s->id, c->table_size)];
         *pp;
         pp = &(*pp)->hnext)
    {
        if (*pp == cs) {
            *pp = cs->hnext;
            break;
        }
    }

    if (cs->prev) {
        cs->prev->next = cs->next;
    } else {
        c->first = cs->next;
    }

    if (cs->next) {
        cs->next->prev = cs->prev;
    } else {
        c->last = cs->prev;
    }

    if (c->cursor == cs) {
        c->cursor = cs->next;
    }

    hg_stream_free(cs->s);
    free(cs);
    c->ncstreams--;
}


void
hg_cstreams_free(hg_conn_t *c)
{
    while (c->first) {
        hg_cstream_destroy(c, c->first);
    }

    free(c->table);
    c->table = NULL;
}


hg_cstream_t *
hg_cstream_find(const hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    if (c->table == NULL) {
        return NULL;
    }

    for (cs = c->table[hg_hash_id(id, c->table_size)]; cs; cs = cs->hnext) {
        if (cs->s->id == id) {
            return cs;
        }
    }

    return NULL;
}


int
hg_stream_is_local(const hg_conn_t *c, int64_t id)
{
    return (id & 1) == (c->role == HG_ROLE_SERVER ? 1 : 0);
}


hg_cstream_t *
hg_cstream_create(hg_conn_t *c, int64_t id, int local)
{
    hg_cstream_t  *cs;
    size_t         h;
    uint64_t       send_max;

    /* every event the stream can raise has its room before it exists */
    if (hg_conn_events_reserve(c, c->ncstreams + 1) != HG_OK) {
        return NULL;
    }

    if (c->table == NULL) {
        c->table = calloc(c->table_size, sizeof(hg_cstream_t *));
        if (c->table == NULL) {
            return NULL;
        }
    }

    cs = calloc(1, sizeof(hg_cstream_t));
    if (cs == NULL) {
        return NULL;
    }

    /* until the peer's limits are known nothing may be sent */
    send_max = c->remote_known ? c->remote.stream_window : 0;

    cs->s = hg_stream_new(id, send_max, c->cfg.stream_send_buffer,
                          c->local.stream_window);
    if (cs->s == NULL) {
        free(cs);
        return NULL;
    }

    cs->local = local;

    h = hg_hash_id(id, c->table_size);
    cs->hnext = c->table[h];
    c->table[h] = cs;

    cs->prev = c->last;
    if (c->last) {
        c->last->next = cs;
    } else {
        c->first = cs;
    }
    c->last = cs;

    c->nstreams++;
    c->ncstreams++;

    return cs;
}


void
hg_cstream_signal_readable(hg_conn_t *c, hg_cstream_t *cs)
{
    if (cs->readable_signalled || cs->closed || cs->abandoned) {
        return;
    }

    if (!cs->local && !cs->s->opened_event) {
        return;
    }

    cs->readable_signalled = 1;
    hg_conn_event(c, HG_EV_STREAM_READABLE, cs->s->id, 0);
}


void
hg_cstream_signal_writable(hg_conn_t *c, hg_cstream_t *cs)
{
    if (!cs->want_write || cs->closed || cs->abandoned
        || hg_stream_send_space(cs->s) == 0)
    {
        return;
    }

    cs->want_write = 0;
    hg_conn_event(c, HG_EV_STREAM_WRITABLE, cs->s->id, 0);
}


void
hg_cstream_check_closed(hg_conn_t *c, hg_cstream_t *cs)
{
    hg_stream_t  *s = cs->s;
    int           recv_done;

    if (cs->closed) {
        return;
    }

    /*
     * A stopped stream's receive side is done only once the peer's final
     * size is known (its FIN, or the RESET_STREAM answering our
     * STOP_SENDING): until then its discarded bytes still count.
     */
    recv_done = hg_stream_recv_done(s);

    if (!hg_stream_send_done(s) || !recv_done) {
        return;
    }

    cs->closed = 1;
    c->nstreams--;

    if (!cs->local) {
        /* a finished peer stream makes room for another */
        c->peer_closed++;
        c->local_max_streams = c->peer_closed + c->local.max_streams;
        c->max_streams_due = 1;
    }

    hg_conn_event(c, HG_EV_STREAM_CLOSED, s->id, 0);
    hg_conn_maybe_finish_goaway(c, c->now);
}


/* the shell took STREAM_CLOSED: the stream may go */
void
hg_cstream_release(hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    cs = hg_cstream_find(c, id);
    if (cs && cs->closed) {
        hg_cstream_destroy(c, cs);
    }
}


/*
 * Connection credit the stream gave back (bytes read, and bytes discarded
 * after a reset or our STOP_SENDING): without this the connection window
 * would leak shut.
 */
void
hg_cstream_take_credit(hg_conn_t *c, hg_cstream_t *cs)
{
    hg_conn_consumed(c, hg_stream_recv_take_freed(cs->s));
}


/* ---- the public stream calls ---------------------------------------------- */

static hg_cstream_t *
hg_live_stream(const hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    if (c->state != HG_CS_READY && c->state != HG_CS_HELLO) {
        return NULL;
    }

    cs = hg_cstream_find(c, id);
    if (cs == NULL || cs->closed || cs->abandoned) {
        return NULL;
    }

    return cs;
}


int
hg_conn_can_open_stream(const hg_conn_t *c)
{
    return c->state == HG_CS_READY && !c->peer_goaway
           && c->local_opened < c->peer_max_streams;
}


size_t
hg_conn_open_streams(const hg_conn_t *c)
{
    return c->nstreams;
}


int64_t
hg_stream_open(hg_conn_t *c, const hg_stream_meta_t *meta)
{
    hg_cstream_t  *cs;
    int64_t        id;

    /* our own GOAWAY only stops the peer's new streams */
    if (c->state != HG_CS_READY || c->peer_goaway) {
        return HG_ERR_STATE;
    }

    if (c->local_opened >= c->peer_max_streams) {
        return HG_ERR_LIMIT;
    }

    id = c->next_local_id;

    cs = hg_cstream_create(c, id, 1);
    if (cs == NULL) {
        return HG_ERR_NOMEM;
    }

    c->next_local_id += 2;
    c->local_opened++;
    c->stats.streams_opened++;

    if (meta) {
        cs->s->meta = *meta;
    }

    cs->s->has_meta = 1;
    cs->s->send_meta = 1;

    return id;
}


ssize_t
hg_stream_write(hg_conn_t *c, int64_t id, const uint8_t *buf, size_t len)
{
    hg_cstream_t  *cs;
    size_t         n;

    cs = hg_live_stream(c, id);
    if (cs == NULL || cs->s->fin_written || cs->s->reset_queued) {
        return HG_ERR_STATE;
    }

    n = hg_stream_send_write(cs->s, buf, len);
    if (n < len) {
        cs->want_write = 1;
    }

    return (ssize_t) n;
}


size_t
hg_stream_writable(hg_conn_t *c, int64_t id)
{
    size_t         space;
    hg_cstream_t  *cs;

    cs = hg_live_stream(c, id);
    if (cs == NULL || cs->s->fin_written || cs->s->reset_queued) {
        return 0;
    }

    space = hg_stream_send_space(cs->s);
    if (space == 0) {
        cs->want_write = 1;
    }

    return space;
}


int
hg_stream_shutdown(hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    cs = hg_live_stream(c, id);
    if (cs == NULL) {
        return HG_ERR_STATE;
    }

    if (cs->s->reset_queued || cs->s->fin_written) {
        return HG_OK;
    }

    return hg_stream_send_fin(cs->s) == 0 ? HG_OK : HG_ERR_STATE;
}


/*
 * Connection credit goes back (MAX_DATA) once what we could add is at
 * least what the sender still holds. With nothing left unread this is
 * the usual "half the window consumed". The usual rule alone deadlocks
 * when streams nobody reads pin half the window or more: the others can
 * then consume at most the rest, never half, and starve although their
 * bytes were read. Checked on arrivals too (n == 0), since the sender
 * may use up its credit after the last read.
 */
static void
hg_conn_consumed(hg_conn_t *c, uint64_t n)
{
    uint64_t  limit, grant, held;

    c->recv_read += n;

    limit = c->recv_read + c->local.conn_window;
    if (limit <= c->recv_max) {
        return;
    }

    grant = limit - c->recv_max;
    held = c->recv_max - c->recv_highest;

    if (grant >= held) {
        c->recv_max = limit;
        c->max_data_due = 1;
    }
}


ssize_t
hg_stream_read(hg_conn_t *c, int64_t id, uint8_t *buf, size_t len, int *fin)
{
    hg_cstream_t  *cs;
    size_t         n;

    *fin = 0;

    cs = hg_live_stream(c, id);
    if (cs == NULL) {
        return HG_ERR_STATE;
    }

    if (cs->s->reset_received) {
        return HG_ERR;
    }

    n = hg_stream_recv_read(cs->s, buf, len, fin);
    hg_cstream_take_credit(c, cs);

    if (hg_stream_readable(cs->s) == 0) {
        cs->readable_signalled = 0;
    }

    if (*fin) {
        hg_cstream_check_closed(c, cs);
    }

    if (n == 0 && !*fin) {
        return HG_AGAIN;
    }

    return (ssize_t) n;
}


int
hg_stream_reset(hg_conn_t *c, int64_t id, uint64_t code)
{
    hg_cstream_t  *cs;
    hg_stream_t   *s;

    cs = hg_live_stream(c, id);
    if (cs == NULL) {
        return HG_ERR_STATE;
    }

    s = cs->s;

    /* either side may already be finished: that is not an error here */
    (void) hg_stream_send_reset(s, code);
    (void) hg_stream_recv_stop(s, code);
    hg_cstream_take_credit(c, cs);

    cs->abandoned = 1;
    hg_cstream_check_closed(c, cs);

    return HG_OK;
}


int
hg_stream_set_user(hg_conn_t *c, int64_t id, void *user)
{
    hg_cstream_t  *cs;

    cs = hg_cstream_find(c, id);
    if (cs == NULL) {
        return HG_ERR_STATE;
    }

    cs->s->user = user;

    return HG_OK;
}


void *
hg_stream_user(const hg_conn_t *c, int64_t id)
{
    hg_cstream_t  *cs;

    cs = hg_cstream_find(c, id);

    return cs ? cs->s->user : NULL;
}
