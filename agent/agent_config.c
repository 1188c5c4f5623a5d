/*
 * hopgate-agent settings. One table names every setting once: its flag,
 * its HOP_CLIENT_* variable, its config-file key, and how to parse it.
 * Layers apply in order file, environment, flags: the last one wins.
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <arpa/inet.h>

#include <openssl/crypto.h>

#include "agent_config.h"
#include "hg.h"


typedef enum {
    OPT_STRING,
    OPT_PIN,
    OPT_BOOL,
    OPT_MTU,
    OPT_LEVEL,
    OPT_HOSTPORT,
    OPT_TARGET,                 /* HOST:PORT, or a PORT on 127.0.0.1 */
    OPT_NAME,                   /* a host name or an IP address */
    OPT_DOMAIN,
    OPT_KEY,
    OPT_KEY_FILE,               /* a file holding the key */
    OPT_TRANSPORT,              /* auto, udp or tcp */
    OPT_SECONDS                 /* 1 to 3600 */
} opt_type_t;

/* where a value came from: a later layer wins */
#define LAYER_FILE  1
#define LAYER_ENV   2
#define LAYER_FLAG  3

/* a key file holds one line; anything much longer is not one */
#define KEY_FILE_MAX  4096

/* systemd's LoadCredential=key:FILE: $CREDENTIALS_DIRECTORY/key */
#define KEY_CREDENTIAL  "key"

typedef struct {
    const char   *name;         /* --name and the config file key */
    const char   *env;
    opt_type_t    type;
    size_t        offset;
    const char   *arg;          /* placeholder in --help; NULL: a switch */
    const char   *help;
    const char   *env_note;     /* after the variable in --help */
} opt_def_t;

#define OFF(f)  offsetof(agent_config_t, f)

static const opt_def_t  agent_opts[] = {
    { "server", "HOP_CLIENT_SERVER_ADDR", OPT_HOSTPORT, OFF(server),
      "HOST:PORT", "the edge's hopgate_listen address (UDP)", NULL },
    { "transport", "HOP_CLIENT_TRANSPORT", OPT_TRANSPORT, OFF(transport),
      "MODE", "auto (default: UDP, else TLS/TCP), udp or tcp", NULL },
    { "tcp-server", "HOP_CLIENT_TCP_SERVER", OPT_HOSTPORT, OFF(tcp_server),
      "HOST:PORT", "the edge's hopgate_tunnel (default: --server's host, "
      "port 443)", NULL },
    { "proxy", "HOP_CLIENT_PROXY", OPT_STRING, OFF(proxy),
      "URL", "TCP through http://[USER:PASS@]HOST:PORT (default: "
      "HTTPS_PROXY unless NO_PROXY)", NULL },
    { "udp-retry", "HOP_CLIENT_UDP_RETRY", OPT_SECONDS, OFF(udp_retry),
      "SECONDS", "auto on TCP: try UDP again this often (default 60)",
      NULL },
    { "server-name", "HOP_CLIENT_SERVER_NAME", OPT_NAME, OFF(server_name),
      "NAME", "certificate name to check (default: --server's host)", NULL },
    { "domain", "HOP_CLIENT_DOMAIN", OPT_DOMAIN, OFF(domain),
      "DOMAIN", "the domain this agent serves", NULL },
    { "key-file", "HOP_CLIENT_KEY_FILE", OPT_KEY_FILE, OFF(key_file),
      "FILE", "read the domain's client API key from FILE", NULL },
    { "key", "HOP_CLIENT_API_KEY", OPT_KEY, OFF(key),
      "KEY", "or: the key itself (shows in ps; prefer --key-file)", NULL },
    { "to", "HOP_CLIENT_LOCAL_TARGET", OPT_TARGET, OFF(to),
      "[HOST:]PORT", "the local target (a PORT alone: on 127.0.0.1)", NULL },
    { "ca", "HOP_CLIENT_CA", OPT_STRING, OFF(ca),
      "FILE", "verify the edge's certificate against this CA bundle", NULL },
    { "pin", "HOP_CLIENT_PIN", OPT_PIN, OFF(pin),
      "SHA256", "or: accept only this SHA-256 of the edge's public key", NULL },
    { "insecure", "HOP_CLIENT_INSECURE", OPT_BOOL, OFF(insecure),
      NULL, "skip certificate verification (testing only)", NULL },
    { "mtu", "HOP_CLIENT_MTU", OPT_MTU, OFF(mtu),
      "BYTES", "UDP payload budget, 1200..1452 (default 1200)", NULL },
    { "log-level", "HOP_CLIENT_LOG_LEVEL", OPT_LEVEL, OFF(log_level),
      "LEVEL", "error, warn, info (default) or debug",
      "(or HOP_CLIENT_DEBUG=1)" },
    { "metrics", "HOP_CLIENT_METRICS", OPT_HOSTPORT, OFF(metrics),
      "HOST:PORT", "serve Prometheus metrics at http://HOST:PORT/metrics",
      NULL },
    { "config", "HOP_CLIENT_CONFIG", OPT_STRING, OFF(config),
      "FILE", "read settings from FILE (key = value lines)", NULL },
};

