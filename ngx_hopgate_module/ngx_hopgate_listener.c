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
 * A wildcard listener (0.0.0.0, [::]) learns the address each datagram
 * was sent to (IP_PKTINFO, IPV6_RECVPKTINFO, set by nginx for wildcard
 * datagram sockets) and a session answers from the one its agent uses:
 * on a multi-homed edge the default route's source address would be
 * another one, which the agent's connected socket drops. Every socket
 * forbids fragmentation (IP_PMTUDISC_DO): a datagram too large for the
 * path is refused by the kernel rather than split.
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
#define NGX_HOPGATE_CMSG_SPACE    CMSG_SPACE(sizeof(ngx_hopgate_addrinfo_t))
#define NGX_HOPGATE_FRAME_MAX     (3 + 2 * sizeof(ngx_sockaddr_t)            \
                                   + NGX_HOPGATE_DGRAM_MAX)


/* the IP_PKTINFO or IPV6_PKTINFO of a datagram */
typedef union {
    struct in_pktinfo            pkt;
#if (NGX_HAVE_INET6)
    struct in6_pktinfo           pkt6;
#endif
} ngx_hopgate_addrinfo_t;


typedef union {
    struct cmsghdr               align;
    u_char                       buf[NGX_HOPGATE_CMSG_SPACE];
} ngx_hopgate_cmsg_t;


/* a worker is single-threaded: one set of input buffers serves all */
static u_char  ngx_hopgate_in[NGX_HOPGATE_RECV_BATCH][NGX_HOPGATE_DGRAM_MAX];
static ngx_hopgate_cmsg_t  ngx_hopgate_in_cmsg[NGX_HOPGATE_RECV_BATCH];


static void ngx_hopgate_recv(ngx_event_t *rev);
static void ngx_hopgate_forward_recv(ngx_event_t *rev);
static ngx_int_t ngx_hopgate_forward_init(ngx_cycle_t *cycle,
    ngx_hopgate_worker_t *w);
static void ngx_hopgate_forward_name(struct sockaddr_un *sun,
    socklen_t *len, const uint8_t *tag);
static void ngx_hopgate_steer_name(struct sockaddr_un *sun, socklen_t *len,
    ngx_uint_t generation, ngx_uint_t worker);
static ngx_connection_t *ngx_hopgate_forward_socket(ngx_cycle_t *cycle,
    ngx_hopgate_worker_t *w);
static ngx_int_t ngx_hopgate_forward_to(ngx_hopgate_listener_t *l,
    struct sockaddr_un *sun, socklen_t namelen, const u_char *dgram,
    size_t len, const struct sockaddr *from, socklen_t fromlen);
static ngx_int_t ngx_hopgate_forward_sender(ngx_hopgate_worker_t *w,
    struct msghdr *msg);
static void ngx_hopgate_noop_handler(ngx_event_t *ev);
static void ngx_hopgate_listener_dst(ngx_hopgate_listener_t *l,
    struct msghdr *msg);
static size_t ngx_hopgate_set_srcaddr_cmsg(struct cmsghdr *cmsg,
    const struct sockaddr *local);
static ngx_int_t ngx_hopgate_get_srcaddr_cmsg(struct cmsghdr *cmsg,
    struct sockaddr *local);
static void ngx_hopgate_send_failed(ngx_hopgate_listener_t *l,
    ngx_err_t err, ngx_uint_t dropped);


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

    /* nginx then asks the kernel for each datagram's destination */
    ls->wildcard = ngx_inet_wildcard(&hl->sockaddr.sockaddr);

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


