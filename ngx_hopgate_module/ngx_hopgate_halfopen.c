/*
 * Half-open handshakes: sessions whose peer returned a valid DTLS cookie
 * but whose handshake is not done. Each holds some 50 KB (OpenSSL's
 * handshake state and our flight) for a peer that has shown only that it
 * can receive at its address, so a worker takes at most
 * NGX_HOPGATE_HALFOPEN_MAX of them, and at most
 * NGX_HOPGATE_HALFOPEN_PER_ADDR from one IP address, apart from its
 * established sessions. A ClientHello beyond either limit is dropped
 * before any work, the cookie exchange included; the client's own
 * retransmission tries again. The engine gives a silent peer up 2.8 s
 * after the server's flight (hg_dtls.h).
 *
 * Freed handshakes leave the heap full of holes that glibc keeps: after
 * a burst, malloc_trim() returns them, so the worker's RSS comes back.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#if (NGX_LINUX)
#include <malloc.h>
#endif

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_HALFOPEN_MAX       1024
#define NGX_HOPGATE_HALFOPEN_PER_ADDR  32

/* half-open handshakes freed before the heap is trimmed */
#define NGX_HOPGATE_HALFOPEN_TRIM      256


/* the half-open handshakes of one IP address */
struct ngx_hopgate_halfopen_s {
    ngx_rbtree_node_t            node;       /* key: crc32 of the address */
    ngx_uint_t                   count;
    size_t                       len;
    u_char                       addr[16];
};


static ngx_hopgate_halfopen_t *ngx_hopgate_halfopen_find(u_char *addr,
    size_t len, ngx_rbtree_key_t key);
static size_t ngx_hopgate_halfopen_addr(struct sockaddr *sa, socklen_t len,
    u_char *addr);
static void ngx_hopgate_halfopen_release(ngx_hopgate_session_t *s);


static ngx_rbtree_t       ngx_hopgate_halfopen_tree;
static ngx_rbtree_node_t  ngx_hopgate_halfopen_sentinel;
static ngx_uint_t         ngx_hopgate_halfopen_total;
static ngx_uint_t         ngx_hopgate_halfopen_nfreed;
static time_t             ngx_hopgate_halfopen_warned;


/* NGX_OK: a handshake from sa may begin; NGX_DECLINED: drop its hello */
ngx_int_t
ngx_hopgate_halfopen_admit(struct sockaddr *sa, socklen_t len)
{
    size_t                    n;
    u_char                    addr[16];
    const char               *which;
    ngx_hopgate_halfopen_t   *h;

    if (ngx_hopgate_halfopen_tree.root == NULL) {
        ngx_rbtree_init(&ngx_hopgate_halfopen_tree,
                        &ngx_hopgate_halfopen_sentinel,
                        ngx_rbtree_insert_value);
    }

    which = NULL;

    if (ngx_hopgate_halfopen_total >= NGX_HOPGATE_HALFOPEN_MAX) {
        which = "in this worker";

    } else {
        n = ngx_hopgate_halfopen_addr(sa, len, addr);
        h = ngx_hopgate_halfopen_find(addr, n, ngx_crc32_short(addr, n));

        if (h != NULL && h->count >= NGX_HOPGATE_HALFOPEN_PER_ADDR) {
            which = "from this address";
        }
    }

    if (which == NULL) {
        return NGX_OK;
    }

    if (ngx_hopgate_halfopen_warned != ngx_time()) {
        ngx_hopgate_halfopen_warned = ngx_time();
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "hopgate: too many half-open handshakes %s "
                      "(%ui in all), dropping a ClientHello", which,
                      ngx_hopgate_halfopen_total);
    }

    return NGX_DECLINED;
}


/* the session's handshake has begun: it counts against its address */
ngx_int_t
ngx_hopgate_halfopen_add(ngx_hopgate_session_t *s, struct sockaddr *sa,
    socklen_t len)
{
    size_t                   n;
    u_char                   addr[16];
    ngx_rbtree_key_t         key;
    ngx_hopgate_halfopen_t  *h;

    n = ngx_hopgate_halfopen_addr(sa, len, addr);
    key = ngx_crc32_short(addr, n);

    h = ngx_hopgate_halfopen_find(addr, n, key);

    if (h == NULL) {
        h = ngx_alloc(sizeof(ngx_hopgate_halfopen_t), ngx_cycle->log);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->node.key = key;
        h->count = 0;
        h->len = n;
        ngx_memcpy(h->addr, addr, n);
        ngx_rbtree_insert(&ngx_hopgate_halfopen_tree, &h->node);
    }

    h->count++;
    ngx_hopgate_halfopen_total++;
    s->halfopen = h;

    return NGX_OK;
}


/* DTLS is up: the session is no longer half-open */
void
ngx_hopgate_halfopen_established(ngx_hopgate_session_t *s)
{
    ngx_hopgate_halfopen_release(s);
}


/* the session's engine state is freed (call after hg_conn_free) */
void
ngx_hopgate_halfopen_freed(ngx_hopgate_session_t *s)
{
    if (s->halfopen == NULL) {
        return;
    }

    ngx_hopgate_halfopen_release(s);

    ngx_hopgate_halfopen_nfreed++;

    /*
     * A burst is over, or a steady stream has freed a good many: the
     * pages they held go back to the system.
     */
    if (ngx_hopgate_halfopen_nfreed < NGX_HOPGATE_HALFOPEN_TRIM
        && (ngx_hopgate_halfopen_total > 0
            || ngx_hopgate_halfopen_nfreed < NGX_HOPGATE_HALFOPEN_TRIM / 16))
    {
        return;
    }

    ngx_hopgate_halfopen_nfreed = 0;

#if (NGX_LINUX)
    (void) malloc_trim(0);
#endif
}


static void
ngx_hopgate_halfopen_release(ngx_hopgate_session_t *s)
{
    ngx_hopgate_halfopen_t  *h;

    h = s->halfopen;
    if (h == NULL) {
        return;
    }

    s->halfopen = NULL;
    ngx_hopgate_halfopen_total--;

    if (--h->count == 0) {
        ngx_rbtree_delete(&ngx_hopgate_halfopen_tree, &h->node);
        ngx_free(h);
    }
}


static ngx_hopgate_halfopen_t *
ngx_hopgate_halfopen_find(u_char *addr, size_t len, ngx_rbtree_key_t key)
{
    ngx_rbtree_node_t       *node, *sentinel;
    ngx_hopgate_halfopen_t  *h;

    node = ngx_hopgate_halfopen_tree.root;
    sentinel = ngx_hopgate_halfopen_tree.sentinel;

    while (node != sentinel) {
        if (key != node->key) {
            node = key < node->key ? node->left : node->right;
            continue;
        }

        h = (ngx_hopgate_halfopen_t *) node;

        if (h->len == len && ngx_memcmp(h->addr, addr, len) == 0) {
            return h;
        }

        /* equal keys are inserted to the right */
        node = node->right;
    }

    return NULL;
}


/* the IP address alone: every port of one host counts together */
static size_t
ngx_hopgate_halfopen_addr(struct sockaddr *sa, socklen_t len, u_char *addr)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    switch (sa->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        ngx_memcpy(addr, &sin6->sin6_addr, 16);
        return 16;
#endif

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        ngx_memcpy(addr, &sin->sin_addr, 4);
        return 4;

    default:
        len = len < 16 ? len : 16;
        ngx_memcpy(addr, sa, len);
        return len;
    }
}
