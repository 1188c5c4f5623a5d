# The admin API: bearer-token checks, every class of malformed input, SQL
# metacharacters stored verbatim, a database query that hangs without
# holding up anything else in the worker, and the file registry's answers.
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
no_shuffle();
no_root_location();

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
    $block->set_value('timeout', 10) unless $block->timeout;
});


# (status, error) of an admin call
sub call {
    my ($method, $path, $body, %o) = @_;
    my ($code, $json, $raw) = HopGate::Postgres::admin_api($method, $path,
                                                            $body, %o);
    return ($code, $json ? $json->{error} : "not JSON: $raw", $json);
}


sub refused {
    my ($name, $want, $want_error, @call) = @_;
    my ($code, $error, $json) = main::call(@call);
    Test::More::is($code, $want, "$name: $want");
    Test::More::ok($json && $json->{success} eq '0'
                   || ($json && !$json->{success}), "$name: success false");
    Test::More::like($error // '', $want_error, "$name: the error says so");
}


sub error_log {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: no token, a wrong token, another scheme: 401, and the token is not logged
--- init
main::refused('no token', 401, qr/bearer token/, 'GET', 'domains', undef,
              token => undef);
main::refused('wrong token', 401, qr/bearer token/, 'GET', 'domains', undef,
              token => 'wrong-token-do-not-log-me');
main::refused('basic auth', 401, qr/bearer token/, 'GET', 'domains', undef,
              token => undef, curl => ['-u', 'admin:secret-do-not-log']);
main::refused('register without a token', 401, qr/bearer token/, 'POST',
              'domains/register', { domain => 'x.test' }, token => undef);
my ($code) = main::call('GET', 'domains');
Test::More::is($code, 200, 'the right token: 200');
--- request
GET /api/v1/admin/domains
--- more_headers
Authorization: Bearer not-the-token
--- log_level: info
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer realm="hopgate admin"
Content-Type: application/json
--- error_log
hopgate admin: no bearer token
hopgate admin: wrong bearer token
--- no_error_log
wrong-token-do-not-log-me
secret-do-not-log
not-the-token



=== TEST 2: malformed input: each class is a 4xx with {success: false, error}
--- init
my @r = ('POST', 'domains/register');
main::refused('malformed JSON', 400, qr/malformed JSON/, @r, '{"domain": ');
main::refused('not an object', 400, qr/JSON object/, @r, '["a.test"]');
main::refused('empty body', 400, qr/malformed JSON|no request body/, @r, '');
main::refused('duplicate keys', 400, qr/malformed JSON/, @r,
              '{"domain": "a.test", "domain": "b.test"}');
main::refused('no domain', 400, qr/missing field: domain/, @r,
              { memo => 'x' });
main::refused('domain not a string', 400, qr/domain must be a string/, @r,
              { domain => 42 });
main::refused('memo not a string', 400, qr/memo must be a string/, @r,
              { domain => 'm.test', memo => [1] });
main::refused('memo too long', 400, qr/memo is longer/, @r,
              { domain => 'm.test', memo => 'x' x 1025 });
for my $bad ('bad domain.test', 'a..b.test', '-', '.', '-a.test', 'a-.test', 'x' x 64 . '.test',
             "evil.test'; DROP TABLE domains; --", 'caf\x{e9}.test')
{
    main::refused("domain \"$bad\"", 400, qr/not a hostname/, @r,
                  { domain => $bad });
}
main::refused('a NUL in the domain', 400, qr/malformed JSON/, @r,
              { domain => "nul\x00.test" });
main::refused('a body over 16k', 413, qr/too large/, @r,
              { domain => 'big.test', memo => 'x' x 20000 });

my ($code, $error, $json) = main::call(@r, { domain => 'dup.test' });
Test::More::is($code, 200, 'registered dup.test');
main::refused('a duplicate domain', 409, qr/already registered/, @r,
              { domain => 'DUP.test.' });

main::refused('unregister without a key', 400,
              qr/missing field: client_api_key/, 'POST',
              'domains/unregister', { domain => 'dup.test' });
main::refused('unregister with a wrong key', 403, qr/does not match/,
              'POST', 'domains/unregister',
              { domain => 'dup.test', client_api_key => 'hg_nope' });
main::refused('unregister an unknown domain', 404, qr/not registered/,
              'POST', 'domains/unregister',
              { domain => 'nobody.test', client_api_key => 'x' });
main::refused('rotate an unknown domain', 404, qr/not registered/,
              'POST', 'domains/rotate', { domain => 'nobody.test' });
main::refused('disable an unknown domain', 404, qr/not registered/,
              'POST', 'domains/disable', { domain => 'nobody.test' });
main::refused('an unknown endpoint', 404, qr/no such endpoint/,
              'POST', 'domains/explode', { domain => 'dup.test' });
main::refused('GET on register', 405, qr/wrong method/,
              'GET', 'domains/register', undef);
main::refused('POST on the list', 405, qr/wrong method/,
              'POST', 'domains', { domain => 'dup.test' });

($code, $error, $json) = main::call('POST', 'domains/unregister',
    { domain => 'dup.test', client_api_key => $json->{client_api_key} });
Test::More::is($code, 200, 'unregistered with the right key');
--- request
GET /api/v1/admin/nothing-here
--- more_headers eval
"Authorization: Bearer " . HopGate::Postgres::admin_token()
--- error_code: 404
--- response_body
{"success":false,"error":"no such endpoint"}



=== TEST 3: SQL metacharacters and any Unicode in a memo are stored verbatim
--- init
my $memo = qq{Robert'); DROP TABLE domains; -- \$1 \\x00 "q" \x{263a} caf\x{e9}};
my ($code, $error, $json) = main::call('POST', 'domains/register',
    { domain => 'Bobby-Tables.Test.', memo => $memo });
Test::More::is($code, 200, 'registered');
Test::More::is($json->{domain}, 'bobby-tables.test', 'the domain normalised');
Test::More::is($json->{memo}, $memo, 'the memo as sent');

($code, $error, $json) = main::call('GET', 'domains');
my ($row) = grep { $_->{domain} eq 'bobby-tables.test' } @{ $json->{domains} };
Test::More::is($row->{memo}, $memo, 'listed verbatim');
Test::More::like($row->{created}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
                 'created is ISO 8601 UTC');
Test::More::is($row->{sessions}, 0, 'no sessions');
Test::More::ok(!$row->{disabled}, 'not disabled');

my $stored = HopGate::Postgres::pg_sql(
    "SELECT memo FROM domains WHERE domain = 'bobby-tables.test'");
utf8::decode($stored);
Test::More::is($stored, $memo, 'stored verbatim in the database');
Test::More::is(HopGate::Postgres::pg_sql(
    "SELECT octet_length(key_hash) FROM domains"
    . " WHERE domain = 'bobby-tables.test'"), 32,
    'only a 32-byte hash is stored');
Test::More::is(HopGate::Postgres::pg_sql(
    "SELECT count(*) FROM pg_tables WHERE tablename = 'domains'"), 1,
    'the table is still there');
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 404



=== TEST 4: a query that hangs on a lock delays neither tunnels nor other requests
--- http_config
    $TEST_NGINX_HOPGATE_PG_HTTP
    hopgate_registry_timeout 2s;
--- init
my ($code, $error, $json) = main::call('POST', 'domains/register',
                                        { domain => 'hang.test' });
my $key = $json->{client_api_key};
($code, $error, $json) = main::call('POST', 'domains/register',
                                     { domain => 'hang-b.test' });
my $other = $json->{client_api_key};

my $a = HopGate::Fixture::start_agent(domain => 'hang.test', key => $key);
HopGate::Fixture::agent_wait($a, qr/connected to/, 1);

# the test holds a lock on the domains table for 4 s
my $locker = fork;
if ($locker == 0) {
    open STDOUT, '>', '/dev/null';
    { exec 'psql', '-X', '-q', '-h', '127.0.0.1', '-p',
           HopGate::Postgres::pg_port(), '-U', 'postgres', '-d', 'hopgate',
           '-c', 'BEGIN; LOCK TABLE domains IN ACCESS EXCLUSIVE MODE; '
                 . 'SELECT pg_sleep(4); COMMIT;' }
    POSIX::_exit(1);
}
sleep 0.5;

# an admin call and a handshake with an uncached key now wait on the lock
my $out = HopGate::Fixture::hopgate_dir() . '/hung-list';
my $lister = fork;
if ($lister == 0) {
    my $start = time;
    my ($code) = HopGate::Postgres::admin_api('GET', 'domains');
    open my $fh, '>', $out;
    printf $fh "%s %.3f\n", $code, time - $start;
    close $fh;
    POSIX::_exit(0);
}
my $b = HopGate::Fixture::start_agent(domain => 'hang-b.test', key => $other,
                                      keep => 1);
sleep 0.3;

my ($slowest, $ok) = (0, 0);
for (1 .. 20) {
    my $start = time;
    my ($c) = HopGate::Fixture::http_get('/hello', 'hang.test');
    $ok++ if $c eq '200';
    $slowest = time - $start if time - $start > $slowest;
}
Test::More::is($ok, 20, '20 requests through the tunnel while the query '
               . 'hangs');
Test::More::cmp_ok($slowest, '<', 0.5, sprintf 'none delayed (slowest '
                   . '%.3f s)', $slowest);

waitpid $lister, 0;
open my $fh, '<', $out;
my ($status, $took) = split ' ', scalar <$fh>;
Test::More::is($status, 503, 'the hung admin call answers 503');
Test::More::cmp_ok($took, '<', 3.5, sprintf 'after the registry timeout '
                   . '(%.1f s)', $took);

waitpid $locker, 0;
Test::More::cmp_ok(HopGate::Fixture::agent_wait($b, qr/connected to/, 1, 20),
                   '>=', 1, 'the waiting agent connects once the lock is '
                   . 'gone');
($code) = main::call('GET', 'domains');
Test::More::is($code, 200, 'and the admin API answers again');
--- request
GET /hello
--- more_headers
Host: hang.test
--- response_body
hello from the local app
--- timeout: 30



=== TEST 5: with the file registry, the list works and changes answer 501
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
--- init
my ($code, $error, $json) = main::call('GET', 'domains');
Test::More::is($code, 200, 'list: 200');
Test::More::is(join(',', sort map { $_->{domain} } @{ $json->{domains} }),
               'app.test,other.test', 'the file\'s domains');
main::refused('register', 501, qr/read-only/, 'POST', 'domains/register',
              { domain => 'new.test' });
--- request
GET /api/v1/admin/domains/register
--- more_headers eval
"Authorization: Bearer " . HopGate::Postgres::admin_token()
--- error_code: 405
