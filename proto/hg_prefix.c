/*
 * The cleartext datagram prefix: a version/flags byte and eight bytes that
 * are either the session's connection id or a steering hint. It carries no
 * secret; see docs/protocol.md.
 */

#include <string.h>

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


size_t
hg_prefix_reset(const uint8_t cid[HG_CID_LEN], uint8_t *out)
{
    out[0] = HG_PREFIX_VERSION | HG_PREFIX_FLAG_CID | HG_PREFIX_FLAG_RESET;
    memcpy(out + 1, cid, HG_CID_LEN);

    return HG_PREFIX_LEN;
}
