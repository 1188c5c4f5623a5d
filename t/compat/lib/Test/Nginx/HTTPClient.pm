package Test::Nginx::HTTPClient;

# Wire-level HTTP/1.x client used by our compat Test::Nginx::Socket:
# turning "--- request" style specs into bytes, pushing them through a
# socket (optionally split into delayed packets) and parsing what comes
# back.  Nothing here knows about test blocks or Test::More; the caller
# decides what a timeout or a malformed response means for the test.

use strict;
use warnings;

use Exporter 'import';
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use IO::Select ();
use IO::Socket::INET ();
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    parse_request_line build_request parse_more_headers
    open_connection exchange parse_response
);

# Splits the first line of a request spec ("GET /t HTTP/1.0") into its
# parts.  The URL defaults to "/" and the version to HTTP/1.1, as the
# real module documents.  Returns nothing when the line is malformed.
sub parse_request_line {
    my ($line) = @_;
    return unless defined $line;
    my @words = split ' ', $line;
    return unless @words >= 1 && @words <= 3;
    my ($method, $url, $version) = @words;
    return {
        method  => $method,
        url     => defined $url ? $url : '/',
        version => defined $version ? $version : 'HTTP/1.1',
    };
}

# Turns a "--- more_headers" text into CRLF-terminated header lines.
# Lines starting with "#" are comments.  Also reports whether the caller
# asked for a chunked request body, in which case no Content-Length is
# added for it.
sub parse_more_headers {
    my ($text) = @_;
    my ($out, $is_chunked) = ('', 0);
    for my $line (split /\n+/, defined $text ? $text : '') {
        next if $line =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        next unless defined $key && length $key;
        $val = '' unless defined $val;
        $is_chunked = 1
            if lc($key) eq 'transfer-encoding' && lc($val) eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $is_chunked);
}

