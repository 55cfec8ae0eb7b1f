#!/usr/bin/env bash
# Counts the instructions ufence adds to one malloc/free pair, with valgrind's callgrind.
#
#   bench/callgrind.sh [N1 N2]        (defaults: 200000 400000)
#
# (a) Rust: target/release/examples/alloc_bench --callgrind-plain N vs --callgrind-guarded N
#     (N direct alloc/dealloc pairs on System vs on ufence::Guarded<System>, nothing else);
# (b) C: bench/micro/pairs.c doing N malloc/free pairs, plain vs LD_PRELOAD=libufence.so;
#     C++: bench/micro/pairs_cxx.cc doing N operator new/delete (sized) pairs, the same way;
#     both again on jemalloc (LD_PRELOAD=libjemalloc.so.2 vs LD_PRELOAD="libufence.so
#     libjemalloc.so.2"), when Debian's libjemalloc2 is installed; and, with OLD_SO=path, the
#     C and C++ rows for an older libufence.so, to compare before and after in one run.
# (c) every workload of bench/run.sh at its --quick size, plain vs LD_PRELOAD=libufence.so:
#     total instructions and their ratio. Unlike wall-clock time on a shared machine, this does
#     not drown a 0.5 % difference in noise (it does not see cache or syscall costs either).
# All at ufence's default options (UFENCE_OPTIONS unset). Start-up costs differ between the
# variants (ufence's initialisation, loading the preload), so the per-pair cost is
#   ((U(N2) - P(N2)) - (U(N1) - P(N1))) / (N2 - N1)
# with U and P the total instruction counts (callgrind's Ir) of the ufence and plain runs.
# Writes bench/out/callgrind.md; exits non-zero only if something fails to run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N1=${1:-200000}
N2=${2:-400000}
OUT=$ROOT/bench/out
mkdir -p "$OUT/callgrind"
unset UFENCE_OPTIONS
# Fixed hash seeds: Python's and Perl's randomised string hashing changes their work from run to
# run (by several per cent in instruction count for python-dicts), which would drown the effect.
export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