#define NOPTS  (sizeof(agent_opts) / sizeof(agent_opts[0]))


static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


static const opt_def_t *
find_opt(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < NOPTS; i++) {
        if (strlen(agent_opts[i].name) == len
            && strncmp(agent_opts[i].name, name, len) == 0)
        {
            return &agent_opts[i];
        }
    }

    return NULL;
}


static int
parse_bool(const char *v, int *out)
{
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0
        || strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0)
    {
        *out = 1;
        return 0;
    }

    if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0
        || strcasecmp(v, "no") == 0 || strcasecmp(v, "off") == 0
        || *v == '\0')
    {
        *out = 0;
        return 0;
    }

    return -1;
}


static int
valid_hostport(const char *v)
{
    const char  *colon;
    char        *end;
    long         port;

    colon = strrchr(v, ':');
    if (colon == NULL || colon == v) {
        return 0;
    }

    if (v[0] == '[' && colon[-1] != ']') {
        return 0;
    }

    errno = 0;
    port = strtol(colon + 1, &end, 10);

    return errno == 0 && *end == '\0' && colon[1] != '\0'
           && port > 0 && port < 65536;
}


static int
valid_pin(const char *v)
{
    size_t  hex, b64, n;

    hex = 0;
    for (n = 0; v[n]; n++) {
        if (isxdigit((unsigned char) v[n])) {
            hex++;
        } else if (v[n] != ':') {
            break;
        }
    }

    if (v[n] == '\0' && hex == 64) {
        return 1;
    }

    b64 = strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789+/=");

    return b64 == 44 && v[44] == '\0';
}


