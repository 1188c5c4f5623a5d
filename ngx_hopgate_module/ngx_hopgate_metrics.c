/*
 * The metrics hooks: what the rest of the module calls when something
 * worth counting happens, and the once-a-second harvest.
 *
 * Counters are atomic adds, done where the event happens (a handshake
 * decided, a stream opened or failed) or, for what the engine counts
 * itself (packets, bytes, losses), as deltas of the session's statistics
 * taken each second, when a stream ends and when the session ends.
 * Per-domain series are kept for at most hopgate_metrics_max_domains
 * domains; the others add up under domain="_other".
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_METRICS_TICK  1000


static void ngx_hopgate_metrics_harvest(ngx_hopgate_session_t *s,
    hg_conn_stats_t *st);
static void ngx_hopgate_metrics_session_ready(ngx_hopgate_session_t *s);
static void ngx_hopgate_metrics_record(ngx_hopgate_session_t *s,
    hg_conn_stats_t *st);
static ngx_hopgate_metrics_domain_t *ngx_hopgate_metrics_domain(
    ngx_str_t *name, ngx_uint_t create);
static void ngx_hopgate_metrics_observe(ngx_hopgate_histogram_t *h,
    const uint64_t *bounds, uint64_t usec);
static void ngx_hopgate_metrics_tick(ngx_event_t *ev);


static ngx_event_t            ngx_hopgate_metrics_timer;

/* what the worker and its listeners counted that is already in the zone */
static uint64_t               ngx_hopgate_metrics_malformed;
static hg_listener_stats_t   *ngx_hopgate_metrics_listeners;


/* ---- the hooks ---------------------------------------------------------- */

static void
ngx_hopgate_metrics_add(ngx_atomic_t *counter, uint64_t n)
{
    if (n) {
        (void) ngx_atomic_fetch_add(counter, (ngx_atomic_int_t) n);
    }
}


/* what grew since `counted`; the engine's counters only grow */
static uint64_t
ngx_hopgate_metrics_delta(uint64_t now, uint64_t *counted)
{
    uint64_t  d;

    if (now <= *counted) {
        return 0;
    }

    d = now - *counted;
    *counted = now;

    return d;
}


static void
ngx_hopgate_metrics_observe(ngx_hopgate_histogram_t *h,
    const uint64_t *bounds, uint64_t usec)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HOPGATE_METRICS_BUCKETS; i++) {
        if (usec <= bounds[i]) {
            break;
        }
    }

    ngx_hopgate_metrics_add(&h->count[i], 1);
    ngx_hopgate_metrics_add(&h->sum, usec);
}


void
ngx_hopgate_metrics_handshake(ngx_uint_t result)
{
    if (ngx_hopgate_metrics) {
        ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->handshakes[result],
                                1);
    }
}


void
ngx_hopgate_metrics_verdict(ngx_hopgate_session_t *s, ngx_int_t rc,
    uint32_t code)
{
    ngx_uint_t  result;

    if (rc == NGX_OK) {
        result = NGX_HOPGATE_HS_OK;

    } else {
        switch (code) {
        case HG_CODE_BAD_KEY:
            result = NGX_HOPGATE_HS_BAD_KEY;
            break;
        case HG_CODE_UNKNOWN_DOMAIN:
            result = NGX_HOPGATE_HS_UNKNOWN_DOMAIN;
            break;
        case HG_CODE_DISABLED:
        case HG_CODE_REVOKED:
            result = NGX_HOPGATE_HS_DISABLED;
            break;
        case HG_CODE_REGISTRY_DOWN:
            result = NGX_HOPGATE_HS_REGISTRY_DOWN;
            break;
        case HG_CODE_DNS_GATE:
            result = NGX_HOPGATE_HS_DNS_GATE;
            break;
        case HG_CODE_BUSY:
            result = NGX_HOPGATE_HS_BUSY;
            break;
        case HG_CODE_GOING_AWAY:
            result = NGX_HOPGATE_HS_GOING_AWAY;
            break;
        case HG_CODE_HANDSHAKE_TIMEOUT:
            result = NGX_HOPGATE_HS_TIMEOUT;
            break;
        default:
            result = NGX_HOPGATE_HS_ERROR;
            break;
        }
    }

    s->metrics.verdict = 1;

    ngx_hopgate_metrics_handshake(result);
}


