/*
 * The connection's internals, shared by the files that implement it:
 *
 *   hg_conn.c         lifecycle, datagram input, timers, events
 *   hg_session.c      session control: HELLO, HELLO_ACK, GOAWAY, CLOSE,
 *                     the stateless reset
 *   hg_packet_out.c   building outgoing packets: frame choice, encoding,
 *                     recovery records (hg_builder.h)
 *   hg_packet_in.c    decoding incoming packets and acting on each frame,
 *                     acknowledgement and loss of what we sent
 *   hg_conn_stream.c  the stream table and the public stream calls
 *   hg_path.c         where the server sends: path validation and the
 *                     anti-amplification limit after the peer moved
 *   hg_carrier_stream.c  the stream carrier: packets on a byte stream,
 *                     no DTLS, no recovery (hg.h)
 *   hg_listener.c     the server's stateless front door
 *
 * Nothing here is part of the public contract (hg.h).
 */

#ifndef HG_CONN_H
#define HG_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hg.h"
#include "hg_ackq.h"
#include "hg_cc.h"
#include "hg_codec.h"
#include "hg_dtls.h"
#include "hg_frame.h"
#include "hg_path.h"
#include "hg_recovery.h"
#include "hg_stream.h"


typedef enum {
    HG_CS_HANDSHAKE = 0,      /* DTLS in progress */
    HG_CS_HELLO,              /* client: HELLO sent; server: awaiting or
                                 deciding on HELLO */
    HG_CS_READY,              /* HELLO accepted: streams flow */
    HG_CS_CLOSING,            /* CLOSE sent or received: draining */
    HG_CS_CLOSED              /* over; the shell frees it */
} hg_conn_state_t;


/* the connection's view of a stream: the stream plus table/list links */
typedef struct hg_cstream_s  hg_cstream_t;

struct hg_cstream_s {
    hg_stream_t    *s;
    hg_cstream_t   *hnext;            /* hash chain */
    hg_cstream_t   *prev;             /* all streams, in opening order */
    hg_cstream_t   *next;
    unsigned        local:1;          /* we opened it */
    unsigned        readable_signalled:1;
    unsigned        want_write:1;     /* the app got a short write */
    unsigned        abandoned:1;      /* the app reset it */
    unsigned        closed:1;         /* STREAM_CLOSED emitted */
    uint32_t        ev_queued;        /* 1 << type of its queued events */
};


/*
 * The event queue cannot overflow, so no event is ever lost: it holds at
 * most one event of each type per owner (the connection, or one stream),
 * since a second one of a type already waiting is merged into it (the
 * shell reads the state when it takes the event: readable data, send
 * room, the peer's address, the stream limit), and the other types are
 * raised once per owner anyway. A stream raises nothing after
 * STREAM_CLOSED, and its record lives until the shell has taken that
 * event. So the queue never holds more than
 *
 *     HG_EV_CONN_KINDS + HG_EV_STREAM_KINDS * ncstreams
 *
 * events, and hg_cstream_create reserves that room before it creates a
 * stream: when memory is short, the stream is refused, not an event.
 */
#define HG_EV_CONN_KINDS    8     /* HANDSHAKE_DONE, HELLO, READY, REJECTED,
                                     STREAMS_AVAILABLE, GOAWAY,
                                     PEER_MIGRATED, CLOSED */
#define HG_EV_STREAM_KINDS  6     /* OPENED, READABLE, WRITABLE, RESET,
                                     STOP, CLOSED */

/* a queued event: the rest of hg_event_t is filled in when it is taken */
typedef struct {
    int64_t          stream_id;
    uint32_t         code;
    uint32_t         type;            /* hg_event_type_t */
} hg_event_slot_t;


/* the peer's limits on what we send, and ours on what it sends */
typedef struct {
    uint32_t   max_streams;
    uint64_t   stream_window;
    uint64_t   conn_window;
    hg_time_t  max_ack_delay;
} hg_params_t;


#define HG_TEXT_MAX  256

/*
 * The peer counts as gone after this many consecutive probe timeouts
 * (with the doubling, some 31 PTOs) if nothing at all was heard from it
 * for HG_DEAD_SILENCE either: a lossy path that still delivers now and
 * then is not dead.
 */
#define HG_PTO_DEAD      5
#define HG_DEAD_SILENCE  (3 * HG_SEC)

