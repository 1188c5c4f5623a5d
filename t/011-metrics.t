# /metrics (hopgate_metrics): Prometheus text from the shared zone, summed
# over four workers; exact counts after known requests, sessions and
# refused handshakes; counters that survive a reload; the per-domain
# cardinality bound with a thousand domains; nginx -t messages.
# Every scrape must pass a strict parser (t/lib/HopGate/Prometheus.pm),
# and promtool where the prometheus package is installed.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Prometheus;
use IO::Socket::INET;
use Time::HiRes ();

hopgate_init();
master_on();
workers(4);
no_shuffle();
no_root_location();
worker_connections(2048);

our $DOMAINS = 1000;
our $GEN;
our $promtool_checked = 0;

# a thousand more domains in the registry, before nginx reads it; their
# sessions come from bench/session_gen (one process, one epoll loop)
{
    my $build = $ENV{HOPGATE_BUILD} || "$FindBin::Bin/../build";
    my $src = "$FindBin::Bin/../bench/session_gen.c";

    $GEN = "$build/bench/session_gen";
    unless (-x $GEN) {
        $GEN = hopgate_dir() . '/session_gen';
        undef $GEN unless -f $src
            && system('cc', '-std=gnu11', '-O2', '-D_GNU_SOURCE',
                      "-I$FindBin::Bin/../proto", "-I$build/gen", '-o', $GEN,
                      $src, "$build/libhgproto.a", '-lprotobuf-c', '-lssl',
                      '-lcrypto') == 0;
    }

    if ($GEN) {
        open my $reg, '>>', hopgate_dir() . '/registry' or die $!;
        print $reg `$GEN --print-registry $DOMAINS gen.test t11`;
        close $reg;
    }
}


# GET /metrics, parsed strictly; undef (and a failed test) if it does not
# parse
sub scrape {
    my ($rc, $out) = HopGate::Fixture::curl('/metrics');
    my $m = eval { HopGate::Prometheus::parse($out) };
    Test::More::ok(0, "the scrape parses: $@") if $@;

    if ($m && !$main::promtool_checked++ && promtool()) {
        my $file = HopGate::Fixture::hopgate_dir() . '/scrape.txt';
        open my $fh, '>', $file or die $!;
        print $fh $out;
        close $fh;
        my $lint = `promtool check metrics < $file 2>&1`;
        Test::More::is($? >> 8, 0, "promtool check metrics agrees")
            or Test::More::diag($lint);
    }

    return $m;
}


sub promtool {
    return scalar grep { -x "$_/promtool" } split /:/, $ENV{PATH};
}


# polls until $cond->($metrics) holds (at most $secs); returns the scrape
sub wait_metrics {
    my ($cond, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 10);
    my $m;
    while (1) {
        $m = scrape();
        return $m if $m && $cond->($m);
        return $m if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.2);
    }
}


sub requests {
    my ($n, $host) = @_;
    my $url = 'http://127.0.0.1:' . HopGate::Fixture::nginx_port()
              . '/hello';
    my ($rc, $out) = HopGate::Fixture::curl($url, '--no-progress-meter',
        '--parallel',
        '--parallel-max', '20', '-H', 'Host: ' . ($host // 'app.test'),
        '-H', 'Connection: close', '-o', '/dev/null', '-w', '%{http_code}\n',
        map { ($url, '-o', '/dev/null') } 2 .. $n);
    return scalar grep { $_ eq '200' } split /\n/, $out // '';
}

run_tests();

__DATA__

=== TEST 1: known requests, sessions and refused handshakes, counted exactly over four workers
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /metrics { hopgate_metrics; }
    location / {
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to worker/,
                                            4, 15), 4,
               "the agent has a session in each of the 4 workers");

for my $o ([key => HopGate::Fixture::test_key('wrong')],
           [domain => 'nowhere.test'])
{
    my $bad = HopGate::Fixture::start_agent(keep => 1, @$o);
    Test::More::is(HopGate::Fixture::stop_agent($bad, 'ZERO', 10), 3,
                   "an agent with a wrong $o->[0] is refused");
}

Test::More::is(main::requests(40), 40, "40 requests through the tunnel");

# three datagrams too short to be ours
my $junk = IO::Socket::INET->new(Proto => 'udp',
    PeerAddr => '127.0.0.1:' . HopGate::Fixture::edge_port()) or die $!;
$junk->send("\x10") for 1 .. 3;

# handshakes and streams count at once; the refused sessions leave the
# gauge when they close; engine counters arrive each second
my $m = main::wait_metrics(sub {
    $_[0]->value('hopgate_sessions', state => 'handshake') == 0
    && $_[0]->value('hopgate_malformed_datagrams_total') >= 3
    && $_[0]->value('hopgate_rtt_seconds_count') >= 4
});

