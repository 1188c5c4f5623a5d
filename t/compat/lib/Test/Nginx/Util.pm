package Test::Nginx::Util;

# Server-management half of our compat re-implementation of openresty's
# Test::Nginx (see t/compat/README.md): settings, the generated
# nginx.conf, starting/stopping nginx per test block and reading its
# logs.  Public names, environment variables and the layout of the
# generated configuration follow the real module's documentation so that
# test files run unchanged under either implementation.

use strict;
use warnings;

use Carp qw(croak);
use Exporter 'import';
use File::Path qw(make_path remove_tree);
use File::Spec ();
use IO::Socket::INET ();
use List::Util ();
use POSIX qw(:sys_wait_h SIGKILL SIGQUIT SIGTERM);
use Scalar::Util qw(looks_like_number);
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);

our $VERSION = '0.29';

our @EXPORT = qw(
    env_to_nginx is_str check_accum_error_log is_running
    no_long_string server_addr server_name parse_time verbose sleep_time
    bail_out add_cleanup_handler access_log_data error_log_data
    setup_server_root write_config_file get_canon_version
    get_nginx_version trim show_all_chars parse_headers run_tests run_test
    get_pid_from_pidfile add_block_preprocessor timeout
    worker_connections workers master_on master_off config_preamble
    repeat_each master_process_enabled log_level no_shuffle
    no_root_location html_dir server_root server_port
    server_port_for_client no_nginx_manager use_hup expand_env_in_text
    $NoLongString $ServerAddr $ServerName $ServerPort $ServerPortForClient
    $NginxVersion $PidFile $ServRoot $ConfFile $RunTestHelper
    $CheckErrorLog $CheckShutdownErrorLog $FilterHttpConfig
    $NoNginxManager $RepeatEach
);

# ---------------------------------------------------------------------
# Settings.  Environment variables are read once, at load time, like the
# real module does; the exported functions below change them afterwards.
# ---------------------------------------------------------------------

our $Verbose             = $ENV{TEST_NGINX_VERBOSE};
our $NginxBinary         = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $LoadModules         = $ENV{TEST_NGINX_LOAD_MODULES};
our $ServerAddr          = '127.0.0.1';
our $ServerName          = 'localhost';
our $Randomize           = $ENV{TEST_NGINX_RANDOMIZE};
our $ServerPort          = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $Workers             = 1;
our $WorkerConnections   = 64;
our $LogLevel            = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $NoRootLocation      = 0;
our $RepeatEach          = 1;
our $NoShuffle           = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $Timeout             = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $TestNginxSleep      = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $UseValgrind         = $ENV{TEST_NGINX_USE_VALGRIND};
our $CheckAccumErrLog    = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $NoNginxManager      = $ENV{TEST_NGINX_NO_NGINX_MANAGER} || 0;
our $ForceRestartOnTest  = defined $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST}
                           ? $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} : 1;
our $EventType           = $ENV{TEST_NGINX_EVENT_TYPE};
our $PostponeOutput      = $ENV{TEST_NGINX_POSTPONE_OUTPUT};
our $ReusePort           = $ENV{TEST_NGINX_REUSE_PORT};
our $WorkerUser          = $ENV{TEST_NGINX_WORKER_USER};
our $NoLongString;
our $ConfigPreamble      = '';
our $FilterHttpConfig;

our (@EnvToNginx, @CleanupHandlers, @BlockPreprocessors);

# Hooks filled in by Test::Nginx::Socket (the request/response side).
our ($RunTestHelper, $CheckErrorLog, $CheckShutdownErrorLog);

our ($NginxVersion, $NginxRawVersion, $OpenSSLVersion);
our ($PrevConfig, $PrevBlock);
our $ErrLogFilePos = 0;

# Only the process that loaded us manages nginx at exit; a test's own
# forked helpers must not stop the server when they exit.
my $MainPid = $$;

# Seconds nginx may take to start serving (ten times that under
# valgrind).
our $StartupWait = 5;

if (defined $WorkerUser && $WorkerUser !~ /^\w+(?:\s+\w+)?$/) {
    die "Bad value in the env TEST_NGINX_WORKER_USER: $WorkerUser\n";
}

if ($Randomize) {
    $ServerPort = $ServerPortForClient = pick_free_port()
        or die "Cannot find an available listening port number.\n";
}

our ($ServRoot, $LogDir, $ErrLogFile, $AccLogFile, $HtmlDir, $ConfDir,
     $ConfFile, $PidFile, $StartupStderrFile);