/* in the master, for the sockets it opened or inherited */
ngx_int_t
ngx_hopgate_listen_configure(ngx_cycle_t *cycle,
    ngx_http_hopgate_main_conf_t *hmcf)
{
    int               level, name, value;
    ngx_uint_t        i;
    ngx_listening_t  *ls;

    if (ngx_test_config) {
        return NGX_OK;
    }

    ls = cycle->listening.elts;
    for (i = 0; i < cycle->listening.nelts; i++) {

        if (!ngx_hopgate_is_ours(&ls[i], hmcf)
            || ls[i].fd == (ngx_socket_t) -1)
        {
            continue;
        }

#if (NGX_HAVE_INET6)
        if (ls[i].sockaddr->sa_family == AF_INET6) {
            level = IPPROTO_IPV6;
            name = IPV6_MTU_DISCOVER;
            value = IPV6_PMTUDISC_DO;

        } else
#endif
        {
            level = IPPROTO_IP;
            name = IP_MTU_DISCOVER;
            value = IP_PMTUDISC_DO;
        }

        if (setsockopt(ls[i].fd, level, name, &value, sizeof(int)) == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                          "setsockopt(%s, PMTUDISC_DO) for %V failed",
                          level == IPPROTO_IP ? "IP_MTU_DISCOVER"
                                              : "IPV6_MTU_DISCOVER",
                          &ls[i].addr_text);
            return NGX_ERROR;
        }
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

    if (w->steer) {
        ngx_close_connection(w->steer);
        w->steer = NULL;
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

            if (l->ls->wildcard) {
                msgs[i].msg_hdr.msg_control = &ngx_hopgate_in_cmsg[i];
                msgs[i].msg_hdr.msg_controllen = NGX_HOPGATE_CMSG_SPACE;
            }
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
            ngx_hopgate_listener_dst(l, &msgs[i].msg_hdr);
            ngx_hopgate_datagram(l, ngx_hopgate_in[i], msgs[i].msg_len,
                                 &sa[i].sockaddr,
                                 msgs[i].msg_hdr.msg_namelen);
        }

        l->dst_len = 0;

        if (n < NGX_HOPGATE_RECV_BATCH) {
            return;
        }
    }

    /* more may wait: let other events run first */
    ngx_post_event(rev, &ngx_posted_events);
}


/* where the datagram in hand was sent to, for a wildcard listener */
static void
ngx_hopgate_listener_dst(ngx_hopgate_listener_t *l, struct msghdr *msg)
{
    struct cmsghdr  *cmsg;

    l->dst_len = 0;

    if (!l->ls->wildcard) {
        return;
    }

    ngx_memcpy(&l->dst, l->ls->sockaddr, l->ls->socklen);

    for (cmsg = CMSG_FIRSTHDR(msg); cmsg; cmsg = CMSG_NXTHDR(msg, cmsg)) {
        if (ngx_hopgate_get_srcaddr_cmsg(cmsg, &l->dst.sockaddr) == NGX_OK) {
            l->dst_len = l->ls->socklen;
            return;
        }
    }
}


/*
 * A reply to the datagram in hand (a cookie, a reset): from the address
 * that datagram was sent to.
 */
void
ngx_hopgate_send(ngx_hopgate_listener_t *l, const u_char *buf, size_t len,
    const struct sockaddr *to, socklen_t tolen)
{
    struct iovec        iov;
    struct msghdr       msg;
    ngx_hopgate_cmsg_t  control;

    if (l->conn == NULL) {
        return;
    }

    iov.iov_base = (void *) buf;
    iov.iov_len = len;

    ngx_memzero(&msg, sizeof(struct msghdr));
    msg.msg_name = (void *) to;
    msg.msg_namelen = tolen;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;

    if (l->dst_len) {
        ngx_memzero(&control, sizeof(control));
        msg.msg_control = &control;
        msg.msg_controllen = ngx_hopgate_set_srcaddr_cmsg(&control.align,
                                                          &l->dst.sockaddr);
    }

    if (sendmsg(l->conn->fd, &msg, 0) == -1) {
        /*
         * a full socket buffer drops the datagram, as the network may;
         * the engine's loss recovery repeats what mattered
         */
        ngx_hopgate_send_failed(l, ngx_socket_errno, 1);
    }
}