void
ngx_hopgate_metrics_registry(ngx_int_t rc, uint32_t code, uint64_t usec)
{
    ngx_uint_t                    result;
    ngx_hopgate_metrics_shctx_t  *sh;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    sh = ngx_hopgate_metrics->sh;

    if (rc == NGX_OK) {
        result = NGX_HOPGATE_REG_OK;

    } else if (rc == NGX_ERROR) {
        result = NGX_HOPGATE_REG_ERROR;

    } else {
        switch (code) {
        case HG_CODE_BAD_KEY:
            result = NGX_HOPGATE_REG_BAD_KEY;
            break;
        case HG_CODE_UNKNOWN_DOMAIN:
            result = NGX_HOPGATE_REG_UNKNOWN_DOMAIN;
            break;
        case HG_CODE_DISABLED:
        case HG_CODE_REVOKED:
            result = NGX_HOPGATE_REG_DISABLED;
            break;
        default:
            result = NGX_HOPGATE_REG_ERROR;
            break;
        }
    }

    ngx_hopgate_metrics_add(&sh->registry[result], 1);
    ngx_hopgate_metrics_observe(&sh->registry_latency,
                                ngx_hopgate_registry_bounds, usec);
}


/* the session's state as the gauges count it */
static ngx_uint_t
ngx_hopgate_metrics_state(ngx_hopgate_session_t *s)
{
    if (s->ready) {
        return (s->draining || ngx_hopgate_worker->exiting)
               ? NGX_HOPGATE_SS_DRAINING : NGX_HOPGATE_SS_READY;
    }

    /* once ready, a session that is no more is closing */
    return s->metrics.domain ? NGX_HOPGATE_SS_DRAINING
                             : NGX_HOPGATE_SS_HANDSHAKE;
}


void
ngx_hopgate_metrics_session_update(ngx_hopgate_session_t *s)
{
    ngx_uint_t  state;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    state = ngx_hopgate_metrics_state(s);

    if (state == s->metrics.state) {
        return;
    }

    if (ngx_hopgate_metrics_slot) {
        if (s->metrics.state != NGX_HOPGATE_SS_NONE) {
            ngx_hopgate_metrics_slot->sessions[s->metrics.state]--;
        }
        ngx_hopgate_metrics_slot->sessions[state]++;

        /* past the handshake, counted by carrier until it closes */
        if (state != NGX_HOPGATE_SS_HANDSHAKE
            && (s->metrics.state == NGX_HOPGATE_SS_NONE
                || s->metrics.state == NGX_HOPGATE_SS_HANDSHAKE))
        {
            ngx_hopgate_metrics_slot->transport[
                hg_conn_carrier(s->conn) == HG_CARRIER_STREAM]++;
        }
    }

    s->metrics.state = state;

    if (state != NGX_HOPGATE_SS_HANDSHAKE && s->metrics.domain == NULL) {
        ngx_hopgate_metrics_session_ready(s);
    }

    if (s->metrics.record) {
        s->metrics.record->state = state;
    }
}


/* a session was accepted: its domain's series and its status record */
static void
ngx_hopgate_metrics_session_ready(ngx_hopgate_session_t *s)
{
    u_char                        *p;
    size_t                         size;
    ngx_str_t                      name;
    hg_conn_stats_t                st;
    ngx_slab_pool_t               *shpool;
    ngx_hopgate_metrics_record_t  *rec;

    /* what the handshake cost counts for the edge, not for the domain */
    ngx_hopgate_metrics_harvest(s, &st);

    name.data = s->domain_name;
    name.len = s->domain_len;

    shpool = ngx_hopgate_metrics->shpool;

    ngx_shmtx_lock(&shpool->mutex);

    s->metrics.domain = ngx_hopgate_metrics_domain(&name, 1);
    s->metrics.since = ngx_time();

    size = sizeof(ngx_hopgate_metrics_record_t) + s->domain_len
           + NGX_HOPGATE_METRICS_ADDR_LEN + sizeof(s->agent_version);

    /* without a slot of its own the worker publishes no sessions */
    if (ngx_hopgate_metrics_slot == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        return;
    }

    rec = ngx_slab_calloc_locked(shpool, size);

    if (rec == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);
        ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->zone_full, 1);
        return;
    }

    rec->domain = s->metrics.domain;
    rec->id = s->id;
    rec->slot = ngx_hopgate_metrics_slot_index;
    rec->since = s->metrics.since;
    rec->state = s->metrics.state;
    rec->transport = hg_conn_carrier(s->conn) == HG_CARRIER_STREAM;

    p = (u_char *) (rec + 1);

    rec->domain_name = p;
    rec->domain_len = s->domain_len;
    p = ngx_cpymem(p, s->domain_name, s->domain_len);

    rec->addr = p;
    p += NGX_HOPGATE_METRICS_ADDR_LEN;

    /* the agent's own words: printable ASCII only */
    rec->version = p;
    for (size = 0; s->agent_version[size]; size++) {
        *p++ = (s->agent_version[size] >= 0x20
                && s->agent_version[size] < 0x7f)
               ? s->agent_version[size] : '?';
    }
    rec->version_len = size;

    ngx_queue_insert_tail(&ngx_hopgate_metrics->sh->records, &rec->queue);

    ngx_shmtx_unlock(&shpool->mutex);

    s->metrics.record = rec;

    ngx_hopgate_metrics_record(s, &st);
}


