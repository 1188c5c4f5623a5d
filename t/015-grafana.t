# docker/grafana/hopgate.json stays true to what the edge and the agent
# export: every metric a panel queries is one the README documents, every
# field a Loki query reads is one the README's log_format writes, and
# (with promtool) every PromQL expression parses.
use strict;
use warnings;
use FindBin;
use JSON::PP ();
use Test::More;

my $root = "$FindBin::Bin/..";

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or die "$file: $!";
    local $/;
    return scalar <$fh>;
}

my $dash = eval { JSON::PP::decode_json(slurp("$root/docker/grafana/"
                                              . "hopgate.json")) };
ok($dash, "the dashboard is JSON") or BAIL_OUT($@);

my $readme = slurp("$root/README.md");
my %documented = map { $_ => 1 } $readme =~ /^\| `(hopgate_\w+)` \|/mg;
my ($format) = $readme =~ /^(\s*log_format hopgate_json .*?';)\s*$/ms;
my %fields = map { $_ => 1 } ($format // '') =~ /"(\w+)":/g;

ok(keys %documented > 20, "the README documents the metrics");
ok(keys %fields > 10, "the README has the log format");

my (@promql, @logql);
for my $p (@{ $dash->{panels} }) {
    for my $t (@{ $p->{targets} || [] }) {
        my $type = $t->{datasource}{type};
        push @{ $type eq 'loki' ? \@logql : \@promql }, [$p->{title},
                                                         $t->{expr}];
    }
}

ok(@promql > 20, scalar(@promql) . " Prometheus queries");
ok(@logql >= 2, scalar(@logql) . " Loki queries");

for my $q (@promql) {
    my ($title, $expr) = @$q;
    for my $name ($expr =~ /\b(hopgate_\w+)/g) {
        my $family = $name;
        $family =~ s/_(bucket|sum|count)$// unless $documented{$name};
        ok($documented{$family}, "'$title' queries $name, documented");
    }
}

for my $q (@logql) {
    my ($title, $expr) = @$q;
    like($expr, qr/\| json\b/, "'$title' parses the JSON lines");
    my @used = $expr =~ /\b(hopgate_\w+|request_id|status)\b
                         (?=\s*(?:=~|>=|=|\)))/gx;
    ok($fields{$_}, "'$title' reads $_, which the log format writes")
        for @used;
}

SKIP: {
    skip "promtool is not installed (Debian: prometheus)", 1
        unless grep { -x "$_/promtool" } split /:/, $ENV{PATH};

    my $rules = "/tmp/hopgate-dashboard-rules.$$.yml";
    open my $fh, '>', $rules or die "$rules: $!";
    print $fh "groups:\n- name: dashboard\n  rules:\n";
    my $n = 0;
    for my $q (@promql) {
        (my $expr = $q->[1]) =~ s/\$__rate_interval/5m/g;
        $expr =~ s/\$domain/.*/g;
        printf $fh "  - record: dashboard_%d\n    expr: %s\n", $n++,
               JSON::PP->new->allow_nonref->encode($expr);
    }
    close $fh;
    my $out = `promtool check rules $rules 2>&1`;
    is($? >> 8, 0, "promtool parses every PromQL expression")
        or diag($out);
    unlink $rules;
}

done_testing();
