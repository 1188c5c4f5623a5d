package HopGate::Fixture;
# Project fixtures for the Test::Nginx::Socket suite, kept apart from the
# runner so the .t files run unchanged under the real Test::Nginx:
# certificates and a registry in a temporary directory, the local app,
# hopgate-agent processes, and helpers that look at them from outside.
#
#   use lib 't/lib';
#   use HopGate::Fixture;
#   hopgate_init();              # before run_tests()
#
# Afterwards these are set for $TEST_NGINX_* expansion in configs:
#   TEST_NGINX_HOPGATE_HTTP      the http{} lines: hopgate_listen, the
#                                certificate, the registry, and
#                                `upstream tunnels { hopgate; }`
#   TEST_NGINX_HOPGATE_PORT      the UDP port
#   TEST_NGINX_HOPGATE_TUNNEL    a server{} for the http block: TLS on
#                                TEST_NGINX_TUNNEL_PORT with the edge's
#                                certificate and the hopgate_tunnel
#                                location (the agent's TCP carrier)
#   TEST_NGINX_TUNNEL_PORT       its TCP port
#   TEST_NGINX_APP_PORT          the local app's TCP port
#   TEST_NGINX_HOPGATE_DIR       the directory with edge.pem, registry, ...
use strict;
use warnings;
use Exporter 'import';
use File::Temp qw(tempdir);
use File::Spec;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use Cwd qw(abs_path);
use Digest::SHA;
use FindBin;
use HopGate::Pattern qw(pattern_sha256 pattern_chunk);

our @EXPORT = qw(hopgate_init hopgate_key test_key hopgate_dir app_port
                 edge_port
                 start_agent stop_agent agent_wait agent_log agent_running
                 stop_agents agent_binary nginx_port servroot
                 tunnel_port
                 nginx_pids worker_pids rss_kb curl curl_sha http_get
                 register_domain pattern_sha256 pattern_chunk free_port
                 hold_url hold_wait hold_release);

my $root = abs_path(File::Spec->catdir(dirname_of(__FILE__), '..', '..',
                                       '..'));
my %state = (agents => []);

# the agent started last, for one-line init sections
our $last;


sub dirname_of {
    my ($path) = @_;
    $path =~ s{/[^/]*$}{};
    return $path eq '' ? '.' : $path;
}


sub agent_binary {
    my $build = $ENV{HOPGATE_BUILD} || "$root/build";
    return "$build/hopgate-agent";
}


sub nginx_port { $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
                 || 1984 }

sub servroot { $ENV{TEST_NGINX_SERVROOT} || abs_path('t') . '/servroot' }

sub hopgate_dir { $state{dir} }

sub hopgate_key { $state{key} }

# a well-formed client key ("hg_" and 64 hex digits) named by a label
sub test_key { 'hg_' . Digest::SHA::sha256_hex("test key: $_[0]") }

sub app_port { $state{app_port} }

sub edge_port { $state{edge_port} }

sub tunnel_port { $state{tunnel_port} }


sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}


# Certificates, a registry with app.test, the local app, the env for
# configs. Idempotent within a process.
sub hopgate_init {
    my (%o) = @_;
    return if $state{dir};

    my $dir = tempdir('hopgate-test-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0755, $dir;
    $state{dir} = $dir;

    system('openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
           'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$dir/edge.key",
           '-out', "$dir/edge.pem", '-days', '7', '-subj', '/CN=localhost',
           '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1') == 0
        or die "openssl failed to make a test certificate\n";
    system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
           . "-nodes -keyout $dir/other.key -out $dir/other.pem -days 7 "
           . "-subj /CN=other 2>/dev/null") == 0
        or die "openssl failed\n";

    $state{key} = 'hg_' . join '', map { sprintf '%02x', int rand 256 }
                                 1 .. 32;
    open my $fh, '>', "$dir/registry" or die "$dir/registry: $!";
    print $fh "# domain sha256-of-key\n";
    close $fh;
    register_domain('app.test', $state{key});
    register_domain('other.test', test_key('other'));

    guard_init();

    $state{edge_port} = $ENV{TEST_NGINX_HOPGATE_PORT} || 1986;
    $state{app_port} = start_app();

    $state{tunnel_port} = $ENV{TEST_NGINX_TUNNEL_PORT} || free_port();

    $ENV{TEST_NGINX_HOPGATE_PORT} = $state{edge_port};
    $ENV{TEST_NGINX_TUNNEL_PORT} = $state{tunnel_port};
    $ENV{TEST_NGINX_HOPGATE_TUNNEL} = join "\n    ",
        "server {",
        "    listen 127.0.0.1:$state{tunnel_port} ssl;",
        "    ssl_certificate $dir/edge.pem;",
        "    ssl_certificate_key $dir/edge.key;",
        "    location = /.hopgate/tunnel { hopgate_tunnel; }",
        "}";
    $ENV{TEST_NGINX_APP_PORT} = $state{app_port};
    $ENV{TEST_NGINX_HOPGATE_DIR} = $dir;
    $ENV{TEST_NGINX_HOPGATE_HTTP} = join "\n    ",
        "hopgate_listen 127.0.0.1:$state{edge_port} reuseport;",
        "hopgate_certificate $dir/edge.pem;",
        "hopgate_certificate_key $dir/edge.key;",
        "hopgate_registry file:$dir/registry;",
        "upstream tunnels { hopgate; }";

    return $dir;
}


