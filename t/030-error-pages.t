# What a visitor sees when the tunnel cannot serve: a domain that is not
# registered gets a branded 404 "no such tunnel" at once; a registered one
# whose agent is away waits hopgate_connect_timeout and gets the 502
# "tunnel offline"; a slow local service is a 504. Every page names the
# domain, the time, the request id and the hop that failed, and
# error_page replaces any of them. The file registry knows app.test and
# other.test; no agent serves other.test.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use Time::HiRes ();
use Time::Local ();

hopgate_init();
no_shuffle();
no_root_location();

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', "    \$TEST_NGINX_HOPGATE_HTTP\n")
        unless defined $block->http_config;
    $block->set_value('timeout', 10) unless defined $block->timeout;
});


# GET through nginx: (status, head, body, seconds)
sub fetch {
    my ($path, $host, @args) = @_;
    my $start = Time::HiRes::time();
    my (undef, $out) = HopGate::Fixture::curl($path, '-i', '-H',
                                              "Host: $host", @args);
    my $took = Time::HiRes::time() - $start;
    my ($head, $body) = split /\r\n\r\n/, $out // '', 2;
    my ($code) = ($head // '') =~ m{^HTTP/\S+ (\d+)};
    return ($code // 0, $head // '', $body // '', $took);
}


# a branded page: its title, the domain, the time, the request id (the
# X-Request-Id the location adds), the hop that failed
sub page_ok {
    my ($head, $body, %want) = @_;
    my $what = "the $want{code} page";

    Test::More::like($body, qr{<h1>$want{code} &ndash; \Q$want{title}\E</h1>},
                     "$what: its title");
    Test::More::like($body, qr{<dt>site</dt><dd>\Q$want{domain}\E</dd>},
                     "$what names the domain");

    my ($y, $mo, $d, $h, $mi, $s) = $body =~
        m{<dt>time</dt><dd>(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC</dd>};
    my $at = defined $s ? Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y)
                        : 0;
    Test::More::cmp_ok(abs($at - time), '<', 60, "$what gives the time, UTC");

    my ($id) = $head =~ /^X-Request-Id: ([0-9a-f]{32})\r?$/mi;
    Test::More::ok($id && $body =~ m{<dt>request id</dt><dd>\Q$id\E</dd>},
                   "$what gives the request id ($id)");

    Test::More::like($body, qr{Failed at: <b>\Q$want{hop}\E</b>},
                     "$what says the $want{hop} hop failed");
    Test::More::like($body,
        qr{<li class="failed">\Q$want{hop}\E</li>},
        "$what marks it on the way visitor - edge - tunnel - local service");
}

run_tests();

__DATA__

=== TEST 1: a domain that is not registered gets the 404 "no such tunnel" at once
--- config
    location / {
        proxy_pass http://tunnels;
        add_header X-Request-Id $request_id always;
    }
--- init
my ($code, $head, $body, $took) = main::fetch('/hello', 'nobody.test');
Test::More::is($code, 404, 'no such tunnel: 404');
Test::More::cmp_ok($took, '<', 1, sprintf('at once (%.3f s), not after '
                                          . 'hopgate_connect_timeout', $took));
main::page_ok($head, $body, code => 404, title => 'no such tunnel',
              domain => 'nobody.test', hop => 'edge');
--- request
GET /hello
--- more_headers
Host: NoBody.Test.
--- error_code: 404
--- response_headers
Content-Type: text/html
--- response_body_like chomp
<dt>site</dt><dd>nobody\.test</dd>
--- error_log
no tunnel is registered for "nobody.test"
--- no_error_log
[error]



=== TEST 2: HEAD for a domain that is not registered: the 404 without a body
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- request
HEAD /hello
--- more_headers
Host: nobody.test
--- error_code: 404
--- response_body



=== TEST 3: a request without a Host to route by is a 404 too
--- config
    location / {
        proxy_pass http://tunnels;
    }
--- raw_request eval
"GET /hello HTTP/1.0\r\n\r\n"
--- error_code: 404
--- response_body_like chomp
<dt>site</dt><dd>\(none\)</dd>



=== TEST 4: a registered domain whose agent is away waits, then gets the 502 "tunnel offline"
--- config
    location / {
        hopgate_connect_timeout 500ms;
        proxy_pass http://tunnels;
        add_header X-Request-Id $request_id always;
    }
--- init
my ($code, $head, $body, $took) = main::fetch('/hello', 'other.test');
Test::More::is($code, 502, 'agent away: 502');
Test::More::cmp_ok($took, '>=', 0.5, sprintf('after the wait (%.3f s)',
                                             $took));
main::page_ok($head, $body, code => 502, title => 'tunnel offline',
              domain => 'other.test', hop => 'tunnel');
--- request
GET /hello
--- more_headers
Host: other.test
--- error_code: 502



=== TEST 5: that 502 is one error line: the wait, with the request and the upstream named
--- config
    location / {
        hopgate_connect_timeout 200ms;
        proxy_pass http://tunnels;
    }
--- request
GET /hello
--- more_headers
Host: other.test
--- error_code: 502
--- grep_error_log eval: qr/\[(?:error|crit|alert|emerg)\].*/
--- grep_error_log_out eval
qr{\A\[error\] \d+#\d+: \*\d+ hopgate: no tunnel for "other\.test" came up in time \(no agent connected within 200ms\) while [a-z ]+, client: 127\.0\.0\.1, server: [^,]*, request: "GET /hello HTTP/1\.1", upstream: "http://other\.test/hello", host: "other\.test"\n\z}



=== TEST 6: a local service that refuses: the 502 says so
--- config
    location / {
        proxy_pass http://tunnels;
        add_header X-Request-Id $request_id always;
    }
--- init
HopGate::Fixture::start_agent(to => '127.0.0.1:'
                                    . HopGate::Fixture::free_port());
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
my ($code, $head, $body) = main::fetch('/hello', 'app.test');
Test::More::is($code, 502, 'refused: 502');
main::page_ok($head, $body, code => 502,
              title => 'local service unavailable', domain => 'app.test',
              hop => 'local service');
--- request
GET /hello
--- more_headers
Host: app.test
--- error_code: 502



=== TEST 7: a local service too slow for proxy_read_timeout: the branded 504
--- config
    location / {
        proxy_pass http://tunnels;
        proxy_read_timeout 300ms;
        add_header X-Request-Id $request_id always;
    }
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
my ($code, $head, $body) = main::fetch('/delay/2000', 'app.test');
Test::More::is($code, 504, 'too slow: 504');
main::page_ok($head, $body, code => 504, title => 'tunnel timed out',
              domain => 'app.test', hop => 'local service');
--- request
GET /delay/2000
--- more_headers
Host: app.test
--- error_code: 504
--- response_headers
Content-Type: text/html
--- response_body_like chomp
504 &ndash; tunnel timed out



=== TEST 8: error_page replaces the 404 "no such tunnel"
--- config
    location / {
        proxy_pass http://tunnels;
        error_page 404 /not-here;
    }
    location = /not-here {
        internal;
        return 200 "our own 404 page\n";
    }
--- request
GET /hello
--- more_headers
Host: nobody.test
--- error_code: 404
--- response_body
our own 404 page



=== TEST 9: error_page replaces the 504
--- config
    location / {
        proxy_pass http://tunnels;
        proxy_read_timeout 300ms;
        error_page 504 = /slow;
    }
    location = /slow {
        return 200 "our own slow page\n";
    }
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
--- request
GET /delay/2000
--- more_headers
Host: app.test
--- error_code: 200
--- response_body
our own slow page



=== TEST 10: the app's own 404 passes through as it is, error_page or not
--- config
    location / {
        proxy_pass http://tunnels;
        error_page 404 /not-here;
    }
    location = /not-here {
        internal;
        return 200 "our own 404 page\n";
    }
--- init
HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($HopGate::Fixture::last, qr/connected to/, 1);
--- request
GET /no-such-path
--- more_headers
Host: app.test
--- error_code: 404
--- response_body
not found
