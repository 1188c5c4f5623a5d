/*
 * A worker's tunnel sessions: finding the session a datagram belongs to
 * (by connection id, else by address, else it is a new handshake), driving
 * the engine (input, timers, output), deciding on HELLO with the registry,
 * and the index of domains to ready sessions that the balancer picks from.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <openssl/rand.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_MAX_SESSIONS       20000

/* a worker is single-threaded: one set of output buffers serves all */
static u_char  ngx_hopgate_out[NGX_HOPGATE_SEND_BATCH][HG_MTU_MAX + 64];
static size_t  ngx_hopgate_out_len[NGX_HOPGATE_SEND_BATCH];
#define NGX_HOPGATE_RESETS_PER_SECOND  200


static void ngx_hopgate_input(ngx_hopgate_listener_t *l, u_char *buf,
    size_t len, struct sockaddr *from, socklen_t fromlen,
    ngx_uint_t forwarded);
static void ngx_hopgate_input_moved(ngx_hopgate_session_t *s,
    ngx_hopgate_listener_t *l, u_char *buf, size_t len,
    struct sockaddr *from, socklen_t fromlen);
static void ngx_hopgate_input_new(ngx_hopgate_listener_t *l, hg_prefix_t *p,
    u_char *buf, size_t len, struct sockaddr *from, socklen_t fromlen,
    ngx_uint_t forwarded);
static void ngx_hopgate_reset(ngx_hopgate_listener_t *l, const u_char *cid,
    size_t trigger_len, struct sockaddr *to, socklen_t tolen);
static ngx_hopgate_session_t *ngx_hopgate_by_cid(const u_char *cid);
static ngx_hopgate_session_t *ngx_hopgate_by_addr(struct sockaddr *sa,
    socklen_t len);
static void ngx_hopgate_accept(ngx_hopgate_listener_t *l, u_char *buf,
    size_t len, struct sockaddr *from, socklen_t fromlen);
static void ngx_hopgate_session_timer(ngx_event_t *ev);
static void ngx_hopgate_session_send(ngx_hopgate_session_t *s,
    hg_time_t now);
static void ngx_hopgate_session_events(ngx_hopgate_session_t *s);
static void ngx_hopgate_session_hello(ngx_hopgate_session_t *s,
    const hg_hello_t *hello);
static void ngx_hopgate_session_verdict(void *data,
    ngx_hopgate_verdict_t *v);
static void ngx_hopgate_session_decide(ngx_hopgate_session_t *s,
    ngx_hopgate_verdict_t *v);
static void ngx_hopgate_session_same_agent(ngx_hopgate_session_t *s,
    ngx_hopgate_domain_t *d, ngx_hopgate_verdict_t *v);
static void ngx_hopgate_session_unready(ngx_hopgate_session_t *s);
static void ngx_hopgate_addr_index(ngx_hopgate_session_t *s);


hg_time_t
ngx_hopgate_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (hg_time_t) ts.tv_sec * HG_SEC + (hg_time_t) ts.tv_nsec / 1000;
}


int
ngx_hopgate_random(void *ctx, uint8_t *buf, size_t len)
{
    return RAND_bytes(buf, (int) len) == 1 ? 0 : -1;
}


void
ngx_hopgate_engine_log(void *ctx, int level, const char *msg)
{
    ngx_uint_t  nlevel;

    switch (level) {
    case HG_LOG_ERR:
        nlevel = NGX_LOG_ERR;
        break;
    case HG_LOG_WARN:
        nlevel = NGX_LOG_WARN;
        break;
    case HG_LOG_INFO:
        nlevel = NGX_LOG_INFO;
        break;
    default:
        nlevel = NGX_LOG_DEBUG;
        break;
    }

    ngx_log_error(nlevel, ngx_cycle->log, 0, "hopgate: %s", msg);
}


/* the id's last bytes are random: a good key; equal keys are compared */
static ngx_rbtree_key_t
ngx_hopgate_cid_key(const u_char *cid)
{
    ngx_rbtree_key_t  key;

    ngx_memcpy(&key, cid + HG_CID_LEN - sizeof(key), sizeof(key));

    return key;
}


int
ngx_hopgate_cid_taken(void *ctx, const uint8_t *cid)
{
    return ngx_hopgate_by_cid(cid) != NULL;
}


static ngx_rbtree_key_t
ngx_hopgate_addr_key(struct sockaddr *sa, socklen_t len)
{
    return ngx_crc32_short((u_char *) sa, len);
}


/* ---- datagram input ---------------------------------------------------- */

