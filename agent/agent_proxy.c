/*
 * Which HTTP proxy, if any, the TCP carrier goes through: --proxy, else
 * HTTPS_PROXY (https_proxy) unless NO_PROXY (no_proxy) names the edge,
 * as curl reads them. Only http:// proxies, with optional basic
 * authentication (user:pass@, percent-encoded as in any URL); the tunnel
 * then starts with CONNECT host:port (agent_tcp.c).
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "agent.h"


static int agent_proxy_decode(char *dst, size_t cap, const char *src,
    size_t len);
static int agent_no_proxy(const char *list, const char *host);


/* http://[user[:pass]@]host:port[/]: HG_OK, or HG_ERR and a sentence */
int
agent_proxy_parse(agent_proxy_t *p, const char *url, char *err,
    size_t errlen)
{
    char         userinfo[512], *colon;
    const char  *rest, *at, *end, *hp;
    size_t       n, hostlen;
    long         port;
    char        *pend;

    memset(p, 0, sizeof(*p));

    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "the proxy \"%.200s\" is not an http:// URL "
                 "(only HTTP proxies that CONNECT are supported)", url);
        return HG_ERR;
    }

    rest = url + 7;
    end = rest + strcspn(rest, "/?#");
    at = memchr(rest, '@', (size_t) (end - rest));

    if (at) {
        n = (size_t) (at - rest);
        if (n >= sizeof(userinfo)) {
            snprintf(err, errlen, "the proxy's user and password are too "
                     "long");
            return HG_ERR;
        }

        memcpy(userinfo, rest, n);
        userinfo[n] = '\0';
        colon = strchr(userinfo, ':');
        if (colon) {
            *colon++ = '\0';
        }

        if (agent_proxy_decode(p->user, sizeof(p->user), userinfo,
                               strlen(userinfo))
            != HG_OK
            || agent_proxy_decode(p->pass, sizeof(p->pass),
                                  colon ? colon : "",
                                  colon ? strlen(colon) : 0)
               != HG_OK)
        {
            snprintf(err, errlen, "the proxy's user or password is not "
                     "percent-encoded properly");
            return HG_ERR;
        }

        p->auth = 1;
        hp = at + 1;

    } else {
        hp = rest;
    }

    /* host:port, the host maybe in brackets */
    if (*hp == '[') {
        const char  *close = memchr(hp, ']', (size_t) (end - hp));

        if (close == NULL || close[1] != ':') {
            goto bad;
        }

        hostlen = (size_t) (close - hp - 1);
        memcpy(p->host, hp + 1, hostlen < sizeof(p->host) ? hostlen : 0);
        hp = close + 1;

    } else {
        const char  *c = memchr(hp, ':', (size_t) (end - hp));

        if (c == NULL) {
            goto bad;
        }

        hostlen = (size_t) (c - hp);
        if (hostlen == 0 || hostlen >= sizeof(p->host)) {
            goto bad;
        }

        memcpy(p->host, hp, hostlen);
        hp = c;
    }

    p->host[hostlen < sizeof(p->host) ? hostlen : 0] = '\0';

    n = (size_t) (end - hp - 1);
    if (p->host[0] == '\0' || n == 0 || n >= sizeof(p->port)) {
        goto bad;
    }

    memcpy(p->port, hp + 1, n);
    p->port[n] = '\0';

    port = strtol(p->port, &pend, 10);
    if (*pend != '\0' || port <= 0 || port > 65535) {
        goto bad;
    }

    p->set = 1;
    snprintf(p->shown, sizeof(p->shown), "http://%s%s%s:%s",
             p->auth ? p->user : "", p->auth ? "@" : "", p->host, p->port);

    return HG_OK;

bad:

    snprintf(err, errlen, "the proxy \"%.200s\" wants the form "
             "http://[USER:PASS@]HOST:PORT", url);
    return HG_ERR;
}


