# Big bodies, many requests, websockets and slow readers through the
# tunnel, with the memory of nginx's worker and of the agent watched from
# outside (peak RSS from /proc).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();
worker_connections(2048);

our $MiB = 1024 * 1024;

sub start_tunnel {
    my $agent = HopGate::Fixture::start_agent(log_level => 'info');
    HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
    return $agent;
}

# passes if process $pid's peak RSS is below $limit MiB; a process that
# is gone (crashed, or a zombie) has nothing to measure and fails
sub peak_below {
    my ($pid, $limit, $what) = @_;
    my $kb = defined $pid ? HopGate::Fixture::rss_kb($pid) : undef;
    return Test::More::ok(0, "$what: process " . ($pid // '(none)')
                             . " is gone, no peak RSS to measure")
        unless defined $kb;
    return Test::More::cmp_ok($kb / 1024, '<', $limit,
                              sprintf "%s peak RSS %.1f MiB < %d MiB",
                              $what, $kb / 1024, $limit);
}

run_tests();

__DATA__

=== TEST 1: 100 MiB down and 100 MiB up arrive intact in bounded memory
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_request_buffering off;
        client_max_body_size 0;
    }
--- init
my $agent = main::start_tunnel();
my ($worker) = HopGate::Fixture::worker_pids();
my $size = 100 * $main::MiB;

my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size");
Test::More::is($code, 200, "100 MiB download: status 200");
Test::More::is($got, $size, "100 MiB download: every byte");
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size),
               "100 MiB download: the hash matches");

my $file = HopGate::Fixture::hopgate_dir() . "/upload.bin";
open my $fh, '>', $file or die $!;
binmode $fh;
print $fh HopGate::Fixture::pattern_chunk($_ * 65536, 65536)
    for 0 .. $size / 65536 - 1;
close $fh;

my ($rc, $out) = HopGate::Fixture::curl('/upload', '--data-binary', "\@$file",
                                        '-H', 'Content-Type: application/x');
unlink $file;
Test::More::is($out, "$size " . HopGate::Fixture::pattern_sha256($size)
                     . "\n", "100 MiB upload: the app got every byte");

# the worker that carried both transfers, not a replacement
main::peak_below($worker, 64, "nginx worker");
main::peak_below($agent->{pid}, 64, "agent");
--- request
GET /hello
--- response_body
hello from the local app
--- timeout: 10



=== TEST 2: 200 concurrent requests all succeed
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
main::start_tunnel();
my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port() . '/bytes/20000';
my @args = ('--parallel', '--parallel-max', '200', '-o', '/dev/null',
            '-w', '%{http_code}\n');
my ($rc, $out) = HopGate::Fixture::curl($url, @args,
                                        map { ($url, '-o', '/dev/null') }
                                        1 .. 199);
my @codes = split /\n/, $out;
Test::More::is(scalar @codes, 200, "200 responses");
Test::More::is(scalar(grep { $_ eq '200' } @codes), 200,
               "all 200 answered 200")
    or Test::More::diag("codes: @codes");
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 3: a websocket echoes through the tunnel
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
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
main::start_tunnel();
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:'
                              . HopGate::Fixture::nginx_port(),
                              Proto => 'tcp') or die $!;
print $s "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
       . "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
my $head = '';
while (my $l = <$s>) { $head .= $l; last if $l eq "\r\n" }
Test::More::like($head, qr{^HTTP/1\.1 101}, "the upgrade is accepted");
Test::More::like($head, qr{Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=},
                 "with the app's accept key");

for my $msg ("hello websocket", "x" x 300) {
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
    read($s, my $echo, $l);
    Test::More::is($echo, $msg, "a $len-byte message comes back");
}
close $s;
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 4: a slow reader holds memory down on both sides
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
    }
--- init
my $agent = main::start_tunnel();
my ($worker) = HopGate::Fixture::worker_pids();
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:'
                              . HopGate::Fixture::nginx_port(),
                              Proto => 'tcp') or die $!;
setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 65536);
my $size = 200 * $main::MiB;
print $s "GET /bytes/$size HTTP/1.1\r\nHost: app.test\r\n"
       . "Connection: close\r\n\r\n";

# 100 KiB/s for 4 s
my ($got, $start) = (0, time);
while (time - $start < 4) {
    my $n = sysread($s, my $buf, 10240);
    last unless $n;
    $got += $n;
    my $due = $got / (100 * 1024) - (time - $start);
    sleep $due if $due > 0;
}
# measured while the response is still in flight
main::peak_below($worker, 64, "nginx worker");
main::peak_below($agent->{pid}, 64, "agent");
close $s;
Test::More::cmp_ok($got, '<', 2 * $main::MiB,
                   "the reader really was slow ($got bytes in 4 s)");
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 5: 3000 requests, 64 at a time, through the sanitizer build of the agent
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
    location = /done {
        return 200 "done\n";
    }
--- init
my $root = "$FindBin::Bin/..";
my $out = `make -s -C '$root' asan 2>&1`;
Test::More::is($?, 0, "the sanitizer build of the agent") or Test::More::diag($out);
my $build = ($ENV{HOPGATE_BUILD} || "$root/build") . '/asan';
my $agent = HopGate::Fixture::start_agent(
    binary => "$build/hopgate-agent", log_level => 'warn',
    env => { ASAN_OPTIONS => 'detect_leaks=1',
             UBSAN_OPTIONS => 'print_stacktrace=1:halt_on_error=1' });
HopGate::Fixture::agent_wait($agent, qr/hopgate-agent/, 1, 10);
sleep 1;

my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port() . '/hello';
my @args = ('--parallel', '--parallel-max', '64', '-o', '/dev/null',
            '-w', '%{http_code}\n');
my ($rc, $codes) = HopGate::Fixture::curl($url, @args,
                                          map { ($url, '-o', '/dev/null') }
                                          1 .. 2999);
Test::More::is(scalar(grep { $_ eq '200' } split /\n/, $codes), 3000,
               "3000 of 3000 answered 200");
Test::More::ok(HopGate::Fixture::agent_running($agent), "the agent is alive");
Test::More::is(HopGate::Fixture::stop_agent($agent, 'TERM', 10), 0,
               "and stops cleanly");
Test::More::unlike(HopGate::Fixture::agent_log($agent),
                   qr/Sanitizer|runtime error/,
                   "with no sanitizer report");
--- request
GET /done
--- response_body
done
--- timeout: 10
