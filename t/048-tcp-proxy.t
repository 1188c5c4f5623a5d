# The agent's TCP carrier through a real HTTP proxy (tinyproxy, allowing
# CONNECT only to the edge's tunnel port): --proxy with and without basic
# authentication, HTTPS_PROXY and NO_PROXY from the environment, and the
# agent's errors when the proxy refuses.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Proxy;
use HopGate::Relay;
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();


# UDP dropped, so that auto has to take TCP
sub blocked_udp {
    my $relay = HopGate::Relay::start(
        to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}", block => 1);
    return "127.0.0.1:$relay->{port}";
}

run_tests();

__DATA__

=== TEST 1: UDP dropped, --proxy: the tunnel goes through the proxy's CONNECT, with basic authentication
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $proxy = HopGate::Proxy::start(
    connect_ports => [$ENV{TEST_NGINX_TUNNEL_PORT}],
    auth => ['alice', 's3cret']);
my $agent = HopGate::Fixture::start_agent(
    server => main::blocked_udp(), transport => 'auto',
    args => ['--proxy', "http://alice:s3cr%65t\@127.0.0.1:$proxy->{port}"]);
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/connected to worker 0\/1 of 127\.0\.0\.1:\d+ over tcp \(session \S+\) through http:\/\/alice\@127\.0\.0\.1:\d+/, 1, 10),
    'the agent connects over TCP through the proxy');
Test::More::is_deeply(HopGate::Proxy::connects($proxy),
                      ["127.0.0.1:$ENV{TEST_NGINX_TUNNEL_PORT}"],
                      'the proxy was asked to CONNECT to the tunnel port');
Test::More::unlike(HopGate::Fixture::agent_log($agent), qr/s3cr/,
                   'the password is never logged');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 2: HTTPS_PROXY from the environment; NO_PROXY naming the edge bypasses it
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $proxy = HopGate::Proxy::start(
    connect_ports => [$ENV{TEST_NGINX_TUNNEL_PORT}]);
my $agent = HopGate::Fixture::start_agent(transport => 'tcp',
    env => { HTTPS_PROXY => "http://127.0.0.1:$proxy->{port}" });
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/over tcp \(session \S+\) through http:\/\/127\.0\.0\.1:$proxy->{port}/),
    'HTTPS_PROXY: through the proxy');
HopGate::Fixture::stop_agents();

$agent = HopGate::Fixture::start_agent(transport => 'tcp',
    env => { https_proxy => "http://127.0.0.1:$proxy->{port}",
             NO_PROXY => 'example.com, .localdomain,127.0.0.1' });
Test::More::ok(HopGate::Fixture::agent_wait($agent,
                                            qr/connected to .* over tcp/),
               'NO_PROXY: connected');
Test::More::unlike(HopGate::Fixture::agent_log($agent), qr/through http/,
                   'NO_PROXY: not through the proxy');
Test::More::is(scalar @{ HopGate::Proxy::connects($proxy) }, 1,
               'NO_PROXY: the proxy saw nothing more');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 3: a proxy that refuses CONNECT to the edge's port, or wants other credentials: the agent says so, and backs off
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my $proxy = HopGate::Proxy::start(connect_ports => [443]);
my $agent = HopGate::Fixture::start_agent(transport => 'tcp',
    args => ['--proxy', "http://127.0.0.1:$proxy->{port}"]);
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/warn cannot connect to 127\.0\.0\.1:\d+ over tcp: the proxy http:\/\/127\.0\.0\.1:\d+ refused to connect us to 127\.0\.0\.1:$ENV{TEST_NGINX_TUNNEL_PORT}: "HTTP\/1\.\d 403 [^"]+"/),
    'a refused CONNECT: the proxy\'s answer in the log');
sleep 2;
my @dials = HopGate::Fixture::agent_log($agent) =~ /dialling/g;
Test::More::cmp_ok(scalar @dials, '<=', 6,
                   scalar(@dials) . ' dials in 2 s: backing off');

my $auth = HopGate::Proxy::start(
    connect_ports => [$ENV{TEST_NGINX_TUNNEL_PORT}], auth => ['bob', 'pw']);
$agent = HopGate::Fixture::start_agent(transport => 'tcp',
    args => ['--proxy', "http://bob:wrong\@127.0.0.1:$auth->{port}"]);
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/the proxy http:\/\/bob\@127\.0\.0\.1:\d+ wants other credentials \("HTTP\/1\.\d 40[17] [^"]+"\)/),
    'wrong credentials: the proxy\'s answer in the log');
--- request
GET /ok
--- response_body
ok



=== TEST 4: a proxy URL that is not http:// is a usage error
--- config
    location = /ok { return 200 "ok\n"; }
--- init
for my $bad ('https://127.0.0.1:3128', 'http://127.0.0.1', 'socks5://h:1') {
    my $agent = HopGate::Fixture::start_agent(transport => 'tcp',
                                              args => ['--proxy', $bad]);
    my $code = HopGate::Fixture::stop_agent($agent, 'ZERO', 5);
    Test::More::is($code, 1, "$bad: the agent exits 1");
    Test::More::like(HopGate::Fixture::agent_log($agent),
                     qr/the proxy "\Q$bad\E" (is not an http:\/\/ URL|wants the form http:\/\/\[USER:PASS\@\]HOST:PORT)/,
                     "$bad: and says why");
}
--- request
GET /ok
--- response_body
ok