set_server_root($Randomize
    ? File::Spec->rel2abs("t/servroot_$ServerPort")
    : File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot'));

sub set_server_root {
    my ($root) = @_;
    $ServRoot          = $root;
    $LogDir            = File::Spec->catfile($ServRoot, 'logs');
    $ErrLogFile        = File::Spec->catfile($LogDir, 'error.log');
    $AccLogFile        = File::Spec->catfile($LogDir, 'access.log');
    $HtmlDir           = File::Spec->catfile($ServRoot, 'html');
    $ConfDir           = File::Spec->catfile($ServRoot, 'conf');
    $ConfFile          = File::Spec->catfile($ConfDir, 'nginx.conf');
    $PidFile           = File::Spec->catfile($LogDir, 'nginx.pid');
    # nginx's own stderr during startup; configuration errors land here
    # when the binary's default error log is stderr (as in Debian's).
    $StartupStderrFile = File::Spec->catfile($LogDir, 'startup.stderr');
    $ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
}

sub pick_free_port {
    for (1 .. 1000) {
        my $port = 1985 + int rand(65535 - 1985);
        my $sock = IO::Socket::INET->new(
            LocalAddr => $ServerAddr, LocalPort => $port,
            Proto => 'tcp', Listen => 1, ReuseAddr => 1,
        ) or next;
        close $sock;
        return $port;
    }
    return;
}

# --- simple setters/getters (names and semantics as documented) -------

sub no_long_string ()        { $NoLongString = 1 }
sub no_shuffle ()            { $NoShuffle = 1 }
sub no_root_location ()      { $NoRootLocation = 1 }
sub no_nginx_manager ()      { $NoNginxManager = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub master_on ()             { $MasterProcessEnabled = 'on' }
sub master_off ()            { $MasterProcessEnabled = 'off' }
sub config_preamble ($)      { $ConfigPreamble = shift }
sub html_dir ()              { $HtmlDir }
sub server_root ()           { $ServRoot }
sub sleep_time               { $TestNginxSleep }
sub verbose                  { $Verbose }

sub use_hup () {
    # The HUP-reload mode is an optimisation of the real module; a full
    # restart per block gives the same results, only slower.
    warn "use_hup: not supported by the compat Test::Nginx, restarting"
       . " nginx per block instead\n";
}

sub _accessor {
    my ($ref, @args) = @_;
    $$ref = $args[0] if @args;
    return $$ref;
}

sub server_addr (@)            { _accessor(\$ServerAddr, @_) }
sub server_name (@)            { _accessor(\$ServerName, @_) }
sub server_port (@)            { _accessor(\$ServerPort, @_) }
sub server_port_for_client (@) { _accessor(\$ServerPortForClient, @_) }
sub timeout (@)                { _accessor(\$Timeout, @_) }
sub repeat_each (@)            { _accessor(\$RepeatEach, @_) }
sub worker_connections (@)     { _accessor(\$WorkerConnections, @_) }
sub workers (@)                { _accessor(\$Workers, @_) }
sub log_level (@)              { _accessor(\$LogLevel, @_) }

sub master_process_enabled (@) {
    $MasterProcessEnabled = $_[0] ? 'on' : 'off' if @_;
    return $MasterProcessEnabled;
}

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v\n"
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# Later-registered handlers run first, as in the real module.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)    { unshift @CleanupHandlers, shift }

# --- small helpers also exported by the real module --------------------

# "1.5", "1.5s" and "50ms" are all accepted; the result is in seconds.
sub parse_time ($) {
    my ($tm) = @_;
    return $tm unless defined $tm;
    return $1 / 1000 if $tm =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $tm =~ /^\s*([\d.]+)\s*s?\s*$/;
    return $tm;
}

sub trim ($) {
    my ($s) = @_;
    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\n/ /g;
    $s =~ s/\s{2,}/ /g;
    return $s;
}

sub show_all_chars ($) {
    my ($s) = @_;
    $s =~ s/\n/\\n/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\t/\\t/g;
    return $s;
}

# "--- response_headers" syntax: "Name: value" per line, "!Name" for a
# header that must be absent (value undef).  Returns a list of
# [name, value] pairs in the order written.
sub parse_headers ($) {
    my ($text) = @_;
    my @pairs;
    for my $line (split /\n/, defined $text ? $text : '') {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '';
        if ($line =~ s/^!\s*//) {
            push @pairs, [$line, undef];
        } else {
            my ($key, $val) = split /\s*:\s*/, $line, 2;
            push @pairs, [$key, defined $val ? $val : ''];
        }
    }
    return \@pairs;
}

# String comparison used for bodies and the like: the real module uses
# Test::LongString (not packaged in Debian); we report the first
# differing offset and, for multi-line values, a unified diff.
sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    if (ref $expected && ref $expected eq 'Regexp') {
        return Test::More::like($got, $expected, $desc);
    }
    my $ok = defined $got && defined $expected ? $got eq $expected
           : !defined $got && !defined $expected;
    my $tb = Test::More->builder;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $tb->ok($ok, $desc);
    $tb->diag(describe_string_mismatch($got, $expected)) unless $ok;
    return $ok;
}

sub describe_string_mismatch {
    my ($got, $expected) = @_;
    # One line each, control characters escaped, long values cut unless
    # no_long_string() was called.
    my $show = sub {
        my ($s) = @_;
        return 'undef' unless defined $s;
        my $max = $NoLongString ? length $s : 500;
        my $t = substr $s, 0, $max;
        $t =~ s/\\/\\\\/g;
        $t =~ s/"/\\"/g;
        $t =~ s/\n/\\n/g;
        $t =~ s/\r/\\r/g;
        $t =~ s/\t/\\t/g;
        $t =~ s/([^\x20-\x7e])/sprintf '\\x{%02x}', ord $1/ge;
        return qq{"$t"} . (length $s > $max ? '...' : '');
    };
    my $msg = "         got: " . $show->($got) . "\n"
            . "    expected: " . $show->($expected) . "\n";
    return $msg unless defined $got && defined $expected;

    my $i = 0;
    my $n = length($got) < length($expected) ? length($got) : length($expected);
    $i++ while $i < $n && substr($got, $i, 1) eq substr($expected, $i, 1);
    $msg .= "    length of got: " . length($got) . ", expected: "
          . length($expected) . "; strings begin to differ at char "
          . ($i + 1) . "\n";

    if (!$ENV{TEST_SHOW_NO_DIFFS} && ($got =~ /\n./ || $expected =~ /\n./)
        && eval { require Text::Diff; 1 })
    {
        $msg .= "    diff (- expected, + got):\n"
              . Text::Diff::diff(\$expected, \$got, { STYLE => 'Unified' });
    }
    return $msg;
}

# Replaces $TEST_NGINX_FOO with the environment value; an undefined
# variable aborts the run, as in the real module.  TEST_NGINX_RAND_PORT_N
# gets a free port, stable within one block.
our %RandPorts;

sub expand_env_in_text ($$) {
    my ($text, $name) = @_;
    return $text unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{env_value_for_expansion($1, $name)}ge;
    return $text;
}

sub env_value_for_expansion {
    my ($var, $name) = @_;
    if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
        $RandPorts{$var} ||= pick_free_port()
            or bail_out("$name - Cannot find an available listening port number for $var.\n");
        return $RandPorts{$var};
    }
    defined $ENV{$var} or bail_out("$name - No environment $var defined.\n");
    return $ENV{$var};
}

