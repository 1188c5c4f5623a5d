package Test::Nginx::Socket;

# Our own implementation of the subset of openresty's Test::Nginx::Socket
# that this project's test suite uses (Test::Nginx is not packaged in
# Debian).  See t/compat/README.md for what is supported and how it
# differs.  Like the real module it is a Test::Base subclass: test files
# say
#
#     use Test::Nginx::Socket 'no_plan';
#     run_tests();
#     __DATA__
#     === TEST 1: ...
#
# This file holds the request/response half: turning a block's sections
# into requests, and the checks with the real module's test names.  The
# server side lives in Test::Nginx::Util.

use strict;
use warnings;

use Test::Base -base;
use Encode ();
use Time::HiRes qw(sleep);

use Test::Nginx::Util;
use Test::Nginx::HTTPClient qw(build_request parse_more_headers
                               open_connection exchange parse_response);

our $VERSION = '0.29';

# Lets a test (or our self-test) tell this implementation from the real one.
our $IS_COMPAT = 1;

our @EXPORT = qw(
    env_to_nginx is_str plan run_tests run_test
    repeat_each config_preamble worker_connections
    master_process_enabled
    no_long_string workers master_on master_off
    log_level no_shuffle no_root_location use_hup
    server_name
    server_addr server_root html_dir server_port server_port_for_client
    timeout no_nginx_manager check_accum_error_log
    add_block_preprocessor bail_out add_cleanup_handler
    add_response_body_check
);

$Test::Nginx::Util::RunTestHelper         = \&run_test_helper;
$Test::Nginx::Util::CheckErrorLog         = \&check_error_log;
$Test::Nginx::Util::CheckShutdownErrorLog = \&check_shutdown_error_log;

our @ResponseBodyChecks;

sub add_response_body_check ($) { push @ResponseBodyChecks, shift }

sub set_http_config_filter ($) { $Test::Nginx::Util::FilterHttpConfig = shift }

# Runs "SKIP: { skip ... }" for a subtest when the block is a dry run
# (e.g. TEST_NGINX_IGNORE_MISSING_DIRECTIVES), otherwise the check.
sub check_or_skip {
    my ($dry_run, $what, $check) = @_;
    if ($dry_run) {
        SKIP: { Test::More::skip("$what - tests skipped due to $dry_run", 1) }
        return;
    }
    $check->();
}

# ---------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------

# Picks the headers for the $idx-th request: "--- more_headers" may be
# an eval'ed array with one entry per request.
sub more_headers_for {
    my ($block, $idx) = @_;
    my $more = $block->more_headers;
    return defined $more ? $more : '' unless ref $more eq 'ARRAY';
    my $hdr = $more->[$idx];
    bail_out("--- more_headers lacks data for the request number $idx")
        unless defined $hdr;
    return $hdr;
}

sub build_or_bail {
    my ($name, %args) = @_;
    my $packets = eval { build_request(server_name => $Test::Nginx::Util::ServerName, %args) };
    bail_out("$name - $@") unless $packets;
    return $packets;
}

