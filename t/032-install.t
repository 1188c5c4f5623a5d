# `make install` lays files out as Debian's libnginx-mod-* packages do:
# the module in /usr/lib/nginx/modules, its load_module snippet in
# /usr/share/nginx/modules-available, enabled by a link in
# /etc/nginx/modules-enabled (not with ENABLE_MODULE=0, as packages link
# it in postinst); the agent, its man page, the systemd unit (naming the
# agent where it was installed) and the docs under PREFIX. The installed
# module loads through the snippet into Debian's nginx, and the installed
# unit passes systemd-analyze verify.
use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

my $root = "$FindBin::Bin/..";
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';

sub slurp { open my $fh, '<', $_[0] or return undef; local $/; scalar <$fh> }

sub install_into {
    my ($dest, @vars) = @_;
    my $out = `make -s -C '$root' BUILD='$build' install DESTDIR='$dest' @vars 2>&1`;
    is($?, 0, "make install @vars succeeds") or diag($out);
}

# --- the default: PREFIX=/usr/local, the module enabled -------------------------

my $dest = tempdir('hopgate-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);
install_into($dest);

my $so = "$dest/usr/lib/nginx/modules/ngx_http_hopgate_module.so";
my $snippet = "$dest/usr/share/nginx/modules-available/mod-http-hopgate.conf";
my $link = "$dest/etc/nginx/modules-enabled/50-mod-http-hopgate.conf";
my $agent = "$dest/usr/local/bin/hopgate-agent";
my $unit = "$dest/usr/local/lib/systemd/system/hopgate-agent\@.service";
my $man = "$dest/usr/local/share/man/man1/hopgate-agent.1";
my $doc = "$dest/usr/local/share/doc/hopgate";

ok(-f $so, 'the module is in /usr/lib/nginx/modules');
is(slurp($snippet), "load_module modules/ngx_http_hopgate_module.so;\n",
   'its snippet in modules-available loads it as Debian\'s do');
is(readlink($link), '/usr/share/nginx/modules-available/mod-http-hopgate.conf',
   'modules-enabled/50-mod-http-hopgate.conf links to the snippet');
ok(-x $agent, 'the agent is in PREFIX/bin');
like(`'$agent' --version 2>&1`, qr/hopgate-agent \d+\.\d+/,
     'the installed agent runs');
like(slurp($man) // '', qr/^\.TH HOPGATE-AGENT "1"/m,
     'the man page is in PREFIX/share/man/man1');
like(slurp($man) // '', qr/key\\?-file.*keygen.*LoadCredential/s,
     'it documents the flags, keygen and the systemd credential');
like(slurp($unit) // '',
     qr{^ExecStart=/usr/local/bin/hopgate-agent --config /etc/hopgate/agent-%i\.conf$}m,
     'the unit starts the agent where PREFIX put it');
for my $f (qw(README.md protocol.md operations.md examples/hopgate.conf
              examples/agent-app.conf)) {
    ok(-f "$doc/$f", "docs: $f");
}

# Debian's nginx resolves "modules/" from its prefix /usr/share/nginx,
# where nginx-common links modules to /usr/lib/nginx/modules
mkdir "$dest/run";
symlink "$dest/usr/lib/nginx/modules", "$dest/usr/share/nginx/modules"
    or die $!;
open my $fh, '>', "$dest/nginx.conf" or die $!;
print $fh "include $snippet;\nevents {}\nerror_log $dest/error.log;\n"
    . "pid $dest/run/nginx.pid;\n"
    . "http { hopgate_metrics_zone hopgate 1m; }\n";
close $fh;
my $t = `'$nginx' -t -p '$dest/usr/share/nginx/' -c '$dest/nginx.conf' -e '$dest/error.log' 2>&1`;
is($?, 0, 'nginx -t loads the installed module through its snippet')
    or diag($t);

SKIP: {
    skip 'systemd-analyze is not installed (systemd)', 1
        unless -x '/usr/bin/systemd-analyze';
    # verify checks that ExecStart exists: the copy names the agent under
    # DESTDIR; Documentation=man:hopgate-agent(1) is looked up on MANPATH
    my $vdir = tempdir('hopgate-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    (my $text = slurp($unit)) =~ s{^ExecStart=/usr/local/bin/}{ExecStart=$dest/usr/local/bin/}m;
    open my $u, '>', "$vdir/hopgate-agent\@app.service" or die $!;
    print $u $text;
    close $u;
    my $v = `MANPATH='$dest/usr/local/share/man' systemd-analyze verify '$vdir/hopgate-agent\@app.service' 2>&1`;
    ok($? == 0 && $v eq '', 'the installed unit passes systemd-analyze verify, '
       . 'without a warning') or diag($v);
}

# --- as packages build it: PREFIX=/usr, the link left to postinst ---------------

my $pkg = tempdir('hopgate-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);
install_into($pkg, 'PREFIX=/usr', 'ENABLE_MODULE=0');
ok(-x "$pkg/usr/bin/hopgate-agent", 'PREFIX=/usr: the agent is in /usr/bin');
like(slurp("$pkg/lib/systemd/system/hopgate-agent\@.service") // '',
     qr{^ExecStart=/usr/bin/hopgate-agent }m,
     'the unit is in /lib/systemd/system and starts /usr/bin/hopgate-agent');
ok(-f "$pkg/usr/share/man/man1/hopgate-agent.1", 'the man page in /usr/share/man');
ok(!-e "$pkg/etc/nginx/modules-enabled", 'ENABLE_MODULE=0: no modules-enabled link');

done_testing();