/* a name for the certificate check: DNS labels, or an IP literal */
static int
valid_name(const char *v)
{
    struct in6_addr  ip;
    size_t           len;

    if (inet_pton(AF_INET, v, &ip) == 1 || inet_pton(AF_INET6, v, &ip) == 1)
    {
        return 1;
    }

    len = strlen(v);

    return len > 0 && len <= 253 && v[0] != '.' && v[0] != '-'
           && strspn(v, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == len;
}


/*
 * Client keys are what the admin API hands out: "hg_" and 64 hex digits.
 * The key itself never appears in a message: it is a secret.
 */
static int
check_key(const char *key, const char *source, char *err, size_t errlen)
{
    size_t  len, plen;

    len = strlen(key);
    plen = sizeof(AGENT_KEY_PREFIX) - 1;

    if (len > AGENT_KEY_MAX) {
        set_err(err, errlen, "%s is %zu characters long; a key has at most "
                "%d", source, len, AGENT_KEY_MAX);
        return -1;
    }

    if (len != plen + AGENT_KEY_HEX
        || strncmp(key, AGENT_KEY_PREFIX, plen) != 0
        || strspn(key + plen, "0123456789abcdefABCDEF") != AGENT_KEY_HEX)
    {
        set_err(err, errlen, "%s is not a client key: expected %s and %d "
                "hex digits, as the admin API gives them", source,
                AGENT_KEY_PREFIX, AGENT_KEY_HEX);
        return -1;
    }

    return 0;
}


/* --key and --key-file on one layer: which one was meant is unclear */
static int
key_conflict(agent_config_t *cfg, int layer, int from_file,
    const char *source, char *err, size_t errlen)
{
    if (cfg->key_layer != layer || (cfg->key_file != NULL) == from_file) {
        return 0;
    }

    set_err(err, errlen, "%s: the key is also given %s; set only one",
            source, from_file ? "directly" : "by a key file");

    return -1;
}


static int
set_key(agent_config_t *cfg, const char *key, const char *file,
    unsigned mode, int layer)
{
    char  *k, *f;

    k = strdup(key);
    f = file ? strdup(file) : NULL;

    if (k == NULL || (file && f == NULL)) {
        free(k);
        free(f);
        return -1;
    }

    free(cfg->key);
    free(cfg->key_file);
    cfg->key = k;
    cfg->key_file = f;
    cfg->key_file_mode = mode;
    cfg->key_layer = layer;

    return 0;
}


/* one line, the trailing newline stripped; read once per configuration */
static int
read_key_file(agent_config_t *cfg, const char *path, const char *source,
    int layer, char *err, size_t errlen)
{
    char         buf[KEY_FILE_MAX + 1], what[512];
    int          fd;
    size_t       len;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        set_err(err, errlen, "%s: cannot open \"%s\": %s", source, path,
                strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: \"%s\" is not a regular file", source,
                path);
        close(fd);
        return -1;
    }

    len = 0;

    while (len < sizeof(buf) - 1
           && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) != 0)
    {
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            set_err(err, errlen, "%s: cannot read \"%s\": %s", source, path,
                    strerror(errno));
            close(fd);
            return -1;
        }
        len += (size_t) n;
    }

    close(fd);
    buf[len] = '\0';

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) {
        buf[--len] = '\0';
    }

    snprintf(what, sizeof(what), "the key in \"%s\" (%s)", path, source);

    if (len == 0) {
        set_err(err, errlen, "%s: \"%s\" is empty", source, path);
        return -1;
    }

    if (strlen(buf) != len) {
        set_err(err, errlen, "%s is not a client key: it contains a NUL "
                "byte", what);
        return -1;
    }

    if (check_key(buf, what, err, errlen) != 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return -1;
    }

    n = set_key(cfg, buf, path, (unsigned) (st.st_mode & 07777), layer);
    OPENSSL_cleanse(buf, sizeof(buf));

    return n == 0 ? 0 : -1;
}


