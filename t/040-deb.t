# `make deb` builds libnginx-mod-http-hopgate and hopgate-agent; their
# contents and dependencies are what Debian's nginx needs (the nginx ABI
# from nginx-dev, libjansson among the shared libraries), and lintian has
# nothing to say at the warning level. As root, the packages then go into
# this machine's system nginx: the module is enabled in modules-enabled,
# `nginx -t` passes with the stock /etc/nginx/nginx.conf plus the site
# file the package ships in its examples, a request travels through the
# tunnel of the installed agent started from the installed unit, and after
# `apt-get remove` nginx still passes `nginx -t`. The machine is put back:
# the packages purged, /etc/nginx as it was before (compared file by file).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path remove_tree);
use File::Find;
use Digest::SHA ();
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

my $root = "$FindBin::Bin/..";
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my $debdir = "$build/deb";
my @pkgs = qw(libnginx-mod-http-hopgate hopgate-agent);

for my $tool (qw(dpkg-buildpackage dh dh_nginx help2man)) {
    plan skip_all => "$tool is not installed (scripts/install-deps)"
        unless `command -v $tool 2>/dev/null`;
}

local $SIG{ALRM} = sub { die "timed out\n" };
alarm 600;

sub slurp { open my $fh, '<', $_[0] or return undef; local $/; scalar <$fh> }

# --- build --------------------------------------------------------------------

my $out = `make -s -C '$root' BUILD='$build' deb 2>&1`;
is($?, 0, 'make deb succeeds') or diag($out);
my %deb;
for my $p (@pkgs) {
    ($deb{$p}) = glob("$debdir/${p}_*_*.deb");
    ok($deb{$p} && -f $deb{$p}, "$p is built into build/deb");
}
BAIL_OUT('no packages') unless $deb{$pkgs[0]} && $deb{$pkgs[1]};

sub contents { my %c = map { m{^\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\.(/\S*)} ? ($1 => 1) : () }
               `dpkg-deb -c '$_[0]'`; \%c }
sub field { my $v = `dpkg-deb -f '$_[0]' $_[1]`; chomp $v; $v }

my $mod = contents($deb{'libnginx-mod-http-hopgate'});
ok($mod->{$_}, "libnginx-mod-http-hopgate ships $_") for (
    '/usr/lib/nginx/modules/ngx_http_hopgate_module.so',
    '/usr/share/nginx/modules-available/mod-http-hopgate.conf',
    '/usr/share/doc/libnginx-mod-http-hopgate/examples/hopgate.conf');
my $agent = contents($deb{'hopgate-agent'});
ok($agent->{$_}, "hopgate-agent ships $_") for (
    '/usr/bin/hopgate-agent',
    '/lib/systemd/system/hopgate-agent@.service',
    '/usr/share/man/man1/hopgate-agent.1.gz',
    '/usr/share/doc/hopgate-agent/examples/agent-app.conf');

