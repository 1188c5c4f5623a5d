/*
 * Test certificates: a CA, a server certificate it signs, an unrelated CA.
 * Everything is P-256 and valid from an hour ago for ten years.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "testcert.h"


static EVP_PKEY *hg_testcert_key(void);
static X509 *hg_testcert_issue(const char *cn, long serial, EVP_PKEY *key,
    X509 *issuer, EVP_PKEY *issuer_key, const char *const *exts);
static int hg_testcert_ext(X509 *cert, X509 *issuer, int nid,
    const char *value);
static int hg_testcert_write(const char *path, X509 *cert, X509 *chain,
    EVP_PKEY *key);
static int hg_testcert_pin(EVP_PKEY *key, char out[65]);


/* pairs of NID text and value, NULL-terminated */
static const char *const  hg_testcert_ca_exts[] = {
    "basicConstraints", "critical,CA:TRUE",
    "keyUsage", "critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier", "hash",
    NULL
};

static const char *const  hg_testcert_server_exts[] = {
    "basicConstraints", "critical,CA:FALSE",
    "keyUsage", "critical,digitalSignature",
    "extendedKeyUsage", "serverAuth",
    "subjectKeyIdentifier", "hash",
    "authorityKeyIdentifier", "keyid:always",
    "subjectAltName", "DNS:localhost,IP:127.0.0.1",
    NULL
};


int
hg_testcert_make(const char *dir, hg_testcert_t *tc)
{
    int        rc;
    X509      *ca, *other, *server;
    EVP_PKEY  *ca_key, *other_key, *server_key;

    memset(tc, 0, sizeof(*tc));
    snprintf(tc->dir, sizeof(tc->dir), "%s", dir);
    snprintf(tc->ca, sizeof(tc->ca), "%s/ca.pem", dir);
    snprintf(tc->other_ca, sizeof(tc->other_ca), "%s/other-ca.pem", dir);
    snprintf(tc->cert, sizeof(tc->cert), "%s/server.pem", dir);
    snprintf(tc->key, sizeof(tc->key), "%s/server.key", dir);

    rc = -1;
    ca = other = server = NULL;

    ca_key = hg_testcert_key();
    other_key = hg_testcert_key();
    server_key = hg_testcert_key();

    if (ca_key == NULL || other_key == NULL || server_key == NULL) {
        goto done;
    }

    ca = hg_testcert_issue("HopGate Test CA", 1, ca_key, NULL, ca_key,
                           hg_testcert_ca_exts);
    other = hg_testcert_issue("Unrelated Test CA", 1, other_key, NULL,
                              other_key, hg_testcert_ca_exts);
    if (ca == NULL || other == NULL) {
        goto done;
    }

    server = hg_testcert_issue("localhost", 2, server_key, ca, ca_key,
                               hg_testcert_server_exts);
    if (server == NULL) {
        goto done;
    }

    if (hg_testcert_write(tc->ca, ca, NULL, NULL) != 0
        || hg_testcert_write(tc->other_ca, other, NULL, NULL) != 0
        || hg_testcert_write(tc->cert, server, ca, NULL) != 0
        || hg_testcert_write(tc->key, NULL, NULL, server_key) != 0
        || hg_testcert_pin(server_key, tc->pin) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    X509_free(ca);
    X509_free(other);
    X509_free(server);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(server_key);

    return rc;
}


int
hg_testcert_make_tmp(hg_testcert_t *tc)
{
    char        dir[PATH_MAX];
    const char *tmp;

    tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }

    snprintf(dir, sizeof(dir), "%s/hg-testcert-XXXXXX", tmp);

    if (mkdtemp(dir) == NULL) {
        return -1;
    }

    if (hg_testcert_make(dir, tc) != 0) {
        hg_testcert_remove(tc);
        rmdir(dir);
        return -1;
    }

    return 0;
}


void
hg_testcert_remove(const hg_testcert_t *tc)
{
    unlink(tc->ca);
    unlink(tc->other_ca);
    unlink(tc->cert);
    unlink(tc->key);
    rmdir(tc->dir);
}


static EVP_PKEY *
hg_testcert_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}


static X509 *
hg_testcert_issue(const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
    EVP_PKEY *issuer_key, const char *const *exts)
{
    X509       *cert;
    X509_NAME  *name;

    cert = X509_new();
    if (cert == NULL) {
        return NULL;
    }

    name = X509_get_subject_name(cert);

    if (!X509_set_version(cert, X509_VERSION_3)
        || !ASN1_INTEGER_set(X509_get_serialNumber(cert), serial)
        || X509_gmtime_adj(X509_getm_notBefore(cert), -3600) == NULL
        || X509_gmtime_adj(X509_getm_notAfter(cert), 3650L * 86400) == NULL
        || !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                       (const unsigned char *) "HopGate",
                                       -1, -1, 0)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       (const unsigned char *) cn,
                                       -1, -1, 0)
        || !X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer)
                                              : name)
        || !X509_set_pubkey(cert, key))
    {
        goto failed;
    }

    for ( /* void */ ; *exts != NULL; exts += 2) {
        if (hg_testcert_ext(cert, issuer ? issuer : cert,
                            OBJ_txt2nid(exts[0]), exts[1])
            != 0)
        {
            goto failed;
        }
    }

    if (!X509_sign(cert, issuer_key, EVP_sha256())) {
        goto failed;
    }

    return cert;

failed:

    X509_free(cert);
    return NULL;
}


static int
hg_testcert_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    int              ok;
    X509V3_CTX       ctx;
    X509_EXTENSION  *ext;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);

    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) {
        return -1;
    }

    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);

    return ok ? 0 : -1;
}


static int
hg_testcert_write(const char *path, X509 *cert, X509 *chain, EVP_PKEY *key)
{
    int    ok;
    FILE  *f;

    f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }

    ok = 1;

    if (cert != NULL) {
        ok = ok && PEM_write_X509(f, cert);
    }

    if (chain != NULL) {
        ok = ok && PEM_write_X509(f, chain);
    }

    if (key != NULL) {
        ok = ok && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    }

    if (fclose(f) != 0) {
        ok = 0;
    }

    return ok ? 0 : -1;
}


/* computed here from the key, independently of hg_tls_spki_sha256_hex */
static int
hg_testcert_pin(EVP_PKEY *key, char out[65])
{
    int             len, i;
    unsigned int    mdlen;
    unsigned char  *der, *p, md[EVP_MAX_MD_SIZE];

    len = i2d_PUBKEY(key, NULL);
    if (len <= 0) {
        return -1;
    }

    der = OPENSSL_malloc(len);
    if (der == NULL) {
        return -1;
    }

    p = der;
    i2d_PUBKEY(key, &p);

    if (!EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL)) {
        OPENSSL_free(der);
        return -1;
    }

    OPENSSL_free(der);

    for (i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }

    return 0;
}
