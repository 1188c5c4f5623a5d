# The TCP carrier with several workers: a connection lands on whichever
# worker accepts it, so the agent dials until HELLO_ACK has shown it every
# worker (the edge refusing a second session of it in one worker); a
# reload sends GOAWAY on TCP as on UDP, so a download across it
# completes, also on an edge with no UDP listener at all; and a tunnel
# connection reset under a transfer makes the agent dial again at once:
# the request in flight fails fast, new ones are served.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;
use POSIX ();
use Time::HiRes qw(time sleep);

hopgate_init();
master_on();
workers(4);
no_shuffle();
no_root_location();

# an edge with tunnels only: no hopgate_listen, no UDP certificate
$ENV{TEST_NGINX_TCP_ONLY} = join "\n    ",
    'hopgate_registry file:' . hopgate_dir() . '/registry;',
    'upstream tunnels { hopgate; }',
    'server {',
    "    listen 127.0.0.1:$ENV{TEST_NGINX_TUNNEL_PORT} ssl reuseport;",
    '    ssl_certificate ' . hopgate_dir() . '/edge.pem;',
    '    ssl_certificate_key ' . hopgate_dir() . '/edge.key;',
    '    location = /.hopgate/tunnel { hopgate_tunnel; }',
    '}';


# a download in a child: returns a sub that waits for (code, sha, size)
sub download {
    my ($size, @args) = @_;
    my $result = HopGate::Fixture::hopgate_dir() . "/download.$$";
    unlink $result;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
            '-H', 'Host: app.test', @args);
        open my $fh, '>', $result;
        print $fh "$code $sha $got " . time . "\n";
        close $fh;
        POSIX::_exit(0);
    }
    return sub {
        waitpid $pid, 0;
        open my $fh, '<', $result or return ();
        return split ' ', scalar <$fh>;
    };
}


sub covered {
    my ($agent, $n) = @_;
    my %w = map { $_ => 1 } HopGate::Fixture::agent_log($agent)
        =~ /connected to worker (\d+)\/4 of \S+ over tcp/g;
    return scalar keys %w;
}

run_tests();

__DATA__

=== TEST 1: 4 workers: the agent covers every one over TCP
--- http_config
    $TEST_NGINX_TCP_ONLY
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $t0 = time;
my $agent = HopGate::Fixture::start_agent(transport => 'tcp');
my $deadline = time + 10;
sleep 0.05 while main::covered($agent) < 4 && time < $deadline;
Test::More::is(main::covered($agent), 4,
               sprintf 'all 4 workers covered in %.2f s', time - $t0);
my @dups = HopGate::Fixture::agent_log($agent) =~ /landed on a worker already covered/g;
Test::More::diag(scalar(@dups) . ' dials landed on a covered worker');
# every worker serves: many requests spread over the workers
my %codes;
for (1 .. 40) {
    my ($code) = HopGate::Fixture::http_get('/hello');
    $codes{$code}++;
}
Test::More::is_deeply(\%codes, { 200 => 40 }, '40 requests, all 200');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 2: a reload during a download over TCP (no UDP listener at all): it completes, the agent moves to the new workers
--- http_config
    $TEST_NGINX_TCP_ONLY
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
    }
--- init
my $agent = HopGate::Fixture::start_agent(transport => 'tcp');
my $deadline = time + 10;
sleep 0.05 while main::covered($agent) < 4 && time < $deadline;
my $size = 100 * 1024 * 1024;
my $wait = main::download($size, '--limit-rate', '25M');
sleep 1;
my ($master, @old) = HopGate::Fixture::nginx_pids();
kill 'HUP', $master;
my ($code, $sha, $got) = $wait->();
Test::More::is($code, 200, 'the download answered 200');
Test::More::is($got, $size, 'it completed across the reload');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size),
               'and arrived intact');
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent, qr/worker \d+ is going away \(edge shutting down\)/, 4, 5),
                   '>=', 4, 'the old workers said GOAWAY over TCP');
my $n = HopGate::Fixture::agent_wait($agent, qr/connected to worker \d+\/4 of \S+ over tcp/, 8, 10);
Test::More::cmp_ok($n, '>=', 8, 'the agent covers the new workers too');
$deadline = time + 10;
sleep 0.1 while (grep { kill 0, $_ } @old) && time < $deadline;
Test::More::ok(!(grep { kill 0, $_ } @old), 'the old workers exited');
my ($c) = HopGate::Fixture::http_get('/hello');
Test::More::is($c, '200', 'a request after the reload: 200');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- timeout: 10
--- no_error_log
[alert]
[crit]
open socket



=== TEST 3: the tunnel connection reset under a transfer: it fails fast, the agent dials again, new requests are served
--- http_config
    $TEST_NGINX_TCP_ONLY
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
    }
--- init
my $relay = HopGate::Relay::start_tcp(
    to => "127.0.0.1:$ENV{TEST_NGINX_TUNNEL_PORT}");
my $agent = HopGate::Fixture::start_agent(transport => 'tcp',
    tcp_server => "127.0.0.1:$relay->{port}");
my $deadline = time + 10;
sleep 0.05 while main::covered($agent) < 4 && time < $deadline;
Test::More::is(main::covered($agent), 4, 'every worker covered through the relay');

my $size = 200 * 1024 * 1024;
my $wait = main::download($size, '--limit-rate', '20M', '--max-time', '30');
sleep 1;
my $t_reset = time;
HopGate::Relay::reset_tcp($relay);
my ($code, $sha, $got, $ended) = $wait->();
Test::More::ok($got < $size, "the download in flight broke ($got bytes)");
Test::More::ok($ended - $t_reset < 3,
               sprintf 'it failed %.2f s after the reset, not at a timeout',
               $ended - $t_reset);

# requests right after: they wait for the agent's new sessions
my %codes;
for (1 .. 20) {
    my ($c) = HopGate::Fixture::http_get('/hello');
    $codes{$c}++;
}
Test::More::is_deeply(\%codes, { 200 => 20 }, '20 requests after it, all 200');
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent, qr/connected to worker \d+\/4 of \S+ over tcp/, 5, 10),
                   '>=', 5, 'the agent dialled again');
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/session to worker \d+ \(tcp\) closed: the TCP connection to 127\.0\.0\.1:\d+ (was closed|failed)/,
                 'it says what happened');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- timeout: 10
--- no_error_log
[alert]
[crit]
