/*
 * Engine configuration: defaults and validation.
 */

#include <string.h>

#include "hg.h"


void
hg_config_defaults(hg_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));

    cfg->mtu = HG_MTU_DEFAULT;
    cfg->idle_timeout = 60 * HG_SEC;
    cfg->keepalive = 15 * HG_SEC;
    cfg->handshake_timeout = 10 * HG_SEC;
    cfg->max_streams = 256;
    cfg->stream_window = 1024 * 1024;
    cfg->conn_window = 16 * 1024 * 1024;
    cfg->stream_send_buffer = 1024 * 1024;
    cfg->max_out_of_order = 16 * 1024 * 1024;
    cfg->max_ack_ranges = 64;
    cfg->max_frames = 64;
    cfg->max_ack_delay = 25 * HG_MS;
    cfg->congestion = "newreno";
}


const char *
hg_config_check(const hg_config_t *cfg)
{
    if (cfg->mtu < HG_MTU_MIN || cfg->mtu > HG_MTU_MAX) {
        return "mtu must be between 1200 and 1452";
    }

    if (cfg->keepalive == 0 || cfg->idle_timeout <= cfg->keepalive) {
        return "idle timeout must exceed the keepalive interval";
    }

    if (cfg->handshake_timeout < HG_SEC) {
        return "handshake timeout must be at least 1 s";
    }

    if (cfg->max_streams == 0 || cfg->max_streams > 65536) {
        return "max streams must be between 1 and 65536";
    }

    if (cfg->stream_window < 16384 || cfg->stream_window > (1ULL << 30)) {
        return "stream window must be between 16k and 1g";
    }

    if (cfg->conn_window < cfg->stream_window) {
        return "connection window must be at least the stream window";
    }

    if (cfg->stream_send_buffer < 16384) {
        return "stream send buffer must be at least 16k";
    }

    if (cfg->max_ack_ranges < 4 || cfg->max_frames < 8) {
        return "ack range and frame caps are too small";
    }

    if (cfg->congestion == NULL || strcmp(cfg->congestion, "newreno") != 0) {
        return "unknown congestion controller (known: newreno)";
    }

    if (cfg->cb.random == NULL) {
        return "a random callback is required";
    }

    return NULL;
}
