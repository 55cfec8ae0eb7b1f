#!/usr/bin/env bash
# Process life-cycle costs under libufence.so: fork, fork then exit(), and fork+exec of a small C
# program that allocates once (a whole process start under the preload). Variants, interleaved
# round by round so that a noisy neighbour hurts all alike:
#   plain     no preload
#   empty     a preload that does nothing (the floor of any LD_PRELOAD: one more library)
#   ufence    target/release/libufence.so at its defaults
#   base      OLD_LIB=path/to/libufence.so, if given (an earlier build, for before/after)
#
#   bench/procs.sh            K=5 rounds of N=1000 operations per mode
#   bench/procs.sh --quick    K=1, N=100: a smoke test that asserts nothing about speed
#
# Prints a table of medians over the rounds: wall µs per operation (the run's median), and the
# children's CPU µs and minor faults per operation (getrusage). Writes bench/out/procs.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"
K=${K:-5} N=${N:-1000}
[ "${1:-}" = --quick ] && K=1 N=100
unset UFENCE_OPTIONS LD_PRELOAD

gcc -O2 -Wall -o "$OUT/procs" bench/micro/procs.c
printf '#include <stdlib.h>\nint main(void){volatile char*p=malloc(10);p[0]=1;free((void*)p);return 0;}\n' >"$OUT/start.c"
gcc -O2 -o "$OUT/start" "$OUT/start.c"
printf 'int ufence_bench_empty;\n' >"$OUT/empty.c"
gcc -shared -fPIC -o "$OUT/empty.so" "$OUT/empty.c"
cargo build --release -p ufence-preload >&2
cp target/release/libufence.so "$OUT/procs-ufence.so"

VARIANTS=(plain empty ufence)
[ -n "${OLD_LIB:-}" ] && VARIANTS+=(base)
lib() {
    case $1 in
    plain) echo "" ;;
    empty) echo "$PWD/$OUT/empty.so" ;;
    ufence) echo "$PWD/$OUT/procs-ufence.so" ;;
    base) echo "$OLD_LIB" ;;
    esac
}
raw=$OUT/procs.tsv
: >"$raw"
for k in $(seq "$K"); do
    for mode in fork exit forkexec; do
        for v in "${VARIANTS[@]}"; do
            line=$(LD_PRELOAD=$(lib "$v") "$OUT/procs" "$mode" "$N" "$PWD/$OUT/start")
            echo "$v $line" >>"$raw"
        done
    done
done
python3 - "$raw" "${VARIANTS[@]}" <<'PY' | tee "$OUT/procs.md"
import statistics, sys
raw, variants = sys.argv[1], sys.argv[2:]
rows = {}
for line in open(raw):
    v, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((d["mode"], v), []).append(d)
med = lambda ds, key: statistics.median(float(d[key]) for d in ds)
print("| operation | variant | wall µs/op | children's CPU µs/op | children's minor faults/op |")
print("| --- | --- | ---: | ---: | ---: |")
for mode in ["fork", "exit", "forkexec"]:
    base = med(rows[(mode, "plain")], "median_us")
    for v in variants:
        ds = rows[(mode, v)]
        w = med(ds, "median_us")
        print(f"| {mode} | {v} | {w:.0f} (+{w - base:.0f}) | {med(ds, 'child_cpu_us'):.0f} | {med(ds, 'child_minflt'):.0f} |")
PY