void
ngx_hopgate_datagram(ngx_hopgate_listener_t *l, u_char *buf, size_t len,
    struct sockaddr *from, socklen_t fromlen)
{
    ngx_hopgate_input(l, buf, len, from, fromlen, 0);
}


void
ngx_hopgate_datagram_forwarded(ngx_hopgate_listener_t *l, u_char *buf,
    size_t len, struct sockaddr *from, socklen_t fromlen)
{
    ngx_hopgate_input(l, buf, len, from, fromlen, 1);
}


static void
ngx_hopgate_input(ngx_hopgate_listener_t *l, u_char *buf, size_t len,
    struct sockaddr *from, socklen_t fromlen, ngx_uint_t forwarded)
{
    hg_prefix_t             p;
    ngx_hopgate_worker_t   *w = ngx_hopgate_worker;
    ngx_hopgate_session_t  *s;

    if (hg_prefix_parse(buf, len, &p) != HG_OK) {
        w->malformed++;
        return;
    }

    if (p.flags & HG_PREFIX_FLAG_CID) {

        if (p.flags & HG_PREFIX_FLAG_RESET) {
            /* resets go to agents, not to us */
            return;
        }

        if (ngx_memcmp(p.cid + 1, w->tag, NGX_HOPGATE_TAG_LEN) != 0) {
            if (forwarded
                || ngx_hopgate_forward(l, p.cid, buf, len, from, fromlen)
                   != NGX_OK)
            {
                /* the owner is gone (nginx restarted): tell the agent */
                ngx_hopgate_reset(l, p.cid, len, from, fromlen);
            }
            return;
        }

        s = ngx_hopgate_by_cid(p.cid);
        if (s == NULL) {
            ngx_hopgate_reset(l, p.cid, len, from, fromlen);
            return;
        }

    } else {
        s = ngx_hopgate_by_addr(from, fromlen);
        if (s == NULL) {
            ngx_hopgate_input_new(l, &p, buf, len, from, fromlen, forwarded);
            return;
        }
    }

    if (l->dst_len
        && (l->dst_len != s->local_len
            || ngx_memcmp(&l->dst, &s->local, l->dst_len) != 0))
    {
        /* sent to another of our addresses: it counts if it moves us */
        ngx_hopgate_input_moved(s, l, buf, len, from, fromlen);

    } else if (hg_conn_recv(s->conn, buf, len, from, fromlen,
                            ngx_hopgate_now())
               != HG_OK)
    {
        w->malformed++;
    }

    /*
     * The session runs once after the whole read batch, not per datagram:
     * one ACK then covers the batch, and replies coalesce.
     */
    ngx_hopgate_session_kick(s);
}


/*
 * A datagram of a session sent to a local address other than the one its
 * agent used so far: the session answers from the new one only if the
 * datagram moved it (authenticated, from a new peer address: migration),
 * or anyone could make it answer from an address its agent drops.
 */
static void
ngx_hopgate_input_moved(ngx_hopgate_session_t *s, ngx_hopgate_listener_t *l,
    u_char *buf, size_t len, struct sockaddr *from, socklen_t fromlen)
{
    socklen_t               plen;
    ngx_sockaddr_t          before;
    const struct sockaddr  *peer;

    peer = hg_conn_peer(s->conn, &plen);
    ngx_memcpy(&before, peer, plen);

    if (hg_conn_recv(s->conn, buf, len, from, fromlen, ngx_hopgate_now())
        != HG_OK)
    {
        ngx_hopgate_worker->malformed++;
        return;
    }

    peer = hg_conn_peer(s->conn, &plen);

    if (ngx_cmp_sockaddr((struct sockaddr *) peer, plen, &before.sockaddr,
                         plen, 1)
        != NGX_OK)
    {
        ngx_hopgate_session_set_local(s, &l->dst.sockaddr, l->dst_len);
    }
}


void
ngx_hopgate_session_set_local(ngx_hopgate_session_t *s,
    const struct sockaddr *local, socklen_t len)
{
    if (len > sizeof(ngx_sockaddr_t)) {
        len = 0;
    }

    ngx_memcpy(&s->local, local, len);
    s->local_len = len;
}


/*
 * A datagram of no session here, without an id: a new handshake. It is
 * the business of the worker the agent aims at, when the kernel did not
 * steer it there (one socket shared by the workers, no BPF): that worker
 * makes the cookie and keeps the handshake. A worker on its way out takes
 * no new sessions: after a reload its successor does.
 */