my ($abi) = (slurp('/usr/share/nginx/src/debian/libnginx-mod.abisubstvars') // '')
            =~ /^nginx:abi=(\S+)/m;
my $depends = field($deb{'libnginx-mod-http-hopgate'}, 'Depends');
like($depends, qr/(?:^|, )\Q$abi\E(?:,|$)/,
     "the module depends on the nginx ABI it was built for ($abi)");
like($depends, qr/libjansson4/, 'and on the libraries it links (libjansson4, ...)');
like(field($deb{'hopgate-agent'}, 'Depends'), qr/libprotobuf-c1.*libssl3|libssl3.*libprotobuf-c1/,
     'the agent depends on its libraries');

my $tmp = tempdir('hopgate-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('dpkg-deb', '-x', $deb{'libnginx-mod-http-hopgate'}, "$tmp/x") == 0 or die;
is(slurp("$tmp/x/usr/share/nginx/modules-available/mod-http-hopgate.conf"),
   slurp("$root/dist/mod-http-hopgate.conf"),
   'dh_nginx\'s snippet is the one make install writes');

SKIP: {
    skip 'lintian is not installed', 1 unless `command -v lintian 2>/dev/null`;
    my ($changes) = glob("$debdir/*.changes");
    my $l = `lintian --info --display-info '$changes' 2>&1`;
    $l =~ s/^running with root privileges is not recommended!\n//m;
    my @bad = grep { /^[EW]: / } split /\n/, $l;
    is(scalar @bad, 0, 'lintian: no error or warning') or diag($l);
    note("lintian: " . ($l eq '' ? '(nothing)' : $l));
}
note(sprintf "%s: %d bytes", $_, -s $deb{$_}) for @pkgs;

# --- install into the system nginx ------------------------------------------------

my $why = $> != 0 ? 'installing packages needs root'
        : `command -v apt-get 2>/dev/null` eq '' ? 'no apt-get'
        : !-f '/etc/nginx/nginx.conf' ? 'no system nginx (/etc/nginx/nginx.conf)'
        : undef;
for my $p (@pkgs) {
    last if $why;
    my $s = `dpkg-query -W -f='\${Status}' $p 2>/dev/null`;
    $why = "$p is already installed here: not touching it" if $s =~ /installed/;
}
if (!$why && open my $pf, '<', '/run/nginx.pid') {
    my $pid = <$pf> // '';
    chomp $pid;
    $why = "the system nginx runs (pid $pid): not touching it"
        if $pid =~ /^\d+$/ && kill 0, $pid;
}
if ($why) {
    SKIP: { skip "the installation: $why", 1 }
    done_testing();
    exit 0;
}

# what /etc/nginx holds: path => type, mode, content or link target
sub snapshot {
    my %s;
    find({ no_chdir => 1, wanted => sub {
        my $f = $File::Find::name;
        my @st = lstat $f;
        my $what = -l $f ? 'link ' . readlink($f)
                 : -d _ ? 'dir'
                 : 'file ' . Digest::SHA->new(256)->addfile($f)->hexdigest;
        $s{$f} = sprintf '%s %04o %d:%d', $what, $st[2] & 07777, $st[4], $st[5];
    } }, '/etc/nginx');
    return \%s;
}

my $before = snapshot();
my (@undo, $nginx_started, $u);
my $site = '/etc/nginx/conf.d/hopgate.conf';
my $edge_dir = '/etc/nginx/hopgate';
my @apt = ('apt-get', '-y', '-q', '-o', 'DPkg::Lock::Timeout=300');
$ENV{DEBIAN_FRONTEND} = 'noninteractive';

sub stop_nginx {
    return unless $nginx_started;
    my $pid = slurp('/run/nginx.pid') // '';
    chomp $pid;
    system('/usr/sbin/nginx -s quit 2>/dev/null');
    my $deadline = time + 15;
    sleep 0.05 while $pid =~ /^\d+$/ && kill(0, $pid) && time < $deadline;
    $nginx_started = 0;
}

# whatever happens, the machine goes back to how it was
sub restore {
    HopGate::Unit::stop($u) if $u;
    undef $u;
    stop_nginx();
    unlink $site, '/var/log/nginx/hopgate.access.log';
    remove_tree($edge_dir);
    $_->() for reverse @undo;
    @undo = ();
    system("@apt purge @pkgs >'$tmp/purge.log' 2>&1");
}
END { restore() if $before }
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

require HopGate::Unit;
require HopGate::Fixture;

my $inst = `@apt install '$deb{'libnginx-mod-http-hopgate'}' '$deb{'hopgate-agent'}' 2>&1`;
is($?, 0, 'apt-get install ./libnginx-mod-http-hopgate_*.deb ./hopgate-agent_*.deb')
    or diag($inst);
is(readlink('/etc/nginx/modules-enabled/50-mod-http-hopgate.conf'),
   '/usr/share/nginx/modules-available/mod-http-hopgate.conf',
   'postinst enables the module in /etc/nginx/modules-enabled');
ok(-x '/usr/bin/hopgate-agent', 'the agent is on PATH in /usr/bin');

SKIP: {
    skip 'systemd-analyze is not installed', 1 unless -x '/usr/bin/systemd-analyze';
    my $v = `cd '$tmp' && cp /lib/systemd/system/hopgate-agent\@.service 'hopgate-agent\@test.service' && systemd-analyze verify 'hopgate-agent\@test.service' 2>&1`;
    ok($? == 0 && $v eq '', 'the installed unit passes systemd-analyze verify as installed')
        or diag($v);
}

# the edge, as the Quick Start makes it, on ports of this test's own
my $http = HopGate::Fixture::free_port();
my $udp = HopGate::Fixture::free_port();
make_path($edge_dir);
system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
       . "-keyout $edge_dir/$_->[0].key -out $edge_dir/$_->[0].pem -days 2 "
       . "-subj '/CN=$_->[1]' -addext 'subjectAltName=DNS:$_->[1]' 2>/dev/null") == 0
    or die "openssl failed" for ['edge', 'edge.example.com'], ['https', '*.example.com'];
my $line = `/usr/bin/hopgate-agent keygen app.example.com --key-file '$tmp/app.key' 2>/dev/null`;
open my $reg, '>', "$edge_dir/registry" or die $!;
print $reg $line;
close $reg;

(my $conf = slurp('/usr/share/doc/libnginx-mod-http-hopgate/examples/hopgate.conf'))
    =~ s/\blisten 443 /listen 127.0.0.1:$http /;
$conf =~ s/hopgate_listen 0\.0\.0\.0:4443 /hopgate_listen 127.0.0.1:$udp /;
open my $sf, '>', $site or die $!;
print $sf $conf;
close $sf;

# the stock default site listens on port 80: aside while it is taken
if (IO::Socket::INET->new(PeerAddr => '127.0.0.1:80', Timeout => 1)
    && -e '/etc/nginx/sites-enabled/default')
{
    rename '/etc/nginx/sites-enabled/default', "$tmp/default-site" or die $!;
    push @undo, sub { rename "$tmp/default-site", '/etc/nginx/sites-enabled/default' };
}

my $t = `/usr/sbin/nginx -t 2>&1`;
is($?, 0, 'nginx -t: the stock nginx.conf with the example site file') or diag($t);

my $s = `/usr/sbin/nginx 2>&1`;
$nginx_started = $? == 0;
ok($nginx_started, 'the system nginx starts with it') or diag($s);

my $app = HopGate::Fixture::start_app();
my $etc = "$tmp/etc-hopgate";
mkdir $etc;
chmod 0755, $tmp, $etc;
open my $cf, '>', "$etc/agent-debtest.conf" or die $!;
print $cf "server = 127.0.0.1:$udp\nserver-name = edge.example.com\n"
    . "domain = app.example.com\nto = $app\nca = $edge_dir/edge.pem\n";
close $cf;
system('cp', "$tmp/app.key", "$etc/agent-debtest.key") == 0 or die;
$u = HopGate::Unit::start(unit => '/lib/systemd/system/hopgate-agent@.service',
                          instance => 'debtest',
                          path => sub { (my $p = shift) =~ s{^/etc/hopgate/}{$etc/}; $p });
ok((grep { /^READY=1$/m } HopGate::Unit::notify_until($u, qr/^READY=1$/m, 15)),
   'the installed agent, started from the installed unit, is ready')
    or diag(HopGate::Unit::journal($u), `tail -5 /var/log/nginx/error.log`);

my $curl = "curl -sk --max-time 20 --resolve app.example.com:$http:127.0.0.1";
is(`$curl https://app.example.com:$http/hello`, "hello from the local app\n",
   'a request to the system nginx travels through the tunnel');
like(`$curl https://app.example.com:$http/headers`, qr/^X-Forwarded-Proto: https\r?$/mi,
     'and the app learns it came over HTTPS');

HopGate::Unit::stop($u);
undef $u;
stop_nginx();

# a user's own config goes first; then the packages
unlink $site;
remove_tree($edge_dir);
my $rm = `@apt remove @pkgs 2>&1`;
is($?, 0, 'apt-get remove') or diag($rm);
ok(!-e '/usr/lib/nginx/modules/ngx_http_hopgate_module.so', 'the module is gone');
ok(!-e '/etc/nginx/modules-enabled/50-mod-http-hopgate.conf',
   'and no longer enabled');
$t = `/usr/sbin/nginx -t 2>&1`;
is($?, 0, 'nginx -t still passes after the removal') or diag($t);

restore();
is_deeply(snapshot(), $before, '/etc/nginx is as it was before the test');
undef $before;

done_testing();
