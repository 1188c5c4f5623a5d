package HopGate::Acme;
# ACME test fixtures: a tiny DNS server that resolves every name to
# 127.0.0.1 (for pebble's validation), pebble itself (a real ACME test
# server) on free ports with its own config, its roots, and HTTPS probes
# that show which certificate the test nginx serves for a name.
#
#   use HopGate::Acme;
#   acme_init(validity => 3600);     # DNS + pebble, before run_tests()
#
# Afterwards, for $TEST_NGINX_* expansion in configs:
#   TEST_NGINX_ACME_HTTP     the http{} lines: hopgate_acme (pebble's
#                            directory), hopgate_acme_ca, the state dir
#   TEST_NGINX_HTTPS_PORT    a free port for the test's `listen ... ssl`
#   TEST_NGINX_DNS_PORT      the DNS server's UDP port
#   TEST_NGINX_ACME_PORT     pebble's ACME port
use strict;
use warnings;
use Exporter 'import';
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use HopGate::Fixture qw(hopgate_dir free_port nginx_port);

our @EXPORT = qw(acme_init pebble_start pebble_stop pebble_log
                 pebble_orders pebble_roots cert_of https_get
                 wait_for_cert acme_state dns_start);

my %st;
my $owner = $$;    # END runs in forked children too: only we clean up


# A: 127.0.0.1 for every name but those in %zone (an address, or undef:
# NXDOMAIN); AAAA and the rest: no answer
sub dns_start {
    my (%zone) = @_;
    return $st{dns_port} if $st{dns_port};

    my $dns = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                    LocalPort => 0, Proto => 'udp')
        or die "udp: $!";
    $st{dns_port} = $dns->sockport;

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        while (1) {
            my $from = $dns->recv(my $q, 512) or next;
            next if length $q < 17;
            my ($id) = unpack 'n', $q;
            my $pos = 12;
            while (my $len = ord substr $q, $pos, 1) {
                $pos += $len + 1;
                last if $pos >= length $q;
            }
            my $question = substr $q, 12, $pos + 5 - 12;
            my $type = unpack 'n', substr $q, $pos + 1, 2;
            my ($p, @labels) = (12);
            while (my $len = ord substr $q, $p, 1) {
                push @labels, substr $q, $p + 1, $len;
                $p += $len + 1;
            }
            my $name = lc join '.', @labels;
            my $addr = exists $zone{$name} ? $zone{$name} : '127.0.0.1';
            my $answer = '';
            if ($type == 1 && defined $addr) {
                $answer = pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                          . pack('C4', split /\./, $addr);
            }
            my $rcode = defined $addr ? 0 : 3;
            $dns->send(pack('n n n n n n', $id, 0x8180 | $rcode, 1,
                            $answer ? 1 : 0, 0, 0) . $question . $answer,
                       0, $from);
        }
        POSIX::_exit(0);
    }
    $st{dns_pid} = $pid;
    $ENV{TEST_NGINX_DNS_PORT} = $st{dns_port};

    return $st{dns_port};
}


# pebble with its own config: validation against the test nginx's port
sub pebble_start {
    my (%o) = @_;
    my $dir = $st{dir};

    $st{acme_port} ||= free_port();
    $st{mgmt_port} ||= free_port();

    my %config = (
        listenAddress => "127.0.0.1:$st{acme_port}",
        managementListenAddress => "127.0.0.1:$st{mgmt_port}",
        certificate => "$dir/pebble.pem",
        privateKey => "$dir/pebble.key",
        httpPort => 0 + ($o{http_port} || nginx_port()),
        tlsPort => 0 + free_port(),
        ocspResponderURL => '',
        externalAccountBindingRequired => JSON::PP::false(),
    );
    $config{certificateValidityPeriod} = 0 + $st{validity} if $st{validity};

    open my $fh, '>', "$dir/pebble.json" or die $!;
    print $fh JSON::PP->new->canonical->encode({ pebble => \%config });
    close $fh;

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>>', "$dir/pebble.log";
        open STDERR, '>&', \*STDOUT;
        # the default nonce rejection (5%) stays on: badNonce is handled
        $ENV{PEBBLE_VA_NOSLEEP} = 1;
        exec 'pebble', '-config', "$dir/pebble.json", '-dnsserver',
             "127.0.0.1:$st{dns_port}"
            or die "exec pebble: $!";
    }
    $st{pebble_pid} = $pid;

    my $deadline = time + 10;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $st{acme_port});
        last if $s;
        sleep 0.05;
    }

    $st{roots} = undef;
    return $pid;
}