static int
apply(agent_config_t *cfg, const opt_def_t *o, const char *value,
    const char *source, int layer, char *err, size_t errlen)
{
    char   **str, target[300];
    char    *end;
    long     n;

    switch (o->type) {

    case OPT_KEY:
        if (key_conflict(cfg, layer, 0, source, err, errlen) != 0
            || check_key(value, source, err, errlen) != 0)
        {
            return -1;
        }
        return set_key(cfg, value, NULL, 0, layer);

    case OPT_KEY_FILE:
        if (key_conflict(cfg, layer, 1, source, err, errlen) != 0) {
            return -1;
        }
        return read_key_file(cfg, value, source, layer, err, errlen);

    case OPT_TARGET:
        if (*value != '\0' && strspn(value, "0123456789") == strlen(value))
        {
            snprintf(target, sizeof(target), "127.0.0.1:%.10s", value);
            value = target;
        }
        if (!valid_hostport(value)) {
            set_err(err, errlen, "%s wants HOST:PORT or PORT, not \"%s\"",
                    source, value);
            return -1;
        }
        goto store;

    case OPT_NAME:
        if (!valid_name(value)) {
            set_err(err, errlen, "%s wants a host name or an IP address, "
                    "not \"%s\"", source, value);
            return -1;
        }
        goto store;

    case OPT_DOMAIN:
        if (*value == '\0' || strlen(value) > 253) {
            set_err(err, errlen, "%s wants a domain name of 1 to 253 "
                    "characters", source);
            return -1;
        }
        goto store;

    case OPT_PIN:
        if (!valid_pin(value)) {
            set_err(err, errlen, "%s wants the SHA-256 of the edge's public "
                    "key: 64 hex digits (colons allowed) or 44 base64 "
                    "characters, not \"%s\"", source, value);
            return -1;
        }
        goto store;

    case OPT_HOSTPORT:
        if (!valid_hostport(value)) {
            set_err(err, errlen, "%s wants HOST:PORT, not \"%s\"", source,
                    value);
            return -1;
        }
        /* fall through */

    case OPT_STRING:
    store:
        str = (char **) ((char *) cfg + o->offset);
        free(*str);
        *str = strdup(value);
        return *str ? 0 : -1;

    case OPT_BOOL:
        if (parse_bool(value, (int *) ((char *) cfg + o->offset)) != 0) {
            set_err(err, errlen, "%s wants true or false, not \"%s\"",
                    source, value);
            return -1;
        }
        return 0;

    case OPT_MTU:
        errno = 0;
        n = strtol(value, &end, 10);
        if (errno || *end != '\0' || n < HG_MTU_MIN || n > HG_MTU_MAX) {
            set_err(err, errlen, "%s must be %d..%d, not \"%s\"", source,
                    HG_MTU_MIN, HG_MTU_MAX, value);
            return -1;
        }
        *(size_t *) ((char *) cfg + o->offset) = (size_t) n;
        return 0;

    case OPT_SECONDS:
        errno = 0;
        n = strtol(value, &end, 10);
        if (errno || *end != '\0' || n < 1 || n > 3600) {
            set_err(err, errlen, "%s must be 1..3600 seconds, not \"%s\"",
                    source, value);
            return -1;
        }
        *(int *) ((char *) cfg + o->offset) = (int) n;
        return 0;

    case OPT_TRANSPORT:
        if (strcmp(value, "auto") == 0) {
            n = AGENT_TRANSPORT_AUTO;
        } else if (strcmp(value, "udp") == 0) {
            n = AGENT_TRANSPORT_UDP;
        } else if (strcmp(value, "tcp") == 0) {
            n = AGENT_TRANSPORT_TCP;
        } else {
            set_err(err, errlen, "%s must be auto, udp or tcp, not \"%s\"",
                    source, value);
            return -1;
        }
        *(int *) ((char *) cfg + o->offset) = (int) n;
        return 0;

    case OPT_LEVEL:
        if (strcmp(value, "error") == 0) {
            n = AGENT_LOG_ERROR;
        } else if (strcmp(value, "warn") == 0) {
            n = AGENT_LOG_WARN;
        } else if (strcmp(value, "info") == 0) {
            n = AGENT_LOG_INFO;
        } else if (strcmp(value, "debug") == 0) {
            n = AGENT_LOG_DEBUG;
        } else {
            set_err(err, errlen, "%s must be error, warn, info or debug, "
                    "not \"%s\"", source, value);
            return -1;
        }
        *(int *) ((char *) cfg + o->offset) = (int) n;
        return 0;
    }

    return -1;
}


static char *
trim(char *s)
{
    char  *e;

    while (isspace((unsigned char) *s)) {
        s++;
    }

    e = s + strlen(s);
    while (e > s && isspace((unsigned char) e[-1])) {
        *--e = '\0';
    }

    return s;
}


static int
load_file(agent_config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE             *f;
    char              line[4096], where[512], *k, *v, *eq;
    unsigned          lineno;
    const opt_def_t  *o;

    f = fopen(path, "r");
    if (f == NULL) {
        set_err(err, errlen, "cannot open config file \"%s\": %s",
                path, strerror(errno));
        return -1;
    }

    lineno = 0;

    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        k = trim(line);

        if (*k == '\0' || *k == '#') {
            continue;
        }

        eq = strchr(k, '=');
        if (eq == NULL) {
            set_err(err, errlen, "%s:%u: expected \"key = value\"",
                    path, lineno);
            fclose(f);
            return -1;
        }

        *eq = '\0';
        k = trim(k);
        v = trim(eq + 1);

        if (strlen(v) >= 2 && (v[0] == '"' || v[0] == '\'')
            && v[strlen(v) - 1] == v[0])
        {
            v[strlen(v) - 1] = '\0';
            v++;
        }

        o = find_opt(k, strlen(k));
        if (o == NULL || strcmp(o->name, "config") == 0) {
            set_err(err, errlen, "%s:%u: unknown setting \"%s\"",
                    path, lineno, k);
            fclose(f);
            return -1;
        }

        snprintf(where, sizeof(where), "%s:%u: %s", path, lineno, o->name);
        if (apply(cfg, o, v, where, LAYER_FILE, err, errlen) != 0) {
            fclose(f);
            return -1;
        }
    }

    fclose(f);
    return 0;
}


