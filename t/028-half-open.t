# Half-open handshakes: thousands of peers that return a valid DTLS cookie
# and then go silent (bench/session_gen --half-open, from 200 loopback
# addresses). The worker holds at most 1024 of them at once (32 per
# address), its memory stays bounded and comes back once they expire, the
# server's flight goes to each silent peer at most three times, and a real
# agent connects meanwhile and afterwards.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use POSIX ();
use Time::HiRes ();

hopgate_init();
master_on();
workers(1);
no_shuffle();
no_root_location();

our $GEN;
{
    my $build = $ENV{HOPGATE_BUILD} || "$FindBin::Bin/../build";

    # built here, so an old build/bench/session_gen cannot be used
    $GEN = hopgate_dir() . '/session_gen';
    system('cc', '-std=gnu11', '-O2', '-D_GNU_SOURCE',
           "-I$FindBin::Bin/../proto", "-I$build/gen", '-o', $GEN,
           "$FindBin::Bin/../bench/session_gen.c", "$build/libhgproto.a",
           '-lprotobuf-c', '-lssl', '-lcrypto') == 0
        or die "cannot build session_gen\n";
}


# resident and peak resident memory of a process, in KiB
sub rss {
    my ($pid) = @_;
    my %kb;
    open my $fh, '<', "/proc/$pid/status" or return (0, 0);
    while (<$fh>) {
        $kb{$1} = $2 if /^(VmRSS|VmHWM):\s+(\d+)/;
    }
    return ($kb{VmRSS} // 0, $kb{VmHWM} // 0);
}

run_tests();

__DATA__

=== TEST 1: 5000 half-open handshakes: bounded, freed, three flights at most
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location = /t { return 200 "up\n"; }
--- init
my ($worker) = HopGate::Fixture::worker_pids();
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                            1, 15), 1,
               "an agent is connected before");
my ($base) = main::rss($worker);

my $out = HopGate::Fixture::hopgate_dir() . '/half-open.out';
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>', $out;
    open STDERR, '>', "$out.err";
    exec $main::GEN, '--half-open', '127.0.0.1',
         HopGate::Fixture::edge_port(), 5000, 200, 6 or POSIX::_exit(127);
}

# every handshake has gone silent or been refused: the worker holds
# what it keeps of them
my $dialled = '';
for (1 .. 1200) {
    $dialled = `cat $out` and last;
    Time::HiRes::sleep(0.05);
}
my ($held) = main::rss($worker);

waitpid $pid, 0;
my $gen = `cat $out`;
my ($total, $silent, $refused) = $gen =~ /dialled (\d+) silent (\d+) refused (\d+)/;
my ($datagrams, $copies, $most) = $gen =~ /datagrams (\d+) copies (\d+) most (\d+)/;
my (undef, $peak) = main::rss($worker);

Test::More::is($? >> 8, 0, "session_gen ran") or Test::More::diag(`cat $out.err`);
Test::More::is($total, 5000, "5000 handshakes dialled");
Test::More::cmp_ok($silent, '>=', 1024, "$silent passed the cookie and went "
                   . "silent ($refused dropped by the limits)");
Test::More::cmp_ok($most, '<=', 3, "no silent peer got the server's flight "
                   . "more than 3 times (most $most; $copies copies, "
                   . "$datagrams datagrams for $silent peers)");
Test::More::cmp_ok($peak - $base, '<', 96 * 1024, "the worker's peak grew "
                   . "by " . int(($peak - $base) / 1024) . " MB (< 96 MB; "
                   . int(($held - $base) / 1024) . " MB once all were in)");

# they expired 2.8 s after their flights; the heap was trimmed
my $now;
for (1 .. 50) {
    ($now) = main::rss($worker);
    last if $now - $base < 16 * 1024;
    Time::HiRes::sleep(0.1);
}
Test::More::cmp_ok($now - $base, '<', 16 * 1024, "and came back to within "
                   . "16 MB of where it was (" . int(($now - $base) / 1024)
                   . " MB above $base KB)");

Test::More::ok(HopGate::Fixture::agent_running($agent),
               "the agent's session lived through it");
my $late = HopGate::Fixture::start_agent(keep => 1);
Test::More::is(HopGate::Fixture::agent_wait($late, qr/connected to worker/,
                                            1, 15), 1,
               "a new agent connects afterwards");
--- request
GET /t
--- response_body
up
--- error_log
too many half-open handshakes
--- no_error_log
[alert]
[crit]
--- timeout: 90
