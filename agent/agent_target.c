/*
 * The local target: its address, resolved at start and on SIGHUP, and a
 * probe that connects to it once then, so that a target that is not
 * running is reported when the agent starts rather than by the first
 * visitor's 502. The probe is non-blocking (a remote target may take a
 * while to answer or time out) and only warns: the target may well
 * start after the agent.
 */

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"


static void agent_target_probe_done(agent_t *a, int err);


int
agent_set_target(agent_t *a, const char *to)
{
    struct addrinfo   hints, *res;
    char              host[256];
    const char       *colon;
    int               rc;

    agent_split_host(to, host, sizeof(host));
    colon = strrchr(to, ':');

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        agent_log(AGENT_LOG_ERROR, "cannot resolve the local target %s: %s",
                  to, gai_strerror(rc));
        return -1;
    }

    memcpy(&a->target, res->ai_addr, res->ai_addrlen);
    a->targetlen = res->ai_addrlen;
    freeaddrinfo(res);

    return 0;
}


void
agent_target_probe(agent_t *a)
{
    int  fd;

    agent_target_probe_stop(a);

    fd = socket(a->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK
                                     | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return;
    }

    if (connect(fd, (struct sockaddr *) &a->target, a->targetlen) == 0) {
        close(fd);
        agent_target_probe_done(a, 0);
        return;
    }

    if (errno != EINPROGRESS) {
        close(fd);
        agent_target_probe_done(a, errno);
        return;
    }

    a->probe_tag.kind = AGENT_FD_PROBE;
    a->probe_tag.ptr = a;

    if (agent_watch(a, fd, EPOLLOUT, &a->probe_tag) != 0) {
        close(fd);
        return;
    }

    a->probe_fd = fd;
}


/* the connect() finished (or the kernel gave up on it) */
void
agent_target_probe_io(agent_t *a)
{
    int        err;
    socklen_t  len;

    if (a->probe_fd == -1) {
        return;
    }

    err = 0;
    len = sizeof(err);

    if (getsockopt(a->probe_fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
        err = errno;
    }

    agent_target_probe_stop(a);
    agent_target_probe_done(a, err);
}


void
agent_target_probe_stop(agent_t *a)
{
    if (a->probe_fd == -1) {
        return;
    }

    agent_unwatch(a, a->probe_fd);
    close(a->probe_fd);
    a->probe_fd = -1;
}


static void
agent_target_probe_done(agent_t *a, int err)
{
    if (err == 0) {
        agent_log(AGENT_LOG_DEBUG, "the local target %s accepts connections",
                  a->cfg.to);

    } else if (err == ECONNREFUSED) {
        agent_log(AGENT_LOG_WARN, "the local target %s refuses connections: "
                  "is it running? (requests fail until it listens)",
                  a->cfg.to);

    } else {
        agent_log(AGENT_LOG_WARN, "the local target %s cannot be reached: %s "
                  "(requests fail until it can)", a->cfg.to, strerror(err));
    }
}
