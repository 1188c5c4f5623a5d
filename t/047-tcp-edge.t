# The hopgate_tunnel location itself: what it answers to requests that are
# not a tunnel upgrade, what happens to bytes after the 101 that break the
# protocol (a clear error, the connection closed, the worker alive and
# serving), HTTP/2 on the listener, and nginx's own access rules applied
# to tunnels.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Socket::SSL;
use IO::Select;
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();


# a TLS connection to the tunnel server: sends $bytes, reads until the
# server closes (at most $secs); returns (what came, 1 if it closed)
sub tls_exchange {
    my ($bytes, $secs) = @_;
    my $s = IO::Socket::SSL->new(
        PeerAddr => "127.0.0.1:$ENV{TEST_NGINX_TUNNEL_PORT}",
        SSL_verify_mode => SSL_VERIFY_NONE,
        SSL_alpn_protocols => ['http/1.1']) or die "TLS: $SSL_ERROR";
    print $s $bytes;
    my ($in, $closed) = ('', 0);
    my $deadline = time + ($secs // 5);
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $s->pending || $sel->can_read(0.1);
        my $n = sysread($s, my $buf, 65536);
        if (!$n) {
            next if !defined $n && $SSL_ERROR == SSL_WANT_READ;
            $closed = 1;
            last;
        }
        $in .= $buf;
    }
    close $s;
    return ($in, $closed);
}


sub upgrade_request {
    my (%h) = @_;
    return "GET /.hopgate/tunnel HTTP/1.1\r\nHost: edge\r\n"
         . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
}


# an agent over UDP, to show that the others are not affected
sub udp_agent {
    my $agent = HopGate::Fixture::start_agent(log_level => 'info');
    HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
    return $agent;
}

run_tests();

__DATA__

=== TEST 1: a plain GET of the tunnel location is a 400 that names the upgrade it wants
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my ($in, $closed) = main::tls_exchange(main::upgrade_request());
Test::More::like($in, qr{^HTTP/1\.1 400 }, 'the answer is a 400');
Test::More::like($in, qr{\r\nUpgrade: hopgate/1\r\n}i,
                 'with Upgrade: hopgate/1');
--- request
GET /ok
--- response_body
ok
--- error_log
hopgate: tunnel request refused: no "Connection: Upgrade" and "Upgrade: hopgate/1"



=== TEST 2: another upgrade token is a 400; another method a 405
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my ($in) = main::tls_exchange(main::upgrade_request(
    Connection => 'Upgrade', Upgrade => 'hopgate/2'));
Test::More::like($in, qr{^HTTP/1\.1 400 }, 'hopgate/2: 400');
($in) = main::tls_exchange(main::upgrade_request(
    Connection => 'Upgrade', Upgrade => 'websocket'));
Test::More::like($in, qr{^HTTP/1\.1 400 }, 'websocket: 400');
($in) = main::tls_exchange("POST /.hopgate/tunnel HTTP/1.1\r\nHost: e\r\n"
    . "Connection: Upgrade\r\nUpgrade: hopgate/1\r\n"
    . "Content-Length: 0\r\n\r\n");
Test::More::like($in, qr{^HTTP/1\.1 405 }, 'POST: 405');
($in) = main::tls_exchange(main::upgrade_request(
    Connection => 'Upgrade', Upgrade => 'hopgate/1',
    'Content-Length' => 3) . 'abc');
Test::More::like($in, qr{^HTTP/1\.1 400 }, 'a body: 400');
--- request
GET /ok
--- response_body
ok
--- error_log
hopgate: tunnel request for "Upgrade: hopgate/2"; this edge speaks hopgate/1
hopgate: tunnel request with method "POST", not GET
hopgate: tunnel request refused: a request body



=== TEST 3: an oversize length after the 101: the edge says why in a CLOSE and closes; the worker serves on
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
main::udp_agent();
my ($worker) = HopGate::Fixture::worker_pids();
my $t0 = time;
my ($in, $closed) = main::tls_exchange(main::upgrade_request(
    Connection => 'Upgrade', Upgrade => 'hopgate/1') . "\xff\xff" . "x" x 64);
Test::More::like($in, qr{^HTTP/1\.1 101 Switching Protocols\r\n},
                 'the upgrade is accepted');
my ($body) = $in =~ /\r\n\r\n(.*)\z/s;
Test::More::ok(defined $body && length $body > 2
               && unpack('n', $body) == length($body) - 2,
               'then one length-prefixed packet');
Test::More::like($body // '', qr/packet length over 16384/,
                 'a CLOSE that says why');
Test::More::ok($closed && time - $t0 < 3, 'and the connection closes');
my ($w2) = HopGate::Fixture::worker_pids();
Test::More::is($w2, $worker, 'the same worker process');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- error_log
hopgate: protocol violation: packet length over 16384
broke the protocol
--- no_error_log
[alert]
[crit]



=== TEST 4: garbage after the 101 (no packet at all) and a zero length: the same
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
main::udp_agent();
my $up = main::upgrade_request(Connection => 'Upgrade',
                               Upgrade => 'hopgate/1');
my ($in, $closed) = main::tls_exchange($up . "\x00\x05\xff\xff\xff\xff\xff");
Test::More::like($in, qr/malformed packet/, 'garbage: a CLOSE says why');
Test::More::ok($closed, 'garbage: closed');
($in, $closed) = main::tls_exchange($up . "\x00\x00");
Test::More::like($in, qr/packet length 0/, 'zero length: a CLOSE says why');
Test::More::ok($closed, 'zero length: closed');
($in, $closed) = main::tls_exchange($up . "GET / HTTP/1.1\r\n\r\n");
Test::More::like($in, qr/^HTTP\/1\.1 101 .*packet length over 16384/s,
                 'an HTTP request after the 101 is no packet either');
Test::More::ok($closed, 'closed');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 5: http2 on the tunnel's listener: the agent still gets its HTTP/1.1 upgrade; an HTTP/2 request to the location is a 400
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_TUNNEL_PORT ssl http2;
        ssl_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
        ssl_certificate_key $TEST_NGINX_HOPGATE_DIR/edge.key;
        location = /.hopgate/tunnel { hopgate_tunnel; }
    }
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent(transport => 'tcp');
Test::More::ok(HopGate::Fixture::agent_wait($agent,
                                            qr/connected to .* over tcp/),
               'the agent connects over TCP');
my ($rc, $out) = HopGate::Fixture::curl(
    "https://127.0.0.1:$ENV{TEST_NGINX_TUNNEL_PORT}/.hopgate/tunnel",
    '--http2', '-k', '-o', '/dev/null', '-w', '%{http_version} %{http_code}');
Test::More::is($out, '2 400', 'HTTP/2 to the location: 400');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- error_log
not HTTP/1.1 (an HTTP/2 or HTTP/1.0 request cannot upgrade)



=== TEST 6: nginx's access rules apply to tunnels: denied, the agent says what the edge answered
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_TUNNEL_PORT ssl;
        ssl_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
        ssl_certificate_key $TEST_NGINX_HOPGATE_DIR/edge.key;
        location = /.hopgate/tunnel { deny all; hopgate_tunnel; }
    }
--- config
    location / {
        hopgate_route app.test;
        hopgate_connect_timeout 1s;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent(transport => 'tcp');
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr{warn cannot connect to 127\.0\.0\.1:\d+ over tcp: https://127\.0\.0\.1:\d+/\.hopgate/tunnel answered "HTTP/1\.1 403 Forbidden" to the tunnel upgrade}),
    'the agent says the edge answered 403');
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 502
--- error_log
access forbidden by rule
