/*
 * A tiny TAP producer for the C unit tests, so prove runs them beside the
 * nginx tests. One process is one test file: call tap_ok/tap_is_* as often
 * as needed and end with tap_done(), which prints the plan and returns the
 * exit status.
 *
 * Every program has a watchdog, armed before main() runs: a program still
 * running after TAP_TIMEOUT seconds (define it before including this file
 * to change the default of 120; the environment's HOPGATE_UNIT_TIMEOUT
 * overrides both, 0 disables) reports "not ok", bails out with the reason
 * and exits 1, instead of hanging prove and CI.
 */

#ifndef HG_TAP_H
#define HG_TAP_H

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#ifndef TAP_TIMEOUT
#define TAP_TIMEOUT  120
#endif


static int       tap_count;
static int       tap_failed;
static unsigned  tap_timeout;


static void
tap_vreport(int pass, const char *fmt, va_list ap)
{
    tap_count++;
    if (!pass) {
        tap_failed++;
    }
    printf("%sok %d - ", pass ? "" : "not ", tap_count);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}


static inline int
tap_ok(int pass, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    tap_vreport(pass, fmt, ap);
    va_end(ap);
    return pass;
}


static inline void
tap_diag(const char *fmt, ...)
{
    va_list  ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}


#define tap_is_int(got, want, ...)                                           \
    do {                                                                     \
        long long  tap_g_ = (long long) (got), tap_w_ = (long long) (want);  \
        if (!tap_ok(tap_g_ == tap_w_, __VA_ARGS__)) {                        \
            tap_diag("  got: %lld", tap_g_);                                 \
            tap_diag("  expected: %lld", tap_w_);                            \
        }                                                                    \
    } while (0)


#define tap_is_str(got, want, ...)                                           \
    do {                                                                     \
        const char  *tap_g_ = (got), *tap_w_ = (want);                       \
        if (!tap_ok(tap_g_ != NULL && tap_w_ != NULL                         \
                    && strcmp(tap_g_, tap_w_) == 0, __VA_ARGS__))            \
        {                                                                    \
            tap_diag("  got: '%s'", tap_g_ ? tap_g_ : "(null)");             \
            tap_diag("  expected: '%s'", tap_w_ ? tap_w_ : "(null)");        \
        }                                                                    \
    } while (0)


static inline void
tap_skip(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
}


/* async-signal-safe: no stdio, no malloc */
static void
tap_write_str(const char *s)
{
    size_t   len;
    ssize_t  n;

    len = strlen(s);

    while (len > 0) {
        n = write(STDOUT_FILENO, s, len);
        if (n <= 0) {
            return;
        }

        s += n;
        len -= (size_t) n;
    }
}


static void
tap_write_uint(unsigned long v)
{
    char   buf[24];
    char  *p;

    p = buf + sizeof(buf) - 1;
    *p = '\0';

    do {
        *--p = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);

    tap_write_str(p);
}


static void
tap_watchdog_fired(int signo)
{
    (void) signo;

    tap_write_str("\nnot ok ");
    tap_write_uint((unsigned long) tap_count + 1);
    tap_write_str(" - watchdog: still running after ");
    tap_write_uint(tap_timeout);
    tap_write_str(" s\nBail out! timed out after ");
    tap_write_uint(tap_timeout);
    tap_write_str(" s (TAP_TIMEOUT, HOPGATE_UNIT_TIMEOUT)\n");

    _exit(1);
}


/* (re)arm the watchdog: seconds from now, 0 disarms it */
static inline void
tap_watchdog(unsigned seconds)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = tap_watchdog_fired;
    sigemptyset(&sa.sa_mask);
    (void) sigaction(SIGALRM, &sa, NULL);

    tap_timeout = seconds;
    alarm(seconds);
}


__attribute__((constructor)) static void
tap_watchdog_init(void)
{
    char           *end;
    const char     *env;
    unsigned long   v;

    env = getenv("HOPGATE_UNIT_TIMEOUT");

    if (env != NULL && *env != '\0') {
        v = strtoul(env, &end, 10);
        if (*end == '\0' && v <= 86400) {
            tap_watchdog((unsigned) v);
            return;
        }

        tap_diag("HOPGATE_UNIT_TIMEOUT=\"%s\" is not a number of seconds:"
                 " %u used", env, TAP_TIMEOUT);
    }

    tap_watchdog(TAP_TIMEOUT);
}


static inline int
tap_done(void)
{
    printf("1..%d\n", tap_count);
    if (tap_failed) {
        tap_diag("failed %d of %d tests", tap_failed, tap_count);
    }
    return tap_failed ? 1 : 0;
}

#endif /* HG_TAP_H */
