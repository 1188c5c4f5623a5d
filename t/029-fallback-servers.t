# The server lines of a hopgate upstream are fallbacks balanced by nginx's
# own round robin: weight, max_fails/fail_timeout, down and backup work as
# in any upstream. No agent runs here: every request's tunnel try fails
# (other.test is registered, but has no session) and the fallbacks answer. The fallbacks are
# extra server blocks of the same nginx, each saying who it is.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;

hopgate_init();
no_shuffle();
no_root_location();

add_block_preprocessor(sub {
    my $block = shift;
    my $servers = <<'EOF';
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "A\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "B\n"; }
EOF
    $block->set_value('http_config', "    \$TEST_NGINX_HOPGATE_HTTP\n"
                                     . $servers . $block->http_config);
    $block->set_value('config', <<'EOF') unless defined $block->config;
    location / {
        hopgate_connect_timeout 20ms;
        proxy_pass http://fallbacks;
    }
EOF
    $block->set_value('more_headers', "Host: other.test\n")
        unless defined $block->more_headers;
});

run_tests();

__DATA__

=== TEST 1: weight distributes requests over the fallbacks (3:1)
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- request eval
[("GET /t") x 8]
--- response_body eval
["A\n", "A\n", "B\n", "A\n", "A\n", "A\n", "B\n", "A\n"]
--- error_code eval
[(200) x 8]



=== TEST 2: equal weights alternate
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- request eval
[("GET /t") x 4]
--- response_body eval
["A\n", "B\n", "A\n", "B\n"]



=== TEST 3: max_fails and fail_timeout take a dead fallback out: it is tried once
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- config
    location / {
        hopgate_connect_timeout 20ms;
        proxy_pass http://fallbacks;
        add_header X-Upstream $upstream_addr;
    }
--- request eval
[("GET /t") x 4]
--- response_body eval
[("B\n") x 4]
--- response_headers_like eval
["X-Upstream: ^other\\.test, 127\\.0\\.0\\.1:\\d+, 127\\.0\\.0\\.1:\\d+\$",
 ("X-Upstream: ^other\\.test, 127\\.0\\.0\\.1:\\d+\$") x 3]



=== TEST 4: a fallback marked down is never tried
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- request eval
[("GET /t") x 3]
--- response_body eval
[("B\n") x 3]



=== TEST 5: a backup fallback waits while a primary one answers
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 backup;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- request eval
[("GET /t") x 3]
--- response_body eval
[("A\n") x 3]



=== TEST 6: the backup answers when the primary fallbacks are dead
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 backup;
    }
--- request
GET /t
--- response_body
B



=== TEST 7: backups alone are tried in turn after the tunnel
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 backup;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 backup;
    }
--- request eval
[("GET /t") x 2]
--- response_body eval
["A\n", "B\n"]



=== TEST 8: a domain that is not registered goes to the fallbacks at once
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location / {
        hopgate_connect_timeout 10s;
        proxy_pass http://fallbacks;
        add_header X-Upstream $upstream_addr;
    }
--- more_headers
Host: nobody.test
--- request
GET /t
--- response_body
A
--- response_headers_like
X-Upstream: ^127\.0\.0\.1:\d+$
--- timeout: 2



=== TEST 9: a request through the tunnel does not use the fallbacks
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
--- more_headers
Host: app.test
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 10: a domain that is not registered while every fallback is down: 502
--- http_config
    upstream fallbacks {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
    }
--- more_headers
Host: nobody.test
--- request
GET /t
--- error_code: 502
--- error_log
no live upstreams
--- no_error_log
[alert]
[crit]
