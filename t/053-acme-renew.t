# Renewal: pebble issues 30-second certificates and hopgate_acme_renew_before
# asks for more than their lifetime. The certificate is renewed, the new
# one is served without a restart, and renewal does not loop: a
# renew_before beyond two thirds of the lifetime is clamped (with a
# warning), so a fresh certificate is not renewed again at once.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;
use Time::HiRes qw(time sleep);

hopgate_init();
acme_init(validity => 30);
no_shuffle();
no_root_location();

sub renewals {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return 0;
    return scalar grep { /renewal order for app\.test / } <$fh>;
}

run_tests();

__DATA__

=== TEST 1: a renew_before longer than the lifetime renews once, a third into it; the new certificate is served without a restart
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    hopgate_acme_renew_before 1h;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
Test::More::ok(defined HopGate::Acme::wait_for_cert('app.test', 10),
               'app.test is issued');
my ($fp1, $issuer1, $serial1) = HopGate::Acme::cert_of('app.test');
my $issued = Time::HiRes::time();
my ($fp2, $issuer2, $serial2) = ($fp1, $issuer1, $serial1);
while (Time::HiRes::time() - $issued < 20 && $serial2 eq $serial1) {
    Time::HiRes::sleep(0.25);
    ($fp2, $issuer2, $serial2) = HopGate::Acme::cert_of('app.test');
}
my $after = Time::HiRes::time() - $issued;
Test::More::isnt($serial2, $serial1, sprintf('a renewed certificate is '
                 . 'served after %.1f s, without a restart', $after));
Test::More::like($issuer2, qr/Pebble/, 'from pebble');
Test::More::cmp_ok($after, '>', 7, 'not before a third of the lifetime');
Time::HiRes::sleep(5);
Test::More::is(main::renewals(), 1, 'and renewed once: no loop');
my ($code) = HopGate::Acme::https_get('app.test', '/');
Test::More::is($code, 200, 'the renewed certificate verifies');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- error_log eval
qr/"hopgate_acme_renew_before" 3600 is over two thirds of the \d+s lifetime of app\.test's certificate/
--- no_error_log eval
[qr/\[alert\]/]
--- timeout: 40
