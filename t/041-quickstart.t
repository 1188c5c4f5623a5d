# The README's Quick Start, run as written. Every fenced block after a
# "<!-- quickstart: ROLE -->" marker is taken from README.md and run in
# order against a private prefix, with these substitutions and nothing
# else (each one must apply, or the test fails: the README changed):
#
#   /etc/, /var/log/, /run/    -> under a temporary root ($ROOT/etc/...)
#   listen 443                 -> listen 127.0.0.1:$P     (a free port)
#   hopgate_listen 0.0.0.0:4443 -> 127.0.0.1:$HP           (a free port)
#   nginx                      -> /usr/sbin/nginx with $ROOT/etc/nginx/nginx.conf,
#                                 a stand-in for Debian's stock one that
#                                 includes modules-enabled/ (the module
#                                 as built) and conf.d/
#   systemctl reload nginx     -> starts (or reloads) that nginx
#   systemctl enable --now hopgate-agent@NAME
#                              -> runs dist/hopgate-agent@.service as
#                                 systemd would (HopGate::Unit) and waits
#                                 for READY=1, as systemctl does
#   the agent's server and to  -> HOP_CLIENT_SERVER_ADDR=127.0.0.1:$HP,
#                                 HOP_CLIENT_SERVER_NAME=edge.example.com,
#                                 HOP_CLIENT_LOCAL_TARGET (the local app):
#                                 variables beat the config file, which
#                                 stays as written
#   curl https://app.example.com/ -> a .curlrc (CURL_HOME) with
#                                 connect-to app.example.com:443 -> $P
#   hopgate-agent              -> the agent as built, on PATH
#
# Then the configuration is held to what the Quick Start promises: the
# app sees X-Forwarded-Proto https and the visitor's address, a 50 MB
# upload passes (client_max_body_size), a websocket upgrades, and the
# --pin recipe prints a pin the agent accepts. The README's nginx and
# agent configuration are the files shipped in examples/.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use IO::Socket::SSL;
use Time::HiRes qw(sleep time);
use HopGate::Fixture;
use HopGate::Unit;

my $top = "$FindBin::Bin/..";
my $nginx_bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $module = $ENV{TEST_NGINX_LOAD_MODULES}
    || "$top/build/modules/ngx_http_hopgate_module.so";
my $agent_bin = HopGate::Fixture::agent_binary();

local $SIG{ALRM} = sub { die "timed out\n" };
alarm 120;

sub slurp { open my $fh, '<', $_[0] or die "$_[0]: $!"; local $/; scalar <$fh> }
sub spew { open my $fh, '>', $_[0] or die "$_[0]: $!"; print $fh $_[1]; close $fh }

# --- the blocks -------------------------------------------------------------------

my @blocks;
{
    my @lines = split /\n/, slurp("$top/README.md");
    for (my $i = 0; $i < @lines; $i++) {
        my ($role, $arg) = $lines[$i] =~ /^<!-- quickstart: (\S+)(?: (\S+))? -->$/
            or next;
        $i++ while $i + 1 < @lines && $lines[$i + 1] eq '';
        $lines[++$i] =~ /^```(\w*)$/ or die "no fence after the $role marker\n";
        my @body;
        push @body, $lines[$i] while $lines[++$i] ne '```';
        push @blocks, { role => $role, arg => $arg, text => join("\n", @body) . "\n" };
    }
}
my %by = map { ($_->{role} => $_) } @blocks;
is(join(' ', map { $_->{role} } @blocks),
   'edge file edge-reload agent check pin',
   'the README marks the Quick Start blocks');

is($by{file}{text}, slurp("$top/examples/hopgate.conf"),
   'its nginx configuration is examples/hopgate.conf, as the package ships it');
my ($agent_conf) = $by{agent}{text} =~ /<<'EOF'\n(.*?)^EOF$/ms;
(my $shipped = slurp("$top/examples/agent-app.conf")) =~ s/^#.*\n//mg;
is($agent_conf, $shipped, 'its agent configuration is examples/agent-app.conf');

