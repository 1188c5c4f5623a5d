# hopgate-agent --metrics HOST:PORT: GET /metrics on the agent's own
# loop, in the Prometheus text format, parsed strictly.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Prometheus;
use IO::Socket::INET;
use Time::HiRes ();

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();


# the agent's metrics, parsed; (undef, error) when they do not parse
sub agent_metrics {
    my ($port) = @_;
    my ($rc, $out) = HopGate::Fixture::curl("http://127.0.0.1:$port/metrics");
    my $m = eval { HopGate::Prometheus::parse($out) };
    return ($m, $@, $out);
}


# a sample's value, undef when there is none or the scrape did not parse
# (so a bad scrape fails the checks that need it, and nothing dies)
sub sample {
    my ($m, @what) = @_;
    return $m ? $m->value(@what) : undef;
}


sub http_status {
    my ($port, @args) = @_;
    my ($rc, $out) = HopGate::Fixture::curl(
        "http://127.0.0.1:$port/" . (shift @args), '-o', '/dev/null',
        '-w', '%{http_code}', @args);
    return $out;
}

run_tests();

__DATA__

=== TEST 1: sessions per worker, their RTT, and the streams served
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $port = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(
    args => ['--metrics', "127.0.0.1:$port"]);
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr{metrics on http://127\.0\.0\.1:$port/metrics},
                 "the agent says where its metrics are");

my $ok = 0;
for (1 .. 7) {
    my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
    $ok++ if $code eq '200';
}
Test::More::is($ok, 7, "7 requests");

# a stream ends on the agent once the edge acknowledged its last bytes
my ($m, $err, $text);
my $deadline = Time::HiRes::time() + 10;
while (1) {
    ($m, $err, $text) = main::agent_metrics($port);
    last if !$m || ($m->value('hopgate_agent_open_streams') // -1) == 0
            || Time::HiRes::time() > $deadline;
    Time::HiRes::sleep(0.05);
}
Test::More::ok($m, "the agent's metrics parse") or Test::More::diag($err);

if ($m && grep { -x "$_/promtool" } split /:/, $ENV{PATH}) {
    my $file = HopGate::Fixture::hopgate_dir() . '/agent-scrape.txt';
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    my $lint = `promtool check metrics < $file 2>&1`;
    Test::More::is($? >> 8, 0, "promtool agrees") or Test::More::diag($lint);
}

Test::More::is(main::sample($m, 'hopgate_agent_info', version => '0.1.0',
                            domain => 'app.test',
                            server => '127.0.0.1:'
                                      . HopGate::Fixture::edge_port()),
               1, "hopgate_agent_info says what the agent serves");
Test::More::is(main::sample($m, 'hopgate_agent_edge_workers'), 2,
               "2 edge workers");
Test::More::is(main::sample($m, 'hopgate_agent_sessions', state => 'ready'),
               2, "2 ready sessions");
Test::More::is(main::sample($m, 'hopgate_agent_worker_sessions',
                            worker => $_), 1, "one for worker $_") for 0, 1;
for my $w (0, 1) {
    # measured: above zero and far below the 333 ms a session starts from
    my $rtt = main::sample($m, 'hopgate_agent_worker_rtt_seconds',
                           worker => $w) // 0;
    Test::More::ok($rtt > 0 && $rtt < 0.1,
                   "worker $w has a measured RTT ($rtt s)");
}
Test::More::is(main::sample($m, 'hopgate_agent_streams_total'), 7,
               "7 streams");
Test::More::is(main::sample($m, 'hopgate_agent_open_streams'), 0,
               "none open");
Test::More::is(main::sample($m, 'hopgate_agent_reconnects_total'), 0,
               "no reconnects");
Test::More::is(main::sample($m, 'hopgate_agent_target_errors_total'), 0,
               "no target errors");
Test::More::cmp_ok(time - (main::sample($m,
                               'hopgate_agent_start_time_seconds') // 0),
                   '<', 60, "started recently");

Test::More::is(main::http_status($port, 'metrics', '-I'), '200',
               "HEAD /metrics");
Test::More::is(main::http_status($port, 'other'), '404', "GET /other: 404");
Test::More::is(main::http_status($port, 'metrics', '-X', 'POST'), '405',
               "POST: 405");
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 2: a local target that refuses is counted
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
    # refused
--- init
my $port = HopGate::Fixture::free_port();
my $closed = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(
    to => "127.0.0.1:$closed", args => ['--metrics', "127.0.0.1:$port"]);
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);

my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
Test::More::is($code, '502', "the target refused: 502");

my ($m, $err) = main::agent_metrics($port);
Test::More::ok($m, "the metrics parse") or Test::More::diag($err);
Test::More::is(main::sample($m, 'hopgate_agent_target_errors_total'), 1,
               "one target error");
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 502



=== TEST 3: a metrics address that cannot be had is an error at start
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        return 204;
    }
--- init
my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Proto => 'tcp', Listen => 1)
    or die "cannot hold a port: $!";
my $agent = HopGate::Fixture::start_agent(
    args => ['--metrics', '127.0.0.1:' . $busy->sockport]);
Test::More::is(HopGate::Fixture::stop_agent($agent, 'ZERO', 5), 1,
               "exit code 1");
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/--metrics 127\.0\.0\.1:\d+: cannot listen/,
                 "and says why");
--- request
GET /
--- error_code: 204