my %want = (
    'hopgate_worker_processes' => [[], 4],
    'hopgate_sessions' => [[state => 'ready'], 4],
    'hopgate_sessions ' => [[state => 'handshake'], 0],
    'hopgate_handshakes_total' => [[result => 'ok'], 4],
    'hopgate_handshakes_total ' => [[result => 'bad_key'], 1],
    'hopgate_handshakes_total  ' => [[result => 'unknown_domain'], 1],
    'hopgate_handshakes_total   ' => [[result => 'timeout'], 0],
    'hopgate_registry_queries_total' => [[result => 'ok'], 4],
    'hopgate_registry_queries_total ' => [[result => 'bad_key'], 1],
    'hopgate_registry_queries_total  ' => [[result => 'unknown_domain'], 1],
    'hopgate_registry_query_duration_seconds_count' => [[], 6],
    'hopgate_streams_opened_total' => [[], 40],
    'hopgate_streams_failed_total' => [[reason => 'no_tunnel'], 0],
    'hopgate_malformed_datagrams_total' => [[], 3],
    'hopgate_domain_sessions' => [[domain => 'app.test'], 4],
    'hopgate_domain_streams_opened_total' => [[domain => 'app.test'], 40],
    'hopgate_metrics_domains' => [[], 1],
    'hopgate_metrics_zone_full_total' => [[], 0],
);

for my $k (sort keys %want) {
    (my $name = $k) =~ s/ +$//;
    my ($labels, $value) = @{ $want{$k} };
    Test::More::is($m->value($name, @$labels), $value,
                   "$name {@$labels} is $value");
}

# each response is "hello from the local app\n" plus its head
Test::More::cmp_ok($m->value('hopgate_domain_stream_bytes_total',
                             domain => 'app.test', direction => 'received'),
                   '>=', 40 * 25, "the responses' bytes are counted");
Test::More::is($m->sum('hopgate_stream_bytes_total'),
               $m->sum('hopgate_domain_stream_bytes_total'),
               "every stream byte belongs to a domain");
Test::More::cmp_ok($m->value('hopgate_packets_total', direction => 'sent'),
                   '>', 0, "packets are counted");
Test::More::is($m->type('hopgate_rtt_seconds'), 'histogram',
               "the RTT is a histogram");
--- request
GET /metrics
--- response_headers
Content-Type: text/plain; version=0.0.4; charset=utf-8
--- response_body_like: ^# HELP hopgate_
--- no_error_log
[alert]
[crit]
--- timeout: 30



=== TEST 2: a request that finds no tunnel is counted as failed, for its domain
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /metrics { hopgate_metrics; }
    location / {
        hopgate_connect_timeout 200ms;
        proxy_pass http://tunnels;
    }
--- init
HopGate::Fixture::stop_agents();
my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
Test::More::is($code, 502, "no agent: 502");

my $m = main::scrape();
Test::More::is($m->value('hopgate_streams_failed_total',
                         reason => 'no_tunnel'), 1,
               "one stream failed for want of a tunnel");
Test::More::is($m->value('hopgate_streams_opened_total'), 0,
               "none opened");
Test::More::is($m->value('hopgate_domain_streams_failed_total',
                         domain => '_other'), 1,
               "a domain without sessions makes no series of its own");

($code) = HopGate::Fixture::http_get('/hello', 'nobody.test');
Test::More::is($code, 404, "a domain that is not registered: 404");
$m = main::scrape();
Test::More::is($m->value('hopgate_streams_failed_total',
                         reason => 'unknown_domain'), 1,
               "counted as unknown_domain");
Test::More::is($m->value('hopgate_streams_failed_total',
                         reason => 'no_tunnel'), 1,
               "not as no_tunnel");
--- request
GET /metrics
--- response_body_like: hopgate_streams_failed_total\{reason="no_tunnel"\} 1
--- error_log
no tunnel for "app.test" came up in time



=== TEST 3: a request that waits for its domain's agent counts for the domain
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /metrics { hopgate_metrics; }
    location / {
        hopgate_connect_timeout 10s;
        proxy_pass http://tunnels;
    }
--- init
HopGate::Fixture::stop_agents();
my $pid = fork // die;
if ($pid == 0) {
    my ($code) = HopGate::Fixture::http_get('/hello', 'app.test');
    POSIX::_exit($code eq '200' ? 0 : 1);
}
Time::HiRes::sleep(0.5);
HopGate::Fixture::start_agent();
waitpid $pid, 0;
Test::More::is($?, 0, "the waiting request was served once the agent came");

my $m = main::scrape();
Test::More::is($m->value('hopgate_domain_streams_opened_total',
                         domain => 'app.test'), 1,
               "its stream counts for app.test");
--- request
GET /metrics
--- response_body_like: hopgate_streams_opened_total 1\n



=== TEST 4: counters survive nginx -s reload
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /metrics { hopgate_metrics; }
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
    }
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to worker/, 4, 15);
Test::More::is(main::requests(10), 10, "10 requests before the reload");

my $before = main::scrape();
Test::More::is($before->value('hopgate_streams_opened_total'), 10,
               "10 streams before the reload");

my ($master) = HopGate::Fixture::nginx_pids();
kill 'HUP', $master;

# the agent moves to the new workers; the old ones leave when drained
Test::More::cmp_ok(HopGate::Fixture::agent_wait($agent,
                       qr/connected to worker/, 8, 20),
                   '>=', 8, "the agent connected to the new workers");

