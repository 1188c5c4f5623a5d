/*
 * The cryptography ACME needs (RFC 8555, RFC 7515, RFC 7638), with
 * OpenSSL 3's EVP interfaces: key generation, the account key's JWK and
 * its thumbprint, ES256 JWS (whose signature is the raw r||s, not DER),
 * certificate signing requests, and the self-signed fallback certificate.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <jansson.h>

#include "ngx_hopgate_acme.h"


#define NGX_HOPGATE_ACME_P256_LEN  32


EVP_PKEY *
ngx_hopgate_acme_key_generate(ngx_uint_t type)
{
    if (type == NGX_HOPGATE_ACME_KEY_RSA) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    }

    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}


EVP_PKEY *
ngx_hopgate_acme_key_parse(u_char *pem, size_t len)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL) {
        return NULL;
    }

    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    return pkey;
}


static ngx_int_t
ngx_hopgate_acme_bio_str(BIO *bio, ngx_pool_t *pool, ngx_str_t *out)
{
    char  *data;
    long   len;

    len = BIO_get_mem_data(bio, &data);
    if (len <= 0) {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, data, len);
    out->data[len] = '\0';
    out->len = len;

    return NGX_OK;
}


ngx_int_t
ngx_hopgate_acme_key_pem(EVP_PKEY *pkey, ngx_pool_t *pool, ngx_str_t *out)
{
    BIO        *bio;
    ngx_int_t   rc;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)) {
        rc = ngx_hopgate_acme_bio_str(bio, pool, out);
    }

    BIO_free(bio);

    return rc;
}


ngx_int_t
ngx_hopgate_acme_base64url(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_str_t *out)
{
    ngx_str_t  src;

    src.data = data;
    src.len = len;

    out->data = ngx_pnalloc(pool, ngx_base64_encoded_length(len) + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64url(out, &src);
    out->data[out->len] = '\0';

    return NGX_OK;
}


/* an EC public coordinate, left-padded to the curve's size */
static ngx_int_t
ngx_hopgate_acme_coord(EVP_PKEY *pkey, const char *param, ngx_pool_t *pool,
    ngx_str_t *out)
{
    u_char     buf[NGX_HOPGATE_ACME_P256_LEN];
    BIGNUM    *bn;
    ngx_int_t  rc;

    bn = NULL;

    if (!EVP_PKEY_get_bn_param(pkey, param, &bn)) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (BN_bn2binpad(bn, buf, sizeof(buf)) == sizeof(buf)) {
        rc = ngx_hopgate_acme_base64url(pool, buf, sizeof(buf), out);
    }

    BN_free(bn);

    return rc;
}


/*
 * The account key's JWK, members in lexicographic order with no spaces:
 * that is also the RFC 7638 input of its thumbprint.
 */
