# hopgate-agent under hopgate-agent@.service, run as systemd would run it
# (HopGate::Unit: %i, LoadCredential, NOTIFY_SOCKET, WATCHDOG_USEC,
# JOURNAL_STREAM, DynamicUser as nobody when root): the key comes from the
# credential, READY=1 is sent once the first session is up and not
# before, the journal gets "<priority>message" lines without timestamps,
# a reload is RELOADING=1 then READY=1, the watchdog is fed, SIGTERM is
# STOPPING=1 and exit 0. Without a key, or with a rejected one, the agent
# exits 2 or 3, which the unit does not restart. Also: --key-file through
# the config file and HOP_CLIENT_API_KEY_FILE, and a key made by
# `hopgate-agent keygen` opens a tunnel once its line is in the registry.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Path qw(make_path);
use Time::HiRes qw(sleep time);
use HopGate::Fixture;
use HopGate::Edge;
use HopGate::Unit;

my $root = "$FindBin::Bin/..";
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my $agent_bin = HopGate::Fixture::agent_binary();

local $SIG{ALRM} = sub { die "timed out\n" };
alarm 120;

my $hg = HopGate::Fixture::hopgate_init();
my $edge = HopGate::Edge::start(workers => 2);
my $app = HopGate::Fixture::app_port();

# the unit as `make install` writes it, the agent where the build put it
my $etc = "$hg/etc/hopgate";
make_path($etc);
chmod 0755, "$hg/etc", $etc;
my $unit = "$hg/hopgate-agent\@.service";
{
    open my $in, '<', "$root/dist/hopgate-agent\@.service.in" or die $!;
    open my $out, '>', $unit or die $!;
    (my $bindir = $agent_bin) =~ s{/[^/]+$}{};
    while (<$in>) { s/\@BINDIR\@/$bindir/g; print $out $_ }
    close $out;
}
my $map = sub { my $p = shift; $p =~ s{^/etc/hopgate/}{$etc/}; $p };

sub write_file {
    my ($f, $text, $mode) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $text;
    close $fh;
    chmod $mode // 0644, $f;
}

# no secret in the config: it is readable by the service's user
write_file("$etc/agent-app.conf", <<"EOF");
server = 127.0.0.1:$edge->{udp}
server-name = localhost
domain = app.test
to = $app
ca = $hg/edge.pem
EOF
write_file("$etc/agent-app.key", HopGate::Fixture::hopgate_key() . "\n", 0600);

# --- the unit's contract ---------------------------------------------------------

my $u = HopGate::Unit::start(unit => $unit, instance => 'app', path => $map,
                             watchdog_usec => 1_000_000);
my @n = HopGate::Unit::notify_until($u, qr/^READY=1$/m, 15);
my ($ready) = grep { /^READY=1$/m } @n;
ok($ready, 'READY=1 once the tunnel is up')
    or diag(HopGate::Unit::journal($u));
like($ready // '', qr/^STATUS=serving app\.test via 127\.0\.0\.1:\d+ \(connected to worker \d\/2\)$/m,
     'with a STATUS that says what it serves');
my $journal = HopGate::Unit::journal($u);
my ($first_conn) = $journal =~ /^(.*connected to worker.*)$/m;
ok($first_conn, 'the agent logged its first connection before READY=1');
my @lines = split /\n/, $journal;
is(scalar(grep { !/^<[3467]>\S/ } @lines), 0,
   'every journal line starts with its syslog priority')
    or diag($journal);
is(scalar(grep { /\d{4}-\d\d-\d\dT\d\d:\d\d/ } @lines), 0,
   'and carries no timestamp of its own (the journal stamps it)');
like($journal, qr/^<6>hopgate-agent [\d.]+: serving app\.test/m,
     'info is priority 6');
