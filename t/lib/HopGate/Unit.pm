package HopGate::Unit;
# Runs a service as systemd would run its unit, for as much of systemd as
# hopgate-agent@.service uses (there is no systemd as PID 1 here):
#
#   %i             the instance name (other specifiers are refused)
#   ExecStart=     the command, split on blanks (the unit quotes nothing)
#   Environment=   set for the command
#   LoadCredential=NAME:FILE
#                  FILE copied to a private $CREDENTIALS_DIRECTORY/NAME,
#                  mode 0400; a missing FILE fails the start, as there
#   Type=notify    $NOTIFY_SOCKET is a datagram socket this module reads
#   WatchdogSec=   $WATCHDOG_USEC (the option watchdog_usec overrides it)
#   DynamicUser=   when the test runs as root: the command runs as nobody,
#                  owning its credentials, so files the unit needs must be
#                  readable by another user, as under systemd
#   UMask=         applied
#   stdout/stderr  a log file whose device:inode is $JOURNAL_STREAM
#
#   my $u = HopGate::Unit::start(unit => $file, instance => 'app',
#                                path => sub { ... }, env => {...});
#   my @msgs = HopGate::Unit::notify_until($u, qr/^READY=1$/m, 10);
#   my $status = HopGate::Unit::stop($u);
use strict;
use warnings;
use POSIX ();
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use IO::Select;
use Socket qw(SOCK_DGRAM);
use Time::HiRes qw(time sleep);