# --- the private machine ----------------------------------------------------------

my $root = tempdir('hopgate-qs-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $root;
make_path(map { "$root/$_" } qw(etc/nginx/conf.d etc/nginx/modules-enabled
                                 var/log/nginx run lib/nginx home bin curl));
chmod 0755, "$root/etc";
my $P = HopGate::Fixture::free_port();
my $HP = HopGate::Fixture::free_port();
my $app = HopGate::Fixture::start_app();

symlink $agent_bin, "$root/bin/hopgate-agent" or die $!;
spew("$root/etc/nginx/modules-enabled/50-mod-http-hopgate.conf",
     "load_module $module;\n");
spew("$root/etc/nginx/nginx.conf", <<"EOF");
# as Debian's stock nginx.conf, under $root
worker_processes 2;
pid $root/run/nginx.pid;
error_log $root/var/log/nginx/error.log;
include $root/etc/nginx/modules-enabled/*.conf;
events { worker_connections 768; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log $root/var/log/nginx/access.log;
    client_body_temp_path $root/lib/nginx/body;
    proxy_temp_path $root/lib/nginx/proxy;
    include $root/etc/nginx/conf.d/*.conf;
}
EOF
spew("$root/curl/.curlrc", "connect-to = \"app.example.com:443:127.0.0.1:$P\"\n"
     . "max-time = 30\n");

my $unit = "$root/hopgate-agent\@.service";
(my $bindir = $agent_bin) =~ s{/[^/]+$}{};
(my $unit_text = slurp("$top/dist/hopgate-agent\@.service.in")) =~ s/\@BINDIR\@/$bindir/g;
spew($unit, $unit_text);

sub paths {
    my ($text) = @_;
    $text =~ s{(?<![\w.])/(etc|var/log|run)/}{$root/$1/}g;
    return $text;
}

# each substitution must find its text
sub subst {
    my ($text, $re, $to, $what) = @_;
    $text =~ s/$re/$to/g or BAIL_OUT("the Quick Start has no $what any more");
    return $text;
}

my $shell_prelude = <<"EOF";
set -euo pipefail
export PATH='$root/bin':\$PATH
nginx() { '$nginx_bin' -p '$root/etc/nginx/' -c '$root/etc/nginx/nginx.conf' "\$@"; }
systemctl() { printf '%s\\n' "\$*" >> '$root/systemctl'; }
EOF

my (@units, $nginx_up);
END {
    HopGate::Unit::stop($_) for @units;
    system("'$nginx_bin' -p '$root/etc/nginx/' -c '$root/etc/nginx/nginx.conf' "
           . "-s stop 2>/dev/null") if $nginx_up;
}

my %agent_env = (HOP_CLIENT_SERVER_ADDR => "127.0.0.1:$HP",
                 HOP_CLIENT_SERVER_NAME => 'edge.example.com',
                 HOP_CLIENT_LOCAL_TARGET => "127.0.0.1:$app");

sub systemctl {
    my ($cmd) = @_;
    if ($cmd eq 'reload nginx') {
        my $verb = $nginx_up ? '-s reload' : '';
        my $out = `'$nginx_bin' -p '$root/etc/nginx/' -c '$root/etc/nginx/nginx.conf' $verb 2>&1`;
        is($?, 0, "systemctl $cmd") or diag($out);
        $nginx_up = 1;
        for (1 .. 100) {
            last if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$P");
            sleep 0.05;
        }
    } elsif ($cmd =~ /^enable --now (hopgate-agent)@(\S+)$/) {
        my $u = HopGate::Unit::start(unit => $unit, instance => $2,
                                     path => \&paths, env => \%agent_env);
        push @units, $u;
        my @n = HopGate::Unit::notify_until($u, qr/^READY=1$/m, 15);
        ok((grep { /^READY=1$/m } @n), "systemctl $cmd: ready")
            or diag(HopGate::Unit::journal($u));
    } else {
        fail("systemctl $cmd is not emulated");
    }
}

sub run_block {
    my ($b, %o) = @_;
    my $script = "$root/block-$b->{role}.sh";
    spew($script, $shell_prelude . paths($b->{text}));
    unlink "$root/systemctl";
    my $out = `cd '$root/home' && CURL_HOME='$root/curl' bash '$script' 2>'$script.err'`;
    is($?, 0, "the $b->{role} block runs")
        or diag("$b->{text}\n$out" . slurp("$script.err"));
    if (-f "$root/systemctl") {
        systemctl($_) for split /\n/, slurp("$root/systemctl");
    }
    return $out;
}

# --- run them ----------------------------------------------------------------------

run_block($by{edge});
like(slurp("$root/etc/nginx/hopgate/registry"), qr/^app\.example\.com [0-9a-f]{64}\n\z/,
     'the registry has the line keygen printed');
is((stat "$root/home/app.key")[2] & 07777, 0600, 'and app.key is mode 0600');

my $conf = paths($by{file}{text});
$conf = subst($conf, qr/\blisten 443 /, "listen 127.0.0.1:$P ", 'listen 443');
$conf = subst($conf, qr/hopgate_listen 0\.0\.0\.0:4443 /,
              "hopgate_listen 127.0.0.1:$HP ", 'hopgate_listen 0.0.0.0:4443');
spew(paths($by{file}{arg}), $conf);

run_block($by{'edge-reload'});
ok($nginx_up, 'nginx runs the Quick Start configuration');

run_block($by{agent});

my $out = run_block($by{check});
is($out, "hello from the local app\n", 'the check: the page comes from the local app');

# --- what the configuration promises --------------------------------------------------

my $curl = "CURL_HOME='$root/curl' curl -sk";
my $head = `$curl -H 'X-Forwarded-For: 198.51.100.7' https://app.example.com/headers`;
like($head, qr/^X-Forwarded-Proto: https\r?\n/mi, 'the app sees X-Forwarded-Proto https');
like($head, qr/^X-Forwarded-For: 198\.51\.100\.7, 127\.0\.0\.1\r?\n/mi,
     'and the visitor\'s address');
my $size = 50 * 1024 * 1024;
my $sha = `head -c $size /dev/zero | sha256sum | cut -d' ' -f1`;
chomp $sha;
is(`head -c $size /dev/zero | $curl --data-binary \@- https://app.example.com/upload`,
   "$size $sha\n", 'a 50 MB upload passes (client_max_body_size)');

my $ws = IO::Socket::SSL->new(PeerAddr => "127.0.0.1:$P", SSL_hostname => 'app.example.com',
                              SSL_verify_mode => SSL_VERIFY_NONE, Timeout => 10)
    or die "TLS: $SSL_ERROR";
print $ws "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\n"
    . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    . "Sec-WebSocket-Version: 13\r\n\r\n";
my $status = <$ws> // '';
like($status, qr{^HTTP/1\.1 101 }, 'a websocket upgrades through the tunnel');
close $ws;

my $pin = run_block($by{pin});
like($pin, qr/^[0-9a-f]{64}\n\z/, 'the --pin recipe prints 64 hex digits alone');
chomp $pin;
my $log = "$root/pin-agent.log";
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open STDOUT, '>', $log;
    open STDERR, '>&', \*STDOUT;
    exec $agent_bin, '--server', "127.0.0.1:$HP", '--server-name',
         'edge.example.com', '--domain', 'app.example.com', '--key-file',
         "$root/home/app.key", '--to', $app, '--pin', $pin;
    exit 127;
}
my $deadline = time + 10;
sleep 0.05 until time > $deadline
                 || (-f $log && slurp($log) =~ /connected to worker/);
like(slurp($log), qr/connected to worker/, 'and the agent connects with that pin');
kill 'TERM', $pid;
waitpid $pid, 0;

done_testing();
