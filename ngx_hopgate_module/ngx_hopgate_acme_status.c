/*
 * What ACME looks like from outside: its series in /metrics (orders by
 * result, domains by certificate state, orders running, seconds to expiry
 * per domain, bounded by hopgate_metrics_max_domains like the other
 * per-domain series) and each domain's certificate in the admin API's
 * list.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_hopgate_acme.h"


static const char  *ngx_hopgate_acme_results[NGX_HOPGATE_ACME_NRESULTS] = {
    "issued", "failed", "rate_limited"
};


ngx_int_t
ngx_hopgate_acme_metrics(ngx_hopgate_body_t *out, ngx_uint_t max_domains)
{
    time_t                      now, soonest, left;
    ngx_int_t                   rc;
    ngx_uint_t                  i, n, other, states[NGX_HOPGATE_ACME_NSTATES];
    ngx_queue_t                *q;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;

    if (ngx_hopgate_acme_conf == NULL) {
        return NGX_OK;
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    rc = ngx_hopgate_body_printf(out,
        "# HELP hopgate_acme_orders_total ACME orders finished, by "
        "result.\n"
        "# TYPE hopgate_acme_orders_total counter\n");

    for (i = 0; rc == NGX_OK && i < NGX_HOPGATE_ACME_NRESULTS; i++) {
        rc = ngx_hopgate_body_printf(out,
                 "hopgate_acme_orders_total{result=\"%s\"} %uA\n",
                 ngx_hopgate_acme_results[i], shm->results[i]);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_memzero(states, sizeof(states));
    now = ngx_time();

    ngx_shmtx_lock(&shpool->mutex);

    for (q = ngx_queue_head(&shm->domains);
         q != ngx_queue_sentinel(&shm->domains);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);
        if (d->registered && d->state < NGX_HOPGATE_ACME_NSTATES) {
            states[d->state]++;
        }
    }

    rc = ngx_hopgate_body_printf(out,
        "# HELP hopgate_acme_certificates Registered domains by the state "
        "of their certificate.\n"
        "# TYPE hopgate_acme_certificates gauge\n");

    for (i = 0; rc == NGX_OK && i < NGX_HOPGATE_ACME_NSTATES; i++) {
        rc = ngx_hopgate_body_printf(out,
                 "hopgate_acme_certificates{state=\"%s\"} %ui\n",
                 ngx_hopgate_acme_state_name(i), states[i]);
    }

    if (rc == NGX_OK) {
        rc = ngx_hopgate_body_printf(out,
            "# HELP hopgate_acme_orders_running ACME orders under way "
            "(at most hopgate_acme_max_orders).\n"
            "# TYPE hopgate_acme_orders_running gauge\n"
            "hopgate_acme_orders_running %ui\n"
            "# HELP hopgate_acme_certificate_expiry_seconds Seconds until "
            "a domain's certificate expires (_other: the soonest of the "
            "rest).\n"
            "# TYPE hopgate_acme_certificate_expiry_seconds gauge\n",
            shm->running);
    }

    n = 0;
    other = 0;
    soonest = 0;

    for (q = ngx_queue_head(&shm->domains);
         rc == NGX_OK && q != ngx_queue_sentinel(&shm->domains);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_hopgate_acme_domain_t, link);

        if (!d->registered || d->version == 0) {
            continue;
        }

        left = d->not_after - now;

        if (n++ < max_domains) {
            rc = ngx_hopgate_body_printf(out,
                     "hopgate_acme_certificate_expiry_seconds"
                     "{domain=\"%V\"} %T\n", &d->sn.str, left);
            continue;
        }

        if (other++ == 0 || left < soonest) {
            soonest = left;
        }
    }

    if (rc == NGX_OK && other) {
        rc = ngx_hopgate_body_printf(out,
                 "hopgate_acme_certificate_expiry_seconds"
                 "{domain=\"_other\"} %T\n", soonest);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


/* "certificate": {state, expires, next_try, error} of one listed domain */
void
ngx_hopgate_acme_admin_row(json_t *item, ngx_str_t *domain)
{
    u_char                      buf[64], *p;
    json_t                     *cert;
    ngx_slab_pool_t            *shpool;
    ngx_hopgate_acme_shm_t     *shm;
    ngx_hopgate_acme_domain_t  *d;

    if (ngx_hopgate_acme_conf == NULL) {
        return;
    }

    shm = ngx_hopgate_acme_shm(&shpool);

    cert = json_object();
    if (cert == NULL) {
        return;
    }

    ngx_shmtx_lock(&shpool->mutex);

    d = ngx_hopgate_acme_domain_find(shm, domain->data, domain->len);

    json_object_set_new(cert, "state", json_string(
        ngx_hopgate_acme_state_name(d ? d->state : NGX_HOPGATE_ACME_NONE)));

    if (d && d->version) {
        p = ngx_http_time(buf, d->not_after);
        json_object_set_new(cert, "expires",
                            json_stringn((char *) buf, p - buf));

    } else {
        json_object_set_new(cert, "expires", json_null());
    }

    if (d && d->error[0]) {
        json_object_set_new(cert, "error", json_string((char *) d->error));
        json_object_set_new(cert, "failures", json_integer(d->failures));

        if (d->next_try > ngx_time()) {
            p = ngx_http_time(buf, d->next_try);
            json_object_set_new(cert, "next_try",
                                json_stringn((char *) buf, p - buf));
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    json_object_set_new(item, "certificate", cert);
}
