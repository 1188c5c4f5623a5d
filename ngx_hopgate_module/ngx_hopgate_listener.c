/*
 * The UDP side of the module: the hopgate_listen sockets, reuseport
 * steering, and the path a datagram takes between workers.
 *
 * The sockets are ordinary nginx listening sockets (so reload and binary
 * upgrade hand them over), cloned per worker with reuseport. A classic BPF
 * program on the reuseport group sends a datagram to the socket whose
 * index is the worker byte of its connection id (or of the agent's
 * steering hint); datagrams without either are hashed by the kernel.
 *
 * Each worker reads its socket through a dup() of it, so that when nginx
 * closes listening sockets at a graceful shutdown or reload the worker
 * can still finish its sessions. A datagram whose connection id belongs
 * to another worker process (another worker, an old worker during reload,
 * or no steering at all) is passed to that process over an abstract unix
 * datagram socket named after the process tag inside the id. Any local
 * process can send to such a name, so a worker takes a datagram there only
 * from a sibling: the kernel says who sent it (SCM_CREDENTIALS), and the
 * sender must be one of this nginx's worker processes, with our uid.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <sys/un.h>
#include <linux/filter.h>
#include <openssl/rand.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_RECV_BUDGET   128     /* datagrams per read event */
#define NGX_HOPGATE_RECV_BATCH    32      /* datagrams per recvmmsg() */
#define NGX_HOPGATE_DGRAM_MAX     2048


/* a worker is single-threaded: one set of input buffers serves all */
static u_char  ngx_hopgate_in[NGX_HOPGATE_RECV_BATCH][NGX_HOPGATE_DGRAM_MAX];


static void ngx_hopgate_recv(ngx_event_t *rev);
static void ngx_hopgate_forward_recv(ngx_event_t *rev);
static ngx_int_t ngx_hopgate_forward_init(ngx_cycle_t *cycle,
    ngx_hopgate_worker_t *w);
static void ngx_hopgate_forward_name(struct sockaddr_un *sun,
    socklen_t *len, const uint8_t *tag);
static ngx_int_t ngx_hopgate_forward_sender(ngx_hopgate_worker_t *w,
    struct msghdr *msg);
static void ngx_hopgate_noop_handler(ngx_event_t *ev);


ngx_int_t
ngx_hopgate_listen_add(ngx_conf_t *cf, ngx_http_hopgate_listen_t *hl)
{
    ngx_listening_t  *ls;

    ls = ngx_create_listening(cf, &hl->sockaddr.sockaddr, hl->socklen);
    if (ls == NULL) {
        return NGX_ERROR;
    }

    ls->type = SOCK_DGRAM;
    ls->handler = NULL;
    /* the new cycle's error_log: cf->log is the old cycle's, freed at reload */
    ls->logp = &cf->cycle->new_log;
    ls->log.data = &ls->addr_text;
    ls->log.handler = ngx_accept_log_error;
    ls->reuseport = hl->reuseport;
    ls->wildcard = 0;

    /* a burst of agents' datagrams must not overflow a default buffer */
    ls->rcvbuf = 4 * 1024 * 1024;
    ls->sndbuf = 4 * 1024 * 1024;

#if (NGX_HAVE_INET6)
    if (hl->sockaddr.sockaddr.sa_family == AF_INET6) {
        ls->ipv6only = 1;
    }
#endif

    /* marks the socket as ours; nothing of nginx's reads `servers` here */
    ls->servers = hl;

    return NGX_OK;
}


static ngx_int_t
ngx_hopgate_is_ours(ngx_listening_t *ls, ngx_http_hopgate_main_conf_t *hmcf)
{
    ngx_http_hopgate_listen_t  *hl;

    if (ls->type != SOCK_DGRAM || ls->servers == NULL) {
        return 0;
    }

    hl = hmcf->listen.elts;

    return ls->servers >= (void *) hl
           && ls->servers < (void *) (hl + hmcf->listen.nelts);
}


/*
 * The steering program: if the datagram carries a connection id or a
 * steering hint (flag bits 0x03 of the first byte), return its worker
 * byte modulo the worker count as the socket index; otherwise return an
 * out-of-range index, which makes the kernel fall back to its hash.
 */
