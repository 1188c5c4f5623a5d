# The edge keeps an agent's key text only until the registry has judged
# it: afterwards no copy is left in the worker's memory, stack included
# (the session's copy is wiped, accepted or refused; the decoded HELLO
# and the decrypted record it came in are wiped as soon as it is read),
# which /proc/PID/mem shows. The key's second half is looked for too: a
# freed copy whose first bytes malloc reused would still hold it.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep);

hopgate_init();
master_on();
workers(1);
no_shuffle();
no_root_location();


# where the worker's memory holds $key or its second half: "ADDR NAME"
sub copies_in_worker {
    my ($key) = @_;
    my $needle = substr $key, length($key) / 2;
    my ($pid) = HopGate::Fixture::worker_pids();
    open my $maps, '<', "/proc/$pid/maps" or die "maps: $!";
    open my $mem, '<:raw', "/proc/$pid/mem" or die "mem: $!";
    my @found;
    while (<$maps>) {
        my ($from, $to, $perm, $name) =
            /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/ or next;
        next if $perm !~ /^r/ || $name =~ /^\[(vvar|vsyscall|vdso)/;
        my ($a, $len) = (hex $from, hex($to) - hex($from));
        sysseek($mem, $a, 0) or next;
        my $data = '';
        while (length $data < $len) {
            my $n = sysread($mem, $data, $len - length $data, length $data);
            last unless $n;
        }
        my $at = -1;
        while (($at = index($data, $needle, $at + 1)) >= 0) {
            push @found, sprintf('%x %s', $a + $at, $name || '[anon]');
        }
    }
    return @found;
}

# a DNS server for the DNS gate: every name is 127.0.0.1
my $dns = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                Proto => 'udp') or die "udp: $!";
$ENV{TEST_NGINX_DNS_PORT} = $dns->sockport;

my $dns_pid = fork;
if ($dns_pid == 0) {
    while (1) {
        my $from = $dns->recv(my $q, 512) or next;
        my ($id) = unpack 'n', $q;
        my $pos = 12;
        $pos += ord(substr $q, $pos, 1) + 1 while ord substr $q, $pos, 1;
        my $question = substr $q, 12, $pos + 5 - 12;
        my $a = unpack('n', substr $q, $pos + 1, 2) == 1;
        my $answer = $a ? pack('n n n N n C4', 0xc00c, 1, 1, 1, 4,
                               127, 0, 0, 1) : '';
        $dns->send(pack('n n n n n n', $id, 0x8180, 1, $a ? 1 : 0, 0, 0)
                   . $question . $answer, 0, $from);
    }
    POSIX::_exit(0);
}

END { if ($dns_pid) { kill 'KILL', $dns_pid; waitpid $dns_pid, 0 } }

run_tests();

__DATA__

=== TEST 1: an accepted key leaves no copy in the worker
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/),
               1, 'the agent is connected');
my ($code) = HopGate::Fixture::http_get('/hello');
Test::More::is($code, 200, 'a request goes through the tunnel');
my @copies = main::copies_in_worker(HopGate::Fixture::hopgate_key());
Test::More::is(scalar @copies, 0, 'the key is not in the worker')
    or Test::More::diag("found at @copies");
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]



=== TEST 2: a refused key leaves no copy in the worker
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location = /ok { return 200 "ok\n"; }
--- init
my $wrong = 'hg_' . join '', map { sprintf '%02x', rand 256 } 1 .. 32;
my $agent = HopGate::Fixture::start_agent(key => $wrong);
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent, qr/refused|rejected/i),
                   '>=', 1, 'the agent is refused');
sleep 0.2;
my @copies = main::copies_in_worker($wrong);
Test::More::is(scalar @copies, 0, 'the wrong key is not in the worker')
    or Test::More::diag("found at @copies");
HopGate::Fixture::stop_agents();
--- request
GET /ok
--- response_body
ok
--- error_log
does not match the domain
--- no_error_log
[alert]
[crit]



=== TEST 3: the DNS gate's copy of the key is wiped too
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    resolver 127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off valid=1s;
    hopgate_expect_ips 127.0.0.1;
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/),
               1, 'the agent is connected through the DNS gate');
my ($code) = HopGate::Fixture::http_get('/hello');
Test::More::is($code, 200, 'a request goes through the tunnel');
my @copies = main::copies_in_worker(HopGate::Fixture::hopgate_key());
Test::More::is(scalar @copies, 0, 'the key is not in the worker')
    or Test::More::diag("found at @copies");
--- request
GET /hello
--- response_body
hello from the local app
--- no_error_log
[alert]
[crit]
