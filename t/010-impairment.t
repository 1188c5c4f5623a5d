# Transfers over an impaired path: the agent dials the edge through
# t/lib/hopgate-relay, which loses, reorders and duplicates datagrams in
# both directions (seeded, so a failure can be replayed). Whatever the
# path does, the bytes that arrive are the bytes that were sent.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;

hopgate_init();
no_shuffle();
no_root_location();

run_tests();

__DATA__

=== TEST 1: 20 MiB down and 5 MiB up arrive intact through 5% loss, reordering and duplication
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_read_timeout 60s;
        client_max_body_size 16m;
    }
--- init
my $relay = HopGate::Relay::start(
    to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}",
    loss => 0.05, reorder => 0.05, reorder_delay => 5, duplicate => 0.05,
    seed => 20240611);

my $agent = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$relay->{port}", log_level => 'info');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1, 20),
               'the agent connects through the relay');

my $down = 20 * 1024 * 1024;
my $t0 = Time::HiRes::time();
my ($code, $sha, $size) = HopGate::Fixture::curl_sha("/bytes/$down",
                                                     '-H', 'Host: app.test');
my $t1 = Time::HiRes::time();
Test::More::is($code, 200, 'the download answers 200');
Test::More::is($size, $down, 'the download has every byte');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($down),
               'the download has the right bytes');

my $up = 5 * 1024 * 1024;
my $file = HopGate::Fixture::hopgate_dir() . '/upload.bin';
open my $fh, '>', $file or die "$file: $!";
binmode $fh;
print $fh HopGate::Fixture::pattern_chunk(0, $up);
close $fh;

my $t2 = Time::HiRes::time();
my ($rc, $answer) = HopGate::Fixture::curl('/upload', '-H', 'Host: app.test',
    '-H', 'Expect:', '--data-binary', "\@$file");
my $t3 = Time::HiRes::time();
Test::More::is($rc, 0, 'the upload completes');
Test::More::is($answer, "$up " . HopGate::Fixture::pattern_sha256($up) . "\n",
               'the local app received the upload intact');

my $counters = HopGate::Relay::snapshot($relay);
Test::More::diag(sprintf "download %.1f s, upload %.1f s; relay:\n%s",
                 $t1 - $t0, $t3 - $t2, HopGate::Relay::summary($counters));
Test::More::cmp_ok($counters->{down}{lost} // 0, '>', 100,
                   'the relay did drop datagrams towards the agent');
Test::More::cmp_ok($counters->{up}{lost} // 0, '>', 10,
                   'the relay did drop datagrams towards the edge');
Test::More::ok(HopGate::Fixture::agent_running($agent),
               'the agent is still running');
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 2: 1 % of the datagrams with a rewritten id byte cost no more than 1 % loss
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_read_timeout 60s;
    }
    location = /alive {
        return 200 "alive\n";
    }
--- init
# the id in the cleartext prefix is not authenticated: the agent must
# take it only from HELLO_ACK, never from a datagram, or one rewritten
# byte makes it send with a bogus id until something corrects it
my %mbps;
for my $knob ('corrupt_cid', 'loss') {
    my $relay = HopGate::Relay::start(
        to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}", $knob => 0.01,
        seed => 20261204);
    my $agent = HopGate::Fixture::start_agent(
        server => "127.0.0.1:$relay->{port}", log_level => 'info');
    HopGate::Fixture::agent_wait($agent, qr/connected to/, 1, 20);

    my $down = 20 * 1024 * 1024;
    my $t0 = Time::HiRes::time();
    my ($code, $sha, $size) = HopGate::Fixture::curl_sha(
        "/bytes/$down", '-H', 'Host: app.test', '--max-time', '60');
    my $took = Time::HiRes::time() - $t0;
    $mbps{$knob} = $size / $took / 1e6;
    Test::More::is($sha, HopGate::Fixture::pattern_sha256($down),
                   "with 1 % $knob: 20 MiB intact")
        or Test::More::diag(HopGate::Fixture::agent_log($agent)
                            . HopGate::Relay::log_text($relay));

    my $c = HopGate::Relay::stop($relay);
    next unless $knob eq 'corrupt_cid';
    Test::More::cmp_ok(($c->{down}{cid_rewritten} // 0)
                       + ($c->{up}{cid_rewritten} // 0), '>', 100,
                       'the relay rewrote ids both ways');
    Test::More::is($c->{up}{foreign_cid}, 0,
                   'the agent never sent an id the edge did not give it');
}
Test::More::diag(sprintf "1 %% rewritten ids: %.1f MB/s; 1 %% loss: %.1f MB/s",
                 $mbps{corrupt_cid}, $mbps{loss});
Test::More::cmp_ok($mbps{corrupt_cid}, '>', $mbps{loss} / 3,
                   'rewritten ids cost about what loss costs');
--- request
GET /alive
--- response_body
alive
--- no_error_log
[alert]
[crit]
