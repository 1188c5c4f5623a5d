# The module loads into Debian's nginx, its directives are checked at
# configuration time, and a multi-worker nginx with it starts and stops.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;

hopgate_init();
no_shuffle();

{
    my $dir = HopGate::Fixture::hopgate_dir();
    open my $fh, '>', "$dir/garbage.key" or die $!;
    print $fh "this is not a private key\n";
    close $fh;
}

run_tests();

__DATA__

=== TEST 1: the module loads and nginx serves
--- http_config
    hopgate_mtu 1300;
--- config
    location = /t {
        return 200 "loaded\n";
    }
--- request
GET /t
--- response_body
loaded
--- error_code: 200
--- no_error_log
[emerg]
[alert]



=== TEST 2: nginx -t names hopgate_mtu and says why
--- http_config
    hopgate_mtu 64;
--- config
--- must_die
--- error_log
"hopgate_mtu" must be between 1200 and 1452, not 64



=== TEST 3: an unknown hopgate_listen parameter is refused
--- http_config
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT fastopen;
--- config
--- must_die
--- error_log
invalid parameter "fastopen" of the "hopgate_listen" directive



=== TEST 4: a hopgate_listen without a port is refused
--- http_config
    hopgate_listen 127.0.0.1;
--- config
--- must_die
--- error_log
no port in "127.0.0.1" of the "hopgate_listen" directive



=== TEST 5: an upstream with hopgate needs hopgate_listen
--- http_config
    upstream lonely { hopgate; }
--- config
--- must_die
--- error_log eval
qr/upstream "lonely" in \S+nginx\.conf:\d+ uses "hopgate", which needs "hopgate_listen"/



=== TEST 6: hopgate and keepalive in one upstream are refused
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    upstream pooled { hopgate; keepalive 8; }
--- config
--- must_die
--- error_log eval
qr/"hopgate" cannot be combined with "keepalive" or another balancer in upstream "pooled" in \S+nginx\.conf:\d+/



=== TEST 7: hopgate and another balancer in one upstream are refused
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    upstream hashed { hopgate; ip_hash; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"hopgate" cannot be combined with "keepalive" or another balancer in upstream "hashed"



=== TEST 8: the same hopgate_listen address twice is refused
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT;
--- config
--- must_die
--- error_log eval
qr/duplicate "hopgate_listen" address "127\.0\.0\.1:\d+" \(also "127\.0\.0\.1:\d+"\) in \S+nginx\.conf:\d+/



=== TEST 9: a missing key file is named under hopgate_certificate_key
--- http_config
    hopgate_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
    hopgate_certificate_key $TEST_NGINX_HOPGATE_DIR/missing.key;
--- config
--- must_die
--- error_log eval
qr/"hopgate_certificate_key": cannot open "\S+\/missing\.key" \(2: No such file or directory\) in \S+nginx\.conf:\d+/



=== TEST 10: a missing certificate is named under hopgate_certificate
--- http_config
    hopgate_certificate $TEST_NGINX_HOPGATE_DIR/missing.pem;
--- config
--- must_die
--- error_log
"hopgate_certificate": cannot open



=== TEST 11: a key file that is no key is named under hopgate_certificate_key
--- http_config
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT;
    hopgate_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
    hopgate_certificate_key $TEST_NGINX_HOPGATE_DIR/garbage.key;
    hopgate_registry file:$TEST_NGINX_HOPGATE_DIR/registry;
--- config
--- must_die
--- error_log
"hopgate_certificate_key": cannot load private key
