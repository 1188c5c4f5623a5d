# nginx -t names the directive and the problem for every registry and
# admin directive.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;

hopgate_init();
no_shuffle();

my $dir = HopGate::Fixture::hopgate_dir();
open my $fh, '>', "$dir/short.key";
print $fh "short\n";
close $fh;
open $fh, '>', "$dir/good.key";
print $fh "a-long-enough-admin-token\n";
close $fh;

# app.test three times: two stale lines, then the one with the agent's key
open $fh, '>', "$dir/twice.registry";
print $fh "app.test " . Digest::SHA::sha256_hex('a stale key') . "\n";
print $fh "app.test " . Digest::SHA::sha256_hex('another stale key') . "\n";
print $fh "# the new key\n";
print $fh "app.test " . Digest::SHA::sha256_hex(HopGate::Fixture::hopgate_key())
          . "\n";
close $fh;

run_tests();

__DATA__

=== TEST 1: a malformed PostgreSQL connection string
--- http_config
    hopgate_registry "host=127.0.0.1 dbname";
--- config
--- must_die
--- error_log eval
qr/"hopgate_registry": invalid PostgreSQL connection string: missing "=" after "dbname" in connection info string in \S+nginx\.conf:\d+$/



=== TEST 2: a registry that is neither a file nor PostgreSQL
--- http_config
    hopgate_registry mysql://localhost/db;
--- config
--- must_die
--- error_log
"hopgate_registry" must be "file:PATH" or a PostgreSQL connection string



=== TEST 3: hopgate_admin without a key file
--- http_config
    hopgate_registry postgresql://127.0.0.1/hopgate;
--- config
    location /api/v1/admin/ { hopgate_admin; }
--- must_die
--- error_log
"hopgate_admin" needs "hopgate_admin_key_file"



=== TEST 4: hopgate_admin without a registry
--- http_config
    hopgate_admin_key_file $TEST_NGINX_HOPGATE_DIR/good.key;
--- config
    location /api/v1/admin/ { hopgate_admin; }
--- must_die
--- error_log
"hopgate_admin" needs "hopgate_registry"



=== TEST 5: a missing key file
--- http_config
    hopgate_registry postgresql://127.0.0.1/hopgate;
--- config
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_HOPGATE_DIR/missing.key;
    }
--- must_die
--- error_log
"hopgate_admin_key_file": cannot open



=== TEST 6: a token that is too short
--- http_config
    hopgate_registry postgresql://127.0.0.1/hopgate;
--- config
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_HOPGATE_DIR/short.key;
    }
--- must_die
--- error_log
must hold one token of at least 16 characters



=== TEST 7: a registry timeout under 100ms
--- http_config
    hopgate_registry postgresql://127.0.0.1/hopgate;
    hopgate_registry_timeout 10ms;
--- config
--- must_die
--- error_log
"hopgate_registry_timeout" must be at least 100ms, not 10ms



=== TEST 8: a valid configuration passes without connecting to the database
--- http_config
    hopgate_registry "host=127.0.0.1 port=1 dbname=hopgate connect_timeout=1";
    hopgate_registry_cache_ttl 5m;
    hopgate_registry_timeout 3s;
--- config
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $TEST_NGINX_HOPGATE_DIR/good.key;
    }
--- request
GET /api/v1/admin/domains
--- more_headers
Authorization: Bearer a-long-enough-admin-token
--- error_code: 503
--- response_body
{"success":false,"error":"registry unavailable"}



=== TEST 9: a domain on several lines of the file registry: a warning, and the last line counts
--- http_config
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT reuseport;
    hopgate_certificate $TEST_NGINX_HOPGATE_DIR/edge.pem;
    hopgate_certificate_key $TEST_NGINX_HOPGATE_DIR/edge.key;
    hopgate_registry file:$TEST_NGINX_HOPGATE_DIR/twice.registry;
    upstream tunnels { hopgate; }
--- config
    location /hello {
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1), 1,
               'the key of the last line opens the tunnel');
--- more_headers
Host: app.test
--- request
GET /hello
--- response_body
hello from the local app
--- error_log eval
qr/\[warn\] .*"hopgate_registry": \S+\/twice\.registry:4: "app\.test" is also on line 2; line 4 counts/
