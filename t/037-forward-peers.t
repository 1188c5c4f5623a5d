# Workers pass each other datagrams over abstract unix sockets, which any
# local process can send to. A worker takes them only from its siblings
# (the kernel names the sender): a datagram injected by another process,
# of another uid or of the workers' own, is ignored, while forwarding
# between the workers goes on (t/007 forwards tens of thousands across a
# reload).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(AF_UNIX SOCK_DGRAM MSG_DONTWAIT pack_sockaddr_un
              pack_sockaddr_in inet_aton);
use Time::HiRes qw(sleep time);

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();


# the names the workers take forwarded datagrams on ("\0hopgate/MASTER/TAG")
sub forward_names {
    open my $fh, '<', '/proc/net/unix' or return ();
    my ($master) = HopGate::Fixture::nginx_pids();
    my @names;
    while (<$fh>) {
        push @names, "\0$1" if m{\@(hopgate/\Q$master\E/[0-9a-f]{8})$};
    }
    return @names;
}


# an agent's first datagram (a ClientHello, which an edge answers with a
# cookie), caught on a socket of our own
sub client_hello {
    my $catch = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'udp')
        or die "udp: $!";
    my $agent = HopGate::Fixture::start_agent(
        server => '127.0.0.1:' . $catch->sockport);
    my $hello;
    $hello = undef unless IO::Select->new($catch)->can_read(10)
                          && $catch->recv($hello, 4096);
    HopGate::Fixture::stop_agents();
    return $hello;
}


# what arrives on $sock within $seconds
sub replies {
    my ($sock, $seconds) = @_;
    my @got;
    my $deadline = time + $seconds;
    while ((my $left = $deadline - time) > 0) {
        last unless IO::Select->new($sock)->can_read($left);
        $sock->recv(my $r, 4096);
        push @got, $r;
    }
    return @got;
}


# The datagram as a worker forwards it: the listen index, the length of
# the agent's address, the address (a struct sockaddr), the datagram.
# Sent to every worker's name, from a child process with uid $uid.
sub inject {
    my ($uid, $dgram, $to) = @_;
    my $from = pack_sockaddr_in($to->sockport, inet_aton('127.0.0.1'));
    my $frame = chr(0) . chr(length $from) . $from . $dgram;
    my @names = forward_names();
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        POSIX::setgid($uid) if $uid;
        POSIX::setuid($uid) if $uid;
        POSIX::_exit(1) if $uid && $> != $uid;
        socket(my $unix, AF_UNIX, SOCK_DGRAM, 0) or POSIX::_exit(2);
        for my $name (@names) {
            send($unix, $frame, MSG_DONTWAIT, pack_sockaddr_un($name))
                or POSIX::_exit(3);
        }
        POSIX::_exit(0);
    }
    waitpid $pid, 0;
    return ($? >> 8, scalar @names);
}


sub error_log {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: datagrams injected on the forwarding sockets are ignored
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my $hello = main::client_hello();
Test::More::ok(defined $hello && length $hello > 50,
               'caught an agent\'s ClientHello');

my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'udp') or die "udp: $!";
send($probe, $hello, 0,
     Socket::pack_sockaddr_in(HopGate::Fixture::edge_port(),
                              Socket::inet_aton('127.0.0.1')));
Test::More::cmp_ok(scalar main::replies($probe, 2), '>=', 1,
                   'sent to the edge, it is answered (a cookie)');

my ($rc, $n) = main::inject(0, $hello, $probe);
Test::More::is("$rc $n", '0 2', 'injected as root into both workers');
Test::More::is(scalar main::replies($probe, 1), 0,
               'and not answered');

($rc, $n) = main::inject(65534, $hello, $probe);
Test::More::is("$rc $n", '0 2', 'injected as nobody into both workers');
Test::More::is(scalar main::replies($probe, 1), 0, 'and not answered');

my $log = main::error_log();
my $ignored = qr/ignored a datagram on the forwarding socket from pid \d+/;
Test::More::ok($log =~ /$ignored uid 0,/, 'the log names the root sender');
Test::More::ok($log =~ /$ignored uid 65534,/,
               'and the one of uid nobody');
--- request
GET /ok
--- response_body
ok
--- no_error_log
[alert]
[crit]
--- timeout: 20



=== TEST 2: forwarding between the workers still works (a download, a reload)
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_buffering off;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                            2),
               2, 'the agent is connected to both workers');

# the old workers keep their sessions; the new ones, reading the same
# sockets, forward them what comes for those
my $size = 40 * 1024 * 1024;
my $result = HopGate::Fixture::hopgate_dir() . '/download.result';
my $pid = fork;
if ($pid == 0) {
    my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
                                                        '--limit-rate', '20M');
    open my $fh, '>', $result;
    print $fh "$code $sha $got\n";
    close $fh;
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.5);
my ($master) = HopGate::Fixture::nginx_pids();
kill 'HUP', $master;
waitpid $pid, 0;

open my $fh, '<', $result or die "$result: $!";
my ($code, $sha, $got) = split ' ', scalar <$fh>;
Test::More::is("$code $got", "200 $size", 'the download completed');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size), 'intact');

my @forwarded = main::error_log() =~ /a datagram forwarded by worker \d+/g;
Test::More::cmp_ok(scalar @forwarded, '>', 10,
                   scalar(@forwarded) . ' datagrams were forwarded');
Test::More::ok(main::error_log() !~ /ignored a datagram on the forwarding/,
               'none of them was refused');
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
--- timeout: 30
