# Junk on the hopgate port: whatever arrives there, the workers neither
# crash nor restart, the agent's sessions stay up, and requests still
# travel through the tunnel. Two workers, so junk also crosses between
# them (steering by the connection id, forwarding to the owner).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;
use IO::Socket::INET;
use Socket qw(AF_UNIX SOCK_DGRAM MSG_DONTWAIT pack_sockaddr_un);
use Time::HiRes ();

hopgate_init();
master_on();
workers(2);
no_shuffle();
no_root_location();

srand(20240611);


sub random_bytes {
    my ($n) = @_;
    return join '', map { chr int rand 256 } 1 .. $n;
}


# a DTLS 1.2 record header and a body of random bytes
sub dtls_record {
    my ($type, $epoch, $len) = @_;
    return pack('C n n a6 n', $type, 0xfefd, $epoch, random_bytes(6), $len)
           . random_bytes($len);
}


# a handshake record that starts like a ClientHello and goes on randomly
sub client_hello_like {
    my $len = 40 + int rand 400;
    my $body = pack('C a3 n a3 a3', 1, pack('N', $len) =~ s/^.//sr, 0,
                    "\0\0\0", pack('N', $len) =~ s/^.//sr)
               . pack('n', 0xfefd) . random_bytes($len - 2);
    return pack('C n n a6 n', 22, 0xfefd, 0, "\0" x 6, length $body) . $body;
}


# the abstract unix sockets the workers take forwarded datagrams on,
# "\0hopgate/MASTER_PID/TAG", TAG being the hex of the tag in their ids
sub forward_names {
    open my $fh, '<', '/proc/net/unix' or return ();
    my ($master) = HopGate::Fixture::nginx_pids();
    my @names;
    while (<$fh>) {
        push @names, "\0$1" if m{\@(hopgate/\Q$master\E/[0-9a-f]{8})$};
    }
    return @names;
}


# the workers' tags, as bytes
sub worker_tags {
    return map { pack 'H8', (split m{/})[-1] } forward_names();
}


# sends $count datagrams made by $make->($i) to the hopgate port from
# several source ports (so the kernel hashes them over both workers);
# returns what came back
sub send_junk {
    my ($count, $make) = @_;
    my @socks = map {
        IO::Socket::INET->new(Proto => 'udp',
                              PeerAddr => '127.0.0.1:' . edge_port())
            or die "socket: $!"
    } 1 .. 8;
    for my $i (1 .. $count) {
        my $dgram = $make->($i);
        send($socks[$i % @socks], $dgram, 0);
        # the edge's socket buffer is big, but not endless
        Time::HiRes::sleep(0.002) if $i % 200 == 0;
    }
    # what was sent is read before anything is judged
    Time::HiRes::sleep(0.5);
    my @replies;
    for my $sock (@socks) {
        while (defined recv($sock, my $reply, 4096, MSG_DONTWAIT)) {
            push @replies, $reply;
        }
    }
    return @replies;
}


# the replies that are stateless resets: the prefix with the id, and the
# id's 16-byte token
sub resets {
    return grep { length == 30 && (ord) == 0x15 } @_;
}


# the connection ids the edge gave the sessions that pass the relay
sub session_cids {
    my ($relay) = @_;
    return map { pack 'H26', $_ }
           HopGate::Relay::log_text($relay) =~ /session cid ([0-9a-f]{26})/g;
}


sub error_log {
    open my $fh, '<', servroot() . '/logs/error.log' or return '';
    local $/;
    return scalar <$fh>;
}


# Frames on the unix sockets the workers pass datagrams on: random, or
# shaped like a forwarded datagram (listener index, address length, an
# address of random bytes, the datagram) with nonsense inside.
sub send_forward_junk {
    my ($count) = @_;
    my @names = forward_names();
    socket(my $unix, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
    for my $i (1 .. $count) {
        my $salen = int rand 40;
        my $frame = $i % 3 == 0 ? random_bytes(int rand 200)
                  : chr($i % 4) . chr($salen) . random_bytes($salen)
                    . chr(0x10 | ($i % 4)) . random_bytes(13)
                    . dtls_record(22, 0, int rand 300);
        send($unix, $frame, MSG_DONTWAIT,
             pack_sockaddr_un($names[$i % @names]));
        Time::HiRes::sleep(0.002) if $i % 200 == 0;
    }
    Time::HiRes::sleep(0.5);
}


# The agent (given, or a new one to the edge) is connected to both
# workers. Returns what the checks afterwards compare with.
sub ready {
    my ($agent) = @_;
    $agent //= start_agent();
    my $n = agent_wait($agent, qr/connected to worker/, 2);
    Test::More::is($n, 2, 'the agent covers both workers');
    return { agent => $agent, connected => $n,
             workers => join ' ', sort { $a <=> $b } worker_pids() };
}


sub still_fine {
    my ($before) = @_;
    my $agent = $before->{agent};
    Test::More::is(join(' ', sort { $a <=> $b } worker_pids()),
                   $before->{workers}, 'the same worker processes');
    Test::More::ok(agent_running($agent), 'the agent is running');
    my @lines = agent_log($agent) =~ /(connected to worker.*)/g;
    Test::More::is(scalar @lines, $before->{connected},
                   'the agent did not have to reconnect')
        or Test::More::diag(join "\n", @lines);
    Test::More::unlike(agent_log($agent),
                       qr/lost the session|closed:|reconnecting/,
                       'no session of the agent ended');
}


add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', '$TEST_NGINX_HOPGATE_HTTP');
    $block->set_value('config', <<'CONF') unless defined $block->config;
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
CONF
    return if defined $block->request;
    $block->set_value('request', "GET /hello\n");
    $block->set_value('response_body', "hello from the local app\n");
    $block->set_value('no_error_log', "[alert]\n[crit]\n[emerg]\n"
                                      . "exited on signal\n")
        unless defined $block->no_error_log;
});