ngx_int_t
ngx_hopgate_steer_attach(ngx_cycle_t *cycle,
    ngx_http_hopgate_main_conf_t *hmcf)
{
    ngx_uint_t             i;
    ngx_core_conf_t       *ccf;
    ngx_listening_t       *ls;
    struct sock_fprog      prog;
    static ngx_uint_t      warned;

    struct sock_filter  code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K,
                 HG_PREFIX_FLAG_CID | HG_PREFIX_FLAG_STEER),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, 1),
        BPF_STMT(BPF_RET | BPF_A, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    };

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    /* nginx -t opens no sockets to steer */
    if (ngx_test_config || ccf->worker_processes < 2) {
        return NGX_OK;
    }

    code[4].k = (uint32_t) ccf->worker_processes;
    prog.len = sizeof(code) / sizeof(code[0]);
    prog.filter = code;

    ls = cycle->listening.elts;
    for (i = 0; i < cycle->listening.nelts; i++) {

        if (!ngx_hopgate_is_ours(&ls[i], hmcf) || !ls[i].reuseport
            || ls[i].worker != 0 || ls[i].fd == (ngx_socket_t) -1)
        {
            continue;
        }

        /* one socket's program serves the whole reuseport group */
        if (setsockopt(ls[i].fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                       &prog, sizeof(prog))
            == -1)
        {
            if (!warned) {
                ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_socket_errno,
                              "setsockopt(SO_ATTACH_REUSEPORT_CBPF) failed "
                              "for %V: datagrams are hashed to workers and "
                              "agents cover workers by re-dialling",
                              &ls[i].addr_text);
                warned = 1;
            }
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                      "hopgate: steering %V over %i workers",
                      &ls[i].addr_text, ccf->worker_processes);
    }

    return NGX_OK;
}


ngx_int_t
ngx_hopgate_listeners_init(ngx_cycle_t *cycle, ngx_hopgate_worker_t *w)
{
    ngx_uint_t               i, n;
    ngx_socket_t             fd;
    ngx_listening_t         *ls;
    ngx_connection_t        *c;
    ngx_hopgate_listener_t  *l;
    uint8_t                  prefix[1 + NGX_HOPGATE_TAG_LEN];

    if (ngx_hopgate_forward_init(cycle, w) != NGX_OK) {
        return NGX_ERROR;
    }

    w->listeners = ngx_pcalloc(cycle->pool, w->conf->listen.nelts
                                            * sizeof(ngx_hopgate_listener_t));
    if (w->listeners == NULL) {
        return NGX_ERROR;
    }

    prefix[0] = (uint8_t) ngx_worker;
    ngx_memcpy(prefix + 1, w->tag, NGX_HOPGATE_TAG_LEN);

    n = 0;
    ls = cycle->listening.elts;

    for (i = 0; i < cycle->listening.nelts; i++) {

        if (!ngx_hopgate_is_ours(&ls[i], w->conf)) {
            continue;
        }

        if (ls[i].reuseport && ls[i].worker != ngx_worker) {
            continue;
        }

        /* nginx must not read this socket itself */
        if (ls[i].connection) {
            if (ls[i].connection->read->active) {
                ngx_del_event(ls[i].connection->read, NGX_READ_EVENT, 0);
            }
            ls[i].connection->read->handler = ngx_hopgate_noop_handler;
        }

        fd = dup(ls[i].fd);
        if (fd == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "dup() of %V failed", &ls[i].addr_text);
            return NGX_ERROR;
        }

        c = ngx_get_connection(fd, cycle->log);
        if (c == NULL) {
            ngx_close_socket(fd);
            return NGX_ERROR;
        }

        if (ngx_nonblocking(fd) == -1) {
            ngx_close_connection(c);
            return NGX_ERROR;
        }

        l = &w->listeners[n];
        l->ls = &ls[i];
        l->conn = c;
        l->index = ((ngx_http_hopgate_listen_t *) ls[i].servers)->index;
        l->engine = hg_listener_new(&w->engine, w->conf->ssl_ctx, prefix,
                                    sizeof(prefix), ngx_hopgate_now());
        if (l->engine == NULL) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "hopgate: cannot create the DTLS listener");
            ngx_close_connection(c);
            return NGX_ERROR;
        }

        c->type = SOCK_DGRAM;
        c->data = l;
        c->log = &ls[i].log;
        c->read->log = c->log;
        c->write->log = c->log;
        c->read->handler = ngx_hopgate_recv;

        /* told by ngx_close_idle_connections() when the worker quits */
        c->idle = 1;

        if (ngx_add_event(c->read, NGX_READ_EVENT, 0) == NGX_ERROR) {
            return NGX_ERROR;
        }

        n++;
    }

    w->nlisteners = n;

    return NGX_OK;
}