ngx_int_t
ngx_hopgate_acme_jwk(EVP_PKEY *pkey, ngx_pool_t *pool, ngx_str_t *jwk,
    ngx_str_t *thumbprint)
{
    u_char      digest[32];
    ngx_str_t   x, y;
    unsigned    dlen;

    if (ngx_hopgate_acme_coord(pkey, OSSL_PKEY_PARAM_EC_PUB_X, pool, &x)
        != NGX_OK
        || ngx_hopgate_acme_coord(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, pool, &y)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    jwk->len = sizeof("{\"crv\":\"P-256\",\"kty\":\"EC\","
                      "\"x\":\"\",\"y\":\"\"}") - 1 + x.len + y.len;
    jwk->data = ngx_pnalloc(pool, jwk->len + 1);
    if (jwk->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(jwk->data, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%V\","
                "\"y\":\"%V\"}%Z", &x, &y);

    if (!EVP_Digest(jwk->data, jwk->len, digest, &dlen, EVP_sha256(), NULL))
    {
        return NGX_ERROR;
    }

    return ngx_hopgate_acme_base64url(pool, digest, dlen, thumbprint);
}


/* ES256: ECDSA P-256 over SHA-256, the signature as r||s */
static ngx_int_t
ngx_hopgate_acme_es256(EVP_PKEY *pkey, u_char *in, size_t inlen,
    u_char out[2 * NGX_HOPGATE_ACME_P256_LEN])
{
    u_char              der[128];
    size_t              derlen;
    ngx_int_t           rc;
    EVP_MD_CTX         *md;
    ECDSA_SIG          *sig;
    const BIGNUM       *r, *s;
    const u_char       *p;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    derlen = sizeof(der);
    rc = NGX_ERROR;

    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1
        && EVP_DigestSign(md, der, &derlen, in, inlen) == 1)
    {
        p = der;
        sig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);

        if (sig) {
            ECDSA_SIG_get0(sig, &r, &s);

            if (BN_bn2binpad(r, out, NGX_HOPGATE_ACME_P256_LEN)
                == NGX_HOPGATE_ACME_P256_LEN
                && BN_bn2binpad(s, out + NGX_HOPGATE_ACME_P256_LEN,
                                NGX_HOPGATE_ACME_P256_LEN)
                   == NGX_HOPGATE_ACME_P256_LEN)
            {
                rc = NGX_OK;
            }

            ECDSA_SIG_free(sig);
        }
    }

    EVP_MD_CTX_free(md);

    return rc;
}


/*
 * A flattened JWS (RFC 8555 6.2): the protected header names the key by
 * its JWK (new accounts) or by the account URL (kid), carries the nonce
 * and the URL; an empty payload is a POST-as-GET.
 */
ngx_int_t
ngx_hopgate_acme_jws(EVP_PKEY *pkey, ngx_pool_t *pool, ngx_str_t *jwk,
    ngx_str_t *kid, ngx_str_t *nonce, ngx_str_t *url, ngx_str_t *payload,
    ngx_str_t *out)
{
    u_char       sig[2 * NGX_HOPGATE_ACME_P256_LEN];
    char        *text;
    size_t       len;
    u_char      *input;
    json_t      *hdr, *key;
    ngx_str_t    prot, pay, sig64;
    ngx_int_t    rc;

    hdr = json_object();
    if (hdr == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    text = NULL;

    json_object_set_new(hdr, "alg", json_string("ES256"));
    json_object_set_new(hdr, "nonce", json_stringn((char *) nonce->data,
                                                   nonce->len));
    json_object_set_new(hdr, "url", json_stringn((char *) url->data,
                                                 url->len));

    if (kid && kid->len) {
        json_object_set_new(hdr, "kid", json_stringn((char *) kid->data,
                                                     kid->len));

    } else {
        key = json_loadb((char *) jwk->data, jwk->len, 0, NULL);
        if (key == NULL) {
            goto done;
        }
        json_object_set_new(hdr, "jwk", key);
    }

    text = json_dumps(hdr, JSON_COMPACT);
    if (text == NULL) {
        goto done;
    }

    if (ngx_hopgate_acme_base64url(pool, (u_char *) text, strlen(text),
                                   &prot)
        != NGX_OK
        || ngx_hopgate_acme_base64url(pool, payload->data, payload->len,
                                      &pay)
           != NGX_OK)
    {
        goto done;
    }

    len = prot.len + 1 + pay.len;
    input = ngx_pnalloc(pool, len);
    if (input == NULL) {
        goto done;
    }

    ngx_sprintf(input, "%V.%V", &prot, &pay);

    if (ngx_hopgate_acme_es256(pkey, input, len, sig) != NGX_OK
        || ngx_hopgate_acme_base64url(pool, sig, sizeof(sig), &sig64)
           != NGX_OK)
    {
        goto done;
    }

    out->len = sizeof("{\"protected\":\"\",\"payload\":\"\","
                      "\"signature\":\"\"}") - 1
               + prot.len + pay.len + sig64.len;
    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        goto done;
    }

    ngx_sprintf(out->data, "{\"protected\":\"%V\",\"payload\":\"%V\","
                "\"signature\":\"%V\"}%Z", &prot, &pay, &sig64);

    rc = NGX_OK;

done:

    if (text) {
        free(text);
    }

    json_decref(hdr);

    return rc;
}