my $m = main::wait_metrics(sub {
    $_[0]->value('hopgate_worker_processes') == 4
    && $_[0]->value('hopgate_sessions', state => 'ready') == 4
}, 20);
Test::More::is($m->value('hopgate_worker_processes'), 4,
               "the old workers are gone from the gauges");

Test::More::is(main::requests(5), 5, "5 requests after the reload");

$m = main::scrape();
Test::More::is($m->value('hopgate_streams_opened_total'), 15,
               "15 streams: the counter kept its value across the reload");
Test::More::is($m->value('hopgate_domain_streams_opened_total',
                         domain => 'app.test'), 15,
               "and so did the domain's");
Test::More::cmp_ok($m->value('hopgate_handshakes_total', result => 'ok'),
                   '>=', 8, "handshakes before and after are all there");
Test::More::cmp_ok($m->value('hopgate_stream_bytes_total',
                             direction => 'received'),
                   '>', $before->value('hopgate_stream_bytes_total',
                                       direction => 'received'),
                   "bytes went on growing");
--- request
GET /metrics
--- response_body_like: hopgate_streams_opened_total 15
--- timeout: 40



=== TEST 5: a thousand domains make at most hopgate_metrics_max_domains series each, the rest add up as _other
--- skip_eval: 4: !defined $main::GEN
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    hopgate_metrics_zone hopgate 4m;
    hopgate_metrics_max_domains 10;
--- config
    location = /metrics { hopgate_metrics; }
--- init
return unless defined $main::GEN;   # (our runner runs init when skipping)
HopGate::Fixture::stop_agents();
my $out = HopGate::Fixture::hopgate_dir() . '/session_gen.out';
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>', $out;
    open STDERR, '>', "$out.err";
    exec $main::GEN, '127.0.0.1', HopGate::Fixture::edge_port(),
         HopGate::Fixture::hopgate_dir() . '/edge.pem', $main::DOMAINS,
         'gen.test', 't11', 32 or POSIX::_exit(127);
}

my $ready = '';
for (1 .. 600) {
    $ready = `cat $out` and last;
    Time::HiRes::sleep(0.1);
}
Test::More::is($ready, "ready $main::DOMAINS failed 0\n",
               "$main::DOMAINS sessions for $main::DOMAINS domains");

my $m = main::wait_metrics(sub {
    $_[0]->value('hopgate_sessions', state => 'ready') == $main::DOMAINS
}, 10);

kill 'TERM', $pid;
waitpid $pid, 0;

Test::More::is($m->value('hopgate_sessions', state => 'ready'),
               $main::DOMAINS, "every session is counted");
Test::More::is($m->value('hopgate_metrics_domains'), 10,
               "10 domains have series of their own");

my %domains = map { $_->[0]{domain} => 1 }
              $m->series('hopgate_domain_sessions');
Test::More::is(scalar keys %domains, 11, "11 domain label values");
Test::More::ok($domains{_other}, "one of them is _other");
Test::More::is($m->value('hopgate_domain_sessions', domain => '_other'),
               $main::DOMAINS - 10, "_other holds the other sessions");
Test::More::is($m->sum('hopgate_domain_sessions'), $main::DOMAINS,
               "the domains' sessions add up");
Test::More::is($m->value('hopgate_metrics_zone_full_total'), 0,
               "the zone had room for every session");

my %values;
for my $f ($m->families) {
    next unless $f =~ /^hopgate_domain_/;
    $values{$_->[0]{domain}}++ for $m->series($f . ($m->type($f) eq
                                    'histogram' ? '_count' : ''));
}
Test::More::is(scalar keys %values, 11,
               "no per-domain family has more than 11 domains");
--- request
GET /metrics
--- response_body_like: hopgate_metrics_domains 10
--- timeout: 90



=== TEST 6: hopgate_metrics needs a zone
--- http_config
--- config
    location = /metrics { hopgate_metrics; }
--- must_die
--- error_log
"hopgate_metrics" needs "hopgate_metrics_zone" in the http block



=== TEST 7: the zone has a minimum size
--- http_config
    hopgate_metrics_zone hopgate 64k;
--- config
--- must_die
--- error_log
"hopgate_metrics_zone" size must be at least 128k, not "64k"



=== TEST 8: a bad zone size is named
--- http_config
    hopgate_metrics_zone hopgate lots;
--- config
--- must_die
--- error_log
invalid size "lots" of the "hopgate_metrics_zone" directive



=== TEST 9: hopgate_metrics_max_domains is bounded
--- http_config
    hopgate_metrics_zone hopgate 1m;
    hopgate_metrics_max_domains 0;
--- config
--- must_die
--- error_log
"hopgate_metrics_max_domains" must be between 1 and 100000, not 0



=== TEST 10: hopgate_status needs the admin key
--- http_config
    hopgate_metrics_zone hopgate 1m;
--- config
    location = /hopgate/status { hopgate_status; }
--- must_die
--- error_log
"hopgate_status" needs "hopgate_admin_key_file"