static void
ngx_hopgate_input_new(ngx_hopgate_listener_t *l, hg_prefix_t *p,
    u_char *buf, size_t len, struct sockaddr *from, socklen_t fromlen,
    ngx_uint_t forwarded)
{
    ngx_uint_t        target;
    ngx_core_conf_t  *ccf;

    if (!forwarded) {
        if (ngx_hopgate_worker->exiting) {
            (void) ngx_hopgate_forward_successor(l, buf, len, from, fromlen);
            return;
        }

        if (p->flags & HG_PREFIX_FLAG_STEER) {
            ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                                   ngx_core_module);
            target = p->steer % (ngx_uint_t) ccf->worker_processes;

            if (target != ngx_worker
                && ngx_hopgate_forward_steered(l, target, buf, len, from,
                                               fromlen)
                   == NGX_OK)
            {
                return;
            }
        }
    }

    if (!ngx_hopgate_worker->exiting) {
        ngx_hopgate_accept(l, buf, len, from, fromlen);
    }
}


/*
 * A stateless reset for an id no process here owns, so the agent re-dials
 * at once instead of waiting for its idle timeout; rate-limited, since
 * anyone can make us send one.
 */
static void
ngx_hopgate_reset(ngx_hopgate_listener_t *l, const u_char *cid,
    size_t trigger_len, struct sockaddr *to, socklen_t tolen)
{
    size_t                 n;
    u_char                 out[HG_RESET_LEN];
    ngx_hopgate_worker_t  *w = ngx_hopgate_worker;

    if (w->reset_second != ngx_time()) {
        w->reset_second = ngx_time();
        w->resets = 0;
    }

    if (w->resets++ >= NGX_HOPGATE_RESETS_PER_SECOND) {
        return;
    }

    n = hg_listener_reset(l->engine, cid, trigger_len, out);
    if (n > 0) {
        ngx_hopgate_send(l, out, n, to, tolen);
    }
}


static ngx_hopgate_session_t *
ngx_hopgate_by_cid(const u_char *cid)
{
    ngx_rbtree_key_t        key;
    ngx_rbtree_node_t      *node, *sentinel;
    ngx_hopgate_session_t  *s;

    key = ngx_hopgate_cid_key(cid);
    node = ngx_hopgate_worker->by_cid.root;
    sentinel = ngx_hopgate_worker->by_cid.sentinel;

    while (node != sentinel) {
        if (key != node->key) {
            node = key < node->key ? node->left : node->right;
            continue;
        }

        s = (ngx_hopgate_session_t *)
            ((u_char *) node - offsetof(ngx_hopgate_session_t, cid_node));

        if (ngx_memcmp(hg_conn_cid(s->conn), cid, HG_CID_LEN) == 0) {
            return s;
        }

        /* equal keys are inserted to the right */
        node = node->right;
    }

    return NULL;
}


static ngx_hopgate_session_t *
ngx_hopgate_by_addr(struct sockaddr *sa, socklen_t len)
{
    socklen_t               plen;
    ngx_rbtree_key_t        key;
    ngx_rbtree_node_t      *node, *sentinel;
    ngx_hopgate_session_t  *s;
    const struct sockaddr  *peer;

    key = ngx_hopgate_addr_key(sa, len);
    node = ngx_hopgate_worker->by_addr.root;
    sentinel = ngx_hopgate_worker->by_addr.sentinel;

    while (node != sentinel) {
        if (key != node->key) {
            node = key < node->key ? node->left : node->right;
            continue;
        }

        s = (ngx_hopgate_session_t *)
            ((u_char *) node - offsetof(ngx_hopgate_session_t, addr_node));

        peer = hg_conn_peer(s->conn, &plen);
        if (ngx_cmp_sockaddr((struct sockaddr *) peer, plen, sa, len, 1)
            == NGX_OK)
        {
            return s;
        }

        /* equal keys are inserted to the right */
        node = node->right;
    }

    return NULL;
}


static void
ngx_hopgate_accept(ngx_hopgate_listener_t *l, u_char *buf, size_t len,
    struct sockaddr *from, socklen_t fromlen)
{
    u_char                  reply[HG_MTU_MAX];
    size_t                  replylen;
    hg_conn_t              *conn;
    ngx_int_t               rc;
    ngx_hopgate_worker_t   *w = ngx_hopgate_worker;
    ngx_hopgate_session_t  *s;

    if (ngx_hopgate_halfopen_admit(from, fromlen) != NGX_OK) {
        return;
    }

    replylen = sizeof(reply);

    rc = hg_listener_accept(l->engine, buf, len, from, fromlen,
                            ngx_hopgate_now(), reply, &replylen, &conn);

    if (rc == HG_AGAIN) {
        /* the cookie exchange: stateless, nothing kept */
        ngx_hopgate_send(l, reply, replylen, from, fromlen);
        return;
    }

