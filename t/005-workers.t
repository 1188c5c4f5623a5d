# Four workers: the agent keeps a session in each (steered by the reuseport
# program), so requests landing in any worker find a tunnel there.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;

hopgate_init();
master_on();
workers(4);
no_shuffle();
no_root_location();
worker_connections(1024);

run_tests();

__DATA__

=== TEST 1: 400 requests spread over four workers all succeed
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    log_format workers '$pid $status';
--- config
    access_log logs/workers.log workers;
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
my $n = HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 4, 15);
Test::More::is($n, 4, "the agent connected to 4 workers");

my %workers = map { /connected to worker (\d+)\/4/ ? ($1 => 1) : () }
              split /\n/, HopGate::Fixture::agent_log($agent);
Test::More::is(join(',', sort keys %workers), '0,1,2,3',
               "one session in each worker");

my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port() . '/hello';
my @args = ('--parallel', '--parallel-max', '50', '-o', '/dev/null',
            '-w', '%{http_code}\n', '-H', 'Connection: close');
my ($rc, $out) = HopGate::Fixture::curl($url,
    @args, map { ($url, '-o', '/dev/null') } 1 .. 399);
my @codes = split /\n/, $out;
Test::More::is(scalar(grep { $_ eq '200' } @codes), 400,
               "400 of 400 requests answered 200");

open my $fh, '<', HopGate::Fixture::servroot() . '/logs/workers.log';
my %served = map { (split)[0] => 1 } <$fh>;
Test::More::cmp_ok(scalar keys %served, '>=', 2,
                   scalar(keys %served) . " workers served requests");
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
--- timeout: 10



=== TEST 2: one socket shared by four workers (no reuseport): the agent still covers them all
--- http_config
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT;
    hopgate_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
    hopgate_certificate_key $TEST_NGINX_HOPGATE_DIR/edge.key;
    hopgate_registry file:$TEST_NGINX_HOPGATE_DIR/registry;
    upstream tunnels { hopgate; }
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
# each datagram is read by whichever worker gets to it first; the handshake
# and HELLO reach the worker holding them through the id they echo
my $t0 = Time::HiRes::time();
my $agent = HopGate::Fixture::start_agent();
my $n = HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 4, 15);
Test::More::is($n, 4, "the agent connected to 4 workers")
    or Test::More::diag(HopGate::Fixture::agent_log($agent));
Test::More::cmp_ok(Time::HiRes::time() - $t0, '<', 5,
                   sprintf 'within %.1f s', Time::HiRes::time() - $t0);

my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port() . '/hello';
my @args = ('--parallel', '--parallel-max', '50', '-o', '/dev/null',
            '-w', '%{http_code}\n', '-H', 'Connection: close');
my ($rc, $out) = HopGate::Fixture::curl($url,
    @args, map { ($url, '-o', '/dev/null') } 1 .. 199);
Test::More::is(scalar(grep { $_ eq '200' } split /\n/, $out), 200,
               "200 of 200 requests answered 200");
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
--- timeout: 10
