# Whom the agent trusts with --ca: a certificate that chains to the CA must
# also be the edge's. An IP address in --server is matched against the
# certificate's IP addresses, a name against its DNS names; --server-name
# names another. A mismatch is reported and, after a few tries, ends the
# agent (exit 1). SNI carries names only, never addresses.
#
# The certificates are real ones from a test CA made here with the openssl
# CLI: one for 127.0.0.1 (IP address SAN only), one for edge.test (DNS SAN
# only).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes ();

my $dir = hopgate_init();
no_shuffle();
no_root_location();

sub openssl {
    my ($cmd) = @_;
    system("openssl $cmd 2>/dev/null") == 0
        or die "openssl $cmd: failed\n";
}

# a CA, and a leaf certificate it signs for each identity
openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-keyout $dir/ca.key -out $dir/ca.pem -days 7 "
        . "-subj '/CN=HopGate test CA' "
        . "-addext basicConstraints=critical,CA:TRUE "
        . "-addext keyUsage=critical,keyCertSign");

my %san = (ip => 'IP:127.0.0.1', name => 'DNS:edge.test');
for my $leaf (sort keys %san) {
    openssl("req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            . "-keyout $dir/$leaf.key -out $dir/$leaf.csr "
            . "-subj /CN=hopgate-$leaf");
    open my $fh, '>', "$dir/$leaf.ext" or die $!;
    print $fh "subjectAltName=$san{$leaf}\n";
    close $fh;
    openssl("x509 -req -in $dir/$leaf.csr -CA $dir/ca.pem -CAkey $dir/ca.key "
            . "-CAcreateserial -out $dir/$leaf.pem -days 7 "
            . "-extfile $dir/$leaf.ext");

    (my $http = $ENV{TEST_NGINX_HOPGATE_HTTP})
        =~ s{\Q$dir\E/edge\.(pem|key)}{$dir/$leaf.$1}g;
    $ENV{'TEST_NGINX_HOPGATE_HTTP_' . uc $leaf} = $http;
}

my $port = edge_port();

# an agent for app.test that trusts the test CA (and not edge.pem)
sub agent {
    my (@args) = @_;
    return HopGate::Fixture::start_agent(
        args => ['--ca', "$dir/ca.pem", @args]);
}

# waits for the agent to exit: (exit code or undef, seconds)
sub wait_exit {
    my ($agent, $timeout) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() < $t0 + $timeout) {
        last unless HopGate::Fixture::agent_running($agent);
        Time::HiRes::sleep(0.02);
    }
    return ($agent->{status}, Time::HiRes::time() - $t0);
}

# The first datagram an agent sends with these flags, caught on a UDP port
# of ours instead of an edge: it carries the ClientHello, SNI and all.
sub client_hello {
    my (%o) = @_;
    my $udp = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                                    LocalPort => 0) or die "udp: $!";
    my $agent = HopGate::Fixture::start_agent(
        server => ($o{host} // '127.0.0.1') . ':' . $udp->sockport,
        args => ['--ca', "$dir/ca.pem", @{ $o{args} || [] }]);
    my $hello = '';
    $udp->recv($hello, 4096) if IO::Select->new($udp)->can_read(5);
    HopGate::Fixture::stop_agent($agent, 'KILL', 2);
    return $hello;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('init', "HopGate::Fixture::stop_agents();\n"
                                . ($block->init // ""));
    $block->set_value('config', <<'CONF') unless defined $block->config;
    location / {
        hopgate_route app.test;
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
CONF
});

run_tests();

__DATA__

=== TEST 1: --server 127.0.0.1: a certificate for the IP address 127.0.0.1 is accepted
--- http_config
    $TEST_NGINX_HOPGATE_HTTP_IP
--- init
my $agent = main::agent();
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 2: --server 127.0.0.1: a certificate from the same CA without that address is refused, then the agent exits 1
--- http_config
    $TEST_NGINX_HOPGATE_HTTP_NAME
--- init
my $agent = main::agent();
my ($code, $secs) = main::wait_exit($agent, 10);
Test::More::is($code, 1, 'exit code 1');
Test::More::cmp_ok($secs, '<', 5, sprintf 'after a few tries (%.1f s)',
                   $secs);
my $log = HopGate::Fixture::agent_log($agent);
Test::More::like($log, qr/ warn cannot connect to 127\.0\.0\.1:\d+: the edge's certificate is not valid for 127\.0\.0\.1 \(certificate verify failed: IP address mismatch\)/,
                 'each try says why');
Test::More::like($log, qr/ error giving up on 127\.0\.0\.1:\d+: its certificate is not valid for 127\.0\.0\.1 .*3 tries.*--server-name/,
                 'the last says what to do');
Test::More::is(scalar(() = $log =~ /dialling/g), 3, 'three tries');
Test::More::unlike($log, qr/connected to/, 'it never connects');
--- request
GET /hello
--- error_code: 502



=== TEST 3: --server-name edge.test: the name is checked instead, and the certificate for it accepted
--- http_config
    $TEST_NGINX_HOPGATE_HTTP_NAME
--- init
my $agent = main::agent('--server-name', 'edge.test');
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 4: --server-name another.test: a hostname mismatch, exit 1
--- http_config
    $TEST_NGINX_HOPGATE_HTTP_NAME
--- init
my $agent = main::agent('--server-name', 'another.test');
my ($code) = main::wait_exit($agent, 10);
Test::More::is($code, 1, 'exit code 1');
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/the edge's certificate is not valid for another\.test \(certificate verify failed: hostname mismatch\)/,
                 'the log names the name and the mismatch');
--- request
GET /hello
--- error_code: 502



=== TEST 5: --server localhost with --server-name 127.0.0.1: the address is checked
--- http_config
    $TEST_NGINX_HOPGATE_HTTP_IP
--- init
my $agent = HopGate::Fixture::start_agent(
    server => "localhost:$ENV{TEST_NGINX_HOPGATE_PORT}",
    args => ['--ca', "$ENV{TEST_NGINX_HOPGATE_DIR}/ca.pem",
             '--server-name', '127.0.0.1']);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 6: SNI carries --server-name or the --server host name, never an address
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- init
my $named = main::client_hello(args => ['--server-name', 'edge.test']);
Test::More::cmp_ok(length $named, '>', 100, 'a ClientHello was sent');
Test::More::like($named, qr/\x00\x09edge\.test/, '--server-name is the SNI');

my $host = main::client_hello(host => 'localhost');
Test::More::like($host, qr/\x00\x09localhost/, 'so is a --server name');

my $ip = main::client_hello();
Test::More::cmp_ok(length $ip, '>', 100, 'a ClientHello was sent');
Test::More::unlike($ip, qr/127\.0\.0\.1/, 'an address is not sent as SNI');
--- request
GET /hello
--- error_code: 502
