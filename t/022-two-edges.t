# Two nginx edges sharing one PostgreSQL: a key registered through one
# edge opens tunnels on the other, and unregistering through either closes
# the sessions on both.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket;
use HopGate::Fixture;
use HopGate::Postgres;
use POSIX ();
use Time::HiRes qw(time sleep);

if (!pg_available()) {
    plan(skip_all => 'PostgreSQL binaries not found');
}

plan('no_plan');

hopgate_init();
pg_start();
no_shuffle();
no_root_location();

our %edge2;


# the second edge: its own nginx, ports and directory, the same database
sub start_edge2 {
    my $dir = HopGate::Fixture::hopgate_dir() . '/edge2';
    mkdir $dir;
    mkdir "$dir/logs";
    my $http = HopGate::Fixture::free_port();
    my $udp = HopGate::Fixture::free_port();
    my $hg = HopGate::Fixture::hopgate_dir();
    my $module = $ENV{TEST_NGINX_LOAD_MODULES};

    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh <<"EOF";
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
    upstream tunnels { hopgate; }
    server {
        listen 127.0.0.1:$http;
        location / { proxy_pass http://tunnels; }
        location /api/v1/admin/ {
            hopgate_admin;
            hopgate_admin_key_file $ENV{TEST_NGINX_ADMIN_KEY_FILE};
        }
    }
}
EOF
    close $fh;

    my $pid = fork;
    if ($pid == 0) {
        open STDERR, '>>', "$dir/logs/stderr";
        { exec $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx', '-p', $dir,
               '-c', "$dir/nginx.conf", '-e', "$dir/logs/error.log" }
        POSIX::_exit(1);
    }

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http");
        last if $s;
        sleep 0.05;
    }

    %edge2 = (pid => $pid, http => $http, udp => $udp, dir => $dir);
}


sub stop_edge2 {
    return unless $edge2{pid};
    kill 'QUIT', $edge2{pid};
    waitpid $edge2{pid}, 0;
    delete $edge2{pid};
}


sub exit_of {
    my ($agent, $timeout) = @_;
    my $start = time;
    while (time - $start < ($timeout // 10)) {
        return ($agent->{status}, time - $start)
            unless HopGate::Fixture::agent_running($agent);
        sleep 0.01;
    }
    return (undef, time - $start);
}


END { stop_edge2() }

run_tests();

__DATA__

=== TEST 1: registrations and revocations made on one edge take effect on the other
--- http_config
    $TEST_NGINX_HOPGATE_PG_HTTP
--- config
    location / {
        proxy_pass http://tunnels;
    }
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY_FILE;
    }
--- init
main::start_edge2();
my $e2 = \%main::edge2;

my ($code, $json) = HopGate::Postgres::admin_api('POST', 'domains/register',
    { domain => 'shared.test', memo => 'edge one' });
Test::More::is($code, 200, 'registered through edge one');
my $key = $json->{client_api_key};

($code, $json) = HopGate::Postgres::admin_api('GET', 'domains',
                                               undef, port => $e2->{http});
Test::More::ok((grep { $_->{domain} eq 'shared.test' } @{ $json->{domains} }),
               'edge two lists it');

my $a = HopGate::Fixture::start_agent(domain => 'shared.test', key => $key);
my $b = HopGate::Fixture::start_agent(domain => 'shared.test', key => $key,
    server => "127.0.0.1:$e2->{udp}", keep => 1);
HopGate::Fixture::agent_wait($_, qr/connected to/, 1) for $a, $b;

my ($rc, $body) = HopGate::Fixture::curl(
    "http://127.0.0.1:$e2->{http}/hello", '-H', 'Host: shared.test');
Test::More::is($body, "hello from the local app\n",
               'a request through edge two\'s tunnel');

my $start = time;
($code) = HopGate::Postgres::admin_api('POST', 'domains/unregister',
    { domain => 'shared.test', client_api_key => $key },
    port => $e2->{http});
Test::More::is($code, 200, 'unregistered through edge two');

my ($sa) = main::exit_of($a, 5);
my $ta = time - $start;
my ($sb) = main::exit_of($b, 5);
my $tb = time - $start;
Test::More::is($sa, 3, 'the agent on edge one exits 3');
Test::More::is($sb, 3, 'the agent on edge two exits 3');
Test::More::cmp_ok($ta, '<', 1, sprintf 'edge one closed its session '
                   . 'within a second (%.3f s)', $ta);
Test::More::cmp_ok($tb, '<', 1, sprintf 'edge two closed its session '
                   . 'within a second (%.3f s)', $tb);
Test::More::like(HopGate::Fixture::agent_log($a),
                 qr/closed by .*domain unregistered/, 'with the reason');

main::stop_edge2();
--- request
GET /hello
--- more_headers
Host: shared.test
--- error_code: 404
--- timeout: 15
