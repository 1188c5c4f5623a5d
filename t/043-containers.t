# The containers, without a container engine (there is none here):
# docker/compose.yaml parses and holds together (PostgreSQL, the edge,
# the one-shot register, the sample app and the agent; every dependency
# names a service, waits for a health check that exists or for a one-shot
# that ends; every file, secret and volume it names exists or is
# declared; nothing long-running goes without a health check or runs as
# root), the Dockerfiles are multi-stage, COPY only what the tree has,
# install the packages `make deb` builds (so apt brings their libraries),
# run as a user and check their health; and the edge's nginx.conf and
# site file pass `nginx -t` with the module as built.
use strict;
use warnings;
use FindBin;
use Test::More;
use File::Temp qw(tempdir);

my $top = "$FindBin::Bin/..";
my $docker = "$top/docker";

eval { require YAML::XS; 1 }
    or plan skip_all => 'YAML::XS is not installed (libyaml-libyaml-perl)';

sub slurp { open my $fh, '<', $_[0] or die "$_[0]: $!"; local $/; scalar <$fh> }

my $c = YAML::XS::LoadFile("$docker/compose.yaml");
my $s = $c->{services} || {};
is_deeply([sort keys %$s], [qw(agent app edge postgres register)],
          'compose: postgres, edge, register, app and agent');

# --- the Dockerfiles -------------------------------------------------------------------

my %dockerfile;     # path => { user, health, text }
for my $name (map { $_->{build} ? $_->{build}{dockerfile} : () } values %$s) {
    next if $dockerfile{$name};
    my $ctx = "$docker/" . $s->{ (grep { ($s->{$_}{build} || {})->{dockerfile}
                                          && $s->{$_}{build}{dockerfile} eq $name } keys %$s)[0] }{build}{context};
    my $path = "$ctx/$name";
    ok(-f $path, "$name exists in the build context") or next;
    my $text = slurp($path);
    $text =~ s/\\\n/ /g;
    my @from = $text =~ /^FROM\s+(\S+)/mg;
    cmp_ok(scalar @from, '>=', 2, "$name is multi-stage");
    like($from[-1], qr/^debian:bookworm/, "$name runs on Debian bookworm");
    for my $copy ($text =~ /^COPY\s+(?!--from)(.*)$/mg) {
        my @src = split ' ', $copy;
        pop @src;
        for my $src (@src) {
            ok($src eq '.' || -e "$ctx/$src", "$name: COPY $src exists in the tree");
        }
    }
    my ($last) = $text =~ /.*^FROM[^\n]*\n(.*)\z/ms;
    like($last, qr/apt-get install[^\n]*\/tmp\/[\w-]+_\*\.deb/,
         "$name installs the package make deb built (apt brings its libraries)");
    like($text, qr/^RUN make deb$/m, "$name builds it with make deb");
    my ($user) = $last =~ /^USER\s+(\S+)/m;
    ok($user && $user !~ /^(root|0)$/, "$name runs as a user, not root");
    like($last, qr/^HEALTHCHECK\s+.*CMD\s/m, "$name has a health check");
    $dockerfile{$name} = { user => $user, health => 1 };
}
like(slurp("$top/.dockerignore"), qr{^build/$}m,
     '.dockerignore keeps build/ out of the context');

# --- the services --------------------------------------------------------------------

sub health {
    my ($n) = @_;
    my $h = $s->{$n}{healthcheck};
    return 0 if $h && $h->{disable};
    return 1 if $h && $h->{test};
    return $s->{$n}{build} && $dockerfile{ $s->{$n}{build}{dockerfile} }{health};
}