static void
ngx_hopgate_noop_handler(ngx_event_t *ev)
{
}


void
ngx_hopgate_listeners_close(ngx_hopgate_worker_t *w)
{
    ngx_uint_t  i;

    for (i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].conn) {
            ngx_close_connection(w->listeners[i].conn);
            w->listeners[i].conn = NULL;
        }

        hg_listener_free(w->listeners[i].engine);
        w->listeners[i].engine = NULL;
    }

    if (w->forward) {
        ngx_close_connection(w->forward);
        w->forward = NULL;
    }
}


static void
ngx_hopgate_recv(ngx_event_t *rev)
{
    ngx_connection_t        *c = rev->data;
    ngx_hopgate_listener_t  *l = c->data;

    int               n;
    ngx_uint_t        i, batches;
    struct iovec      iov[NGX_HOPGATE_RECV_BATCH];
    struct mmsghdr    msgs[NGX_HOPGATE_RECV_BATCH];
    ngx_sockaddr_t    sa[NGX_HOPGATE_RECV_BATCH];

    if (c->close) {
        /* the worker is quitting: drain sessions, keep reading */
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "hopgate: worker shutting down, draining %ui sessions",
                      ngx_hopgate_worker->nsessions);
        c->close = 0;
        c->idle = 0;

        if (!ngx_hopgate_worker->exiting) {
            ngx_hopgate_worker->exiting = 1;
            ngx_hopgate_sessions_goaway(ngx_hopgate_worker);
        }
    }

    /* recvmmsg(): a batch of datagrams per system call */
    for (batches = NGX_HOPGATE_RECV_BUDGET / NGX_HOPGATE_RECV_BATCH;
         batches;
         batches--)
    {
        for (i = 0; i < NGX_HOPGATE_RECV_BATCH; i++) {
            iov[i].iov_base = ngx_hopgate_in[i];
            iov[i].iov_len = sizeof(ngx_hopgate_in[i]);
            ngx_memzero(&msgs[i], sizeof(struct mmsghdr));
            msgs[i].msg_hdr.msg_name = &sa[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(ngx_sockaddr_t);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }

        n = recvmmsg(c->fd, msgs, NGX_HOPGATE_RECV_BATCH, MSG_DONTWAIT, NULL);

        if (n == -1) {
            if (ngx_socket_errno != NGX_EAGAIN
                && ngx_socket_errno != NGX_EINTR
                && ngx_socket_errno != NGX_ECONNREFUSED)
            {
                ngx_log_error(NGX_LOG_ALERT, c->log, ngx_socket_errno,
                              "recvmmsg() failed");
            }
            return;
        }

        for (i = 0; i < (ngx_uint_t) n; i++) {
            ngx_hopgate_datagram(l, ngx_hopgate_in[i], msgs[i].msg_len,
                                 &sa[i].sockaddr,
                                 msgs[i].msg_hdr.msg_namelen);
        }

        if (n < NGX_HOPGATE_RECV_BATCH) {
            return;
        }
    }

    /* more may wait: let other events run first */
    ngx_post_event(rev, &ngx_posted_events);
}


void
ngx_hopgate_send(ngx_hopgate_listener_t *l, const u_char *buf, size_t len,
    const struct sockaddr *to, socklen_t tolen)
{
    if (l->conn == NULL) {
        return;
    }

    if (sendto(l->conn->fd, buf, len, 0, to, tolen) == -1) {
        /*
         * a full socket buffer drops the datagram, as the network may;
         * the engine's loss recovery repeats what mattered
         */
        if (ngx_socket_errno != NGX_EAGAIN) {
            ngx_log_debug1(NGX_LOG_DEBUG_EVENT, l->conn->log,
                           ngx_socket_errno, "sendto() failed, %uz bytes",
                           len);
        }
    }
}