    if (rc != HG_OK) {
        return;
    }

    if (w->nsessions >= NGX_HOPGATE_MAX_SESSIONS) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "hopgate: %ui sessions in this worker, refusing more",
                      w->nsessions);
        ngx_hopgate_metrics_handshake(NGX_HOPGATE_HS_BUSY);
        hg_conn_free(conn);
        return;
    }

    s = ngx_hopgate_session_create(conn, from, fromlen);
    if (s == NULL) {
        hg_conn_free(conn);
        return;
    }

    if (ngx_hopgate_halfopen_add(s, from, fromlen) != NGX_OK) {
        s->metrics.verdict = 1;
        ngx_hopgate_session_destroy(s);
        return;
    }

    s->listener = l;
    ngx_hopgate_session_set_local(s, &l->dst.sockaddr, l->dst_len);
    ngx_hopgate_addr_index(s);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "hopgate: handshake from %*s", s->addr_len, s->addr_text);

    ngx_hopgate_session_run(s);
}


/*
 * A session around a new engine connection, on either carrier: in the
 * table by id (every session of the worker is there), not yet anywhere
 * else. NULL when memory is short; the connection is then the caller's.
 */
ngx_hopgate_session_t *
ngx_hopgate_session_create(hg_conn_t *conn, struct sockaddr *from,
    socklen_t fromlen)
{
    ngx_hopgate_worker_t   *w = ngx_hopgate_worker;
    ngx_hopgate_session_t  *s;

    s = ngx_calloc(sizeof(ngx_hopgate_session_t), ngx_cycle->log);
    if (s == NULL) {
        return NULL;
    }

    s->conn = conn;
    /* the process tag keeps ids unique across workers and reloads */
    s->id = ((uint64_t) w->tag[0] << 56 | (uint64_t) w->tag[1] << 48
             | (uint64_t) w->tag[2] << 40 | (uint64_t) w->tag[3] << 32)
            | ++w->next_session;
    s->started = ngx_current_msec;
    ngx_queue_init(&s->pumps);
    ngx_queue_init(&s->domain_link);

    s->timer.handler = ngx_hopgate_session_timer;
    s->timer.data = s;
    s->timer.log = ngx_cycle->log;
    /*
     * a session does not keep an exiting worker alive: the worker goes
     * when its requests are done, and tells the agent then (CLOSE)
     */
    s->timer.cancelable = 1;
    s->run.handler = ngx_hopgate_session_timer;
    s->run.data = s;
    s->run.log = ngx_cycle->log;

    s->addr_len = ngx_sock_ntop(from, fromlen, s->addr_text,
                                NGX_SOCKADDR_STRLEN, 1);

    s->cid_node.key = ngx_hopgate_cid_key(hg_conn_cid(conn));
    ngx_rbtree_insert(&w->by_cid, &s->cid_node);

    w->nsessions++;

    return s;
}


static void
ngx_hopgate_addr_index(ngx_hopgate_session_t *s)
{
    socklen_t               len;
    const struct sockaddr  *peer;

    if (s->in_addr_tree) {
        ngx_rbtree_delete(&ngx_hopgate_worker->by_addr, &s->addr_node);
    }

    peer = hg_conn_peer(s->conn, &len);
    s->addr_node.key = ngx_hopgate_addr_key((struct sockaddr *) peer, len);
    ngx_rbtree_insert(&ngx_hopgate_worker->by_addr, &s->addr_node);
    s->in_addr_tree = 1;
}


/* ---- driving the engine ------------------------------------------------- */

static void
ngx_hopgate_session_timer(ngx_event_t *ev)
{
    ngx_hopgate_session_run(ev->data);
}


/* act on a change made outside the session's own handlers (a pump) */
void
ngx_hopgate_session_kick(ngx_hopgate_session_t *s)
{
    if (!s->run.posted) {
        ngx_post_event(&s->run, &ngx_posted_events);
    }
}