# ---------------------------------------------------------------------
# Aborting and cleaning up
# ---------------------------------------------------------------------

my $CleanupDone;

sub cleanup () {
    return if $CleanupDone++;
    for my $hdl (@CleanupHandlers) {
        eval { $hdl->(); 1 } or warn "cleanup handler failed: $@";
    }
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------
# Knowing the nginx binary
# ---------------------------------------------------------------------

our $SupportsErrorLogOption;
our %MissingHttpModules;

sub can_run {
    my ($cmd) = @_;
    if ($cmd =~ m{/}) {
        return -f $cmd && -x _ ? $cmd : undef;
    }
    for my $dir (split /:/, defined $ENV{PATH} ? $ENV{PATH} : '') {
        next if $dir eq '';
        my $abs = File::Spec->catfile($dir, $cmd);
        return $abs if -f $abs && -x _;
    }
    return undef;
}

sub get_canon_version (@) {
    return sprintf "%d.%03d%03d", $_[0], $_[1], $_[2];
}

# Runs "nginx -V" once: the version (for skip_nginx), the OpenSSL
# version (skip_openssl), modules left out at build time (so we do not
# emit their temp-path directives) and whether "-e" is available.
sub get_nginx_version () {
    my $out = `$NginxBinary -V 2>&1`;
    if (!defined $out || $? != 0) {
        bail_out("Failed to get the version of the Nginx in PATH: "
                 . (defined $out ? $out : ''));
    }
    if ($out =~ /built with OpenSSL (\d+)\.(\d+)\.(\d+)([a-z])?/) {
        $OpenSSLVersion = get_canon_version($1, $2, $3)
                        . (defined $4 ? sprintf('%03d', ord($4) - ord('a')) : '');
    }
    for my $mod (qw(proxy fastcgi uwsgi scgi)) {
        $MissingHttpModules{$mod} = 1 if $out =~ /--without-http_${mod}_module\b/;
    }
    my $help = `$NginxBinary -h 2>&1`;
    $SupportsErrorLogOption = defined $help && $help =~ /^\s*-e\s+filename/m;

    if ($out =~ m{(?:nginx|openresty)[^/\s]*/(\d+)\.(\d+)\.(\d+)}) {
        $NginxRawVersion = "$1.$2.$3";
        return get_canon_version($1, $2, $3);
    }
    bail_out("Failed to parse the output of \"nginx -V\": $out\n");
}

# ---------------------------------------------------------------------
# The server root and the generated configuration
# ---------------------------------------------------------------------

# Removes what a previous block left (only the directories we create, so
# a mistaken TEST_NGINX_SERVROOT cannot wipe unrelated data) and lays out
# a fresh conf/ html/ logs/.
sub setup_server_root (;$) {
    if (-d $ServRoot) {
        remove_tree($ConfDir, $HtmlDir, $LogDir,
                    glob("$ServRoot/*_temp"), glob("$ServRoot/*_cache"));
    }
    for my $dir ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        next if -d $dir;
        make_path($dir) or bail_out("Failed to do mkdir $dir: $!\n");
    }
    write_file("$HtmlDir/index.html",
        '<html><head><title>It works!</title></head><body>It works!</body></html>');
}

sub write_file {
    my ($path, $content) = @_;
    open my $out, '>', $path or bail_out("Can't open $path for writing: $!\n");
    binmode $out;
    print $out $content;
    close $out or bail_out("Can't write $path: $!\n");
}

# "--- user_files": either ">>> name [touch-time]" headed chunks or an
# eval'ed [[name, body, touch-time], ...] list.  Relative names go under
# html/.
sub write_user_files ($) {
    my ($block) = @_;
    my $name = $block->name;
    my $files = $block->user_files;
    return unless $files;

    if (!ref $files) {
        my @parsed;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)(?:\s+(.+?))?\s*$/) {
                push @parsed, [$1, '', $2];
            } elsif (@parsed) {
                $parsed[-1][1] .= $line;
            }
        }
        $files = \@parsed;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - wrong value type: " . ref($files)
                 . ", only scalar or ARRAY are accepted");
    }

    for my $file (@$files) {
        my ($fname, $body, $date) = @$file;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        (my $dir = $path) =~ s{/[^/]*$}{};
        make_path($dir) if length $dir && !-d $dir;
        write_file($path, expand_env_in_text(defined $body ? $body : '', $name));
        if ($date) {
            my $epoch = touch_time_to_epoch($date);
            bail_out("$name - bad user_files timestamp: $date") unless defined $epoch;
            utime $epoch, $epoch, $path;
        }
    }
}

