# The ACME server down or hanging: orders retry with exponential backoff,
# valid certificates keep being served, the one worker (which runs the
# client) answers other requests as fast as before, `nginx -t` and reload
# work; when the CA is back, issuance completes (re-registering with a CA
# that forgot the account).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Acme;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);

hopgate_init();
acme_init();
master_on();
no_shuffle();
no_root_location();

# a TCP listener that accepts and never answers
my $hang = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Listen => 64, ReuseAddr => 1)
    or die "listen: $!";
$ENV{TEST_NGINX_HANG_PORT} = $hang->sockport;
my $hang_pid = fork;
if ($hang_pid == 0) {
    my @held;
    while (my $c = $hang->accept) {
        push @held, $c;
    }
    POSIX::_exit(0);
}

# A CA that rate-limits every new order (429, Retry-After: 7), a fault
# pebble cannot produce: plain HTTP, the JWS not checked, one request per
# connection; each request is logged.
my $limiter = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                    Listen => 64, ReuseAddr => 1)
    or die "listen: $!";
my $lport = $limiter->sockport;
$ENV{TEST_NGINX_LIMITER_PORT} = $lport;
our $limiter_log = HopGate::Fixture::hopgate_dir() . '/limiter.log';
my $limiter_pid = fork;
if ($limiter_pid == 0) {
    my $n = 0;
    while (my $c = $limiter->accept) {
        my $req = '';
        while (my $line = <$c>) {
            $req .= $line;
            last if $line eq "\r\n";
        }
        my ($method, $path) = $req =~ m{^(\S+) (\S+)};
        my ($len) = $req =~ /Content-Length: (\d+)/i;
        read $c, my $body, $len if $len;
        open my $log, '>>', $limiter_log;
        print $log "$method $path\n";
        close $log;
        my $base = "http://127.0.0.1:$lport";
        my $nonce = 'nonce' . $n++;
        my ($status, $type, $extra, $text) = (200, 'application/json', '',
                                              '{}');
        if ($path eq '/dir') {
            $text = qq({"newNonce":"$base/nonce","newAccount":"$base/acct",)
                    . qq("newOrder":"$base/order"});
        } elsif ($path eq '/acct') {
            ($status, $extra) = (201, "Location: $base/acct/1\r\n");
        } elsif ($path eq '/order') {
            ($status, $type, $extra) = (429, 'application/problem+json',
                                        "Retry-After: 7\r\n");
            $text = '{"type":"urn:ietf:params:acme:error:rateLimited",'
                    . '"detail":"too many new orders"}';
        }
        $text = '' if $method eq 'HEAD';
        print $c "HTTP/1.1 $status X\r\nContent-Type: $type\r\n"
                 . "Replay-Nonce: $nonce\r\n$extra"
                 . "Content-Length: " . length($text) . "\r\n"
                 . "Connection: close\r\n\r\n$text";
        close $c;
    }
    POSIX::_exit(0);
}

my $owner = $$;
END {
    if ($$ == $owner) {
        for my $pid (grep { $_ } $hang_pid, $limiter_pid) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
        }
    }
}


sub error_log_text {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return <$fh>;
}

# the slowest of plain requests to the worker running the client: 20 of
# them, or as many as SECONDS take (to span some of the client's retries)
sub slowest {
    my ($seconds) = @_;
    my ($max, $n, $start) = (0, 0, time);
    while ($seconds ? time - $start < $seconds : $n++ < 20) {
        my $t = time;
        my ($code) = HopGate::Fixture::http_get('/ping');
        return 99 if $code != 200;
        $t = time - $t;
        $max = $t if $t > $max;
    }
    return $max;
}

sub nginx_t {
    my $root = HopGate::Fixture::servroot();
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    return system("$bin -p $root/ -c $root/conf/nginx.conf -t "
                  . ">/dev/null 2>&1") == 0;
}

sub wait_log {
    my ($re, $timeout) = @_;
    my $start = time;
    while (time - $start < $timeout) {
        return 1 if error_log_text() =~ $re;
        sleep 0.2;
    }
    return 0;
}

run_tests();

__DATA__

=== TEST 1: the CA stops: the new domain's orders back off 1 s, 2 s, 4 s; app.test keeps its certificate; requests, nginx -t and reload are unaffected; the CA back, the domain is issued
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
    location /ping { return 200 "pong\n"; }
--- init
Test::More::ok(defined HopGate::Acme::wait_for_cert('app.test', 15),
               'app.test is issued');
my $before = main::slowest();
HopGate::Acme::pebble_stop();
HopGate::Fixture::register_domain('new.test', 'k');

