# Perl's allocation pattern: hashes of arrays and strings built, sorted, joined and dropped.
# Run as: perl hashes.pl [rounds]
use strict;
use warnings;

my $rounds = shift // 3;
my $total = 0;
for my $r (1 .. $rounds) {
    my %h;
    for my $i (1 .. 50000) {
        $h{"key$r-$i"} = [$i, "v" x ($i % 64), { n => $i, s => "s$i" }];
    }
    my @keys = sort keys %h;
    my $joined = join(",", map { $h{$_}[1] } @keys[0 .. 999]);
    $total += length($joined) + scalar(@keys);
    delete $h{$_} for @keys[0 .. 24999];
    $total += scalar(keys %h);
}
print "hashes: $total\n";