echo "== building" >&2
cargo build --release -p ufence-preload >&2
cargo build --release -p ufence --example alloc_bench >&2
gcc -O2 -o "$OUT/pairs" bench/micro/pairs.c
g++ -O2 -o "$OUT/pairs_cxx" bench/micro/pairs_cxx.cc
mkdir -p "$OUT/bin"
for src in bench/workloads/*.c; do
    gcc -O2 -pthread -o "$OUT/bin/$(basename "$src" .c)" "$src"
done
cp target/release/libufence.so "$OUT/callgrind/libufence.so"
SO=$OUT/callgrind/libufence.so
RUST=$ROOT/target/release/examples/alloc_bench

# ir NAME PRELOAD CMD...: total instructions of one run under callgrind.
ir() {
    local name=$1 preload=$2
    shift 2
    local f=$OUT/callgrind/$name.out
    rm -f "$f"
    local in=${IN:-/dev/null}
    if [ -n "$preload" ]; then
        LD_PRELOAD=$preload valgrind --tool=callgrind --callgrind-out-file="$f" "$@" \
            <"$in" >"$OUT/callgrind/$name.log" 2>&1
    else
        valgrind --tool=callgrind --callgrind-out-file="$f" "$@" <"$in" >"$OUT/callgrind/$name.log" 2>&1
    fi
    if grep -q 'BUG: UFENCE' "$OUT/callgrind/$name.log"; then
        echo "callgrind.sh: ufence reported a bug in $name (see $OUT/callgrind/$name.log)" >&2
        exit 1
    fi
    awk '/^(summary|totals):/ {print $2; exit}' "$f"
}

{
    echo "Source: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git status --porcelain -- crates 2>/dev/null | grep -q . && echo ' plus uncommitted changes under crates/') at build time; libufence.so sha256 $(sha256sum "$SO" | cut -c1-12). Default options."
    echo
} >"$OUT/callgrind.md"

# pair_row NAME PLAIN_PRELOAD UFENCE_PRELOAD PROG [PLAIN_FLAG UFENCE_FLAG]: the table row of one
# variant, counted at N1 and N2 pairs: `PROG [FLAG] N` under each preload (the plain run may
# itself be under one, such as another allocator).
pair_row() {
    local name=$1 plain=$2 uf=$3 prog=$4
    local pf=() uff=()
    [ -n "${5:-}" ] && pf=("$5")
    [ -n "${6:-}" ] && uff=("$6")
    local tag
    tag=$(echo "$name" | tr -c 'a-zA-Z0-9' '-' | cut -c1-40)
    local p1 u1 p2 u2
    echo "== $name" >&2
    p1=$(ir "$tag-plain-$N1" "$plain" "$prog" "${pf[@]}" "$N1")
    u1=$(ir "$tag-ufence-$N1" "$uf" "$prog" "${uff[@]}" "$N1")
    p2=$(ir "$tag-plain-$N2" "$plain" "$prog" "${pf[@]}" "$N2")
    u2=$(ir "$tag-ufence-$N2" "$uf" "$prog" "${uff[@]}" "$N2")
    python3 - "$name" "$N1" "$N2" "$p1" "$u1" "$p2" "$u2" <<'PY'
import sys
name = sys.argv[1]
n1, n2, p1, u1, p2, u2 = map(int, sys.argv[2:])
per_plain = (p2 - p1) / (n2 - n1)
extra = ((u2 - p2) - (u1 - p1)) / (n2 - n1)
print(f"| {name} | {p1:,} | {u1:,} | {p2:,} | {u2:,} | {per_plain:.2f} | {extra:.2f} "
      f"| {'met' if extra <= 10 else 'NOT met'} |")
PY
}

{
    echo "| variant | Ir plain N=$N1 | Ir ufence N=$N1 | Ir plain N=$N2 | Ir ufence N=$N2 | plain Ir/pair | extra Ir/pair (ufence - plain) | target <= 10 |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    pair_row "Rust \`Guarded<System>\` vs \`System\` (alloc_bench --callgrind-*)" "" "" \
        "$RUST" --callgrind-plain --callgrind-guarded
    pair_row "C malloc/free, \`LD_PRELOAD=libufence.so\` vs plain (bench/micro/pairs.c)" "" "$SO" "$OUT/pairs"
    pair_row "C++ new/delete, \`LD_PRELOAD=libufence.so\` vs plain (bench/micro/pairs_cxx.cc)" "" "$SO" "$OUT/pairs_cxx"
    JE=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    if [ -e "$JE" ]; then
        pair_row "C malloc/free on jemalloc, ufence + jemalloc vs jemalloc" "$JE" "$SO $JE" "$OUT/pairs"
        pair_row "C++ new/delete on jemalloc, ufence + jemalloc vs jemalloc" "$JE" "$SO $JE" "$OUT/pairs_cxx"
    fi
    if [ -n "${OLD_SO:-}" ]; then
        cp "$OLD_SO" "$OUT/callgrind/libufence-old.so"
        OLD=$OUT/callgrind/libufence-old.so
        pair_row "C malloc/free, OLD_SO vs plain" "" "$OLD" "$OUT/pairs"
        pair_row "C++ new/delete, OLD_SO vs plain" "" "$OLD" "$OUT/pairs_cxx"
        if [ -e "$JE" ]; then
            pair_row "C++ new/delete on jemalloc, OLD_SO + jemalloc vs jemalloc" "$JE" "$OLD $JE" "$OUT/pairs_cxx"
        fi
    fi
} >>"$OUT/callgrind.md"

# (c) the workloads, quick sizes (as bench/run.sh --quick).
PYTHON=/usr/bin/python3
[ -x $PYTHON ] || PYTHON=$(python3 -c 'import sys; print(sys.executable)')
WL=bench/workloads
"$PYTHON" $WL/gen_sql.py 2000 >"$OUT/callgrind/bench.sql"
echo >>"$OUT/callgrind.md"
echo "| workload (quick size) | Ir plain | Ir ufence default | ufence / plain |" >>"$OUT/callgrind.md"
echo "| --- | ---: | ---: | ---: |" >>"$OUT/callgrind.md"
for wl in trees prodcons strings churn python-dicts perl-hashes sqlite; do
    IN=/dev/null
    case $wl in
    trees) CMD=("$OUT/bin/trees" 1) ;;
    prodcons) CMD=("$OUT/bin/prodcons" 100000) ;;
    strings) CMD=("$OUT/bin/strings" 1) ;;
    churn) CMD=("$OUT/bin/churn" 300000) ;;
    python-dicts) CMD=("$PYTHON" $WL/dicts.py 1) ;;
    perl-hashes)
        command -v perl >/dev/null || continue
        CMD=(perl $WL/hashes.pl 1)
        ;;
    sqlite)
        command -v sqlite3 >/dev/null || continue
        CMD=(sqlite3 :memory:) IN=$OUT/callgrind/bench.sql
        ;;
    esac
    echo "== $wl" >&2
    p=$(IN=$IN ir "wl-$wl-plain" "" "${CMD[@]}")
    u=$(IN=$IN ir "wl-$wl-ufence" "$SO" "${CMD[@]}")
    awk -v w="$wl" -v p="$p" -v u="$u" 'BEGIN { printf "| %s | %.0f | %.0f | %.4f |\n", w, p, u, u / p }' \
        >>"$OUT/callgrind.md"
done
cat "$OUT/callgrind.md"
