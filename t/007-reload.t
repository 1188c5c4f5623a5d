# nginx -s reload while a download runs: the old worker keeps the session
# until the download completes (the agent dials the new workers at its
# GOAWAY), and requests after the reload succeed.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use POSIX ();
use Time::HiRes qw(time sleep);

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();

run_tests();

__DATA__

=== TEST 1: a download survives a reload; requests after it succeed
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
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);
my $size = 100 * 1024 * 1024;
my $result = HopGate::Fixture::hopgate_dir() . '/download.result';

my $pid = fork;
if ($pid == 0) {
    my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
                                                        '--limit-rate', '25M');
    open my $fh, '>', $result;
    print $fh "$code $sha $got\n";
    close $fh;
    POSIX::_exit(0);
}

sleep 1;
my ($master) = HopGate::Fixture::nginx_pids();
kill 'HUP', $master;

waitpid $pid, 0;
open my $fh, '<', $result or die "$result: $!";
my ($code, $sha, $got) = split ' ', scalar <$fh>;
Test::More::is($got, $size, "the download completed across the reload");
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size),
               "and arrived intact");

Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent, qr/going away/, 1),
                   '>=', 1, "the agent saw the old workers go away");
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent,
                       qr/connected to worker/, 4),
                   '>=', 4, "and connected to the new workers");

my $ok = 0;
for (1 .. 20) {
    my ($c) = HopGate::Fixture::http_get('/hello', 'app.test');
    $ok++ if $c eq '200';
}
Test::More::is($ok, 20, "20 requests after the reload all succeed");
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