# touch -t syntax, [[CC]YY]MMDDhhmm[.ss], read as GMT.
sub touch_time_to_epoch {
    my ($spec) = @_;
    my ($digits, $sec) = $spec =~ /^(\d{8}|\d{10}|\d{12})(?:\.(\d\d))?$/
        or return undef;
    my @d = $digits =~ /(\d\d)/g;
    my $year;
    if (@d == 6) {
        $year = shift(@d) * 100 + shift(@d);
    } elsif (@d == 5) {
        my $yy = shift @d;
        $year = $yy >= 69 ? 1900 + $yy : 2000 + $yy;
    } else {
        $year = (gmtime)[5] + 1900;
    }
    my ($mon, $day, $hour, $min) = @d;
    return eval { timegm($sec || 0, $min, $hour, $day, $mon - 1, $year) };
}

# Directives that must not repeat in one context: we only add ours when
# the test's own http_config does not set them.
sub temp_path_directives {
    my ($http_config) = @_;
    my @out;
    my %dirs = (
        client_body => 'client_body_temp_path',
        proxy       => 'proxy_temp_path',
        fastcgi     => 'fastcgi_temp_path',
        uwsgi       => 'uwsgi_temp_path',
        scgi        => 'scgi_temp_path',
    );
    for my $mod (sort keys %dirs) {
        my $directive = $dirs{$mod};
        next if $MissingHttpModules{$mod};
        next if $http_config =~ /\b\Q$directive\E\b/;
        push @out, "    $directive $ServRoot/${mod}_temp;";
    }
    return join "\n", @out;
}

