#!/usr/bin/env bash
# Runs the allocation-heavy workloads plain, under libufence.so at its default options, and under
# libufence.so with UFENCE_OPTIONS=sample_rate=1 (every allocation sampled while slots last).
#
#   bench/run.sh            K=7 interleaved rounds, full-size workloads (a few minutes; longer
#                           if the sample_rate=1 variant is slow on some workload)
#   bench/run.sh --quick    K=1, reduced sizes: a smoke test that asserts nothing about speed
#
# Each round runs every workload in every variant, rotating the order of the variants from round
# to round, so that a noisy neighbour on a shared machine hurts all variants alike. The tables
# (bench/summarize.py) give median wall-clock and CPU seconds of the K runs and the ratios to
# plain; they are printed and written to bench/out/results.md (raw times in bench/out/times.tsv,
# each run's stdout/stderr in bench/out/logs/). Each run is timed by bench/timeit.py.
#
# Fails (exit 1) if any run exits non-zero, times out, or prints a ufence report
# ("BUG: UFENCE") on stderr: these workloads are clean, so a report is a false positive.
# Environment: K=<rounds> overrides the round count; RUN_TIMEOUT=<s> the per-run limit
# (default 600 s full, 60 s quick); LIB=<libufence.so> measures that build of the library instead
# of building this tree's (an older commit's, for a before/after comparison);
# UNDER=<allocator.so> runs every variant on that allocator
# (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2: plain is LD_PRELOAD=UNDER, ufence's
# variants LD_PRELOAD="libufence.so UNDER", so ufence forwards to it).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
BIN=$OUT/bin
LOGS=$OUT/logs
WL=$ROOT/bench/workloads

QUICK=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    -h | --help)
        sed -n '2,22p' "$0"
        exit 0
        ;;
    *)
        echo "run.sh: unknown argument: $a" >&2
        exit 2
        ;;
    esac
done
if [ $QUICK = 1 ]; then
    K=${K:-1}
    RUN_TIMEOUT=${RUN_TIMEOUT:-60}
else
    K=${K:-7}
    RUN_TIMEOUT=${RUN_TIMEOUT:-600}
fi

# Nothing from the caller's environment may change the variants.
unset UFENCE_OPTIONS LD_PRELOAD PYTHONMALLOC
UNDER=${UNDER:-}
if [ -n "$UNDER" ] && [ ! -f "$UNDER" ]; then
    echo "run.sh: UNDER=$UNDER: no such file" >&2
    exit 2
fi
# Fixed hash seeds: Python's and Perl's randomised string hashing changes their work from run to
# run (by several per cent in instruction count for python-dicts), which would drown the effect.
export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0

