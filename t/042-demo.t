# `make demo` (scripts/demo) twice in a row, the first killed half-way
# with SIGKILL (its nginx, app and agent left running on the ports): the
# second run stops them and succeeds. Stale and empty pid files do not
# stop it either. A port in use is named with the variable that moves
# it, at once. Output that is not a terminal has no escape codes, and
# `DEMO_KEEP=1 scripts/demo | tail` returns (no daemon holds the pipe);
# `scripts/demo stop` then ends what it left.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use HopGate::Fixture;

my $top = "$FindBin::Bin/..";
my $build = $ENV{HOPGATE_BUILD} || "$top/build";

local $SIG{ALRM} = sub { die "timed out\n" };
alarm 240;

my $tmp = tempdir('hopgate-demo-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $dir = "$tmp/demo-run";
my %port = (DEMO_HTTP_PORT => HopGate::Fixture::free_port(),
            DEMO_TUNNEL_PORT => HopGate::Fixture::free_port(),
            DEMO_APP_PORT => HopGate::Fixture::free_port());
$ENV{$_} = $port{$_} for keys %port;
$ENV{DEMO_DIR} = $dir;
$ENV{BUILD} = $build;
delete $ENV{DEMO_KEEP};
delete $ENV{NO_COLOR};

sub slurp { open my $fh, '<', $_[0] or return ''; local $/; scalar(<$fh>) // '' }

# runs the demo with a timeout; (exit code, stdout, stderr)
sub demo {
    my ($cmd, $limit) = @_;
    $cmd //= "'$top/scripts/demo'";
    my $rc = system("timeout " . ($limit // 90) . " sh -c \"$cmd\" "
                    . ">'$tmp/out' 2>'$tmp/err' </dev/null");
    return ($rc >> 8, slurp("$tmp/out"), slurp("$tmp/err"));
}

sub pids {
    my @p;
    for my $f (qw(agent.pid app.pid logs/nginx.pid)) {
        my $p = slurp("$dir/$f");
        chomp $p;
        push @p, $p if $p =~ /^\d+$/;
    }
    return @p;
}

sub alive { grep { kill 0, $_ } @_ }

# whatever a failing run left: only the pids its own files named
my @seen_pids;
END { kill 'TERM', alive(@seen_pids, pids()) }

# --- killed half-way, then again -------------------------------------------------

my $pid = open(my $first, '-|') // die "fork: $!";
if ($pid == 0) {
    open STDERR, '>', "$tmp/first.err";
    $ENV{DEMO_KEEP} = 1;
    exec "$top/scripts/demo" or POSIX::_exit(127);
}
my $seen = '';
while (my $line = <$first>) {
    $seen .= $line;
    last if $line =~ /^== hopgate-agent for/;
}
my $deadline = time + 10;
sleep 0.05 until -s "$dir/agent.pid" || time > $deadline;
kill 'KILL', $pid;
close $first;
my @stale = pids();
push @seen_pids, @stale;
is(scalar(@stale), 3, 'the first run was killed with nginx, the app and '
   . 'the agent running') or diag($seen, slurp("$tmp/first.err"));
is(scalar(alive(@stale)), 3, 'and they outlive it, on the ports');

my ($rc, $out, $err) = demo();
is($rc, 0, 'the second run succeeds') or diag($out, $err);
like($out, qr/^hello from the local app$/m, 'a request went through the tunnel');
like($out, qr/^20971520 bytes at /m, 'and the 20 MiB download');
unlike($out . $err, qr/\e/, 'no escape codes when stdout is not a terminal');
is(scalar(alive(@stale)), 0, 'the first run\'s processes are gone');
is(scalar(pids()), 0, 'and the second run left nothing running');

# --- stale, empty pid files (a failed run under set -e) -----------------------------

mkdir $dir;
mkdir "$dir/logs";
for my $f (qw(agent.pid app.pid logs/nginx.pid)) {
    open my $fh, '>', "$dir/$f" or die $!;
    close $fh;
}
($rc, $out, $err) = demo();
is($rc, 0, 'empty pid files of an earlier run do not stop the demo')
    or diag($out, $err);

# --- a port in use ------------------------------------------------------------------

my $t0 = time;
my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                LocalPort => $port{DEMO_HTTP_PORT},
                                Listen => 1, ReuseAddr => 1) or die $!;
($rc, $out, $err) = demo();
is($rc, 1, 'HTTP port taken: the demo fails');
like($err, qr{^demo: port $port{DEMO_HTTP_PORT}/tcp is in use.*set DEMO_HTTP_PORT to another port}m,
     'naming the port and the variable that moves it') or diag($err);
close $tcp;

my $udp = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                LocalPort => $port{DEMO_TUNNEL_PORT},
                                Proto => 'udp') or die $!;
($rc, $out, $err) = demo();
is($rc, 1, 'tunnel port taken: the demo fails');
like($err, qr{^demo: port $port{DEMO_TUNNEL_PORT}/udp is in use.*set DEMO_TUNNEL_PORT}m,
     'naming the UDP port and DEMO_TUNNEL_PORT') or diag($err);
close $udp;
cmp_ok(time - $t0, '<', 20, 'both at once, not after a timeout');
is(scalar(pids()), 0, 'leaving nothing running');

# --- DEMO_KEEP=1 | tail ---------------------------------------------------------------

($rc, $out, $err) = demo("DEMO_KEEP=1 '$top/scripts/demo' | tail -n 2", 60);
is($rc, 0, 'DEMO_KEEP=1 scripts/demo | tail returns') or diag($out, $err);
like($out, qr/left running in .*make demo-stop/, 'with what it left running');
my @kept = pids();
push @seen_pids, @kept;
is(scalar(alive(@kept)), 3, 'nginx, the app and the agent still run');
like(`curl -s --max-time 10 -H 'Host: demo.localhost' http://127.0.0.1:$port{DEMO_HTTP_PORT}/hello`,
     qr/^hello from the local app$/m, 'and serve');
($rc, $out, $err) = demo("'$top/scripts/demo' stop", 30);
is($rc, 0, 'scripts/demo stop');
is(scalar(alive(@kept)), 0, 'ends them');

done_testing();
