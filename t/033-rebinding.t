# The agent's address changes under a live session. The agent dials the
# edge through t/lib/hopgate-relay, which
#
# - after 256 MiB of a 1 GiB download swaps its socket towards the edge
#   for a new one (a NAT rebinding): the agent's datagrams suddenly come
#   from another port, and what the edge still sends to the old one is
#   lost. The edge validates the new path (PATH_CHALLENGE /
#   PATH_RESPONSE) and moves the session there; the download completes
#   intact on the same session;
# - in the middle of an upload sends a copy of one of the agent's
#   datagrams from a port of its own, 20 ms ahead of the original and the
#   rest, as an attacker who sees the traffic could: meanwhile the edge
#   sends that port at most three times what it got from it (not its
#   window's worth of the upload), and it is back at the agent's real port
#   with the agent's next datagram, or its answer to the challenge the
#   edge sends there too.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;

hopgate_init();
no_shuffle();
no_root_location();

run_tests();

__DATA__

=== TEST 1: a 1 GiB download survives a rebinding of the agent's port after 256 MiB
--- log_level: info
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_read_timeout 60s;
    }
--- init
my $relay = HopGate::Relay::start(
    to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}",
    rebind_after => 256 * 1024 * 1024);

my $agent = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$relay->{port}", log_level => 'info');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1, 20),
               'the agent connects through the relay');

my $down = 1024 * 1024 * 1024;
my $t0 = Time::HiRes::time();
my ($code, $sha, $size) = HopGate::Fixture::curl_sha("/bytes/$down",
                                                     '-H', 'Host: app.test');
my $t1 = Time::HiRes::time();
Test::More::diag(sprintf "1 GiB in %.1f s (%.0f MB/s)", $t1 - $t0,
                 $down / 1e6 / ($t1 - $t0));

Test::More::is($code, 200, 'the download answers 200');
Test::More::is($size, $down, 'the download has every byte');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($down),
               'the download has the right bytes');

my $moves = HopGate::Relay::rebindings($relay);
Test::More::is(scalar @$moves, 1, 'the relay rebound the agent once');
my $port = @$moves ? $moves->[0]{to} : 0;
Test::More::cmp_ok(@$moves ? $moves->[0]{after} : 0, '<', $down / 2,
                   'in the first half of the download');

# the engine's and the module's view of the move, from the error log
my $log = do {
    local $/;
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or die "error.log: $!";
    <$fh>;
};
Test::More::like($log,
    qr/peer moved to 127\.0\.0\.1:$port: validating the path/,
    'the edge started validating the new port');
Test::More::like($log, qr/path to 127\.0\.0\.1:$port validated in \d+ ms/,
                 'and validated it');
Test::More::like($log,
    qr/session [0-9a-f]+ for "app\.test" moved to 127\.0\.0\.1:$port/,
    'the module followed the session to it');

Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to/, 2, 0.2),
               1, 'the agent never reconnected');
Test::More::ok(HopGate::Fixture::agent_running($agent),
               'the agent is still running');
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
abandoned



=== TEST 2: a copy of the agent's datagram from another port buys that port three times its size, and the upload completes
--- log_level: info
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_read_timeout 60s;
        client_max_body_size 128m;
    }
--- init
my $relay = HopGate::Relay::start(
    to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}",
    forward_copy_after => 16 * 1024 * 1024, forward_copy_lead => 20);

my $agent = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$relay->{port}", log_level => 'info');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1, 20),
               'the agent connects through the relay');

my $up = 64 * 1024 * 1024;
my $file = HopGate::Fixture::hopgate_dir() . '/upload.bin';
open my $fh, '>', $file or die "$file: $!";
binmode $fh;
print $fh HopGate::Fixture::pattern_chunk(0, $up);
close $fh;

my ($rc, $answer) = HopGate::Fixture::curl('/upload', '-H', 'Host: app.test',
    '-H', 'Expect:', '--data-binary', "\@$file");
Test::More::is($rc, 0, 'the upload completes');
Test::More::is($answer, "$up " . HopGate::Fixture::pattern_sha256($up) . "\n",
               'the local app received the upload intact');

my $c = HopGate::Relay::snapshot($relay);
my $f = $c->{forwarder} || { port => 0, sent => 0, got => 0 };
Test::More::diag("forwarder: sent $f->{sent} bytes, got $f->{got} back");
Test::More::cmp_ok($f->{sent}, '>', 0, 'the relay forwarded a copy');
Test::More::cmp_ok($f->{got}, '>', 0,
                   'the edge tried the new port (a challenge at least)');
Test::More::cmp_ok($f->{got}, '<=', 3 * $f->{sent},
                   'and sent it at most three times what came from it');

my ($real) = HopGate::Relay::log_text($relay) =~ /client \S+ via port (\d+)/;
my $log = do {
    local $/;
    open my $el, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or die "error.log: $!";
    <$el>;
};
Test::More::like($log,
    qr/peer moved to 127\.0\.0\.1:$f->{port}: validating the path/,
    'the edge started validating the forwarder\'s port');
Test::More::like($log,
    qr/path to 127\.0\.0\.1:$f->{port} abandoned: the peer (?:is back|(?#
    )answered) at 127\.0\.0\.1:$real/,
    'and gave it up for the agent\'s own port');
Test::More::unlike($log, qr/path to 127\.0\.0\.1:$f->{port} validated/,
                   'which it never validated');

Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to/, 2, 0.2),
               1, 'the agent never reconnected');
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
