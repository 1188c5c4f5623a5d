# ACME with the PostgreSQL registry and two edges on one database (as
# t/022 runs them): one edge holds the ordering lock and orders; the CA
# validates against the other edge, which answers from the tokens in the
# database; the certificate ordered through one edge is served by both.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket;
use HopGate::Fixture;
use HopGate::Postgres;
use HopGate::Acme;
use POSIX ();
use Time::HiRes qw(time sleep);

if (!pg_available()) {
    plan(skip_all => 'PostgreSQL binaries not found');
}

plan('no_plan');

hopgate_init();
pg_start();

# pebble validates HTTP-01 against edge two's port, not the ordering edge's
our %edge2 = (http => HopGate::Fixture::free_port(),
              https => HopGate::Fixture::free_port());
acme_init(http_port => $edge2{http});

# both edges seal private keys in the database with the same secret
my $secret = HopGate::Fixture::hopgate_dir() . '/db.key';
open my $sf, '>', $secret or die $!;
print $sf 'db-secret-' . ('5a' x 24) . "\n";
close $sf;
chmod 0600, $secret;
$ENV{TEST_NGINX_ACME_HTTP} .= "\n    hopgate_acme_db_key_file $secret;";
no_shuffle();
no_root_location();


sub log_of {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

sub edge1_log { log_of(HopGate::Fixture::servroot() . '/logs/error.log') }


sub start_edge2 {
    my $dir = HopGate::Fixture::hopgate_dir() . '/edge2';
    mkdir $dir;
    mkdir "$dir/logs";
    my $udp = HopGate::Fixture::free_port();
    my $hg = HopGate::Fixture::hopgate_dir();
    my $module = $ENV{TEST_NGINX_LOAD_MODULES};
    my $acme = $ENV{TEST_NGINX_ACME_HTTP};
    $acme =~ s{hopgate_acme_state \S+;}{hopgate_acme_state $dir/acme-state;};

    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh <<"CONF";
load_module $module;
daemon off;
master_process off;
error_log $dir/logs/error.log info;
pid $dir/logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    hopgate_listen 127.0.0.1:$udp reuseport;
    hopgate_certificate $hg/edge.pem;
    hopgate_certificate_key $hg/edge.key;
    hopgate_registry $ENV{TEST_NGINX_PG_URI};
    $acme
    upstream tunnels { hopgate; }
    server {
        listen 127.0.0.1:$edge2{http};
        location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
    }
    server {
        listen 127.0.0.1:$edge2{https} ssl;
        hopgate_acme_certificates;
        location / { return 200 "edge two\\n"; }
    }
}
CONF
    close $fh;
    my $pid = fork;
    if ($pid == 0) {
        open STDERR, '>>', "$dir/logs/stderr";
        { exec $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx', '-p', $dir,
               '-c', "$dir/nginx.conf", '-e', "$dir/logs/error.log" }
        POSIX::_exit(1);
    }
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$edge2{http}");
        last if $s;
        sleep 0.05;
    }
    $edge2{pid} = $pid;
    $edge2{log} = "$dir/logs/error.log";
}

sub stop_edge2 {
    return unless $edge2{pid};
    kill 'QUIT', $edge2{pid};
    waitpid $edge2{pid}, 0;
    delete $edge2{pid};
}

my $owner = $$;
END { stop_edge2() if $$ == $owner }

run_tests();

__DATA__

=== TEST 1: a certificate ordered through edge one, validated through edge two, is served by both
--- http_config
    $TEST_NGINX_HOPGATE_PG_HTTP
    $TEST_NGINX_ACME_HTTP
    server {
        listen 127.0.0.1:$TEST_NGINX_HTTPS_PORT ssl;
        hopgate_acme_certificates;
        location / { return 200 "edge one\n"; }
    }
--- config
    location /.well-known/acme-challenge/ { hopgate_acme_challenge; }
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY_FILE;
    }
--- init
my $start = Time::HiRes::time();
while (main::edge1_log() !~ /holds the ordering lock/
       && Time::HiRes::time() - $start < 10)
{
    Time::HiRes::sleep(0.1);
}
Test::More::like(main::edge1_log(), qr/this edge holds the ordering lock/,
                 'edge one holds the ordering lock');
main::start_edge2();

my ($code) = HopGate::Postgres::admin_api('POST', 'domains/register',
    { domain => 'shared.test', memo => 'acme' });
Test::More::is($code, 200, 'shared.test registered through edge one');

my $took = HopGate::Acme::wait_for_cert('shared.test', 20,
                                        $main::edge2{https});
Test::More::ok(defined $took, 'edge two serves a certificate from pebble');
# the registry's NOTIFY starts the order: no waiting for the next listing
Test::More::cmp_ok($took // 99, '<', 8, sprintf('within 8 s of the '
                   . 'registration (%.1f s)', $took // 99));
my ($fp2) = HopGate::Acme::cert_of('shared.test', $main::edge2{https});
my ($fp1, $issuer1) = HopGate::Acme::cert_of('shared.test');
Test::More::like($issuer1, qr/Pebble/, 'so does edge one');
Test::More::is($fp1, $fp2, 'the same certificate');
my ($c2, $body2) = HopGate::Acme::https_get('shared.test', '/',
                                            $main::edge2{https});
Test::More::is("$c2 $body2", "200 edge two\n", 'it verifies on edge two');

my $log2 = main::log_of($main::edge2{log});
Test::More::like($log2, qr/answered the http-01 challenge/,
                 'edge two answered the CA\'s validation');
Test::More::unlike($log2, qr/order for shared\.test: created/,
                   'without ordering');
Test::More::like(main::edge1_log(), qr/order for shared\.test: created/,
                 'edge one ordered');
my $keys = HopGate::Postgres::pg_sql(
    "SELECT left(key, 7) FROM hopgate_acme_certificates "
    . "UNION ALL SELECT left(key, 7) FROM hopgate_acme_accounts");
Test::More::is($keys, "enc:v1:\nenc:v1:", 'the certificate\'s and the '
               . 'account\'s keys are sealed in the database');
my $plain = HopGate::Postgres::pg_sql(
    "SELECT count(*) FROM hopgate_acme_certificates "
    . "WHERE key LIKE '%PRIVATE KEY%' OR chain NOT LIKE '-----BEGIN%'");
Test::More::is($plain, "0", 'no private key in clear; chains as PEM');
--- request
GET /.well-known/acme-challenge/x
--- error_code: 404
--- no_error_log
[alert]
--- timeout: 60
