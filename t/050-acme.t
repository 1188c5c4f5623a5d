# ACME certificates for registered domains, from a real ACME server
# (pebble, with its default 5% badNonce rejections) validating HTTP-01
# against the test nginx: a registered domain gets a certificate that
# verifies against pebble's root and serves through the tunnel; a restart
# orders nothing; every worker answers challenges and serves the
# certificates; a name that is not registered gets the fallback and no
# order; unregistering stops serving.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;
use Time::HiRes qw(time sleep);

hopgate_init();
acme_init();

my $admin_token = 'acme-test-admin-token-' . ('7' x 40);
open my $kf, '>', HopGate::Fixture::hopgate_dir() . '/admin.key' or die $!;
print $kf "$admin_token\n";
close $kf;
chmod 0600, HopGate::Fixture::hopgate_dir() . '/admin.key';
$ENV{TEST_NGINX_ADMIN_TOKEN} = $admin_token;
no_shuffle();
no_root_location();

our ($shop_fp, $orders_before);

# the ACME server's certificates before and after a block, by name
sub order_lines {
    my ($name) = @_;
    my $log = HopGate::Fixture::servroot() . '/logs/error.log';
    open my $fh, '<', $log or return 0;
    my $n = grep { /hopgate acme: (new|renewal) order for \Q$name\E / }
            <$fh>;
    return $n;
}

run_tests();

__DATA__

=== TEST 1: a domain registered while nginx runs has a certificate within 10 s, verified against pebble's root, and HTTPS reaches the local app through the tunnel
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { proxy_pass http://tunnels; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
HopGate::Fixture::register_domain('shop.test',
                                  HopGate::Fixture::test_key('shop'));
my $registered = Time::HiRes::time();
# the registry is re-read at most once a second
Time::HiRes::sleep(1.1);
my $agent = HopGate::Fixture::start_agent(
    domain => 'shop.test', key => HopGate::Fixture::test_key('shop'));
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
my $took = HopGate::Acme::wait_for_cert('shop.test',
    10 - (Time::HiRes::time() - $registered));
$took = Time::HiRes::time() - $registered if defined $took;
Test::More::ok(defined $took, 'shop.test has a certificate from pebble '
               . 'within 10 s' . (defined $took ? sprintf(' (%.1f s)', $took)
                                                : ''));
my ($code, $body) = HopGate::Acme::https_get('shop.test', '/hello');
Test::More::is($code, 200, 'HTTPS to shop.test verifies against pebble\'s '
               . 'root');
Test::More::is($body, "hello from the local app\n", 'and reaches the local '
               . 'app through the tunnel');
($main::shop_fp) = HopGate::Acme::cert_of('shop.test');
$main::orders_before = HopGate::Acme::pebble_orders();
--- request
GET /.well-known/acme-challenge/not-a-token
--- error_code: 404
--- error_log eval
[qr/hopgate acme: order for shop\.test: http-01 challenge published/,
 qr/hopgate acme: answered the http-01 challenge/,
 qr/hopgate acme: order for shop\.test: certificate issued in/]
--- no_error_log
[alert]
[emerg]
--- timeout: 30



=== TEST 2: after a restart the same certificate is served from the state dir, and pebble sees no new order
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my ($fp, $issuer) = HopGate::Acme::cert_of('shop.test');
Test::More::like($issuer, qr/Pebble/, 'shop.test is served a certificate '
                 . 'from pebble at once');
Test::More::is($fp, $main::shop_fp, 'the one issued before the restart');
# the client runs, lists the registry and decides: nothing is due
Time::HiRes::sleep(3);
Test::More::is(HopGate::Acme::pebble_orders(), $main::orders_before,
               'pebble was asked for no new order');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- error_log eval
[qr/hopgate acme: 3 certificates loaded from/,
 qr/hopgate acme: account \S+ in use/]
--- no_error_log eval
[qr/hopgate acme: (new|renewal) order/, qr/\[alert\]/]
--- timeout: 20



=== TEST 3: a name that is not registered gets the fallback certificate, whatever SNI says, and no order is placed
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my $orders = HopGate::Acme::pebble_orders();
for (1 .. 3) {
    my ($fp, $issuer) = HopGate::Acme::cert_of('intruder.test');
    Test::More::like($issuer, qr/hopgate fallback/,
                     'intruder.test gets the self-signed fallback');
    Time::HiRes::sleep(1);
}
my ($code) = HopGate::Acme::https_get('intruder.test', '/');
Test::More::isnt($code, 200, 'which does not verify');
my ($fp, $issuer) = HopGate::Acme::cert_of('shop.test');
Test::More::like($issuer, qr/Pebble/, 'shop.test still has its own');
Test::More::is(HopGate::Acme::pebble_orders(), $orders,
               'no order was placed for it');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- no_error_log eval
[qr/order for intruder\.test/, qr/\[alert\]/]
--- timeout: 20



=== TEST 4: /metrics counts orders by result, domains by certificate state and seconds to expiry; the admin API's list shows each domain's certificate
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    hopgate_metrics_zone hopgate 1m;
    hopgate_metrics_max_domains 2;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
    location = /metrics { hopgate_metrics; }
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_HOPGATE_DIR/admin.key;
    }
