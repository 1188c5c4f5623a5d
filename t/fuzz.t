#!/usr/bin/env perl
# The datagram fuzz target (fuzz/fuzz_datagram.c) runs from the seed corpus
# for a bounded time under ASan, UBSan and LeakSanitizer and ends cleanly:
# no crash, no sanitizer report, no leak, and no datagram without the
# session's keys ended a session. Skipped without clang and the libFuzzer
# runtime. HOPGATE_FUZZ_SECONDS sets the time (default 20).
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/..');
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my $cc = $ENV{FUZZ_CC} || 'clang-14';
my $seconds = $ENV{HOPGATE_FUZZ_SECONDS} || 20;
my $tmp = tempdir(CLEANUP => 1);

# libFuzzer is there when a trivial target links with it
open my $probe, '>', "$tmp/probe.c" or die "$tmp/probe.c: $!\n";
print $probe "int LLVMFuzzerTestOneInput(const unsigned char *d, "
    . "unsigned long n) { (void) d; (void) n; return 0; }\n";
close $probe;

if (system("$cc -fsanitize=fuzzer,address,undefined -o $tmp/probe "
           . "$tmp/probe.c >/dev/null 2>&1") != 0)
{
    plan skip_all => "$cc with the libFuzzer runtime is not available";
}

plan tests => 3;

my $out = `make -s -C '$root' BUILD='$build' FUZZ_CC='$cc' fuzz 2>&1`;
is($?, 0, 'the fuzz target builds') or diag($out);

my $bin = "$build/fuzz/fuzz_datagram";
mkdir "$tmp/corpus";
mkdir "$tmp/artifacts";

# new inputs go to the scratch corpus; the seeds in fuzz/corpus stay as is
$out = `'$bin' -max_total_time=$seconds -timeout=10 -rss_limit_mb=2048 \\
    -print_final_stats=1 -artifact_prefix='$tmp/artifacts/' \\
    '$tmp/corpus' '$root/fuzz/corpus' 2>&1`;
my $rc = $?;

my @lines = split /\n/, $out;
is($rc, 0, "$seconds s of fuzzing end without a crash, leak or timeout")
    or diag(join "\n", @lines > 40 ? @lines[-40 .. -1] : @lines);

my ($runs) = $out =~ /stat::number_of_executed_units:\s*(\d+)/;
ok(defined $runs && $runs > 100, 'inputs were executed ('
   . ($runs // 'none') . ')');
