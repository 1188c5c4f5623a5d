/*
 * Sorted interval sets; see hg_rangeset.h.
 */

#include <stdlib.h>
#include <string.h>

#include "hg_rangeset.h"


void
hg_rangeset_init(hg_rangeset_t *s, size_t max)
{
    memset(s, 0, sizeof(*s));
    s->max = max ? max : 1;
}


void
hg_rangeset_free(hg_rangeset_t *s)
{
    free(s->r);
    memset(s, 0, sizeof(*s));
}


void
hg_rangeset_clear(hg_rangeset_t *s)
{
    s->n = 0;
}


static int
hg_rangeset_reserve(hg_rangeset_t *s, size_t n)
{
    size_t       cap;
    hg_range_t  *r;

    if (n <= s->cap) {
        return 0;
    }

    cap = s->cap ? s->cap * 2 : 8;
    while (cap < n) {
        cap *= 2;
    }

    r = realloc(s->r, cap * sizeof(hg_range_t));
    if (r == NULL) {
        return -1;
    }

    s->r = r;
    s->cap = cap;
    return 0;
}


/* index of the first interval whose hi >= lo (it may touch or overlap) */
static size_t
hg_rangeset_lower(const hg_rangeset_t *s, uint64_t lo)
{
    size_t  a, b, m;

    a = 0;
    b = s->n;

    while (a < b) {
        m = a + (b - a) / 2;
        if (s->r[m].hi < lo) {
            a = m + 1;
        } else {
            b = m;
        }
    }

    return a;
}


int
hg_rangeset_add(hg_rangeset_t *s, uint64_t lo, uint64_t hi)
{
    size_t  i, j;

    if (lo >= hi) {
        return 0;
    }

    i = hg_rangeset_lower(s, lo);

    /* intervals i..j-1 touch or overlap [lo, hi): merge them */
    j = i;
    while (j < s->n && s->r[j].lo <= hi) {
        if (s->r[j].lo < lo) {
            lo = s->r[j].lo;
        }
        if (s->r[j].hi > hi) {
            hi = s->r[j].hi;
        }
        j++;
    }

    if (j > i) {
        s->r[i].lo = lo;
        s->r[i].hi = hi;
        memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof(hg_range_t));
        s->n -= j - i - 1;
        return 0;
    }

    if (hg_rangeset_reserve(s, s->n + 1) != 0) {
        return -1;
    }

    memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(hg_range_t));
    s->r[i].lo = lo;
    s->r[i].hi = hi;
    s->n++;

    if (s->n > s->max) {
        memmove(&s->r[0], &s->r[1], (s->n - 1) * sizeof(hg_range_t));
        s->n--;
    }

    return 0;
}


int
hg_rangeset_remove(hg_rangeset_t *s, uint64_t lo, uint64_t hi)
{
    size_t      i;
    hg_range_t  *r;

    if (lo >= hi) {
        return 0;
    }

    i = hg_rangeset_lower(s, lo + 1);

    while (i < s->n && s->r[i].lo < hi) {
        r = &s->r[i];

        if (r->lo < lo && r->hi > hi) {
            /* split */
            if (hg_rangeset_reserve(s, s->n + 1) != 0) {
                return -1;
            }
            r = &s->r[i];
            memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(hg_range_t));
            s->n++;
            s->r[i].hi = lo;
            s->r[i + 1].lo = hi;
            return 0;
        }

        if (r->lo < lo) {
            r->hi = lo;
            i++;
            continue;
        }

        if (r->hi > hi) {
            r->lo = hi;
            return 0;
        }

        memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(hg_range_t));
        s->n--;
    }

    return 0;
}


int
hg_rangeset_contains(const hg_rangeset_t *s, uint64_t lo, uint64_t hi)
{
    size_t  i;

    if (lo >= hi) {
        return 1;
    }

    i = hg_rangeset_lower(s, lo + 1);

    return i < s->n && s->r[i].lo <= lo && s->r[i].hi >= hi;
}


int
hg_rangeset_overlaps(const hg_rangeset_t *s, uint64_t lo, uint64_t hi)
{
    size_t  i;

    if (lo >= hi) {
        return 0;
    }

    i = hg_rangeset_lower(s, lo + 1);

    return i < s->n && s->r[i].lo < hi;
}


const hg_range_t *
hg_rangeset_first(const hg_rangeset_t *s)
{
    return s->n ? &s->r[0] : NULL;
}


const hg_range_t *
hg_rangeset_last(const hg_rangeset_t *s)
{
    return s->n ? &s->r[s->n - 1] : NULL;
}


uint64_t
hg_rangeset_size(const hg_rangeset_t *s)
{
    size_t    i;
    uint64_t  total;

    total = 0;
    for (i = 0; i < s->n; i++) {
        total += s->r[i].hi - s->r[i].lo;
    }

    return total;
}
