# The PostgreSQL registry on four workers: keys registered through the
# admin API open tunnels; unregistering, rotating and disabling reach the
# live sessions of every worker within a second; a database outage spares
# the tunnels that are up and the keys that are cached, and heals itself.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket;
use HopGate::Fixture;
use HopGate::Postgres;
use Time::HiRes qw(time sleep);

if (!pg_available()) {
    plan(skip_all => 'PostgreSQL binaries not found');
}

plan('no_plan');

hopgate_init();
pg_start();
master_on();
workers(4);
no_shuffle();
no_root_location();
worker_connections(1024);

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', <<'EOF') unless $block->http_config;
    $TEST_NGINX_HOPGATE_PG_HTTP
    hopgate_registry_timeout 2s;
EOF
    $block->set_value('config', <<'EOF') unless $block->config;
    location / {
        proxy_pass http://tunnels;
    }
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY_FILE;
    }
EOF
    $block->set_value('request', "GET /hello\n") unless $block->request;
    $block->set_value('response_body', "hello from the local app\n")
        unless defined $block->response_body
               || defined $block->response_body_like;
    $block->set_value('timeout', 10) unless $block->timeout;
});


sub register {
    my ($domain) = @_;
    my ($code, $json) = admin_api('POST', 'domains/register',
                                  { domain => $domain, memo => 'test' });
    Test::More::is($code, 200, "register $domain")
        or Test::More::diag(Test::More::explain($json));
    return $json ? $json->{client_api_key} : undef;
}


sub agent {
    my ($domain, $key, %o) = @_;
    return HopGate::Fixture::start_agent(domain => $domain, key => $key,
                                         keep => 1, %o);
}


sub connected {
    my ($agent, $n, $timeout) = @_;
    return HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                        $n // 4, $timeout // 15);
}


# waits for the agent to exit; returns (exit code, seconds)
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


sub get {
    my ($domain) = @_;
    my ($code, $body) = HopGate::Fixture::http_get('/hello', $domain);
    return $code;
}


