/*
 * Wire error codes: names for logs and the agent's exit policy.
 */

#include "hg.h"


const char *
hg_code_name(uint32_t code)
{
    switch (code) {
    case HG_CODE_OK:                return "ok";
    case HG_CODE_NORMAL:            return "normal";
    case HG_CODE_IDLE_TIMEOUT:      return "idle timeout";
    case HG_CODE_PROTOCOL:          return "protocol violation";
    case HG_CODE_INTERNAL:          return "internal error";
    case HG_CODE_BAD_KEY:           return "bad key";
    case HG_CODE_UNKNOWN_DOMAIN:    return "unknown domain";
    case HG_CODE_DISABLED:          return "domain disabled";
    case HG_CODE_REGISTRY_DOWN:     return "registry unavailable";
    case HG_CODE_DNS_GATE:          return "dns gate";
    case HG_CODE_REVOKED:           return "key revoked";
    case HG_CODE_BUSY:              return "edge busy";
    case HG_CODE_DUPLICATE:         return "duplicate session";
    case HG_CODE_GOING_AWAY:        return "going away";
    case HG_CODE_HANDSHAKE_TIMEOUT: return "handshake timeout";
    case HG_CODE_TLS:               return "tls failure";
    case HG_CODE_RESET:             return "session lost by the edge";
    case HG_CODE_CARRIER:           return "tcp carrier failure";
    default:                        return "unknown";
    }
}


int
hg_code_is_auth_failure(uint32_t code)
{
    switch (code) {
    case HG_CODE_BAD_KEY:
    case HG_CODE_UNKNOWN_DOMAIN:
    case HG_CODE_DISABLED:
    case HG_CODE_REVOKED:
        return 1;
    default:
        return 0;
    }
}