# Writes conf/nginx.conf.  The layout mirrors the real module's, with
# these differences:
#  - "daemon off": nginx runs as our child (see launch_nginx), so we can
#    reap it; where init does not reap orphans (containers) a daemonized
#    nginx would linger as a zombie after every block;
#  - *_temp_path lines: the real module relies on an nginx built with
#    prefix-relative temp paths, distro builds point them at
#    /var/lib/nginx;
#  - load_module lines come first, so main_config may use the modules'
#    directives too.
sub write_config_file ($$) {
    my ($block, $config) = @_;
    my $name = $block->name;

    my $http_config = expand_env_in_text(scalar $block->http_config, $name);
    $http_config = '' unless defined $http_config;
    $http_config = $FilterHttpConfig->($http_config) if $FilterHttpConfig;
    my $main_config = expand_env_in_text(scalar $block->main_config, $name);
    $main_config = '' unless defined $main_config;
    my $post_main_config = expand_env_in_text(scalar $block->post_main_config, $name);
    $post_main_config = '' unless defined $post_main_config;
    $config = '' unless defined $config;

    my $err_log_file = $block->error_log_file || $ErrLogFile;
    my $server_name = defined $block->server_name ? $block->server_name : $ServerName;
    (my $quoted_server_name = $server_name) =~ s/(['\\])/\\$1/g;

    my $modules = join '', map { "load_module $_;\n" }
                           grep { length } split /\s+/, defined $LoadModules ? $LoadModules : '';
    my $env = join '', map { "env $_;\n" }
        qw(MOCKEAGAIN_VERBOSE MOCKEAGAIN MOCKEAGAIN_WRITE_TIMEOUT_PATTERN
           LD_PRELOAD LD_LIBRARY_PATH DYLD_INSERT_LIBRARIES DYLD_FORCE_FLAT_NAMESPACE),
        map { /\s/ ? "'$_'" : $_ } @EnvToNginx;

    my $extra_http = temp_path_directives($http_config);
    if (defined $PostponeOutput && $http_config !~ /\bpostpone_output\b/) {
        bail_out("Bad TEST_NGINX_POSTPONE_OUTPUT value: $PostponeOutput\n")
            if $PostponeOutput !~ /^\d+$/;
        $extra_http .= "\n    postpone_output $PostponeOutput;";
    }

    my $listen_opts = $ReusePort ? ' reuseport' : '';
    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    my $event_type = $EventType ? "    use $EventType;\n" : '';

    # Workers must be able to read files in the work tree when we run as
    # root (the default "nobody" often cannot).
    my $user = defined $WorkerUser ? "user $WorkerUser;\n"
             : $> == 0             ? "user root;\n"
             : '';

    write_file($ConfFile, <<"_EOC_");
${modules}worker_processes  $Workers;
daemon off;
master_process $MasterProcessEnabled;
error_log $err_log_file $LogLevel;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;

    default_type text/plain;
    keepalive_timeout  68;

$extra_http

$http_config

    server {
        listen          $ServerPort$listen_opts;
        server_name     '$quoted_server_name';

        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

events {
    accept_mutex off;

    worker_connections  $WorkerConnections;
$event_type}
env ASAN_OPTIONS;
env MOCKNOEAGAIN_VERBOSE;
env MOCKNOEAGAIN;
$user
_EOC_
}

# ---------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------

sub proc_field {
    my ($pid, $idx) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $stat = <$fh>;
    return undef unless defined $stat && $stat =~ /\)\s+(.*)$/s;
    my @f = split ' ', $1;      # fields after "(comm)": state is index 0
    return $f[$idx];
}

# An exited daemon that nobody has reaped yet still answers kill(0); for
# us it is gone.
sub is_running ($) {
    my ($pid) = @_;
    return 0 unless $pid && $pid =~ /^\d+$/;
    waitpid($pid, WNOHANG);     # reap it if it happens to be our child
    return 0 unless kill 0, $pid;
    my $state = proc_field($pid, 0);
    return 0 if defined $state && $state eq 'Z';
    return 1;
}

# Guards against signalling an unrelated process that reused the pid of
# a stale pid file.
sub looks_like_our_nginx {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return 1;  # no procfs: trust it
    local $/;
    my $cmdline = <$fh>;
    return defined $cmdline && $cmdline =~ /nginx/;
}

sub child_pids {
    my ($ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or return;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my $pp = proc_field($pid, 1);
        push @kids, $pid if defined $pp && $pp == $ppid;
    }
    return @kids;
}

sub wait_until_gone {
    my ($pid, $seconds) = @_;
    my $deadline = time + $seconds;
    while (is_running($pid)) {
        return 0 if time >= $deadline;
        sleep 0.02;
    }
    return 1;
}

# Graceful stop first (QUIT lets nginx finish logging and, under
# valgrind, report leaks), then TERM, then KILL for the process and its
# workers.
sub kill_process ($$$) {
    my ($pid, $grace, $name) = @_;
    return unless is_running($pid);
    my @workers = child_pids($pid);
    $grace = $UseValgrind ? 60 : timeout() unless defined $grace && $grace > 0;

    kill SIGQUIT, $pid;
    return if wait_until_gone($pid, $grace);

    warn "$name - timeout when waiting for the process $pid to exit\n";
    kill SIGTERM, $pid;
    return if wait_until_gone($pid, 1);

    warn "$name - WARNING: killing the child process $pid with force...\n";
    push @workers, child_pids($pid);
    # nginx leads its own process group (see spawn): that takes the
    # workers down too.
    kill SIGKILL, (getpgrp($pid) == $pid ? -$pid : $pid),
                  grep { is_running($_) } @workers;
    wait_until_gone($_, 2) for $pid, @workers;
}

# Like get_pid_from_pidfile() but quiet: undef when there is no usable
# pid file (nginx removes it on exit).
sub read_pid_file {
    open my $in, '<', $PidFile or return undef;
    my $pid = do { local $/; <$in> };
    close $in;
    return defined $pid && $pid =~ /^\s*(\d+)\s*$/ ? $1 : undef;
}

sub get_pid_from_pidfile ($) {
    my ($name) = @_;
    open my $in, '<', $PidFile
        or bail_out("$name - Failed to open the pid file $PidFile for reading: $!");
    my $pid = do { local $/; <$in> };
    close $in;
    $pid = '' unless defined $pid;
    $pid =~ s/\s+//g;
    return $pid;
}

our $LastNginxPid;

# The nginx currently serving (from the pid file, or the one we started
# if the pid file has gone missing), or undef.
sub running_nginx_pid {
    for my $pid (read_pid_file(), $LastNginxPid) {
        return $pid if $pid && is_running($pid) && looks_like_our_nginx($pid);
    }
    return undef;
}

sub stop_nginx {
    my ($name) = @_;
    my $pid = running_nginx_pid();
    kill_process($pid, undef, $name) if $pid;
    unlink $PidFile if -f $PidFile;
    undef $LastNginxPid;
}

sub nginx_command {
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile);
    # Send startup messages to logs/error.log like an nginx built with a
    # prefix-relative default error log would; distro builds default to
    # stderr, which we capture as well (see error_log_data).
    push @cmd, '-e', $ErrLogFile if $SupportsErrorLogOption;
    if ($UseValgrind) {
        my @opts = $UseValgrind =~ /^\d+$/
            ? (qw(--num-callers=100 -q --tool=memcheck --leak-check=full
                  --show-possibly-lost=no --gen-suppressions=all),
               "--suppressions=" . write_core_suppressions(),
               (-f 'valgrind.suppress' ? '--suppressions=valgrind.suppress' : ()))
            : ('-q', split ' ', $UseValgrind);
        unshift @cmd, 'valgrind', @opts, "--log-file=$LogDir/valgrind.%p.log";
    }
    return @cmd;
}

# nginx itself does not free a few per-process allocations before it
# exits (the copied environment, the connection and event arrays).  Any
# nginx under memcheck reports them, so we suppress exactly these; a
# project-specific ./valgrind.suppress is used as well, as documented.
sub write_core_suppressions {
    my $file = File::Spec->catfile($ConfDir, 'valgrind-nginx-core.supp');
    my $supp = '';
    my @stacks = (
        [qw(fun:ngx_set_environment ...)],
        [qw(fun:ngx_event_process_init ...)],
        # Stripped binaries: ngx_event_process_init is a static function
        # called straight from the process cycle.
        [qw(obj:*/nginx fun:ngx_single_process_cycle)],
        [qw(obj:*/nginx obj:*/nginx obj:*/nginx fun:ngx_spawn_process)],
    );
    for my $i (0 .. $#stacks) {
        $supp .= "{\n   nginx-core-exit-leak-$i\n   Memcheck:Leak\n"
               . "   match-leak-kinds: definite\n   fun:malloc\n   fun:ngx_alloc\n"
               . join('', map { "   $_\n" } @{ $stacks[$i] }) . "}\n";
    }
    write_file($file, $supp);
    return $file;
}

# fork+exec with stdout discarded and stderr captured in a file.  The
# child gets its own process group (a Ctrl-C in the terminal is for the
# test, not for nginx; and the whole group can be killed at once).  It
# never returns into Perl (no END blocks, no TAP output).
sub spawn {
    my ($cmd) = @_;
    my $pid = fork;
    bail_out("fork() failed: $!") unless defined $pid;
    return $pid if $pid;

    setpgrp(0, 0);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', $StartupStderrFile;
    { no warnings 'exec'; exec { $cmd->[0] } @$cmd; }
    print STDERR "failed to execute $cmd->[0]: $!\n";
    POSIX::_exit(127);
}

# True once something listens on $port.  /proc/net/tcp is used so no
# probe connection shows up in nginx's logs.
sub port_is_listening {
    my ($port) = @_;
    my $have_proc;
    for my $file ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $file or next;
        $have_proc = 1;
        while (my $line = <$fh>) {
            my @f = split ' ', $line;
            next unless @f > 3 && $f[1] =~ /:([0-9A-Fa-f]{4})$/;
            return 1 if hex($1) == $port && $f[3] eq '0A';
        }
    }
    return 0 if $have_proc;
    my $sock = IO::Socket::INET->new(
        PeerAddr => $ServerAddr, PeerPort => $port, Proto => 'tcp', Timeout => 0.5);
    return $sock ? 1 : 0;
}