/* the stream carrier's state (hg_carrier_stream.c) */
typedef struct {
    uint8_t             *partial;         /* a packet split across reads */
    size_t               have;            /* its bytes so far, length
                                             included */
    uint64_t             next_pn;
    hg_time_t            last_sent;       /* the keepalive counts from it */
} hg_stream_carrier_t;


struct hg_conn_s {
    hg_config_t          cfg;
    hg_role_t            role;
    hg_conn_state_t      state;
    hg_carrier_t         carrier;
    hg_dtls_t           *dtls;            /* datagram carrier only */
    hg_stream_carrier_t  sc;              /* stream carrier only */

    uint8_t              cid[HG_CID_LEN];
    uint8_t              reset_token[HG_RESET_TOKEN_LEN];
    uint8_t              route_cid[HG_CID_LEN]; /* client, until HELLO_ACK */
    unsigned             has_cid:1;     /* client: from HELLO_ACK */
    unsigned             has_route_cid:1;
    int                  worker_hint;     /* client: steer byte, -1 none */

    struct sockaddr_storage  peer;        /* where datagrams go */
    socklen_t            peerlen;
    hg_path_t            path;            /* and whether it is proven */

    hg_time_t            now;             /* of the call in progress */
    hg_time_t            created;
    hg_time_t            last_recv;       /* last authenticated packet */
    hg_time_t            last_eliciting_sent;
    hg_time_t            closing_deadline;
    hg_time_t            last_close_sent;
    hg_time_t            handshake_sent;  /* our latest handshake datagram */

    /* transport */
    hg_cc_t              cc;
    hg_pacer_t           pacer;
    hg_recovery_t        rec;
    hg_ackq_t            ackq;
    int                  probes_due;      /* PTO probes to send */
    size_t               max_payload;     /* plaintext budget per packet */

    /* limits */
    hg_params_t          local;           /* what we allow the peer */
    hg_params_t          remote;          /* what the peer allows us */
    unsigned             remote_known:1;  /* HELLO / HELLO_ACK arrived */

    /* connection flow control */
    uint64_t             send_max;        /* peer's MAX_DATA */
    uint64_t             sent_new;        /* new stream bytes sent */
    uint64_t             recv_max;        /* MAX_DATA we advertised */
    uint64_t             recv_highest;    /* sum of streams' highest */
    uint64_t             recv_read;       /* sum of bytes read */

    /* streams */
    hg_cstream_t       **table;
    size_t               table_size;      /* power of two */
    hg_cstream_t        *first;           /* all live streams */
    hg_cstream_t        *last;
    hg_cstream_t        *cursor;          /* round-robin send position */
    size_t               nstreams;        /* open (not closed) */
    size_t               ncstreams;       /* records, closed ones awaiting
                                             release included */
    int64_t              next_local_id;
    uint64_t             local_opened;    /* streams we opened, ever */
    uint64_t             peer_opened;     /* streams the peer opened, ever */
    uint64_t             peer_closed;     /* peer streams finished */
    uint64_t             peer_max_streams; /* peer's MAX_STREAMS for us */
    uint64_t             local_max_streams; /* our MAX_STREAMS for it */

    /* control frames due */
    unsigned             hello_due:1;
    unsigned             hello_ack_due:1;
    unsigned             ping_due:1;
    unsigned             goaway_due:1;
    unsigned             close_due:1;
    unsigned             max_data_due:1;
    unsigned             max_streams_due:1;
    unsigned             local_goaway:1;  /* we said GOAWAY */
    unsigned             peer_goaway:1;   /* the peer said GOAWAY */
    unsigned             close_event_emitted:1;
    unsigned             authenticated_input:1; /* set per datagram */

    /* session control */
    hg_hello_t           hello;           /* client: ours; server: peer's */
    char                 hello_domain[HG_HELLO_TEXT_MAX + 1];
    char                 hello_key[HG_HELLO_TEXT_MAX + 1];
    char                 hello_version[64];
    char                 hello_agent_id[64];
    uint32_t             ack_code;        /* server: HELLO_ACK to send */
    char                 ack_text[HG_TEXT_MAX];
    uint64_t             session_id;
    uint32_t             worker_index;
    uint32_t             worker_count;
    char               **edges;
    size_t               nedges;
    uint32_t             close_code;
    char                 close_reason[HG_TEXT_MAX];
    uint32_t             goaway_code;
    char                 goaway_reason[HG_TEXT_MAX];