static int
load_env(agent_config_t *cfg, char *err, size_t errlen)
{
    size_t       i;
    const char  *v;
    int          debug;

    for (i = 0; i < NOPTS; i++) {
        v = getenv(agent_opts[i].env);
        if (v == NULL || strcmp(agent_opts[i].name, "config") == 0) {
            continue;
        }

        if (apply(cfg, &agent_opts[i], v, agent_opts[i].env, LAYER_ENV,
                  err, errlen)
            != 0)
        {
            return -1;
        }
    }

    /* the name the seed's HOP_CLIENT_API_KEY suggests */
    v = getenv("HOP_CLIENT_API_KEY_FILE");
    if (v != NULL && getenv("HOP_CLIENT_KEY_FILE") == NULL
        && apply(cfg, find_opt("key-file", 8), v, "HOP_CLIENT_API_KEY_FILE",
                 LAYER_ENV, err, errlen)
           != 0)
    {
        return -1;
    }

    /* the seed's switch */
    v = getenv("HOP_CLIENT_DEBUG");
    if (v != NULL && parse_bool(v, &debug) == 0 && debug) {
        cfg->log_level = AGENT_LOG_DEBUG;
    }

    return 0;
}


/*
 * Walks argv. With apply_values 0 it only validates and finds --config;
 * with 1 it applies each flag. Returns the command or -1.
 */
static int
scan_args(agent_config_t *cfg, int argc, char **argv, int apply_values,
    const char **config_path, char *err, size_t errlen)
{
    int               i;
    char             *a, *eq, flag[64];
    const char       *value;
    size_t            len;
    const opt_def_t  *o;

    for (i = 1; i < argc; i++) {
        a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            return AGENT_CMD_HELP;
        }

        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            return AGENT_CMD_VERSION;
        }

        if (strncmp(a, "--", 2) != 0) {
            set_err(err, errlen, "unexpected argument \"%s\" "
                    "(see --help)", a);
            return -1;
        }

        a += 2;
        eq = strchr(a, '=');
        len = eq ? (size_t) (eq - a) : strlen(a);

        o = find_opt(a, len);
        if (o == NULL) {
            set_err(err, errlen, "unknown flag \"--%.*s\" (see --help)",
                    (int) len, a);
            return -1;
        }

        if (eq) {
            value = eq + 1;
        } else if (o->arg == NULL) {
            value = "true";
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            set_err(err, errlen, "--%s needs a value (%s)", o->name, o->arg);
            return -1;
        }

        if (strcmp(o->name, "config") == 0) {
            *config_path = value;
            continue;
        }

        if (apply_values) {
            snprintf(flag, sizeof(flag), "--%s", o->name);
            if (apply(cfg, o, value, flag, LAYER_FLAG, err, errlen) != 0) {
                return -1;
            }
        }
    }

    return AGENT_CMD_RUN;
}


/*
 * Under systemd with LoadCredential=key:/etc/hopgate/agent-NAME.key the key
 * file stays root's (mode 0600) while the service's own user, a
 * DynamicUser, reads the copy systemd hands it. Used only when no flag,
 * variable or config line gives a key.
 */
static int
load_credential(agent_config_t *cfg, char *err, size_t errlen)
{
    const char  *dir;
    char         path[4096];

    dir = getenv("CREDENTIALS_DIRECTORY");

    if (cfg->key != NULL || dir == NULL || *dir == '\0') {
        return 0;
    }

    if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, KEY_CREDENTIAL)
        >= sizeof(path)
        || access(path, F_OK) != 0)
    {
        return 0;
    }

    return read_key_file(cfg, path, "the systemd credential \"" KEY_CREDENTIAL
                         "\"", 0, err, errlen);
}


static int
check_required(const agent_config_t *cfg, char *err, size_t errlen)
{
    static const struct {
        size_t       offset;
        const char  *what;
    } required[] = {
        { OFF(server), "--server (or HOP_CLIENT_SERVER_ADDR)" },
        { OFF(domain), "--domain (or HOP_CLIENT_DOMAIN)" },
        { OFF(key), "--key-file or --key (or HOP_CLIENT_KEY_FILE, "
                    "HOP_CLIENT_API_KEY, or the systemd credential \"key\")" },
        { OFF(to), "--to (or HOP_CLIENT_LOCAL_TARGET)" },
    };

    size_t  i;

    for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (*(char **) ((char *) cfg + required[i].offset) == NULL) {
            set_err(err, errlen, "missing %s", required[i].what);
            return -1;
        }
    }

    if (cfg->insecure && (cfg->ca || cfg->pin)) {
        set_err(err, errlen, "--insecure contradicts --ca/--pin");
        return -1;
    }

    if (!cfg->insecure && cfg->ca == NULL && cfg->pin == NULL) {
        set_err(err, errlen, "the edge's certificate needs --ca FILE or "
                "--pin SHA256 (or --insecure for testing)");
        return -1;
    }

    return 0;
}


