# When UDP is blocked: hopgate-agent --transport auto (the default) dials
# UDP, gets no answer (t/lib/hopgate-relay drops every datagram) or a
# refused port, and serves the same tunnel over TLS/TCP through the
# edge's hopgate_tunnel location (TEST_NGINX_HOPGATE_TUNNEL): requests,
# big bodies both ways, many at once, websockets; the edge's metrics and
# status say which carrier each session rides.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();
worker_connections(2048);

our $MiB = 1024 * 1024;

our $TOKEN = 'tcp-test-token-' . join '', map { sprintf '%02x',
                                                int rand 256 } 1 .. 8;
{
    my $file = hopgate_dir() . '/admin.key';
    open my $fh, '>', $file or die "$file: $!";
    print $fh "$TOKEN\n";
    close $fh;
    $ENV{TEST_NGINX_ADMIN_KEY} = $file;
}


# an agent in auto mode whose UDP goes into a relay that drops it all;
# returns (agent, relay, seconds until the first request was served)
sub start_blocked {
    my (%o) = @_;
    my $relay = HopGate::Relay::start(
        to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}", block => 1);
    my $t0 = time;
    my $agent = HopGate::Fixture::start_agent(
        server => "127.0.0.1:$relay->{port}", transport => 'auto',
        log_level => $o{log_level} // 'debug');
    my $served = first_200($t0, 10);
    return ($agent, $relay, $served);
}


# polls GET /hello until it answers 200: seconds since $t0, or undef
sub first_200 {
    my ($t0, $limit) = @_;
    while (time - $t0 < $limit) {
        my ($code) = HopGate::Fixture::http_get('/hello');
        return time - $t0 if $code eq '200';
        sleep 0.05;
    }
    return undef;
}


sub status {
    my ($rc, $out) = HopGate::Fixture::curl('/hopgate/status', '-H',
                                            "Authorization: Bearer $TOKEN");
    my $json = eval { JSON::PP::decode_json($out) };
    return $json ? $json->{sessions} : [];
}

run_tests();

__DATA__

=== TEST 1: UDP dropped: requests are served over TCP within 3 s of the agent's start
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /metrics { hopgate_metrics; }
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my ($agent, $relay, $served) = main::start_blocked();
Test::More::ok(defined $served && $served < 3,
               sprintf 'the first request is served %.2f s after the '
                       . 'agent started', $served // -1);
my $log = HopGate::Fixture::agent_log($agent);
Test::More::like($log, qr/warn \S+: no answer over UDP in 2 s; switching to TLS\/TCP via 127\.0\.0\.1:\d+/,
                 'the agent says why it switched, and to where');
Test::More::like($log, qr/info connected to worker 0\/1 of 127\.0\.0\.1:\d+ over tcp/,
                 'and which carrier its session rides');
my $sessions = main::status();
Test::More::is(scalar(@$sessions), 1, 'the edge has one session');
Test::More::is($sessions->[0]{transport}, 'tcp',
               'hopgate_status shows it on tcp');
sleep 1.2;    # the metrics zone is refreshed each second
my ($rc, $m) = HopGate::Fixture::curl('/metrics');
Test::More::like($m, qr/^hopgate_sessions_by_transport\{transport="tcp"\} 1$/m,
                 'the metrics count it as tcp');
Test::More::like($m, qr/^hopgate_sessions_by_transport\{transport="udp"\} 0$/m,
                 'and none as udp');
my $c = HopGate::Relay::snapshot($relay);
Test::More::cmp_ok($c->{up}{lost} // 0, '>', 0,
                   'the relay did drop the UDP handshake');
Test::More::is($c->{up}{out} // 0, 0, 'and let nothing through');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 2: over TCP, 100 MiB down and 100 MiB up arrive intact, memory bounded
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_request_buffering off;
        proxy_max_temp_file_size 0;
        client_max_body_size 200m;
    }
--- init
my ($agent) = main::start_blocked(log_level => 'info');
my ($worker) = HopGate::Fixture::worker_pids();
my $size = 100 * $main::MiB;
my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
                                                    '-H', 'Host: app.test');
Test::More::is($code, 200, '100 MiB download: 200');
Test::More::is($got, $size, '100 MiB download: every byte');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size),
               '100 MiB download: the hash matches');

my $file = HopGate::Fixture::hopgate_dir() . '/upload.bin';
open my $fh, '>', $file or die $!;
binmode $fh;
print $fh HopGate::Fixture::pattern_chunk($_ * 65536, 65536)
    for 0 .. $size / 65536 - 1;
