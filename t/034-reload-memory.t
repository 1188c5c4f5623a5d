# Reloads do not grow the master: what a configuration allocates (the file
# registry's table and text, the DTLS context) goes with its cycle. With a
# 2001-line registry each reload used to leave the master ~145 KiB of
# anonymous memory (the DTLS context alone ~20 KiB); nginx itself grows by
# ~1 KiB.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use Time::HiRes qw(sleep time);

hopgate_init();
master_on();
workers(1);
no_shuffle();
no_root_location();

# 2000 domains and a comment, beside the fixture's registry
my $dir = HopGate::Fixture::hopgate_dir();
open my $fh, '>', "$dir/big-registry" or die "$dir/big-registry: $!";
print $fh "# 2000 domains\n";
printf $fh "d%d.test %064x\n", $_, $_ for 1 .. 2000;
close $fh;

$ENV{TEST_NGINX_BIG_REGISTRY_HTTP} = join "\n    ",
    "hopgate_listen 127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT} reuseport;",
    "hopgate_certificate $dir/edge.pem;",
    "hopgate_certificate_key $dir/edge.key;",
    "hopgate_registry file:$dir/big-registry;",
    "upstream tunnels { hopgate; }";


# the master's anonymous resident memory, KiB: the libraries' code pages
# it touches while reloading are not counted
sub anon_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^RssAnon:\s+(\d+)/;
    }
    return undef;
}


sub reloads_done {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return 0;
    return scalar grep { /: reconfiguring$/ } <$fh>;
}


# HUP, and wait until the master has read the configuration again
sub reload {
    my ($master, $n) = @_;
    my $before = reloads_done();
    for (1 .. $n) {
        kill 'HUP', $master;
        my $deadline = time + 10;
        sleep 0.02 while reloads_done() < $before + $_ && time < $deadline;
    }
    return reloads_done() - $before;
}

run_tests();

__DATA__

=== TEST 1: 50 reloads with a 2001-line registry grow the master by < 512 KiB
--- http_config
    $TEST_NGINX_BIG_REGISTRY_HTTP
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my ($master) = HopGate::Fixture::nginx_pids();

# the first reloads size the allocator's arenas
Test::More::is(main::reload($master, 5), 5, "5 reloads to warm up");
sleep 0.3;
my $start = main::anon_kb($master);

Test::More::is(main::reload($master, 50), 50, "50 more reloads");
sleep 0.3;
my $end = main::anon_kb($master);

Test::More::diag("master anonymous RSS: $start -> $end KiB over 50 reloads");
Test::More::cmp_ok($end - $start, '<', 512,
                   "the master grew by less than 512 KiB");
--- request
GET /ok
--- response_body
ok
--- no_error_log
[alert]
[crit]
[emerg]
--- timeout: 30
