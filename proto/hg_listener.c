/*
 * The server's front door: datagrams that match no connection. The DTLS
 * cookie exchange happens here without any per-peer state; a returning
 * ClientHello with a valid cookie becomes a connection whose id encodes
 * this worker.
 */

#include <stdlib.h>
#include <string.h>

#include "hg_conn.h"


struct hg_listener_s {
    hg_config_t           cfg;
    hg_dtls_listener_t   *dtls;
    uint8_t               cid_prefix[HG_CID_LEN];
    size_t                prefix_len;
    hg_listener_stats_t   stats;
};


hg_listener_t *
hg_listener_new(const hg_config_t *cfg, SSL_CTX *ctx,
    const uint8_t *cid_prefix, size_t prefix_len, hg_time_t now)
{
    hg_listener_t  *l;

    if (hg_config_check(cfg) != NULL || prefix_len >= HG_CID_LEN) {
        return NULL;
    }

    l = calloc(1, sizeof(hg_listener_t));
    if (l == NULL) {
        return NULL;
    }

    l->cfg = *cfg;
    memcpy(l->cid_prefix, cid_prefix, prefix_len);
    l->prefix_len = prefix_len;

    l->dtls = hg_dtls_listener_new(ctx, cfg->mtu - HG_PREFIX_LEN, &cfg->cb,
                                   now);
    if (l->dtls == NULL) {
        free(l);
        return NULL;
    }

    return l;
}


void
hg_listener_free(hg_listener_t *l)
{
    if (l == NULL) {
        return;
    }

    hg_dtls_listener_free(l->dtls);
    free(l);
}


int
hg_listener_accept(hg_listener_t *l, const uint8_t *dgram, size_t len,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now,
    uint8_t *reply, size_t *replylen, hg_conn_t **conn)
{
    hg_prefix_t   prefix;
    hg_dtls_t    *dtls;
    hg_conn_t    *c;
    uint8_t       cid[HG_CID_LEN];
    size_t        n;
    int           rc, cookie_failed;

    *conn = NULL;
    l->stats.datagrams++;

    if (len > HG_MTU_MAX || *replylen < l->cfg.mtu
        || hg_prefix_parse(dgram, len, &prefix) != HG_OK)
    {
        l->stats.malformed++;
        return HG_ERR;
    }

    n = *replylen - HG_PREFIX_LEN;
    cookie_failed = 0;
    dtls = NULL;

    rc = hg_dtls_listen(l->dtls, dgram + HG_PREFIX_LEN, len - HG_PREFIX_LEN,
                        peer, peerlen, now, reply + HG_PREFIX_LEN, &n,
                        &cookie_failed, &dtls);

    if (rc == HG_AGAIN) {
        /* the HelloVerifyRequest carries no connection id yet */
        memset(reply, 0, HG_PREFIX_LEN);
        reply[0] = HG_PREFIX_VERSION;
        *replylen = n + HG_PREFIX_LEN;
        l->stats.cookies_sent++;
        return HG_AGAIN;
    }

    if (rc != HG_OK) {
        if (cookie_failed) {
            l->stats.cookie_failures++;
        } else {
            l->stats.malformed++;
        }
        return HG_ERR;
    }

    memcpy(cid, l->cid_prefix, l->prefix_len);
    if (l->cfg.cb.random(l->cfg.cb.ctx, cid + l->prefix_len,
                         HG_CID_LEN - l->prefix_len)
        != 0)
    {
        hg_dtls_free(dtls);
        return HG_ERR;
    }

    c = hg_conn_server_new(&l->cfg, dtls, cid, peer, peerlen, now);
    if (c == NULL) {
        hg_dtls_free(dtls);
        return HG_ERR;
    }

    l->stats.accepted++;
    *conn = c;

    return HG_OK;
}


const hg_listener_stats_t *
hg_listener_stats(const hg_listener_t *l)
{
    return &l->stats;
}
