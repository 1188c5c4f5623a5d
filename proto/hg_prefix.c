/*
 * The cleartext datagram prefix: a version/flags byte and thirteen bytes
 * that are either the session's connection id or a steering hint; and the
 * stateless reset token of an id. The prefix carries no secret and is not
 * authenticated: it only routes. See docs/protocol.md.
 */

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hg.h"


int
hg_prefix_parse(const uint8_t *dgram, size_t len, hg_prefix_t *p)
{
    if (len < HG_PREFIX_LEN) {
        return HG_ERR;
    }

    if ((dgram[0] & HG_PREFIX_VERSION_MASK) != HG_PREFIX_VERSION) {
        return HG_ERR;
    }

    memset(p, 0, sizeof(*p));
    p->flags = dgram[0] & ~HG_PREFIX_VERSION_MASK;

    if ((p->flags & ~(HG_PREFIX_FLAG_CID | HG_PREFIX_FLAG_STEER
                      | HG_PREFIX_FLAG_RESET)) != 0)
    {
        return HG_ERR;
    }

    if (p->flags & HG_PREFIX_FLAG_CID) {
        memcpy(p->cid, dgram + 1, HG_CID_LEN);
    }

    p->steer = dgram[1];

    return HG_OK;
}


uint8_t
hg_cid_worker(const uint8_t cid[HG_CID_LEN])
{
    return cid[0];
}



int
hg_reset_token(const uint8_t key[32], const uint8_t cid[HG_CID_LEN],
    uint8_t token[HG_RESET_TOKEN_LEN])
{
    static const char  label[] = "hopgate stateless reset";
    uint8_t            in[sizeof(label) + HG_CID_LEN];
    uint8_t            mac[EVP_MAX_MD_SIZE];
    unsigned int       maclen;

    memcpy(in, label, sizeof(label));
    memcpy(in + sizeof(label), cid, HG_CID_LEN);

    if (HMAC(EVP_sha256(), key, 32, in, sizeof(in), mac, &maclen) == NULL
        || maclen < HG_RESET_TOKEN_LEN)
    {
        return HG_ERR;
    }

    memcpy(token, mac, HG_RESET_TOKEN_LEN);

    return HG_OK;
}