run_tests();

__DATA__

=== TEST 1: random bytes of random lengths
--- init
my $before = main::ready();
main::send_junk(5000, sub { main::random_bytes(1 + int rand 1400) });
main::still_fine($before);



=== TEST 2: empty datagrams
--- init
my $before = main::ready();
main::send_junk(3000, sub { '' });
main::still_fine($before);



=== TEST 3: datagrams shorter than the prefix
--- init
my $before = main::ready();
main::send_junk(3000, sub {
    chr(0x10 | int rand 8) . main::random_bytes(int rand 13);
});
main::still_fine($before);



=== TEST 4: a valid prefix with random DTLS records
--- init
my $before = main::ready();
main::send_junk(5000, sub {
    my $i = shift;
    "\x10" . ("\0" x 13)
    . ($i % 3 == 0 ? main::client_hello_like()
       : $i % 3 == 1 ? main::dtls_record(22, 0, int rand 1000)
       : main::dtls_record(int rand 256, int rand 3, int rand 1000));
});
main::still_fine($before);



=== TEST 5: connection ids nobody owns, answered by resets at a limited rate
--- init
my $before = main::ready();
my @replies = main::send_junk(5000, sub {
    "\x11" . main::random_bytes(13)
    . main::dtls_record(23, 1, int rand 1000);
});
my @resets = main::resets(@replies);
Test::More::cmp_ok(scalar @resets, '>', 0, 'stateless resets come back');
Test::More::cmp_ok(scalar @resets, '<=', 2 * 200 * 3,
                   'at most 200 a second from each worker');
Test::More::is(scalar @replies, scalar @resets, 'and nothing else');
main::still_fine($before);



=== TEST 6: connection ids of the live workers, with no session behind them
--- init
my $before = main::ready();
my @tags = main::worker_tags();
Test::More::is(scalar @tags, 2, 'both workers have a forwarding socket');
my @replies = main::send_junk(5000, sub {
    my $i = shift;
    # the worker byte and the tag disagree half of the time: forwarded
    "\x11" . chr($i % 2) . $tags[($i >> 1) % 2] . main::random_bytes(8)
    . main::dtls_record(23, 1, int rand 1000);
});
Test::More::cmp_ok(scalar main::resets(@replies), '>', 0,
                   'the owners answer with stateless resets');