# The runner (ours and openresty's) answers an init section that dies with
# bail_out, which stops the whole prove run. Each block's init runs inside
# an eval instead, so a die fails its block (and so its file) and the
# other files still run.
sub guard_init {
    # plain Test::More files and bench/acme_handshake (no blocks) use
    # the fixture too
    return unless defined &Test::Nginx::Util::add_block_preprocessor;
    &Test::Nginx::Util::add_block_preprocessor(sub {
        my ($block) = @_;
        my $init = $block->init;
        return unless defined $init;
        (my $name = "$0 " . $block->name) =~ s/([\\'])/\\$1/g;
        # on the first line, so the lines of a die's message stay true
        $block->set_value('init', "eval { $init\n};\n"
            . "Test::More::fail('$name - init died: '"
            . " . (\$@ =~ s/\\s+\\z//r)) if \$@;\n");
    });
}


sub register_domain {
    my ($domain, $key) = @_;
    my $hash = Digest::SHA::sha256_hex($key);
    open my $fh, '>>', "$state{dir}/registry" or die $!;
    print $fh "$domain $hash\n";
    close $fh;
}


sub start_app {
    my $port = free_port();
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        # (without hopgate_init there is no directory for /hold)
        exec $^X, "$root/t/lib/hopgate-app", '--port', $port,
             ($state{dir} ? ('--dir', $state{dir}) : ())
            or die "exec hopgate-app: $!";
    }
    $state{app_pid} = $pid;

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Proto => 'tcp');
        if ($s) { close $s; return $port }
        sleep 0.05;
    }
    die "the local app did not start on port $port\n";
}


# ---- responses the app holds open ------------------------------------

# The path of a response of $size bytes that the app starts (64 KiB) and
# then holds open until hold_release($name): its stream stays in flight
# for as long as the test needs, whatever the buffers on the way.
sub hold_url {
    my ($name, $size, $max) = @_;
    unlink map { "$state{dir}/hold-$name.$_" } qw(started release);
    return "/hold/$name/$size" . (defined $max ? "?max=$max" : '');
}


# waits until the app holds $name's response (sent its first bytes)
sub hold_wait {
    my ($name, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        return 1 if -e "$state{dir}/hold-$name.started";
        sleep 0.02;
    }
    return 0;
}


sub hold_release {
    my ($name) = @_;
    my $file = "$state{dir}/hold-$name.release";
    open my $fh, '>', $file or die "$file: $!";
    close $fh;
}


# ---- agents ------------------------------------------------------------

