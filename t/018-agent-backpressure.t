# Backpressure in the agent: while a stream cannot take more bytes (a slow
# visitor; nginx does not buffer), the agent stops watching the local
# target's socket for reading. If it kept watching, nothing would fail:
# epoll would report the socket readable again and again, and the agent
# would spin on a stream that has no room. So this watches the agent from
# outside: its wake-ups for readable target sockets (its --metrics
# counter) and its CPU time (/proc/PID/stat) over a throttled download.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Prometheus;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

hopgate_init();
no_shuffle();
no_root_location();

our $MiB = 1024 * 1024;

# user + system CPU seconds of a process
sub cpu_seconds {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $stat = <$fh>;
    $stat =~ s/^.*\) //s;                   # past "pid (comm) "
    my @f = split ' ', $stat;
    return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# (wake-ups for readable target sockets, bytes read from targets)
sub counters {
    my ($port) = @_;
    my ($rc, $out) = HopGate::Fixture::curl("http://127.0.0.1:$port/metrics");
    my $m = HopGate::Prometheus::parse($out);
    return ($m->value('hopgate_agent_target_wakeups_total'),
            $m->value('hopgate_agent_target_bytes_total',
                      direction => 'resp'));
}

run_tests();

__DATA__

=== TEST 1: a visitor reading at 1 MiB/s: the agent sleeps while the stream is full
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_stream_buffer 64k;
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
    }
--- init
my $metrics = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(
    log_level => 'info', args => ['--metrics', "127.0.0.1:$metrics"]);
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);

my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:'
                              . HopGate::Fixture::nginx_port(),
                              Proto => 'tcp') or die $!;
setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 65536);
my $size = 200 * $main::MiB;
print $s "GET /bytes/$size HTTP/1.1\r\nHost: app.test\r\n"
       . "Connection: close\r\n\r\n";

# the first bytes, then the stream fills up: measure from there
my ($got, $head) = (0, '');
while ($head !~ /\r\n\r\n/) {
    sysread($s, my $buf, 4096) or last;
    $head .= $buf;
}
$got = length($head) - index($head, "\r\n\r\n") - 4;
sleep 0.5;
my $cpu0 = main::cpu_seconds($agent->{pid});
my ($wake0, $bytes0) = main::counters($metrics);

# 1 MiB/s for 4 s: more than every buffer on the way holds, so the agent
# has to read from the target again and again, each time the stream has
# room, and is blocked in between
my $start = time;
my $read = 0;
while (time - $start < 4) {
    my $n = sysread($s, my $buf, 16384);
    last unless $n;
    $read += $n;
    my $due = $read / $main::MiB - (time - $start);
    sleep $due if $due > 0;
}
my $secs = time - $start;
my $cpu = main::cpu_seconds($agent->{pid}) - $cpu0;
my ($wake, $bytes) = main::counters($metrics);
$wake -= $wake0;
$bytes -= $bytes0;
close $s;

Test::More::like($head, qr{^HTTP/1\.1 200 }, 'the download started');
Test::More::cmp_ok($read, '>', 3 * $main::MiB, "bytes kept coming ($read)");
Test::More::cmp_ok($read, '<', 5 * $main::MiB,
                   "the reader really was slow ($read bytes in 4 s)");
Test::More::cmp_ok($bytes, '>', 2 * $main::MiB,
                   "the agent read $bytes bytes from the target meanwhile");
# a wake-up reads up to 64 KiB; a few per 64 KiB the visitor took is
# plenty, where a spinning loop wakes up hundreds of thousands of times
Test::More::cmp_ok($wake, '<', 50 + 4 * $read / 65536,
                   "the agent woke $wake times for the target "
                   . "over $read bytes");
Test::More::cmp_ok($cpu, '<', 0.25 * $secs,
                   sprintf 'the agent used %.2f s of CPU in %.1f s',
                   $cpu, $secs);
Test::More::ok(HopGate::Fixture::agent_running($agent), 'the agent runs');
--- request
GET /hello
--- response_body
hello from the local app