/* the datagrams the engine has to send */
static void
ngx_hopgate_session_send(ngx_hopgate_session_t *s, hg_time_t now)
{
    ngx_uint_t              count;
    ssize_t                 n;
    socklen_t               plen;
    const struct sockaddr  *peer;

    /* a path challenge for another address than the session's (rare) */
    while ((n = hg_conn_send_probe(s->conn, ngx_hopgate_out[0],
                                   sizeof(ngx_hopgate_out[0]), now, &peer,
                                   &plen))
           > 0)
    {
        ngx_hopgate_send(s->listener, ngx_hopgate_out[0], (size_t) n, peer,
                         plen);
    }

    peer = hg_conn_peer(s->conn, &plen);

    /* what the engine has to say, to the kernel in sendmmsg() batches */
    do {
        count = 0;

        while (count < NGX_HOPGATE_SEND_BATCH
               && (n = hg_conn_send(s->conn, ngx_hopgate_out[count],
                                    sizeof(ngx_hopgate_out[count]), now))
                  > 0)
        {
            ngx_hopgate_out_len[count++] = (size_t) n;
        }

        ngx_hopgate_send_batch(s->listener, ngx_hopgate_out,
                               ngx_hopgate_out_len, count, peer, plen,
                               &s->local.sockaddr, s->local_len);

    } while (count == NGX_HOPGATE_SEND_BATCH);
}


void
ngx_hopgate_session_run(ngx_hopgate_session_t *s)
{
    hg_time_t               now, deadline;
    ngx_msec_t              delay;

    if (s->destroying) {
        return;
    }

    now = ngx_hopgate_now();

    if (hg_conn_deadline(s->conn) <= now) {
        hg_conn_timeout(s->conn, now);
    }

    ngx_hopgate_session_events(s);

    if (hg_conn_carrier(s->conn) == HG_CARRIER_STREAM) {
        ngx_hopgate_tunnel_output(s);

    } else {
        ngx_hopgate_session_send(s, now);
    }

    if (hg_conn_is_closed(s->conn)) {
        ngx_hopgate_session_destroy(s);
        return;
    }

    ngx_hopgate_metrics_session_update(s);

    deadline = hg_conn_deadline(s->conn);
    if (deadline == HG_TIME_INFINITE) {
        if (s->timer.timer_set) {
            ngx_del_timer(&s->timer);
        }
        return;
    }

    /* millisecond timers: round up, a late wake-up costs nothing */
    now = ngx_hopgate_now();
    delay = deadline > now ? (ngx_msec_t) ((deadline - now + 999) / 1000)
                           : 0;

    ngx_add_timer(&s->timer, delay);
}


static void
ngx_hopgate_session_events(ngx_hopgate_session_t *s)
{
    socklen_t               plen;
    hg_event_t              ev;
    const struct sockaddr  *peer;

    while (hg_conn_next_event(s->conn, &ev) == HG_OK) {

        switch (ev.type) {

        case HG_EV_HANDSHAKE_DONE:
            ngx_hopgate_halfopen_established(s);
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "hopgate: %s up with %*s",
                           s->tunnel ? "the TCP carrier" : "DTLS",
                           s->addr_len, s->addr_text);
            break;

        case HG_EV_HELLO:
            ngx_hopgate_session_hello(s, ev.hello);
            break;

        case HG_EV_GOAWAY:
            /* the agent leaves: no new streams, the open ones finish */
            s->draining = 1;
            break;

        case HG_EV_PEER_MIGRATED:
            peer = hg_conn_peer(s->conn, &plen);
            s->addr_len = ngx_sock_ntop((struct sockaddr *) peer, plen,
                                        s->addr_text, NGX_SOCKADDR_STRLEN,
                                        1);
            ngx_hopgate_addr_index(s);
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "hopgate: session %016uxL for \"%s\" moved to %*s",
                          s->id, s->domain ? s->domain->name : (u_char *) "",
                          s->addr_len, s->addr_text);
            break;

        case HG_EV_CLOSED:
            if (s->ready) {
                ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                              "hopgate: session %016uxL for \"%s\" from %*s "
                              "closed: %s (%s)", s->id, s->domain->name,
                              s->addr_len, s->addr_text,
                              ev.text ? ev.text : "",
                              hg_code_name(ev.code));
            }
            ngx_hopgate_session_unready(s);
            break;

        default:
            ngx_hopgate_pump_event(s, &ev);
            break;
        }
    }
}


