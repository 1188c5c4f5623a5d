package HopGate::Postgres;
# A private PostgreSQL for the registry tests: a cluster in a temporary
# directory owned by the postgres user (initdb refuses root), on a free
# port of 127.0.0.1 with trust authentication, and a "hopgate" database.
# Also the admin API helper the registry tests share.
#
#   use HopGate::Postgres;
#   plan skip_all => '...' unless pg_available();
#   pg_start();                 # once; stopped and removed at exit
#   pg_sql("SELECT ...", ...);  # psql, one session, returns the rows
#   pg_stop(); pg_restart();    # an outage and the recovery
#
# Afterwards these are set for $TEST_NGINX_* expansion in configs:
#   TEST_NGINX_PG_URI           postgresql://postgres@127.0.0.1:PORT/hopgate
#   TEST_NGINX_HOPGATE_PG_HTTP  the http{} lines of HopGate::Fixture with
#                               the PostgreSQL registry instead of the file
#   TEST_NGINX_ADMIN_KEY_FILE   a file with the admin bearer token
use strict;
use warnings;
use Exporter 'import';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);

our @EXPORT = qw(pg_available pg_start pg_stop pg_restart pg_sql pg_uri
                 pg_port admin_api admin_token);

my %pg;
my $owner_pid = $$;


sub pg_bindir {
    my @dirs = sort { ($b =~ m{/(\d+)/bin$})[0] <=> ($a =~ m{/(\d+)/bin$})[0] }
               grep { -x "$_/initdb" && -x "$_/pg_ctl" }
               glob '/usr/lib/postgresql/*/bin';
    return $dirs[0];
}


sub pg_available { defined pg_bindir() }

sub pg_port { $pg{port} }

sub pg_uri { "postgresql://postgres\@127.0.0.1:$pg{port}/hopgate" }


# runs a command as the postgres user when we are root
sub as_postgres {
    my @cmd = @_;
    if ($> == 0) {
        @cmd = ('runuser', '-u', 'postgres', '--', @cmd);
    }
    my $out = `@{[ join ' ', map { quote($_) } @cmd ]} 2>&1`;
    return ($? >> 8, $out);
}


sub quote {
    my ($s) = @_;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}


sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}


sub pg_start {
    return $pg{dir} if $pg{dir};

    my $bin = pg_bindir() or die "PostgreSQL binaries not found\n";
    my $dir = tempdir('hopgate-pg-XXXXXX', TMPDIR => 1);
    if ($> == 0) {
        my (undef, undef, $uid, $gid) = getpwnam('postgres')
            or die "no postgres user\n";
        chown $uid, $gid, $dir;
    }
    chmod 0755, $dir;

    $pg{dir} = $dir;
    $pg{bin} = $bin;
    $pg{port} = $ENV{TEST_NGINX_PG_PORT} || free_port();

    my ($rc, $out) = as_postgres("$bin/initdb", '-D', "$dir/data", '-A',
                                 'trust', '-U', 'postgres', '-E', 'UTF8',
                                 '--locale=C', '--no-sync');
    die "initdb failed:\n$out" if $rc;

    pg_restart();

    ($rc, $out) = psql('postgres', 'CREATE DATABASE hopgate');
    die "CREATE DATABASE failed:\n$out" if $rc;

    my $http = $ENV{TEST_NGINX_HOPGATE_HTTP} // '';
    $http =~ s{hopgate_registry file:\S+;}{'hopgate_registry ' . pg_uri() . ';'}e;
    $ENV{TEST_NGINX_PG_URI} = pg_uri();
    $ENV{TEST_NGINX_HOPGATE_PG_HTTP} = $http;

    my $keyfile = "$dir/admin.key";
    $pg{token} = 'admin-' . join '', map { sprintf '%02x', int rand 256 }
                                     1 .. 16;
    open my $fh, '>', $keyfile or die "$keyfile: $!";
    print $fh "$pg{token}\n";
    close $fh;
    $ENV{TEST_NGINX_ADMIN_KEY_FILE} = $keyfile;

    return $dir;
}


sub pg_restart {
    my $dir = $pg{dir};
    my ($rc, $out) = as_postgres("$pg{bin}/pg_ctl", '-D', "$dir/data", '-l',
        "$dir/postgres.log", '-w', '-t', '30', '-o',
        "-p $pg{port} -k $dir -c listen_addresses=127.0.0.1 -c fsync=off "
        . "-c synchronous_commit=off -c full_page_writes=off "
        . "-c max_connections=200", 'start');
    die "pg_ctl start failed:\n$out" if $rc;
}


sub pg_stop {
    my ($mode) = @_;
    return unless $pg{dir};
    as_postgres("$pg{bin}/pg_ctl", '-D', "$pg{dir}/data", '-w', '-t', '30',
                '-m', $mode // 'fast', 'stop');
}


# one session; each statement in its own transaction
sub psql {
    my ($db, @sql) = @_;
    open my $fh, '-|', 'psql', '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1',
         '-h', '127.0.0.1', '-p', $pg{port}, '-U', 'postgres', '-d', $db,
         map { ('-c', $_) } @sql
        or die "psql: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}


# runs SQL in the hopgate database; dies on an error, returns the output
sub pg_sql {
    my (@sql) = @_;
    my ($rc, $out) = psql('hopgate', @sql);
    die "psql failed ($rc): @sql\n" if $rc;
    chomp $out;
    return $out;
}


sub admin_token { $pg{token} }


# calls the admin API of the test nginx (or of the port given):
# returns (HTTP status, decoded JSON or undef, raw body)
sub admin_api {
    my ($method, $path, $body, %o) = @_;
    my $port = $o{port} || $ENV{TEST_NGINX_SERVER_PORT}
               || $ENV{TEST_NGINX_PORT} || 1984;
    my @args = ('-s', '-S', '--max-time', '30', '-X', $method,
                '-w', "\n%{http_code}");
    my $token = exists $o{token} ? $o{token} : $pg{token};
    push @args, '-H', "Authorization: Bearer $token" if defined $token;
    if (defined $body) {
        my $text = ref $body ? encode_json($body) : $body;
        push @args, '-H', 'Content-Type: application/json',
                    '--data-binary', $text;
    }
    push @args, @{ $o{curl} || [] };
    open my $fh, '-|', 'curl', @args,
         "http://127.0.0.1:$port/api/v1/admin/$path" or die "curl: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my @lines = split /\n/, $out, -1;
    my $code = pop @lines;
    my $raw = join "\n", @lines;
    my $json = eval { decode_json($raw) };
    return ($code, $json, $raw);
}


END {
    # forked children leave the cluster to the process that made it
    if ($pg{dir} && $$ == $owner_pid) {
        pg_stop('immediate');
        system('rm', '-rf', $pg{dir});
    }
}

1;
