package HopGate::Relay;
# Starts t/lib/hopgate-relay (a UDP relay that loses, duplicates, delays
# and reorders datagrams, rebinds its clients' source ports, and forwards
# a copy of one from elsewhere) for a test, and reads its counters.
#
#   my $relay = HopGate::Relay::start(to => "127.0.0.1:$port",
#                                     loss => 0.05, seed => 7);
#   start_agent(server => "127.0.0.1:$relay->{port}");
#   ...
#   my $counters = HopGate::Relay::stop($relay);   # {up => {in => ..}}
use strict;
use warnings;
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use Cwd qw(abs_path);

my $script = abs_path(__FILE__ =~ s{/HopGate/Relay\.pm$}{}r)
             . '/hopgate-relay';
my $tcp_script = abs_path(__FILE__ =~ s{/HopGate/Relay\.pm$}{}r)
                 . '/hopgate-tcprelay';
my $dir;
my @running;
my $started = 0;


# Options: to (required), loss, duplicate, reorder, reorder_delay, delay,
# rebind_after (bytes), rebind_at (seconds), forward_copy_after (bytes),
# forward_copy_lead (ms), block (drop everything; see block()), seed. Returns {pid, port, log} once the relay listens.
sub start {
    my (%o) = @_;
    $dir //= tempdir('hopgate-relay-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    # a name never used before: a stopped relay's log must not be read
    # for the next one's port
    my $log = "$dir/relay-" . ++$started . ".log";

    my @args = ('--to', $o{to}, '--log', $log);
    for my $knob (qw(loss duplicate reorder reorder_delay delay seed
                     listen rebind_after rebind_at forward_copy_after
                     forward_copy_lead corrupt_cid))
    {
        next unless defined $o{$knob};
        push @args, '--' . ($knob =~ tr/_/-/r), $o{$knob};
    }
    push @args, '--block' if $o{block};

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec $^X, $script, @args or die "exec $script: $!";
    }

    my $relay = { pid => $pid, log => $log, owner => $$ };
    push @running, $relay;

    my $deadline = time + 10;
    while (time < $deadline) {
        if (log_text($relay) =~ /listening on [\d.]+:(\d+)/) {
            $relay->{port} = $1;
            return $relay;
        }
        if (waitpid($pid, WNOHANG) == $pid) {
            @running = grep { $_ != $relay } @running;
            die "hopgate-relay exited: " . log_text($relay);
        }
        sleep 0.02;
    }
    die "hopgate-relay did not start: " . log_text($relay);
}


# The TCP relay (t/lib/hopgate-tcprelay) in front of the edge's tunnel
# port: {pid, port, log}; reset_tcp() resets what it carries.
sub start_tcp {
    my (%o) = @_;
    $dir //= tempdir('hopgate-relay-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $log = "$dir/tcprelay-" . ++$started . ".log";

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec $^X, $tcp_script, '--to', $o{to}, '--log', $log
            or die "exec $tcp_script: $!";
    }

    my $relay = { pid => $pid, log => $log, owner => $$ };
    push @running, $relay;

    my $deadline = time + 10;
    while (time < $deadline) {
        if (log_text($relay) =~ /listening on [\d.]+:(\d+)/) {
            $relay->{port} = $1;
            return $relay;
        }
        die "hopgate-tcprelay exited: " . log_text($relay)
            if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    die "hopgate-tcprelay did not start: " . log_text($relay);
}


# resets every connection the TCP relay carries; the count it reset
sub reset_tcp {
    my ($relay) = @_;
    my $before = () = log_text($relay) =~ /^relay: reset/mg;
    kill 'USR1', $relay->{pid};
    my $deadline = time + 5;
    while (time < $deadline) {
        my @n = log_text($relay) =~ /^relay: reset (\d+)/mg;
        return $n[-1] if @n > $before;
        sleep 0.02;
    }
    return undef;
}


sub log_text {
    my ($relay) = @_;
    open my $fh, '<', $relay->{log} or return '';
    local $/;
    return scalar <$fh> // '';
}


# The last counters the relay printed: {up => {in, out, lost, ...},
# down => {...}, clients => N, forwarder => {port, sent, got, datagrams}
# once a copy went}.
sub counters {
    my ($relay) = @_;
    my %c;
    for my $line (split /\n/, log_text($relay)) {
        if ($line =~ /^relay: (up|down)\s+(.*)/) {
            $c{$1} = { map { split /=/ } split ' ', $2 };
        } elsif ($line =~ /^relay: clients=(\d+)/) {
            $c{clients} = $1;
        } elsif ($line =~ /^relay: forwarder port (\d+) (.*)/) {
            $c{forwarder} = { port => $1, map { split /=/ } split ' ', $2 };
        }
    }
    return \%c;
}


# Asks a running relay to print its counters, and returns them.
sub snapshot {
    my ($relay) = @_;
    my $before = () = log_text($relay) =~ /^relay: clients=/mg;
    kill 'USR1', $relay->{pid};
    my $deadline = time + 5;
    while (time < $deadline) {
        my $now = () = log_text($relay) =~ /^relay: clients=/mg;
        last if $now > $before;
        sleep 0.02;
    }
    return counters($relay);
}


# UDP blocked (1) or passing (0) from now on; waits until the relay says so
sub block {
    my ($relay, $on) = @_;
    my $want = $on ? 'blocking' : 'passing';
    my @lines = log_text($relay) =~ /^relay: (blocking|passing)$/mg;
    return 1 if (@lines ? $lines[-1] : 'passing') eq $want;
    my $before = @lines;
    kill 'USR2', $relay->{pid};
    my $deadline = time + 5;
    while (time < $deadline) {
        my @now = log_text($relay) =~ /^relay: (blocking|passing)$/mg;
        return 1 if @now > $before && $now[-1] eq $want;
        sleep 0.02;
    }
    return 0;
}


# Stops the relay; returns its final counters.
sub stop {
    my ($relay) = @_;
    if (!defined $relay->{status}) {
        kill 'TERM', $relay->{pid};
        my $deadline = time + 5;
        while (time < $deadline && waitpid($relay->{pid}, WNOHANG) == 0) {
            sleep 0.02;
        }
        if (kill 0, $relay->{pid}) {
            kill 'KILL', $relay->{pid};
            waitpid $relay->{pid}, 0;
        }
        $relay->{status} = $?;
        @running = grep { $_ != $relay } @running;
    }
    return counters($relay);
}


# The relay's rebindings: [{client, from, to, after}], oldest first.
sub rebindings {
    my ($relay) = @_;
    my @r;
    for my $line (split /\n/, log_text($relay)) {
        next unless $line =~ /^relay:[ ]client[ ](\S+)[ ]rebound[ ]from[ ]port[ ](\d+)
                              [ ] to [ ] port [ ] (\d+) [ ] after [ ] (\d+)/x;
        push @r, { client => $1, from => $2, to => $3, after => $4 };
    }
    return \@r;
}


# one line per direction, for diag()
sub summary {
    my ($c) = @_;
    return join "\n", map {
        my $d = $c->{$_} || {};
        sprintf "%-4s in=%s out=%s lost=%s duplicated=%s reordered=%s", $_,
            map { $d->{$_} // '?' } qw(in out lost duplicated reordered)
    } qw(up down);
}


END {
    local $?;
    # only the process that started them, not a forked helper; stop()
    # changes @running, so from a copy
    my @mine = grep { $_->{owner} == $$ } @running;
    stop($_) for @mine;
}

1;