static void
ngx_hopgate_session_hello(ngx_hopgate_session_t *s, const hg_hello_t *hello)
{
    ngx_int_t                rc;
    ngx_str_t                domain, key;
    ngx_hopgate_verdict_t    v;
    ngx_hopgate_registry_t  *reg = ngx_hopgate_worker->conf->reg;

    ngx_cpystrn(s->agent_version, (u_char *) hello->agent_version,
                sizeof(s->agent_version));
    ngx_cpystrn(s->agent_id, (u_char *) hello->agent_id,
                sizeof(s->agent_id));
    s->worker_hint = hello->worker_hint;

    domain.data = (u_char *) hello->domain;
    domain.len = ngx_strlen(hello->domain);
    key.data = (u_char *) hello->api_key;
    key.len = ngx_strlen(hello->api_key);

    v.rc = NGX_DECLINED;

    if (ngx_hopgate_domain_normalize(&domain, s->domain_name,
                                     &s->domain_len)
        != NGX_OK)
    {
        ngx_cpystrn(s->domain_name, (u_char *) "-", 2);
        s->domain_len = 1;
        v.code = HG_CODE_UNKNOWN_DOMAIN;
        v.why = "not a valid domain name";
        ngx_hopgate_session_decide(s, &v);
        return;
    }

    if (ngx_hopgate_worker->exiting) {
        v.code = HG_CODE_GOING_AWAY;
        v.why = "this worker is shutting down";
        ngx_hopgate_session_decide(s, &v);
        return;
    }

    domain.data = s->domain_name;
    domain.len = s->domain_len;

    rc = reg->ops->check(reg, &domain, &key, &v,
                         ngx_hopgate_session_verdict, s);

    if (rc == NGX_AGAIN) {
        /* the engine holds the agent in HELLO until the answer comes */
        s->checking = 1;
        return;
    }

    ngx_hopgate_session_decide(s, &v);
}


/* the registry answered later */
static void
ngx_hopgate_session_verdict(void *data, ngx_hopgate_verdict_t *v)
{
    ngx_hopgate_session_t  *s = data;

    s->checking = 0;
    ngx_hopgate_session_decide(s, v);
    ngx_hopgate_session_run(s);
}


/*
 * An agent keeps one session per worker. A second one of the same agent
 * (agent id) here either landed on this worker by the kernel's hash while
 * aimed at another (no steering): refused as a duplicate, so the agent
 * dials again from a new port before any request can pick it; or was aimed
 * here, which means the agent gave up on the one it had: that one goes.
 */
static void
ngx_hopgate_session_same_agent(ngx_hopgate_session_t *s,
    ngx_hopgate_domain_t *d, ngx_hopgate_verdict_t *v)
{
    ngx_queue_t            *q;
    ngx_hopgate_session_t  *old;

    if (s->agent_id[0] == '\0') {
        return;
    }

    for (q = ngx_queue_head(&d->sessions);
         q != ngx_queue_sentinel(&d->sessions);
         q = ngx_queue_next(q))
    {
        old = ngx_queue_data(q, ngx_hopgate_session_t, domain_link);

        /*
         * an agent moving to the other carrier drains the old session
         * itself (GOAWAY), so that no request on it fails
         */
        if (old->draining
            || ngx_strcmp(old->agent_id, s->agent_id) != 0
            || hg_conn_carrier(old->conn) != hg_conn_carrier(s->conn))
        {
            continue;
        }

        if (s->worker_hint >= 0 && s->worker_hint != (ngx_int_t) ngx_worker) {
            v->rc = NGX_DECLINED;
            v->code = HG_CODE_DUPLICATE;
            v->why = "this worker already has a session of this agent";
            return;
        }

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate: session %016uxL for \"%s\" replaced by a "
                      "new one of the same agent", old->id, d->name);
        old->draining = 1;
        hg_conn_close(old->conn, HG_CODE_NORMAL, "replaced by a new session");
        ngx_hopgate_session_kick(old);
        return;
    }
}