# Starts hopgate-agent; by default for app.test with the right key, the
# edge's CA, and the local app. Options: domain, key, to, server, args
# (extra flags), no_key (no --key: args or env give it), env (hash), keep
# (do not stop the agents already running), binary (another build of the
# agent, e.g. the sanitizer one), transport (--transport: udp unless
# given; with auto or tcp, --tcp-server is the fixture's tunnel unless
# tcp_server says otherwise).
sub start_agent {
    my (%o) = @_;

    stop_agents() unless $o{keep};

    my $n = ++$state{agent_seq};
    my $log = "$state{dir}/agent-$n.log";
    my @args = (
        '--server', $o{server} // "127.0.0.1:$state{edge_port}",
        '--domain', $o{domain} // 'app.test',
        ($o{no_key} ? () : ('--key', $o{key} // $state{key})),
        '--to', $o{to} // "127.0.0.1:$state{app_port}",
        '--ca', "$state{dir}/edge.pem",
        '--log-level', $o{log_level} // 'debug',
        # the suite's older files test the UDP carrier: they get it alone
        (($o{transport} // 'udp') eq 'udp'
         ? ('--transport', 'udp')
         : ('--transport', $o{transport}, '--tcp-server',
            $o{tcp_server} // "127.0.0.1:$state{tunnel_port}")),
        @{ $o{args} || [] },
    );

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        %ENV = (%ENV, %{ $o{env} || {} });
        exec $o{binary} // agent_binary(), @args or die "exec: $!";
    }

    my $agent = { pid => $pid, log => $log, n => $n };
    push @{ $state{agents} }, $agent;
    $HopGate::Fixture::last = $agent;
    return $agent;
}


sub agent_running {
    my ($agent) = @_;
    return 0 if defined $agent->{status};
    my $r = waitpid($agent->{pid}, WNOHANG);
    if ($r == $agent->{pid}) {
        $agent->{status} = $? >> 8;
        $agent->{signal} = $? & 127;    # what killed it, 0 if it exited
        return 0;
    }
    return 1;
}


sub agent_log {
    my ($agent) = @_;
    open my $fh, '<', $agent->{log} or return '';
    local $/;
    return scalar <$fh>;
}


# waits until the log matches $re at least $count times; returns the count
sub agent_wait {
    my ($agent, $re, $count, $timeout) = @_;
    $count //= 1;
    my $deadline = time + ($timeout // 10);
    my $n = 0;
    while (time < $deadline) {
        my @m = agent_log($agent) =~ /$re/g;
        $n = scalar @m;
        return $n if $n >= $count;
        sleep 0.05;
    }
    return $n;
}


# signals the agent and returns its exit code (undef if it did not exit)
sub stop_agent {
    my ($agent, $sig, $timeout) = @_;
    return $agent->{status} if defined $agent->{status};
    kill $sig // 'TERM', $agent->{pid};
    my $deadline = time + ($timeout // 15);
    while (time < $deadline) {
        return $agent->{status} unless agent_running($agent);
        sleep 0.05;
    }
    kill 'KILL', $agent->{pid};
    waitpid $agent->{pid}, 0;
    $agent->{status} = undef;
    return undef;
}


sub stop_agents {
    for my $a (@{ $state{agents} }) {
        stop_agent($a, 'KILL', 2) if agent_running($a);
    }
    $state{agents} = [];
}


# ---- looking at nginx and processes from outside ----------------------------

sub nginx_pids {
    my $pidfile = servroot() . '/logs/nginx.pid';
    open my $fh, '<', $pidfile or return ();
    my $master = <$fh>;
    chomp $master;
    my @kids = split ' ', `pgrep -P $master 2>/dev/null`;
    return ($master, @kids);
}


# the processes that serve requests: workers, or the single process
sub worker_pids {
    my ($master, @kids) = nginx_pids();
    return () unless $master;
    my @workers = grep { (`ps -o args= -p $_` // '') =~ /worker/ } @kids;
    return @workers ? @workers : ($master);
}


# peak resident memory of a process, in KiB
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^VmHWM:\s+(\d+)/;
    }
    return undef;
}


# runs curl against the test nginx; returns (status, body or file output)
sub curl {
    my ($path, @args) = @_;
    my $url = $path =~ m{^https?://} ? $path
            : 'http://127.0.0.1:' . nginx_port() . $path;
    open my $fh, '-|', 'curl', '-s', '-S', '--max-time', '120', @args, $url
        or die "curl: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    return ($? >> 8, $out);
}


# downloads through nginx without keeping the body: (status, sha256, size)
sub curl_sha {
    my ($path, @args) = @_;
    my $url = 'http://127.0.0.1:' . nginx_port() . $path;
    my $hdr = "$state{dir}/headers.$$";
    unlink $hdr;

    open my $fh, '-|', 'curl', '-s', '--max-time', '300', '-D', $hdr,
         @args, $url or die "curl: $!";
    binmode $fh;

    my $sha = Digest::SHA->new(256);
    my $size = 0;
    while (read($fh, my $buf, 65536)) {
        $sha->add($buf);
        $size += length $buf;
    }
    close $fh;

    my $code = 0;
    if (open my $h, '<', $hdr) {
        while (<$h>) {
            $code = $1 if m{^HTTP/\S+ (\d+)};
        }
    }

    return ($code, $sha->hexdigest, $size);
}


# a plain HTTP/1.1 GET with a Host header; returns (status, body)
sub http_get {
    my ($path, $host) = @_;
    my ($rc, $out) = curl($path, '-H', 'Host: ' . ($host // 'app.test'),
                          '-w', "\n%{http_code}");
    my @lines = split /\n/, $out // '', -1;
    my $code = pop @lines;
    return ($code, join "\n", @lines);
}


END {
    stop_agents();
    if ($state{app_pid}) {
        kill 'TERM', $state{app_pid};
        waitpid $state{app_pid}, 0;
    }
}

1;
