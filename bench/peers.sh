#!/usr/bin/env bash
# ufence against the tools users would pick instead, on the same machine in the same run:
# plain glibc, Scudo (with and without GWP-ASan), Electric Fence, DUMA and valgrind memcheck.
#
#   bench/peers.sh            full: cost (K=5 interleaved rounds, full sizes) and the scoreboard
#                             (every bug program 20 times under every tool), then publishes:
#                             bench/peers/cost.svg, bench/peers/results/, and sections 4 and 5
#                             of BENCHMARKS.md (between the peers:begin/end markers). ~35 min.
#   bench/peers.sh --quick    CI smoke test: K=1 and small sizes, every peer capped at 1 s, bug
#                             programs 3 times (valgrind once, on one bug per class). Writes only
#                             under bench/out/peers/; publishes nothing. Under a minute (33 s
#                             here) once the packages are installed and the preload is built.
#   bench/peers.sh --publish  only regenerates the plot and the BENCHMARKS.md sections from the
#                             results of the last full run (bench/peers/results/).
#
# Installs what it needs with apt-get when missing (as root): jq, sqlite3, gcc, g++, perl, python3,
# valgrind, libclang-rt-19-dev (Scudo+GWP-ASan), electric-fence, duma. Needs cargo (the preload).
# Exits 1 if a ufence run of a clean workload exits non-zero, times out or prints a ufence report,
# or if ufence reports a bug in the clean control program of the scoreboard. The peers' crashes,
# hangs and misses are results, never failures.
# Environment: K=<rounds> and N=<runs per bug> override the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
P=$ROOT/bench/peers

MODE=full
for a in "$@"; do
    case $a in
    --quick) MODE=quick ;;
    --publish) MODE=publish ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *)
        echo "peers.sh: unknown argument: $a" >&2
        exit 2
        ;;
    esac
done
T0=$(date +%s)

SCUDO=/usr/lib/llvm-19/lib/clang/19/lib/linux/libclang_rt.scudo_standalone-x86_64.so
EFENCE=/usr/lib/libefence.so.0
DUMA=/usr/lib/libduma.so.0

if [ $MODE = publish ]; then
    R=$P/results
    [ -f "$R/cost.json" ] || { echo "peers.sh: no results in $R: run bench/peers.sh first" >&2; exit 1; }
    /usr/bin/python3 "$P/plot.py" "$R/cost.json" "$P/cost.svg" "$(cat "$R/subtitle.txt")" &&
        /usr/bin/python3 "$P/publish.py" "$R" "$ROOT/BENCHMARKS.md"
    exit
fi

# --- peers and programs, installed only when missing --------------------------------------------
need=()
for c in jq:jq sqlite3:sqlite3 g++:g++ gcc:gcc perl:perl valgrind:valgrind; do
    command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
