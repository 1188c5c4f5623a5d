/*
 * hopgate-agent admin: a thin client of the edge's admin API (the API is
 * the contract; this only saves typing JSON and headers).
 *
 *   hopgate-agent admin register --domain D [--memo M]
 *   hopgate-agent admin unregister --domain D --key K
 *   hopgate-agent admin rotate|disable|enable --domain D
 *   hopgate-agent admin list
 *
 * with --api URL (HOP_ADMIN_API) and the bearer token from --token-file
 * FILE (HOP_ADMIN_TOKEN_FILE) or HOP_ADMIN_TOKEN; --ca FILE or --insecure
 * for an HTTPS API with a private certificate. The API's JSON answer goes
 * to stdout. Exit codes: 0 success, 1 the API refused or was unreachable,
 * 2 bad usage.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "agent.h"


#define ADMIN_BODY_MAX   (1024 * 1024)

typedef struct {
    const char  *command;
    const char  *api;
    const char  *token;
    const char  *token_file;
    const char  *domain;
    const char  *memo;
    const char  *key;
    const char  *ca;
    int          insecure;
} admin_args_t;

typedef struct {
    char    *data;
    size_t   len;
} admin_buf_t;


static void
admin_usage(void)
{
    printf("usage: hopgate-agent admin COMMAND [options]\n\n"
           "commands:\n"
           "  register   --domain D [--memo M]   prints the new key once\n"
           "  unregister --domain D --key K\n"
           "  rotate     --domain D              a new key; the old one is "
           "revoked\n"
           "  disable    --domain D\n"
           "  enable     --domain D\n"
           "  list\n\n"
           "options:\n"
           "  --api URL          the admin API, e.g. "
           "https://edge/api/v1/admin [HOP_ADMIN_API]\n"
           "  --token-file FILE  the bearer token [HOP_ADMIN_TOKEN_FILE, or "
           "HOP_ADMIN_TOKEN]\n"
           "  --ca FILE          trust this CA for an HTTPS API\n"
           "  --insecure         do not verify the API's certificate\n\n"
           "exit codes: 0 success, 1 refused or unreachable, 2 bad usage\n");
}


static int
admin_parse(admin_args_t *a, int argc, char **argv)
{
    int          i;
    const char  *flag, **slot;

    memset(a, 0, sizeof(*a));

    a->api = getenv("HOP_ADMIN_API");
    a->token = getenv("HOP_ADMIN_TOKEN");
    a->token_file = getenv("HOP_ADMIN_TOKEN_FILE");

    if (argc < 2) {
        return -1;
    }

    a->command = argv[1];

    for (i = 2; i < argc; i++) {
        flag = argv[i];

        if (strcmp(flag, "--insecure") == 0) {
            a->insecure = 1;
            continue;
        }

        slot = strcmp(flag, "--api") == 0 ? &a->api
               : strcmp(flag, "--token-file") == 0 ? &a->token_file
               : strcmp(flag, "--domain") == 0 ? &a->domain
               : strcmp(flag, "--memo") == 0 ? &a->memo
               : strcmp(flag, "--key") == 0 ? &a->key
               : strcmp(flag, "--ca") == 0 ? &a->ca
               : NULL;

        if (slot == NULL) {
            fprintf(stderr, "hopgate-agent admin: unknown flag \"%s\"\n",
                    flag);
            return -1;
        }

        if (i + 1 >= argc) {
            fprintf(stderr, "hopgate-agent admin: %s needs a value\n", flag);
            return -1;
        }

        *slot = argv[++i];
    }

    return 0;
}


/* appends s as a JSON string */
static int
admin_json_string(char *out, size_t cap, size_t *len, const char *s)
{
    size_t          n;
    unsigned char   c;

    n = *len;

#define PUT(ch)  do { if (n + 1 >= cap) return -1; out[n++] = (ch); } while (0)

    PUT('"');

    for ( ; *s; s++) {
        c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char) c);

        } else if (c < 0x20) {
            if (n + 7 >= cap) {
                return -1;
            }
            n += snprintf(out + n, cap - n, "\\u%04x", c);

        } else {
            PUT((char) c);
        }
    }

    PUT('"');

#undef PUT

    out[n] = '\0';
    *len = n;

    return 0;
}


static int
admin_body(const admin_args_t *a, char *out, size_t cap)
{
    size_t  len;

    len = (size_t) snprintf(out, cap, "{\"domain\":");

    if (admin_json_string(out, cap, &len, a->domain) != 0) {
        return -1;
    }

    if (a->memo) {
        len += snprintf(out + len, cap - len, ",\"memo\":");
        if (admin_json_string(out, cap, &len, a->memo) != 0) {
            return -1;
        }
    }

    if (a->key) {
        len += snprintf(out + len, cap - len, ",\"client_api_key\":");
        if (admin_json_string(out, cap, &len, a->key) != 0) {
            return -1;
        }
    }

    if (len + 2 > cap) {
        return -1;
    }

    out[len++] = '}';
    out[len] = '\0';

    return 0;
}