# Turns the block into a list of connections to make.  Each entry is
# { packets => [{value, delay_before}...], responses => N, head => bool }:
# one per request for "--- request" (an eval'ed array means several
# requests, each on its own connection; a nested array splits one request
# into packets), a single keep-alive connection for
# "--- pipelined_requests", and "--- raw_request" sent verbatim.
sub requests_from_block {
    my ($block) = @_;
    my $name = $block->name;
    my @conns;

    if (defined(my $raw = $block->raw_request)) {
        my @pieces = ref $raw eq 'ARRAY' ? @$raw : ($raw);
        push @conns, { packets => [map { { value => $_ } } @pieces], responses => 1 };

    } elsif (defined(my $reqs = $block->pipelined_requests)) {
        bail_out("$name - invalid entries in --- pipelined_requests")
            unless ref $reqs eq 'ARRAY';
        my $data = '';
        for my $i (0 .. $#$reqs) {
            my $conn_type = $i == $#$reqs ? 'close' : 'keep-alive';
            my $p = build_or_bail($name, packets => [$reqs->[$i]],
                                  more_headers => more_headers_for($block, $i),
                                  connection => $conn_type);
            $data .= join '', @$p;
        }
        push @conns, { packets => [{ value => $data }], responses => scalar @$reqs };

    } else {
        my $request = $block->request;
        if (defined $request && !ref $request) {
            # Leading blank lines and "#" comment lines are allowed.
            1 while $request =~ s/^\s*#[^\n]+\s+|^\s+//s;
        }
        my @list = ref $request eq 'ARRAY' ? @$request : ($request);
        for my $i (0 .. $#list) {
            my $one = $list[$i];
            my @spec = ref $one eq 'ARRAY'
                ? map { ref $_ eq 'HASH' ? $_ : { value => $_ } } @$one
                : ({ value => $one });
            my $p = build_or_bail($name, packets => [map { $_->{value} } @spec],
                                  more_headers => more_headers_for($block, $i),
                                  connection => 'close');
            my @packets = map { { %{ $spec[$_] }, value => $p->[$_] } } 0 .. $#$p;
            push @conns, { packets => \@packets, responses => 1 };
        }
    }

    for my $conn (@conns) {
        $conn->{head} = join('', map { $_->{value} } @{ $conn->{packets} }) =~ /^\s*HEAD\s+/ ? 1 : 0;
    }
    return \@conns;
}

# Sends one connection's packets; returns the raw response bytes.
sub send_request {
    my ($block, $conn, $timeout) = @_;
    my $name = $block->name;
    my $addr = $block->server_addr_for_client;
    $addr = $Test::Nginx::Util::ServerAddr unless defined $addr;
    my $port = $Test::Nginx::Util::ServerPortForClient;

    my ($sock, $err) = open_connection(addr => $addr, port => $port, timeout => $timeout);
    if (!$sock) {
        Test::More::fail("$name - Can't connect to $addr:$port: $err (aborted)");
        return '';
    }

    my $shutdown = $block->shutdown;
    $shutdown = 1 if defined $shutdown && $shutdown !~ /\d/;

    my $r = exchange(
        sock         => $sock,
        packets      => $conn->{packets},
        timeout      => $timeout,
        middle_delay => scalar $block->raw_request_middle_delay,
        shutdown     => $shutdown,
    );
    if ($r->{timed_out} && !defined $block->abort) {
        Test::More::fail("ERROR: client socket timed out - $name");
    }
    warn "WARNING: $name - $r->{error}\n"
        if $r->{error} && $r->{error} =~ /^read/ && !$r->{timed_out};
    return $r->{data};
}

# ---------------------------------------------------------------------
# One block, one repetition
# ---------------------------------------------------------------------

sub run_test_helper {
    my ($block, $dry_run, $repeated_req_idx) = @_;
    my $name = $block->name;

    for my $unsupported (qw(http2 http3 tcp_listen udp_listen)) {
        bail_out("$name - \"--- $unsupported\" is not supported by the compat"
                 . " Test::Nginx::Socket (t/compat)")
            if defined $block->$unsupported;
    }

    my $conns = requests_from_block($block);
    bail_out("$name - request empty") unless @$conns;

    my $timeout = parse_time(scalar $block->timeout);
    $timeout = timeout() unless defined $timeout;

    my $total = 0;
    $total += $_->{responses} for @$conns;
    # With several requests every expectation must be an array.
    my $need_array = $total > 1;

    my $req_idx = 0;
    for my $conn (@$conns) {
        my $raw = $dry_run
            ? "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
            : send_request($block, $conn, $timeout);

        for my $n (1 .. $conn->{responses}) {
            my $last_of_conn = $n == $conn->{responses};
            $raw = check_one_response($block, $raw, $conn->{head}, $dry_run,
                                      $req_idx, $repeated_req_idx, $need_array,
                                      $last_of_conn);
            if ($req_idx < $total - 1) {
                # Between requests: logs are checked after each one.
                sleep $block->wait if $block->wait;
                check_error_log($block, undef, $dry_run, $repeated_req_idx, $need_array);
                check_access_log($block, $dry_run, $repeated_req_idx)
                    unless defined $block->ignore_response;
            }
            $req_idx++;
        }
    }

    sleep $block->wait if $block->wait;
    check_stap($block);
    check_error_log($block, undef, $dry_run, $repeated_req_idx, $need_array);
    check_access_log($block, $dry_run, $repeated_req_idx)
        unless defined $block->ignore_response;
}