sub read_startup_stderr {
    open my $in, '<', $StartupStderrFile or return '';
    local $/;
    my $text = <$in>;
    return defined $text ? $text : '';
}

sub tail_of_error_log {
    my ($n) = @_;
    open my $in, '<', $ErrLogFile or return '';
    my @lines = <$in>;
    return join '', @lines > $n ? @lines[-$n .. -1] : @lines;
}

# Starts nginx once, in the foreground as our child, and waits until it
# either exits (a broken configuration) or serves: its pid is in the pid
# file (written after the configuration was loaded) and the port
# listens.  Returns
#   { status => wait status, exited => 1 }     nginx exited
#   { status => 0, pid => $pid }               nginx is up
#   { status => 0, error => $text }            neither within the time
#                                              limit (nginx was killed)
sub launch_nginx {
    my @cmd = nginx_command();
    my $wait = $UseValgrind ? 10 * $StartupWait : $StartupWait;
    my $pid = spawn(\@cmd);
    my $deadline = time + $wait;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            return { status => $?, exited => 1 };
        }
        my $serving = read_pid_file();
        if (defined $serving && $serving == $pid && port_is_listening($ServerPort)) {
            return { status => 0, pid => $pid };
        }
        if (time >= $deadline) {
            kill_process($pid, 1, 'startup');
            return { status => 0,
                     error => "nginx did not start serving on port $ServerPort within ${wait}s" };
        }
        sleep 0.01;
    }
}

sub exit_code_of {
    my ($status) = @_;
    return undef if !defined $status || $status < 0;
    return $status >> 8;
}

# Starts nginx for a normal (not must_die) block; aborts the run with
# nginx's own messages when that is impossible.  A busy port is retried
# for a few seconds (a previous server may just be releasing it).
sub start_nginx_or_bail {
    my ($name) = @_;
    my $deadline = time + $StartupWait;
    while (1) {
        my $r = launch_nginx();
        if ($r->{pid}) {
            $LastNginxPid = $r->{pid};
            return;
        }
        my $stderr = read_startup_stderr();
        if ($stderr =~ /Address already in use/ && time < $deadline) {
            sleep 0.2;
            next;
        }
        if ($ENV{TEST_NGINX_IGNORE_MISSING_DIRECTIVES}
            && (my $directive = missing_directive($stderr)))
        {
            return "the lack of directive $directive";
        }
        my $code = $r->{exited} ? exit_code_of($r->{status}) : undef;
        bail_out("$name - Cannot start nginx using command \""
                 . join(' ', nginx_command()) . '"'
                 . (defined $code ? " (exit code $code)" : '')
                 . ($r->{error} ? ": $r->{error}" : '') . "\n"
                 . ($stderr ne '' ? "nginx stderr:\n$stderr" : '')
                 . "error.log tail:\n" . tail_of_error_log(20));
    }
}

sub missing_directive {
    my ($stderr) = @_;
    my $text = $stderr;
    if (open my $in, '<', $ErrLogFile) { local $/; $text .= <$in> // '' }
    return $text =~ /\[emerg\] .*?unknown directive "([^"]+)"/ ? $1 : undef;
}

# ---------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------

# stderr lines captured at the latest nginx start, not yet shown to an
# error_log check.
our @StartupStderrLines;

sub collect_startup_stderr {
    @StartupStderrLines = map { "$_\n" } grep { /\S/ } split /\n/, read_startup_stderr();
}

# stderr lines that are not already in error.log.  With "-e" nginx
# writes warnings and errors to both, in different formats:
# "nginx: [emerg] msg" vs "<time> [emerg] <pid>#<tid>: msg".
sub stderr_lines_missing_from {
    my ($log_lines) = @_;
    my @extra;
    for my $line (@StartupStderrLines) {
        if ($line =~ /^nginx: \[(\w+)\] (.*?)\s*$/) {
            my ($level, $msg) = ($1, $2);
            next if grep { index($_, "[$level]") >= 0 && index($_, $msg) >= 0 } @$log_lines;
        }
        push @extra, $line;
    }
    return @extra;
}