mkdir -p "$BIN" "$LOGS"
rm -f "$LOGS"/*.out "$LOGS"/*.err

echo "== building" >&2
for src in "$WL"/*.c; do
    name=$(basename "$src" .c)
    gcc -O2 -pthread -o "$BIN/$name" "$src" || { echo "run.sh: gcc failed on $src" >&2; exit 1; }
done
# The preload is all this needs; building only its package keeps an unrelated broken crate of the
# workspace from stopping the benchmark.
if [ -z "${LIB:-}" ]; then
    cargo build --release -p ufence-preload >&2 || { echo "run.sh: cargo build failed" >&2; exit 1; }
    LIB=$ROOT/target/release/libufence.so
    SRC_DESC="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git status --porcelain -- crates 2>/dev/null | grep -q . && echo ' plus uncommitted changes under crates/') at build time"
else
    SRC_DESC="LIB=$LIB"
fi
# A private copy, so that a rebuild in the shared target directory during the run cannot mix
# two versions of the library in one table.
[ -f "$LIB" ] || { echo "run.sh: $LIB is missing" >&2; exit 1; }
cp "$LIB" "$OUT/libufence.so"
SO=$OUT/libufence.so
SRC_DESC="$SRC_DESC; libufence.so sha256 $(sha256sum "$SO" | cut -c1-12)"

# Real programs: use the system's binaries directly (a wrapper script such as a pyenv shim would
# run under the preload too and be timed with the program).
PYTHON=/usr/bin/python3
[ -x $PYTHON ] || PYTHON=$(python3 -c 'import sys; print(sys.executable)')
PERL=$(command -v perl || true)
SQLITE=$(command -v sqlite3 || true)

# Workloads: name, arguments (full / quick).
if [ $QUICK = 1 ]; then
    A_TREES=1 A_PRODCONS=100000 A_STRINGS=1 A_CHURN=300000 A_PY=1 A_PERL=1 SQL_ROWS=2000
else
    A_TREES=14 A_PRODCONS=1500000 A_STRINGS=32 A_CHURN=3000000 A_PY=3 A_PERL=3 SQL_ROWS=30000
fi
WORKLOADS=(trees prodcons strings churn python-dicts)
[ -n "$PERL" ] && WORKLOADS+=(perl-hashes)
if [ -n "$SQLITE" ]; then
    WORKLOADS+=(sqlite)
    "$PYTHON" "$WL/gen_sql.py" $SQL_ROWS >"$OUT/bench.sql"
fi

# cmd WORKLOAD: sets CMD (the command line) and IN (its standard input).
cmd() {
    IN=/dev/null
    case $1 in
    trees) CMD=("$BIN/trees" $A_TREES) ;;
    prodcons) CMD=("$BIN/prodcons" $A_PRODCONS) ;;
    strings) CMD=("$BIN/strings" $A_STRINGS) ;;
    churn) CMD=("$BIN/churn" $A_CHURN) ;;
    python-dicts) CMD=("$PYTHON" "$WL/dicts.py" $A_PY) ;;
    perl-hashes) CMD=("$PERL" "$WL/hashes.pl" $A_PERL) ;;
    sqlite) CMD=("$SQLITE" :memory:) IN=$OUT/bench.sql ;;
    esac
}

VARIANTS=(plain default rate1)

# run WORKLOAD VARIANT ROUND: one timed run; appends a line to times.tsv.
FAILED=0
run() {
    local wl=$1 variant=$2 k=$3
    local log=$LOGS/$wl.$variant.$k
    local env=()
    case $variant in
    plain) [ -n "$UNDER" ] && env=(LD_PRELOAD="$UNDER") ;;
    default) env=(LD_PRELOAD="$SO${UNDER:+ $UNDER}") ;;
    rate1) env=(LD_PRELOAD="$SO${UNDER:+ $UNDER}" UFENCE_OPTIONS=sample_rate=1) ;;
    esac
    cmd "$wl"
    # timeit.py runs without the preload and gives the variables to the workload only; the
    # plain variant goes through the same fork and exec.
    local res wall cpu rc status=ok
    res=$(python3 "$ROOT/bench/timeit.py" "$RUN_TIMEOUT" "$IN" "$log.out" "$log.err" \
        "${env[@]}" -- "${CMD[@]}")
    read -r wall cpu rc <<<"$res"
    if [ -z "$rc" ]; then
        wall=0 cpu=0 rc=255
    fi
    if [ "$rc" -ne 0 ]; then
        status="exit=$rc"
        [ "$rc" -eq 124 ] && status="timeout>${RUN_TIMEOUT}s"
        echo "run.sh: FAIL: $wl [$variant] round $k: $status (see $log.err)" >&2
        FAILED=1
    fi
    if grep -q 'BUG: UFENCE' "$log.err"; then
        status="ufence-report"
        echo "run.sh: FAIL: $wl [$variant] round $k printed a ufence report (see $log.err)" >&2
        FAILED=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$variant" "$k" "$wall" "$cpu" "$status" >>"$OUT/times.tsv"
    printf '  %-13s %-8s round %d: %8.3f s wall %8.3f s cpu  %s\n' "$wl" "$variant" "$k" "$wall" "$cpu" "$status" >&2
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'workload\tvariant\tround\twall_s\tcpu_s\tstatus\n' >"$OUT/times.tsv"
echo "== running: K=$K rounds, $([ $QUICK = 1 ] && echo quick || echo full) sizes" >&2
for ((k = 1; k <= K; k++)); do
    for wl in "${WORKLOADS[@]}"; do
        # Rotate the variants' order each round (and per workload) so none always goes first.
        n=${#VARIANTS[@]}
        for ((j = 0; j < n; j++)); do
            run "$wl" "${VARIANTS[$(((j + k + ${#wl}) % n))]}" "$k"
        done
    done
done

{
    [ -n "$UNDER" ] && echo "Every variant on $UNDER (preloaded; after libufence.so in ufence's variants)." && echo
    echo "Source: $SRC_DESC. Finished $(date -u '+%Y-%m-%d %H:%M UTC'); load average before the runs: $LOAD0."
    echo
} >"$OUT/results.md"
python3 "$ROOT/bench/summarize.py" "$OUT/times.tsv" "$K" "$QUICK" >>"$OUT/results.md"
cat "$OUT/results.md"

if [ $FAILED -ne 0 ]; then
    echo "run.sh: FAILED: a run exited non-zero, timed out or printed a ufence report" >&2
    exit 1
fi
echo "run.sh: all $((K * ${#WORKLOADS[@]} * ${#VARIANTS[@]})) runs exited 0 with no ufence report" >&2