/* a session's output, from its local address (wildcard listeners) */
void
ngx_hopgate_send_batch(ngx_hopgate_listener_t *l,
    u_char (*bufs)[HG_MTU_MAX + 64], size_t *lens, ngx_uint_t count,
    const struct sockaddr *to, socklen_t tolen,
    const struct sockaddr *local, socklen_t locallen)
{
    int                 n;
    size_t              controllen;
    ngx_err_t           err;
    ngx_uint_t          i, sent;
    struct iovec        iov[NGX_HOPGATE_SEND_BATCH];
    struct mmsghdr      msgs[NGX_HOPGATE_SEND_BATCH];
    ngx_hopgate_cmsg_t  control;

    if (l->conn == NULL || count == 0) {
        return;
    }

    controllen = 0;

    if (locallen) {
        /* one control message serves every datagram of the batch */
        ngx_memzero(&control, sizeof(control));
        controllen = ngx_hopgate_set_srcaddr_cmsg(&control.align, local);
    }

    for (i = 0; i < count; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = lens[i];
        ngx_memzero(&msgs[i], sizeof(struct mmsghdr));
        msgs[i].msg_hdr.msg_name = (void *) to;
        msgs[i].msg_hdr.msg_namelen = tolen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;

        if (controllen) {
            msgs[i].msg_hdr.msg_control = &control;
            msgs[i].msg_hdr.msg_controllen = controllen;
        }
    }

    for (sent = 0; sent < count; sent += n) {
        n = sendmmsg(l->conn->fd, msgs + sent, count - sent, 0);
        if (n > 0) {
            continue;
        }

        err = ngx_socket_errno;

        if (err == EMSGSIZE) {
            /* too large for the path: that datagram only is lost */
            ngx_hopgate_send_failed(l, err, 1);
            n = 1;
            continue;
        }

        /* as with sendmsg(): the rest is lost, recovery repeats it */
        ngx_hopgate_send_failed(l, err, count - sent);
        return;
    }
}


static void
ngx_hopgate_send_failed(ngx_hopgate_listener_t *l, ngx_err_t err,
    ngx_uint_t dropped)
{
    static ngx_uint_t  warned;

    if (err == EMSGSIZE && !warned) {
        /* fragmentation is off: the path is narrower than hopgate_mtu */
        ngx_log_error(NGX_LOG_WARN, l->conn->log, err,
                      "hopgate: a datagram is too large for the path, "
                      "lower \"hopgate_mtu\"");
        warned = 1;
        return;
    }

    if (err != NGX_EAGAIN) {
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, l->conn->log, err,
                       "hopgate: sending failed, %ui datagrams dropped",
                       dropped);
    }
}


/*
 * The local address as a control message: nginx 1.25's
 * ngx_set_srcaddr_cmsg() and ngx_get_srcaddr_cmsg(), which 1.22 lacks.
 */
static size_t
ngx_hopgate_set_srcaddr_cmsg(struct cmsghdr *cmsg,
    const struct sockaddr *local)
{
    struct in_pktinfo     *pkt;
    struct sockaddr_in    *sin;
#if (NGX_HAVE_INET6)
    struct in6_pktinfo    *pkt6;
    struct sockaddr_in6   *sin6;
#endif

#if (NGX_HAVE_INET6)
    if (local->sa_family == AF_INET6) {
        cmsg->cmsg_level = IPPROTO_IPV6;
        cmsg->cmsg_type = IPV6_PKTINFO;
        cmsg->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));

        sin6 = (struct sockaddr_in6 *) local;
        pkt6 = (struct in6_pktinfo *) CMSG_DATA(cmsg);
        ngx_memzero(pkt6, sizeof(struct in6_pktinfo));
        pkt6->ipi6_addr = sin6->sin6_addr;

        return CMSG_SPACE(sizeof(struct in6_pktinfo));
    }
#endif

    cmsg->cmsg_level = IPPROTO_IP;
    cmsg->cmsg_type = IP_PKTINFO;
    cmsg->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));

    sin = (struct sockaddr_in *) local;
    pkt = (struct in_pktinfo *) CMSG_DATA(cmsg);
    ngx_memzero(pkt, sizeof(struct in_pktinfo));
    pkt->ipi_spec_dst = sin->sin_addr;

    return CMSG_SPACE(sizeof(struct in_pktinfo));
}