sub parse {
    my ($file, $instance) = @_;
    open my $fh, '<', $file or die "$file: $!";
    my (%unit, $section, $cont);
    while (my $line = <$fh>) {
        chomp $line;
        if (defined $cont) {
            $line = "$cont $line";
            undef $cont;
        }
        if ($line =~ s/\\$//) {
            $cont = $line;
            next;
        }
        next if $line =~ /^\s*(?:[#;]|$)/;
        if ($line =~ /^\[(\w+)\]$/) {
            $section = $1;
            next;
        }
        my ($k, $v) = $line =~ /^(\w+)=(.*)$/
            or die "$file: cannot read \"$line\"\n";
        $v =~ s/%(.)/$1 eq 'i' ? $instance : $1 eq '%' ? '%'
                 : die "$file: specifier %$1 is not emulated\n"/ge;
        push @{ $unit{$section}{$k} }, $v;
    }
    return \%unit;
}


sub last_value {
    my ($unit, $k) = @_;
    my $v = $unit->{Service}{$k} or return undef;
    return $v->[-1];
}


# systemd's time spans as far as the unit uses them: 30s, 5min, 1h
sub usec {
    my ($span) = @_;
    my ($n, $u) = $span =~ /^(\d+)\s*(s|min|h|ms|)$/
        or die "time span \"$span\" is not emulated\n";
    my %f = ('' => 1e6, s => 1e6, ms => 1e3, min => 60e6, h => 3600e6);
    return $n * $f{$u};
}


sub start {
    my (%o) = @_;
    my $unit = parse($o{unit}, $o{instance});
    my $path = $o{path} || sub { $_[0] };
    my $dir = tempdir('hopgate-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0755, $dir;
    my $exec = last_value($unit, 'ExecStart') or die "no ExecStart\n";
    die "ExecStart prefixes are not emulated\n" if $exec =~ /^[-\@:+!]/;
    my @argv = map { $path->($_) } split ' ', $exec;

    my $dynamic = (last_value($unit, 'DynamicUser') // 'no') =~ /^(yes|true|1)$/
                  && $> == 0;
    my ($uid, $gid) = $dynamic ? (getpwnam('nobody'))[2, 3] : ($<, $();
    my $not_dynamic;
    # a checkout under a private directory: nobody cannot run its build
    if ($dynamic && !runs_as($uid, $gid, $argv[0])) {
        $not_dynamic = "nobody cannot execute $argv[0]";
        ($dynamic, $uid, $gid) = (0, $<, $();
    }

    my %env = (%ENV, %{ $o{env} || {} });
    for my $e (@{ $unit->{Service}{Environment} || [] }) {
        for my $kv (split ' ', $e) {
            my ($k, $v) = split /=/, $kv, 2;
            $env{$k} = $v;
        }
    }

    my $creds = "$dir/credentials";
    my @creds = @{ $unit->{Service}{LoadCredential} || [] };
    if (@creds) {
        mkdir $creds, 0700 or die "$creds: $!";
        for my $c (@creds) {
            my ($name, $file) = split /:/, $c, 2;
            $file = $path->($file);
            open my $in, '<', $file or return { failed =>
                "LoadCredential=$c: cannot read $file: $!" };
            local $/;
            my $data = <$in>;
            open my $out, '>', "$creds/$name" or die "$creds/$name: $!";
            print $out $data;
            close $out;
            chmod 0400, "$creds/$name";
            chown $uid, $gid, "$creds/$name";
        }
        chmod 0500, $creds;
        chown $uid, $gid, $creds;
        $env{CREDENTIALS_DIRECTORY} = $creds;
    }

    my $sock;
    if ((last_value($unit, 'Type') // 'simple') eq 'notify') {
        $sock = IO::Socket::UNIX->new(Type => SOCK_DGRAM,
                                      Local => "$dir/notify")
            or die "notify socket: $!";
        chmod 0777, "$dir/notify";
        $env{NOTIFY_SOCKET} = "$dir/notify";
    }

    my $wd = $o{watchdog_usec};
    if (!defined $wd && defined last_value($unit, 'WatchdogSec')) {
        $wd = usec(last_value($unit, 'WatchdogSec'));
    }
    $env{WATCHDOG_USEC} = $wd if $wd;

    my $log = $o{log} // "$dir/journal";
    open my $lfh, '>>', $log or die "$log: $!";
    close $lfh;
    chown $uid, $gid, $log if $dynamic;
    my @st = stat $log;
    $env{JOURNAL_STREAM} = "$st[0]:$st[1]" unless $o{no_journal};

    my $umask = last_value($unit, 'UMask');

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        umask oct $umask if defined $umask;
        if ($dynamic) {
            POSIX::setgid($gid);
            $) = "$gid $gid";
            POSIX::setuid($uid);
        }
        %ENV = %env;
        exec { $argv[0] } @argv or POSIX::_exit(127);
    }

    return { pid => $pid, sock => $sock, log => $log, dir => $dir,
             unit => $unit, argv => \@argv, env => \%env,
             dynamic => $dynamic, not_dynamic => $not_dynamic,
             messages => [] };
}


# whether that user may execute the file
sub runs_as {
    my ($uid, $gid, $file) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        POSIX::setgid($gid);
        $) = "$gid $gid";
        POSIX::setuid($uid);
        POSIX::_exit(-x $file ? 0 : 1);
    }
    waitpid $pid, 0;
    return $? == 0;
}


# reads notifications until one matches $re (or $timeout); returns them
sub notify_until {
    my ($u, $re, $timeout) = @_;
    return () unless $u->{sock};
    my $sel = IO::Select->new($u->{sock});
    my $deadline = time + ($timeout // 10);
    my @got;
    while ((my $left = $deadline - time) > 0) {
        last unless running($u) || $sel->can_read(0);
        next unless $sel->can_read($left < 0.2 ? $left : 0.2);
        my $msg;
        $u->{sock}->recv($msg, 4096);
        push @got, $msg;
        push @{ $u->{messages} }, $msg;
        last if $msg =~ $re;
    }
    return @got;
}


sub running {
    my ($u) = @_;
    return 0 if defined $u->{status};
    if (waitpid($u->{pid}, POSIX::WNOHANG()) == $u->{pid}) {
        $u->{status} = $? >> 8;
        return 0;
    }
    return 1;
}


sub journal {
    my ($u) = @_;
    open my $fh, '<', $u->{log} or return '';
    local $/;
    return scalar <$fh>;
}


# as systemd stops it: SIGTERM, then SIGKILL after $timeout; the exit code
sub stop {
    my ($u, $timeout) = @_;
    return $u->{status} unless running($u);
    kill 'TERM', $u->{pid};
    my $deadline = time + ($timeout // 20);
    while (time < $deadline) {
        return $u->{status} unless running($u);
        sleep 0.05;
    }
    kill 'KILL', $u->{pid};
    waitpid $u->{pid}, 0;
    return undef;
}


# a systemctl reload: ExecReload is kill -HUP $MAINPID
sub reload {
    my ($u) = @_;
    my $cmd = last_value($u->{unit}, 'ExecReload') // '';
    die "ExecReload \"$cmd\" is not emulated\n"
        unless $cmd =~ m{^/bin/kill -HUP \$MAINPID$};
    kill 'HUP', $u->{pid};
}

1;
