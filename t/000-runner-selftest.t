# Self-test of the Test::Nginx::Socket runner the suite is built on:
# our own implementation in t/compat/lib, or the real openresty module
# when it is installed.  Only documented behaviour is checked, so this
# passes with either.
#
# Each case writes a small .t file into a temporary directory and runs it
# in a subprocess with its own server root and port, then looks at the
# exit status and the TAP it printed, and makes sure no nginx process of
# that case is left behind.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IPC::Open3 qw(open3);
use Symbol qw(gensym);
use Test::More;

my $Nginx = find_nginx()
    or plan skip_all => 'no nginx binary found (set TEST_NGINX_BINARY or PATH)';

my $TmpDir = tempdir('runner-selftest-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @RunnerInc = runner_inc_dirs();
my $IsCompat = runner_is_compat();

diag 'runner: ' . ($IsCompat ? 'compat Test::Nginx::Socket (t/compat/lib)'
                             : 'real Test::Nginx::Socket');

# ---------------------------------------------------------------------
# A block that passes, exercising the commonly used sections.
# ---------------------------------------------------------------------
{
    my $cleanup_flag = "$TmpDir/cleanup-called";
    my %env = (SELFTEST_VALUE => 'expanded-value', SELFTEST_CLEANUP_FLAG => $cleanup_flag);
    my $r = run_case('passing', <<'_EOT_', %env);
use Test::Nginx::Socket 'no_plan';

no_shuffle();

add_cleanup_handler(sub {
    open my $fh, '>', $ENV{SELFTEST_CLEANUP_FLAG} or die "$!";
    print $fh "called\n";
    close $fh;
});

$ENV{TEST_NGINX_SELFTEST_VALUE} = $ENV{SELFTEST_VALUE};

run_tests();

__DATA__

=== TEST 1: plain response
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
[error]

=== TEST 2: env expansion, more_headers, response headers
--- config
    location = /t {
        add_header X-Selftest $TEST_NGINX_SELFTEST_VALUE;
        return 200 "probe=$http_x_probe value=$TEST_NGINX_SELFTEST_VALUE\n";
    }
--- more_headers
X-Probe: hello-probe
--- request
GET /t
--- response_headers
X-Selftest: expanded-value
!X-Not-There
--- response_body
probe=hello-probe value=expanded-value

=== TEST 3: request body gets a Content-Length
--- config
    location = /t {
        return 200 "length=$content_length\n";
    }
--- request
POST /t
hello world
--- response_body_like chomp
^length=11$

=== TEST 4: error code and error_log patterns
--- config
    location = /missing {
        root /nonexistent-selftest-dir;
    }
--- request
GET /missing
--- error_code: 404
--- error_log eval
[qr/open\(\) "[^"]*missing" failed/, "No such file or directory"]
_EOT_

    is $r->{rc}, 0, 'passing case exits 0';
    unlike $r->{out}, qr/^not ok/m, 'passing case reports no failure';
    like $r->{out}, qr/^ok \d+ - .*TEST 1: plain response - status code ok$/m,
        'status check is reported with the block name';
    like $r->{out}, qr/^ok \d+ - .*TEST 1: plain response - response_body - response is expected/m,
        'response_body check is reported';
    like $r->{out}, qr/^ok \d+ - .*TEST 2: .* - header X-Selftest ok$/m,
        '$TEST_NGINX_* expanded in config; response header checked';
    like $r->{out}, qr/^ok \d+ - .*TEST 2: .* - header X-Not-There not present/m,
        '"!Name" checks that a header is absent';
    like $r->{out}, qr/^ok \d+ - .*TEST 2: .* - response_body - response is expected/m,
        'more_headers reach nginx';
    like $r->{out}, qr/^ok \d+ - .*TEST 3: .* - response_body_like - response is expected/m,
        'request body sent with its Content-Length';
    like $r->{out}, qr/^ok \d+ - .*TEST 4: .* - status code ok$/m, 'error_code checked';
    like $r->{out}, qr/^ok \d+ - .*TEST 4: .* - pattern "No such file or directory" matches a line in error\.log/m,
        'error_log substring pattern found';
    like $r->{out}, qr/^ok \d+ - .*TEST 4: .* - pattern ".*missing.*" matches a line in error\.log/m,
        'error_log regex pattern found';
    ok -f $cleanup_flag && slurp($cleanup_flag) eq "called\n", 'cleanup handler was called';
    no_nginx_left($r);
}

# ---------------------------------------------------------------------
# Deliberately wrong expectations must fail, naming the failing check.
# ---------------------------------------------------------------------
{
    my $r = run_case('wrong-body', <<'_EOT_');
use Test::Nginx::Socket 'no_plan';
no_shuffle();
run_tests();
__DATA__

=== TEST 1: right body
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok

=== TEST 2: wrong body
--- config
    location = /t { return 200 "actual\n"; }
--- request
GET /t
--- response_body
expected
_EOT_

    isnt $r->{rc}, 0, 'wrong response_body: exit status is non-zero';
    like $r->{out}, qr/^ok \d+ - .*TEST 1: right body - response_body - response is expected/m,
        'wrong response_body: the other block still passes';
    like $r->{out}, qr/^not ok \d+ - .*TEST 2: wrong body - response_body - response is expected/m,
        'wrong response_body: reported as "not ok" naming response_body';
    no_nginx_left($r);
}

{
    my $r = run_case('wrong-code', <<'_EOT_');
use Test::Nginx::Socket 'no_plan';
run_tests();
__DATA__

=== TEST 1: wrong status
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- error_code: 404
_EOT_

    isnt $r->{rc}, 0, 'wrong error_code: exit status is non-zero';
    like $r->{out}, qr/^not ok \d+ - .*TEST 1: wrong status - status code ok/m,
        'wrong error_code: reported as "not ok" naming the status code check';
    no_nginx_left($r);
}

{
    my $r = run_case('missing-log', <<'_EOT_');
use Test::Nginx::Socket 'no_plan';
run_tests();
__DATA__

=== TEST 1: pattern that is never logged
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /t
--- error_log
selftest-never-logged-xyz
_EOT_

    isnt $r->{rc}, 0, 'missing error_log pattern: exit status is non-zero';
    like $r->{out},
        qr/^not ok \d+ - .*TEST 1: .* - pattern "selftest-never-logged-xyz" should match a line in error\.log/m,
        'missing error_log pattern: reported as "not ok" naming the pattern';
    no_nginx_left($r);
}

# ---------------------------------------------------------------------
# must_die: a configuration nginx refuses, checked through error_log.
# ---------------------------------------------------------------------
{
    my $r = run_case('must-die', <<'_EOT_');
use Test::Nginx::Socket 'no_plan';
run_tests();
__DATA__

=== TEST 1: unknown directive
--- config
    location = /t {
        selftest_no_such_directive on;
    }
--- request
GET /t
--- must_die
--- error_log
unknown directive "selftest_no_such_directive"
_EOT_

    like $r->{out}, qr/^ok \d+ - .*TEST 1: unknown directive - die as expected/m,
        'must_die: nginx refused to start';
    SKIP: {
        # The real module reads only logs/error.log; an nginx whose default
        # error log is stderr (Debian's) prints configuration errors there.
        skip 'real Test::Nginx with an nginx logging startup errors to stderr', 2
            if !$IsCompat && !startup_errors_go_to_prefix_log();
        like $r->{out}, qr/^ok \d+ - .*TEST 1: .* - pattern "unknown directive "selftest_no_such_directive"" matches/m,
            'must_die: the emerg message is matched by error_log';
        is $r->{rc}, 0, 'must_die case exits 0';
    }
    no_nginx_left($r);
}

# ---------------------------------------------------------------------
# master_on() + workers(2): starts, serves, and stops cleanly.
# ---------------------------------------------------------------------
{
    my $r = run_case('master', <<'_EOT_');
use Test::Nginx::Socket 'no_plan';
master_on();
workers(2);
run_tests();
__DATA__

=== TEST 1: served by a worker
--- config
    location = /t { return 200 "worker $pid\n"; }
--- request
GET /t
--- response_body_like: ^worker \d+$
--- error_log
start worker process
_EOT_

    is $r->{rc}, 0, 'master/workers case exits 0';
    unlike $r->{out}, qr/^not ok/m, 'master/workers case reports no failure';

    # nginx logs "start worker process <pid>" from the master for each
    # worker; all of them (and the master) must be gone now.
    my $log = slurp("$r->{servroot}/logs/error.log");
    my @workers = $log =~ /start worker process (\d+)/g;
    my ($master) = $log =~ /\[notice\] (\d+)#\d+: start worker process/;
    is scalar(@workers), 2, 'two worker processes were started';
    my @alive = grep { process_alive($_) } grep { defined } $master, @workers;
    is "@alive", '', 'master and worker processes are gone after the run';
    no_nginx_left($r);
}

# ---------------------------------------------------------------------
# Subtest counting matches the documented plan formula.
# ---------------------------------------------------------------------
{
    my $r = run_case('plan', <<'_EOT_');
use Test::Nginx::Socket;
repeat_each(2);
plan tests => repeat_each() * blocks() * 2;
run_tests();
__DATA__

=== TEST 1: one
--- config
    location = /t { return 200 "one\n"; }
--- request eval
"GET /t"
--- response_body
one

=== TEST 2: two
--- config
    location = /t { return 200 "two"; }
--- request
GET /t
--- response_body eval
"two"
_EOT_

    is $r->{rc}, 0, 'planned case exits 0';
    like $r->{out}, qr/^1\.\.8$/m, 'repeat_each(2) * 2 blocks * 2 checks = 8 planned';
    my $oks = () = $r->{out} =~ /^ok \d+ - /mg;
    is $oks, 8, 'all 8 subtests ran and passed';
    no_nginx_left($r);
}

done_testing();

# ---------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------

sub find_nginx {
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    return -f $bin && -x _ ? abs_path($bin) : undef if $bin =~ m{/};
    for my $dir (split /:/, $ENV{PATH} || '') {
        my $path = File::Spec->catfile($dir, $bin);
        return $path if -f $path && -x _;
    }
    return undef;
}

# Where this perl finds Test::Nginx::Socket, made absolute so the
# children find the same one whatever their working directory.
sub runner_inc_dirs {
    my @dirs;
    for my $dir (@INC, split /:/, $ENV{PERL5LIB} || '') {
        next if ref $dir || !-f "$dir/Test/Nginx/Socket.pm";
        push @dirs, abs_path($dir);
    }
    return @dirs;
}

sub runner_is_compat {
    return 0 unless @RunnerInc;
    return slurp("$RunnerInc[0]/Test/Nginx/Socket.pm") =~ /\$IS_COMPAT\b/ ? 1 : 0;
}

# Does this nginx log configuration errors under its prefix (as the real
# module expects) rather than to stderr or a system-wide file?
sub startup_errors_go_to_prefix_log {
    my $v = `$Nginx -V 2>&1`;
    return 1 unless $v =~ /--error-log-path=(\S+)/;
    return $1 !~ m{^/} && $1 ne 'stderr';
}

sub free_port {
    my $sock = IO::Socket::INET->new(
        LocalAddr => '0.0.0.0', LocalPort => 0, Proto => 'tcp',
        Listen => 1, ReuseAddr => 1,
    ) or die "cannot find a free port: $!";
    my $port = $sock->sockport;
    close $sock;
    return $port;
}

# Runs $source as a test file in its own directory, server root and port.
# Returns { rc, out (stdout+stderr), servroot }.
sub run_case {
    my ($name, $source, %env) = @_;
    my $dir = "$TmpDir/$name";
    mkdir $dir or die "mkdir $dir: $!";
    my $file = "$dir/$name.t";
    open my $fh, '>', $file or die "$file: $!";
    print $fh $source;
    close $fh;

    my $servroot = "$dir/servroot";
    local %ENV = %ENV;
    # Only what this case sets (no valgrind, no extra modules, no
    # leftovers from the outer run), except the knobs for slow machines.
    my %keep = map { $_ => 1 } qw(TEST_NGINX_SLEEP TEST_NGINX_TIMEOUT);
    delete $ENV{$_} for grep { /^TEST_NGINX_/ && !$keep{$_} } keys %ENV;
    %ENV = (%ENV, %env,
        TEST_NGINX_BINARY   => $Nginx,
        TEST_NGINX_SERVROOT => $servroot,
        TEST_NGINX_PORT     => free_port(),
    );

    my $pid = open3(my $in, my $out, undef,
                    $^X, (map { "-I$_" } @RunnerInc), $file);
    close $in;
    my $output = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 180;
        local $/;
        $output = <$out>;
        alarm 0;
        1;
    } or do {
        kill 'KILL', $pid;
        $output .= "\n[selftest: case '$name' timed out]\n";
    };
    waitpid $pid, 0;
    my $rc = $? >> 8;
    $output = '' unless defined $output;

    note "--- output of case '$name' (exit $rc):\n$output";
    return { rc => $rc, out => $output, servroot => $servroot };
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    my $text = <$fh>;
    return defined $text ? $text : '';
}

# Running (not a zombie awaiting its parent).
sub process_alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    my $stat = slurp("/proc/$pid/stat");
    return $stat !~ /^\d+ \(.*\) Z /s;
}

# No live process started for this case: the nginx master/single
# process carries the server root in its command line.
sub no_nginx_left {
    my ($r) = @_;
    my @left;
    if (opendir my $dh, '/proc') {
        for my $pid (grep { /^\d+$/ } readdir $dh) {
            my $cmdline = slurp("/proc/$pid/cmdline");
            push @left, $pid
                if index($cmdline, $r->{servroot}) >= 0 && process_alive($pid);
        }
    }
    is "@left", '', "no nginx process left from $r->{servroot}";
}
