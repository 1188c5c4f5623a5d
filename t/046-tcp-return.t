# UDP comes back: an agent in auto mode that fell back to TLS/TCP tries
# UDP again (--udp-retry), moves new sessions back to it once it answers,
# and drains the TCP session with GOAWAY, so a 1 GiB download that runs
# over TCP all the while completes intact and no request fails during the
# switch.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use HopGate::Relay;
use POSIX ();
use Time::HiRes qw(time sleep);
use Time::Local ();

hopgate_init();
no_shuffle();
no_root_location();


# the time of the first agent log line matching $re, as epoch seconds
sub log_time {
    my ($agent, $re) = @_;
    for my $line (split /\n/, HopGate::Fixture::agent_log($agent)) {
        next unless $line =~ $re;
        my ($y, $mo, $d, $h, $mi, $s) = $line
            =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):([\d.]+)Z/ or next;
        return Time::Local::timegm(0, $mi, $h, $d, $mo - 1, $y) + $s;
    }
    return undef;
}


# runs $code in a child; its result (a line) lands in the returned file
sub in_child {
    my ($name, $code) = @_;
    my $file = HopGate::Fixture::hopgate_dir() . "/$name.$$";
    unlink $file;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $out = $code->();
        open my $fh, '>', "$file.tmp" or POSIX::_exit(1);
        print $fh $out;
        close $fh;
        rename "$file.tmp", $file;
        POSIX::_exit(0);
    }
    return { pid => $pid, file => $file };
}


sub child_result {
    my ($c, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline && !-e $c->{file}) {
        sleep 0.1;
    }
    kill 'KILL', $c->{pid} unless -e $c->{file};
    waitpid $c->{pid}, 0;
    open my $fh, '<', $c->{file} or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: UDP comes back during a 1 GiB download over TCP: the agent moves to UDP, the download completes, no request fails
--- http_config
    $TEST_NGINX_HOPGATE_HTTP
    $TEST_NGINX_HOPGATE_TUNNEL
--- config
    location / {
        hopgate_route app.test;
        proxy_pass http://tunnels;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_read_timeout 60s;
    }
--- init
my $relay = HopGate::Relay::start(
    to => "127.0.0.1:$ENV{TEST_NGINX_HOPGATE_PORT}", block => 1);
my $mport = HopGate::Fixture::free_port();
my $agent = HopGate::Fixture::start_agent(
    server => "127.0.0.1:$relay->{port}", transport => 'auto',
    log_level => 'debug',
    args => ['--udp-retry', '2', '--metrics', "127.0.0.1:$mport"]);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to .* over tcp/,
                                            1, 10),
               'the agent is on TCP while UDP is dropped');

my $size = 1024 * 1024 * 1024;
my $download = main::in_child('download', sub {
    my ($code, $sha, $got) = HopGate::Fixture::curl_sha("/bytes/$size",
        '-H', 'Host: app.test', '--max-time', '50');
    return "$code $got $sha " . time;
});

# small requests all along, before, during and after the switch
my $requests = main::in_child('requests', sub {
    my @codes;
    my $t0 = time;
    while (time - $t0 < 8) {
        my ($code) = HopGate::Fixture::http_get('/hello');
        push @codes, sprintf '%s@%.3f', $code, time;
        sleep 0.02;
    }
    return "@codes";
});

sleep 1.5;
Test::More::ok(HopGate::Relay::block($relay, 0), 'UDP passes again');
my $unblocked = time;

my $codes = main::child_result($requests, 30);
my @answers = map { [split /@/] } split ' ', $codes;
Test::More::is(scalar(grep { $_->[0] ne '200' } @answers), 0,
               scalar(@answers) . ' requests before, during and after the '
               . 'switch, all answered 200')
    or Test::More::diag("codes: $codes");

my ($code, $got, $sha, $ended) = split ' ',
                                        main::child_result($download, 60);
Test::More::is($code, 200, '1 GiB download: 200');
Test::More::is($got, $size, '1 GiB download: every byte');
Test::More::is($sha, HopGate::Fixture::pattern_sha256($size),
               '1 GiB download: the hash matches');

my $back = main::log_time($agent, qr/UDP to \S+ answers again: moving back to UDP/);
my $udp = main::log_time($agent, qr/connected to .* over udp/);
my $drain = main::log_time($agent, qr/every worker is covered over udp: draining 1 tcp session/);
Test::More::ok(defined $back && defined $udp && defined $drain,
               'the agent says it moves back, connects over UDP and drains '
               . 'TCP');
Test::More::ok(defined $udp && $udp - $unblocked < 3.5,
               sprintf 'UDP serves %.2f s after it passed again (probes '
                       . 'every 2 s, jittered)', ($udp // 0) - $unblocked);
# answered while UDP came up and TCP drained, a second either side
my @during = grep { $_->[1] > $unblocked - 1 && $_->[1] < ($drain // 0) + 1 }
             @answers;
Test::More::cmp_ok(scalar @during, '>=', 3,
                   scalar(@during) . ' of them around the switch');
Test::More::ok(defined $drain && $ended > $drain + 1,
               sprintf 'the download was still on the TCP session when it '
                       . 'drained (it ended %.1f s later)',
               $ended - ($drain // 0));
Test::More::diag(sprintf 'switch-over: UDP unblocked -> UDP session up '
                 . '%.2f s, -> TCP drained %.2f s', ($udp // 0) - $unblocked,
                 ($drain // 0) - $unblocked);

# the drained TCP session ends with its last stream
my $deadline = time + 5;
my $m = '';
while (time < $deadline) {
    (undef, $m) = HopGate::Fixture::curl("http://127.0.0.1:$mport/metrics");
    last if ($m // '') =~ /^hopgate_agent_transport_sessions\{transport="tcp"\} 0$/m;
    sleep 0.1;
}
Test::More::like($m, qr/^hopgate_agent_transport_sessions\{transport="tcp"\} 0$/m,
                 'the TCP session is gone once its download ended');
Test::More::like($m, qr/^hopgate_agent_transport_sessions\{transport="udp"\} 1$/m,
                 'the UDP one serves');
Test::More::like($m, qr/^hopgate_agent_transport_switches_total 2$/m,
                 'two switches: to TCP and back');
my ($c) = HopGate::Fixture::http_get('/hello');
Test::More::is($c, '200', 'requests go on over UDP');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- timeout: 10
--- no_error_log
[alert]
[crit]