# Parses the response at the start of $raw, runs the response checks and
# returns the bytes left over (the next pipelined response).
sub check_one_response {
    my ($block, $raw, $head_req, $dry_run, $req_idx, $repeated_req_idx,
        $need_array, $last_of_conn) = @_;
    my $name = $block->name;
    return undef if defined $block->ignore_response;

    my ($res, $raw_headers, $left, $error, $warning);
    if (defined $block->http09) {
        $res = Test::Nginx::HTTPClient::Response->new;
        @$res{qw(code content)} = (200, defined $raw ? $raw : '');
        $raw_headers = '';
    } else {
        ($res, $raw_headers, $left, $error, $warning) = parse_response($raw, $head_req);
    }
    Test::More::fail("$name - $error") if defined $error;
    warn "WARNING: $name - $warning\n" if defined $warning && !$head_req;

    if ($last_of_conn && defined $left && length $left) {
        (my $shown = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
        warn "WARNING: $name - unexpected extra bytes after last chunk in response: \"$shown\"\n";
    }

    check_error_code($block, $res, $dry_run, $req_idx, $need_array);
    check_raw_response_headers($block, $raw_headers, $dry_run, $req_idx, $need_array);
    check_response_headers($block, $res, $raw_headers, $dry_run, $req_idx, $need_array);
    transform_response_body($block, $res, $req_idx);
    check_response_body($block, $res, $dry_run, $req_idx, $repeated_req_idx, $need_array);
    return $left;
}

# The expected value for the $req_idx-th response.
sub get_indexed_value {
    my ($name, $value, $req_idx, $need_array) = @_;
    if ($need_array) {
        return $value->[$req_idx] if ref $value eq 'ARRAY';
        bail_out("$name - You asked for many requests, the expected results should be arrays as well.");
    }
    return ref $value eq 'ARRAY' ? $value->[0] : $value;
}

sub substitute_server_port {
    my ($text) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s/\$ServerPortForClient\b/$Test::Nginx::Util::ServerPortForClient/g;
    $text =~ s/\$ServerPort\b/$Test::Nginx::Util::ServerPort/g;
    return $text;
}

# ---------------------------------------------------------------------
# Response checks
# ---------------------------------------------------------------------

sub check_error_code {
    my ($block, $res, $dry_run, $req_idx, $need_array) = @_;
    my $name = $block->name;
    my $got = ($res && $res->code) || '';
    check_or_skip($dry_run, $name, sub {
        if (defined $block->error_code_like) {
            my $pat = get_indexed_value($name, scalar $block->error_code_like, $req_idx, $need_array);
            Test::More::like($got, qr/$pat/sm, "$name - status code ok");
        } elsif (defined $block->error_code) {
            Test::More::is($got, get_indexed_value($name, scalar $block->error_code, $req_idx, $need_array),
                           "$name - status code ok");
        } else {
            Test::More::is($got, 200, "$name - status code ok");
        }
    });
}

sub check_raw_response_headers {
    my ($block, $raw_headers, $dry_run, $req_idx, $need_array) = @_;
    my $name = $block->name;
    for my $kind (qw(like unlike)) {
        my $section = "raw_response_headers_$kind";
        next unless defined $block->$section;
        my $pat = get_indexed_value($name, scalar $block->$section, $req_idx, $need_array);
        check_or_skip($dry_run, "$name - $section", sub {
            my $cmp = $kind eq 'like' ? \&Test::More::like : \&Test::More::unlike;
            $cmp->($raw_headers, qr/$pat/s, "$name - raw resp headers $kind");
        });
    }
}

sub check_response_headers {
    my ($block, $res, $raw_headers, $dry_run, $req_idx, $need_array) = @_;
    my $name = $block->name;

    if (defined $block->response_headers) {
        my $spec = get_indexed_value($name, scalar $block->response_headers, $req_idx, $need_array);
        for my $pair (@{ parse_headers($spec) }) {
            my ($key, $val) = @$pair;
            if (!defined $val) {
                check_or_skip($dry_run, "$name - response_headers", sub {
                    Test::More::unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                                       "$name - header $key not present in the raw headers");
                });
                next;
            }
            my $got = $res ? $res->header($key) : undef;
            check_or_skip($dry_run, "$name - response_headers", sub {
                Test::More::is(defined $got ? $got : '', substitute_server_port($val),
                               "$name - header $key ok");
            });
        }
    } elsif (defined $block->response_headers_like) {
        my $spec = get_indexed_value($name, scalar $block->response_headers_like, $req_idx, $need_array);
        for my $pair (@{ parse_headers($spec) }) {
            my ($key, $val) = @$pair;
            my $got = $res ? $res->header($key) : undef;
            check_or_skip($dry_run, "$name - response_headers_like", sub {
                Test::More::like(defined $got ? $got : '', qr/^$val$/,
                                 "$name - header $key like ok");
            });
        }
    }
}

