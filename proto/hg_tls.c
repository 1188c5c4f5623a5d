/*
 * TLS contexts for the tunnel: DTLS 1.2 only, ECDHE with AEAD suites only,
 * or for the stream carrier's client TLS 1.2 or 1.3 with the same suites
 * and ALPN http/1.1 (the HTTP Upgrade it starts with needs HTTP/1.1),
 * no renegotiation, no session tickets (they would grow the server's last
 * flight, which is the one flight nothing retransmits on a timer), no
 * compression.
 *
 * The client verifies the edge one of three ways: against a CA bundle
 * and for the edge's identity (a host name against the certificate's DNS
 * names, an IP address against its IP addresses), by a pin of the server
 * key (SHA-256 of its SubjectPublicKeyInfo, for self-signed edges), or not
 * at all when explicitly asked to.
 */

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hg.h"


#define HG_TLS_CIPHERS                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"             \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"             \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define HG_TLS_GROUPS   "X25519:P-256:P-384"

#define HG_TLS_PIN_LEN  32


static SSL_CTX *hg_tls_ctx_new(int server, int stream, char *err,
    size_t errlen);
static int hg_tls_set_identity(SSL_CTX *ctx, const char *name);
static int hg_tls_pin_parse(const char *text, uint8_t pin[HG_TLS_PIN_LEN]);
static int hg_tls_spki_sha256(X509 *cert, uint8_t md[HG_TLS_PIN_LEN]);
static int hg_tls_verify_pin(int ok, X509_STORE_CTX *store);
static void hg_tls_pin_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
    int idx, long argl, void *argp);
static void hg_tls_error(char *err, size_t errlen, const char *what,
    const char *file);


/*
 * The pin travels with the SSL_CTX in an ex_data slot. OpenSSL numbers
 * those slots process-wide, so the slot number is allocated once and is
 * the only static state here; it holds nothing about any session.
 */
static int  hg_tls_pin_index = -1;


SSL_CTX *
hg_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
    size_t errlen)
{
    SSL_CTX  *ctx;

    ctx = hg_tls_ctx_new(1, 0, err, errlen);
    if (ctx == NULL) {
        return NULL;
    }

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        hg_tls_error(err, errlen, "cannot load certificate", cert_file);
        goto failed;
    }

    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        hg_tls_error(err, errlen, "cannot load private key", key_file);
        goto failed;
    }

    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "private key \"%s\" does not match "
                 "certificate \"%s\"", key_file, cert_file);
        goto failed;
    }

    ERR_clear_error();

    return ctx;

failed:

    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}


SSL_CTX *
hg_tls_client_ctx(const hg_tls_client_opts_t *opts, char *err,
    size_t errlen)
{
    uint8_t   pin[HG_TLS_PIN_LEN], *copy;
    SSL_CTX  *ctx;

    if (opts->pin_sha256 != NULL && opts->pin_sha256[0] != '\0'
        && hg_tls_pin_parse(opts->pin_sha256, pin) != HG_OK)
    {
        snprintf(err, errlen, "the pin must be a SHA-256 in hex (64 "
                 "digits, colons allowed) or base64 (44 characters)");
        return NULL;
    }

    ctx = hg_tls_ctx_new(0, opts->stream, err, errlen);
    if (ctx == NULL) {
        return NULL;
    }

    if (opts->ca_file != NULL && opts->ca_file[0] != '\0') {
        if (SSL_CTX_load_verify_locations(ctx, opts->ca_file, NULL) != 1) {
            hg_tls_error(err, errlen, "cannot load CA file", opts->ca_file);
            goto failed;
        }

    } else if (opts->pin_sha256 == NULL || opts->pin_sha256[0] == '\0') {

        if (opts->insecure) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
            ERR_clear_error();
            return ctx;
        }

        /* neither a CA nor a pin: the system's trust store decides */
        if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(err, errlen, "cannot load the system CA store");
            goto failed;
        }
    }

    if (opts->pin_sha256 == NULL || opts->pin_sha256[0] == '\0') {
        if (opts->server_name != NULL && opts->server_name[0] != '\0'
            && hg_tls_set_identity(ctx, opts->server_name) != HG_OK)
        {
            snprintf(err, errlen, "cannot check the edge's certificate "
                     "for \"%s\"", opts->server_name);
            goto failed;
        }

        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ERR_clear_error();
        return ctx;
    }

    if (hg_tls_pin_index < 0) {
        hg_tls_pin_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
                                                    hg_tls_pin_free);
        if (hg_tls_pin_index < 0) {
            snprintf(err, errlen, "cannot allocate the pin slot");
            goto failed;
        }
    }

    copy = OPENSSL_malloc(HG_TLS_PIN_LEN);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        goto failed;
    }

    memcpy(copy, pin, HG_TLS_PIN_LEN);

    if (!SSL_CTX_set_ex_data(ctx, hg_tls_pin_index, copy)) {
        OPENSSL_free(copy);
        snprintf(err, errlen, "out of memory");
        goto failed;
    }

    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, hg_tls_verify_pin);
    ERR_clear_error();

    return ctx;