static char *
admin_token(const admin_args_t *a)
{
    FILE    *f;
    char     line[1024];
    size_t   n;

    if (a->token_file) {
        f = fopen(a->token_file, "r");
        if (f == NULL || fgets(line, sizeof(line), f) == NULL) {
            fprintf(stderr, "hopgate-agent admin: cannot read the token from "
                    "\"%s\"\n", a->token_file);
            if (f) {
                fclose(f);
            }
            return NULL;
        }
        fclose(f);

    } else if (a->token) {
        snprintf(line, sizeof(line), "%s", a->token);

    } else {
        fprintf(stderr, "hopgate-agent admin: no token (--token-file, "
                "HOP_ADMIN_TOKEN_FILE or HOP_ADMIN_TOKEN)\n");
        return NULL;
    }

    n = strlen(line);
    while (n && isspace((unsigned char) line[n - 1])) {
        line[--n] = '\0';
    }

    return strdup(line);
}


static size_t
admin_collect(char *data, size_t size, size_t nmemb, void *arg)
{
    admin_buf_t  *b = arg;
    size_t        n;
    char         *grown;

    n = size * nmemb;

    if (b->len + n > ADMIN_BODY_MAX) {
        return 0;
    }

    grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL) {
        return 0;
    }

    b->data = grown;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';

    return n;
}


static int
admin_call(const admin_args_t *a, const char *token, const char *body)
{
    CURL               *curl;
    CURLcode            rc;
    long                status;
    char                url[2048], auth[1200];
    admin_buf_t         answer;
    struct curl_slist  *headers;
    size_t              apilen;

    apilen = strlen(a->api);
    while (apilen && a->api[apilen - 1] == '/') {
        apilen--;
    }

    snprintf(url, sizeof(url), "%.*s/domains%s%s", (int) apilen, a->api,
             body ? "/" : "", body ? a->command : "");
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);

    curl = curl_easy_init();
    if (curl == NULL) {
        return 1;
    }

    memset(&answer, 0, sizeof(answer));
    headers = curl_slist_append(NULL, auth);
    headers = curl_slist_append(headers, "Content-Type: application/json");

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, admin_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);

    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }

    if (a->ca) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, a->ca);
    }

    if (a->insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }

    rc = curl_easy_perform(curl);
    status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);

    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);

    if (rc != CURLE_OK) {
        fprintf(stderr, "hopgate-agent admin: %s: %s\n", url,
                curl_easy_strerror(rc));
        free(answer.data);
        return 1;
    }

    if (answer.data) {
        fputs(answer.data, stdout);
        if (answer.len && answer.data[answer.len - 1] != '\n') {
            fputc('\n', stdout);
        }
    }

    free(answer.data);

    if (status < 200 || status > 299) {
        fprintf(stderr, "hopgate-agent admin: %s answered %ld\n", url,
                status);
        return 1;
    }

    return 0;
}


int
agent_admin_main(int argc, char **argv)
{
    admin_args_t  a;
    char          body[8192], *token;
    int           list, rc;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0
                      || strcmp(argv[1], "-h") == 0))
    {
        admin_usage();
        return AGENT_EXIT_OK;
    }

    if (admin_parse(&a, argc, argv) != 0) {
        admin_usage();
        return AGENT_EXIT_USAGE;
    }

    list = strcmp(a.command, "list") == 0;

    if (!list && strcmp(a.command, "register") != 0
        && strcmp(a.command, "unregister") != 0
        && strcmp(a.command, "rotate") != 0
        && strcmp(a.command, "disable") != 0
        && strcmp(a.command, "enable") != 0)
    {
        fprintf(stderr, "hopgate-agent admin: unknown command \"%s\"\n",
                a.command);
        return AGENT_EXIT_USAGE;
    }

    if (a.api == NULL) {
        fprintf(stderr, "hopgate-agent admin: missing --api (or "
                "HOP_ADMIN_API)\n");
        return AGENT_EXIT_USAGE;
    }

    if (!list && a.domain == NULL) {
        fprintf(stderr, "hopgate-agent admin: %s needs --domain\n",
                a.command);
        return AGENT_EXIT_USAGE;
    }

    if (strcmp(a.command, "unregister") == 0 && a.key == NULL) {
        fprintf(stderr, "hopgate-agent admin: unregister needs --key\n");
        return AGENT_EXIT_USAGE;
    }

    if (!list && admin_body(&a, body, sizeof(body)) != 0) {
        fprintf(stderr, "hopgate-agent admin: arguments too long\n");
        return AGENT_EXIT_USAGE;
    }

    token = admin_token(&a);
    if (token == NULL) {
        return AGENT_EXIT_USAGE;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = admin_call(&a, token, list ? NULL : body);
    curl_global_cleanup();

    free(token);

    return rc == 0 ? AGENT_EXIT_OK : AGENT_EXIT_ERROR;
}
