# The admin API reads at most 16k of a body. A chunked body announces no
# length, so the limit applies as it arrives: the 413 comes while the
# client is still sending (nginx used to wait for the whole body).
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Nginx::Socket 'no_plan';
use HopGate::Fixture;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes qw(sleep time);

hopgate_init();
no_shuffle();
no_root_location();

my $token = 'chunked-test-admin-token';
my $dir = HopGate::Fixture::hopgate_dir();
open my $fh, '>', "$dir/admin.key" or die "$dir/admin.key: $!";
print $fh "$token\n";
close $fh;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config',
                      "hopgate_registry file:$dir/registry;\n");
    $block->set_value('config', <<"EOF");
    location /api/v1/admin/ {
        hopgate_admin;
        hopgate_admin_key_file $dir/admin.key;
    }
    location = /ok { return 200 "ok\\n"; }
EOF
    $block->set_value('request', "GET /ok\n");
    $block->set_value('response_body', "ok\n");
    $block->set_value('timeout', 20);
});


# POSTs a chunked body made of the given chunks, the terminating one only
# if $finish, pausing 5 ms after each chunk to look for an answer; returns
# the answer (status, JSON or undef) and how many body bytes were sent when
# it came (undef: not within 5 s of the last chunk)
sub post_chunked {
    my (%o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => HopGate::Fixture::nginx_port(),
                                  Proto => 'tcp')
        or die "connect: $!";
    $s->blocking(0);
    my $sel = IO::Select->new($s);

    my $out = "POST /api/v1/admin/domains/register HTTP/1.1\r\n"
            . "Host: localhost\r\nAuthorization: Bearer $token\r\n"
            . "Content-Type: application/json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\n";
    my ($sent, $answer, $at) = (0, '', undef);
    my @chunks = @{ $o{chunks} };
    my $deadline = time + 60;

    # the first chunk with the headers: nginx reads it in the handler
    if ($o{at_once}) {
        my $chunk = shift @chunks;
        $out .= sprintf("%x\r\n", length $chunk) . $chunk . "\r\n";
        $out .= "0\r\n\r\n" if !@chunks && $o{finish};
        $sent += length $chunk;
    }

    while (time < $deadline) {
        # the next chunk, whole, unless the answer is coming in
        while (length $out && !length $answer && time < $deadline) {
            my $n = syswrite($s, $out);
            substr($out, 0, $n, '') if $n;
            IO::Select::select(undef, $sel, undef, 0.05) if length $out;
        }

        my ($r) = IO::Select::select($sel, undef, undef,
                                     @chunks ? 0.005 : 5);
        if ($r && @$r) {
            $at //= $sent;
            my $n = sysread($s, my $buf, 65536);
            last unless $n;
            $answer .= $buf;
            last if complete($answer);
            next;
        }

        # all sent, and 5 s without an answer
        last unless @chunks;

        my $chunk = shift @chunks;
        $out = sprintf("%x\r\n", length $chunk) . $chunk . "\r\n";
        $out .= "0\r\n\r\n" if !@chunks && $o{finish};
        $sent += length $chunk;
    }
    close $s;

    my ($status) = $answer =~ m{^HTTP/1\.\d (\d+)};
    my ($json) = $answer =~ /\r\n\r\n(.*)$/s;
    $json = eval { JSON::PP::decode_json($json) } if defined $json;
    return ($status // 0, $json, $at);
}


sub complete {
    my ($answer) = @_;
    my ($len) = $answer =~ /\r\nContent-Length: (\d+)/i;
    return defined $len && length($answer) - index($answer, "\r\n\r\n") - 4
                           >= $len;
}


sub error_log {
    open my $fh, '<', HopGate::Fixture::servroot() . '/logs/error.log'
        or return '';
    local $/;
    return scalar <$fh>;
}

run_tests();

__DATA__

=== TEST 1: a chunked body streamed past 16k: 413 while it is still sent
--- init
my ($status, $json, $at) = main::post_chunked(
    chunks => [ map { 'x' x 4096 } 1 .. 128 ]);
Test::More::is($status, 413, 'the answer is 413');
Test::More::ok($json && !$json->{success}
               && ($json->{error} // '') =~ /too large/,
               'in JSON, saying the body is too large');
Test::More::ok(defined $at && $at < 512 * 1024,
               'it came before the 512k body was sent ('
               . ($at // 'never') . ' bytes sent)');
Test::More::cmp_ok($at // 1e9, '<=', 256 * 1024,
                   'within 256k of the body');
Test::More::ok(main::error_log() =~ /chunked body over 16384 bytes/,
               'the log says why');
--- no_error_log
[alert]
[crit]



=== TEST 2: a chunked body of 40k sent with the headers: 413
--- init
my ($status, $json) = main::post_chunked(chunks => [ 'y' x 40960 ],
                                         at_once => 1, finish => 1);
Test::More::is($status, 413, 'the answer is 413');
Test::More::ok($json && ($json->{error} // '') =~ /too large/,
               'in JSON, saying the body is too large');
--- no_error_log
[alert]
[crit]



=== TEST 3: a small chunked body, sent in pieces, is read and answered
--- init
my $body = '{"domain":"chunked.test","memo":"in pieces"}';
my ($status, $json) = main::post_chunked(
    chunks => [ substr($body, 0, 10), substr($body, 10, 10),
                substr($body, 20) ],
    finish => 1);
Test::More::is($status, 501, 'the file registry answers 501');
Test::More::like($json ? $json->{error} // '' : '', qr/read-only/,
                 'saying it is read-only: the body was parsed');
--- no_error_log
[alert]
[crit]