# Builds the bytes for one request from the packets of a request spec.
#
# The spec's first line is the request line; everything after it is the
# body.  We add Host (unless given), Connection ($conn_type unless
# given) and Content-Length for a non-empty body (unless the body is
# chunked or the length was given; the body is then trimmed, like the
# real module does).  When the spec came split into several packets the
# split points are carried over to the generated request so that
# "packet" tests still send the same pieces of the body separately.
#
# Returns an array ref of strings (one per packet) or dies with a
# message on a malformed request line.
sub build_request {
    my (%args) = @_;
    my @packets   = @{ $args{packets} };
    my $more      = defined $args{more_headers} ? $args{more_headers} : '';
    my $server    = $args{server_name};
    my $conn_type = $args{connection};

    my $spec = join '', @packets;
    my $nl = index $spec, "\n";
    my $first_len = $nl < 0 ? length $spec : $nl + 1;
    my $first = substr $spec, 0, $first_len;
    my $body  = substr $spec, $first_len;

    die "Request line should be non-empty\n" unless $first =~ /\S/;
    my $req = parse_request_line($first)
        or die "Request line is not valid. Should be 'meth [url [version]]'"
             . " but got \"$first\".\n";

    my ($hdrs, $is_chunked) = parse_more_headers($more);

    # Leading whitespace removed from the body; needed to map packet
    # boundaries that fall inside the body.
    my $body_shift = 0;
    my $len_header = '';
    if (!$is_chunked && length $body && $hdrs !~ /(?:^|\n)Content-Length:/i) {
        my $orig = length $body;
        $body =~ s/^\s+//;
        $body_shift = $orig - length $body;
        $body =~ s/\s+$//;
        $len_header = "Content-Length: " . length($body) . "\r\n";
    }

    my $head = "$req->{method} $req->{url} $req->{version}\r\n";
    my $auto = '';
    $auto .= "Host: $server\r\n" if $hdrs !~ /(?:^|\n)Host:/i;
    $auto .= "Connection: $conn_type\r\n" if $hdrs !~ /(?:^|\n)Connection/i;
    my $request_line_len = length($head) - 2;
    $head .= $auto . $hdrs . $len_header . "\r\n";
    my $whole = $head . $body;

    return [$whole] if @packets <= 1;

    # Map each original split point onto the generated request: inside
    # the request line it stays put, right after it (or in the body) it
    # moves past the generated headers.
    my (@cuts, $pos);
    $pos = 0;
    for my $p (@packets[0 .. $#packets - 1]) {
        $pos += length $p;
        my $cut;
        if ($pos < $first_len) {
            $cut = $pos < $request_line_len ? $pos : $request_line_len;
        } else {
            my $in_body = $pos - $first_len - $body_shift;
            $in_body = 0 if $in_body < 0;
            $in_body = length $body if $in_body > length $body;
            $cut = length($head) + $in_body;
        }
        push @cuts, $cut;
    }

    my @out;
    my $prev = 0;
    for my $cut (@cuts, length $whole) {
        $cut = $prev if $cut < $prev;
        push @out, substr $whole, $prev, $cut - $prev;
        $prev = $cut;
    }
    return \@out;
}

# Connects to the server, retrying briefly on "connection refused" in
# case nginx has only just started.  Returns the socket or, on failure,
# (undef, $error_text).
sub open_connection {
    my (%args) = @_;
    my $deadline = time + (defined $args{retry_for} ? $args{retry_for} : 2);
    my $err;
    while (1) {
        my $sock = IO::Socket::INET->new(
            PeerAddr => $args{addr},
            PeerPort => $args{port},
            Proto    => 'tcp',
            Timeout  => $args{timeout},
        );
        return $sock if $sock;
        $err = "$!";
        last if time >= $deadline;
        sleep 0.05;
    }
    return (undef, $err);
}

# Sends the packets over $sock and reads until the server closes the
# connection (every generated request carries "Connection: close" on
# its last request, so EOF marks the end of the response stream).
#
# Reading and writing are interleaved so an early response (e.g. a 413
# sent before the body is fully written) is still collected.  A packet
# may carry delay_before (seconds), otherwise $middle_delay is used
# between packets.  $timeout is the longest silence allowed between two
# I/O events, as documented for "--- timeout".
#
# Returns { data => $bytes, timed_out => 0|1, error => $text_or_undef }.
sub exchange {
    my (%args) = @_;
    my $sock    = $args{sock};
    my $timeout = $args{timeout};
    my @queue   = @{ $args{packets} };

    $sock->blocking(0);
    local $SIG{PIPE} = 'IGNORE';

    my $sel = IO::Select->new($sock);
    my ($buf, $off) = ('', 0);
    my $writing = 1;
    my $due;              # time at which the next queued packet may go
    my $last_io = time;
    my %result = (data => '', timed_out => 0, error => undef);

    my $load_next = sub {
        my $p = shift @queue;
        ($buf, $off) = ($p->{value}, 0);
        $buf = '' unless defined $buf;
        undef $due;
    };
    $load_next->();

    while (1) {
        if ($writing && $off >= length $buf) {
            if (!@queue) {
                $writing = 0;
                if (defined $args{shutdown}) {
                    shutdown($sock, $args{shutdown});
                }
            } else {
                if (!defined $due) {
                    my $delay = $queue[0]{delay_before};
                    $delay = $args{middle_delay} unless defined $delay;
                    $due = time + ($delay || 0);
                }
                if (time >= $due) {
                    $load_next->();
                    # A deliberate pause is not silence from the server.
                    $last_io = time;
                }
            }
        }

        my $now = time;
        my $wait = $last_io + $timeout - $now;
        my $pausing = $writing && defined $due && $off >= length $buf;
        if ($pausing) {
            my $until_due = $due - $now;
            $until_due = 0 if $until_due < 0;
            $wait = $until_due if $until_due < $wait || $wait <= 0;
        } elsif ($wait <= 0) {
            $result{timed_out} = 1;
            last;
        }

        my $want_write = $writing && $off < length $buf;
        my ($r, $w) = IO::Select->select($sel, $want_write ? $sel : undef,
                                         undef, $wait);
        next if !$r && !$w && $pausing;

        if ($w && @$w) {
            my $n = syswrite $sock, $buf, length($buf) - $off, $off;
            if (defined $n) {
                $off += $n;
                $last_io = time;
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                # The server stopped reading (e.g. it already answered);
                # keep collecting whatever it sent.
                $result{error} = "write failed: $!";
                $writing = 0;
            }
        }

        if ($r && @$r) {
            my $n = sysread $sock, my $chunk, 16384;
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $result{error} = "read failed: $!";
                last;
            }
            last if $n == 0;
            $result{data} .= $chunk;
            $last_io = time;
        }
    }

    close $sock;
    return \%result;
}

