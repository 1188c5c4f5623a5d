#!/usr/bin/env perl
# The nginx module built with AddressSanitizer and UndefinedBehavior-
# Sanitizer (`make asan-module`), loaded into Debian's nginx with libasan
# preloaded (build/asan-module/nginx-asan), runs a set of end-to-end files:
# they must pass, and no process may report anything. LeakSanitizer runs
# when each nginx process exits; nginx itself leaves a few allocations at
# exit (the event arrays of a worker), so a leak counts when a frame of
# its allocation is the module's or the engine's.
#
# Nginx allocates most memory from pools (big blocks): an overflow inside
# a pool block is not seen. The tests that read the workers' memory or
# RSS (034, 036) are left out, since ASan keeps freed memory in quarantine.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/..');
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my @files = map { "$root/t/$_" } qw(003-tunnel.t 006-agents.t 007-reload.t
    009-malformed.t 010-impairment.t 035-admin-chunked.t 037-forward-peers.t
    038-wildcard-listen.t);

# the module's and the engine's frames, symbolized or not
my $ours = qr/\b(?:ngx_hopgate_|ngx_http_hopgate_|hg_)\w+
             |ngx_http_hopgate_module\.so/x;

my $out = `make -s -C '$root' BUILD='$build' asan-module 2>&1`;
is($?, 0, 'the sanitizer build of the module succeeds') or diag($out);

my $module = "$build/asan-module/modules/ngx_http_hopgate_module.so";
my $nginx = "$build/asan-module/nginx-asan";
ok(-x $nginx && -f $module, 'with its nginx wrapper')
    or BAIL_OUT('no sanitizer build');

my $reports = tempdir('hopgate-asan-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $log = "$reports/prove.log";
{
    local $ENV{TEST_NGINX_BINARY} = $nginx;
    local $ENV{TEST_NGINX_LOAD_MODULES} = $module;
    local $ENV{HOPGATE_BUILD} = $build;
    # timing bounds (t/007's reload reconnects) double: ASan is slower
    local $ENV{HOPGATE_SLOWDOWN} = 2;
    local $ENV{ASAN_OPTIONS} = "log_path=$reports/asan:detect_leaks=1"
                               . ':fast_unwind_on_malloc=0';
    # UBSan reads its options (from /proc/self/environ) only at its first
    # report, after nginx has written its process title over them: it
    # reports to stderr, which is the error log, kept whole here
    local $ENV{TEST_NGINX_ERROR_LOG} = "$reports/error.log";
    system("timeout 600 prove @files >'$log' 2>&1");
}
ok($? == 0, scalar(@files) . ' end-to-end files pass with the sanitized module')
    or diag(`tail -n 40 '$log'`);

# UBSan's reports (and anything else a sanitizer said), in the error logs
my @bad;
if (open my $fh, '<', "$reports/error.log") {
    my $context = 0;
    while (<$fh>) {
        $context = 12 if /runtime error:|Sanitizer/;
        push @bad, $_ if $context-- > 0;
    }
}

# every report of every process: errors, and leaks that are ours
my $core_leaks;
for my $file (sort glob "$reports/asan.*") {
    open my $fh, '<', $file or next;
    my $text = do { local $/; <$fh> };

    if ($text =~ /ERROR: AddressSanitizer|runtime error:/) {
        push @bad, $text;
        next;
    }

    for my $leak (split /\n(?=(?:Direct|Indirect) leak of )/, $text) {
        next unless $leak =~ /^(?:Direct|Indirect) leak of /;
        if ($leak =~ $ours) {
            push @bad, $leak;
        } else {
            $core_leaks++;
        }
    }
}

is(scalar @bad, 0, 'no sanitizer report from the module or the engine')
    or diag(join '', map { substr($_, 0, 3000) }
                     @bad[0 .. ($#bad > 40 ? 40 : $#bad)]);
note(($core_leaks // 0) . " leaks of nginx's own at exit, not counted");

done_testing();
