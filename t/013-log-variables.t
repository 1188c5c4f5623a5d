# $hopgate_* variables in an access log and in add_header. The log format
# is the README's JSON line for Loki, read from the README itself, so the
# documented line is the tested one.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use JSON::PP ();
use Time::HiRes ();

hopgate_init();
no_shuffle();
no_root_location();

# the README's `log_format hopgate_json escape=json ...;`
{
    open my $fh, '<', "$FindBin::Bin/../README.md" or die "README.md: $!";
    my $format = '';
    while (<$fh>) {
        $format .= $_ if /^\s*log_format hopgate_json / .. /';\s*$/;
    }
    die "no log_format hopgate_json in README.md\n" unless $format;
    $ENV{TEST_NGINX_LOKI_FORMAT} = $format;
}


# the access log's JSON lines, decoded (nginx writes them just after the
# response, so give it a moment)
sub log_lines {
    my @lines;
    for (1 .. 50) {
        if (open my $fh, '<',
                 HopGate::Fixture::servroot() . '/logs/hopgate.json')
        {
            @lines = <$fh>;
        }
        last if @lines;
        Time::HiRes::sleep(0.02);
    }
    return map { JSON::PP::decode_json($_) } @lines;
}

run_tests();

__DATA__

=== TEST 1: a tunnelled request logs its domain, session, stream, agent, RTT and worker
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_LOKI_FORMAT
--- config
    access_log logs/hopgate.json hopgate_json;
    location / {
        proxy_pass http://tunnels;
        add_header X-Hopgate-Session $hopgate_session always;
        add_header X-Hopgate-Stream $hopgate_stream always;
    }
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- response_headers_like
X-Hopgate-Session: ^[0-9a-f]{16}$
X-Hopgate-Stream: ^\d+$
--- wait: 0.5
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
truncate HopGate::Fixture::servroot() . '/logs/hopgate.json', 0;
--- no_error_log
[error]



=== TEST 2: the log line's values are the tunnel's
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_LOKI_FORMAT
--- config
    access_log logs/hopgate.json hopgate_json;
    location / {
        proxy_pass http://tunnels;
    }
    # a second block
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
truncate HopGate::Fixture::servroot() . '/logs/hopgate.json', 0;

my ($code) = HopGate::Fixture::http_get('/hello?n=first', 'app.test');
HopGate::Fixture::agent_wait($agent, qr/GET \/hello\?n=first/, 1);

my ($line) = main::log_lines();
Test::More::ok($line, "a JSON line per request");
Test::More::is($line->{hopgate_domain}, 'app.test', '$hopgate_domain');
Test::More::is($line->{hopgate_worker}, '0', '$hopgate_worker');

my ($session) = HopGate::Fixture::agent_log($agent) =~ /session ([0-9a-f]+)/;
Test::More::is($line->{hopgate_session}, $session,
               '$hopgate_session is the session the agent reported');
Test::More::like($line->{hopgate_agent_addr}, qr/^127\.0\.0\.1:\d+$/,
                 '$hopgate_agent_addr');
Test::More::like($line->{hopgate_rtt_ms}, qr/^\d+\.\d{3}$/,
                 '$hopgate_rtt in milliseconds');
Test::More::cmp_ok($line->{hopgate_rtt_ms}, '>', 0, 'and measured');

my ($stream, $rid) = HopGate::Fixture::agent_log($agent)
    =~ /stream (\d+) GET \/hello\?n=first .* request=(\S+)/;
Test::More::is($line->{hopgate_stream}, $stream,
               '$hopgate_stream is the stream the agent served');
Test::More::is($line->{request_id}, $rid,
               'and $request_id joins the two logs');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app



=== TEST 3: a request no agent answers still logs its domain, and no session
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_LOKI_FORMAT
--- config
    access_log logs/hopgate.json hopgate_json;
    location / {
        hopgate_connect_timeout 100ms;
        proxy_pass http://tunnels;
    }
--- init
HopGate::Fixture::stop_agents();
truncate HopGate::Fixture::servroot() . '/logs/hopgate.json', 0;
my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
Test::More::is($code, 502, "no agent: 502");

my ($line) = main::log_lines();
Test::More::is($line->{status}, 502, "the log line is the 502's");
Test::More::is($line->{hopgate_domain}, 'app.test', '$hopgate_domain');
Test::More::is($line->{$_}, '', "no $_")
    for qw(hopgate_session hopgate_stream hopgate_agent_addr hopgate_rtt_ms);
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 502



=== TEST 4: an error_page redirect keeps the values
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_LOKI_FORMAT
--- config
    access_log logs/hopgate.json hopgate_json;
    location / {
        hopgate_connect_timeout 100ms;
        proxy_pass http://tunnels;
        error_page 502 = /offline;
    }
    location = /offline {
        return 503 "offline\n";
    }
--- init
HopGate::Fixture::stop_agents();
truncate HopGate::Fixture::servroot() . '/logs/hopgate.json', 0;
HopGate::Fixture::http_get('/hello', 'app.test');
my ($line) = main::log_lines();
Test::More::is($line->{status}, 503, "the error page answered");
Test::More::is($line->{hopgate_domain}, 'app.test',
               '$hopgate_domain survives the internal redirect');
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 503
--- response_body
offline



=== TEST 5: a request that is not tunnelled has no tunnel values
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_LOKI_FORMAT
--- config
    access_log logs/hopgate.json hopgate_json;
    location / {
        return 200 "local\n";
    }
--- init
truncate HopGate::Fixture::servroot() . '/logs/hopgate.json', 0;
HopGate::Fixture::http_get('/', 'app.test');
my ($line) = main::log_lines();
Test::More::is($line->{$_}, '', "no $_")
    for qw(hopgate_domain hopgate_session hopgate_stream hopgate_agent_addr);
Test::More::is($line->{hopgate_worker}, '0',
               '$hopgate_worker is the worker all the same');
--- request
GET /
--- response_body
local