/* a DER CSR for one name (CN and subjectAltName), base64url */
ngx_int_t
ngx_hopgate_acme_csr(EVP_PKEY *pkey, ngx_str_t *domain, ngx_pool_t *pool,
    ngx_str_t *out)
{
    int                 len;
    u_char             *der, *p, *san;
    X509_REQ           *req;
    X509_NAME          *name;
    ngx_int_t           rc;
    X509_EXTENSION     *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    san = ngx_pnalloc(pool, domain->len + sizeof("DNS:"));
    if (san == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(san, "DNS:%V%Z", domain);

    req = X509_REQ_new();
    if (req == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    exts = NULL;

    name = X509_REQ_get_subject_name(req);

    if (!X509_REQ_set_version(req, 0)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       domain->data, (int) domain->len,
                                       -1, 0)
        || !X509_REQ_set_pubkey(req, pkey))
    {
        goto done;
    }

    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, (char *) san);
    if (ext == NULL) {
        goto done;
    }

    exts = sk_X509_EXTENSION_new_null();
    if (exts == NULL || !sk_X509_EXTENSION_push(exts, ext)) {
        X509_EXTENSION_free(ext);
        goto done;
    }

    if (!X509_REQ_add_extensions(req, exts)
        || !X509_REQ_sign(req, pkey, EVP_sha256()))
    {
        goto done;
    }

    len = i2d_X509_REQ(req, NULL);
    if (len <= 0) {
        goto done;
    }

    der = ngx_pnalloc(pool, len);
    if (der == NULL) {
        goto done;
    }

    p = der;
    i2d_X509_REQ(req, &p);

    rc = ngx_hopgate_acme_base64url(pool, der, len, out);

done:

    if (exts) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }

    X509_REQ_free(req);

    return rc;
}


/* the fallback for names with no certificate yet: made at start */
ngx_int_t
ngx_hopgate_acme_self_signed(ngx_pool_t *pool, ngx_str_t *cert,
    ngx_str_t *key)
{
    BIO        *bio;
    X509       *x;
    EVP_PKEY   *pkey;
    X509_NAME  *name;
    ngx_int_t   rc;
    uint64_t    serial;

    pkey = ngx_hopgate_acme_key_generate(NGX_HOPGATE_ACME_KEY_ECDSA);
    if (pkey == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;
    bio = NULL;

    x = X509_new();
    if (x == NULL) {
        goto done;
    }

    if (RAND_bytes((u_char *) &serial, sizeof(serial)) != 1) {
        goto done;
    }

    name = X509_get_subject_name(x);

    if (!X509_set_version(x, 2)
        || !ASN1_INTEGER_set_uint64(X509_get_serialNumber(x),
                                    serial >> 1)
        || !X509_gmtime_adj(X509_getm_notBefore(x), -86400)
        || !X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400)
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       (u_char *) "hopgate fallback", -1,
                                       -1, 0)
        || !X509_set_issuer_name(x, name)
        || !X509_set_pubkey(x, pkey)
        || !X509_sign(x, pkey, EVP_sha256()))
    {
        goto done;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_X509(bio, x)) {
        goto done;
    }

    if (ngx_hopgate_acme_bio_str(bio, pool, cert) != NGX_OK
        || ngx_hopgate_acme_key_pem(pkey, pool, key) != NGX_OK)
    {
        goto done;
    }

    rc = NGX_OK;

done:

    if (bio) {
        BIO_free(bio);
    }

    X509_free(x);
    EVP_PKEY_free(pkey);

    return rc;
}


