/*
 * `hopgate-agent keygen DOMAIN`: a new client key and the line that
 * registers it in a file registry, so that the file registry needs no
 * openssl pipeline and never sees the key itself.
 *
 *   hopgate-agent keygen app.example.com
 *       stdout: the key, then "app.example.com SHA256-HEX"
 *   hopgate-agent keygen app.example.com --key-file app.key
 *       the key goes into app.key (created, mode 0600, never replaced);
 *       stdout: the registry line alone, ready for ">> registry"
 *
 * The key is shown once: only its SHA-256 is kept anywhere else, as with
 * the admin API's keys (same format: "hg_" and 64 hex digits of 32 random
 * bytes from the OS).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agent.h"


#define KEYGEN_RAND  32


static void
keygen_usage(FILE *out)
{
    fprintf(out,
        "usage: hopgate-agent keygen DOMAIN [--key-file FILE]\n\n"
        "Makes a new client key for DOMAIN and prints the line that "
        "registers it\nin the edge's file registry (hopgate_registry "
        "file:PATH).\n\n"
        "  --key-file FILE   write the key into FILE (created with mode "
        "0600; an\n"
        "                    existing FILE is never replaced) and print "
        "only the\n"
        "                    registry line, e.g.:\n"
        "                    hopgate-agent keygen app.example.com "
        "--key-file app.key \\\n"
        "                        >> /etc/nginx/hopgate/registry\n"
        "  -h, --help        show this help\n\n"
        "Without --key-file the key is printed first, then the registry "
        "line.\nThe key is shown only this once: the registry keeps its "
        "SHA-256.\n");
}


/*
 * The edge's normalisation (ngx_hopgate_domain_normalize): lower case, no
 * trailing dot; labels of letters, digits, '-' and '_', 1..63 characters.
 */
static int
keygen_domain(const char *in, char *out, size_t outlen)
{
    size_t  i, n, label;
    char    ch;

    n = strlen(in);

    if (n > 0 && in[n - 1] == '.') {
        n--;
    }

    if (n == 0 || n > 253 || n >= outlen) {
        return -1;
    }

    label = 0;

    for (i = 0; i < n; i++) {
        ch = in[i];

        if (ch >= 'A' && ch <= 'Z') {
            ch = (char) (ch - 'A' + 'a');
        }

        if (ch == '.') {
            if (label == 0) {
                return -1;
            }
            label = 0;

        } else if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                   || ch == '-' || ch == '_')
        {
            if (++label > 63) {
                return -1;
            }

        } else {
            return -1;
        }

        out[i] = ch;
    }

    out[n] = '\0';

    return label == 0 ? -1 : 0;
}


static void
keygen_hex(const unsigned char *in, size_t n, char *out)
{
    static const char  hex[] = "0123456789abcdef";
    size_t             i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


/* all of buf, or -1 */
static int
keygen_write(int fd, const char *buf, size_t len)
{
    ssize_t  n;

    while (len > 0) {
        n = write(fd, buf, len);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t) n;
    }

    return 0;
}


static int
keygen_save(const char *path, const char *key)
{
    int   fd, err;
    char  line[AGENT_KEY_MAX + 2];

    /* O_EXCL: an existing key file holds a key someone may still use */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              0600);
    if (fd == -1) {
        fprintf(stderr, "hopgate-agent keygen: cannot create \"%s\": %s%s\n",
                path, strerror(errno),
                errno == EEXIST ? " (an existing key file is never "
                                  "replaced)" : "");
        return -1;
    }

    snprintf(line, sizeof(line), "%s\n", key);

    if (keygen_write(fd, line, strlen(line)) != 0 || fsync(fd) != 0) {
        err = errno;
        close(fd);
        unlink(path);
        fprintf(stderr, "hopgate-agent keygen: cannot write \"%s\": %s\n",
                path, strerror(err));
        OPENSSL_cleanse(line, sizeof(line));
        return -1;
    }

    OPENSSL_cleanse(line, sizeof(line));

    if (close(fd) != 0) {
        fprintf(stderr, "hopgate-agent keygen: cannot write \"%s\": %s\n",
                path, strerror(errno));
        unlink(path);
        return -1;
    }

    return 0;
}