failed:

    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}


int
hg_tls_spki_sha256_hex(X509 *cert, char out[65])
{
    int      i;
    uint8_t  md[HG_TLS_PIN_LEN];

    if (hg_tls_spki_sha256(cert, md) != HG_OK) {
        out[0] = '\0';
        return HG_ERR;
    }

    for (i = 0; i < HG_TLS_PIN_LEN; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }

    return HG_OK;
}


static SSL_CTX *
hg_tls_ctx_new(int server, int stream, char *err, size_t errlen)
{
    SSL_CTX  *ctx;

    static const unsigned char  alpn[] = "\x08http/1.1";

    ERR_clear_error();

    ctx = SSL_CTX_new(stream ? TLS_client_method() : DTLS_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a %s context",
                 stream ? "TLS" : "DTLS");
        return NULL;
    }

    if (stream) {
        /* nginx's TLS, not ours: what any HTTPS client would offer */
        if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
            || !SSL_CTX_set_cipher_list(ctx, HG_TLS_CIPHERS)
            || SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
        {
            snprintf(err, errlen, "cannot configure TLS 1.2+ with AEAD "
                     "suites");
            ERR_clear_error();
            SSL_CTX_free(ctx);
            return NULL;
        }

        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION
                                 | SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                              | SSL_MODE_ENABLE_PARTIAL_WRITE);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

        return ctx;
    }

    if (!SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION)
        || !SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION)
        || !SSL_CTX_set_cipher_list(ctx, HG_TLS_CIPHERS)
        || !SSL_CTX_set1_groups_list(ctx, HG_TLS_GROUPS))
    {
        snprintf(err, errlen, "cannot configure DTLS 1.2 with AEAD suites");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }

    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET
                             | SSL_OP_NO_COMPRESSION | SSL_OP_NO_QUERY_MTU);

    if (server) {
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    }

    /* every handshake is a full one; a cache would only grow */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_read_ahead(ctx, 0);

    return ctx;
}


/*
 * Every SSL made from ctx inherits the check. A chain to the CA alone
 * proves little (with a public CA bundle, any publicly issued certificate
 * chains): the certificate must also be the edge's. An address literal
 * is matched against the IP address SANs only, never against DNS names or
 * the subject's CN.
 */
static int
hg_tls_set_identity(SSL_CTX *ctx, const char *name)
{
    X509_VERIFY_PARAM  *param;

    param = SSL_CTX_get0_param(ctx);

    if (X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1) {
        return HG_OK;
    }

    ERR_clear_error();
    X509_VERIFY_PARAM_set_hostflags(param,
                                    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);

    return X509_VERIFY_PARAM_set1_host(param, name, 0) == 1 ? HG_OK : HG_ERR;
}