SKIP: {
    skip 'DynamicUser is emulated only as root', 1 unless $> == 0;
    skip "DynamicUser not emulated: $u->{not_dynamic}", 1 unless $u->{dynamic};
    open my $st, '<', "/proc/$u->{pid}/status" or die $!;
    my ($uid) = join('', <$st>) =~ /^Uid:\s+(\d+)/m;
    is($uid, scalar getpwnam('nobody'),
       'as DynamicUser it runs unprivileged and reads the key from its credential');
}

my ($rc, $body) = HopGate::Fixture::curl("http://127.0.0.1:$edge->{http}/hello");
like("$rc $body", qr/^0 hello from the local app\n?\z/,
   'a request travels through the tunnel of the unit\'s agent');

my @w = HopGate::Unit::notify_until($u, qr/^$/, 2.5);
cmp_ok(scalar(grep { /^WATCHDOG=1$/ } @w), '>=', 2,
       'WATCHDOG=1 every WATCHDOG_USEC / 2 (here 0.5 s)');

HopGate::Unit::reload($u);
my @r = HopGate::Unit::notify_until($u, qr/^READY=1$/m, 5);
my $seq = join ' ', map { /^(RELOADING=1|READY=1)$/m ? $1 : () } @r;
is($seq, 'RELOADING=1 READY=1', 'systemctl reload: RELOADING=1, then READY=1');

kill 'TERM', $u->{pid};
my @s = HopGate::Unit::notify_until($u, qr/^STOPPING=1$/m, 5);
ok((grep { /^STOPPING=1$/m } @s), 'SIGTERM: STOPPING=1');
is(HopGate::Unit::stop($u), 0, 'and a clean exit (0)');

# --- an edge that does not answer: not ready, and the status says why ------------

{
    my $closed = HopGate::Fixture::free_port();
    write_file("$etc/agent-down.conf", "server = 127.0.0.1:$closed\n"
               . "server-name = localhost\ndomain = app.test\nto = $app\n"
               . "ca = $hg/edge.pem\n");
    write_file("$etc/agent-down.key", HopGate::Fixture::hopgate_key() . "\n", 0600);
    my $x = HopGate::Unit::start(unit => $unit, instance => 'down', path => $map);
    my @m = HopGate::Unit::notify_until($x, qr/^STATUS=dialling/m, 10);
    like($m[-1] // '', qr/^STATUS=dialling 127\.0\.0\.1:$closed again in \d+\.\d s$/m,
         'edge unreachable: STATUS says it dials again, and when');
    is(scalar(grep { /^READY=1$/m } @m), 0, 'and READY=1 is not sent');
    is(HopGate::Unit::stop($x), 0, 'it still stops cleanly');
}

# --- what the unit does not restart ------------------------------------------------

my $unit_text = do { open my $fh, '<', $unit or die; local $/; <$fh> };
like($unit_text, qr/^RestartPreventExitStatus=2 3$/m,
     'the unit does not restart exit codes 2 and 3');

write_file("$etc/agent-nokey.conf", <<"EOF");
server = 127.0.0.1:$edge->{udp}
domain = app.test
to = $app
ca = $hg/edge.pem
EOF
{
    # no LoadCredential file, no key setting: the unit as if edited
    (my $t = $unit_text) =~ s/^LoadCredential=.*\n//m;
    write_file("$hg/nocred\@.service", $t);
    my $x = HopGate::Unit::start(unit => "$hg/nocred\@.service",
                                 instance => 'nokey', path => $map);
    sleep 0.05 while HopGate::Unit::running($x);
    is($x->{status}, 2, 'no key at all: exit 2');
    like(HopGate::Unit::journal($x), qr/^hopgate-agent: missing --key-file or --key .*systemd credential "key"/m,
         'naming the credential among the ways to give one');
}

write_file("$etc/agent-wrong.conf", "server = 127.0.0.1:$edge->{udp}\n"
           . "server-name = localhost\ndomain = app.test\nto = $app\n"
           . "ca = $hg/edge.pem\n");