/* under the lock: the domain's entry, or "_other" past the bound */
static ngx_hopgate_metrics_domain_t *
ngx_hopgate_metrics_domain(ngx_str_t *name, ngx_uint_t create)
{
    size_t                         size;
    uint32_t                       hash;
    ngx_hopgate_metrics_shctx_t   *sh = ngx_hopgate_metrics->sh;
    ngx_hopgate_metrics_domain_t  *d;

    hash = ngx_crc32_short(name->data, name->len);

    d = (ngx_hopgate_metrics_domain_t *)
        ngx_str_rbtree_lookup(&sh->domains, name, hash);

    if (d) {
        return d;
    }

    if (!create || sh->ndomains >= ngx_hopgate_metrics_max) {
        return sh->other;
    }

    size = offsetof(ngx_hopgate_metrics_domain_t, name) + name->len + 1;

    d = ngx_slab_calloc_locked(ngx_hopgate_metrics->shpool, size);
    if (d == NULL) {
        ngx_hopgate_metrics_add(&sh->zone_full, 1);
        return sh->other;
    }

    ngx_memcpy(d->name, name->data, name->len);
    d->sn.str.data = d->name;
    d->sn.str.len = name->len;
    d->sn.node.key = hash;

    ngx_rbtree_insert(&sh->domains, &d->sn.node);
    ngx_queue_insert_tail(&sh->domain_list, &d->queue);
    sh->ndomains++;

    return d;
}


/* adds what the session's engine counted since the last time */
static void
ngx_hopgate_metrics_harvest(ngx_hopgate_session_t *s, hg_conn_stats_t *st)
{
    uint64_t                       n;
    hg_conn_stats_t               *c;
    ngx_hopgate_metrics_shctx_t   *sh = ngx_hopgate_metrics->sh;
    ngx_hopgate_metrics_domain_t  *d;

    hg_conn_get_stats(s->conn, st);

    c = &s->metrics.counted;
    d = s->metrics.domain;

    n = ngx_hopgate_metrics_delta(st->packets_sent, &c->packets_sent);
    ngx_hopgate_metrics_add(&sh->packets[0], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->packets_sent, n);
    }

    n = ngx_hopgate_metrics_delta(st->packets_lost, &c->packets_lost);
    ngx_hopgate_metrics_add(&sh->packets_lost, n);
    if (d) {
        ngx_hopgate_metrics_add(&d->packets_lost, n);
    }

    n = ngx_hopgate_metrics_delta(st->stream_bytes_sent,
                                  &c->stream_bytes_sent);
    ngx_hopgate_metrics_add(&sh->stream_bytes[0], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->stream_bytes[0], n);
    }

    n = ngx_hopgate_metrics_delta(st->stream_bytes_received,
                                  &c->stream_bytes_received);
    ngx_hopgate_metrics_add(&sh->stream_bytes[1], n);
    if (d) {
        ngx_hopgate_metrics_add(&d->stream_bytes[1], n);
    }

    ngx_hopgate_metrics_add(&sh->packets[1],
        ngx_hopgate_metrics_delta(st->packets_received,
                                  &c->packets_received));
    ngx_hopgate_metrics_add(&sh->packets_retransmitted,
        ngx_hopgate_metrics_delta(st->packets_retransmitted,
                                  &c->packets_retransmitted));
    ngx_hopgate_metrics_add(&sh->datagram_bytes[0],
        ngx_hopgate_metrics_delta(st->bytes_sent, &c->bytes_sent));
    ngx_hopgate_metrics_add(&sh->datagram_bytes[1],
        ngx_hopgate_metrics_delta(st->bytes_received, &c->bytes_received));
}


