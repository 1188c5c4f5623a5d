# A four-worker nginx with the module starts, serves from its workers and
# stops cleanly.
use Test::Nginx::Socket 'no_plan';

master_on();
workers(4);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: four workers start with the module and serve
--- http_config
    hopgate_mtu 1200;
--- config
    location = /t {
        return 200 "worker $pid\n";
    }
--- request
GET /t
--- response_body_like
^worker \d+$
--- no_error_log
[emerg]
[alert]
[crit]