sub error_log {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: a registered key opens a tunnel on every worker; a wrong key is rejected
--- init
HopGate::Fixture::stop_agents();
my $key = main::register('one.test');
Test::More::like($key, qr/^hg_[0-9a-f]{64}$/, 'the key is hg_ + 64 hex');

my $a = main::agent('one.test', $key);
Test::More::is(main::connected($a), 4, 'the agent connected to 4 workers');
Test::More::is(main::get('one.test'), 200, 'a request through the tunnel');

my $bad = main::agent('one.test', 'hg_' . ('0' x 64));
my ($rc) = main::exit_of($bad);
Test::More::is($rc, 3, 'a wrong key: the agent exits 3');
Test::More::like(HopGate::Fixture::agent_log($bad),
                 qr/rejected by .*the key does not match the domain/,
                 'with the reason');

my $unknown = main::agent('nobody.test', $key);
($rc) = main::exit_of($unknown);
Test::More::is($rc, 3, 'an unregistered domain: the agent exits 3');
Test::More::like(HopGate::Fixture::agent_log($unknown),
                 qr/domain is not registered/, 'with the reason');
--- more_headers
Host: one.test



=== TEST 2: unregister closes the live sessions of all four workers within a second
--- init
HopGate::Fixture::stop_agents();
my $key = main::register('two.test');
my $a = main::agent('two.test', $key);
Test::More::is(main::connected($a), 4, 'the agent connected to 4 workers');
sleep 2.5;    # quiet sessions: nothing received lately

my $start = time;
my ($code, $json) = HopGate::Postgres::admin_api('POST', 'domains/unregister',
    { domain => 'two.test', client_api_key => $key });
Test::More::is($code, 200, 'unregistered');

my ($rc, $took) = main::exit_of($a, 5);
$took = time - $start;
Test::More::is($rc, 3, 'the agent exits 3');
Test::More::cmp_ok($took, '<', 1, sprintf 'within a second (%.3f s after '
                   . 'the admin call)', $took);
Test::More::like(HopGate::Fixture::agent_log($a),
                 qr/closed by .*domain unregistered/, 'with the reason');

sleep 0.3;
my @closed = main::error_log() =~
    /closing session \w+ for "two\.test": domain unregistered/g;
Test::More::is(scalar @closed, 4, 'every worker closed its session');
Test::More::is(main::get('two.test'), 404,
               'afterwards the domain has no tunnel: 404');
--- request
GET /api/v1/admin/domains
--- response_body_like: "a valid bearer token is required"
--- error_code: 401



=== TEST 3: rotate: the old key's sessions close, it is refused, the new key works
--- init
HopGate::Fixture::stop_agents();
my $old = main::register('three.test');
my $a = main::agent('three.test', $old);
Test::More::is(main::connected($a), 4, 'the agent connected with the old key');

my ($code, $json) = HopGate::Postgres::admin_api('POST', 'domains/rotate',
    { domain => 'three.test' });
Test::More::is($code, 200, 'rotated');
my $new = $json->{client_api_key};
Test::More::like($new, qr/^hg_[0-9a-f]{64}$/, 'a new key');
Test::More::isnt($new, $old, 'a different key');

my ($rc) = main::exit_of($a, 5);
Test::More::is($rc, 3, 'the old key\'s agent exits 3');
Test::More::like(HopGate::Fixture::agent_log($a), qr/key rotated/,
                 'with the reason');

my $b = main::agent('three.test', $old);
($rc) = main::exit_of($b, 5);
Test::More::is($rc, 3, 'the old key is refused');

my $c = main::agent('three.test', $new);
Test::More::is(main::connected($c), 4, 'the new key connects');
--- more_headers
Host: three.test



=== TEST 4: disable closes the sessions and refuses the key; enable lets it back
--- init
HopGate::Fixture::stop_agents();
my $key = main::register('four.test');
my $a = main::agent('four.test', $key);
Test::More::is(main::connected($a), 4, 'the agent connected');

my ($code) = HopGate::Postgres::admin_api('POST', 'domains/disable',
                                           { domain => 'four.test' });
Test::More::is($code, 200, 'disabled');
my ($rc) = main::exit_of($a, 5);
Test::More::is($rc, 3, 'the agent exits 3');
Test::More::like(HopGate::Fixture::agent_log($a), qr/domain disabled/,
                 'with the reason');

my $b = main::agent('four.test', $key);
($rc) = main::exit_of($b, 5);
Test::More::is($rc, 3, 'a disabled domain is refused');
Test::More::like(HopGate::Fixture::agent_log($b),
                 qr/rejected by .*domain disabled/, 'with the reason');

($code) = HopGate::Postgres::admin_api('POST', 'domains/enable',
                                        { domain => 'four.test' });
Test::More::is($code, 200, 'enabled');
my $c = main::agent('four.test', $key);
Test::More::is(main::connected($c), 4, 'the key connects again');
--- more_headers
Host: four.test



=== TEST 5: PostgreSQL stops: tunnels and cached keys keep working, others retry; it comes back by itself
--- init
HopGate::Fixture::stop_agents();
my $key = main::register('five.test');
my $other = main::register('five-b.test');
my $a = main::agent('five.test', $key);
Test::More::is(main::connected($a), 4, 'the agent connected');

HopGate::Postgres::pg_stop('fast');
sleep 0.5;

my $ok = 0;
$ok += main::get('five.test') eq '200' ? 1 : 0 for 1 .. 20;
Test::More::is($ok, 20, 'traffic continues without the database');

my $b = main::agent('five.test', $key);
Test::More::is(main::connected($b), 4, 'a new agent with a cached key '
               . 'connects');

my $c = main::agent('five-b.test', $other);
my $refused = HopGate::Fixture::agent_wait($c,
    qr/refused by .*registry unavailable/, 2, 15);
Test::More::cmp_ok($refused, '>=', 2, 'an uncached key is refused as '
                   . '"registry unavailable", and the agent retries');
Test::More::ok(HopGate::Fixture::agent_running($c), 'it does not exit');

HopGate::Postgres::pg_restart();
my $start = time;
Test::More::cmp_ok(main::connected($c, 1, 40), '>=', 1,
                   'after PostgreSQL is back the agent connects');
Test::More::diag(sprintf 'connected %.1f s after PostgreSQL came back',
                 time - $start);
Test::More::is(main::connected($c, 4, 40), 4, 'to every worker');
Test::More::is(main::get('five-b.test'), 200, 'and serves');
--- more_headers
Host: five.test
--- timeout: 20



=== TEST 6: concurrent registrations of one domain: exactly one wins
--- init
my $dir = HopGate::Fixture::hopgate_dir();
my @kids;
for my $i (1 .. 20) {
    my $pid = fork;
    if ($pid == 0) {
        my ($code, $json) = HopGate::Postgres::admin_api('POST',
            'domains/register', { domain => 'race.test', memo => "try $i" },
            curl => ['-H', 'Connection: close']);
        open my $fh, '>', "$dir/race-$i";
        print $fh "$code\n";
        close $fh;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid $_, 0 for @kids;
my %codes;
for my $i (1 .. 20) {
    open my $fh, '<', "$dir/race-$i";
    my $code = <$fh>;
    chomp $code;
    $codes{$code}++;
}
Test::More::is($codes{200}, 1, 'one registration succeeded');
Test::More::is($codes{409}, 19, 'the others were told "already registered"');
Test::More::is(HopGate::Postgres::pg_sql(
    "SELECT count(*) FROM domains WHERE domain = 'race.test'"), 1,
    'one row');
my @pids = main::error_log() =~
    /(\d+)#\d+: \*\d+ hopgate admin: registered "race\.test"/g;
Test::More::is(scalar @pids, 1, 'one worker logged the registration');
--- request
GET /api/v1/admin/domains
--- error_code: 401
--- response_body_like: bearer token



=== TEST 7: a change made while a worker was not listening still closes its sessions
--- init
HopGate::Fixture::stop_agents();
my $key = main::register('gap.test');
my $a = main::agent('gap.test', $key);
Test::More::is(main::connected($a), 4, 'the agent connected');

# the workers' LISTEN connections die and cannot come back until the
# domain is gone (deleted by a session opened before): its notification
# reaches nobody
my $port = HopGate::Postgres::pg_port();
my $deleter = fork;
if ($deleter == 0) {
    open STDOUT, '>', '/dev/null';
    { exec 'psql', '-X', '-q', '-h', '127.0.0.1', '-p', $port, '-U',
           'postgres', '-d', 'hopgate', '-c', 'SELECT pg_sleep(1)', '-c',
           "DELETE FROM domains WHERE domain = 'gap.test'" }
    POSIX::_exit(1);
}
sleep 0.3;
system('psql', '-X', '-q', '-o', '/dev/null', '-h', '127.0.0.1', '-p', $port,
       '-U', 'postgres', '-d', 'postgres',
       '-c', 'ALTER DATABASE hopgate WITH ALLOW_CONNECTIONS false',
       '-c', 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity'
             . " WHERE application_name = 'hopgate-listen'",
       '-c', 'SELECT pg_sleep(1.2)',
       '-c', 'ALTER DATABASE hopgate WITH ALLOW_CONNECTIONS true');
waitpid $deleter, 0;

my ($rc, $took) = main::exit_of($a, 10);
Test::More::is($rc, 3, sprintf 'the agent is closed once the workers '
               . 'listen again (%.2f s)', $took)
    or Test::More::diag(HopGate::Fixture::agent_log($a));
Test::More::like(HopGate::Fixture::agent_log($a),
                 qr/closed by .*domain unregistered/, 'with the reason');
Test::More::like(main::error_log(),
                 qr/"gap\.test" changed while the registry was not listening/,
                 'the edge says why');
--- request
GET /api/v1/admin/domains
--- error_code: 401
--- response_body_like: bearer token



=== TEST 8: no such tunnel: a 404 at once; a registered domain waits for its agent; an outage makes no 404
--- config
    location / {
        hopgate_connect_timeout 500ms;
        proxy_pass http://tunnels;
    }
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_ADMIN_KEY_FILE;
    }
--- init
HopGate::Fixture::stop_agents();

sub timed_get {
    my ($domain) = @_;
    my $start = time;
    my $code = main::get($domain);
    return ($code, time - $start);
}

# every worker asks the database once, then answers from its cache
my @slow = grep { $_ >= 1 }
           map { my ($c, $t) = timed_get('nobody8.test');
                 Test::More::is($c, 404, 'not registered: 404');
                 $t } 1 .. 8;
Test::More::is(scalar @slow, 0, 'each at once, not after the wait');

main::register('eight.test');
my ($code, $took) = timed_get('eight.test');
Test::More::is($code, 502, 'registered, its agent away: 502');
Test::More::cmp_ok($took, '>=', 0.5, sprintf 'after the wait (%.2f s)',
                   $took);

# a domain answered 404 and registered then: the change reaches the
# workers' caches, and requests wait for its agent
Test::More::is(main::get('late8.test'), 404, 'late8.test: 404')
    for 1 .. 8;
main::register('late8.test');
sleep 0.5;
my @late = map { [timed_get('late8.test')] } 1 .. 4;
Test::More::is(join(',', map { $_->[0] } @late), '502,502,502,502',
               'once registered, every worker waits for its agent');

# PostgreSQL stops: what cannot be known now waits, never a 404
main::register('nine8.test');
HopGate::Postgres::pg_stop('fast');
sleep 0.5;
($code, $took) = timed_get('nine8.test');
Test::More::is($code, 502, 'registered, never asked, database down: the '
               . 'request waits (502), no 404');
Test::More::cmp_ok($took, '>=', 0.5, 'after the wait');
Test::More::is(main::get('eight.test'), 502,
               'registered and cached: it waits as well');
Test::More::is(main::get('nobody9.test'), 502,
               'a domain nobody knows waits too while nobody can tell');

HopGate::Postgres::pg_restart();
my $deadline = time + 40;
my $healed;
while (time < $deadline) {
    last if ($healed = main::get('nobody9.test') eq '404');
    sleep 0.2;
}
Test::More::ok($healed, 'with PostgreSQL back, unknown domains get '
               . 'their 404 again');
--- request
GET /hello
--- more_headers
Host: nobody8.test
--- response_body_like: no such tunnel
--- error_code: 404
--- timeout: 60
