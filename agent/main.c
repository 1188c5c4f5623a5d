/*
 * hopgate-agent: serves a domain's tunnelled requests from a local target.
 */

#include <stdio.h>
#include <stdlib.h>

#include "agent_config.h"
#include "hg.h"


int
main(int argc, char **argv)
{
    agent_config_t  cfg;
    char            err[512];
    int             cmd;

    cmd = agent_config_load(&cfg, argc, argv, err, sizeof(err));

    switch (cmd) {
    case AGENT_CMD_HELP:
        agent_usage(argv[0]);
        return 0;

    case AGENT_CMD_VERSION:
        printf("hopgate-agent %s\n", HG_VERSION_STRING);
        return 0;

    case AGENT_CMD_RUN:
        break;

    default:
        fprintf(stderr, "hopgate-agent: %s\n", err);
        return 2;
    }

    fprintf(stderr, "hopgate-agent: the tunnel is not implemented yet\n");
    agent_config_free(&cfg);
    return 1;
}
