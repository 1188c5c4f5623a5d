/*
 * hopgate-agent: serves a domain's tunnelled requests from a local target.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include "agent.h"


void
agent_split_host(const char *hostport, char *host, size_t len)
{
    const char  *colon;
    size_t       hostlen;

    colon = strrchr(hostport, ':');
    hostlen = colon ? (size_t) (colon - hostport) : strlen(hostport);

    if (hostport[0] == '[' && hostlen >= 2) {
        snprintf(host, len, "%.*s", (int) hostlen - 2, hostport + 1);
    } else {
        snprintf(host, len, "%.*s", (int) hostlen, hostport);
    }
}


int
agent_is_ip(const char *host)
{
    struct in6_addr  a6;

    return inet_pton(AF_INET, host, &a6) == 1
           || inet_pton(AF_INET6, host, &a6) == 1;
}


int
agent_setup_tls(agent_t *a, const agent_config_t *cfg)
{
    hg_tls_client_opts_t  opts;
    SSL_CTX              *ctx;
    char                  err[256], host[256];

    /* the identity the certificate must prove, even for an IP address */
    agent_split_host(cfg->server, host, sizeof(host));

    memset(&opts, 0, sizeof(opts));
    opts.ca_file = cfg->ca;
    opts.pin_sha256 = cfg->pin;
    opts.insecure = cfg->insecure;
    opts.server_name = cfg->server_name ? cfg->server_name : host;

    ctx = hg_tls_client_ctx(&opts, err, sizeof(err));
    if (ctx == NULL) {
        agent_log(AGENT_LOG_ERROR, "%s", err);
        return -1;
    }

    if (a->ssl) {
        /* live sessions keep their own reference */
        SSL_CTX_free(a->ssl);
    }

    a->ssl = ctx;
    a->engine.mtu = cfg->mtu;

    /* the TCP carrier's edge, TLS and proxy, unless UDP is all */
    if (cfg->transport != AGENT_TRANSPORT_UDP && agent_tcp_setup(a, cfg) != 0)
    {
        return -1;
    }

    return 0;
}


/* the key is a secret: a file others can read leaks it */
void
agent_check_key_file(const agent_config_t *cfg)
{
    if (cfg->key_file != NULL
        && (cfg->key_file_mode & (S_IRGRP | S_IROTH)) != 0)
    {
        agent_log(AGENT_LOG_WARN, "the key file \"%s\" is readable by "
                  "group or others (mode %04o): chmod 600 it",
                  cfg->key_file, cfg->key_file_mode);
    }
}


static int
agent_init(agent_t *a)
{
    const char  *why;

    hg_config_defaults(&a->engine);
    a->engine.cb.random = agent_random;
    a->engine.cb.ctx = a;
    a->probe_fd = -1;

    agent_check_key_file(&a->cfg);

    if (agent_setup_tls(a, &a->cfg) != 0
        || agent_set_target(a, a->cfg.to) != 0)
    {
        return -1;
    }

    why = hg_config_check(&a->engine);
    if (why != NULL) {
        agent_log(AGENT_LOG_ERROR, "engine configuration: %s", why);
        return -1;
    }

    if (a->cfg.insecure) {
        agent_log(AGENT_LOG_WARN, "--insecure: the edge's certificate is "
                  "not verified");
    }

    return agent_loop_init(a);
}


int
main(int argc, char **argv)
{
    static agent_t  agent;
    char            err[512];
    int             cmd, rc;

    if (argc >= 2 && strcmp(argv[1], "admin") == 0) {
        return agent_admin_main(argc - 1, argv + 1);
    }

    if (argc >= 2 && strcmp(argv[1], "keygen") == 0) {
        return agent_keygen_main(argc - 1, argv + 1);
    }

    cmd = agent_config_load(&agent.cfg, argc, argv, err, sizeof(err));

    switch (cmd) {
    case AGENT_CMD_HELP:
        agent_usage(argv[0]);
        return AGENT_EXIT_OK;

    case AGENT_CMD_VERSION:
        printf("hopgate-agent %s\n", HG_VERSION_STRING);
        return AGENT_EXIT_OK;

    case AGENT_CMD_RUN:
        break;

    default:
        fprintf(stderr, "hopgate-agent: %s\n", err);
        return AGENT_EXIT_USAGE;
    }

    agent.argc = argc;
    agent.argv = argv;
    agent_log_init(agent.cfg.log_level);
    agent_notify_init();

    if (agent_init(&agent) != 0) {
        return AGENT_EXIT_ERROR;
    }

    agent_log(AGENT_LOG_INFO, "hopgate-agent %s: serving %s from %s via %s",
              HG_VERSION_STRING, agent.cfg.domain, agent.cfg.to,
              agent.cfg.server);

    agent.started = time(NULL);

    if (agent_metrics_start(&agent) != 0
        || agent_sessions_start(&agent) != 0)
    {
        return AGENT_EXIT_ERROR;
    }

    agent_target_probe(&agent);

    rc = agent_loop_run(&agent);

    agent_target_probe_stop(&agent);
    agent_metrics_stop(&agent);
    agent_sessions_free(&agent);
    agent_streams_reap(&agent);
    SSL_CTX_free(agent.ssl);
    SSL_CTX_free(agent.tls);
    agent_config_free(&agent.cfg);

    if (rc == AGENT_EXIT_OK) {
        agent_log(AGENT_LOG_INFO, "stopped");
    }

    return rc;
}
