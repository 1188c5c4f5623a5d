# The round-trip time of an idle session on loopback, as both ends report
# it: the edge's /hopgate/status and hopgate_rtt_seconds histogram, and the
# agent's hopgate_agent_worker_rtt_seconds. Idle, the only packets are
# keepalive PINGs (every second here) and their ACKs; a delayed ACK's wait
# (max_ack_delay, 25 ms) must not be counted as path RTT, which loopback
# puts at a tenth of a millisecond.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Prometheus;
use JSON::PP ();
use Time::HiRes ();

hopgate_init();
master_on();
workers(1);
no_shuffle();
no_root_location();

our $TOKEN = 'rtt-test-token-' . join '', map { sprintf '%02x',
                                                int rand 256 } 1 .. 8;
{
    my $file = hopgate_dir() . '/admin.key';
    open my $fh, '>', $file or die "$file: $!";
    print $fh "$TOKEN\n";
    close $fh;
    $ENV{TEST_NGINX_ADMIN_KEY} = $file;
}


sub scrape {
    my ($url) = @_;
    my ($rc, $out) = HopGate::Fixture::curl($url);
    my $m = eval { HopGate::Prometheus::parse($out) };
    Test::More::ok(0, "$url parses: $@") if $@;
    return $m;
}


# the edge's one session's rtt_ms, from /hopgate/status
sub status_rtt {
    my ($rc, $out) = HopGate::Fixture::curl('/hopgate/status', '-H',
                                            "Authorization: Bearer $TOKEN");
    my $json = eval { JSON::PP::decode_json($out) };
    return undef unless $json && @{ $json->{sessions} } == 1;
    return $json->{sessions}[0]{rtt_ms};
}


# polls $get until its value is defined and below $limit (at most $secs);
# returns the last value. The srtt smooths over eight samples, one a
# second here: a scheduling hiccup of a loaded machine passes in seconds,
# while a delayed ACK counted as RTT holds it at 25 ms for good.
sub wait_below {
    my ($get, $limit, $secs) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    my $v;
    while (1) {
        $v = $get->();
        return $v if defined $v && $v < $limit;
        return $v if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.25);
    }
}


sub histogram {
    my ($m) = @_;
    return map { $m->value('hopgate_rtt_seconds_bucket', le => $_) // 0 }
           qw(0.001 0.01 +Inf);
}

run_tests();

__DATA__

=== TEST 1: an idle loopback session's RTT is under a millisecond at both ends
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
    hopgate_keepalive 1s;
--- config
    location = /metrics { hopgate_metrics; }
    location = /hopgate/status {
        hopgate_status;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY;
    }
--- init
my $port = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(
    args => ['--metrics', "127.0.0.1:$port"]);
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                            1, 15), 1, "the agent is up");

# past the handshake: from here on the session only keeps alive
Time::HiRes::sleep(2);
my ($le1, $le10, $all) = main::histogram(main::scrape('/metrics'));

my $edge = main::wait_below(\&main::status_rtt, 1, 20);
Test::More::ok(defined $edge && $edge < 1, "the edge's session rtt_ms is "
               . "under 1 ms (" . ($edge // 'none') . ")");

my $agent_rtt = main::wait_below(sub {
    my $m = main::scrape("http://127.0.0.1:$port/metrics");
    return $m ? $m->value('hopgate_agent_worker_rtt_seconds',
                          worker => 0) : undef;
}, 0.001, 20);
Test::More::ok(defined $agent_rtt && $agent_rtt < 0.001, "the agent's "
               . "rtt is under 1 ms (" . ($agent_rtt // 'none') . " s)");

# the histogram takes each ready session's srtt once a second
Time::HiRes::sleep(5);
my ($le1b, $le10b, $allb) = main::histogram(main::scrape('/metrics'));
my $n = $allb - $all;
Test::More::cmp_ok($n, '>=', 4, "the histogram took $n samples meanwhile");
Test::More::is($le10b - $le10, $n, "none of them at 10 ms or more");
Test::More::cmp_ok($le1b - $le1, '>=', $n / 2, "most of them under 1 ms ("
                   . ($le1b - $le1) . " of $n)");
--- request
GET /metrics
--- response_body_like: hopgate_rtt_seconds_bucket
--- no_error_log
[alert]
[crit]
--- timeout: 60