static time_t
ngx_hopgate_acme_asn1_time(const ASN1_TIME *t)
{
    struct tm  tm;

    if (!ASN1_TIME_to_tm(t, &tm)) {
        return 0;
    }

    return timegm(&tm);
}


/* the validity of the first certificate of a PEM chain */
ngx_int_t
ngx_hopgate_acme_cert_times(u_char *pem, size_t len, time_t *not_before,
    time_t *not_after)
{
    BIO   *bio;
    X509  *x;

    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL) {
        return NGX_ERROR;
    }

    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (x == NULL) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    *not_before = ngx_hopgate_acme_asn1_time(X509_get0_notBefore(x));
    *not_after = ngx_hopgate_acme_asn1_time(X509_get0_notAfter(x));

    X509_free(x);

    if (*not_before == 0 || *not_after == 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Private keys in the database: AES-256-GCM under the key of
 * hopgate_acme_db_key_file, as "enc:v1:" and the base64 of the 12-byte
 * IV, the ciphertext and the 16-byte tag. NUL-terminated.
 */
ngx_int_t
ngx_hopgate_acme_seal(u_char key[32], ngx_str_t *in, ngx_pool_t *pool,
    ngx_str_t *out)
{
    int              len, fin;
    u_char          *buf;
    ngx_str_t        raw, b64;
    ngx_int_t        rc;
    EVP_CIPHER_CTX  *ctx;

    buf = ngx_pnalloc(pool, 12 + in->len + 16);
    if (buf == NULL || RAND_bytes(buf, 12) != 1) {
        return NGX_ERROR;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, buf) == 1
        && EVP_EncryptUpdate(ctx, buf + 12, &len, in->data, (int) in->len)
           == 1
        && EVP_EncryptFinal_ex(ctx, buf + 12 + len, &fin) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16,
                               buf + 12 + len + fin) == 1)
    {
        raw.data = buf;
        raw.len = 12 + len + fin + 16;

        b64.len = ngx_base64_encoded_length(raw.len);
        out->data = ngx_pnalloc(pool, sizeof("enc:v1:") - 1 + b64.len + 1);

        if (out->data) {
            b64.data = ngx_cpymem(out->data, "enc:v1:", sizeof("enc:v1:") - 1);
            ngx_encode_base64(&b64, &raw);
            out->len = sizeof("enc:v1:") - 1 + b64.len;
            out->data[out->len] = '\0';
            rc = NGX_OK;
        }
    }

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


/* NGX_DECLINED: not sealed (plain PEM); NGX_ERROR: not ours, or tampered */
ngx_int_t
ngx_hopgate_acme_unseal(u_char key[32], ngx_str_t *in, ngx_pool_t *pool,
    ngx_str_t *out)
{
    int              len, fin;
    ngx_str_t        b64, raw;
    ngx_int_t        rc;
    EVP_CIPHER_CTX  *ctx;

    if (in->len < sizeof("enc:v1:") - 1
        || ngx_strncmp(in->data, "enc:v1:", sizeof("enc:v1:") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    if (key == NULL) {
        return NGX_ERROR;
    }

    b64.data = in->data + sizeof("enc:v1:") - 1;
    b64.len = in->len - (sizeof("enc:v1:") - 1);

    raw.data = ngx_pnalloc(pool, ngx_base64_decoded_length(b64.len));
    if (raw.data == NULL || ngx_decode_base64(&raw, &b64) != NGX_OK
        || raw.len < 12 + 16)
    {
        return NGX_ERROR;
    }

    out->data = ngx_pnalloc(pool, raw.len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw.data) == 1
        && EVP_DecryptUpdate(ctx, out->data, &len, raw.data + 12,
                             (int) (raw.len - 12 - 16)) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16,
                               raw.data + raw.len - 16) == 1
        && EVP_DecryptFinal_ex(ctx, out->data + len, &fin) == 1)
    {
        out->len = len + fin;
        out->data[out->len] = '\0';
        rc = NGX_OK;
    }

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}
