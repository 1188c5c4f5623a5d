# The file registry follows edits of its file without a reload: a domain
# added is known to the next handshake and to the next request (checked
# at most once a second), a broken edit is reported and the last good
# contents stay in force, and a domain added twice is warned about.
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use Digest::SHA ();
use Time::HiRes qw(sleep time);

hopgate_init();
no_shuffle();
no_root_location();

my $dir = HopGate::Fixture::hopgate_dir();
my $blocks = 0;
our $FILE;

# each block has a registry file of its own, app.test only at first
add_block_preprocessor(sub {
    my $block = shift;
    $FILE = "$dir/edited-" . ++$blocks . ".registry";
    open my $fh, '>', $FILE or die "$FILE: $!";
    print $fh "app.test ", Digest::SHA::sha256_hex(hopgate_key()), "\n";
    close $fh;

    $block->set_value('http_config', <<"EOF");
    hopgate_listen 127.0.0.1:\$TEST_NGINX_HOPGATE_PORT reuseport;
    hopgate_certificate \$TEST_NGINX_HOPGATE_DIR/edge.pem;
    hopgate_certificate_key \$TEST_NGINX_HOPGATE_DIR/edge.key;
    hopgate_registry file:$FILE;
    upstream tunnels { hopgate; }
EOF
    $block->set_value('config', <<'EOF');
    location / {
        hopgate_connect_timeout 300ms;
        proxy_pass http://tunnels;
    }
EOF
    $block->set_value('timeout', 20);
});


sub append {
    my ($line) = @_;
    open my $fh, '>>', $FILE or die "$FILE: $!";
    print $fh "$line\n";
    close $fh;
    # the file is looked at no more than once a second
    sleep 1.2;
}

sub error_log {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: a domain added to the file opens a tunnel at the next handshake
--- init
my $key = HopGate::Fixture::test_key('new');
my $refused = HopGate::Fixture::start_agent(domain => 'new.test',
                                            key => $key);
Test::More::is(HopGate::Fixture::agent_wait($refused,
                                            qr/domain is not registered/, 1),
               1, 'before the edit the domain is unknown');

main::append('new.test ' . Digest::SHA::sha256_hex($key));

my $agent = HopGate::Fixture::start_agent(domain => 'new.test',
                                          key => $key);
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               1, 'after it the agent connects');
Test::More::like(main::error_log(),
                 qr/registry "\S+edited-\d+\.registry" reloaded, 2 domains/,
                 'the edge says it re-read the file');
--- request
GET /hello
--- more_headers
Host: new.test
--- response_body
hello from the local app



=== TEST 2: a domain added to the file is known to the next request: it waits for its agent
--- init
my ($code) = HopGate::Fixture::http_get('/hello', 'later.test');
Test::More::is($code, 404, 'before the edit: no such tunnel');

main::append('later.test ' . Digest::SHA::sha256_hex('a later key'));
--- request
GET /hello
--- more_headers
Host: later.test
--- error_code: 502
--- response_body_like chomp
tunnel offline
--- error_log
no tunnel for "later.test" came up in time



=== TEST 3: a broken edit is reported, and the last good contents stay
--- init
main::append('other.test ' . Digest::SHA::sha256_hex('other key'));
my ($code) = HopGate::Fixture::http_get('/hello', 'other.test');
Test::More::is($code, 502, 'other.test is known: it waits, 502');

main::append('this line is not a registry line');
--- request
GET /hello
--- more_headers
Host: other.test
--- error_code: 502
--- error_log eval
qr/registry not reloaded: \S+edited-\d+\.registry:3: expected "domain sha256-hex"/



=== TEST 4: a domain added a second time is warned about, and its last line counts
--- init
my $key = HopGate::Fixture::test_key('replaced');
main::append('app.test ' . Digest::SHA::sha256_hex($key));
my $agent = HopGate::Fixture::start_agent(key => $key);
Test::More::is(HopGate::Fixture::agent_wait($agent, qr/connected to/, 1),
               1, 'the key of the last line opens the tunnel');
--- request
GET /hello
--- more_headers
Host: app.test
--- response_body
hello from the local app
--- error_log eval
qr/\[warn\] .*"hopgate_registry": \S+edited-\d+\.registry:2: "app\.test" is also on line 1; line 2 counts/
