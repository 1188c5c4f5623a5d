package HopGate::Edge;
# A second nginx edge that a test starts, stops and restarts itself (the
# one Test::Nginx runs cannot be killed and brought back mid-block). It
# serves app.test from the fixture's registry and certificate, with a
# master process and workers like a production edge.
#
#   my $edge = HopGate::Edge::start(workers => 2, keepalive => '2s');
#   start_agent(server => "127.0.0.1:$edge->{udp}");
#   HopGate::Edge::stop($edge, 'TERM');      # nginx -s stop
#   $edge = HopGate::Edge::start(%$edge);    # the same ports again
use strict;
use warnings;
use POSIX ();
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use HopGate::Fixture;

my @running;


# Options: workers, keepalive, http, udp (ports; fresh ones by default),
# dir. Returns {pid, http, udp, dir, started} once the HTTP port answers.
sub start {
    my (%o) = @_;
    my $hg = HopGate::Fixture::hopgate_dir();
    my $dir = $o{dir} // "$hg/edge-" . (scalar(@running) + 1) . "-$$";
    mkdir $dir;
    mkdir "$dir/logs";
    my $http = $o{http} // HopGate::Fixture::free_port();
    my $udp = $o{udp} // HopGate::Fixture::free_port();
    my $workers = $o{workers} // 2;
    my $keepalive = $o{keepalive} // '15s';
    my $module = $ENV{TEST_NGINX_LOAD_MODULES};

    open my $fh, '>', "$dir/nginx.conf" or die "$dir/nginx.conf: $!";
    print $fh <<"EOF";
load_module $module;
daemon off;
master_process on;
worker_processes $workers;
error_log $dir/logs/error.log info;
pid $dir/logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    hopgate_listen 127.0.0.1:$udp reuseport;
    hopgate_certificate $hg/edge.pem;
    hopgate_certificate_key $hg/edge.key;
    hopgate_registry file:$hg/registry;
    hopgate_keepalive $keepalive;
    upstream tunnels { hopgate; }
    server {
        listen 127.0.0.1:$http;
        location / {
            hopgate_route app.test;
            proxy_pass http://tunnels;
        }
    }
}
EOF
    close $fh;

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # not the test's stdout: prove reads TAP from it until it closes
        open STDOUT, '>>', "$dir/logs/stderr";
        open STDERR, '>>', "$dir/logs/stderr";
        { exec $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx', '-p', $dir,
               '-c', "$dir/nginx.conf", '-e', "$dir/logs/error.log" }
        POSIX::_exit(1);
    }

    my $edge = { %o, pid => $pid, http => $http, udp => $udp, dir => $dir,
                 workers => $workers, keepalive => $keepalive };
    push @running, $edge;

    my $deadline = time + 10;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http");
        if ($s) {
            $edge->{started} = time;
            return $edge;
        }
        die "nginx exited at start: " . error_log($edge)
            if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.01;
    }
    die "the edge did not start on port $http\n";
}


# the master and its workers, from the process table
sub pids {
    my ($edge) = @_;
    my @pids = ($edge->{pid});
    opendir my $d, '/proc' or return @pids;
    for my $p (grep { /^\d+$/ } readdir $d) {
        open my $fh, '<', "/proc/$p/stat" or next;
        my ($ppid) = (<$fh> // '') =~ /^\d+ \(.*\) \S+ (\d+)/;
        push @pids, $p if defined $ppid && $ppid == $edge->{pid};
    }
    return @pids;
}


# TERM (nginx -s stop), QUIT (graceful) or KILL (master and workers at
# once, as a crash); waits until every process is gone
sub stop {
    my ($edge, $sig) = @_;
    return unless $edge->{pid};
    my @pids = pids($edge);
    kill $sig // 'TERM', $sig && $sig eq 'KILL' ? @pids : $edge->{pid};
    waitpid $edge->{pid}, 0;
    my $deadline = time + 10;
    while (time < $deadline && grep { kill 0, $_ } @pids) {
        sleep 0.01;
    }
    $edge->{stopped} = time;
    delete $edge->{pid};
    @running = grep { $_ != $edge } @running;
}


sub error_log {
    my ($edge) = @_;
    open my $fh, '<', "$edge->{dir}/logs/error.log" or return '';
    local $/;
    return scalar <$fh>;
}


# one GET through the edge: (status, seconds taken)
sub get {
    my ($edge, $path, $max) = @_;
    my $start = time;
    my ($status, $out) = HopGate::Fixture::curl(
        "http://127.0.0.1:$edge->{http}" . ($path // '/hello'),
        '--max-time', $max // 10, '-o', '/dev/null', '-w', '%{http_code}');
    return ($out, time - $start);
}


END {
    stop($_, 'KILL') for @running;
}

1;
