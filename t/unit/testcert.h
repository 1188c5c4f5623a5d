/*
 * Test certificates made on the fly with the OpenSSL API, so no test
 * depends on files that expire: a P-256 CA, a server certificate it signs
 * (CN and subjectAltName DNS:localhost, IP:127.0.0.1), and a second,
 * unrelated CA for the "wrong CA" cases. Shared by every unit test.
 */

#ifndef HG_TESTCERT_H
#define HG_TESTCERT_H

#include <limits.h>


typedef struct {
    char  dir[PATH_MAX];
    char  ca[PATH_MAX];           /* the CA that signed the server */
    char  other_ca[PATH_MAX];     /* an unrelated CA */
    char  cert[PATH_MAX];         /* server certificate, then the CA */
    char  key[PATH_MAX];          /* server private key */
    char  pin[65];                /* hex SHA-256 of the server's SPKI */
} hg_testcert_t;


/* writes the PEM files into dir (which must exist); 0 on success */
int hg_testcert_make(const char *dir, hg_testcert_t *tc);

/* the same in a fresh directory under $TMPDIR (or /tmp) */
int hg_testcert_make_tmp(hg_testcert_t *tc);

/* removes the files and the directory hg_testcert_make_tmp created */
void hg_testcert_remove(const hg_testcert_t *tc);

#endif /* HG_TESTCERT_H */
