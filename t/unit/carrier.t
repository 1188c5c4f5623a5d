#!/usr/bin/env perl
# Runs the C unit test program named after this file (TAP on stdout):
# t/unit/NAME.t runs build/unit/test_NAME, or $HOPGATE_UNIT_DIR/test_NAME
# (the sanitizer build uses that).
use strict;
use warnings;
use File::Basename qw(dirname fileparse);

my ($name) = fileparse($0, '.t');
my $dir = $ENV{HOPGATE_UNIT_DIR} || dirname($0) . '/../../build/unit';
my $bin = "$dir/test_$name";
-x $bin or die "$bin is not built (run make)\n";
exec $bin or die "exec $bin: $!\n";