sub pebble_stop {
    return unless $st{pebble_pid};
    kill 'TERM', $st{pebble_pid};
    waitpid $st{pebble_pid}, 0;
    delete $st{pebble_pid};
}


sub pebble_log {
    open my $fh, '<', "$st{dir}/pebble.log" or return '';
    local $/;
    return <$fh>;
}


# orders pebble was asked for so far (its log has a line per request)
sub pebble_orders {
    my @n = pebble_log() =~ m{POST /order-plz}g;
    return scalar @n;
}


# pebble's root and intermediate, in one file, for verification
sub pebble_roots {
    return $st{roots} if $st{roots};

    my $file = "$st{dir}/pebble-roots.pem";
    my $pem = '';
    for my $what ('roots/0', 'intermediates/0') {
        open my $fh, '-|', 'curl', '-s', '-k', '--max-time', '5',
             "https://127.0.0.1:$st{mgmt_port}/$what" or die "curl: $!";
        local $/;
        $pem .= <$fh> // '';
        close $fh;
    }
    open my $fh, '>', $file or die $!;
    print $fh $pem;
    close $fh;

    $st{roots} = $file;
    return $file;
}


# the certificate served for a name: (sha256 fingerprint, issuer, serial)
sub cert_of {
    my ($name, $port) = @_;
    $port ||= $ENV{TEST_NGINX_HTTPS_PORT};

    my $out = `echo | timeout 5 openssl s_client -connect 127.0.0.1:$port \\
               -servername $name 2>/dev/null \\
               | openssl x509 -noout -fingerprint -sha256 -issuer -serial \\
               2>/dev/null`;
    my ($fp) = $out =~ /Fingerprint=(\S+)/;
    my ($issuer) = $out =~ /issuer=(.*)/;
    my ($serial) = $out =~ /serial=(\S+)/;

    return ($fp // '', $issuer // '', $serial // '');
}


# an HTTPS GET that must verify against pebble's roots: (status, body)
sub https_get {
    my ($name, $path, $port) = @_;
    $port ||= $ENV{TEST_NGINX_HTTPS_PORT};

    open my $fh, '-|', 'curl', '-sS', '--max-time', '10',
         '--cacert', pebble_roots(),
         '--resolve', "$name:$port:127.0.0.1",
         '-w', "\n%{http_code}", "https://$name:$port$path"
        or die "curl: $!";
    local $/;
    my $out = <$fh> // '';
    close $fh;

    my @lines = split /\n/, $out, -1;
    my $code = pop @lines;
    return ($code, join "\n", @lines);
}


# waits until the name's certificate is pebble's; returns seconds or undef
sub wait_for_cert {
    my ($name, $timeout, $port) = @_;
    my $start = time;

    while (time - $start < $timeout) {
        my ($fp, $issuer) = cert_of($name, $port);
        return time - $start if $issuer =~ /Pebble/i;
        sleep 0.25;
    }

    return undef;
}


sub acme_state { "$st{dir}/acme-state" }


sub acme_init {
    my (%o) = @_;
    return if $st{dir};

    require JSON::PP;

    $st{dir} = hopgate_dir() or die "hopgate_init() first\n";
    $st{validity} = $o{validity};
    my $dir = $st{dir};

    system("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
           . "-nodes -keyout $dir/pebble.key -out $dir/pebble.pem -days 7 "
           . "-subj /CN=localhost -addext "
           . "subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null") == 0
        or die "openssl failed\n";

    dns_start(%{ $o{zone} || {} });
    pebble_start(http_port => $o{http_port});

    $ENV{TEST_NGINX_HTTPS_PORT} ||= free_port();
    $ENV{TEST_NGINX_ACME_DIR} = "https://127.0.0.1:$st{acme_port}/dir";
    $ENV{TEST_NGINX_ACME_PORT} = $st{acme_port};
    $ENV{TEST_NGINX_ACME_HTTP} = join "\n    ",
        "hopgate_acme https://127.0.0.1:$st{acme_port}/dir;",
        "hopgate_acme_ca $dir/pebble.pem;",
        "hopgate_acme_state " . acme_state() . ";",
        "hopgate_acme_email ops\@hopgate.test;",
        "hopgate_acme_backoff 1s 8s;";
}


END {
    return unless $$ == $owner;
    pebble_stop();
    if ($st{dns_pid}) {
        kill 'KILL', $st{dns_pid};
        waitpid $st{dns_pid}, 0;
    }
}

1;