done
[ -x /usr/bin/python3 ] || need+=(python3)
[ -f $SCUDO ] || need+=(libclang-rt-19-dev)
[ -e $EFENCE ] || need+=(electric-fence)
[ -e $DUMA ] || need+=(duma)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing: ${need[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2 ||
        { echo "peers.sh: apt-get install ${need[*]} failed" >&2; exit 1; }
fi

# --- build ------------------------------------------------------------------------------------
if [ $MODE = quick ]; then OUT=$ROOT/bench/out/peers; else OUT=$ROOT/bench/out/peers-full; fi
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/bugs"
echo "== building" >&2
# Only the preload's package, as bench/run.sh does (an unrelated broken crate cannot stop this).
cargo build --release -p ufence-preload >&2 || { echo "peers.sh: cargo build failed" >&2; exit 1; }
[ -f "$ROOT/target/release/libufence.so" ] || { echo "peers.sh: target/release/libufence.so is missing" >&2; exit 1; }
# A private copy: a rebuild in the shared target directory during the run cannot mix versions.
cp "$ROOT/target/release/libufence.so" "$OUT/libufence.so"
SO=$OUT/libufence.so
# Two compilers at a time. The bug programs: -O0 and -fno-builtin keep each bad access as
# written and the string functions as calls into the C library.
{
    for src in "$ROOT"/bench/workloads/*.c; do
        echo "gcc -O2 -pthread -o $OUT/bin/$(basename "$src" .c) $src"
    done
    echo "gcc -O2 -Wall -o $OUT/runrss $P/runrss.c"
    for src in "$P"/bugs/*.c; do
        echo "gcc -O0 -g -fno-builtin -o $OUT/bugs/$(basename "$src" .c) $src"
    done
    for src in "$P"/bugs/*.cc; do
        echo "g++ -O0 -g -fno-builtin -o $OUT/bugs/$(basename "$src" .cc) $src"
    done
} | xargs -P 2 -I{} sh -c '{} || exit 255' || { echo "peers.sh: a compiler failed" >&2; exit 1; }

TB=$(date +%s)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- crates 2>/dev/null | grep -q . && echo ' plus uncommitted changes under crates/')
SHA=$(sha256sum "$SO" | cut -c1-12)
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
{
    echo "commit=$COMMIT$DIRTY"
    echo "libufence_sha256=$SHA"
    echo "started=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "nproc=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "glibc=$(ver libc6)"
    echo "scudo=libclang-rt-19-dev $(ver libclang-rt-19-dev)"
    echo "efence=electric-fence $(ver electric-fence)"
    echo "duma=duma $(ver duma)"
    echo "valgrind=$(valgrind --version)"
    echo "jq=$(jq --version)"
    echo "sqlite3=$(sqlite3 --version | cut -d' ' -f1)"
    echo "gxx=$(g++ -dumpfullversion)"
    echo "python=$(/usr/bin/python3 --version | cut -d' ' -f2)"
    echo "perl=$(perl -e 'print substr($^V, 1)')"
    echo "max_map_count=$(cat /proc/sys/vm/max_map_count)"
} >"$OUT/meta.txt"

# --- cost ---------------------------------------------------------------------------------------
FAILED=0
QFLAG=()
[ $MODE = quick ] && QFLAG=(--quick)
echo "== cost ($MODE)" >&2
/usr/bin/python3 "$P/cost.py" "${QFLAG[@]}" ${K:+--k "$K"} --out "$OUT" --runrss "$OUT/runrss" --bin "$OUT/bin" \
    --ufence "$SO" --scudo $SCUDO --efence $EFENCE --duma $DUMA >/dev/null || FAILED=1
T1=$(date +%s)

# --- what each catches --------------------------------------------------------------------------
echo "== catches ($MODE)" >&2
if [ $MODE = quick ]; then CN=(--n "${N:-3}" --valgrind-n 1 --valgrind-rows first-per-class); else CN=(--n "${N:-20}"); fi
/usr/bin/python3 "$P/catches.py" "${CN[@]}" --bin "$OUT/bugs" --out "$OUT" \
    --ufence "$SO" --scudo $SCUDO --efence $EFENCE --duma $DUMA >/dev/null || FAILED=1
if awk -F'\t' '$1 == "clean" && $2 == "ufence" && $6 == 1' "$OUT/catches.tsv" | grep -q .; then
    echo "peers.sh: FAIL: ufence reported a bug in the clean control program (see $OUT/catch-logs/clean.ufence.*)" >&2
    FAILED=1
fi
T2=$(date +%s)
{
    echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "setup_s=$((TB - T0))"
    echo "cost_s=$((T1 - TB))"
    echo "catches_s=$((T2 - T1))"
    echo "finished=$(date -u '+%Y-%m-%d %H:%M UTC')"
} >>"$OUT/meta.txt"
SUB="commit $COMMIT$DIRTY, libufence.so $SHA; $MODE mode, $(date -u '+%Y-%m-%d'); 2-core shared VM"
echo "$SUB" >"$OUT/subtitle.txt"
/usr/bin/python3 "$P/plot.py" "$OUT/cost.json" "$OUT/cost.svg" "$SUB" || FAILED=1

if [ $MODE = full ]; then
    # Publish: raw results next to the scripts, the plot, and the BENCHMARKS.md sections.
    R=$P/results
    mkdir -p "$R"
    cp "$OUT"/{cost.tsv,cost.json,cost.md,catches.tsv,catches.md,meta.txt,subtitle.txt} "$R/"
    cp "$OUT/cost.svg" "$P/cost.svg"
    /usr/bin/python3 "$P/publish.py" "$R" "$ROOT/BENCHMARKS.md" || FAILED=1
    echo "peers.sh: published bench/peers/cost.svg, bench/peers/results/ and BENCHMARKS.md sections 4-5" >&2
else
    cat "$OUT/cost.md" "$OUT/catches.md"
fi
echo "peers.sh: $MODE mode took $(($(date +%s) - T0)) s (install and build $((TB - T0)) s, cost $((T1 - TB)) s, catches $((T2 - T1)) s); results in ${OUT#$ROOT/}/" >&2
if [ $FAILED -ne 0 ]; then
    echo "peers.sh: FAILED (see above)" >&2
    exit 1
fi
