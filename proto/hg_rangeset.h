/*
 * A set of disjoint half-open uint64 intervals [lo, hi), kept sorted and
 * merged. Used for received packet numbers, acknowledged and lost stream
 * bytes, and reassembly coverage. The number of intervals is capped: when
 * an insert would exceed the cap, the lowest interval is dropped (callers
 * for which that is wrong check hg_rangeset_full first).
 */

#ifndef HG_RANGESET_H
#define HG_RANGESET_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    uint64_t  lo;
    uint64_t  hi;                 /* exclusive */
} hg_range_t;

typedef struct {
    hg_range_t  *r;
    size_t       n;
    size_t       cap;             /* allocated */
    size_t       max;             /* cap on n */
} hg_rangeset_t;


void hg_rangeset_init(hg_rangeset_t *s, size_t max);
void hg_rangeset_free(hg_rangeset_t *s);
void hg_rangeset_clear(hg_rangeset_t *s);

/* adds [lo, hi); 0 on success, -1 on allocation failure */
int hg_rangeset_add(hg_rangeset_t *s, uint64_t lo, uint64_t hi);
/* removes [lo, hi) from the set; -1 on allocation failure (split) */
int hg_rangeset_remove(hg_rangeset_t *s, uint64_t lo, uint64_t hi);

/* 1 when every value of [lo, hi) is in the set */
int hg_rangeset_contains(const hg_rangeset_t *s, uint64_t lo, uint64_t hi);
/* 1 when any value of [lo, hi) is in the set */
int hg_rangeset_overlaps(const hg_rangeset_t *s, uint64_t lo, uint64_t hi);

/* the first interval, or NULL when empty */
const hg_range_t *hg_rangeset_first(const hg_rangeset_t *s);
const hg_range_t *hg_rangeset_last(const hg_rangeset_t *s);

/* total number of values covered */
uint64_t hg_rangeset_size(const hg_rangeset_t *s);

static inline int
hg_rangeset_empty(const hg_rangeset_t *s)
{
    return s->n == 0;
}

static inline int
hg_rangeset_full(const hg_rangeset_t *s)
{
    return s->n >= s->max;
}

#endif /* HG_RANGESET_H */
