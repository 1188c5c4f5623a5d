# The module loads into Debian's nginx, its directives are checked at
# configuration time, and a multi-worker nginx with it starts and stops.
use Test::Nginx::Socket 'no_plan';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the module loads and nginx serves
--- http_config
    hopgate_mtu 1300;
--- config
    location = /t {
        return 200 "loaded\n";
    }
--- request
GET /t
--- response_body
loaded
--- error_code: 200
--- no_error_log
[emerg]
[alert]



=== TEST 2: nginx -t names hopgate_mtu and says why
--- http_config
    hopgate_mtu 64;
--- config
--- must_die
--- error_log
"hopgate_mtu" must be between 1200 and 1452, not 64



=== TEST 3: an unknown hopgate_listen parameter is refused
--- http_config
    hopgate_listen 127.0.0.1:$TEST_NGINX_HOPGATE_PORT fastopen;
--- config
--- must_die
--- error_log
invalid parameter "fastopen" of the "hopgate_listen" directive



=== TEST 4: a hopgate_listen without a port is refused
--- http_config
    hopgate_listen 127.0.0.1;
--- config
--- must_die
--- error_log
no port in "127.0.0.1" of the "hopgate_listen" directive
