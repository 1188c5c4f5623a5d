# ACME with 4 workers: one runs the client, every one answers HTTP-01
# challenges from the shared zone and serves the certificates; 50 domains
# registered at once are all issued with never more than
# hopgate_acme_max_orders orders at once; the worker running the client
# can die and another takes over.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;
use Time::HiRes qw(time sleep);

hopgate_init();
acme_init();
workers(4);
master_on();
no_shuffle();
no_root_location();

our @names = map { "d$_.test" } 1 .. 50;


sub error_log_text {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return <$fh>;
}

run_tests();

__DATA__

=== TEST 1: 50 domains registered at once are all issued, 3 orders at most at once, and every worker answers challenges and serves the certificates
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    hopgate_acme_max_orders 3;
    log_format w '$pid $ssl_server_name';
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl reuseport;
        hopgate_acme_certificates;
        access_log logs/tls.log w;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my @names = @main::names;
my $reg = HopGate::Fixture::hopgate_dir() . '/registry';
open my $fh, '>>', $reg or die $!;
print $fh map { "$_ " . ('ab' x 32) . "\n" } @names;
close $fh;

my $start = Time::HiRes::time();
my %done;
while (Time::HiRes::time() - $start < 90 && keys %done < @names) {
    my $log = main::error_log_text() // '';
    for my $n (@names) {
        $done{$n} = 1 if $log =~ /order for \Q$n\E: certificate issued/;
    }
    Time::HiRes::sleep(0.5);
}
Test::More::is(scalar keys %done, 50, 'all 50 domains were issued');

my $log = main::error_log_text();
my @running = $log =~ /order for \S+ \((\d+) of 3 running\)/g;
my $max = 0;
$max = $_ > $max ? $_ : $max for @running;
Test::More::cmp_ok(scalar @running, '>=', 50, 'an order was logged for each');
Test::More::is($max, 3, 'never more than 3 orders at once');

# workers are told apart by the pid each log line carries
my @pids = HopGate::Fixture::worker_pids();
my %answered = map { $_ => 1 }
               $log =~ /(\d+)#\d+: \*\d+ hopgate acme: answered the http-01/g;
Test::More::is(scalar(grep { $answered{$_} } @pids), 4,
               'each of the 4 workers answered challenges');

my $bad = 0;
for my $i (1 .. 40) {
    my $n = $names[$i % @names];
    my ($code) = HopGate::Acme::https_get($n, '/');
    $bad++ if $code != 200;
}
Test::More::is($bad, 0, '40 HTTPS requests verify against pebble\'s root');
open my $tls, '<', HopGate::Fixture::servroot() . '/logs/tls.log' or die $!;
my %served = map { (split / /)[0] => 1 } <$tls>;
Test::More::is(scalar(grep { $served{$_} } @pids), 4,
               'each of the 4 workers served them');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- no_error_log eval
[qr/\[alert\]/, qr/order for d\d+\.test failed/]
--- timeout: 120



=== TEST 2: the worker running the client is killed: another takes over, and a domain registered then is issued
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl reuseport;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
--- init
my ($leader, $start);
$start = Time::HiRes::time();
while (!$leader && Time::HiRes::time() - $start < 5) {
    ($leader) = main::error_log_text() =~ /worker (\d+) runs the ACME client/;
    Time::HiRes::sleep(0.1);
}
Test::More::ok($leader, 'a worker runs the client');
kill 'KILL', $leader;
HopGate::Fixture::register_domain('late.test', 'k');
my $took = HopGate::Acme::wait_for_cert('late.test', 15);
Test::More::ok(defined $took, 'late.test is issued after the leader died');
my @others = main::error_log_text() =~ /worker (\d+) runs the ACME client/g;
Test::More::ok((grep { $_ != $leader } @others), 'by another worker');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- timeout: 40