/* the proxy for the edge host: --proxy, else the environment's */
int
agent_proxy_choose(agent_proxy_t *p, const char *flag, const char *edge,
    char *err, size_t errlen)
{
    const char  *env, *no;

    memset(p, 0, sizeof(*p));

    if (flag && *flag) {
        return agent_proxy_parse(p, flag, err, errlen);
    }

    env = getenv("https_proxy");
    if (env == NULL || *env == '\0') {
        env = getenv("HTTPS_PROXY");
    }

    if (env == NULL || *env == '\0') {
        return HG_OK;
    }

    no = getenv("no_proxy");
    if (no == NULL || *no == '\0') {
        no = getenv("NO_PROXY");
    }

    if (no && agent_no_proxy(no, edge)) {
        return HG_OK;
    }

    if (agent_proxy_parse(p, env, err, errlen) != HG_OK) {
        /* say where the bad URL came from */
        snprintf(err + strlen(err), errlen - strlen(err), " (HTTPS_PROXY)");
        return HG_ERR;
    }

    return HG_OK;
}


/*
 * curl's rules: "*" is every host; otherwise names and addresses,
 * comma-separated, a name matching itself and its subdomains (a leading
 * dot changes nothing), any case; a ":port" after an entry is ignored.
 */
static int
agent_no_proxy(const char *list, const char *host)
{
    char         entry[256];
    const char  *p, *e;
    size_t       n, hlen;

    hlen = strlen(host);

    for (p = list; *p; p = *e ? e + 1 : e) {
        e = p + strcspn(p, ",");

        while (p < e && isspace((unsigned char) *p)) {
            p++;
        }

        n = (size_t) (e - p);
        while (n > 0 && isspace((unsigned char) p[n - 1])) {
            n--;
        }

        if (n == 0 || n >= sizeof(entry)) {
            continue;
        }

        memcpy(entry, p, n);
        entry[n] = '\0';

        if (strcmp(entry, "*") == 0) {
            return 1;
        }

        /* an entry's port; an IPv6 literal keeps its colons */
        if (entry[0] != '[' && strchr(entry, ':') == strrchr(entry, ':')
            && strchr(entry, ':'))
        {
            *strchr(entry, ':') = '\0';
        }

        if (entry[0] == '[') {
            memmove(entry, entry + 1, strlen(entry));
            entry[strcspn(entry, "]")] = '\0';
        }

        p = entry[0] == '.' ? entry + 1 : entry;
        n = strlen(p);

        if (n == hlen && strcasecmp(p, host) == 0) {
            return 1;
        }

        if (hlen > n && host[hlen - n - 1] == '.'
            && strcasecmp(host + hlen - n, p) == 0)
        {
            return 1;
        }
    }

    return 0;
}


static int
agent_proxy_decode(char *dst, size_t cap, const char *src, size_t len)
{
    size_t  i, n;
    int     hi, lo;

    for (i = 0, n = 0; i < len; i++) {
        if (n + 1 >= cap) {
            return HG_ERR;
        }

        if (src[i] != '%') {
            dst[n++] = src[i];
            continue;
        }

        if (len - i < 3 || !isxdigit((unsigned char) src[i + 1])
            || !isxdigit((unsigned char) src[i + 2]))
        {
            return HG_ERR;
        }

        hi = isdigit((unsigned char) src[i + 1]) ? src[i + 1] - '0'
                                                 : (tolower(src[i + 1]) - 'a'
                                                    + 10);
        lo = isdigit((unsigned char) src[i + 2]) ? src[i + 2] - '0'
                                                 : (tolower(src[i + 2]) - 'a'
                                                    + 10);
        dst[n++] = (char) (hi << 4 | lo);
        i += 2;
    }

    dst[n] = '\0';

    return HG_OK;
}


/* the Proxy-Authorization value: "Basic " and base64(user:pass) */
int
agent_proxy_authorization(const agent_proxy_t *p, char *out, size_t cap)
{
    char    plain[512];
    int     n;

    n = snprintf(plain, sizeof(plain), "%s:%s", p->user, p->pass);
    if (n < 0 || (size_t) n >= sizeof(plain)
        || cap < 6 + 4 * (((size_t) n + 2) / 3) + 1)
    {
        return HG_ERR;
    }

    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *) out + 6, (unsigned char *) plain, n);

    return HG_OK;
}