main::still_fine($before);



=== TEST 7: steering hints, reset flags and every flag combination
--- init
my $before = main::ready();
main::send_junk(5000, sub {
    my $i = shift;
    chr(0x10 | ($i % 16)) . main::random_bytes(13 + int rand 600);
});
main::still_fine($before);



=== TEST 8: oversize datagrams of 3000 bytes
--- init
my $before = main::ready();
my @tags = main::worker_tags();
main::send_junk(2000, sub {
    my $i = shift;
    my $prefix = $i % 2 ? "\x10" . ("\0" x 13)
               : "\x11" . chr($i % 4 >> 1) . $tags[0] . "\0" x 8;
    $prefix . main::dtls_record(22, 0, 3000 - 14 - 13);
});
main::still_fine($before);



=== TEST 9: the agent's own connection id from another address, with records that fail authentication
--- init
my $relay = HopGate::Relay::start(to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}");
my $agent = HopGate::Fixture::start_agent(server => "127.0.0.1:$relay->{port}");
my $before = main::ready($agent);
my @cids = main::session_cids($relay);
Test::More::cmp_ok(scalar @cids, '>=', 2, 'the relay saw the session ids');
main::send_junk(5000, sub {
    my $i = shift;
    # of every type, at the session's epoch, at least a nonce and a tag long
    "\x11" . $cids[$i % @cids]
    . main::dtls_record(20 + $i % 4, 1, 24 + int rand 1000);
});
main::still_fine($before);
--- no_error_log
[alert]
[crit]
[emerg]
exited on signal
moved to
(tls failure)



=== TEST 10: the agent's own connection id from another address, with records too short to hold a nonce and a tag
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
    location = /alive {
        return 200 "alive\n";
    }
--- init
my $relay = HopGate::Relay::start(to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}");
my $agent = HopGate::Fixture::start_agent(server => "127.0.0.1:$relay->{port}");
my $before = main::ready($agent);
my @cids = main::session_cids($relay);
main::send_junk(200, sub {
    my $i = shift;
    "\x11" . $cids[$i % @cids] . main::dtls_record(20 + $i % 4, 1, $i % 24);
});
my ($ended) = main::error_log() =~ /(session \S+ for .* closed: .*)/;
Test::More::ok(!$ended, 'no session ended on the edge')
    or Test::More::diag($ended);
Test::More::is((HopGate::Fixture::curl('/hello', '-H', 'Host: app.test',
                                       '--max-time', '2', '-o', '/dev/null',
                                       '-w', '%{http_code}'))[1],
               200, 'requests still go through');
main::still_fine($before);
--- request
GET /alive
--- response_body
alive
--- no_error_log
[alert]
[crit]
[emerg]
exited on signal
moved to



=== TEST 11: junk on the workers' forwarding sockets
--- init
my $before = main::ready();
Test::More::is(scalar main::forward_names(), 2,
               'both workers have a forwarding socket');
main::send_forward_junk(3000);
main::still_fine($before);



=== TEST 12: all of it at once, from a burst of 20000 datagrams
--- init
my $before = main::ready();
my @tags = main::worker_tags();
main::send_junk(20000, sub {
    my $i = shift;
    my $kind = $i % 6;
    return '' if $kind == 0;
    return main::random_bytes(1 + int rand 1400) if $kind == 1;
    return "\x10" . ("\0" x 13) . main::client_hello_like() if $kind == 2;
    return "\x11" . chr($i % 2) . $tags[$i % 2] . main::random_bytes(8)
           . main::dtls_record(23, 1, int rand 1000) if $kind == 3;
    return chr(0x10 | ($i % 16)) . main::random_bytes(13 + int rand 600)
        if $kind == 4;
    return "\x10" . main::random_bytes(2986);
});
main::still_fine($before);