int
agent_keygen_main(int argc, char **argv)
{
    int            i, rc;
    const char    *domain_arg, *key_file;
    char           domain[256], key[AGENT_KEY_MAX + 1];
    char           hash_hex[2 * 32 + 1];
    unsigned char  rnd[KEYGEN_RAND], hash[32];
    unsigned int   hlen;

    domain_arg = NULL;
    key_file = NULL;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            keygen_usage(stdout);
            return AGENT_EXIT_OK;
        }

        if (strcmp(argv[i], "--key-file") == 0 && i + 1 < argc) {
            key_file = argv[++i];

        } else if (strncmp(argv[i], "--key-file=", 11) == 0) {
            key_file = argv[i] + 11;

        } else if (argv[i][0] == '-' || domain_arg != NULL) {
            fprintf(stderr, "hopgate-agent keygen: unexpected argument "
                    "\"%s\" (see keygen --help)\n", argv[i]);
            return AGENT_EXIT_USAGE;

        } else {
            domain_arg = argv[i];
        }
    }

    if (domain_arg == NULL) {
        keygen_usage(stderr);
        return AGENT_EXIT_USAGE;
    }

    if (key_file != NULL && *key_file == '\0') {
        fprintf(stderr, "hopgate-agent keygen: --key-file needs a file "
                "name\n");
        return AGENT_EXIT_USAGE;
    }

    if (keygen_domain(domain_arg, domain, sizeof(domain)) != 0) {
        fprintf(stderr, "hopgate-agent keygen: \"%s\" is not a domain name "
                "(letters, digits, '-' and '_' in dot-separated labels of "
                "at most 63, 253 in all)\n", domain_arg);
        return AGENT_EXIT_USAGE;
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        fprintf(stderr, "hopgate-agent keygen: the system's random number "
                "generator failed\n");
        return AGENT_EXIT_ERROR;
    }

    memcpy(key, AGENT_KEY_PREFIX, sizeof(AGENT_KEY_PREFIX) - 1);
    keygen_hex(rnd, sizeof(rnd), key + sizeof(AGENT_KEY_PREFIX) - 1);
    OPENSSL_cleanse(rnd, sizeof(rnd));

    /* what the edge compares: SHA-256 of the whole key text */
    hlen = 0;
    if (EVP_Digest(key, strlen(key), hash, &hlen, EVP_sha256(), NULL) != 1
        || hlen != sizeof(hash))
    {
        fprintf(stderr, "hopgate-agent keygen: SHA-256 failed\n");
        OPENSSL_cleanse(key, sizeof(key));
        return AGENT_EXIT_ERROR;
    }

    keygen_hex(hash, sizeof(hash), hash_hex);

    rc = AGENT_EXIT_OK;

    if (key_file != NULL) {
        if (keygen_save(key_file, key) != 0) {
            rc = AGENT_EXIT_ERROR;
        } else {
            fprintf(stderr, "hopgate-agent keygen: the key for %s is in "
                    "\"%s\"; append the line below to the edge's registry "
                    "file\n", domain, key_file);
        }

    } else {
        if (isatty(STDOUT_FILENO)) {
            fprintf(stderr, "# the key for %s (shown only now; give it to "
                    "the agent's key file):\n", domain);
        }
        printf("%s\n", key);
        fflush(stdout);
        if (isatty(STDOUT_FILENO)) {
            fprintf(stderr, "# append this line to the edge's registry "
                    "file:\n");
        }
    }

    OPENSSL_cleanse(key, sizeof(key));

    if (rc == AGENT_EXIT_OK) {
        printf("%s %s\n", domain, hash_hex);
        if (fflush(stdout) != 0) {
            fprintf(stderr, "hopgate-agent keygen: cannot write to stdout: "
                    "%s\n", strerror(errno));
            return AGENT_EXIT_ERROR;
        }
    }

    return rc;
}
