#!/usr/bin/env bash
# What one sample costs, before and after, side by side in one run (issue 17).
#
#   OLD_SO=/path/to/old/libufence.so bench/samples.sh      (K=5 rounds by default)
#
# (a) CPU µs per sampled malloc/free pair: bench/micro/sampled.c, N pairs 8 calls below main,
#     every one sampled (UFENCE_OPTIONS=sample_rate=1:max_overhead=0), under OLD_SO, this
#     tree's libufence.so, and this tree's with fast_unwind=0 (libgcc's unwinder); and the
#     floor, `sampled --mprotect`: the two mprotect calls of a pair with nothing else. CPU time
#     (user+system, from the process itself), the median of K interleaved rounds: the machine is
#     shared, and CPU time is what a neighbour's load inflates least.
# (b) Instructions per sampled pair (callgrind), old and new: (I(N2) - I(N1)) / (N2 - N1).
# (c) Samples per second at the default max_overhead (50 %): `sampled` at sample_rate=1 for
#     N_GOV pairs (40 million: a few seconds, so that the governor's 50 ms grace is a small
#     part); sampled pairs / wall seconds (median of K).
# (d) bench/run.sh's workloads (full sizes) plain and at sample_rate=1 and sample_rate=100
#     (default max_overhead) under both libraries: median CPU and wall seconds of K rounds and
#     the ratio to plain.
# Writes bench/out/samples.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
K=${K:-5}
N=${N:-200000}
N_GOV=${N_GOV:-40000000}
# PARTS=abcd (default) runs every part; a subset reruns only those (the others' tables are
# then left out).
PARTS=${PARTS:-abcd}
has() { [[ $PARTS == *$1* ]]; }
[ -n "${OLD_SO:-}" ] && [ -f "$OLD_SO" ] || { echo "samples.sh: set OLD_SO to an older libufence.so" >&2; exit 2; }
unset UFENCE_OPTIONS LD_PRELOAD
export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
mkdir -p "$OUT/samples" "$OUT/bin"
cargo build --release -p ufence-preload >&2
cp target/release/libufence.so "$OUT/samples/new.so"
cp "$OLD_SO" "$OUT/samples/old.so"
NEW=$OUT/samples/new.so OLD=$OUT/samples/old.so
gcc -O2 -o "$OUT/sampled" bench/micro/sampled.c
for src in bench/workloads/*.c; do gcc -O2 -pthread -o "$OUT/bin/$(basename "$src" .c)" "$src"; done
EVERY=sample_rate=1:max_overhead=0

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
TSV=$OUT/samples/micro.tsv
: >"$TSV"
echo "== (a) CPU per pair, (c) samples per second: K=$K" >&2
variants=()
has a && variants+=(floor old new new-libgcc)
has c && variants+=(old-gov new-gov)
for ((k = 1; k <= K && ${#variants[@]} > 0; k++)); do
    n=${#variants[@]}
    for ((j = 0; j < n; j++)); do
        v=${variants[$(((j + k) % n))]}
        case $v in
        floor) line=$("$OUT/sampled" --mprotect "$N") ;;
        old) line=$(UFENCE_OPTIONS=$EVERY LD_PRELOAD=$OLD "$OUT/sampled" "$N") ;;
        new) line=$(UFENCE_OPTIONS=$EVERY LD_PRELOAD=$NEW "$OUT/sampled" "$N") ;;
        new-libgcc) line=$(UFENCE_OPTIONS=$EVERY:fast_unwind=0 LD_PRELOAD=$NEW "$OUT/sampled" "$N") ;;
        old-gov) line=$(UFENCE_OPTIONS=sample_rate=1 LD_PRELOAD=$OLD "$OUT/sampled" "$N_GOV") ;;
        new-gov) line=$(UFENCE_OPTIONS=sample_rate=1 LD_PRELOAD=$NEW "$OUT/sampled" "$N_GOV") ;;
        esac
        printf '%s\t%s\t%s\t%s\t%s\n' "$v" "$(echo "$line" | field pairs)" "$(echo "$line" | field sampled)" \
            "$(echo "$line" | field cpu_s)" "$(echo "$line" | field wall_s)" >>"$TSV"
        echo "  round $k $v: $line" >&2
    done
done

echo "== (b) callgrind" >&2
ir() {
    local f=$OUT/samples/cg.$1.$2
    UFENCE_OPTIONS=$EVERY LD_PRELOAD=$3 valgrind --tool=callgrind --callgrind-out-file="$f" "$OUT/sampled" "$2" >/dev/null 2>&1
    awk '/^(summary|totals):/ {print $2; exit}' "$f"
}
CG=$OUT/samples/callgrind.tsv
: >"$CG"
for v in old new; do
    has b || break
    so=$OLD
    [ $v = new ] && so=$NEW
    a=$(ir $v 2000 "$so")
    b=$(ir $v 4000 "$so")
    printf '%s\t%s\n' "$v" "$(((b - a) / 2000))" >>"$CG"
done

echo "== (d) workloads: K=$K" >&2
A_TREES=14 A_PRODCONS=1500000 A_STRINGS=32 A_CHURN=3000000 A_PY=3 A_PERL=3 SQL_ROWS=30000
/usr/bin/python3 bench/workloads/gen_sql.py $SQL_ROWS >"$OUT/samples/bench.sql"
WL=(trees prodcons strings churn python-dicts)
command -v perl >/dev/null && WL+=(perl-hashes)
command -v sqlite3 >/dev/null && WL+=(sqlite)
cmd() {
    IN=/dev/null
    case $1 in
    trees) CMD=("$OUT/bin/trees" $A_TREES) ;;
    prodcons) CMD=("$OUT/bin/prodcons" $A_PRODCONS) ;;
    strings) CMD=("$OUT/bin/strings" $A_STRINGS) ;;
    churn) CMD=("$OUT/bin/churn" $A_CHURN) ;;
    python-dicts) CMD=(/usr/bin/python3 bench/workloads/dicts.py $A_PY) ;;
    perl-hashes) CMD=("$(command -v perl)" bench/workloads/hashes.pl $A_PERL) ;;
    sqlite) CMD=("$(command -v sqlite3)" :memory:) IN=$OUT/samples/bench.sql ;;
    esac
}
WT=$OUT/samples/workloads.tsv
: >"$WT"
VARS=(plain old-rate1 new-rate1 old-rate100 new-rate100)
for ((k = 1; k <= K; k++)); do
    has d || break
    for wl in "${WL[@]}"; do
        n=${#VARS[@]}
        for ((j = 0; j < n; j++)); do
            v=${VARS[$(((j + k + ${#wl}) % n))]}
            env=()
            case $v in
            old-rate1) env=(LD_PRELOAD=$OLD UFENCE_OPTIONS=sample_rate=1) ;;
            new-rate1) env=(LD_PRELOAD=$NEW UFENCE_OPTIONS=sample_rate=1) ;;
            old-rate100) env=(LD_PRELOAD=$OLD UFENCE_OPTIONS=sample_rate=100) ;;
            new-rate100) env=(LD_PRELOAD=$NEW UFENCE_OPTIONS=sample_rate=100) ;;
            esac
            cmd "$wl"
            res=$(python3 bench/timeit.py 600 "$IN" "$OUT/samples/$wl.$v.out" "$OUT/samples/$wl.$v.err" "${env[@]}" -- "${CMD[@]}")
            read -r wall cpu rc <<<"$res"
            if [ "$rc" != 0 ] || grep -q 'BUG: UFENCE' "$OUT/samples/$wl.$v.err"; then
                echo "samples.sh: FAIL: $wl [$v] round $k: exit $rc" >&2
                exit 1
            fi
            printf '%s\t%s\t%s\t%s\n' "$wl" "$v" "$wall" "$cpu" >>"$WT"
            echo "  round $k $wl $v: $wall s wall $cpu s cpu" >&2
        done
    done
done

python3 - "$TSV" "$CG" "$WT" "$(sha256sum "$OLD" | cut -c1-12)" "$(sha256sum "$NEW" | cut -c1-12)" \
    "$(git rev-parse --short HEAD)" "$K" >"$OUT/samples.md" <<'PY'
import statistics as st, sys
micro, cg, wt, old_sha, new_sha, head, K = sys.argv[1:8]
rows = [l.split("\t") for l in open(micro).read().splitlines() if l]
def med(v, f):
    return st.median([f(r) for r in rows if r[0] == v])
us = lambda r: float(r[3]) / int(r[1]) * 1e6
print(f"Old libufence.so sha256 {old_sha}, new {new_sha} (commit {head}); K={K} interleaved rounds, medians.\n")
have = {r[0] for r in rows}
if "old" in have:
  print("| per sampled malloc/free pair | CPU µs | vs old |")
  print("| --- | ---: | ---: |")
  old = med("old", us)
  for v, name in [("old", "before (OLD_SO)"), ("new-libgcc", "after, fast_unwind=0 (libgcc's unwinder)"), ("new", "after (default)"), ("floor", "floor: the pair's two mprotects alone")]:
    m = med(v, us)
    print(f"| {name} | {m:.2f} | {old / m:.2f}× fewer |" if v != "old" else f"| {name} | {m:.2f} | 1 |")
  print()
c = dict(l.split("\t") for l in open(cg).read().splitlines())
if c:
  print("| instructions per sampled pair (callgrind) | before | after | ratio |")
  print("| --- | ---: | ---: | ---: |")
  print(f"| `sampled` 8 calls deep | {int(c['old']):,} | {int(c['new']):,} | {int(c['old']) / int(c['new']):.2f}× fewer |")
  print()
rate = lambda r: int(r[2]) / float(r[4])
frac = lambda r: int(r[2]) / int(r[1])
if "old-gov" in have:
  print("| sample_rate=1, default max_overhead (50 %) | samples per second (wall) | share of pairs sampled | CPU µs per pair (all pairs) |")
  print("| --- | ---: | ---: | ---: |")
  for v, name in [("old-gov", "before"), ("new-gov", "after")]:
    print(f"| {name} | {med(v, rate):,.0f} | {med(v, frac) * 100:.1f} % | {med(v, us):.3f} |")
  print()
w = [l.split("\t") for l in open(wt).read().splitlines() if l]
order = []
for r in w:
    if r[0] not in order:
        order.append(r[0])
def wm(wl, v, i):
    return st.median([float(r[i]) for r in w if r[0] == wl and r[1] == v])
for i, what in ([(3, "CPU seconds"), (2, "Wall seconds")] if w else []):
    print(f"**{what}** (median of {K}; ratio to plain)\n")
    print("| workload | plain | rate=1 before | rate=1 after | rate=100 before | rate=100 after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for wl in order:
        p = wm(wl, "plain", i)
        cells = [f"{wm(wl, v, i):.3f} ({wm(wl, v, i) / p:.2f}×)" for v in ["old-rate1", "new-rate1", "old-rate100", "new-rate100"]]
        print(f"| {wl} | {p:.3f} | " + " | ".join(cells) + " |")
    print()
PY
cat "$OUT/samples.md"
