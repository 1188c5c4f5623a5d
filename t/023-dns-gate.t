# The DNS gate: with hopgate_expect_ips, a domain must resolve (through
# nginx's resolver, here a tiny DNS server of the test's own) to one of
# the edge's addresses before its key is even checked; a refusal names
# the mismatch, and the agent keeps retrying (DNS may still change).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Socket::INET;
use POSIX ();

hopgate_init();
no_shuffle();
no_root_location();

register_domain('good.test', test_key('good'));
register_domain('elsewhere.test', test_key('elsewhere'));
register_domain('nowhere.test', test_key('nowhere'));

# name -> IPv4 address; anything else is NXDOMAIN, and AAAA is empty
my %zone = ('good.test' => '127.0.0.1', 'elsewhere.test' => '192.0.2.7');

my $dns = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                Proto => 'udp') or die "udp: $!";
$ENV{TEST_NGINX_DNS_PORT} = $dns->sockport;

my $dns_pid = fork;
if ($dns_pid == 0) {
    while (1) {
        my $from = $dns->recv(my $q, 512) or next;
        my ($id, $flags, $qd) = unpack 'n n n', $q;
        my ($pos, @labels) = (12);
        while (my $len = ord substr $q, $pos, 1) {
            push @labels, substr $q, $pos + 1, $len;
            $pos += $len + 1;
        }
        my $question = substr $q, 12, $pos + 5 - 12;
        my $type = unpack 'n', substr $q, $pos + 1, 2;
        my $name = lc join '.', @labels;
        my $addr = $zone{$name};
        my $answer = '';
        if ($addr && $type == 1) {
            $answer = pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                      . pack('C4', split /\./, $addr);
        }
        my $rcode = exists $zone{$name} ? 0 : 3;
        $dns->send(pack('n n n n n n', $id, 0x8180 | $rcode, 1,
                        $answer ? 1 : 0, 0, 0) . $question . $answer, 0,
                   $from);
    }
    POSIX::_exit(0);
}

END { if ($dns_pid) { kill 'KILL', $dns_pid; waitpid $dns_pid, 0 } }

run_tests();

__DATA__

=== TEST 1: a domain that resolves to the edge connects; one that resolves elsewhere or nowhere is refused with the reason
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    resolver 127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off valid=1s;
    resolver_timeout 2s;
    hopgate_expect_ips 127.0.0.1 ::1;
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- init
my $good = HopGate::Fixture::start_agent(
    domain => 'good.test', key => HopGate::Fixture::test_key('good'));
Test::More::is(HopGate::Fixture::agent_wait($good, qr/connected to/, 1), 1,
               'good.test resolves to the edge and connects');

my $bad = HopGate::Fixture::start_agent(
    domain => 'elsewhere.test',
    key => HopGate::Fixture::test_key('elsewhere'), keep => 1);
Test::More::cmp_ok(HopGate::Fixture::agent_wait($bad,
    qr/refused by .*elsewhere\.test resolves to 192\.0\.2\.7, not to this edge \(127\.0\.0\.1, ::1\) \(dns gate\)/,
    2, 10), '>=', 2, 'elsewhere.test is refused, naming the mismatch, and '
    . 'the agent retries');
Test::More::ok(HopGate::Fixture::agent_running($bad), 'it does not exit');

my $none = HopGate::Fixture::start_agent(
    domain => 'nowhere.test',
    key => HopGate::Fixture::test_key('nowhere'), keep => 1);
Test::More::cmp_ok(HopGate::Fixture::agent_wait($none,
    qr/refused by .*nowhere\.test does not resolve \(Host not found\)/, 1,
    10), '>=', 1, 'nowhere.test is refused: it does not resolve');

my $wrong = HopGate::Fixture::start_agent(
    domain => 'good.test', key => HopGate::Fixture::test_key('wrong'),
    keep => 1);
my $start = Time::HiRes::time();
while (HopGate::Fixture::agent_running($wrong)
       && Time::HiRes::time() - $start < 10)
{
    Time::HiRes::sleep(0.05);
}
Test::More::is($wrong->{status}, 3, 'past the gate, the key is still '
               . 'checked: a wrong one exits 3');
--- request
GET /hello
--- more_headers
Host: good.test
--- response_body
hello from the local app
--- timeout: 30



=== TEST 2: hopgate_expect_ips needs a resolver
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_expect_ips 127.0.0.1;
--- config
--- must_die
--- error_log
"hopgate_expect_ips" needs a "resolver" in the http{} block



=== TEST 3: hopgate_expect_ips takes addresses
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    resolver 127.0.0.1;
    hopgate_expect_ips 127.0.0.1 edge.example.com;
--- config
--- must_die
--- error_log
"hopgate_expect_ips" takes IP addresses, not "edge.example.com"



=== TEST 4: behind the gate, a request for a domain that is not registered is a 404 at once, and a registered one waits for its agent
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    resolver 127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off valid=1s;
    hopgate_expect_ips 127.0.0.1;
--- config
    location / {
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
--- init
my ($code) = HopGate::Fixture::http_get('/hello', 'elsewhere.test');
Test::More::is($code, 502, 'elsewhere.test is registered: it waits, 502');
--- request
GET /hello
--- more_headers
Host: nobody.test
--- error_code: 404
--- response_body_like: no such tunnel
--- timeout: 1