for my $n (sort keys %$s) {
    my $svc = $s->{$n};
    ok($svc->{image} || $svc->{build}, "$n: an image or a build");
    my $oneshot = ($svc->{restart} // '') eq 'no';
    ok($oneshot || health($n), "$n: long-running, with a health check");
    my $user = $svc->{user}
        // ($svc->{build} ? $dockerfile{ $svc->{build}{dockerfile} }{user} : undef);
    # the postgres image starts as root and drops to postgres itself
    ok($n eq 'postgres' || ($user && $user !~ /^(root|0)(:|$)/),
       "$n: not root");
    my $deps = $svc->{depends_on} || {};
    for my $d (sort keys %$deps) {
        ok($s->{$d}, "$n depends on $d, a service");
        my $cond = $deps->{$d}{condition} // '';
        if ($cond eq 'service_healthy') {
            ok(health($d), "$n waits for $d to be healthy: $d has a health check");
        } elsif ($cond eq 'service_completed_successfully') {
            is($s->{$d}{restart}, 'no', "$n waits for $d to end: a one-shot");
        } else {
            fail("$n on $d: condition \"$cond\"");
        }
    }
    for my $v (@{ $svc->{volumes} || [] }) {
        my ($src) = split /:/, $v;
        if ($src =~ m{^\.}) {
            ok(-e "$docker/$src", "$n mounts $src, in the tree");
        } else {
            ok(exists $c->{volumes}{$src}, "$n mounts volume $src, declared");
        }
    }
    for my $sec (@{ $svc->{secrets} || [] }) {
        ok($c->{secrets}{$sec} && $c->{secrets}{$sec}{file},
           "$n uses secret $sec, declared with its file");
    }
}

my %ports = map { $_ => 1 } @{ $s->{edge}{ports} || [] };
ok($ports{'4443:4443/udp'}, 'the edge publishes the tunnel port, UDP');
like(join(' ', @{ $s->{agent}{command} || [] }), qr{--config /etc/hopgate/agent\.conf},
     'the agent runs from its config file');
my $gitignore = slurp("$top/.gitignore");
for my $sec (sort keys %{ $c->{secrets} }) {
    my $f = $c->{secrets}{$sec}{file};
    like($f, qr{^\./secrets/}, "secret $sec lives in docker/secrets");
}
like($gitignore, qr{^/docker/secrets/$}m, 'which git ignores');
like(slurp("$docker/compose.yaml"), qr/^#\s+openssl rand .* > docker\/secrets\/$_$/m,
     "compose.yaml says how to make the secret $_") for sort keys %{ $c->{secrets} };

# the agent's config names the edge by its service and the volumes' paths
my $aconf = slurp("$docker/agent.conf");
like($aconf, qr/^server = edge:4443$/m, 'agent.conf: the edge service\'s tunnel port');
like($aconf, qr/^to = app:3000$/m, 'agent.conf: the app service');
my ($ca_dir) = $aconf =~ m{^ca = (/\S+)/[^/]+$}m;
ok((grep { /^edge-public:\Q$ca_dir\E:ro$/ } @{ $s->{agent}{volumes} }),
   'its CA comes from the volume the edge publishes its certificate in');

# --- the edge's nginx configuration ----------------------------------------------------

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $module = $ENV{TEST_NGINX_LOAD_MODULES}
    || "$top/build/modules/ngx_http_hopgate_module.so";
SKIP: {
    skip 'the module is not built', 1 unless -f $module;
    my $root = tempdir('hopgate-docker-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$root/$_" for qw(lib secrets conf.d modules-enabled tmp);
    system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           . "-keyout $root/lib/edge.key -out $root/lib/edge.pem -days 1 "
           . "-subj /CN=edge 2>/dev/null") == 0 or die 'openssl';
    open my $t, '>', "$root/secrets/admin_token" or die;
    print $t "0123456789abcdef0123456789abcdef\n";
    close $t;
    my $map = sub {
        my $x = shift;
        $x =~ s{/var/lib/hopgate/}{$root/lib/}g;
        $x =~ s{/run/secrets/}{$root/secrets/}g;
        $x =~ s{/etc/nginx/conf\.d/}{$root/conf.d/}g;
        $x =~ s{/etc/nginx/modules-enabled/}{$root/modules-enabled/}g;
        $x =~ s{/tmp/}{$root/tmp/}g;
        $x =~ s{listen (\d+)}{listen 127.0.0.1:$1}g;
        $x;
    };
    open my $m, '>', "$root/modules-enabled/50-mod-http-hopgate.conf" or die;
    print $m "load_module $module;\n";
    close $m;
    for (['nginx.conf', "$root/nginx.conf"], ['edge.conf', "$root/conf.d/hopgate.conf"]) {
        open my $o, '>', $_->[1] or die;
        print $o $map->(slurp("$docker/$_->[0]"));
        close $o;
    }
    my $out = `'$nginx' -t -p '$root/' -c '$root/nginx.conf' 2>&1`;
    is($?, 0, 'docker/nginx.conf with docker/edge.conf passes nginx -t') or diag($out);
}

done_testing();