/* 64 hex digits (colons allowed) or the base64 of 32 bytes */
static int
hg_tls_pin_parse(const char *text, uint8_t pin[HG_TLS_PIN_LEN])
{
    int            n, hi, c;
    size_t         len;
    const char    *p;
    unsigned char  b64[45], raw[36];

    n = 0;
    hi = -1;

    for (p = text; *p != '\0'; p++) {
        if (*p == ':') {
            continue;
        }

        if (!isxdigit((unsigned char) *p) || n == HG_TLS_PIN_LEN) {
            n = -1;
            break;
        }

        c = isdigit((unsigned char) *p) ? *p - '0'
                                        : tolower((unsigned char) *p) - 'a'
                                          + 10;
        if (hi < 0) {
            hi = c;

        } else {
            pin[n++] = (uint8_t) (hi << 4 | c);
            hi = -1;
        }
    }

    if (n == HG_TLS_PIN_LEN && hi < 0) {
        return HG_OK;
    }

    /* 32 bytes are 43 base64 characters and one '=' of padding */
    len = strlen(text);
    if (len != 43 && !(len == 44 && text[43] == '=')) {
        return HG_ERR;
    }

    memcpy(b64, text, 43);
    b64[43] = '=';
    b64[44] = '\0';

    if (strchr((const char *) b64, '=') != (const char *) b64 + 43) {
        return HG_ERR;
    }

    if (EVP_DecodeBlock(raw, b64, 44) != 33) {
        return HG_ERR;
    }

    memcpy(pin, raw, HG_TLS_PIN_LEN);

    return HG_OK;
}


static int
hg_tls_spki_sha256(X509 *cert, uint8_t md[HG_TLS_PIN_LEN])
{
    int             len, ok;
    unsigned int    mdlen;
    unsigned char  *der;

    der = NULL;
    len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) {
        return HG_ERR;
    }

    ok = EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);

    return ok && mdlen == HG_TLS_PIN_LEN ? HG_OK : HG_ERR;
}


/*
 * A pinned key is trusted whatever the chain says (that is what a pin is
 * for: self-signed edges); any other key is refused. hg_dtls.c reports an
 * application verification failure as a pin mismatch.
 */
static int
hg_tls_verify_pin(int ok, X509_STORE_CTX *store)
{
    SSL      *ssl;
    X509     *leaf;
    uint8_t   md[HG_TLS_PIN_LEN];
    uint8_t  *pin;

    ssl = X509_STORE_CTX_get_ex_data(store,
                                     SSL_get_ex_data_X509_STORE_CTX_idx());
    if (ssl == NULL) {
        return ok;
    }

    pin = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), hg_tls_pin_index);
    if (pin == NULL) {
        return ok;
    }

    leaf = X509_STORE_CTX_get0_cert(store);

    if (leaf != NULL && hg_tls_spki_sha256(leaf, md) == HG_OK
        && CRYPTO_memcmp(md, pin, HG_TLS_PIN_LEN) == 0)
    {
        X509_STORE_CTX_set_error(store, X509_V_OK);
        return 1;
    }

    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}


static void
hg_tls_pin_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
    (void) parent;
    (void) ad;
    (void) idx;
    (void) argl;
    (void) argp;

    OPENSSL_free(ptr);
}


/*
 * OpenSSL queues the chain of causes, the root cause first: a failed
 * fopen() as an errno, a parse error as "no start line" and so on.
 */
static void
hg_tls_error(char *err, size_t errlen, const char *what, const char *file)
{
    char           reason[128];
    unsigned long  e;
    const char    *text;

    e = ERR_peek_error();
    text = NULL;

    if (e != 0 && ERR_SYSTEM_ERROR(e)) {
        text = strerror(ERR_GET_REASON(e));

    } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER) {
        /* the decoder only says "unsupported" */
        text = "no PEM private key found";

    } else if (e != 0) {
        text = ERR_reason_error_string(e);
    }

    snprintf(reason, sizeof(reason), "%s", text ? text : "unknown error");
    reason[0] = (char) tolower((unsigned char) reason[0]);

    snprintf(err, errlen, "%s \"%s\": %s", what, file, reason);

    ERR_clear_error();
}
