# Requests through the tunnel: nginx with the module, the real agent, the
# local app (t/lib/hopgate-app). The agent serves app.test.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;

hopgate_init();
no_shuffle();
no_root_location();

add_block_preprocessor(sub {
    my $block = shift;
    # each block gets a fresh nginx; its agent connects once it is up
    if (!defined $block->init) {
        $block->set_value('init', 'HopGate::Fixture::start_agent(); '
            . 'HopGate::Fixture::agent_wait($HopGate::Fixture::last, '
            . 'qr/connected to/, 1)');
    }
});

run_tests();

__DATA__

=== TEST 1: a GET travels through the tunnel
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- error_code: 200



=== TEST 2: the domain comes from Host with any case, port or trailing dot
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- request
GET /hello
--- more_headers
Host: App.Test.:8080
--- response_body
hello from the local app



=== TEST 3: hopgate_route chooses the domain
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- request
GET /hello
--- more_headers
Host: whatever.example
--- response_body
hello from the local app



=== TEST 4: a POST body goes up and comes back
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- request
POST /echo
the body of the request
--- response_body chomp
the body of the request



=== TEST 5: a chunked request body reaches the app whole
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_request_buffering off;
    }
--- raw_request eval
"POST /upload HTTP/1.1\r
Host: app.test\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
5\r
hello\r
6\r
 world\r
0\r
\r
"
--- response_body eval
"11 " . Digest::SHA::sha256_hex("hello world") . "\n"



=== TEST 6: a chunked response arrives whole
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
    }
--- request
GET /bytes/70000?chunked=1
--- response_body eval
HopGate::Fixture::pattern_chunk(0, 70000)



=== TEST 7: HEAD has headers and no body
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- request
HEAD /bytes/1234
--- response_headers
Content-Length: 1234
--- response_body



=== TEST 8: 204 passes through
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- request
GET /status/204
--- error_code: 204
--- response_body



=== TEST 9: 304 passes through
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- request
GET /status/304
--- error_code: 304
--- response_body



=== TEST 10: the agent learns the client, the scheme and the request id
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-Id $request_id;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);

# what the app received, and what the agent heard from the edge
my ($code, $head) = HopGate::Fixture::http_get('/headers', 'app.test');
Test::More::is($code, 200, 'the app echoes the request head');
Test::More::like($head, qr/^X-Forwarded-For: 127\.0\.0\.1\r?$/mi,
                 'the client address reaches the app');
Test::More::like($head, qr/^X-Forwarded-Proto: http\r?$/mi,
                 'and the scheme');
my ($id) = $head =~ /^X-Request-Id: ([0-9a-f]{32})\r?$/mi;
Test::More::ok($id, 'and the request id');

Test::More::is(HopGate::Fixture::agent_wait($agent,
                   qr/stream \d+ opened for 127\.0\.0\.1 \(http, request \Q$id\E\)/,
                   1, 5), 1,
               'the agent learned the client, the scheme and the same id')
    if $id;
Test::More::is(HopGate::Fixture::agent_wait($agent,
                   qr/stream \d+ GET \/headers 200 .* client=127\.0\.0\.1 request=\Q$id\E/,
                   1, 5), 1,
               'and logs them on its line for the stream')
    if $id;
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 11: a registered domain whose agent is away gets the branded 502 after the wait
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
--- request
GET /hello
--- more_headers
Host: other.test
--- error_code: 502
--- response_body_like chomp
tunnel offline
--- error_log
no tunnel for "other.test" came up in time (no agent connected within 300ms)



=== TEST 12: error_page overrides the branded page
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_connect_timeout 200ms;
        proxy_pass http://tunnels;
        error_page 502 = /sorry;
    }
    location = /sorry {
        return 200 "our own page\n";
    }
--- request
GET /hello
--- more_headers
Host: other.test
--- error_code: 200
--- response_body
our own page



=== TEST 13: a backup server takes over when there is no tunnel
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    upstream with_backup {
        hopgate;
        server 127.0.0.1:$TEST_NGINX_APP_PORT backup;
    }
--- config
    location / {
        hopgate_connect_timeout 200ms;
        proxy_pass http://with_backup;
    }
--- request
GET /hello
--- more_headers
Host: nobody.test
--- response_body
hello from the local app
--- error_code: 200



=== TEST 14: a refused local connection answers 502 at once, naming the local service
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
HopGate::Fixture::start_agent(to => '127.0.0.1:'
                                    . HopGate::Fixture::free_port());
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
--- request
GET /hello
--- error_code: 502
--- response_body_like chomp
local service unavailable.*Failed at: <b>local service</b>
--- timeout: 3



=== TEST 15: a response that ends where the local connection ends (no length, no chunks) ends for the visitor too
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
--- request
GET /until-close
--- response_body
until the end
--- timeout: 5
