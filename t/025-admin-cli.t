# `hopgate-agent admin`: the admin API from the command line, against a
# real PostgreSQL registry.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket;
use HopGate::Fixture;
use HopGate::Postgres;
use POSIX ();

if (!pg_available()) {
    plan(skip_all => 'PostgreSQL binaries not found');
}

plan('no_plan');

hopgate_init();
pg_start();
no_shuffle();
no_root_location();

sub admin {
    my (@args) = @_;
    my $api = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port()
              . '/api/v1/admin';
    my $out = HopGate::Fixture::hopgate_dir() . '/admin.out';
    my $err = HopGate::Fixture::hopgate_dir() . '/admin.err';
    local $ENV{HOP_ADMIN_TOKEN_FILE} = $ENV{TEST_NGINX_ADMIN_KEY_FILE};
    my $pid = fork;
    if ($pid == 0) {
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec HopGate::Fixture::agent_binary(), 'admin', @args, '--api', $api;
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $code = $? >> 8;
    local $/;
    open my $o, '<', $out;
    open my $e, '<', $err;
    return ($code, scalar <$o>, scalar <$e>);
}

run_tests();

__DATA__

=== TEST 1: register, connect, list, rotate, disable, unregister from the command line
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
my ($code, $out, $err) = main::admin('register', '--domain', 'cli.test',
                                     '--memo', 'from the "cli"');
Test::More::is($code, 0, 'register exits 0') or Test::More::diag($err);
my ($key) = $out =~ /"client_api_key":"(hg_[0-9a-f]{64})"/;
Test::More::ok($key, 'and prints the new key');

my $agent = HopGate::Fixture::start_agent(domain => 'cli.test', key => $key);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'an agent connects with it');

($code, $out) = main::admin('list');
Test::More::is($code, 0, 'list exits 0');
Test::More::like($out, qr/"domain":"cli\.test","memo":"from the \\"cli\\""/,
                 'and shows the domain with its memo, escaped');

($code, $out) = main::admin('rotate', '--domain', 'cli.test');
my ($new) = $out =~ /"client_api_key":"(hg_[0-9a-f]{64})"/;
Test::More::ok($code == 0 && $new && $new ne $key, 'rotate prints a new key');
# no signal (ZERO): the revocation alone must end the agent; a TERM here
# raced it and made the agent drain and exit 0
Test::More::is(HopGate::Fixture::stop_agent($agent, 'ZERO', 10), 3,
               'the agent with the old key is revoked and exits 3');

($code, $out, $err) = main::admin('unregister', '--domain', 'cli.test',
                                  '--key', $key);
Test::More::is($code, 1, 'unregister with the old key is refused (exit 1)');
Test::More::like($out, qr/"success":false/, 'with the API\'s answer');

($code) = main::admin('disable', '--domain', 'cli.test');
Test::More::is($code, 0, 'disable exits 0');
($code) = main::admin('enable', '--domain', 'cli.test');
Test::More::is($code, 0, 'enable exits 0');

($code, $out) = main::admin('unregister', '--domain', 'cli.test', '--key',
                            $new);
Test::More::is($code, 0, 'unregister with the current key exits 0');

($code, $out, $err) = main::admin('frobnicate', '--domain', 'x.test');
Test::More::is($code, 2, 'an unknown command is bad usage');
Test::More::like($err, qr/unknown command "frobnicate"/, 'and says so');

{
    local $ENV{TEST_NGINX_ADMIN_KEY_FILE} = '/nonexistent';
    ($code, $out, $err) = main::admin('list');
}
Test::More::is($code, 2, 'no readable token is bad usage');
--- request
GET /api/v1/admin/domains
--- error_code: 401
