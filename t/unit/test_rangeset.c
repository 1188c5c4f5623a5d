/*
 * hg_rangeset: merging, removal, splitting, the interval cap.
 */

#include <stdlib.h>

#include "hg_rangeset.h"
#include "tap.h"


static void
test_merge(void)
{
    hg_rangeset_t  s;

    hg_rangeset_init(&s, 16);

    hg_rangeset_add(&s, 10, 20);
    hg_rangeset_add(&s, 30, 40);
    tap_is_int(s.n, 2, "two disjoint intervals");

    hg_rangeset_add(&s, 20, 30);
    tap_is_int(s.n, 1, "a touching interval merges all three");
    tap_ok(s.r[0].lo == 10 && s.r[0].hi == 40, "merged to [10, 40)");

    hg_rangeset_add(&s, 0, 5);
    hg_rangeset_add(&s, 3, 12);
    tap_ok(s.n == 1 && s.r[0].lo == 0 && s.r[0].hi == 40,
           "overlap on the left merges");

    tap_ok(hg_rangeset_contains(&s, 0, 40), "contains its whole span");
    tap_ok(!hg_rangeset_contains(&s, 39, 41), "not beyond its end");
    tap_is_int(hg_rangeset_size(&s), 40, "size counts values");

    hg_rangeset_free(&s);
}


static void
test_remove(void)
{
    hg_rangeset_t  s;

    hg_rangeset_init(&s, 16);
    hg_rangeset_add(&s, 0, 100);

    hg_rangeset_remove(&s, 40, 60);
    tap_ok(s.n == 2 && s.r[0].hi == 40 && s.r[1].lo == 60,
           "removing the middle splits");

    hg_rangeset_remove(&s, 0, 10);
    tap_ok(s.r[0].lo == 10, "removing a head trims");

    hg_rangeset_remove(&s, 30, 70);
    tap_ok(s.n == 2 && s.r[0].hi == 30 && s.r[1].lo == 70,
           "removing across a gap trims both sides");

    tap_ok(hg_rangeset_overlaps(&s, 25, 35), "overlap detected");
    tap_ok(!hg_rangeset_overlaps(&s, 30, 70), "the gap does not overlap");

    hg_rangeset_remove(&s, 0, 1000);
    tap_ok(hg_rangeset_empty(&s), "removing everything empties it");

    hg_rangeset_free(&s);
}


static void
test_cap(void)
{
    hg_rangeset_t  s;
    uint64_t       i;

    hg_rangeset_init(&s, 4);

    for (i = 0; i < 10; i++) {
        hg_rangeset_add(&s, i * 10, i * 10 + 5);
    }

    tap_is_int(s.n, 4, "the interval cap holds");
    tap_is_int(hg_rangeset_first(&s)->lo, 60, "the lowest were dropped");
    tap_is_int(hg_rangeset_last(&s)->hi, 95, "the highest is kept");

    hg_rangeset_free(&s);
}


static void
test_random(void)
{
    hg_rangeset_t  s;
    uint8_t        model[512];
    int            i, j, lo, hi, ok;

    hg_rangeset_init(&s, 1024);
    memset(model, 0, sizeof(model));
    srand(7);

    for (i = 0; i < 2000; i++) {
        lo = rand() % 500;
        hi = lo + rand() % 12;

        if (rand() % 3) {
            hg_rangeset_add(&s, lo, hi);
            memset(model + lo, 1, hi - lo);
        } else {
            hg_rangeset_remove(&s, lo, hi);
            memset(model + lo, 0, hi - lo);
        }
    }

    ok = 1;
    for (j = 0; j < 512; j++) {
        if (hg_rangeset_contains(&s, j, j + 1) != model[j]) {
            ok = 0;
        }
    }

    for (j = 1; j < (int) s.n; j++) {
        if (s.r[j - 1].hi >= s.r[j].lo) {
            ok = 0;
        }
    }

    tap_ok(ok, "2000 random adds and removes match a bitmap model");

    hg_rangeset_free(&s);
}


int
main(void)
{
    test_merge();
    test_remove();
    test_cap();
    test_random();

    return tap_done();
}