/* the owner's periodic refresh of a session's status record */
static void
ngx_hopgate_metrics_record(ngx_hopgate_session_t *s, hg_conn_stats_t *st)
{
    ngx_hopgate_metrics_record_t  *rec = s->metrics.record;

    rec->rtt = st->srtt;
    rec->cwnd = st->cwnd;
    rec->packets_sent = st->packets_sent;
    rec->packets_lost = st->packets_lost;
    rec->streams = s->streams;
    rec->bytes_sent = st->stream_bytes_sent;
    rec->bytes_received = st->stream_bytes_received;

    /* the agent's address moves with its NAT */
    if (rec->addr_len != s->addr_len
        || ngx_memcmp(rec->addr, s->addr_text, s->addr_len) != 0)
    {
        rec->addr_len = ngx_min(s->addr_len, NGX_HOPGATE_METRICS_ADDR_LEN);
        ngx_memcpy(rec->addr, s->addr_text, rec->addr_len);
    }
}


void
ngx_hopgate_metrics_session_close(ngx_hopgate_session_t *s)
{
    hg_conn_stats_t  st;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_harvest(s, &st);

    /* a session that never got an answer did not finish its handshake */
    if (!s->metrics.verdict) {
        ngx_hopgate_metrics_handshake(NGX_HOPGATE_HS_TIMEOUT);
        s->metrics.verdict = 1;
    }

    if (ngx_hopgate_metrics_slot && s->metrics.state != NGX_HOPGATE_SS_NONE)
    {
        ngx_hopgate_metrics_slot->sessions[s->metrics.state]--;

        if (s->metrics.state != NGX_HOPGATE_SS_HANDSHAKE) {
            ngx_hopgate_metrics_slot->transport[
                hg_conn_carrier(s->conn) == HG_CARRIER_STREAM]--;
        }
    }

    s->metrics.state = NGX_HOPGATE_SS_NONE;

    if (s->metrics.record) {
        ngx_shmtx_lock(&ngx_hopgate_metrics->shpool->mutex);
        ngx_queue_remove(&s->metrics.record->queue);
        ngx_slab_free_locked(ngx_hopgate_metrics->shpool, s->metrics.record);
        ngx_shmtx_unlock(&ngx_hopgate_metrics->shpool->mutex);
        s->metrics.record = NULL;
    }
}


void
ngx_hopgate_metrics_stream_open(ngx_hopgate_pump_t *p)
{
    ngx_hopgate_metrics_domain_t  *d;

    /*
     * the request's $hopgate_* values are taken now, with or without a
     * zone
     */
    ngx_hopgate_variables_attach(p);

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->streams_opened, 1);

    /* the requests that waited for the session go before its first run */
    if (p->session->metrics.domain == NULL) {
        ngx_hopgate_metrics_session_update(p->session);
    }

    d = p->session->metrics.domain;
    if (d) {
        ngx_hopgate_metrics_add(&d->streams_opened, 1);
    }
}


void
ngx_hopgate_metrics_stream_failed(ngx_hopgate_pump_t *p, ngx_uint_t reason)
{
    ngx_str_t                      name;
    ngx_hopgate_metrics_domain_t  *d;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    ngx_hopgate_metrics_add(&ngx_hopgate_metrics->sh->streams_failed[reason],
                            1);

    if (p->session) {
        d = p->session->metrics.domain;

    } else {
        /*
         * a request that found no session: its domain's entry if it has
         * one (a Host header makes no entry)
         */
        if (p->waiting) {
            name.data = p->waiting->name;
            name.len = ngx_strlen(p->waiting->name);

        } else if (p->ctx) {
            name.data = p->ctx->tunnel.domain;
            name.len = p->ctx->tunnel.domain_len;

        } else {
            ngx_str_null(&name);
        }

        ngx_shmtx_lock(&ngx_hopgate_metrics->shpool->mutex);
        d = ngx_hopgate_metrics_domain(&name, 0);
        ngx_shmtx_unlock(&ngx_hopgate_metrics->shpool->mutex);
    }

    if (d) {
        ngx_hopgate_metrics_add(&d->streams_failed, 1);
    }
}