my %BuiltinBodyFilters = (
    md5_hex  => sub { require Digest::MD5; Digest::MD5::md5_hex($_[0]) },
    sha1_hex => sub { require Digest::SHA; Digest::SHA::sha1_hex($_[0]) },
    uc       => sub { uc $_[0] },
    lc       => sub { lc $_[0] },
    ucfirst  => sub { ucfirst $_[0] },
    lcfirst  => sub { lcfirst $_[0] },
    length   => sub { length $_[0] },
);

# "--- response_body_filters": names of builtin filters, code refs, a
# list of either, or one list per request.
sub transform_response_body {
    my ($block, $res, $req_idx) = @_;
    my $filters = $block->response_body_filters;
    return unless defined $filters && $res && defined $res->content;
    my $name = $block->name;

    if (!ref $filters) {
        $filters = [split ' ', $filters];
    } elsif (ref $filters ne 'ARRAY') {
        $filters = [$filters];
    }
    if (@$filters && ref $filters->[0] eq 'ARRAY') {
        $filters = $filters->[$req_idx];
        bail_out("$name - the ---response_body_filters two-dimensional array "
                 . "unmatch the specified request($req_idx)") unless defined $filters;
        $filters = [$filters] unless ref $filters eq 'ARRAY';
    }

    my $content = $res->content;
    for my $f (@$filters) {
        my $code = ref $f eq 'CODE' ? $f : $BuiltinBodyFilters{$f};
        bail_out("$name - unknown filter, \"$f\", specified in the --- response_body_filters section")
            unless $code;
        $content = $code->($content);
    }
    $res->content($content);
}

sub check_response_body {
    my ($block, $res, $dry_run, $req_idx, $repeated_req_idx, $need_array) = @_;
    my $name = $block->name;
    my $content = $res ? $res->content : undef;

    if (defined $block->response_body || defined $block->response_body_eval) {
        my $expected;
        if ($block->response_body_eval) {
            Test::More::diag("$name - response_body_eval is DEPRECATED. Use response_body eval instead.");
            $expected = eval get_indexed_value($name, scalar $block->response_body_eval, $req_idx, $need_array);
            warn $@ if $@;
        } else {
            $expected = get_indexed_value($name, scalar $block->response_body, $req_idx, $need_array);
        }
        Encode::from_to($expected, 'UTF-8', scalar $block->charset)
            if $block->charset && defined $expected && !ref $expected;
        $expected = substitute_server_port($expected);

        my $suffix = "(repeated req $repeated_req_idx, req $req_idx)";
        check_or_skip($dry_run, "$name - response_body", sub {
            if (ref $expected) {
                Test::More::like($content, $expected, "$name - response_body - like $suffix");
            } else {
                is_str($content, $expected, "$name - response_body - response is expected $suffix");
            }
        });

    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my $type = defined $block->response_body_like ? 'like' : 'unlike';
        my $section = "response_body_$type";
        my $pat = substitute_server_port(
            get_indexed_value($name, scalar $block->$section, $req_idx, $need_array));
        my $summary = trim($content);
        $summary = '' unless defined $summary;
        check_or_skip($dry_run, "$name - $section", sub {
            my $cmp = $type eq 'like' ? \&Test::More::like : \&Test::More::unlike;
            $cmp->($content, qr/$pat/s, "$name - $section - response is expected ($summary)");
        });
    }

    for my $check (@ResponseBodyChecks) {
        $check->($block, $content, $req_idx, $repeated_req_idx, $dry_run);
    }
}

