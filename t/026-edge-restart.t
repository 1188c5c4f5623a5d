# An edge that restarts: on `nginx -s stop` its workers tell every agent
# (CLOSE, "the edge is restarting") and an idle agent serves again within
# a second of the new nginx starting; after a crash (kill -9 of master and
# workers) the restarted edge answers the agent's next keepalive with an
# authenticated stateless reset, and the agent is back within the
# keepalive interval plus a second. Requests meanwhile never hang.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Edge;
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', '$TEST_NGINX_HOPGATE_HTTP');
    $block->set_value('config', <<'CONF');
    location = /alive {
        return 200 "alive\n";
    }
CONF
    $block->set_value('request', "GET /alive\n");
    $block->set_value('response_body', "alive\n");
    $block->set_value('timeout', 30);
});


# the agent is connected to every worker of the edge
sub connected {
    my ($agent, $edge, $count) = @_;
    return HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                        $count, 10);
}

run_tests();

__DATA__

=== TEST 1: nginx -s stop: the agents are told, and back within 1 s of the new nginx
--- init
my $edge = HopGate::Edge::start(workers => 2);
my $agent = HopGate::Fixture::start_agent(server => "127.0.0.1:$edge->{udp}");
Test::More::is(main::connected($agent, $edge, 2), 2,
               'the agent covers both workers');
Test::More::is((HopGate::Edge::get($edge))[0], 200, 'served before');
sleep 1;    # idle: nothing in flight, no ACK owed

HopGate::Edge::stop($edge, 'TERM');
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/edge is restarting/,
                                            2, 2), 2,
               'the agent heard why both its sessions ended')
    or Test::More::diag(HopGate::Fixture::agent_log($agent));

sleep 0.5;
$edge = HopGate::Edge::start(%$edge);
my ($status, $took) = HopGate::Edge::get($edge);
Test::More::is($status, 200, 'served by the restarted edge');
Test::More::cmp_ok($took, '<', 1.0,
                   'the first request waited under 1 s for the agent')
    or Test::More::diag(HopGate::Fixture::agent_log($agent));
Test::More::diag(sprintf 'first request after the restart: %.0f ms',
                 1000 * $took);
HopGate::Edge::stop($edge, 'QUIT');



=== TEST 2: kill -9 of master and workers: back within the keepalive interval plus 1 s
--- init
my $edge = HopGate::Edge::start(workers => 2, keepalive => '1s');
my $agent = HopGate::Fixture::start_agent(server => "127.0.0.1:$edge->{udp}");
Test::More::is(main::connected($agent, $edge, 2), 2,
               'the agent covers both workers');
Test::More::is((HopGate::Edge::get($edge))[0], 200, 'served before');

HopGate::Edge::stop($edge, 'KILL');
sleep 0.3;
$edge = HopGate::Edge::start(%$edge);
my ($status, $took) = HopGate::Edge::get($edge);
Test::More::is($status, 200, 'served by the restarted edge')
    or Test::More::diag(HopGate::Edge::error_log($edge));
Test::More::cmp_ok($took, '<', 1.0 + 1.0,
                   'the first request waited under keepalive + 1 s')
    or Test::More::diag(HopGate::Fixture::agent_log($agent));
Test::More::diag(sprintf 'first request after the restart: %.0f ms',
                 1000 * $took);
HopGate::Edge::stop($edge, 'QUIT');
