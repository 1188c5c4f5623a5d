# ACME behind the DNS gate (hopgate_expect_ips): a registered domain is
# ordered only once it resolves to this edge, as the seed checked DNS
# before ACME; one that points elsewhere or nowhere gets no order.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;
use Time::HiRes qw(time sleep);

hopgate_init();
register_domain('good.test', 'k1');
register_domain('elsewhere.test', 'k2');
register_domain('nowhere.test', 'k3');
acme_init(zone => { 'elsewhere.test' => '192.0.2.7',
                    'nowhere.test' => undef });
no_shuffle();
no_root_location();

sub error_log_text {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return <$fh>;
}

run_tests();

__DATA__

=== TEST 1: good.test resolves here and is issued; elsewhere.test and nowhere.test are not ordered, and the reason is logged
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    resolver 127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off valid=1s;
    resolver_timeout 2s;
    hopgate_expect_ips 127.0.0.1;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
Test::More::ok(defined HopGate::Acme::wait_for_cert('good.test', 10),
               'good.test is issued');
my $start = Time::HiRes::time();
while (Time::HiRes::time() - $start < 5
       && main::error_log_text() !~ /not ordering for elsewhere\.test(?s:.*)not ordering for elsewhere\.test/)
{
    Time::HiRes::sleep(0.2);
}
my $log = main::error_log_text();
Test::More::like($log, qr/not ordering for elsewhere\.test: elsewhere\.test resolves to 192\.0\.2\.7, not to this edge \(127\.0\.0\.1\) \(dns gate\); asking again in 1s/,
                 'elsewhere.test is not ordered: it points elsewhere');
Test::More::like($log, qr/not ordering for elsewhere\.test: .*asking again in 2s/,
                 'and is asked about again, backing off');
Test::More::like($log, qr/not ordering for nowhere\.test: nowhere\.test does not resolve/,
                 'nowhere.test is not ordered: it does not resolve');
Test::More::unlike($log, qr/order for (elsewhere|nowhere)\.test/,
                   'no order was placed for either');
my ($fp, $issuer) = HopGate::Acme::cert_of('elsewhere.test');
Test::More::like($issuer, qr/hopgate fallback/, 'it gets the fallback');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- no_error_log
[alert]
--- timeout: 30