# systemtap is not supported; like the real module without
# TEST_NGINX_USE_STAP, a block with "--- stap" gets one skipped subtest.
sub check_stap {
    my ($block) = @_;
    return unless $block->{stap};
    SKIP: {
        Test::More::skip($block->name . " - stap_out - tests skipped due to"
                         . " env TEST_NGINX_USE_STAP is not set", 1);
    }
}

# ---------------------------------------------------------------------
# Log checks
# ---------------------------------------------------------------------

# A log pattern section as a list: a string holds one substring per
# line, a qr// or an eval'ed array is taken as is.
sub patterns_of {
    my ($value) = @_;
    if (!ref $value) {
        chomp $value;
        return [split /\n+/, $value];
    }
    return [$value] if ref $value eq 'Regexp';
    return [@$value];
}

sub line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

sub fmt_str {
    my ($s) = @_;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# Every pattern must match some line: one subtest per pattern.
sub expect_patterns {
    my ($name, $section, $file, $pats, $lines, $dry_run, $req_desc) = @_;
    my @pending = @$pats;
    for my $line (@$lines) {
        for my $pat (@pending) {
            next unless defined $pat && line_matches($line, $pat);
            check_or_skip($dry_run, "$name - $section", sub {
                Test::More::pass("$name - pattern \"$pat\" matches a line in $file$req_desc");
            });
            undef $pat;
        }
    }
    for my $pat (grep { defined } @pending) {
        check_or_skip($dry_run, "$name - $section", sub {
            Test::More::fail("$name - pattern \"$pat\" should match a line in $file$req_desc");
        });
    }
}

# No pattern may match any line: a failure per matching line, a pass per
# pattern that never matched.
sub reject_patterns {
    my ($name, $section, $file, $pats, $lines, $dry_run, $req_desc) = @_;
    my %found;
    for my $i (0 .. $#$lines) {
        my $line = $lines->[$i];
        for my $pat (@$pats) {
            next unless defined $pat && line_matches($line, $pat);
            $found{$pat} = 1;
            check_or_skip($dry_run, "$name - $section", sub {
                my $end = $i + 9 < $#$lines ? $i + 9 : $#$lines;
                Test::More::fail("$name - pattern \"" . fmt_str($pat)
                    . "\" should not match any line in $file but matches line \""
                    . fmt_str($line) . "\"$req_desc\n"
                    . join('', @$lines[$i + 1 .. $end]));
            });
        }
    }
    for my $pat (grep { defined && !$found{$_} } @$pats) {
        check_or_skip($dry_run, "$name - $section", sub {
            Test::More::pass("$name - pattern \"" . fmt_str($pat)
                             . "\" does not match a line in $file$req_desc");
        });
    }
}

sub mentions {
    my ($value, $needle) = @_;
    return 0 unless defined $value;
    return grep({ mentions($_, $needle) } @$value) ? 1 : 0 if ref $value eq 'ARRAY';
    return index("$value", $needle) >= 0;
}

sub check_error_log {
    my ($block, $res, $dry_run, $repeated_req_idx, $need_array) = @_;
    my $name = $block->name;
    my $req_desc = " (req $repeated_req_idx)";
    my $lines;

    check_grep_error_log($block, $dry_run, $repeated_req_idx, \$lines);

    for my $spec (['error_log', \&expect_patterns], ['no_error_log', \&reject_patterns]) {
        my ($section, $checker) = @$spec;
        my $value = $block->$section;
        next unless defined $value;
        $lines ||= error_log_data();
        $checker->($name, $section, 'error.log', patterns_of($value), $lines,
                   $dry_run, $req_desc);
    }

    return if $dry_run;

    # Serious messages nobody asked about are worth a warning.
    $lines ||= error_log_data();
    for my $level (qw(alert crit emerg)) {
        next if mentions(scalar $block->error_log, "[$level")
             || mentions(scalar $block->no_error_log, "[$level");
        for my $line (grep { /\[$level\]/ } @$lines) {
            warn "WARNING: $name - " . fmt_str($line) . "\n";
        }
    }
    for my $line (grep { /\bAssertion .*?failed\b/ } @$lines) {
        chomp(my $l = $line);
        Test::More::fail("$name - $l");
    }
}

# "--- grep_error_log" + "--- grep_error_log_out": the matched parts of
# the error log lines, one per line, compared to the expected text.
sub check_grep_error_log {
    my ($block, $dry_run, $repeated_req_idx, $lines_ref) = @_;
    my $name = $block->name;
    my $pat = $block->grep_error_log;
    my $expected = $block->grep_error_log_out;
    if (!defined $pat) {
        bail_out("$name - No --- grep_error_log defined but --- grep_error_log_out is defined")
            if defined $expected;
        return;
    }
    $pat = $pat->[$repeated_req_idx] if ref $pat eq 'ARRAY';
    return unless defined $pat;
    bail_out("$name - No --- grep_error_log_out defined but --- grep_error_log is defined")
        unless defined $expected;
    $expected = $expected->[$repeated_req_idx] if ref $expected eq 'ARRAY';

    check_or_skip($dry_run, "$name - error_log", sub {
        $$lines_ref ||= error_log_data();
        my $matched = '';
        for my $line (@{ $$lines_ref }) {
            my $m = ref $pat ? ($line =~ $pat ? $& : undef)
                  : (index($line, $pat) >= 0 ? $pat : undef);
            $matched .= "$m\n" if defined $m && $m !~ /\n/;
        }
        my $desc = "$name - grep_error_log_out (req $repeated_req_idx)";
        ref $expected eq 'Regexp'
            ? Test::More::like($matched, $expected, $desc)
            : is_str($matched, $expected, $desc);
    });
}

sub check_access_log {
    my ($block, $dry_run, $repeated_req_idx) = @_;
    my $name = $block->name;
    my $req_desc = " (req $repeated_req_idx)";
    my $lines;
    for my $spec (['access_log', \&expect_patterns], ['no_access_log', \&reject_patterns]) {
        my ($section, $checker) = @$spec;
        my $value = $block->$section;
        next unless defined $value;
        $lines ||= access_log_data();
        $checker->($name, $section, 'access.log', patterns_of($value), $lines,
                   $dry_run, $req_desc);
    }
}

# "--- shutdown_error_log" / "--- no_shutdown_error_log": checked once
# the block's server has been stopped (before the next block or at exit).
sub check_shutdown_error_log {
    my ($block, $dry_run) = @_;
    my $name = $block->name;
    $dry_run = $dry_run ? 'TEST_NGINX_NO_CLEAN' : 0;
    my $lines = error_log_data();
    if (defined $block->no_shutdown_error_log) {
        reject_patterns($name, 'no_shutdown_error_log', 'error.log',
                        patterns_of(scalar $block->no_shutdown_error_log), $lines, $dry_run, '');
    }
    if (defined $block->shutdown_error_log) {
        expect_patterns($name, 'shutdown_error_log', 'error.log',
                        patterns_of(scalar $block->shutdown_error_log), $lines, $dry_run, '');
    }
}

1;
