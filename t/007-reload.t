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



=== TEST 2: ten reloads a second apart under 16 connections of load: every request answered 200
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 2);
my $dir = HopGate::Fixture::hopgate_dir();
my $stop = "$dir/load.stop";
unlink $stop;

# 16 clients, each a curl that asks for 20 URLs over one keepalive
# connection, again and again until told to stop
my @kids;
for my $n (1 .. 16) {
    my $pid = fork;
    if ($pid == 0) {
        open my $out, '>', "$dir/load.$n" or POSIX::_exit(1);
        open STDERR, '>>', "$dir/load.$n.err";
        my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port()
                  . '/hello';
        until (-e $stop) {
            open my $fh, '-|', 'curl', '-sS', '--max-time', '30',
                 '-H', 'Host: app.test', '-w', '%{http_code}\n',
                 (('-o', '/dev/null', $url) x 20) or POSIX::_exit(1);
            print $out $_ while <$fh>;
            close $fh;
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}

my ($master) = HopGate::Fixture::nginx_pids();
sleep 1;
my $slowest = 0;
# a sanitizer build of the module runs slower (t/asan-module.t sets it)
my $bound = 3 * ($ENV{HOPGATE_SLOWDOWN} || 1);
for my $i (1 .. 10) {
    kill 'HUP', $master;
    my $t0 = time;
    # each reload: the agent reaches both new workers, on the DTLS timer,
    # never after a whole handshake timeout (10 s)
    HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                 2 + 2 * $i, $bound);
    $slowest = time - $t0 if time - $t0 > $slowest;
    sleep 1 - (time - $t0) if time - $t0 < 1;
}
sleep 1;
Test::More::cmp_ok($slowest, '<', $bound, sprintf 'the agent reached the new '
                   . 'workers of every reload, the slowest in %.2f s',
                   $slowest);
open my $fh, '>', $stop;
close $fh;
waitpid $_, 0 for @kids;

my (%codes, $total);
for my $n (1 .. 16) {
    open my $in, '<', "$dir/load.$n" or next;
    while (<$in>) {
        chomp;
        $codes{$_}++;
        $total++;
    }
}
my $workers = 0;
for (1 .. 100) {
    $workers = () = HopGate::Fixture::worker_pids();
    last if $workers == 2;
    sleep 0.1;
}
Test::More::is($workers, 2, 'the old workers exited once their requests '
               . 'were done');
my $bad = $total - ($codes{200} // 0);
Test::More::cmp_ok($total, '>', 1000, "$total requests during the reloads");
Test::More::is($bad, 0, 'none of them failed')
    or Test::More::diag(join(', ', map { "$_: $codes{$_}" } sort keys %codes)
                        . "\n" . `cat $dir/load.*.err`);
--- request
GET /hello
--- response_body
hello from the local app
--- timeout: 60
--- no_error_log
[alert]
[crit]