static ngx_int_t
ngx_hopgate_get_srcaddr_cmsg(struct cmsghdr *cmsg, struct sockaddr *local)
{
    struct in_pktinfo     *pkt;
    struct sockaddr_in    *sin;
#if (NGX_HAVE_INET6)
    struct in6_pktinfo    *pkt6;
    struct sockaddr_in6   *sin6;
#endif

    if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO
        && local->sa_family == AF_INET)
    {
        pkt = (struct in_pktinfo *) CMSG_DATA(cmsg);
        sin = (struct sockaddr_in *) local;
        sin->sin_addr = pkt->ipi_addr;

        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO
        && local->sa_family == AF_INET6)
    {
        pkt6 = (struct in6_pktinfo *) CMSG_DATA(cmsg);
        sin6 = (struct sockaddr_in6 *) local;
        sin6->sin6_addr = pkt6->ipi6_addr;

        return NGX_OK;
    }
#endif

    return NGX_DECLINED;
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


/* counted in the master, where configurations are loaded */
static ngx_uint_t  ngx_hopgate_generations;


ngx_uint_t
ngx_hopgate_next_generation(void)
{
    return ++ngx_hopgate_generations;
}


/*
 * Two names lead to a worker: its process tag (for the ids of its
 * sessions), and its index in its configuration's generation, which lets
 * a worker steer a handshake to the worker the agent aims at when the
 * kernel cannot (one socket shared by the workers, no BPF), and an old
 * worker pass new handshakes to its successor after a reload.
 */
static ngx_int_t
ngx_hopgate_forward_init(ngx_cycle_t *cycle, ngx_hopgate_worker_t *w)
{
    ngx_uint_t           tries;
    socklen_t            len;
    ngx_connection_t    *c;
    struct sockaddr_un   sun;

    c = ngx_hopgate_forward_socket(cycle, w);
    if (c == NULL) {
        return NGX_ERROR;
    }

    for (tries = 0; tries < 16; tries++) {
        if (RAND_bytes(w->tag, NGX_HOPGATE_TAG_LEN) != 1) {
            ngx_close_connection(c);
            return NGX_ERROR;
        }

        ngx_hopgate_forward_name(&sun, &len, w->tag);

        if (bind(c->fd, (struct sockaddr *) &sun, len) == 0) {
            break;
        }

        if (ngx_socket_errno != NGX_EADDRINUSE) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                          "bind() of the hopgate forwarding socket failed");
            ngx_close_connection(c);
            return NGX_ERROR;
        }
    }

    w->forward = c;

    c = ngx_hopgate_forward_socket(cycle, w);
    if (c == NULL) {
        return NGX_ERROR;
    }

    ngx_hopgate_steer_name(&sun, &len, w->conf->generation, ngx_worker);

    if (bind(c->fd, (struct sockaddr *) &sun, len) == -1) {
        /* the name is taken (a module loaded anew): steering by hash only */
        ngx_log_error(NGX_LOG_INFO, cycle->log, ngx_socket_errno,
                      "hopgate: no steering socket for worker %ui",
                      ngx_worker);
        ngx_close_connection(c);
        return NGX_OK;
    }

    w->steer = c;

    return NGX_OK;
}


/* a unix datagram socket of ours: every sender is known (SO_PASSCRED) */
static ngx_connection_t *
ngx_hopgate_forward_socket(ngx_cycle_t *cycle, ngx_hopgate_worker_t *w)
{
    int                fd, on;
    ngx_connection_t  *c;

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "socket(AF_UNIX) failed");
        return NULL;
    }

    /* every datagram then comes with its sender's pid and uid */
    on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_socket_errno,
                      "setsockopt(SO_PASSCRED) failed");
        close(fd);
        return NULL;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NULL;
    }

    c->data = w;
    c->read->handler = ngx_hopgate_forward_recv;
    c->read->log = cycle->log;

    if (ngx_add_event(c->read, NGX_READ_EVENT, 0) == NGX_ERROR) {
        ngx_close_connection(c);
        return NULL;
    }

    return c;
}


static void
ngx_hopgate_steer_name(struct sockaddr_un *sun, socklen_t *len,
    ngx_uint_t generation, ngx_uint_t worker)
{
    int  n;

    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    n = snprintf(sun->sun_path + 1, sizeof(sun->sun_path) - 1,
                 "hopgate/%d/g%lu/w%lu", (int) ngx_parent,
                 (unsigned long) generation, (unsigned long) worker);

    *len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
}


