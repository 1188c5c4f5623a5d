/*
 * hopgate-agent settings: command-line flags, HOP_CLIENT_* environment
 * variables and a config file, in that order of precedence.
 */

#ifndef HG_AGENT_CONFIG_H
#define HG_AGENT_CONFIG_H

#include <stddef.h>


#define AGENT_LOG_ERROR  0
#define AGENT_LOG_WARN   1
#define AGENT_LOG_INFO   2
#define AGENT_LOG_DEBUG  3

/* the engine keeps the key in a 256-byte buffer: longer ones are refused */
#define AGENT_KEY_MAX    255
#define AGENT_KEY_PREFIX "hg_"          /* then 64 hex digits */
#define AGENT_KEY_HEX    64


/* how sessions reach the edge: --transport */
#define AGENT_TRANSPORT_AUTO  0         /* UDP, falling back to TCP */
#define AGENT_TRANSPORT_UDP   1
#define AGENT_TRANSPORT_TCP   2
#define AGENT_UDP_RETRY_DEFAULT  60     /* seconds */

typedef struct {
    char    *server;            /* HOST:PORT of the edge's hopgate_listen */
    int      transport;         /* AGENT_TRANSPORT_* */
    char    *tcp_server;        /* HOST:PORT of its hopgate_tunnel, or
                                   NULL: --server's host, port 443 */
    char    *proxy;             /* http://[user:pass@]host:port, or NULL:
                                   HTTPS_PROXY (unless NO_PROXY) */
    int      udp_retry;         /* auto on TCP: seconds between UDP tries */
    char    *server_name;       /* the name to check, or NULL: the host */
    char    *domain;
    char    *key;
    char    *key_file;          /* where the key was read from, or NULL */
    unsigned key_file_mode;     /* its permission bits */
    int      key_layer;         /* the layer that set the key */
    char    *to;                /* HOST:PORT of the local target */
    char    *ca;
    char    *pin;
    int      insecure;
    size_t   mtu;
    int      log_level;
    char    *metrics;           /* HOST:PORT for GET /metrics, or NULL */
    char    *config;            /* the file the settings were read from */
} agent_config_t;

typedef enum {
    AGENT_CMD_RUN = 0,
    AGENT_CMD_HELP,
    AGENT_CMD_VERSION
} agent_cmd_t;

/*
 * Parses argv, the environment and the config file into cfg. Returns the
 * command to run, or -1 with a one-line message in err (usage error).
 */
int agent_config_load(agent_config_t *cfg, int argc, char **argv,
    char *err, size_t errlen);

void agent_config_free(agent_config_t *cfg);
void agent_usage(const char *prog);

#endif /* HG_AGENT_CONFIG_H */