static int
load_layers(agent_config_t *cfg, int argc, char **argv, char *err,
    size_t errlen)
{
    const char  *config_path;
    int          cmd;

    config_path = getenv("HOP_CLIENT_CONFIG");

    cmd = scan_args(cfg, argc, argv, 0, &config_path, err, errlen);
    if (cmd != AGENT_CMD_RUN) {
        return cmd;
    }

    cfg->mtu = HG_MTU_DEFAULT;
    cfg->log_level = AGENT_LOG_INFO;
    cfg->udp_retry = (int) (AGENT_UDP_RETRY_DEFAULT);

    if (config_path != NULL && *config_path != '\0') {
        free(cfg->config);
        cfg->config = strdup(config_path);
        if (cfg->config == NULL || load_file(cfg, config_path, err, errlen))
        {
            return -1;
        }
    }

    if (load_env(cfg, err, errlen) != 0) {
        return -1;
    }

    cmd = scan_args(cfg, argc, argv, 1, &config_path, err, errlen);
    if (cmd != AGENT_CMD_RUN) {
        return cmd;
    }

    if (load_credential(cfg, err, errlen) != 0) {
        return -1;
    }

    return check_required(cfg, err, errlen) == 0 ? AGENT_CMD_RUN : -1;
}


int
agent_config_load(agent_config_t *cfg, int argc, char **argv, char *err,
    size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    return load_layers(cfg, argc, argv, err, errlen);
}


void
agent_config_free(agent_config_t *cfg)
{
    size_t  i;

    if (cfg->key != NULL) {
        OPENSSL_cleanse(cfg->key, strlen(cfg->key));
    }

    for (i = 0; i < NOPTS; i++) {
        switch (agent_opts[i].type) {
        case OPT_BOOL:
        case OPT_MTU:
        case OPT_LEVEL:
        case OPT_TRANSPORT:
        case OPT_SECONDS:
            break;
        default:
            free(*(char **) ((char *) cfg + agent_opts[i].offset));
        }
    }

    memset(cfg, 0, sizeof(*cfg));
}


void
agent_usage(const char *prog)
{
    size_t       i;
    char         flag[64];
    const char  *base;

    /* the name people type, whatever path ran it (also in the man page) */
    base = strrchr(prog, '/');
    prog = base ? base + 1 : prog;

    printf("usage: %s --server HOST:PORT --domain DOMAIN --key-file FILE "
           "--to [HOST:]PORT [options]\n\n"
           "Serves DOMAIN's requests from a HopGate edge (nginx with the "
           "hopgate module)\nby forwarding each tunnelled connection to "
           "the local target.\n\noptions (flags > environment > config "
           "file):\n", prog);

    for (i = 0; i < NOPTS; i++) {
        snprintf(flag, sizeof(flag), "--%s%s%s", agent_opts[i].name,
                 agent_opts[i].arg ? " " : "",
                 agent_opts[i].arg ? agent_opts[i].arg : "");
        printf("  %-24s %s\n  %-24s [%s]%s%s\n", flag, agent_opts[i].help,
               "", agent_opts[i].env, agent_opts[i].env_note ? " " : "",
               agent_opts[i].env_note ? agent_opts[i].env_note : "");
    }

    printf("  %-24s %s\n", "-h, --help", "show this help");
    printf("  %-24s %s\n", "-V, --version", "print the version");
    printf("\nexit codes: 0 clean shutdown, 1 error, 2 bad usage, "
           "3 key or domain rejected\n");
    printf("\nwithout a key setting, $CREDENTIALS_DIRECTORY/key is read "
           "(systemd's LoadCredential=key:FILE)\n");
    printf("\n%s keygen DOMAIN: a new key and its file-registry line\n", prog);
    printf("%s admin --help: manage domains through the edge's admin API\n",
           prog);
}