close $fh;
my ($rc, $out) = HopGate::Fixture::curl('/upload', '-H', 'Host: app.test',
    '-H', 'Expect:', '--data-binary', "\@$file");
unlink $file;
Test::More::is($out, "$size " . HopGate::Fixture::pattern_sha256($size)
                     . "\n", '100 MiB upload: the app got every byte');

Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/connected to worker \S+ of \S+ over tcp/,
                 'both went over TCP');
for my $p ([$worker, 'nginx worker'], [$agent->{pid}, 'agent']) {
    my $kb = HopGate::Fixture::rss_kb($p->[0]) // 1e9;
    Test::More::cmp_ok($kb / 1024, '<', 64,
                       sprintf '%s peak RSS %.1f MiB < 64 MiB', $p->[1],
                       $kb / 1024);
}
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- timeout: 20



=== TEST 3: over TCP, 200 concurrent requests all succeed
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
main::start_blocked(log_level => 'info');
my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port() . '/bytes/20000';
my @args = ('--parallel', '--parallel-max', '200', '-H', 'Host: app.test',
            '-o', '/dev/null', '-w', '%{http_code}\n');
my ($rc, $out) = HopGate::Fixture::curl($url, @args,
                                        map { ($url, '-o', '/dev/null') }
                                        1 .. 199);
my @codes = split /\n/, $out;
Test::More::is(scalar @codes, 200, '200 responses');
Test::More::is(scalar(grep { $_ eq '200' } @codes), 200,
               'all 200 answered 200')
    or Test::More::diag("codes: @codes");
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 4: over TCP, a websocket echoes
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_read_timeout 10s;
    }
--- init
main::start_blocked(log_level => 'info');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:'
                              . HopGate::Fixture::nginx_port(),
                              Proto => 'tcp') or die $!;
print $s "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
       . "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
my $head = '';
while (my $l = <$s>) { $head .= $l; last if $l eq "\r\n" }
Test::More::like($head, qr{^HTTP/1\.1 101}, 'the upgrade is accepted');
# the last one spans several of the carrier's 16 KiB packets
for my $msg ("hello websocket", "x" x 300, "y" x 60000) {
    my @mask = (1, 2, 3, 4);
    my @d = unpack 'C*', $msg;
    $d[$_] ^= $mask[$_ % 4] for 0 .. $#d;
    my $len = length $msg;
    my $frame = pack('C', 0x81)
              . ($len < 126 ? pack('C', 0x80 | $len)
                            : pack('Cn', 0x80 | 126, $len))
              . pack('C4', @mask) . pack('C*', @d);
    print $s $frame;
    read($s, my $h, 2);
    my $l = unpack('C', substr($h, 1, 1)) & 0x7f;
    if ($l == 126) { read($s, my $x, 2); $l = unpack 'n', $x }
    my $echo = '';
    while (length $echo < $l) {
        read($s, my $part, $l - length $echo) or last;
        $echo .= $part;
    }
    Test::More::is($echo, $msg, "a $len-byte message comes back");
}
close $s;
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 5: no UDP listener at all (a refused port): over TCP at once
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $closed = HopGate::Fixture::free_port();
my $t0 = Time::HiRes::time();
my $agent = HopGate::Fixture::start_agent(server => "127.0.0.1:$closed",
                                          transport => 'auto');
my $served = main::first_200($t0, 10);
Test::More::ok(defined $served && $served < 1,
               sprintf 'served %.2f s after the start', $served // -1);
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/warn 127\.0\.0\.1:$closed: its UDP port is unreachable; switching to TLS\/TCP/,
                 'the agent says why');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 6: auto with UDP working stays on UDP: no TCP connection at all
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent(transport => 'auto');
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
sleep 2.5;
my $log = HopGate::Fixture::agent_log($agent);
Test::More::like($log, qr/connected to worker 0\/1 of \S+ \(session \S+, rtt [\d.]+ ms\) over udp/,
                 'connected over UDP');
Test::More::unlike($log, qr/over tcp|switching/, 'TCP was never dialled');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- no_error_log
over tcp
tunnel upgraded



=== TEST 7: --transport udp never falls back, however long UDP is dropped
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        hopgate_connect_timeout 1s;
        proxy_pass http://tunnels;
    }
--- init
my $relay = HopGate::Relay::start(
    to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}", block => 1);
my $agent = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$relay->{port}", transport => 'udp');
sleep 4;
my $log = HopGate::Fixture::agent_log($agent);
Test::More::unlike($log, qr/over tcp|switching|connected to/,
                   'no TCP, no session');
Test::More::like($log, qr/dialling \S+ (for worker \d+ )?over udp/,
                 'it keeps to UDP');
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 502