void
ngx_hopgate_send_batch(ngx_hopgate_listener_t *l,
    u_char (*bufs)[HG_MTU_MAX + 64], size_t *lens, ngx_uint_t count,
    const struct sockaddr *to, socklen_t tolen)
{
    int             n;
    ngx_uint_t      i, sent;
    struct iovec    iov[NGX_HOPGATE_SEND_BATCH];
    struct mmsghdr  msgs[NGX_HOPGATE_SEND_BATCH];

    if (l->conn == NULL || count == 0) {
        return;
    }

    for (i = 0; i < count; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = lens[i];
        ngx_memzero(&msgs[i], sizeof(struct mmsghdr));
        msgs[i].msg_hdr.msg_name = (void *) to;
        msgs[i].msg_hdr.msg_namelen = tolen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    for (sent = 0; sent < count; sent += n) {
        n = sendmmsg(l->conn->fd, msgs + sent, count - sent, 0);
        if (n <= 0) {
            /* as with sendto(): the rest is lost, recovery repeats it */
            ngx_log_debug1(NGX_LOG_DEBUG_EVENT, l->conn->log,
                           ngx_socket_errno, "sendmmsg() failed, %ui "
                           "datagrams dropped", count - sent);
            return;
        }
    }
}


/* ---- between worker processes ------------------------------------------ */

static void
ngx_hopgate_forward_name(struct sockaddr_un *sun, socklen_t *len,
    const uint8_t *tag)
{
    int  n;

    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    /* abstract: a leading NUL, no file, gone with the process */
    n = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1,
                 "hopgate/%d/%02x%02x%02x%02x", (int) ngx_parent,
                 tag[0], tag[1], tag[2], tag[3]);

    *len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
}


static ngx_int_t
ngx_hopgate_forward_init(ngx_cycle_t *cycle, ngx_hopgate_worker_t *w)
{
    int                  fd, on;
    ngx_uint_t           tries;
    socklen_t            len;
    ngx_connection_t    *c;
    struct sockaddr_un   sun;

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "socket(AF_UNIX) failed");
        return NGX_ERROR;
    }

    /* every datagram then comes with its sender's pid and uid */
    on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "setsockopt(SO_PASSCRED) failed");
        close(fd);
        return NGX_ERROR;
    }

    for (tries = 0; tries < 16; tries++) {
        if (RAND_bytes(w->tag, NGX_HOPGATE_TAG_LEN) != 1) {
            close(fd);
            return NGX_ERROR;
        }

        ngx_hopgate_forward_name(&sun, &len, w->tag);

        if (bind(fd, (struct sockaddr *) &sun, len) == 0) {
            break;
        }

        if (ngx_socket_errno != NGX_EADDRINUSE) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                          "bind() of the hopgate forwarding socket failed");
            close(fd);
            return NGX_ERROR;
        }
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    c->data = w;
    c->read->handler = ngx_hopgate_forward_recv;
    c->read->log = cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) == NGX_ERROR) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    w->forward = c;

    return NGX_OK;
}


/*
 * A datagram for a session another process owns. The frame carries the
 * listen index and the agent's address so the owner replies from the
 * right socket to the right peer.
 */