--- init
my ($code, $json) = HopGate::Fixture::curl('/api/v1/admin/domains',
    '-H', "Authorization: Bearer $ENV{TEST_NGINX_ADMIN_TOKEN}");
my $list = JSON::PP::decode_json($json);
my %cert = map { $_->{domain} => $_->{certificate} } @{ $list->{domains} };
Test::More::is($cert{'shop.test'}{state}, 'valid', 'the admin list shows '
               . 'shop.test\'s certificate as valid');
Test::More::like($cert{'shop.test'}{expires}, qr/GMT$/, 'with its expiry');
my (undef, $m) = HopGate::Fixture::curl('/metrics');
Test::More::like($m, qr/^hopgate_acme_certificates\{state="valid"\} 3$/m,
                 '3 domains have a valid certificate');
Test::More::like($m, qr/^hopgate_acme_certificates\{state="failed"\} 0$/m,
                 'none failed');
Test::More::like($m, qr/^hopgate_acme_orders_total\{result="issued"\} 0$/m,
                 'this nginx issued nothing (all came from the state dir)');
Test::More::like($m, qr/^hopgate_acme_certificate_expiry_seconds\{domain="\w+\.test"\} \d{8,}$/m,
                 'a domain expires in years (pebble\'s default)');
Test::More::like($m, qr/^hopgate_acme_certificate_expiry_seconds\{domain="_other"\} \d+$/m,
                 'past hopgate_metrics_max_domains, the soonest of the rest');
my @series = $m =~ /^hopgate_acme_certificate_expiry_seconds\{/mg;
Test::More::is(scalar @series, 3, 'so 2 domains and _other');
--- request
GET /metrics
--- response_body_like: hopgate_acme_orders_running 0
--- error_code: 200
--- no_error_log
[alert]



=== TEST 5: unregistering a domain stops serving its certificate (and removes it from the state dir)
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my ($fp, $issuer) = HopGate::Acme::cert_of('shop.test');
Test::More::like($issuer, qr/Pebble/, 'shop.test has its certificate');
my $reg = HopGate::Fixture::hopgate_dir() . '/registry';
open my $in, '<', $reg or die $!;
my @lines = grep { !/^shop\.test / } <$in>;
close $in;
open my $out, '>', "$reg.new" or die $!;
print $out @lines;
close $out;
rename "$reg.new", $reg or die $!;
my $start = Time::HiRes::time();
while (Time::HiRes::time() - $start < 10) {
    ($fp, $issuer) = HopGate::Acme::cert_of('shop.test');
    last if $issuer =~ /hopgate fallback/;
    Time::HiRes::sleep(0.25);
}
Test::More::like($issuer, qr/hopgate fallback/, 'once unregistered, '
                 . 'shop.test gets the fallback');
Test::More::ok(!-e HopGate::Acme::acme_state() . '/certs/shop.test.crt',
               'its certificate left the state dir');
($fp, $issuer) = HopGate::Acme::cert_of('app.test');
Test::More::like($issuer, qr/Pebble/, 'app.test keeps its own');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- error_log
shop.test is no longer registered: its certificate is no longer served
--- timeout: 20



=== TEST 6: another CA's directory (staging, then production): the certificates from the old one are replaced, and served meanwhile
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme https://localhost:$TEST_NGINX_ACME_PORT/dir;
    hopgate_acme_ca $TEST_NGINX_HOPGATE_DIR/pebble.pem;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/acme-state;
    hopgate_acme_backoff 1s 8s;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my (undef, $issuer, $serial) = HopGate::Acme::cert_of('app.test');
Test::More::like($issuer, qr/Pebble/, 'app.test is served the old CA\'s '
                 . 'certificate at first');
my $start = Time::HiRes::time();
my $now = $serial;
while (Time::HiRes::time() - $start < 10 && $now eq $serial) {
    Time::HiRes::sleep(0.25);
    (undef, undef, $now) = HopGate::Acme::cert_of('app.test');
}
Test::More::isnt($now, $serial, 'then a new one, from the directory now '
                 . 'configured');
open my $ca, '<', HopGate::Acme::acme_state() . '/certs/app.test.ca' or die;
Test::More::is(scalar <$ca>, "https://localhost:$ENV{TEST_NGINX_ACME_PORT}/dir",
               'the state dir records which directory issued it');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- error_log eval
qr/renewal order for app\.test \(\d of 4 running\): its certificate is from another CA/
--- timeout: 20
