# What the agent says when what it talks to is not there: nothing on the
# edge's UDP port (the ICMP port unreachable comes back as ECONNREFUSED on
# the session's connected socket: reported at once, retried on the
# backoff), and a local target that refuses connections (a warning at
# start, before any visitor meets a 502).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use Test::More import => ['subtest'];
use HopGate::Fixture;
use IO::Socket::INET;
use Time::HiRes ();

hopgate_init();
no_shuffle();
no_root_location();


# a UDP port on 127.0.0.1 with nothing bound to it
sub closed_udp_port {
    my $s = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                                  LocalPort => 0) or die "udp: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# the times (seconds since the epoch) of the log lines matching $re
sub stamps {
    my ($log, $re) = @_;
    my @t;
    for my $line (split /\n/, $log) {
        next unless $line =~ $re;
        my ($h, $m, $s) = $line =~ /^\S+T(\d\d):(\d\d):(\d\d\.\d+)Z /
            or next;
        push @t, $h * 3600 + $m * 60 + $s;
    }
    return @t;
}


subtest 'nothing on the edge\'s UDP port: "connection refused" at once, '
        . 'then retries with backoff' => sub {
    my $port = closed_udp_port();
    my $t0 = Time::HiRes::time();
    my $agent = start_agent(server => "127.0.0.1:$port", log_level => 'info');
    my $refused = qr/ warn cannot connect to 127\.0\.0\.1:$port: connection refused \(nothing listens on that UDP port\)/;

    ok agent_wait($agent, $refused, 1, 1), 'said within 1 s';
    Test::More::diag(sprintf 'first report after %.2f s',
                     Time::HiRes::time() - $t0);

    # backoff: 125..250 ms, 250..500, 500..1000, 1..2 s, ...
    Time::HiRes::sleep(4 - (Time::HiRes::time() - $t0));
    my $log = agent_log($agent);
    my @t = stamps($log, $refused);
    cmp_ok scalar @t, '>=', 4, scalar(@t) . ' tries in 4 s: it retries';
    cmp_ok scalar @t, '<=', 7, 'not more: it backs off';
    my @gap = map { $t[$_] - $t[$_ - 1] } 1 .. $#t;
    cmp_ok $gap[2], '>', $gap[0], sprintf 'the waits grow (%s s)',
        join ', ', map { sprintf '%.2f', $_ } @gap;
    unlike $log, qr/handshake timeout|timed out/, 'no timeout was waited';
    ok agent_running($agent), 'and it keeps running';
    stop_agents();
};


add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('init', "HopGate::Fixture::stop_agents();\n"
                                . ($block->init // ""));
    $block->set_value('http_config', '$TEST_NGINX_HOPGATE_HTTP');
    $block->set_value('config', <<'CONF');
    location / {
        hopgate_route app.test;
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
CONF
});

run_tests();

__DATA__

=== TEST 1: a local target that refuses connections is reported at start
--- init
my $closed = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(to => "127.0.0.1:$closed",
                                          log_level => 'info');
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/ warn the local target 127\.0\.0\.1:$closed refuses connections: is it running\?/,
    1, 1), 'a warning within 1 s');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects all the same');
--- request
GET /hello
--- error_code: 502



=== TEST 2: a local target that listens gets no warning
--- init
my $agent = HopGate::Fixture::start_agent(log_level => 'info');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
Test::More::unlike(HopGate::Fixture::agent_log($agent), qr/local target/,
                   'and says nothing of the local target');
--- request
GET /hello
--- response_body
hello from the local app
