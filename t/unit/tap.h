/*
 * A tiny TAP producer for the C unit tests, so prove runs them beside the
 * nginx tests. One process is one test file: call tap_ok/tap_is_* as often
 * as needed and end with tap_done(), which prints the plan and returns the
 * exit status.
 */

#ifndef HG_TAP_H
#define HG_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>


static int  tap_count;
static int  tap_failed;


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


/*
 * A requirement known not to hold yet: reported as "not ok ... # TODO"
 * (prove lists it, and an unexpected pass) without failing the run. Use
 * only with the reason in the report, never to hide a regression.
 */
static inline int
tap_todo(int pass, const char *reason, const char *fmt, ...)
{
    va_list  ap;

    tap_count++;
    printf("%sok %d - ", pass ? "" : "not ", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" # TODO %s\n", reason);
    fflush(stdout);

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
