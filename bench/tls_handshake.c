/*
 * Full TLS handshakes against one address, one after another: no session
 * resumption, SNI set, nothing verified (the server's cost is measured,
 * not the client's trust). For bench/acme_handshake.
 *
 *   tls_handshake HOST PORT SNI COUNT      prints "handshakes seconds"
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


int
main(int argc, char **argv)
{
    int                 fd, one, i, count, ok;
    double              start;
    SSL                *ssl;
    SSL_CTX            *ctx;
    struct sockaddr_in  sin;

    if (argc != 5) {
        fprintf(stderr, "usage: tls_handshake HOST PORT SNI COUNT\n");
        return 2;
    }

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1) {
        fprintf(stderr, "tls_handshake: bad address %s\n", argv[1]);
        return 2;
    }

    count = atoi(argv[4]);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);

    ok = 0;
    start = now();

    for (i = 0; i < count; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1) {
            perror("connect");
            close(fd);
            return 1;
        }

        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, argv[3]);

        if (SSL_connect(ssl) == 1) {
            ok++;
            SSL_shutdown(ssl);
        }

        SSL_free(ssl);
        close(fd);
    }

    printf("%d %.6f\n", ok, now() - start);

    SSL_CTX_free(ctx);

    return ok == count ? 0 : 1;
}
