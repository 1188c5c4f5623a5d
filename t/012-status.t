# hopgate_status: the live sessions of every worker as JSON, published by
# each worker in the metrics zone; it takes the admin key as a bearer
# token and refuses without it, never logging what it was sent.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use JSON::PP ();
use Time::HiRes ();
use POSIX ();

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();

our $TOKEN = 'status-test-token-' . join '', map { sprintf '%02x',
                                                   int rand 256 } 1 .. 8;
{
    my $file = hopgate_dir() . '/admin.key';
    open my $fh, '>', $file or die "$file: $!";
    print $fh "$TOKEN\n";
    close $fh;
    $ENV{TEST_NGINX_ADMIN_KEY} = $file;
}


# GET /hopgate/status with the token: the decoded list of sessions
sub status {
    my ($rc, $out) = HopGate::Fixture::curl('/hopgate/status', '-H',
                                            "Authorization: Bearer $TOKEN");
    my $json = eval { JSON::PP::decode_json($out) };
    Test::More::ok(0, "the status is JSON: $@ ($out)") unless $json;
    return $json ? $json->{sessions} : [];
}


# polls until $cond->(sessions) holds (at most $secs)
sub wait_status {
    my ($cond, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 10);
    while (1) {
        my $s = status();
        return $s if $cond->($s) || Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.2);
    }
}


# the exit status of child $pid, killed if it is not done in $secs
sub reap {
    my ($pid, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $deadline) {
        return $? >> 8 if waitpid($pid, POSIX::WNOHANG()) == $pid;
        Time::HiRes::sleep(0.05);
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return undef;
}

run_tests();

__DATA__

=== TEST 1: the sessions of both workers, with what the edge knows of them
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_buffering off;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);
my %ids = map { $_ => 1 }
          HopGate::Fixture::agent_log($agent) =~ /session ([0-9a-f]{16})/g;

my $s = main::wait_status(sub { @{ $_[0] } == 2 });
Test::More::is(scalar @$s, 2, "two sessions are listed");
Test::More::is(join(',', sort map { $_->{worker} } @$s), '0,1',
               "one in each worker");

for my $x (@$s) {
    Test::More::ok($ids{$x->{session}}, "session $x->{session} is the "
                   . "agent's");
    Test::More::is($x->{domain}, 'app.test', "its domain");
    Test::More::like($x->{agent_addr}, qr/^127\.0\.0\.1:\d+$/,
                     "the agent's address");
    Test::More::is($x->{agent_version}, '0.1.0', "the agent's version");
    Test::More::is($x->{state}, 'ready', "ready");
    Test::More::like($x->{connected_since},
                     qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
                     "connected since, UTC");
    Test::More::cmp_ok($x->{connected_seconds}, '<', 60, "recently");
    Test::More::ok($x->{pid} > 0, "the worker's pid");
    Test::More::ok(defined $x->{$_}, "$_ is there")
        for qw(rtt_ms loss_rate cwnd_bytes open_streams bytes_sent
               bytes_received);
}

# a response in flight shows as an open stream once the records refresh
# (every second): the app holds it open after its first 64 KiB until we
# have looked, so no buffer on the way can finish it early
my $size = 1024 * 1024;
my $url = HopGate::Fixture::hold_url('status', $size);
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my ($code, $sha, $got) = eval { HopGate::Fixture::curl_sha($url) };
    POSIX::_exit(($code // 0) == 200 && ($got // 0) == $size
                 && $sha eq HopGate::Fixture::pattern_sha256($size) ? 0 : 1);
}
Test::More::ok(HopGate::Fixture::hold_wait('status'),
               "the app holds a response open");
$s = main::wait_status(sub {
    grep { $_->{open_streams} == 1 && $_->{bytes_received} >= 65536 }
         @{ $_[0] } });
