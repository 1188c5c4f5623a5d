# `make install` puts the module where the Quick Start's load_module looks
# (under DESTDIR here) and the agent on PATH, and the installed module
# loads into Debian's nginx.
use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

my $root = "$FindBin::Bin/..";
my $build = $ENV{HOPGATE_BUILD} || "$root/build";
my $dest = tempdir('hopgate-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);

my $out = `make -s -C '$root' BUILD='$build' install DESTDIR='$dest' 2>&1`;
is($?, 0, 'make install succeeds') or diag($out);

my $so = "$dest/usr/lib/nginx/modules/ngx_http_hopgate_module.so";
my $agent = "$dest/usr/local/bin/hopgate-agent";
ok(-f $so, 'the module is in /usr/lib/nginx/modules');
ok(-x $agent, 'the agent is in /usr/local/bin');
like(`'$agent' --version 2>&1`, qr/hopgate-agent \d+\.\d+/,
     'the installed agent runs');

open my $fh, '>', "$dest/nginx.conf" or die $!;
print $fh "load_module $so;\nevents {}\nerror_log $dest/error.log;\n"
    . "pid $dest/nginx.pid;\n";
close $fh;
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $t = `'$nginx' -t -p '$dest' -c '$dest/nginx.conf' -e '$dest/error.log' 2>&1`;
is($?, 0, 'nginx -t loads the installed module') or diag($t);

done_testing();