Test::More::ok(main::wait_log(qr/order for new\.test failed: .*retrying in 4s \(failure 3 in a row\)/, 20),
               'new.test is retried after 1 s, 2 s, then 4 s');
my $log = main::error_log_text();
Test::More::like($log, qr/order for new\.test failed: .*retrying in 1s \(failure 1 in a row\)/, 'first after 1 s');
Test::More::like($log, qr/order for new\.test failed: .*retrying in 2s \(failure 2 in a row\)/, 'then 2 s');

my ($fp, $issuer) = HopGate::Acme::cert_of('app.test');
Test::More::like($issuer, qr/Pebble/, 'app.test keeps its certificate');
my $during = main::slowest(4);
Test::More::cmp_ok($during, '<', $before + 0.4, sprintf('requests are as '
    . 'fast as before (slowest %.3f s in 4 s of retries, was %.3f s)',
    $during, $before));
Test::More::ok(main::nginx_t(), 'nginx -t passes');

my $root = HopGate::Fixture::servroot();
open my $pf, '<', "$root/logs/nginx.pid" or die $!;
chomp(my $master = <$pf>);
kill 'HUP', $master;
Test::More::ok(main::wait_log(qr/worker \d+ stops running the ACME client(?s:.*)worker \d+ runs the ACME client/, 10),
               'after a reload a new worker runs the client');
($fp, $issuer) = HopGate::Acme::cert_of('app.test');
Test::More::like($issuer, qr/Pebble/, 'and app.test is still served');

HopGate::Acme::pebble_start();
Test::More::ok(defined HopGate::Acme::wait_for_cert('new.test', 30),
               'with the CA back, new.test is issued');
--- request
GET /ping
--- response_body
pong
--- no_error_log eval
[qr/\[alert\]/, qr/\[emerg\]/]
--- timeout: 90



=== TEST 2: a CA that accepts connections and never answers: requests time out and back off, certificates from the state dir are served, the worker stays responsive
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme https://127.0.0.1:$TEST_NGINX_HANG_PORT/dir;
    hopgate_acme_ca $TEST_NGINX_HOPGATE_DIR/pebble.pem;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/acme-state;
    hopgate_acme_backoff 1s 8s;
    hopgate_acme_timeout 1s;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
    location /ping { return 200 "pong\n"; }
--- init
my ($fp, $issuer) = HopGate::Acme::cert_of('app.test');
Test::More::like($issuer, qr/Pebble/, 'app.test is served from the state '
                 . 'dir');
Test::More::ok(main::wait_log(qr/directory failed: .*timed out.*retrying in 2s/, 10),
               'the directory request times out and is retried, backing '
               . 'off');
# a worker that waited for the CA would hold requests up to the 1 s timeout
my $slowest = main::slowest(4);
Test::More::cmp_ok($slowest, '<', 0.5, sprintf('requests do not wait for '
    . 'it (slowest %.3f s in 4 s of its retries)', $slowest));
Test::More::ok(main::nginx_t(), 'nginx -t passes');
--- request
GET /ping
--- response_body
pong
--- no_error_log eval
[qr/\[alert\]/]
--- timeout: 30



=== TEST 3: a CA that answers 429 with Retry-After: the order waits as long as it says (not the 1 s backoff), counted as rate_limited
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_acme http://127.0.0.1:$TEST_NGINX_LIMITER_PORT/dir;
    hopgate_acme_state $TEST_NGINX_HOPGATE_DIR/limited-state;
    hopgate_acme_backoff 1s 8s;
    hopgate_metrics_zone hopgate 1m;
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "tls\n"; }
    }
--- config
    location = /metrics { hopgate_metrics; }
    location /ping { return 200 "pong\n"; }
--- init
Test::More::ok(main::wait_log(qr/order for app\.test failed: HTTP 429 urn:ietf:params:acme:error:rateLimited: too many new orders; retrying in 7s \(failure 1 in a row\)/, 10),
               'the 429 and its Retry-After are logged');
Time::HiRes::sleep(4);
open my $fh, '<', $main::limiter_log or die $!;
my @orders = grep { m{^POST /order} } <$fh>;
Test::More::is(scalar @orders, 3, 'one order each for app.test, '
               . 'other.test and new.test in 4 s: the 1 s backoff gave way '
               . 'to 7 s');
my (undef, $m) = HopGate::Fixture::curl('/metrics');
Test::More::like($m, qr/^hopgate_acme_orders_total\{result="rate_limited"\} 3$/m,
                 'counted as rate_limited');
Test::More::like($m, qr/^hopgate_acme_certificates\{state="failed"\} 3$/m,
                 'the three domains are in the failed state');
--- request
GET /ping
--- response_body
pong
--- timeout: 30