# The error.log lines written since the previous call (or all of them
# with check_accum_error_log), plus nginx's startup stderr.
sub error_log_data () {
    # Give log-phase handlers, which run after the response was sent,
    # a moment to write.
    sleep $TestNginxSleep * 3;

    my @lines;
    if (open my $in, '<', $ErrLogFile) {
        seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos > 0;
        @lines = <$in>;
        $ErrLogFilePos = tell $in unless $CheckAccumErrLog;
        close $in;
    }
    push @lines, stderr_lines_missing_from(\@lines);
    @StartupStderrLines = () unless $CheckAccumErrLog;
    return \@lines;
}

sub access_log_data () {
    sleep $TestNginxSleep * 3;
    open my $in, '<', $AccLogFile or return [];
    my @lines = <$in>;
    close $in;
    return \@lines;
}

# ---------------------------------------------------------------------
# Running the blocks
# ---------------------------------------------------------------------

sub run_tests () {
    $NginxVersion = get_nginx_version();

    # Always available for $TEST_NGINX_* expansion.  The real module
    # sets only TEST_NGINX_SERVER_ROOT and TEST_NGINX_SERVER_PORT.
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort unless defined $ENV{TEST_NGINX_SERVER_PORT};
    $ENV{TEST_NGINX_PORT}        = $ServerPort unless defined $ENV{TEST_NGINX_PORT};
    $ENV{TEST_NGINX_SERVROOT}    = $ServRoot   unless defined $ENV{TEST_NGINX_SERVROOT};
    $ENV{TEST_NGINX_HTML_DIR}    = $HtmlDir    unless defined $ENV{TEST_NGINX_HTML_DIR};

    my @blocks = Test::Base::blocks();
    @blocks = List::Util::shuffle(@blocks) unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_test($block);
        $PrevBlock = $block;
    }

    cleanup();
}

# "N: cond" sections that skip (or mark TODO) N subtests of a block.
sub skip_and_todo_plan {
    my ($block) = @_;
    my $name = $block->name;
    my %plan = (skip => 0, todo => 0, count => undef,
                skip_reason => 'various reasons', todo_reason => 'various reasons');

    my $version_cond = sub {
        my ($have, $op, $want) = @_;
        return $op =~ /^</ if !defined $have;
        return $op eq '<'  ? $have <  $want
             : $op eq '<=' ? $have <= $want
             : $op eq '>'  ? $have >  $want
             :               $have >= $want;
    };

    if (defined(my $spec = $block->skip_eval)) {
        if ($spec =~ /^\s*(\d+)\s*:\s*(.*)/s) {
            ($plan{count}, $plan{skip_reason}) = ($1, 'skip_eval');
            my $code = $2;
            $plan{skip} = eval $code;
            bail_out("$name - skip_eval - failed to eval the Perl code \"$code\": $@") if $@;
        }
    }

    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*?))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        $plan{count} = $1;
        $plan{skip_reason} = $6 || "nginx version $2 $3.$4.$5";
        $plan{skip} = 1 if $version_cond->($NginxVersion, $2, get_canon_version($3, $4, $5));
    } elsif (defined(my $spec2 = $block->skip_nginx2)) {
        $spec2 =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)\s*(or|and)\s*
                    ([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*?))?\s*$/x
            or bail_out("$name - Invalid --- skip_nginx2 spec: $spec2");
        $plan{count} = $1;
        $plan{skip_reason} = $11 if $11;
        my ($op_x, $first, $second) = ($6,
            $version_cond->($NginxVersion, $2, get_canon_version($3, $4, $5)),
            $version_cond->($NginxVersion, $7, get_canon_version($8, $9, $10)));
        $plan{skip} = 1 if !defined $NginxVersion
                        || ($op_x eq 'or' ? $first || $second : $first && $second);
    }

    if (defined(my $spec = $block->skip_openssl)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)([a-z])?(?:\s*:\s*(.*?))?\s*$/
            or bail_out("$name - Invalid --- skip_openssl spec: $spec");
        $plan{count} = $1;
        my $want = get_canon_version($3, $4, $5)
                 . (defined $6 ? sprintf('%03d', ord($6) - ord('a')) : '');
        $plan{skip_reason} = $7 || (defined $OpenSSLVersion
            ? "OpenSSL version $2 $3.$4.$5" . (defined $6 ? $6 : '')
            : "Not built with OpenSSL");
        $plan{skip} = 1 if !defined $OpenSSLVersion || $version_cond->($OpenSSLVersion, $2, $want);
    }

    if (defined(my $spec = $block->todo_nginx)) {
        $spec =~ /^\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*?))?\s*$/
            or bail_out("$name - Invalid --- todo_nginx spec: $spec");
        $plan{todo_reason} = $5 if $5;
        $plan{todo} = 1 if $version_cond->($NginxVersion, $1, get_canon_version($2, $3, $4));
    }
    if (defined(my $spec = $block->todo)) {
        $spec =~ /^\s*(\d+)\s*:\s*(.*)/s
            or bail_out("$name - Invalid --- todo spec: $spec");
        @plan{qw(todo count todo_reason)} = (1, $1, $2);
    }

    $plan{skip} = 0 unless defined $plan{count};
    return \%plan;
}

