# Several agents for one domain share its requests; an agent that dies
# (even mid-download) costs no more than a truncated response, never a
# hang, and one that comes back takes traffic again.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();

sub streams_served {
    my ($agent) = @_;
    my @lines = HopGate::Fixture::agent_log($agent) =~ /stream \d+ GET/g;
    return scalar @lines;
}

sub get_ok {
    my ($n, $max) = @_;
    my $ok = 0;
    for (1 .. $n) {
        my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
        $ok++ if $code eq '200';
    }
    return $ok;
}

run_tests();

__DATA__

=== TEST 1: two agents share a domain; one dies, the other carries on; it comes back
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- init
my $a = HopGate::Fixture::start_agent();
my $b = HopGate::Fixture::start_agent(keep => 1);
HopGate::Fixture::agent_wait($_, qr/connected to/, 1) for $a, $b;

Test::More::is(main::get_ok(20), 20, "20 requests with two agents");
Test::More::cmp_ok(main::streams_served($a), '>=', 5, "agent A served some");
Test::More::cmp_ok(main::streams_served($b), '>=', 5, "agent B served some");

kill 'KILL', $a->{pid};
my $start = time;
Test::More::is(main::get_ok(10), 10,
               "every request succeeds after A is killed");
Test::More::diag(sprintf "10 requests took %.1f s after the kill",
                 time - $start);

my $c = HopGate::Fixture::start_agent(keep => 1);
HopGate::Fixture::agent_wait($c, qr/connected to/, 1);
my $before = main::streams_served($c);
Test::More::is(main::get_ok(10), 10, "requests after A's replacement came");
Test::More::cmp_ok(main::streams_served($c), '>', $before,
                   "the replacement takes traffic");
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- timeout: 10



=== TEST 2: an agent killed mid-download: a truncated response, no hang; back within 2 s
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
my $a = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($a, qr/connected to/, 1);
my $size = 500 * 1024 * 1024;

# the killer waits until the agent serves the download and bytes flow,
# and exits 0 only if the agent was still alive (not a zombie) to be
# killed: the kill, nothing before it, must be what cuts the response
my $pid = fork;
if ($pid == 0) {
    my $serving = HopGate::Fixture::agent_wait($a, qr/stream \d+ opened/, 1);
    sleep 1;
    my $fh;
    my $alive = open($fh, '<', "/proc/$a->{pid}/stat")
                && (split ' ', scalar <$fh>)[2] ne 'Z';
    kill 'KILL', $a->{pid};
    POSIX::_exit($serving && $alive ? 0 : 1);  # no END blocks: the parent's
}

my $start = time;
my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
                                                    '--limit-rate', '20M');
my $took = time - $start;
waitpid $pid, 0;
Test::More::is($? >> 8, 0, "the agent was alive and serving the download "
               . "when it was killed");
HopGate::Fixture::stop_agent($a, 'ZERO', 5);
Test::More::is($a->{signal}, 9, "and died of that SIGKILL");
Test::More::is($code, 200, "the download had begun: status 200");
Test::More::ok($got > 0 && $got < $size,
               "the client got part of it, truncated ($got of $size bytes)");
Test::More::cmp_ok($took, '<', 20, sprintf "and no hang (%.1f s)", $took);

my $b = HopGate::Fixture::start_agent(keep => 1);
$start = time;
my $ok;
while (time - $start < 10) {
    my ($c) = HopGate::Fixture::http_get('/hello', 'app.test');
    if ($c eq '200') { $ok = time - $start; last }
    sleep 0.05;
}
Test::More::ok(defined $ok && $ok < 2,
               sprintf "service resumes %.2f s after the agent restarts",
               $ok // -1);
--- request
GET /hello
--- response_body
hello from the local app
