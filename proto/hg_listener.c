/*
 * The server's front door: datagrams that match no connection. The DTLS
 * cookie exchange happens here without any per-peer state; a returning
 * ClientHello with a valid cookie becomes a connection whose id encodes
 * this worker. Stateless resets for unknown ids are made here too.
 */

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "hg_conn.h"


#define HG_CID_DRAWS  8


struct hg_listener_s {
    hg_config_t           cfg;
    hg_dtls_listener_t   *dtls;
    uint8_t               cid_prefix[HG_CID_LEN];
    size_t                prefix_len;
    uint8_t               reset_key[32];
    hg_listener_stats_t   stats;
};


static int hg_listener_reset_key(SSL_CTX *ctx, uint8_t key[32]);
static int hg_listener_draw_cid(hg_listener_t *l, uint8_t cid[HG_CID_LEN]);


hg_listener_t *
hg_listener_new(const hg_config_t *cfg, SSL_CTX *ctx,
    const uint8_t *cid_prefix, size_t prefix_len, hg_time_t now)
{
    hg_listener_t  *l;

    if (hg_config_check(cfg) != NULL
        || prefix_len > HG_CID_LEN - HG_CID_RANDOM_MIN)
    {
        return NULL;
    }

    l = calloc(1, sizeof(hg_listener_t));
    if (l == NULL) {
        return NULL;
    }

    if (hg_listener_reset_key(ctx, l->reset_key) != HG_OK) {
        free(l);
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
    OPENSSL_cleanse(l->reset_key, sizeof(l->reset_key));
    free(l);
}


/*
 * The reset key is a hash of the certificate's private key under a label
 * of its own: nothing to store, the same in every worker and after every
 * restart (so a new nginx can end the sessions of the one that died), and
 * as secret as the key it comes from.
 */
static int
hg_listener_reset_key(SSL_CTX *ctx, uint8_t key[32])
{
    static const char   label[] = "hopgate stateless reset key v1";
    int                 len, rc;
    uint8_t            *der, *p;
    EVP_PKEY           *pkey;
    EVP_MD_CTX         *md;

    pkey = SSL_CTX_get0_privatekey(ctx);
    if (pkey == NULL) {
        return HG_ERR;
    }

    len = i2d_PrivateKey(pkey, NULL);
    if (len <= 0) {
        return HG_ERR;
    }

    der = malloc((size_t) len);
    if (der == NULL) {
        return HG_ERR;
    }

    p = der;
    rc = HG_ERR;
    md = EVP_MD_CTX_new();

    if (i2d_PrivateKey(pkey, &p) == len && md != NULL
        && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
        && EVP_DigestUpdate(md, label, sizeof(label)) == 1
        && EVP_DigestUpdate(md, der, (size_t) len) == 1
        && EVP_DigestFinal_ex(md, key, NULL) == 1)
    {
        rc = HG_OK;
    }

    EVP_MD_CTX_free(md);
    OPENSSL_cleanse(der, (size_t) len);
    free(der);

    return rc;
}


/* this worker's prefix, then random bytes; drawn again while in use */
static int
hg_listener_draw_cid(hg_listener_t *l, uint8_t cid[HG_CID_LEN])
{
    int  draws;

    memcpy(cid, l->cid_prefix, l->prefix_len);

    for (draws = 0; draws < HG_CID_DRAWS; draws++) {
        if (l->cfg.cb.random(l->cfg.cb.ctx, cid + l->prefix_len,
                             HG_CID_LEN - l->prefix_len)
            != 0)
        {
            return HG_ERR;
        }

        if (l->cfg.cb.cid_taken == NULL
            || !l->cfg.cb.cid_taken(l->cfg.cb.ctx, cid))
        {
            return HG_OK;
        }

        l->stats.cid_collisions++;
    }

    return HG_ERR;
}


size_t
hg_listener_reset(const hg_listener_t *l, const uint8_t cid[HG_CID_LEN],
    size_t trigger_len, uint8_t *out)
{
    if (trigger_len <= HG_RESET_LEN) {
        return 0;
    }

    out[0] = HG_PREFIX_VERSION | HG_PREFIX_FLAG_CID | HG_PREFIX_FLAG_RESET;
    memcpy(out + 1, cid, HG_CID_LEN);

    if (hg_reset_token(l->reset_key, cid, out + HG_PREFIX_LEN) != HG_OK) {
        return 0;
    }

    return HG_RESET_LEN;
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

    if (hg_listener_draw_cid(l, cid) != HG_OK) {
        hg_dtls_free(dtls);
        return HG_ERR;
    }

    c = hg_conn_server_new(&l->cfg, dtls, cid, peer, peerlen, now);
    if (c == NULL) {
        hg_dtls_free(dtls);
        return HG_ERR;
    }

    if (hg_reset_token(l->reset_key, cid, c->reset_token) != HG_OK) {
        hg_conn_free(c);
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
