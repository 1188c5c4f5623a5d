/*
 * The service manager's side channel (systemd's sd_notify protocol,
 * written here rather than linking libsystemd for four messages): one
 * datagram of "KEY=VALUE" lines to the unix socket in $NOTIFY_SOCKET.
 *
 *   READY=1      the first session to the edge is up: the tunnel serves
 *                (Type=notify units count as started from here on)
 *   STATUS=...   what `systemctl status` shows
 *   RELOADING=1  SIGHUP re-reads the configuration; READY=1 follows
 *   STOPPING=1   SIGTERM/SIGINT: draining
 *   WATCHDOG=1   every WATCHDOG_USEC / 2 while the main loop turns
 *
 * Without $NOTIFY_SOCKET every call does nothing. A message that cannot
 * be sent is dropped: the agent's work never depends on the manager.
 */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "agent.h"


static int                 notify_fd = -1;
static struct sockaddr_un  notify_addr;
static socklen_t           notify_len;
static int                 notify_ready;
static hg_time_t           notify_watchdog;      /* interval, or 0 */
static hg_time_t           notify_watchdog_next;


void
agent_notify_init(void)
{
    const char  *path, *usec;
    size_t       len;
    char        *end;
    long long    n;

    path = getenv("NOTIFY_SOCKET");
    if (path == NULL || (path[0] != '/' && path[0] != '@')) {
        return;
    }

    len = strlen(path);
    if (len < 2 || len >= sizeof(notify_addr.sun_path)) {
        return;
    }

    memset(&notify_addr, 0, sizeof(notify_addr));
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, path, len);

    if (path[0] == '@') {
        /* an abstract socket: a leading NUL, no terminating one */
        notify_addr.sun_path[0] = '\0';
    }

    notify_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len
                              + (path[0] == '/'));

    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd == -1) {
        return;
    }

    usec = getenv("WATCHDOG_USEC");
    if (usec != NULL) {
        errno = 0;
        n = strtoll(usec, &end, 10);
        if (errno == 0 && *end == '\0' && n > 0) {
            notify_watchdog = (hg_time_t) n * HG_SEC / 1000000 / 2;
        }
    }
}


static void
agent_notify(const char *fmt, ...)
{
    va_list  ap;
    char     msg[512];
    int      n;

    if (notify_fd == -1) {
        return;
    }

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (n <= 0) {
        return;
    }

    if ((size_t) n >= sizeof(msg)) {
        n = sizeof(msg) - 1;
    }

    while (sendto(notify_fd, msg, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT,
                  (struct sockaddr *) &notify_addr, notify_len) == -1
           && errno == EINTR)
    {
        /* retry */
    }
}


/* a session became ready: the first one makes the service ready */
void
agent_notify_connected(agent_t *a, int worker, unsigned workers)
{
    agent_notify("%sSTATUS=serving %s via %s (connected to worker %d/%u)",
                 notify_ready ? "" : "READY=1\n", a->cfg.domain,
                 a->cfg.server, worker, workers);
    notify_ready = 1;
}


void
agent_notify_reloading(void)
{
    if (notify_ready) {
        agent_notify("RELOADING=1\nSTATUS=re-reading the configuration");
    }
}


void
agent_notify_reloaded(agent_t *a)
{
    if (notify_ready) {
        agent_notify("READY=1\nSTATUS=serving %s via %s", a->cfg.domain,
                     a->cfg.server);
    }
}


void
agent_notify_stopping(void)
{
    agent_notify("STOPPING=1\nSTATUS=draining open streams");
}


void
agent_notify_status(const char *status)
{
    agent_notify("STATUS=%s", status);
}


void
agent_notify_tick(hg_time_t now)
{
    if (notify_watchdog == 0 || now < notify_watchdog_next) {
        return;
    }

    agent_notify("WATCHDOG=1");
    notify_watchdog_next = now + notify_watchdog;
}