    /* events */
    hg_event_slot_t     *events;
    size_t               ev_cap;          /* power of two */
    uint32_t             ev_queued;       /* 1 << type, connection events */
    size_t               ev_head;
    size_t               ev_count;
    char                 ev_text[HG_TEXT_MAX];
    int64_t              release_id;      /* freed at the next event call */

    hg_conn_stats_t      stats;
};


/* hg_conn.c */
hg_conn_t *hg_conn_alloc(const hg_config_t *cfg, hg_role_t role,
    const struct sockaddr *peer, socklen_t peerlen, hg_time_t now);
hg_conn_t *hg_conn_client_alloc(const hg_config_t *cfg,
    const hg_hello_t *hello, const struct sockaddr *peer, socklen_t peerlen,
    hg_time_t now);
hg_conn_t *hg_conn_server_new(const hg_config_t *cfg, hg_dtls_t *dtls,
    const uint8_t cid[HG_CID_LEN], const struct sockaddr *peer,
    socklen_t peerlen, hg_time_t now);
/* queues an event (merged into a queued one of its type and owner) */
void hg_conn_event(hg_conn_t *c, hg_event_type_t type, int64_t stream_id,
    uint32_t code);
/* room for the events of nstreams stream records; HG_OK or HG_ERR_NOMEM */
int hg_conn_events_reserve(hg_conn_t *c, size_t nstreams);
void hg_conn_protocol_error(hg_conn_t *c, const char *why);
void hg_conn_set_remote_params(hg_conn_t *c, uint32_t max_streams,
    uint64_t stream_window, uint64_t conn_window, hg_time_t max_ack_delay);
void hg_conn_enter_closing(hg_conn_t *c, uint32_t code, const char *reason,
    int send_close, hg_time_t now);
void hg_conn_log(hg_conn_t *c, int level, const char *fmt, ...);
void hg_conn_set_closed(hg_conn_t *c);
size_t hg_copy_text(char *dst, size_t cap, const char *src);

/* hg_session.c */
void hg_conn_maybe_finish_goaway(hg_conn_t *c, hg_time_t now);
int hg_session_reset(hg_conn_t *c, const uint8_t *dgram, size_t len,
    const hg_prefix_t *prefix, hg_time_t now);
int hg_session_frame(hg_conn_t *c, hg_codec_kind_t kind,
    const hg_codec_bytes_t *body);
void hg_session_frame_lost(hg_conn_t *c, hg_sent_frame_type_t type);

/* hg_packet_out.c */
ssize_t hg_packet_build(hg_conn_t *c, uint8_t *out, size_t cap,
    hg_time_t now);
/* the largest STREAM frame payload a packet of this carrier holds */
size_t hg_packet_max_data(const hg_conn_t *c);
hg_time_t hg_packet_send_deadline(const hg_conn_t *c, hg_time_t now);
ssize_t hg_packet_build_probe(hg_conn_t *c, uint8_t *out, size_t cap,
    hg_time_t now, uint64_t data);
size_t hg_prefix_write(const hg_conn_t *c, uint8_t *out);

/* hg_carrier_stream.c: the stream carrier's side of hg_conn.c */
hg_time_t hg_stream_carrier_deadline(const hg_conn_t *c);
void hg_stream_carrier_timeout(hg_conn_t *c, hg_time_t now);
void hg_stream_carrier_free(hg_conn_t *c);

/* hg_packet_in.c */
void hg_packet_process(void *arg, const uint8_t *plain, size_t len);
void hg_packet_on_acked(void *ctx, const hg_sent_packet_t *pkt);
void hg_packet_on_lost(void *ctx, const hg_sent_packet_t *pkt);

/* hg_conn_stream.c */
int hg_cstreams_init(hg_conn_t *c);
void hg_cstreams_free(hg_conn_t *c);
hg_cstream_t *hg_cstream_find(const hg_conn_t *c, int64_t id);
hg_cstream_t *hg_cstream_create(hg_conn_t *c, int64_t id, int local);
void hg_cstream_check_closed(hg_conn_t *c, hg_cstream_t *cs);
void hg_cstream_signal_readable(hg_conn_t *c, hg_cstream_t *cs);
void hg_cstream_signal_writable(hg_conn_t *c, hg_cstream_t *cs);
void hg_cstream_release(hg_conn_t *c, int64_t id);
void hg_cstream_take_credit(hg_conn_t *c, hg_cstream_t *cs);
int hg_stream_is_local(const hg_conn_t *c, int64_t id);

#endif /* HG_CONN_H */
