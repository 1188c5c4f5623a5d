#!/usr/bin/env perl
# The engine's C unit tests again, built with AddressSanitizer and
# UndefinedBehaviorSanitizer (`make asan`): every program must pass with
# no sanitizer report.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use TAP::Parser;
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/..');
my $build = ($ENV{HOPGATE_BUILD} || "$root/build") . '/asan';

my $out = `make -s -C '$root' asan 2>&1`;
is($?, 0, 'the sanitizer build succeeds') or diag($out);

my @programs = sort glob "$build/unit/test_*";
@programs = grep { !/\.o$/ } @programs;
cmp_ok(scalar @programs, '>', 5, scalar(@programs) . ' unit programs');

for my $prog (@programs) {
    my $name = (split m{/}, $prog)[-1];
    local $ENV{ASAN_OPTIONS} = 'detect_leaks=1:abort_on_error=0';
    local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

    my $parser = TAP::Parser->new({ exec => [$prog], merge => 1 });
    my @bad;
    while (my $result = $parser->next) {
        push @bad, $result->as_string
            if ($result->is_test && !$result->is_ok)
            || $result->as_string =~ /Sanitizer|runtime error/;
    }

    ok(!$parser->has_problems && !@bad && $parser->exit == 0,
       "$name passes under ASan+UBSan")
        or diag(join "\n", @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);
}

done_testing();
