# hopgate_acme's directives: `nginx -t` refuses what cannot work, naming
# the directive; hopgate_acme_fallback and hopgate_acme_key_type rsa do
# what they say.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;

hopgate_init();
acme_init();

open my $short, '>', HopGate::Fixture::hopgate_dir() . '/short.key' or die $!;
print $short "too-short\n";
close $short;
no_shuffle();
no_root_location();

run_tests();

__DATA__

=== TEST 1: hopgate_acme needs a state dir
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme https://127.0.0.1:1/dir;
--- config
--- must_die
--- error_log
"hopgate_acme" needs "hopgate_acme_state"



=== TEST 2: hopgate_acme takes a URL
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme acme.example.com;
--- config
--- must_die
--- error_log
"hopgate_acme" takes the URL of an ACME directory (https://...), not "acme.example.com"



=== TEST 3: hopgate_acme needs a registry
--- http_config
    hopgate_acme https://127.0.0.1:1/dir;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/state-3;
--- config
--- must_die
--- error_log
"hopgate_acme" needs "hopgate_registry": only registered domains get certificates



=== TEST 4: hopgate_acme_certificates and hopgate_acme_challenge need hopgate_acme
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
    }
--- config
--- must_die
--- error_log
"hopgate_acme_certificates" needs "hopgate_acme" in the http{} block



=== TEST 5: hopgate_acme_challenge needs hopgate_acme
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- must_die
--- error_log
"hopgate_acme_challenge" needs "hopgate_acme" in the http{} block



=== TEST 6: ssl_certificate after hopgate_acme_certificates in a server
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        ssl_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
        ssl_certificate_key $TEST_NGINX_HOPGATE_DIR/edge.key;
    }
--- config
--- must_die
--- error_log
"ssl_certificate" must come before "hopgate_acme_certificates" in a server



=== TEST 7: bad values are named
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    hopgate_acme_max_orders 0;
--- config
--- must_die
--- error_log
"hopgate_acme_max_orders" must be between 1 and 64, not 0



=== TEST 8: an e-mail address that is not one
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme https://127.0.0.1:1/dir;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/state-8;
    hopgate_acme_email postmaster;
--- config
--- must_die
--- error_log
"hopgate_acme_email" takes an e-mail address, not "postmaster"



=== TEST 9: a fallback that cannot be read
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme_fallback $TEST_NGINX_HOPGATE_DIR/none.pem $TEST_NGINX_HOPGATE_DIR/edge.key;
--- config
--- must_die
--- error_log
"hopgate_acme_fallback": cannot read a PEM certificate from



=== TEST 10: an unknown key type
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme_key_type dsa;
--- config
--- must_die
--- error_log
"hopgate_acme_key_type" takes "ecdsa" (P-256) or "rsa" (2048 bits), not "dsa"



=== TEST 11: a backoff whose maximum is below its first delay
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme_backoff 10s 1s;
--- config
--- must_die
--- error_log
"hopgate_acme_backoff" takes a first delay of at least 1s and a longer (or equal) maximum



=== TEST 12: hopgate_acme_ca must exist
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme https://127.0.0.1:1/dir;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/state-12;
    hopgate_acme_ca $TEST_NGINX_HOPGATE_DIR/no-such-ca.pem;
--- config
--- must_die
--- error_log
"hopgate_acme_ca": cannot read



=== TEST 13: the state dir is made 0700
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
--- config
    location = /t { return 200 "ok\n"; }
--- init
my @st = stat(HopGate::Acme::acme_state());
Test::More::is(sprintf('%o', $st[2] & 07777), '700', 'the state dir is 0700');
--- request
GET /t
--- response_body
ok



=== TEST 14: hopgate_acme_fallback is served for names with no certificate; hopgate_acme_key_type rsa gets RSA certificates
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    hopgate_acme_key_type rsa;
    hopgate_acme_fallback $TEST_NGINX_HOPGATE_DIR/other.pem $TEST_NGINX_HOPGATE_DIR/other.key;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my ($fp, $issuer) = HopGate::Acme::cert_of('nobody.test');
Test::More::like($issuer, qr/CN ?= ?other/, 'the configured fallback');
Test::More::ok(defined HopGate::Acme::wait_for_cert('app.test', 10),
               'app.test is issued');
my $port = $ENV{TEST_NGINX_HTTPS_PORT};
my $text = `echo | openssl s_client -connect 127.0.0.1:$port -servername app.test 2>/dev/null | openssl x509 -noout -text 2>/dev/null`;
Test::More::like($text, qr/Public Key Algorithm: rsaEncryption/,
                 'with an RSA key');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- timeout: 20



=== TEST 15: hopgate_acme_db_key_file needs a real secret
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme_db_key_file $TEST_NGINX_HOPGATE_DIR/short.key;
--- config
--- must_die
--- error_log eval
qr/"hopgate_acme_db_key_file": "\S+" must hold a secret of at least 32 characters/
