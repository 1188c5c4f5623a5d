/*
 * The unit programs' watchdog (tap.h): a program that hangs must end on
 * its own, fail in TAP terms and say why. This program runs itself again
 * as a child that hangs, with HOPGATE_UNIT_TIMEOUT=1, and watches it with
 * a deadline of its own (the child is killed if the watchdog fails).
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"


#define HG_WATCHDOG_DEADLINE_MS  10000


static int hg_run_hanging_child(char *self, char *out, size_t cap,
    int *status, long *elapsed_ms);
static long hg_now_ms(void);


int
main(int argc, char **argv)
{
    int    status;
    long   elapsed;
    char   out[4096];

    if (argc > 1 && strcmp(argv[1], "--hang") == 0) {
        tap_ok(1, "a test before the hang");

        for ( ;; ) {
            pause();
        }
    }

    if (hg_run_hanging_child(argv[0], out, sizeof(out), &status, &elapsed)
        != 0)
    {
        tap_ok(0, "the hanging child could be run");
        return tap_done();
    }

    tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 1,
           "a hanging program exits 1 on its own");
    tap_ok(elapsed >= 900 && elapsed < HG_WATCHDOG_DEADLINE_MS,
           "after HOPGATE_UNIT_TIMEOUT=1 s (took %ld ms)", elapsed);
    tap_ok(strstr(out, "ok 1 - a test before the hang\n") != NULL,
           "its earlier results are kept");
    tap_ok(strstr(out, "\nnot ok 2 - watchdog: still running after 1 s\n")
           != NULL, "it reports the timeout as a failed test");
    tap_ok(strstr(out, "\nBail out! timed out after 1 s") != NULL,
           "and bails out with the reason");

    if (tap_failed) {
        tap_diag("child's output:\n%s", out);
    }

    return tap_done();
}


static int
hg_run_hanging_child(char *self, char *out, size_t cap, int *status,
    long *elapsed_ms)
{
    int            fd[2];
    long           start, left;
    size_t         len;
    pid_t          pid;
    ssize_t        n;
    struct pollfd  pfd;
    char          *args[3];

    if (pipe(fd) != 0) {
        return -1;
    }

    start = hg_now_ms();

    pid = fork();
    if (pid < 0) {
        return -1;
    }

    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        setenv("HOPGATE_UNIT_TIMEOUT", "1", 1);
        args[0] = self;
        args[1] = "--hang";
        args[2] = NULL;
        execv("/proc/self/exe", args);
        _exit(127);
    }

    close(fd[1]);
    len = 0;

    for ( ;; ) {
        left = start + HG_WATCHDOG_DEADLINE_MS - hg_now_ms();
        if (left <= 0) {
            /* the watchdog did not fire: end the child ourselves */
            kill(pid, SIGKILL);
            break;
        }

        pfd.fd = fd[0];
        pfd.events = POLLIN;

        if (poll(&pfd, 1, (int) left) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }

        if (pfd.revents == 0) {
            continue;
        }

        n = read(fd[0], out + len, cap - 1 - len);
        if (n <= 0) {
            break;
        }

        len += (size_t) n;
    }

    out[len] = '\0';
    close(fd[0]);

    if (waitpid(pid, status, 0) != pid) {
        return -1;
    }

    *elapsed_ms = hg_now_ms() - start;

    return 0;
}


static long
hg_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