# Parses one HTTP response from the start of $raw.
#
# Returns ($response, $raw_headers, $left, $error):
#   $response     Test::Nginx::HTTPClient::Response or undef on error
#   $raw_headers  status line and header lines, CRLF-terminated
#   $left         bytes after this response (pipelined responses)
#   $error        text describing malformed chunked data, if any
#   $warning      text for a truncated body (caller decides to warn)
sub parse_response {
    my ($raw, $head_req) = @_;
    $raw = '' unless defined $raw;

    my $raw_headers = $raw =~ /\A(.*?\r\n)\r\n/s ? $1 : '';

    my ($head, $rest);
    if ($raw =~ /\A(.*?)\r?\n\r?\n/s) {
        $head = $1;
        $rest = substr $raw, $+[0];
    } else {
        ($head, $rest) = ($raw, '');
    }

    my ($status_line, @lines) = split /\r?\n/, $head;
    my $res = Test::Nginx::HTTPClient::Response->new;
    if (defined $status_line
        && $status_line =~ m{\A\s*HTTP/[\d.]+\s+(\d+)(?:\s+(.*))?}) {
        $res->{code} = $1;
        $res->{message} = $2;
    }
    for my $line (@lines) {
        if ($line =~ /^[ \t]+(.*)/ && @{ $res->{headers} }) {
            $res->{headers}[-1][1] .= " $1";    # folded header line
        } elsif ($line =~ /^([^:]+?)\s*:\s*(.*?)\s*$/) {
            push @{ $res->{headers} }, [$1, $2];
        }
    }

    my $code = $res->{code};
    if ($head_req || (defined $code && ($code == 304 || $code == 101))) {
        # No body is defined for these; anything left is the next response.
        $res->{content} = '';
        return ($res, $raw_headers, length $rest ? $rest : undef);
    }

    my $te  = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');

    if (defined $te && lc $te eq 'chunked') {
        my ($body, $left, $err) = decode_chunked($rest);
        return (undef, $raw_headers, undef, $err) if defined $err;
        $res->{content} = $body;
        return ($res, $raw_headers, $left);
    }

    if (defined $len && $len =~ /^\d+$/) {
        if (length $rest > $len) {
            $res->{content} = substr $rest, 0, $len;
            return ($res, $raw_headers, substr($rest, $len));
        }
        $res->{content} = $rest;
        my $warning;
        $warning = "response body truncated: $len expected, but got "
                   . length($rest)
            if length $rest < $len;
        return ($res, $raw_headers, undef, undef, $warning);
    }

    # Neither length nor chunked: the body runs until the connection
    # closed.
    $res->{content} = $rest;
    return ($res, $raw_headers, undef);
}

# Decodes a chunked body.  Returns ($body, $left, $error).
sub decode_chunked {
    my ($raw) = @_;
    my $body = '';
    my $pos = 0;
    while (1) {
        pos($raw) = $pos;
        if ($raw !~ /\G[ \t]*([0-9A-Fa-f]+)[ \t]*(?:;[^\r\n]*)?\r\n/gc) {
            my $tail = substr $raw, $pos;
            return (undef, undef, length $tail
                ? "invalid chunked body received: $tail"
                : "no last chunk found");
        }
        my $size = hex $1;
        $pos = pos $raw;
        if ($size == 0) {
            # Skip optional trailer fields up to the final empty line.
            pos($raw) = $pos;
            while ($raw =~ /\G([^\r\n]+)\r\n/gc) { }
            if ($raw !~ /\G\r\n/gc) {
                return (undef, undef, "no last chunk found");
            }
            my $left = substr $raw, pos $raw;
            return ($body, length $left ? $left : undef, undef);
        }
        if (length($raw) - $pos < $size) {
            return (undef, undef, "invalid chunked data received "
                                  . "(not enough octets for the data section)");
        }
        $body .= substr $raw, $pos, $size;
        $pos += $size;
        if (substr($raw, $pos, 2) ne "\r\n") {
            return (undef, undef, "invalid chunked data received (expected CRLF).");
        }
        $pos += 2;
    }
}

package Test::Nginx::HTTPClient::Response;

# The little bit of HTTP::Response's interface the checks need, so we do
# not depend on libwww.

sub new { bless { code => undef, headers => [], content => '' }, shift }

sub code { $_[0]{code} }

sub message { $_[0]{message} }

# Like HTTP::Headers: case-insensitive, repeated fields joined by ", ".
sub header {
    my ($self, $name) = @_;
    my @vals = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $self->{headers} };
    return @vals ? join(', ', @vals) : undef;
}

sub content {
    my $self = shift;
    $self->{content} = shift if @_;
    return $self->{content};
}

1;
