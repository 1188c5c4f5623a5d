package HopGate::Proxy;
# A real HTTP proxy for the tests of the agent's TCP carrier: Debian's
# tinyproxy in the foreground, on a free port of 127.0.0.1, letting
# clients CONNECT only to the ports it is given (none: it refuses every
# CONNECT), with basic authentication if asked.
#
#   my $proxy = HopGate::Proxy::start(connect_ports => [$port],
#                                     auth => ['alice', 's3cret']);
#   start_agent(..., args => ['--proxy', "http://127.0.0.1:$proxy->{port}"]);
#   HopGate::Proxy::connects($proxy);     # CONNECT requests it saw
use strict;
use warnings;
use POSIX qw(:sys_wait_h);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use HopGate::Fixture;

my @running;


sub start {
    my (%o) = @_;
    my $dir = HopGate::Fixture::hopgate_dir();
    my $port = HopGate::Fixture::free_port();
    my $conf = "$dir/tinyproxy-$port.conf";
    my $log = "$dir/tinyproxy-$port.log";

    open my $fh, '>', $conf or die "$conf: $!";
    print $fh "Port $port\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n"
            . "MaxClients 64\nLogLevel Info\n";
    # a ConnectPort nobody listens on: otherwise every port is allowed
    my @ports = @{ $o{connect_ports} || [] };
    print $fh "ConnectPort $_\n" for @ports ? @ports : (1);
    print $fh "BasicAuth $o{auth}[0] $o{auth}[1]\n" if $o{auth};
    close $fh;

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec 'tinyproxy', '-d', '-c', $conf or die "exec tinyproxy: $!";
    }

    my $proxy = { pid => $pid, port => $port, log => $log, owner => $$ };
    push @running, $proxy;

    my $deadline = time + 10;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        if ($s) { close $s; return $proxy }
        die "tinyproxy exited: " . log_text($proxy)
            if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    die "tinyproxy did not start: " . log_text($proxy);
}


sub log_text {
    my ($proxy) = @_;
    open my $fh, '<', $proxy->{log} or return '';
    local $/;
    return scalar <$fh> // '';
}


# the CONNECT targets it was asked for, in order
sub connects {
    my ($proxy) = @_;
    return [ log_text($proxy) =~ /Request \(file descriptor \d+\): CONNECT (\S+)/g ];
}


# tinyproxy keeps no state: TERM, and KILL if it lingers (it waits for
# its threads)
sub stop {
    my ($proxy) = @_;
    return unless $proxy->{pid};
    kill 'TERM', $proxy->{pid};
    my $deadline = time + 1;
    while (time < $deadline && waitpid($proxy->{pid}, WNOHANG) == 0) {
        sleep 0.02;
    }
    if (waitpid($proxy->{pid}, WNOHANG) == 0) {
        kill 'KILL', $proxy->{pid};
        waitpid $proxy->{pid}, 0;
    }
    delete $proxy->{pid};
    @running = grep { $_ != $proxy } @running;
}


END {
    local $?;
    my @mine = grep { $_->{owner} == $$ } @running;
    stop($_) for @mine;
}

1;