ngx_int_t
ngx_hopgate_forward(ngx_hopgate_listener_t *l, const u_char *cid,
    const u_char *dgram, size_t len, const struct sockaddr *from,
    socklen_t fromlen)
{
    socklen_t           namelen;
    struct sockaddr_un  sun;

    ngx_hopgate_forward_name(&sun, &namelen, cid + 1);

    return ngx_hopgate_forward_to(l, &sun, namelen, dgram, len, from,
                                  fromlen);
}


ngx_int_t
ngx_hopgate_forward_steered(ngx_hopgate_listener_t *l, ngx_uint_t worker,
    const u_char *dgram, size_t len, const struct sockaddr *from,
    socklen_t fromlen)
{
    socklen_t           namelen;
    struct sockaddr_un  sun;

    ngx_hopgate_steer_name(&sun, &namelen,
                           ngx_hopgate_worker->conf->generation, worker);

    return ngx_hopgate_forward_to(l, &sun, namelen, dgram, len, from,
                                  fromlen);
}


/*
 * The next generation's worker of our index, or a later one's if several
 * reloads came quickly; NGX_DECLINED when none is there (nginx quits).
 */
ngx_int_t
ngx_hopgate_forward_successor(ngx_hopgate_listener_t *l, const u_char *dgram,
    size_t len, const struct sockaddr *from, socklen_t fromlen)
{
    ngx_uint_t          g;
    socklen_t           namelen;
    struct sockaddr_un  sun;

    /* the newest first: an older successor may itself be on its way out */
    for (g = 4; g >= 1; g--) {
        ngx_hopgate_steer_name(&sun, &namelen,
                               ngx_hopgate_worker->conf->generation + g,
                               ngx_worker);

        if (ngx_hopgate_forward_to(l, &sun, namelen, dgram, len, from,
                                   fromlen)
            == NGX_OK)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * The frame carries the listen index, the agent's address and the
 * address it sent to, so the receiver replies from the right socket and
 * address to the right peer.
 */
static ngx_int_t
ngx_hopgate_forward_to(ngx_hopgate_listener_t *l, struct sockaddr_un *sun,
    socklen_t namelen, const u_char *dgram, size_t len,
    const struct sockaddr *from, socklen_t fromlen)
{
    u_char  msg[NGX_HOPGATE_FRAME_MAX], *p;

    if (ngx_hopgate_worker->forward == NULL
        || fromlen > sizeof(ngx_sockaddr_t) || len > NGX_HOPGATE_DGRAM_MAX)
    {
        return NGX_DECLINED;
    }

    msg[0] = (u_char) l->index;
    msg[1] = (u_char) fromlen;
    msg[2] = (u_char) l->dst_len;
    p = ngx_cpymem(msg + 3, from, fromlen);
    p = ngx_cpymem(p, &l->dst, l->dst_len);
    p = ngx_cpymem(p, dgram, len);

    if (sendto(ngx_hopgate_worker->forward->fd, msg, p - msg, 0,
               (struct sockaddr *) sun, namelen)
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

    u_char                   msg[NGX_HOPGATE_FRAME_MAX], *from, *dst;
    u_char                   control[CMSG_SPACE(sizeof(struct ucred))];
    ssize_t                  n;
    size_t                   fromlen, dstlen;
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

        if (ngx_hopgate_forward_sender(w, &mh) != NGX_OK || n < 3) {
            continue;
        }

        fromlen = msg[1];
        dstlen = msg[2];

        if (fromlen == 0 || fromlen > sizeof(ngx_sockaddr_t)
            || dstlen > sizeof(ngx_sockaddr_t)
            || (size_t) n < 3 + fromlen + dstlen)
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

        from = msg + 3;
        dst = from + fromlen;

        ngx_memcpy(&sa, from, fromlen);
        ngx_memcpy(&l->dst, dst, dstlen);
        l->dst_len = (socklen_t) dstlen;

        ngx_hopgate_datagram_forwarded(l, dst + dstlen,
                                       (size_t) n - 3 - fromlen - dstlen,
                                       &sa.sockaddr, (socklen_t) fromlen);
        l->dst_len = 0;
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