static void
ngx_hopgate_session_decide(ngx_hopgate_session_t *s,
    ngx_hopgate_verdict_t *v)
{
    ngx_str_t               domain;
    ngx_queue_t            *q;
    ngx_core_conf_t        *ccf;
    ngx_hopgate_pump_t     *p;
    ngx_hopgate_domain_t   *d;
    ngx_hopgate_session_t  *other;

    /* the key has been judged: it is wiped, whatever the verdict */
    hg_conn_forget_key(s->conn);

    domain.data = s->domain_name;
    domain.len = s->domain_len;

    d = NULL;

    if (v->rc == NGX_OK) {
        d = ngx_hopgate_domain_get(&domain, 1);
        if (d == NULL) {
            v->rc = NGX_DECLINED;
            v->code = HG_CODE_INTERNAL;
            v->why = "out of memory";
        }
    }

    if (v->rc == NGX_OK) {
        ngx_hopgate_session_same_agent(s, d, v);
        if (v->rc != NGX_OK) {
            ngx_hopgate_domain_release(d);
        }
    }

    ngx_hopgate_metrics_verdict(s, v->rc, v->code);

    if (v->rc != NGX_OK) {
        ngx_log_error(((v->code == HG_CODE_GOING_AWAY
                    || v->code == HG_CODE_DUPLICATE) ? NGX_LOG_INFO
                                                     : NGX_LOG_WARN),
                      ngx_cycle->log, 0,
                      "hopgate: agent %*s refused for \"%V\": %s",
                      s->addr_len, s->addr_text, &domain, v->why);

        hg_conn_reject(s->conn, v->code, v->why);
        return;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    if (hg_conn_accept(s->conn, s->id, (uint32_t) ngx_worker,
                       (uint32_t) ccf->worker_processes, NULL, 0)
        != HG_OK)
    {
        ngx_hopgate_domain_release(d);
        return;
    }

    s->ready = 1;
    s->domain = d;

    /*
     * A new agent session often means an old one died (a restart): check
     * the others now instead of at their next keepalive, so a dead one
     * stops being picked within a few probe timeouts.
     */
    for (q = ngx_queue_head(&d->sessions);
         q != ngx_queue_sentinel(&d->sessions);
         q = ngx_queue_next(q))
    {
        other = ngx_queue_data(q, ngx_hopgate_session_t, domain_link);
        hg_conn_ping(other->conn);
        ngx_hopgate_session_kick(other);
    }

    ngx_queue_insert_tail(&d->sessions, &s->domain_link);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "hopgate: agent %*s (%s) connected for \"%V\", worker "
                  "%i/%i, session %016uxL over %s", s->addr_len,
                  s->addr_text, s->agent_version, &domain, ngx_worker,
                  ccf->worker_processes, s->id,
                  ngx_hopgate_session_transport(s));

    /* requests that were waiting for this domain go now */
    while (!ngx_queue_empty(&d->waiters)) {
        q = ngx_queue_head(&d->waiters);
        p = ngx_queue_data(q, ngx_hopgate_pump_t, link);
        ngx_hopgate_pump_attach(p, s);
    }
}


/* the registry revoked a domain: its sessions here close with a reason */
void
ngx_hopgate_sessions_revoke(ngx_str_t *domain, uint32_t code,
    const char *reason)
{
    ngx_queue_t            *q, *next;
    ngx_hopgate_domain_t   *d;
    ngx_hopgate_session_t  *s;

    d = ngx_hopgate_domain_get(domain, 0);
    if (d == NULL) {
        return;
    }

    for (q = ngx_queue_head(&d->sessions);
         q != ngx_queue_sentinel(&d->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_hopgate_session_t, domain_link);

        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate: closing session %016uxL for \"%V\": %s",
                      s->id, domain, reason);

        hg_conn_close(s->conn, code, reason);
        ngx_hopgate_session_kick(s);
    }
}


/* the session can take no more streams: out of the domain index */
static void
ngx_hopgate_session_unready(ngx_hopgate_session_t *s)
{
    ngx_queue_t         *q;
    ngx_hopgate_pump_t  *p;

    if (s->ready) {
        s->ready = 0;
        ngx_queue_remove(&s->domain_link);
        ngx_queue_init(&s->domain_link);
        ngx_hopgate_domain_release(s->domain);
    }

    while (!ngx_queue_empty(&s->pumps)) {
        q = ngx_queue_head(&s->pumps);
        p = ngx_queue_data(q, ngx_hopgate_pump_t, link);
        ngx_hopgate_pump_fail(p, NGX_HOPGATE_STREAM_TUNNEL_CLOSED);
    }
}


void
ngx_hopgate_session_destroy(ngx_hopgate_session_t *s)
{
    ngx_hopgate_worker_t  *w = ngx_hopgate_worker;

    s->destroying = 1;

    if (s->tunnel) {
        ngx_hopgate_tunnel_detach(s);
    }

    if (s->checking) {
        s->checking = 0;
        w->conf->reg->ops->cancel(w->conf->reg, s);
    }

    ngx_hopgate_session_unready(s);
    ngx_hopgate_metrics_session_close(s);

    ngx_rbtree_delete(&w->by_cid, &s->cid_node);
    if (s->in_addr_tree) {
        ngx_rbtree_delete(&w->by_addr, &s->addr_node);
    }

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    if (s->run.posted) {
        ngx_delete_posted_event(&s->run);
    }

    /* the registry may not have answered */
    hg_conn_forget_key(s->conn);
    hg_conn_free(s->conn);
    ngx_hopgate_halfopen_freed(s);
    ngx_free(s);

    w->nsessions--;
}


