# hopgate-agent's command line: flags, HOP_CLIENT_* variables and the
# config file, their precedence, usage errors (exit 2), rejection by the
# edge (exit 3), signals, and how the edge's certificate is trusted.
# The first part needs no edge; the blocks below run nginx with the module.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use Test::More import => ['subtest'];
use HopGate::Fixture;
use POSIX qw(:sys_wait_h);
use Time::HiRes ();

hopgate_init();
no_shuffle();
no_root_location();

my $dir = hopgate_dir();

# the README's table of flags and their variables: --help must agree
my (@flags, %env_of);
{
    open my $fh, '<', "$FindBin::Bin/../README.md" or die "README.md: $!";
    while (<$fh>) {
        next unless /^\| `--([a-z-]+)[^`]*` \| `(HOP_CLIENT_\w+)`/;
        push @flags, $1;
        $env_of{$1} = $2;
    }
}

# a complete, valid command line but for what a test changes
my @valid = ('--server', '127.0.0.1:9', '--domain', 'app.test',
             '--key', test_key('cli'), '--to', '127.0.0.1:9', '--insecure');


my $cli_runs = 0;

# Runs the agent to completion with only the given HOP_CLIENT_* variables:
# {code, out, err, secs}; code is undef if it did not exit within 5 s.
sub run_cli {
    my ($env, @args) = @_;
    my $n = ++$cli_runs;
    my ($out, $err) = ("$dir/cli-$n.out", "$dir/cli-$n.err");
    my $t0 = Time::HiRes::time();
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        delete $ENV{$_} for grep { /^HOP_CLIENT_/ } keys %ENV;
        %ENV = (%ENV, %$env);
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec agent_binary(), @args or exit 127;
    }
    my $code;
    my $deadline = $t0 + 5;
    while (Time::HiRes::time() < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $code = $? >> 8;
            last;
        }
        Time::HiRes::sleep(0.02);
    }
    if (!defined $code) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    return { code => $code, out => slurp($out), err => slurp($err),
             secs => Time::HiRes::time() - $t0 };
}


sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return scalar <$fh> // '';
}


sub write_file {
    my ($file, $text) = @_;
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    return $file;
}


# Starts the agent in the background with exactly these flags and
# HOP_CLIENT_* variables (start_agent always adds its own flags). Returns
# an agent that HopGate::Fixture's agent_* and stop_agent accept.
my @bare_agents;
my $bare_seq = 0;

sub start_bare_agent {
    my (%o) = @_;
    my $n = ++$bare_seq;
    my $log = "$dir/bare-agent-$n.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        delete $ENV{$_} for grep { /^HOP_CLIENT_/ } keys %ENV;
        %ENV = (%ENV, %{ $o{env} || {} });
        open STDOUT, '>>', $log;
        open STDERR, '>>', $log;
        exec agent_binary(), @{ $o{args} || [] } or exit 127;
    }
    my $agent = { pid => $pid, log => $log, n => "bare-$n" };
    push @bare_agents, $agent;
    $HopGate::Fixture::last = $agent;
    return $agent;
}


sub stop_bare_agents {
    for my $agent (@bare_agents) {
        stop_agent($agent, 'KILL', 2) if agent_running($agent);
    }
    @bare_agents = ();
}


# each block starts without agents: a previous block's would dial its nginx
sub stop_all_agents {
    stop_agents();
    stop_bare_agents();
}


# waits for the agent to exit: (exit code or undef, seconds waited)
sub wait_exit {
    my ($agent, $timeout) = @_;
    my $t0 = Time::HiRes::time();
    while (Time::HiRes::time() < $t0 + $timeout) {
        last unless agent_running($agent);
        Time::HiRes::sleep(0.02);
    }
    return ($agent->{status}, Time::HiRes::time() - $t0);
}


# the SHA-256 of a certificate's public key (the edge's by default), by
# the openssl CLI
sub edge_pin {
    my ($format, $cert) = @_;
    $cert //= "$dir/edge.pem";
    my $der = "openssl x509 -in $cert -pubkey -noout"
            . " | openssl pkey -pubin -outform der";
    my $pin = $format eq 'base64'
            ? `$der | openssl dgst -sha256 -binary | base64`
            : (split ' ', `$der | sha256sum`)[0];
    chomp $pin;
    return $pin;
}


sub agent_env {
    return (
        HOP_CLIENT_SERVER_ADDR => "127.0.0.1:" . edge_port(),
        HOP_CLIENT_DOMAIN => 'app.test',
        HOP_CLIENT_API_KEY => hopgate_key(),
        HOP_CLIENT_LOCAL_TARGET => "127.0.0.1:" . app_port(),
        HOP_CLIENT_CA => "$dir/edge.pem",
        HOP_CLIENT_LOG_LEVEL => 'debug',
        @_,
    );
}


END { stop_bare_agents() }


# ---- without an edge ---------------------------------------------------

subtest '--help lists every flag of the README with its variable' => sub {
    my $r = run_cli({}, '--help');
    is $r->{code}, 0, 'exit code 0';
    cmp_ok scalar @flags, '>=', 10, 'the README lists the flags';
    for my $flag (@flags) {
        like $r->{out}, qr/^\s+--\Q$flag\E\b.*\n\s+\[\Q$env_of{$flag}\E\]/m,
            "--$flag with $env_of{$flag}";
    }
    my @listed = grep { $_ ne 'help' && $_ ne 'version' }
                 $r->{out} =~ /^\s+(?:-\w, )?--([a-z-]+)/mg;
    is_deeply [sort @listed], [sort @flags], 'and no flag the README lacks';
    like $r->{out}, qr/exit codes: 0 .* 1 .* 2 .* 3 /, 'the exit codes';
    is $r->{err}, '', 'nothing on stderr';
};

subtest '--version prints the version and exits 0' => sub {
    my $r = run_cli({}, '--version');
    is $r->{code}, 0, 'exit code 0';
    like $r->{out}, qr/^hopgate-agent \d+\.\d+\.\d+\S*\n\z/, 'one line';
};

# a usage error: exit 2 and one line on stderr, which matches $re
sub usage_error {
    my ($name, $env, $args, $re) = @_;
    subtest $name => sub {
        my $r = run_cli($env, @$args);
        is $r->{code}, 2, 'exit code 2';
        like $r->{err}, qr/\A[^\n]+\n\z/, 'one line on stderr';
        like $r->{err}, $re, 'the line says what is wrong';
        cmp_ok $r->{secs}, '<', 2, 'at once';
    };
}

usage_error('an unknown flag is named', {}, [@valid, '--bogus', 'x'],
            qr/unknown flag "--bogus"/);
usage_error('a missing --domain is named', {},
            [grep { $_ ne '--domain' && $_ ne 'app.test' } @valid],
            qr/missing --domain.*HOP_CLIENT_DOMAIN/);
usage_error('--mtu out of range', {}, [@valid, '--mtu', '99'],
            qr/--mtu must be 1200\.\.1452, not "99"/);
usage_error('--server without a port', {}, [@valid, '--server', 'edge'],
            qr/--server wants HOST:PORT, not "edge"/);
usage_error('--to with a port out of range', {},
            [@valid, '--to', '127.0.0.1:70000'],
            qr/--to wants HOST:PORT or PORT, not "127.0.0.1:70000"/);
usage_error('--insecure contradicts --ca', {},
            [@valid, '--ca', "$dir/edge.pem"], qr/--insecure.*--ca/);
usage_error('a bad value in HOP_CLIENT_MTU names the variable',
            { HOP_CLIENT_MTU => 'big' }, [@valid],
            qr/HOP_CLIENT_MTU.*"big"/);
usage_error('a flag without its value', {}, [@valid, '--mtu'],
            qr/--mtu needs a value/);

write_file("$dir/unknown-key.conf", "# settings\ndomain = app.test\n"
           . "colour = blue\n");
usage_error('an unknown key in the config file is named with file:line',
            {}, [@valid, '--config', "$dir/unknown-key.conf"],
            qr/\Q$dir\E\/unknown-key\.conf:3: unknown setting "colour"/);

usage_error('a missing config file is named', {},
            [@valid, '--config', "$dir/no-such.conf"],
            qr/no-such\.conf/);

subtest 'HOP_CLIENT_DEBUG=1 turns on debug lines' => sub {
    my $agent = start_bare_agent(env => { HOP_CLIENT_DEBUG => 1 },
                                 args => [@valid]);
    ok agent_wait($agent, qr/ debug dialling/, 1, 3), 'a debug line';
    stop_bare_agents();
};

usage_error('a malformed --pin is bad usage', {},
            [grep { $_ ne '--insecure' } @valid, '--pin', 'xyz'],
            qr/--pin wants the SHA-256/);

subtest '--help: every line under options belongs to a flag' => sub {
    my $r = run_cli({}, '--help');
    my ($options) = $r->{out} =~ /^options[^\n]*\n(.*?)\n\n/ms;
    my @lines = split /\n/, $options // '';
    cmp_ok scalar @lines, '>=', 20, 'the options are listed';
    my $last = '';
    for my $line (@lines) {
        my $kind = $line =~ /^  (?:-\w, )?--[a-z]/ ? 'flag'
                 : $line =~ /^\s{10,}\[HOP_CLIENT_\w+\]/ ? 'variable'
                 : 'other';
        ok $kind eq 'flag' || ($kind eq 'variable' && $last eq 'flag'),
           "\"$line\" is a flag or its variable";
        $last = $kind;
    }
    like $r->{out}, qr/--log-level .*\n\s+\[HOP_CLIENT_LOG_LEVEL\].*HOP_CLIENT_DEBUG=1/,
        'HOP_CLIENT_DEBUG is told with --log-level';
};


# ---- the key ---------------------------------------------------------------

# @valid without the flag $flag and its value
sub without {
    my ($flag, @args) = @_;
    my @out;
    while (@args) {
        my $a = shift @args;
        if ($a eq $flag) { shift @args; next }
        push @out, $a;
    }
    return @out;
}

my $good_key = test_key('cli');

usage_error('a key longer than 255 characters is refused, not truncated', {},
            [without('--key', @valid), '--key', 'hg_' . ('a' x 300)],
            qr/--key is 303 characters long; a key has at most 255/);
usage_error('a key that is not hg_ and 64 hex digits is refused', {},
            [without('--key', @valid), '--key', 'hg_' . ('g' x 64)],
            qr/--key is not a client key: expected hg_ and 64 hex digits/);
usage_error('a short key in HOP_CLIENT_API_KEY names the variable',
            { HOP_CLIENT_API_KEY => 'secret' }, [without('--key', @valid)],
            qr/HOP_CLIENT_API_KEY is not a client key/);

subtest 'a refused key is not repeated in the message' => sub {
    my $secret = 'hg_' . ('5' x 63) . 'z';
    my $r = run_cli({}, without('--key', @valid), '--key', $secret);
    is $r->{code}, 2, 'exit code 2';
    unlike $r->{err}, qr/\Q$secret\E|5555/, 'the key is not shown';
};

my $key_file = write_file("$dir/cli.key", "$good_key\n");
chmod 0600, $key_file;

usage_error('--key-file: a missing file is named', {},
            [without('--key', @valid), '--key-file', "$dir/none.key"],
            qr/--key-file: cannot open "\Q$dir\E\/none\.key": No such file/);
usage_error('--key-file: an empty file is refused', {},
            [without('--key', @valid), '--key-file',
             write_file("$dir/empty.key", "\n")],
            qr/--key-file: "\Q$dir\E\/empty\.key" is empty/);
usage_error('--key-file: a file with more than a key is refused', {},
            [without('--key', @valid), '--key-file',
             write_file("$dir/two.key", "$good_key\n$good_key\n")],
            qr/the key in "\Q$dir\E\/two\.key" \(--key-file\) is not a client key/);
usage_error('--key-file: a 1000-character key is refused', {},
            [without('--key', @valid), '--key-file',
             write_file("$dir/long.key", 'hg_' . ('a' x 997) . "\n")],
            qr/is 1000 characters long; a key has at most 255/);
usage_error('--key and --key-file together contradict each other', {},
            [@valid, '--key-file', $key_file],
            qr/--key-file: the key is also given directly; set only one/);
usage_error('so do HOP_CLIENT_API_KEY and HOP_CLIENT_KEY_FILE',
            { HOP_CLIENT_API_KEY => $good_key,
              HOP_CLIENT_KEY_FILE => $key_file },
            [without('--key', @valid)],
            qr/HOP_CLIENT_\w+: the key is also given/);

# a running agent says which key it sends in its debug line
sub runs_with {
    my ($name, %o) = @_;
    subtest $name => sub {
        my $agent = start_bare_agent(%o);
        ok agent_wait($agent, qr/ debug dialling/, 1, 3), 'the agent runs';
        my $log = agent_log($agent);
        like $log, $o{want}, 'as configured' if $o{want};
        unlike $log, $o{not}, 'and not otherwise' if $o{not};
        stop_bare_agents();
    };
}

runs_with('a --key-file with a trailing newline is accepted',
          args => [without('--key', @valid), '--key-file', $key_file,
                   '--log-level', 'debug'],
          not => qr/ warn .*key file/);
runs_with('a --key-file others can read gets a warning',
          args => [without('--key', @valid), '--key-file',
                   do { my $f = write_file("$dir/open.key", "$good_key\r\n");
                        chmod 0644, $f; $f },
                   '--log-level', 'debug'],
          want => qr/ warn the key file "\Q$dir\E\/open\.key" is readable by group or others \(mode 0644\): chmod 600 it/);
runs_with('--to PORT means 127.0.0.1:PORT',
          args => [without('--to', @valid), '--to', '3000',
                   '--log-level', 'debug'],
          want => qr/serving app\.test from 127\.0\.0\.1:3000 via/);


# ---- with an edge ------------------------------------------------------

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('init', "main::stop_all_agents();\n"
                                . ($block->init // ""));
    $block->set_value('http_config', '$TEST_NGINX_HOPGATE_HTTP')
        unless defined $block->http_config;
    $block->set_value('config', <<'CONF') unless defined $block->config;
    location / {
        hopgate_route app.test;
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
CONF
});

run_tests();

__DATA__

=== TEST 1: HOP_CLIENT_* variables alone are enough to run
--- init
my $agent = main::start_bare_agent(env => { main::agent_env() });
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 2: a flag beats the environment and the config file
--- init
my $conf = main::write_file("$ENV{TEST_NGINX_HOPGATE_DIR}/flag.conf",
                            "domain = file.test\n");
my $agent = main::start_bare_agent(
    env => { main::agent_env(HOP_CLIENT_DOMAIN => 'env.test') },
    args => ['--config', $conf, '--domain', 'app.test']);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app
--- error_log
connected for "app.test"
--- no_error_log
env.test
file.test



=== TEST 3: the environment beats the config file, which fills the rest
--- init
my $key = HopGate::Fixture::hopgate_key();
my $conf = main::write_file("$ENV{TEST_NGINX_HOPGATE_DIR}/env.conf",
                            "domain = file.test\nkey = \"$key\"\n");
my %env = main::agent_env(HOP_CLIENT_DOMAIN => 'app.test',
                          HOP_CLIENT_CONFIG => $conf);
delete $env{HOP_CLIENT_API_KEY};
my $agent = main::start_bare_agent(env => \%env);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects with the key from the file');
--- request
GET /hello
--- response_body
hello from the local app
--- error_log
connected for "app.test"
--- no_error_log
file.test



=== TEST 4: the config file is used when nothing else sets a value
--- init
my $conf = main::write_file("$ENV{TEST_NGINX_HOPGATE_DIR}/file.conf",
                            "domain = other.test\n");
my %env = main::agent_env(HOP_CLIENT_CONFIG => $conf);
delete $env{HOP_CLIENT_DOMAIN};
my $agent = main::start_bare_agent(env => \%env);
my ($code) = main::wait_exit($agent, 5);
Test::More::is($code, 3, 'the file\'s domain was sent (and its key is '
                         . 'not ours)');
--- request
GET /hello
--- error_code: 502
--- response_body_like chomp
tunnel offline
--- error_log
refused for "other.test": the key does not match the domain



=== TEST 5: a wrong key: exit 3 within 5 s, the reason logged, no retry
--- init
my $agent = HopGate::Fixture::start_agent(
    key => HopGate::Fixture::test_key('wrong'));
my ($code, $secs) = main::wait_exit($agent, 5);
Test::More::is($code, 3, 'exit code 3');
Test::More::cmp_ok($secs, '<', 5, 'promptly');
my $log = HopGate::Fixture::agent_log($agent);
Test::More::like($log, qr/rejected by 127\.0\.0\.1:\d+: .+ \(bad key\)/,
                 'the log says it was rejected, and why');
my @dials = $log =~ /dialling/g;
Test::More::is(scalar @dials, 1, 'dialled once');
Test::More::unlike($log, qr/reconnecting/, 'no retry');
--- request
GET /hello
--- error_code: 502
--- grep_error_log eval
qr/refused for "app.test": [^,\n]+/
--- grep_error_log_out
refused for "app.test": the key does not match the domain



=== TEST 6: an unregistered domain: exit 3
--- init
my $agent = HopGate::Fixture::start_agent(domain => 'nobody.test');
my ($code) = main::wait_exit($agent, 5);
Test::More::is($code, 3, 'exit code 3');
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/rejected by .+ \(unknown domain\)/,
                 'the log says the domain is unknown');
--- request
GET /hello
--- more_headers
Host: nobody.test
--- error_code: 502
--- error_log
refused for "nobody.test": domain is not registered



=== TEST 7: SIGTERM: exit 0, "stopped" in the log
--- init
my $agent = HopGate::Fixture::start_agent();
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
Test::More::is(HopGate::Fixture::stop_agent($agent, 'TERM', 5), 0,
               'exit code 0');
Test::More::like(HopGate::Fixture::agent_log($agent), qr/ stopped$/m,
                 '"stopped" in the log');
--- request
GET /hello
--- error_code: 502
--- response_body_like chomp
tunnel offline



=== TEST 8: SIGHUP re-reads the config file; new requests go to the new target
--- init
my $d = $ENV{TEST_NGINX_HOPGATE_DIR};
my $conf = main::write_file("$d/hup.conf",
                            "to = 127.0.0.1:$ENV{TEST_NGINX_APP_PORT}\n");
my %env = main::agent_env();
delete $env{HOP_CLIENT_LOCAL_TARGET};
my $agent = main::start_bare_agent(env => \%env,
                                   args => ['--config', $conf]);
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
my ($status) = HopGate::Fixture::http_get('/hello');
Test::More::is($status, 200, 'served from the first target');

my $closed = HopGate::Fixture::free_port();
main::write_file($conf, "to = 127.0.0.1:$closed\n");
kill 'HUP', $agent->{pid};
Test::More::ok(HopGate::Fixture::agent_wait($agent,
                                            qr/new streams go to .*:$closed/),
               'the agent takes the new target');
--- request
GET /hello
--- error_code: 502
--- response_body_like chomp
local service unavailable



=== TEST 9: SIGHUP with a broken config file keeps the running settings
--- init
my $conf = main::write_file("$ENV{TEST_NGINX_HOPGATE_DIR}/broken.conf",
                            "to = 127.0.0.1:$ENV{TEST_NGINX_APP_PORT}\n");
my %env = main::agent_env();
delete $env{HOP_CLIENT_LOCAL_TARGET};
my $agent = main::start_bare_agent(env => \%env,
                                   args => ['--config', $conf]);
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
main::write_file($conf, "to = 127.0.0.1:1\ncolour = blue\n");
kill 'HUP', $agent->{pid};
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/configuration not reloaded: .*broken\.conf:2: unknown setting/),
    'the agent says why it did not reload');
Test::More::ok(HopGate::Fixture::agent_running($agent), 'and keeps running');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 10: a pin of the edge's public key (hex, by openssl) is trusted without a CA
--- init
my %env = main::agent_env(HOP_CLIENT_PIN => main::edge_pin('hex'));
delete $env{HOP_CLIENT_CA};
my $agent = main::start_bare_agent(env => \%env);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 11: a pin in base64 works too
--- init
my %env = main::agent_env();
delete $env{HOP_CLIENT_CA};
my $agent = main::start_bare_agent(env => \%env,
                                   args => ['--pin', main::edge_pin('base64')]);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 12: a wrong pin: the agent says why, and retries with backoff
--- init
my %env = main::agent_env(
    HOP_CLIENT_PIN => main::edge_pin('hex',
                          "$ENV{TEST_NGINX_HOPGATE_DIR}/other.pem"));
delete $env{HOP_CLIENT_CA};
my $agent = main::start_bare_agent(env => \%env);
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/server public key does not match the pinned SHA-256/),
    'the log says the key does not match the pin');
Time::HiRes::sleep(3);
my $log = HopGate::Fixture::agent_log($agent);
my $dials = () = $log =~ /dialling/g;
Test::More::cmp_ok($dials, '>=', 2, "it tries again ($dials dials in 3 s)");
Test::More::cmp_ok($dials, '<=', 8, 'backing off');
Test::More::unlike($log, qr/connected to/, 'it never connects');
Test::More::ok(HopGate::Fixture::agent_running($agent), 'it keeps running');
--- request
GET /hello
--- error_code: 502



=== TEST 13: a certificate the --ca does not vouch for is refused
--- init
my $agent = main::start_bare_agent(env => { main::agent_env(
    HOP_CLIENT_CA => "$ENV{TEST_NGINX_HOPGATE_DIR}/other.pem") });
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/certificate verify failed/),
    'the log says the certificate did not verify');
Test::More::unlike(HopGate::Fixture::agent_log($agent), qr/connected to/,
                   'it does not connect');
--- request
GET /hello
--- error_code: 502



=== TEST 14: a wrong pin is reported at --log-level warn
--- init
my %env = main::agent_env(
    HOP_CLIENT_PIN => ('ab' x 32), HOP_CLIENT_LOG_LEVEL => 'warn');
delete $env{HOP_CLIENT_CA};
my $agent = main::start_bare_agent(env => \%env);
Test::More::ok(HopGate::Fixture::agent_wait($agent,
    qr/does not match the pinned SHA-256/, 1, 2),
    'the reason is a warning or an error');
--- request
GET /hello
--- error_code: 502



=== TEST 15: --key-file (a line with its newline) opens the tunnel; it beats HOP_CLIENT_API_KEY
--- init
my $d = $ENV{TEST_NGINX_HOPGATE_DIR};
my $file = main::write_file("$d/agent.key",
                            HopGate::Fixture::hopgate_key() . "\n");
chmod 0600, $file;
my $agent = main::start_bare_agent(
    env => { main::agent_env(
        HOP_CLIENT_API_KEY => HopGate::Fixture::test_key('wrong')) },
    args => ['--key-file', $file]);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects with the key from the file');
Test::More::unlike(HopGate::Fixture::agent_log($agent), qr/key file/,
                   'no warning about a private key file');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 16: HOP_CLIENT_KEY_FILE and key-file in the config file work too
--- init
my $d = $ENV{TEST_NGINX_HOPGATE_DIR};
my $file = main::write_file("$d/conf.key",
                            HopGate::Fixture::hopgate_key() . "\n");
chmod 0600, $file;
my $conf = main::write_file("$d/keyfile.conf", "key-file = $file\n");
my %env = main::agent_env();
delete $env{HOP_CLIENT_API_KEY};
my $agent = main::start_bare_agent(env => { %env, HOP_CLIENT_CONFIG => $conf });
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'key-file in the config file');
Test::More::is(HopGate::Fixture::stop_agent($agent, 'TERM', 5), 0, 'it stops');
$agent = main::start_bare_agent(env => { %env, HOP_CLIENT_KEY_FILE => $file });
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'HOP_CLIENT_KEY_FILE');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 17: --to PORT reaches the local target on 127.0.0.1
--- init
my %env = main::agent_env();
delete $env{HOP_CLIENT_LOCAL_TARGET};
my $agent = main::start_bare_agent(env => \%env,
                                   args => ['--to', $ENV{TEST_NGINX_APP_PORT}]);
Test::More::ok(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               'the agent connects');
Test::More::unlike(HopGate::Fixture::agent_log($agent),
                   qr/local target .* (refuses|cannot be reached)/,
                   'the local target answered the probe at start');
--- request
GET /hello
--- response_body
hello from the local app



=== TEST 18: SIGHUP re-reads the key file: a new key replaces the sessions
--- init
my $d = $ENV{TEST_NGINX_HOPGATE_DIR};
my $file = main::write_file("$d/hup.key",
                            HopGate::Fixture::hopgate_key() . "\n");
chmod 0600, $file;
my %env = main::agent_env(HOP_CLIENT_KEY_FILE => $file);
delete $env{HOP_CLIENT_API_KEY};
my $agent = main::start_bare_agent(env => \%env);
HopGate::Fixture::agent_wait($agent, qr/connected to/, 1);
main::write_file($file, HopGate::Fixture::test_key('rotated') . "\n");
kill 'HUP', $agent->{pid};
my ($code) = main::wait_exit($agent, 5);
Test::More::is($code, 3, 'the new key is sent, and refused: exit 3');
Test::More::like(HopGate::Fixture::agent_log($agent),
                 qr/edge, domain or key changed: replacing every session/,
                 'the sessions were replaced');
--- request
GET /hello
--- error_code: 502