write_file("$etc/agent-wrong.key", HopGate::Fixture::test_key('wrong') . "\n", 0600);
{
    my $x = HopGate::Unit::start(unit => $unit, instance => 'wrong', path => $map);
    my @m = HopGate::Unit::notify_until($x, qr/^READY=1$/m, 15);
    sleep 0.05 while HopGate::Unit::running($x);
    is($x->{status}, 3, 'a rejected key: exit 3');
    is(scalar(grep { /^READY=1$/m } @m), 0, 'without ever reporting READY=1');
}

# --- outside systemd: timestamps; --key-file and its variables --------------------

{
    my $x = HopGate::Unit::start(unit => $unit, instance => 'app', path => $map,
                                 no_journal => 1);
    HopGate::Unit::notify_until($x, qr/^READY=1$/m, 15);
    HopGate::Unit::stop($x);
    like(HopGate::Unit::journal($x),
         qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info connected to worker/m,
         'stderr that is not the journal gets timestamped lines');
}

my $keyfile = "$hg/app.key";
write_file($keyfile, HopGate::Fixture::hopgate_key() . "\n", 0600);
for my $how (['config file key-file', { }, "key-file = $keyfile\n"],
             ['HOP_CLIENT_API_KEY_FILE', { HOP_CLIENT_API_KEY_FILE => $keyfile }, '']) {
    my ($what, $env, $extra) = @$how;
    write_file("$hg/plain.conf", "server = 127.0.0.1:$edge->{udp}\n"
               . "server-name = localhost\ndomain = app.test\nto = $app\n"
               . "ca = $hg/edge.pem\n$extra");
    my $a = HopGate::Fixture::start_agent(
        server => "127.0.0.1:$edge->{udp}", no_key => 1, env => $env,
        args => ['--config', "$hg/plain.conf"]);
    ok(HopGate::Fixture::agent_wait($a, qr/connected to worker/, 1) >= 1,
       "the key from a file named by $what")
        or diag(HopGate::Fixture::agent_log($a));
    HopGate::Fixture::stop_agents();
}

# --- keygen: a key and the registry line that opens it ---------------------------

my $newkey = "$hg/new.key";
my $line = `'$agent_bin' keygen New.Test --key-file '$newkey' 2>/dev/null`;
is($?, 0, 'keygen --key-file succeeds');
like($line, qr/^new\.test [0-9a-f]{64}\n\z/, 'and prints only the registry line, the domain normalised');
is((stat $newkey)[2] & 07777, 0600, 'the key file is mode 0600');
my $k = do { open my $fh, '<', $newkey or die; local $/; <$fh> };
like($k, qr/^hg_[0-9a-f]{64}\n\z/, 'holding one key as the admin API gives them');
`'$agent_bin' keygen new.test --key-file '$newkey' 2>&1`;
is($? >> 8, 1, 'an existing key file is never replaced');
my $k2 = do { open my $fh, '<', $newkey or die; local $/; <$fh> };
is($k2, $k, 'and keeps its key');
my $two = `'$agent_bin' keygen new.test 2>/dev/null`;
like($two, qr/^hg_[0-9a-f]{64}\nnew\.test [0-9a-f]{64}\n\z/,
     'without --key-file: the key, then the registry line');
`'$agent_bin' keygen 'not a domain' 2>/dev/null`;
is($? >> 8, 2, 'a bad domain is a usage error');

open my $reg, '>>', "$hg/registry" or die $!;
print $reg $line;
close $reg;
sleep 1.2;      # the edge looks at the file at most once a second
my $a = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$edge->{udp}", domain => 'new.test', no_key => 1,
    args => ['--key-file', $newkey]);
ok(HopGate::Fixture::agent_wait($a, qr/connected to worker/, 1) >= 1,
   'the edge accepts the keygen key once its line is in the registry')
    or diag(HopGate::Fixture::agent_log($a));
HopGate::Fixture::stop_agents();

HopGate::Edge::stop($edge);
done_testing();
