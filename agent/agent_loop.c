/*
 * The agent's event loop: one epoll set for the session sockets, the local
 * connections and the signals, woken at the earliest engine deadline.
 */

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"


hg_time_t
agent_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (hg_time_t) ts.tv_sec * HG_SEC + (hg_time_t) ts.tv_nsec / 1000;
}


int
agent_watch(agent_t *a, int fd, uint32_t events, agent_fd_t *tag)
{
    struct epoll_event  ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = tag;

    return epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev);
}


int
agent_rewatch(agent_t *a, int fd, uint32_t events, agent_fd_t *tag)
{
    struct epoll_event  ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = tag;

    return epoll_ctl(a->epfd, EPOLL_CTL_MOD, fd, &ev);
}


void
agent_unwatch(agent_t *a, int fd)
{
    (void) epoll_ctl(a->epfd, EPOLL_CTL_DEL, fd, NULL);
}


int
agent_loop_init(agent_t *a)
{
    sigset_t  mask;

    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (a->epfd == -1) {
        agent_log(AGENT_LOG_ERROR, "epoll_create1() failed: %s",
                  strerror(errno));
        return -1;
    }

    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);

    if (sigprocmask(SIG_BLOCK, &mask, NULL) == -1) {
        return -1;
    }

    signal(SIGPIPE, SIG_IGN);

    a->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a->sigfd == -1) {
        agent_log(AGENT_LOG_ERROR, "signalfd() failed: %s", strerror(errno));
        return -1;
    }

    a->sig_tag.kind = AGENT_FD_SIGNAL;
    a->sig_tag.ptr = a;

    return agent_watch(a, a->sigfd, EPOLLIN, &a->sig_tag);
}


static void
agent_signal(agent_t *a)
{
    struct signalfd_siginfo  si;

    while (read(a->sigfd, &si, sizeof(si)) == sizeof(si)) {

        switch (si.ssi_signo) {

        case SIGHUP:
            agent_log(AGENT_LOG_INFO, "SIGHUP: re-reading the configuration");
            agent_notify_reloading();
            agent_sessions_reload(a);
            agent_notify_reloaded(a);
            break;

        case SIGTERM:
        case SIGINT:
            if (a->draining) {
                agent_log(AGENT_LOG_INFO, "second signal: exiting now");
                a->done = 1;
                break;
            }
            agent_log(AGENT_LOG_INFO, "%s: draining open streams (at most "
                      "%llu s)", si.ssi_signo == SIGTERM ? "SIGTERM"
                                                         : "SIGINT",
                      (unsigned long long) (AGENT_DRAIN_TIMEOUT / HG_SEC));
            agent_notify_stopping();
            agent_sessions_drain(a);
            break;
        }
    }
}


static int
agent_timeout_ms(agent_t *a, hg_time_t now)
{
    hg_time_t  deadline, wait;

    deadline = agent_sessions_deadline(a);
    if (deadline == HG_TIME_INFINITE) {
        return 1000;
    }

    if (deadline <= now) {
        return 0;
    }

    /* round up: waking early would only spin */
    wait = (deadline - now + HG_MS - 1) / HG_MS;

    return wait > 1000 ? 1000 : (int) wait;
}


int
agent_loop_run(agent_t *a)
{
    struct epoll_event   events[64];
    agent_fd_t          *tag;
    int                  i, n;

    while (!a->done) {
        n = epoll_wait(a->epfd, events, 64, agent_timeout_ms(a, agent_now()));

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            agent_log(AGENT_LOG_ERROR, "epoll_wait() failed: %s",
                      strerror(errno));
            return AGENT_EXIT_ERROR;
        }

        for (i = 0; i < n; i++) {
            tag = events[i].data.ptr;

            switch (tag->kind) {

            case AGENT_FD_SESSION:
                agent_session_readable(tag->ptr);
                break;

            case AGENT_FD_STREAM:
                agent_stream_io(tag->ptr, events[i].events);
                break;

            case AGENT_FD_SIGNAL:
                agent_signal(a);
                break;

            case AGENT_FD_METRICS:
                agent_metrics_io(tag->ptr, events[i].events);
                break;

            case AGENT_FD_PROBE:
                agent_target_probe_io(tag->ptr);
                break;

            case AGENT_FD_TUNNEL:
                agent_tcp_io(tag->ptr, events[i].events);
                break;
            }
        }

        agent_sessions_tick(a, agent_now());

        /* streams closed in this batch: no pending event points at them */
        agent_streams_reap(a);
        agent_metrics_tick(a, agent_now());
        agent_notify_tick(agent_now());
    }

    return a->exit_code;
}
