/*
 * The metrics zone (hopgate_metrics_zone): counters that every worker
 * adds to, per-domain series, per-session records for hopgate_status,
 * and a slot per worker process for its gauges, so a worker that dies
 * takes its gauges with it.
 *
 * The zone keeps its data across reloads (nginx hands the old zone to the
 * new cycle when name and size are unchanged): counters never reset while
 * the master runs.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_hopgate_module.h"


#define NGX_HOPGATE_METRICS_MAGIC     0x68676d33    /* the layout: "hgm3" */
#define NGX_HOPGATE_METRICS_OTHER     "_other"


/* histogram bounds, microseconds */
const uint64_t  ngx_hopgate_rtt_bounds[NGX_HOPGATE_METRICS_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000
};

const uint64_t  ngx_hopgate_registry_bounds[NGX_HOPGATE_METRICS_BUCKETS]
    = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    1000000
};


/* this process's view: NULL when there is no zone */
ngx_hopgate_metrics_zone_t    *ngx_hopgate_metrics;
ngx_hopgate_metrics_worker_t  *ngx_hopgate_metrics_slot;
ngx_uint_t                     ngx_hopgate_metrics_slot_index;
ngx_uint_t                     ngx_hopgate_metrics_max;


static void ngx_hopgate_metrics_free_slot(ngx_hopgate_metrics_zone_t *zone,
    ngx_uint_t slot);


/*
 * A zone from the previous cycle (same name and size) is taken over as it
 * is: that is what keeps the counters across a reload.
 */
ngx_int_t
ngx_hopgate_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_hopgate_metrics_zone_t  *ozone = data;

    size_t                        len;
    ngx_str_t                     other;
    ngx_hopgate_metrics_zone_t   *zone;
    ngx_hopgate_metrics_shctx_t  *sh;

    zone = shm_zone->data;

    if (ozone) {
        zone->shpool = ozone->shpool;
        zone->sh = ozone->sh;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(zone->shpool, sizeof(ngx_hopgate_metrics_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    zone->sh = sh;
    zone->shpool->data = sh;

    sh->magic = NGX_HOPGATE_METRICS_MAGIC;
    sh->created = ngx_time();

    ngx_rbtree_init(&sh->domains, &sh->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&sh->domain_list);
    ngx_queue_init(&sh->records);

    len = sizeof(" in hopgate_metrics_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in hopgate_metrics_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* running out of zone memory is counted, not logged each time */
    zone->shpool->log_nomem = 0;

    /* the catch-all entry exists from the start, outside the bound */
    ngx_str_set(&other, NGX_HOPGATE_METRICS_OTHER);

    len = offsetof(ngx_hopgate_metrics_domain_t, name) + other.len + 1;

    sh->other = ngx_slab_calloc(zone->shpool, len);
    if (sh->other == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(sh->other->name, other.data, other.len);
    sh->other->sn.str.data = sh->other->name;
    sh->other->sn.str.len = other.len;
    ngx_queue_init(&sh->other->queue);

    return NGX_OK;
}


/* a worker takes a slot for its gauges, and counts from now on */
ngx_int_t
ngx_hopgate_metrics_attach(ngx_cycle_t *cycle, ngx_shm_zone_t *shm_zone,
    ngx_uint_t max_domains)
{
    ngx_uint_t                    i;
    ngx_hopgate_metrics_zone_t   *zone;
    ngx_hopgate_metrics_shctx_t  *sh;

    zone = shm_zone->data;
    sh = zone->sh;

    if (sh->magic != NGX_HOPGATE_METRICS_MAGIC) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "hopgate_metrics_zone \"%V\" was made by another "
                      "version of the module: give the zone a new name",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_hopgate_metrics_reap(zone);

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        if (sh->workers[i].pid == 0) {
            ngx_memzero(&sh->workers[i], sizeof(ngx_hopgate_metrics_worker_t));
            sh->workers[i].pid = ngx_pid;
            sh->workers[i].worker = ngx_worker;
            ngx_hopgate_metrics_slot = &sh->workers[i];
            ngx_hopgate_metrics_slot_index = i;
            break;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (ngx_hopgate_metrics_slot == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "hopgate: %d worker processes report metrics "
                      "already; this one's sessions are not shown",
                      NGX_HOPGATE_METRICS_WORKERS);
    }

    ngx_hopgate_metrics = zone;
    ngx_hopgate_metrics_max = max_domains;

    return NGX_OK;
}


/* the worker exits: its gauges and sessions leave the zone */
void
ngx_hopgate_metrics_detach(void)
{
    ngx_hopgate_metrics_zone_t  *zone = ngx_hopgate_metrics;

    if (zone == NULL) {
        return;
    }

    ngx_hopgate_metrics = NULL;

    if (ngx_hopgate_metrics_slot) {
        ngx_shmtx_lock(&zone->shpool->mutex);
        ngx_hopgate_metrics_free_slot(zone, ngx_hopgate_metrics_slot_index);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        ngx_hopgate_metrics_slot = NULL;
    }
}


/* under the lock: the slot and the records of its sessions go */
static void
ngx_hopgate_metrics_free_slot(ngx_hopgate_metrics_zone_t *zone,
    ngx_uint_t slot)
{
    ngx_queue_t                   *q, *next;
    ngx_hopgate_metrics_record_t  *rec;

    for (q = ngx_queue_head(&zone->sh->records);
         q != ngx_queue_sentinel(&zone->sh->records);
         q = next)
    {
        next = ngx_queue_next(q);
        rec = ngx_queue_data(q, ngx_hopgate_metrics_record_t, queue);

        if (rec->slot == slot) {
            ngx_queue_remove(q);
            ngx_slab_free_locked(zone->shpool, rec);
        }
    }

    ngx_memzero(&zone->sh->workers[slot],
                sizeof(ngx_hopgate_metrics_worker_t));
}


void
ngx_hopgate_metrics_reap(ngx_hopgate_metrics_zone_t *zone)
{
    ngx_uint_t                     i;
    ngx_hopgate_metrics_worker_t  *mw;

    for (i = 0; i < NGX_HOPGATE_METRICS_WORKERS; i++) {
        mw = &zone->sh->workers[i];

        if (mw->pid == 0 || mw->pid == ngx_pid) {
            continue;
        }

        if (kill(mw->pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "hopgate: worker process %P is gone, dropping "
                          "its sessions from the metrics", mw->pid);
            ngx_hopgate_metrics_free_slot(zone, i);
        }
    }
}
