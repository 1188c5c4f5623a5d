package HopGate::Prometheus;
# A strict parser of the Prometheus text exposition format (0.0.4), for
# tests: it dies, naming the line, on anything a scraper could reject or
# that breaks the conventions we promise.
#
#   my $m = HopGate::Prometheus::parse($text);
#   $m->value('hopgate_handshakes_total', result => 'ok');   # or undef
#   $m->sum('hopgate_domain_sessions');                      # all series
#   $m->series('hopgate_domain_sessions');   # ([{labels}, value], ...)
#   $m->type('hopgate_rtt_seconds');         # 'histogram'
#
# Checked: # HELP and # TYPE once per family, before its samples, and
# every family has both; metric and label names (charset, no "__"
# prefix, no duplicate label); label values quoted with only \\ \" \n
# escapes; HELP text with only \\ \n escapes; values are Go floats;
# a family's samples form one group; no series twice; counters end in
# _total and are not negative; histograms have _bucket series with an le
# label, le increasing and ending at +Inf, counts never decreasing,
# _count equal to the +Inf bucket, and a _sum.
use strict;
use warnings;

my $NAME  = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LNAME = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $FLOAT = qr/[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/;
my %TYPES = map { $_ => 1 } qw(counter gauge histogram summary untyped);


sub parse {
    my ($text) = @_;
    my $self = bless { families => {}, order => [] }, __PACKAGE__;

    die "exposition: empty\n" unless defined $text && length $text;
    die "exposition: does not end with a newline\n" unless $text =~ /\n\z/;

    my ($current, %done, %seen);
    my $n = 0;

    for my $line (split /\n/, $text) {
        $n++;
        my $where = "line $n: '$line'";

        next if $line eq '';

        if ($line =~ /^#\s*(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/) {
            my ($kw, $name, $rest) = ($1, $2, $3 // '');
            die "$where: bad metric name\n" unless $name =~ /^$NAME$/;
            my $f = $self->family($name);

            if ($current && $current ne $name) {
                $done{$current} = 1;
            }
            die "$where: family '$name' is not one group\n" if $done{$name};
            $current = $name;

            if ($kw eq 'HELP') {
                die "$where: second HELP\n" if defined $f->{help};
                die "$where: HELP after samples\n" if @{ $f->{samples} };
                $f->{help} = unescape($rest, $where);
            } else {
                die "$where: second TYPE\n" if defined $f->{type};
                die "$where: TYPE after samples\n" if @{ $f->{samples} };
                die "$where: unknown type '$rest'\n" unless $TYPES{$rest};
                $f->{type} = $rest;
            }
            next;
        }

        next if $line =~ /^#/;    # a comment

        my ($name, $labels, $value) = sample($line, $where);
        my $family = $self->family_of($name, $where);

        if ($current && $current ne $family) {
            $done{$current} = 1;
        }
        die "$where: family '$family' is not one group\n" if $done{$family};
        $current = $family;

        my $key = join "\0", $name,
                  map { "$_=$labels->{$_}" } sort keys %$labels;
        die "$where: the same series twice\n" if $seen{$key}++;

        push @{ $self->{families}{$family}{samples} },
             { name => $name, labels => $labels, value => $value,
               where => $where };
    }

    for my $name (@{ $self->{order} }) {
        $self->check_family($name, $self->{families}{$name});
    }

    return $self;
}


sub family {
    my ($self, $name) = @_;
    unless ($self->{families}{$name}) {
        $self->{families}{$name} = { samples => [] };
        push @{ $self->{order} }, $name;
    }
    return $self->{families}{$name};
}


# the family a sample belongs to: a histogram's _bucket, _sum and _count
# belong to the histogram, everything else to its own name
sub family_of {
    my ($self, $name, $where) = @_;
    if ($name =~ /^(.*)_(?:bucket|sum|count)$/) {
        my $base = $1;
        my $f = $self->{families}{$base};
        return $base if $f && ($f->{type} // '') =~ /^(?:histogram|summary)$/;
    }
    my $f = $self->{families}{$name};
    die "$where: sample without # TYPE\n" unless $f && defined $f->{type};
    die "$where: a histogram's samples need a suffix\n"
        if $f->{type} eq 'histogram';
    return $name;
}


sub sample {
    my ($line, $where) = @_;
    my %labels;

    $line =~ /\G($NAME)/gc or die "$where: bad metric name\n";
    my $name = $1;

    if ($line =~ /\G\{/gc) {
        while (1) {
            last if $line =~ /\G\}/gc;
            $line =~ /\G($LNAME)="/gc or die "$where: bad label\n";
            my $l = $1;
            die "$where: label '$l' is reserved\n" if $l =~ /^__/;
            die "$where: label '$l' twice\n" if exists $labels{$l};
            my $v = '';
            while (1) {
                if ($line =~ /\G([^"\\\n]+)/gc) { $v .= $1; next }
                if ($line =~ /\G\\(["\\n])/gc) {
                    $v .= $1 eq 'n' ? "\n" : $1;
                    next;
                }
                last if $line =~ /\G"/gc;
                die "$where: bad label value\n";
            }
            $labels{$l} = $v;
            next if $line =~ /\G,(?=[a-zA-Z_])/gc;
            $line =~ /\G,?\}/gc or die "$where: bad label list\n";
            last;
        }
    }

    $line =~ /\G[ \t]+($FLOAT)(?:[ \t]+(-?\d+))?[ \t]*$/gc
        or die "$where: bad value or timestamp\n";

    my $value = $1;
    $value = $value =~ /Inf/ ? ($value =~ /^-/ ? -9**9**9 : 9**9**9)
           : $value =~ /NaN/ ? 'NaN' : 0 + $value;

    return ($name, \%labels, $value);
}


sub unescape {
    my ($text, $where) = @_;
    my $out = '';
    while ($text =~ /\G(?:([^\\]+)|\\(.)|(\\)$)/gc) {
        if (defined $1) { $out .= $1; next }
        die "$where: lone backslash\n" if defined $3;
        die "$where: bad escape '\\$2'\n" unless $2 eq '\\' || $2 eq 'n';
        $out .= $2 eq 'n' ? "\n" : '\\';
    }
    return $out;
}


sub check_family {
    my ($self, $name, $f) = @_;

    die "family '$name': no # TYPE\n" unless defined $f->{type};
    die "family '$name': no # HELP\n" unless defined $f->{help};

    if ($f->{type} eq 'counter') {
        die "counter '$name' does not end in _total\n"
            unless $name =~ /_total$/;
        for my $s (@{ $f->{samples} }) {
            die "$s->{where}: a counter below zero\n"
                if $s->{value} eq 'NaN' || $s->{value} < 0;
        }
    }

    check_histogram($name, $f) if $f->{type} eq 'histogram';
}


sub check_histogram {
    my ($name, $f) = @_;
    my %sets;

    for my $s (@{ $f->{samples} }) {
        my %l = %{ $s->{labels} };
        my $le = delete $l{le};
        my $key = join "\0", map { "$_=$l{$_}" } sort keys %l;
        my $set = $sets{$key} //= { buckets => [] };

        if ($s->{name} eq "${name}_bucket") {
            die "$s->{where}: bucket without le\n" unless defined $le;
            die "$s->{where}: bad le\n" unless $le =~ /^$FLOAT$/;
            my $bound = $le eq '+Inf' ? 9**9**9 : 0 + $le;
            my $prev = $set->{buckets}[-1];
            if ($prev) {
                die "$s->{where}: le not increasing\n"
                    unless $bound > $prev->[0];
                die "$s->{where}: bucket count decreases\n"
                    if $s->{value} < $prev->[1];
            }
            push @{ $set->{buckets} }, [$bound, $s->{value}, $le];
        } elsif ($s->{name} eq "${name}_sum") {
            die "$s->{where}: le on _sum\n" if defined $le;
            $set->{sum} = $s->{value};
        } elsif ($s->{name} eq "${name}_count") {
            die "$s->{where}: le on _count\n" if defined $le;
            $set->{count} = $s->{value};
        } else {
            die "$s->{where}: not a histogram sample\n";
        }
    }

    for my $key (keys %sets) {
        my $set = $sets{$key};
        my $last = $set->{buckets}[-1];
        die "histogram '$name' {$key}: no buckets\n" unless $last;
        die "histogram '$name' {$key}: last bucket is not +Inf\n"
            unless $last->[2] eq '+Inf';
        die "histogram '$name' {$key}: no _count\n"
            unless defined $set->{count};
        die "histogram '$name' {$key}: no _sum\n" unless defined $set->{sum};
        die "histogram '$name' {$key}: _count $set->{count} is not the "
            . "+Inf bucket $last->[1]\n" unless $set->{count} == $last->[1];
    }
}


# ---- looking things up --------------------------------------------------

sub type {
    my ($self, $name) = @_;
    my $f = $self->{families}{$name};
    return $f ? $f->{type} : undef;
}


sub help {
    my ($self, $name) = @_;
    my $f = $self->{families}{$name};
    return $f ? $f->{help} : undef;
}


sub families { @{ $_[0]{order} } }


# the samples named $name (a sample name, e.g. foo_bucket), as
# [labels, value] pairs, optionally only those whose labels match %want
sub series {
    my ($self, $name, %want) = @_;
    my @out;
    for my $f (values %{ $self->{families} }) {
        for my $s (@{ $f->{samples} }) {
            next unless $s->{name} eq $name;
            next if grep { ($s->{labels}{$_} // "\0") ne $want{$_} }
                    keys %want;
            push @out, [$s->{labels}, $s->{value}];
        }
    }
    return @out;
}


# the one sample with exactly these labels, or undef
sub value {
    my ($self, $name, %labels) = @_;
    for my $s ($self->series($name, %labels)) {
        return $s->[1] if keys %{ $s->[0] } == keys %labels;
    }
    return undef;
}


sub sum {
    my ($self, $name, %want) = @_;
    my $sum = 0;
    $sum += $_->[1] for $self->series($name, %want);
    return $sum;
}

1;