/* nginx is quitting or reloading: every session drains */
void
ngx_hopgate_sessions_goaway(ngx_hopgate_worker_t *w)
{
    ngx_rbtree_node_t      *node, *next;
    ngx_hopgate_session_t  *s;

    if (w->by_cid.root == w->by_cid.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(w->by_cid.root, w->by_cid.sentinel);
         node;
         node = next)
    {
        next = ngx_rbtree_next(&w->by_cid, node);

        s = (ngx_hopgate_session_t *)
            ((u_char *) node - offsetof(ngx_hopgate_session_t, cid_node));

        hg_conn_goaway(s->conn, HG_CODE_GOING_AWAY, "edge shutting down");

        /*
         * at once: posted events would wait for the next timer, since
         * nginx 1.22 runs none right after closing idle connections
         */
        ngx_hopgate_session_run(s);
    }
}


/*
 * The worker is exiting now (nginx -s stop, or the end of a drain): every
 * session still open is told with a CLOSE, so that agents dial again at
 * once instead of waiting for a stateless reset or their idle timeout.
 */
void
ngx_hopgate_sessions_close(ngx_hopgate_worker_t *w)
{
    ngx_rbtree_node_t      *node, *next;
    ngx_hopgate_session_t  *s;

    if (w->by_cid.root == w->by_cid.sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(w->by_cid.root, w->by_cid.sentinel);
         node;
         node = next)
    {
        next = ngx_rbtree_next(&w->by_cid, node);

        s = (ngx_hopgate_session_t *)
            ((u_char *) node - offsetof(ngx_hopgate_session_t, cid_node));

        hg_conn_close(s->conn, HG_CODE_GOING_AWAY, "the edge is restarting");
        ngx_hopgate_session_run(s);
    }
}


/* "udp" or "tcp": what logs, metrics and status call the carrier */
const char *
ngx_hopgate_session_transport(ngx_hopgate_session_t *s)
{
    return hg_conn_carrier(s->conn) == HG_CARRIER_STREAM ? "tcp" : "udp";
}


/* ---- the domain index --------------------------------------------------- */

ngx_hopgate_domain_t *
ngx_hopgate_domain_get(ngx_str_t *name, ngx_uint_t create)
{
    uint32_t               hash;
    ngx_hopgate_domain_t  *d;
    ngx_hopgate_worker_t  *w = ngx_hopgate_worker;

    if (w == NULL || name->len == 0 || name->len > NGX_HOPGATE_DOMAIN_MAX) {
        return NULL;
    }

    hash = ngx_crc32_short(name->data, name->len);

    d = (ngx_hopgate_domain_t *) ngx_str_rbtree_lookup(&w->domains, name,
                                                       hash);
    if (d || !create) {
        return d;
    }

    d = ngx_calloc(sizeof(ngx_hopgate_domain_t), ngx_cycle->log);
    if (d == NULL) {
        return NULL;
    }

    ngx_memcpy(d->name, name->data, name->len);
    d->sn.str.data = d->name;
    d->sn.str.len = name->len;
    d->sn.node.key = hash;
    ngx_queue_init(&d->sessions);
    ngx_queue_init(&d->waiters);

    ngx_rbtree_insert(&w->domains, &d->sn.node);

    return d;
}


void
ngx_hopgate_domain_release(ngx_hopgate_domain_t *d)
{
    if (d && ngx_queue_empty(&d->sessions) && ngx_queue_empty(&d->waiters)) {
        ngx_rbtree_delete(&ngx_hopgate_worker->domains, &d->sn.node);
        ngx_free(d);
    }
}


/* a is the better session: answering probes, fewer streams, less used */
static ngx_int_t
ngx_hopgate_session_better(ngx_hopgate_session_t *a, ngx_hopgate_session_t *b)
{
    int  ra, rb;

    ra = hg_conn_is_responsive(a->conn);
    rb = hg_conn_is_responsive(b->conn);

    if (ra != rb) {
        return ra;
    }

    if (a->streams != b->streams) {
        return a->streams < b->streams;
    }

    return a->picked < b->picked;
}


/*
 * The domain's best session for a new stream (see above): round-robin
 * among equals. `avoid` (a session id, or 0) is skipped: the session a
 * retry comes from.
 */
ngx_hopgate_session_t *
ngx_hopgate_domain_pick(ngx_hopgate_domain_t *d, uint64_t avoid)
{
    ngx_queue_t            *q;
    ngx_hopgate_session_t  *s, *best;

    best = NULL;

    for (q = ngx_queue_head(&d->sessions);
         q != ngx_queue_sentinel(&d->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_hopgate_session_t, domain_link);

        if (s->draining || s->id == avoid
            || !hg_conn_can_open_stream(s->conn))
        {
            continue;
        }

        if (best == NULL || ngx_hopgate_session_better(s, best)) {
            best = s;
        }
    }

    if (best) {
        best->picked = ++ngx_hopgate_worker->picks;
    }

    return best;
}
