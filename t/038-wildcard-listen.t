# A multi-homed edge with a wildcard hopgate_listen: an agent that dials
# one of the edge's addresses gets its replies from that address, not
# from the one the routing table would pick (its connected socket drops
# those). Here the edge has 127.0.0.1 and 127.0.0.2; the agent, on
# 127.0.0.1, dials 127.0.0.2, and replies to 127.0.0.1 would leave from
# 127.0.0.1. Runs in a network namespace of its own.
BEGIN {
    # a private network namespace: only this test's loopback
    if (!$ENV{HOPGATE_TEST_NETNS}) {
        $ENV{HOPGATE_TEST_NETNS} = 1;
        exec 'unshare', '--net', '--', 'sh', '-c',
             'ip link set lo up && exec "$0" "$@"', $^X, $0, @ARGV;
        die "unshare: $!";
    }
}

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use POSIX ();
use Time::HiRes ();

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();

my $port = HopGate::Fixture::edge_port();
my $dir = HopGate::Fixture::hopgate_dir();

$ENV{TEST_NGINX_WILDCARD_HTTP} = join "\n    ",
    "hopgate_listen 0.0.0.0:$port reuseport;",
    "hopgate_certificate $dir/edge.pem;",
    "hopgate_certificate_key $dir/edge.key;",
    "hopgate_registry file:$dir/registry;",
    'upstream tunnels { hopgate; }';


# an agent that dials $server, and 20 requests and a download through it
sub tunnel_works {
    my ($server) = @_;
    # the certificate names localhost and 127.0.0.1, not 127.0.0.2
    my $agent = HopGate::Fixture::start_agent(
        server => $server, args => [ '--server-name', 'localhost' ]);
    if (!Test::More::cmp_ok(
            HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 1,
                                         15),
            '>=', 1, "the agent connects to $server"))
    {
        Test::More::diag(HopGate::Fixture::agent_log($agent) =~ s/^/  /mgr);
        HopGate::Fixture::stop_agents();
        return;
    }
    my $ok = 0;
    for (1 .. 20) {
        my ($code) = HopGate::Fixture::http_get('/hello');
        $ok++ if $code eq '200';
    }
    Test::More::is($ok, 20, '20 requests through the tunnel succeed');
    my ($code, $sha, $size) = HopGate::Fixture::curl_sha('/bytes/4000000');
    Test::More::is("$code $size", '200 4000000', 'and a 4 MB download');
    Test::More::is($sha, HopGate::Fixture::pattern_sha256(4000000),
                   'intact');
    HopGate::Fixture::stop_agents();
}

run_tests();

__DATA__

=== TEST 1: wildcard listener, reuseport: the agent dials the second address
--- http_config
    $TEST_NGINX_WILDCARD_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
    location = /ok { return 200 "ok\n"; }
--- init
main::tunnel_works('127.0.0.2:' . HopGate::Fixture::edge_port());
--- request
GET /ok
--- response_body
ok
--- no_error_log
[alert]
[crit]
[emerg]
--- timeout: 60



=== TEST 2: a download across a reload: forwarded datagrams too
--- http_config
    $TEST_NGINX_WILDCARD_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_buffering off;
    }
    location = /ok { return 200 "ok\n"; }
--- init
my $agent = HopGate::Fixture::start_agent(
    server => '127.0.0.2:' . HopGate::Fixture::edge_port(),
    args => [ '--server-name', 'localhost' ]);
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                            2, 15),
               2, 'the agent is connected to both workers');

# the new workers forward to the old ones what comes for their sessions
my $size = 40 * 1024 * 1024;
my $result = HopGate::Fixture::hopgate_dir() . '/download.result';
my $pid = fork;
if ($pid == 0) {
    my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
                                                        '--limit-rate', '20M');
    open my $fh, '>', $result;
    print $fh "$code $sha $got\n";
    close $fh;
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.5);
my ($master) = HopGate::Fixture::nginx_pids();
kill 'HUP', $master;
waitpid $pid, 0;

open my $fh, '<', $result or die "$result: $!";
my ($code, $sha, $got) = split ' ', scalar <$fh>;
Test::More::is("$code $got", "200 $size", 'the download completed');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size), 'intact');
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent,
                                                qr/connected to worker/, 4),
                   '>=', 4, 'the agent reached the new workers');
--- request
GET /ok
--- response_body
ok
--- no_error_log
[alert]
[crit]
[emerg]
--- timeout: 60