ngx_int_t
ngx_hopgate_forward(ngx_hopgate_listener_t *l, const u_char *cid,
    const u_char *dgram, size_t len, const struct sockaddr *from,
    socklen_t fromlen)
{
    u_char               msg[2 + sizeof(ngx_sockaddr_t)
                             + NGX_HOPGATE_DGRAM_MAX];
    socklen_t            namelen;
    struct sockaddr_un   sun;

    if (ngx_hopgate_worker->forward == NULL
        || fromlen > sizeof(ngx_sockaddr_t) || len > NGX_HOPGATE_DGRAM_MAX)
    {
        return NGX_DECLINED;
    }

    msg[0] = (u_char) l->index;
    msg[1] = (u_char) fromlen;
    ngx_memcpy(msg + 2, from, fromlen);
    ngx_memcpy(msg + 2 + fromlen, dgram, len);

    ngx_hopgate_forward_name(&sun, &namelen, cid + 1);

    if (sendto(ngx_hopgate_worker->forward->fd, msg, 2 + fromlen + len, 0,
               (struct sockaddr *) &sun, namelen)
        == -1)
    {
        /* ECONNREFUSED: no such process any more; EAGAIN: it is busy */
        return ngx_socket_errno == NGX_EAGAIN ? NGX_OK : NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_hopgate_forward_recv(ngx_event_t *rev)
{
    ngx_connection_t      *c = rev->data;
    ngx_hopgate_worker_t  *w = c->data;

    u_char                   msg[2 + sizeof(ngx_sockaddr_t)
                                 + NGX_HOPGATE_DGRAM_MAX];
    u_char                   control[CMSG_SPACE(sizeof(struct ucred))];
    ssize_t                  n;
    size_t                   salen;
    ngx_uint_t               i, budget;
    struct iovec             iov;
    struct msghdr            mh;
    ngx_sockaddr_t           sa;
    ngx_hopgate_listener_t  *l;

    for (budget = NGX_HOPGATE_RECV_BUDGET; budget; budget--) {
        iov.iov_base = msg;
        iov.iov_len = sizeof(msg);
        ngx_memzero(&mh, sizeof(struct msghdr));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = control;
        mh.msg_controllen = sizeof(control);

        n = recvmsg(c->fd, &mh, 0);
        if (n == -1) {
            return;
        }

        if (ngx_hopgate_forward_sender(w, &mh) != NGX_OK) {
            continue;
        }

        salen = n >= 2 ? msg[1] : 0;
        if (n < 2 || salen == 0 || salen > sizeof(ngx_sockaddr_t)
            || (size_t) n < 2 + salen)
        {
            continue;
        }

        l = NULL;
        for (i = 0; i < w->nlisteners; i++) {
            if (w->listeners[i].index == msg[0]) {
                l = &w->listeners[i];
                break;
            }
        }

        if (l == NULL) {
            continue;
        }

        ngx_memcpy(&sa, msg + 2, salen);
        ngx_hopgate_datagram_forwarded(l, msg + 2 + salen,
                                       (size_t) n - 2 - salen,
                                       &sa.sockaddr, (socklen_t) salen);
    }

    ngx_post_event(rev, &ngx_posted_events);
}


/*
 * NGX_OK if the datagram comes from a worker of this nginx: ngx_processes[]
 * lists our siblings (the master tells every worker of each new one, old
 * generations included, and closes the channel of one that exits); the
 * slot of the last one seen is tried first.
 */
static ngx_int_t
ngx_hopgate_forward_sender(ngx_hopgate_worker_t *w, struct msghdr *msg)
{
    ngx_int_t        i;
    struct ucred     cred;
    struct cmsghdr  *cmsg;

    cmsg = CMSG_FIRSTHDR(msg);

    if (cmsg == NULL || (msg->msg_flags & MSG_CTRUNC)
        || cmsg->cmsg_level != SOL_SOCKET
        || cmsg->cmsg_type != SCM_CREDENTIALS
        || cmsg->cmsg_len != CMSG_LEN(sizeof(struct ucred)))
    {
        cred.pid = 0;
        cred.uid = (uid_t) -1;
        goto refused;
    }

    ngx_memcpy(&cred, CMSG_DATA(cmsg), sizeof(struct ucred));

    if (cred.uid != geteuid() || cred.pid == ngx_pid || cred.pid <= 0) {
        goto refused;
    }

    i = w->forward_slot;

    if (ngx_processes[i].pid != cred.pid
        || ngx_processes[i].channel[0] == -1)
    {
        for (i = 0; i < NGX_MAX_PROCESSES; i++) {
            if (ngx_processes[i].pid == cred.pid
                && ngx_processes[i].channel[0] != -1
                && i != ngx_process_slot)
            {
                break;
            }
        }

        if (i == NGX_MAX_PROCESSES) {
            goto refused;
        }

        w->forward_slot = i;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_EVENT, ngx_cycle->log, 0,
                   "hopgate: a datagram forwarded by worker %P", cred.pid);

    return NGX_OK;

refused:

    w->forward_refused++;

    /* anyone can send these: at most a line a second */
    if (w->forward_logged != ngx_time()) {
        w->forward_logged = ngx_time();
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "hopgate: ignored a datagram on the forwarding socket "
                      "from pid %P uid %d, not a worker of this nginx "
                      "(%ui so far)", (ngx_pid_t) cred.pid, (int) cred.uid,
                      w->forward_refused);
    }

    return NGX_DECLINED;
}
