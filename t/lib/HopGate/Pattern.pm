package HopGate::Pattern;
# The bytes the local app sends for /bytes/N, and their SHA-256, so a test
# can check a download of any size without keeping it.
use strict;
use warnings;
use Exporter 'import';
use Digest::SHA;

our @EXPORT_OK = qw(pattern_chunk pattern_sha256);

# 64 KiB of fixed pseudo-random bytes, repeated
my $block = do {
    my ($x, $s) = (0x9e3779b9, '');
    for (1 .. 16384) {
        $x = ($x * 1103515245 + 12345) & 0xffffffff;
        $s .= pack 'N', $x;
    }
    $s;
};

sub pattern_chunk {
    my ($offset, $len) = @_;
    my $out = '';
    while ($len > 0) {
        my $pos = $offset % 65536;
        my $take = 65536 - $pos < $len ? 65536 - $pos : $len;
        $out .= substr($block, $pos, $take);
        $offset += $take;
        $len -= $take;
    }
    return $out;
}

sub pattern_sha256 {
    my ($n) = @_;
    my $sha = Digest::SHA->new(256);
    my $whole = int($n / 65536);
    $sha->add($block) for 1 .. $whole;
    $sha->add(substr($block, 0, $n % 65536));
    return $sha->hexdigest;
}

1;