/* a stream ended: its bytes count now, not at the next tick */
void
ngx_hopgate_metrics_stream_close(ngx_hopgate_pump_t *p)
{
    hg_conn_stats_t  st;

    if (ngx_hopgate_metrics && p->session) {
        ngx_hopgate_metrics_harvest(p->session, &st);
    }
}


/* ---- each second -------------------------------------------------------- */

void
ngx_hopgate_metrics_start(ngx_cycle_t *cycle)
{
    ngx_hopgate_metrics_timer.handler = ngx_hopgate_metrics_tick;
    ngx_hopgate_metrics_timer.log = cycle->log;
    ngx_hopgate_metrics_timer.data = ngx_hopgate_metrics;
    ngx_hopgate_metrics_timer.cancelable = 1;

    ngx_add_timer(&ngx_hopgate_metrics_timer, NGX_HOPGATE_METRICS_TICK);
}


static void
ngx_hopgate_metrics_listeners_tick(ngx_hopgate_worker_t *w)
{
    ngx_uint_t                    i;
    hg_listener_stats_t          *counted;
    const hg_listener_stats_t    *st;
    ngx_hopgate_metrics_shctx_t  *sh = ngx_hopgate_metrics->sh;

    ngx_hopgate_metrics_add(&sh->malformed,
        ngx_hopgate_metrics_delta(w->malformed,
                                  &ngx_hopgate_metrics_malformed));

    if (w->nlisteners == 0) {
        return;
    }

    if (ngx_hopgate_metrics_listeners == NULL) {
        ngx_hopgate_metrics_listeners = ngx_pcalloc(ngx_cycle->pool,
                               w->nlisteners * sizeof(hg_listener_stats_t));
        if (ngx_hopgate_metrics_listeners == NULL) {
            return;
        }
    }

    for (i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].engine == NULL) {
            continue;
        }

        st = hg_listener_stats(w->listeners[i].engine);
        counted = &ngx_hopgate_metrics_listeners[i];

        ngx_hopgate_metrics_add(&sh->handshakes[NGX_HOPGATE_HS_COOKIE_FAIL],
            ngx_hopgate_metrics_delta(st->cookie_failures,
                                      &counted->cookie_failures));
        ngx_hopgate_metrics_add(&sh->malformed,
            ngx_hopgate_metrics_delta(st->malformed, &counted->malformed));
    }
}


static void
ngx_hopgate_metrics_tick(ngx_event_t *ev)
{
    hg_conn_stats_t                st;
    ngx_rbtree_node_t             *node;
    ngx_hopgate_worker_t          *w = ngx_hopgate_worker;
    ngx_hopgate_session_t         *s;
    ngx_hopgate_metrics_domain_t  *d;

    if (ngx_hopgate_metrics == NULL) {
        return;
    }

    if (w) {
        ngx_hopgate_metrics_listeners_tick(w);
    }

    if (w && w->by_cid.root != w->by_cid.sentinel) {

        for (node = ngx_rbtree_min(w->by_cid.root, w->by_cid.sentinel);
             node;
             node = ngx_rbtree_next(&w->by_cid, node))
        {
            s = (ngx_hopgate_session_t *)
                ((u_char *) node - offsetof(ngx_hopgate_session_t,
                                            cid_node));

            ngx_hopgate_metrics_harvest(s, &st);
            ngx_hopgate_metrics_session_update(s);

            /* the RTT histograms: one sample per ready session a second */
            d = s->metrics.domain;

            if (s->metrics.state == NGX_HOPGATE_SS_READY && st.srtt) {
                ngx_hopgate_metrics_observe(&ngx_hopgate_metrics->sh->rtt,
                                            ngx_hopgate_rtt_bounds, st.srtt);
                if (d) {
                    ngx_hopgate_metrics_observe(&d->rtt,
                                                ngx_hopgate_rtt_bounds,
                                                st.srtt);
                }
            }

            if (s->metrics.record) {
                ngx_hopgate_metrics_record(s, &st);
            }
        }
    }

    ngx_add_timer(ev, NGX_HOPGATE_METRICS_TICK);
}
