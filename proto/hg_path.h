/*
 * Path validation and the anti-amplification limit (RFC 9000 8.2, 9.3):
 * where the edge sends a session's datagrams once the agent's packets
 * come from a new address (a NAT rebinding, or a forgery).
 *
 * Only the newest authenticated packet that carries more than path
 * frames moves the session, and then only provisionally: until a
 * PATH_RESPONSE from the new address echoes one of our PATH_CHALLENGEs,
 * the edge sends there at most HG_PATH_AMPLIFICATION times the bytes it
 * received from there. When no echo comes within max(3 PTO,
 * HG_PATH_TIMEOUT_MIN), or when the newest packet comes from the last
 * validated address again, the session goes back to that address. That
 * address is challenged too, once per move (RFC 9000 9.3.2), so a peer
 * still there answers, from there, even if it had nothing to send: an
 * attacker without the keys can only forward copies of real packets, so
 * a forged move buys it three times the bytes it forwarded, and about a
 * round trip of the session's time.
 *
 * Both roles answer PATH_CHALLENGE; the agent's view of the edge never
 * moves. HG_EV_PEER_MIGRATED is raised whenever the address datagrams go
 * to (hg_conn_peer) changes, in either direction.
 */

#ifndef HG_PATH_H
#define HG_PATH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hg.h"


#define HG_PATH_AMPLIFICATION  3
#define HG_PATH_CHALLENGES     3          /* recent challenges an echo may
                                             match */
#define HG_PATH_TIMEOUT_MIN    HG_SEC     /* give a new path this long at
                                             least */

typedef struct {
    /* the last address proven to reach the peer (the handshake's first) */
    struct sockaddr_storage  validated;
    socklen_t                validated_len;

    /* while c->peer is not validated: what went each way since it moved */
    uint64_t                 received;
    uint64_t                 sent;

    uint64_t                 challenges[HG_PATH_CHALLENGES];
    unsigned                 nchallenges;     /* sent in this validation */
    hg_time_t                started;
    hg_time_t                abandon_at;
    hg_time_t                retry_at;        /* next challenge */
    uint64_t                 response;        /* the data to echo */
    uint64_t                 back_challenge;  /* to the validated address */

    unsigned                 validating:1;
    unsigned                 challenge_due:1;
    unsigned                 back_due:1;      /* challenge the validated
                                                 address */
    unsigned                 back_sent:1;
    unsigned                 response_due:1;
    unsigned                 starved:1;       /* allowance used up: wait
                                                 for the peer */

    /* set while one datagram's packets are processed */
    unsigned                 input_newest:1;  /* a newest non-probing
                                                 packet */
    unsigned                 input_echo:1;    /* it echoed our challenge */
    unsigned                 input_back_echo:1;   /* or the one sent to the
                                                     validated address */
} hg_path_t;


/* the peer address the connection was created with counts as validated */
void hg_path_init(hg_conn_t *c);

/* an authenticated datagram of len bytes came from `from` */
void hg_path_on_datagram(hg_conn_t *c, const struct sockaddr *from,
    socklen_t fromlen, size_t len);

/* frames received */
void hg_path_on_challenge(hg_conn_t *c, uint64_t data);
void hg_path_on_response(hg_conn_t *c, uint64_t data);

/*
 * Bytes that may be sent to the peer now: SIZE_MAX when its address is
 * validated, else what the anti-amplification limit leaves.
 */
size_t hg_path_allowance(const hg_conn_t *c);
void hg_path_on_sent(hg_conn_t *c, size_t len);
/* the allowance stopped a datagram that was due: wait for the peer */
void hg_path_set_starved(hg_conn_t *c);
int hg_path_starved(const hg_conn_t *c);

/* a PATH_CHALLENGE or PATH_RESPONSE is waiting to be sent */
int hg_path_frames_due(const hg_conn_t *c);
/* fresh challenge data; HG_ERR (and the path abandoned) without any */
int hg_path_challenge_data(hg_conn_t *c, uint64_t *data);
void hg_path_challenge_sent(hg_conn_t *c, uint64_t data);

/* the challenge for the validated address (see hg_conn_send_probe) */
int hg_path_back_due(const hg_conn_t *c);
const struct sockaddr *hg_path_validated(const hg_conn_t *c,
    socklen_t *len);
void hg_path_back_sent(hg_conn_t *c, uint64_t data);

hg_time_t hg_path_deadline(const hg_conn_t *c);
void hg_path_timeout(hg_conn_t *c, hg_time_t now);

#endif /* HG_PATH_H */