my @open = grep { $_->{open_streams} } @$s;
Test::More::is(scalar @open, 1, "one session carries it");
my $o = $open[0] // {};
Test::More::is($o->{open_streams}, 1, "with one open stream");
Test::More::cmp_ok($o->{bytes_received} // 0, '>=', 65536,
                   "and has received its first 64 KiB");
# measured, not the 333 ms a session starts from before any sample
Test::More::ok(($o->{rtt_ms} // 0) > 0 && $o->{rtt_ms} < 100,
               "and measured its RTT ($o->{rtt_ms} ms on loopback)");

HopGate::Fixture::hold_release('status');
Test::More::is(main::reap($pid, 30), 0,
               "released, the response arrives whole");
$s = main::wait_status(sub { !grep { $_->{open_streams} } @{ $_[0] } });
Test::More::is(scalar(grep { $_->{open_streams} } @$s), 0,
               "and its stream is no longer open");
--- request
GET /hopgate/status
--- more_headers eval
"Authorization: Bearer $main::TOKEN"
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"sessions":\[\{"domain":"app.test",
--- timeout: 20



=== TEST 2: no token, no status
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
--- request
GET /hopgate/status
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="hopgate"
--- response_body_unlike: sessions



=== TEST 3: a wrong token is refused and not logged
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
--- log_level: info
--- request
GET /hopgate/status
--- more_headers
Authorization: Bearer wrong-token-do-not-log-me
--- error_code: 401
--- error_log
wrong bearer token
--- no_error_log
wrong-token-do-not-log-me



=== TEST 4: a stopped agent's sessions leave the list, another domain's join it
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
    # another block
--- init
my $app = HopGate::Fixture::start_agent();
my $other = HopGate::Fixture::start_agent(
    keep => 1, domain => 'other.test',
    key => HopGate::Fixture::test_key('other'));
HopGate::Fixture::agent_wait($_, qr/connected to worker/, 2) for $app, $other;

my $s = main::wait_status(sub { @{ $_[0] } == 4 });
Test::More::is(join(',', sort map { $_->{domain} } @$s),
               'app.test,app.test,other.test,other.test',
               "both agents' sessions are listed");

Test::More::is(HopGate::Fixture::stop_agent($app), 0, "app.test's agent "
               . "stops");
$s = main::wait_status(sub { @{ $_[0] } == 2 });
Test::More::is(join(',', sort map { $_->{domain} } @$s),
               'other.test,other.test', "only other.test is left");
--- request
GET /hopgate/status
--- more_headers eval
"Authorization: Bearer $main::TOKEN"
--- response_body_like: "domain":"other.test"
--- timeout: 20



=== TEST 5: a worker that dies without a word takes its sessions out of the list and the gauges
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
    location = /metrics { hopgate_metrics; }
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);
my $s = main::wait_status(sub { @{ $_[0] } == 2 });
my ($victim) = map { $_->{pid} } grep { $_->{worker} == 0 } @$s;
Test::More::ok($victim, "worker 0 is $victim");

kill 'KILL', $victim;

$s = main::wait_status(sub { !grep { $_->{pid} == $victim } @{ $_[0] } });
Test::More::ok(!(grep { $_->{pid} == $victim } @$s),
               "its session is no longer listed");

my ($workers, $ready);
for (1 .. 50) {
    my ($rc, $text) = HopGate::Fixture::curl('/metrics');
    ($workers) = $text =~ /^hopgate_worker_processes (\d+)$/m;
    ($ready) = $text =~ /^hopgate_sessions\{state="ready"\} (\d+)$/m;
    last if $workers == 2;
    Time::HiRes::sleep(0.1);
}
Test::More::is($workers, 2, "the gauges count the live workers (the "
               . "replacement too)");
Test::More::is($ready, scalar @{ main::status() },
               "the ready gauge agrees with the list");
--- request
GET /hopgate/status
--- more_headers eval
"Authorization: Bearer $main::TOKEN"
--- response_body_like: "worker":1