# Runs one block: (re)start nginx as needed, then the requests and
# checks for each repetition.
sub run_test ($) {
    my ($block) = @_;
    return if defined $block->SKIP;
    my $name = $block->name;

    %RandPorts = ();
    my $config = expand_env_in_text(scalar $block->config, $name);

    local $LogLevel = $block->log_level || $LogLevel;
    # Valgrind has nothing to find in a server that must not start.
    local $UseValgrind = defined $block->must_die ? undef : $UseValgrind;

    my $plan = skip_and_todo_plan($block);
    my $dry_run = 0;

    if (!$NoNginxManager && !$plan->{skip}) {
        my $restart = 1;
        if (!defined $config) {
            # Without a config section the previous block's server keeps
            # running, as documented.
            bail_out("$name - No '--- config' section specified and could not get previous one. Use TEST_NGINX_NO_NGINX_MANAGER ?")
                unless defined $PrevConfig;
            $restart = 0;
        } elsif (!$ForceRestartOnTest && defined $PrevConfig && $config eq $PrevConfig) {
            $restart = 0;
        }

        if ($restart) {
            $PrevConfig = $config;
            stop_nginx($name);
            check_prev_block_shutdown_error_log();
            setup_server_root();
            write_user_files($block);
            write_config_file($block, $config);
            bail_out("$name - Cannot find the nginx executable in the PATH environment")
                unless can_run($NginxBinary);

            if (defined $block->must_die) {
                run_must_die($block);
                return;
            }
            $dry_run = start_nginx_or_bail($name) || 0;
            collect_startup_stderr();
            sleep $TestNginxSleep;
        }
    }

    run_init_code($block);

    $ErrLogFilePos = 0;
    for my $i (0 .. $RepeatEach - 1) {
        write_user_files($block) if $i > 0;
        if ($plan->{skip}) {
            SKIP: { Test::More::skip("$name - $plan->{skip_reason}", $plan->{count}) }
        } elsif ($plan->{todo}) {
            TODO: { Test::More::todo_skip("$name - $plan->{todo_reason}", $plan->{count}) }
        } else {
            $RunTestHelper->($block, $dry_run, $i);
        }
    }

    append_to_total_error_log($name);

    if ($UseValgrind && !$NoNginxManager) {
        # Leaks are only reported once the process exits.
        stop_nginx($name);
        report_valgrind($name);
    }
}

# "--- must_die": nginx has to fail at startup; error_log patterns are
# then matched against what it printed.  Repeated repeat_each() times.
sub run_must_die {
    my ($block) = @_;
    my $name = $block->name;
    my $must_die = $block->must_die;

    $ErrLogFilePos = 0;
    for my $i (0 .. $RepeatEach - 1) {
        my $r = launch_nginx();
        my $status = $r->{status};
        collect_startup_stderr();

        if (!defined $status || $status == -1) {
            Test::More::fail("$name - failed to execute the nginx command line");
        } elsif ($status & 128) {
            Test::More::fail("$name - nginx core dumped");
        } elsif (looks_like_number($must_die)) {
            Test::More::is($must_die, exit_code_of($status),
                           "$name - die with the expected exit code");
        } else {
            Test::More::isnt($status, 0, "$name - die as expected");
        }

        $CheckErrorLog->($block, undef, 0, $i, 0);

        if (defined $status && $status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing it (req $i)\n";
            $LastNginxPid = $r->{pid};
            stop_nginx($name);
        }
    }
}

# "--- init" runs after nginx is up and before the first request, once
# per block (not per repetition), in this package like the real module.
sub run_init_code {
    my ($block) = @_;
    my $code = $block->init or return;
    my $name = $block->name;
    eval $code;
    bail_out("$name - init failed: $@") if $@;
}

sub append_to_total_error_log {
    my ($name) = @_;
    my $total = $ENV{TEST_NGINX_ERROR_LOG} or return;
    return unless -s $ErrLogFile;
    open my $out, '>>', $total
        or bail_out("Failed to append test case title to $total: $!\n");
    open my $in, '<', $ErrLogFile or return;
    print $out "\n=== $name\n", <$in>;
    close $out;
}

# Valgrind writes one log per process (master and workers); anything in
# them is an error or a leak.  Reported as a failed subtest so it cannot
# go unnoticed (only emitted when something was found).
sub report_valgrind {
    my ($name) = @_;
    for my $file (sort glob("$LogDir/valgrind.*.log")) {
        open my $in, '<', $file or next;
        my $text = do { local $/; <$in> };
        next unless defined $text && $text =~ /\S/;
        Test::More::fail("$name - valgrind reported problems ($file)");
        Test::More::diag($text);
    }
}

sub check_prev_block_shutdown_error_log {
    my $block = $PrevBlock or return;
    return unless defined $block->shutdown_error_log
               || defined $block->no_shutdown_error_log;
    my $dry_run = $ENV{TEST_NGINX_NO_CLEAN} ? 1 : 0;
    $CheckShutdownErrorLog->($block, $dry_run) if $CheckShutdownErrorLog;
    undef $PrevBlock;
}

END {
    return if $$ != $MainPid;
    local $?;    # keep Test::Builder's exit status

    cleanup();

    if ($UseValgrind || !$ENV{TEST_NGINX_NO_CLEAN}) {
        stop_nginx('END') if defined $PidFile && !$NoNginxManager;
    }

    check_prev_block_shutdown_error_log();

    if ($Randomize && defined $ServRoot && $ServRoot =~ m{/t/servroot_\d+$}) {
        remove_tree($ServRoot);
    }
}

1;
