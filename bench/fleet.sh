#!/usr/bin/env bash
# The fleet side's costs: one exporter scrape over N_PROCS processes' control files, and
# `ufence triage` over N_REPORTS JSON reports (wall time and peak RSS).
#
#   bench/fleet.sh            K=5 runs each; N_PROCS=1000, N_REPORTS=200000
#   bench/fleet.sh --quick    K=1, N_PROCS=50, N_REPORTS=2000: a smoke test (asserts only counts)
#
# Inputs are made from real ufence output (bench/fleet_corpus.py): control files are copies of
# one live process's file with the pid changed, in two sets: pids of no process (a crashed
# fleet: liveness is decided by /proc/PID/stat alone) and pids of running `sleep`s with the
# start time cleared, so that each is also looked up in /proc/PID/maps (the slow path). Reports
# are the six real reports of tests/c/fleet.c (three planted bugs, two builds) fanned out over
# 400 hosts and 30 days as host/yyyy-mm-dd/*.json. Files are in the page cache (made just
# before). Writes bench/out/fleet/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/fleet
K=${K:-5} N_PROCS=${N_PROCS:-1000} N_REPORTS=${N_REPORTS:-200000}
[ "${1:-}" = --quick ] && K=1 N_PROCS=50 N_REPORTS=2000
unset UFENCE_OPTIONS LD_PRELOAD
# Peak RSS from GNU time (a child of a Python or shell fork would count its parent's pages).
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
    else
        echo "bench/fleet.sh needs /usr/bin/time: apt-get install time" >&2
        exit 1
    fi
fi
cargo build --release >&2
UF=$PWD/target/release/ufence
LIB=$PWD/target/release/libufence.so
mkdir -p "$OUT"
SRC=crates/ufence-cli/tests/c/fleet.c
gcc -g -O1 -fno-optimize-sibling-calls -Wl,--build-id -o "$OUT/app1" "$SRC"
gcc -DV2 -g -O1 -fno-optimize-sibling-calls -Wl,--build-id -o "$OUT/app2" "$SRC"

# Six real reports.
rm -rf "$OUT/src" && mkdir -p "$OUT/src"
for bug in uaf oob dfree; do
    for app in app1 app2; do
        LD_PRELOAD=$LIB UFENCE_OPTIONS="sample_rate=1:max_overhead=0:report_dir=$OUT/src" \
            "$OUT/$app" "$bug" >/dev/null 2>&1
    done
done
[ "$(ls "$OUT/src" | wc -l)" = 6 ] || { echo "expected 6 reports in $OUT/src" >&2; exit 1; }

# One real control file, of a live process that has sampled.
rm -rf "$OUT/rt" && mkdir -m 700 "$OUT/rt"
UFENCE_RUNTIME_DIR=$PWD/$OUT/rt LD_PRELOAD=$LIB UFENCE_OPTIONS=sample_rate=1:max_overhead=0 \
    "$OUT/app1" leak stay >/dev/null 2>&1 &
APP=$!
for _ in $(seq 100); do [ -e "$OUT/rt/$APP.ufence" ] && break; sleep 0.05; done
sleep 0.3
cp "$OUT/rt/$APP.ufence" "$OUT/control.src"
kill "$APP"; wait "$APP" || true

# Control-file sets.
SLEEPS=()
cleanup() { [ ${#SLEEPS[@]} -gt 0 ] && kill "${SLEEPS[@]}" 2>/dev/null; true; }
trap cleanup EXIT
seq 3000000 $((3000000 + N_PROCS - 1)) >"$OUT/pids-gone"
: >"$OUT/pids-running"
for _ in $(seq "$N_PROCS"); do
    sleep 600 &
    SLEEPS+=($!)
    echo $! >>"$OUT/pids-running"
done
rm -rf "$OUT/gone" "$OUT/running"
python3 bench/fleet_corpus.py control "$OUT/control.src" "$OUT/gone" "$OUT/pids-gone"
python3 bench/fleet_corpus.py control "$OUT/control.src" "$OUT/running" "$OUT/pids-running" --unknown-start

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
RES=$OUT/results.md
{
    echo "| measurement | median of $K | peak RSS |"
    echo "| --- | --- | --- |"
} >"$RES"

scrape() { # set
    local walls=() inner=() rss=()
    for _ in $(seq "$K"); do
        /usr/bin/time -f "%e %M" -o "$OUT/time" "$UF" exporter --once --runtime-dir "$OUT/$1" >"$OUT/metrics"
        stale=$(awk '/^ufence_host_processes\{state="stale"\}/ {print $2}' "$OUT/metrics")
        [ "$stale" = "$N_PROCS" ] || { echo "scrape of $1: $stale stale processes, not $N_PROCS" >&2; exit 1; }
        inner+=("$(awk '/^ufence_exporter_scrape_duration_seconds/ {print $2}' "$OUT/metrics")")
        read -r w m <"$OUT/time"
        walls+=("$w"); rss+=("$m")
    done
    echo "| scrape of $N_PROCS control files ($1): inside the exporter | $(printf '%s\n' "${inner[@]}" | median) s | |" >>"$RES"
    echo "| scrape of $N_PROCS control files ($1): whole \`exporter --once\` | $(printf '%s\n' "${walls[@]}" | median) s | $(printf '%s\n' "${rss[@]}" | median) KiB |" >>"$RES"
}
scrape gone
scrape running

# Reports.
if [ "$(cat "$OUT/corpus.count" 2>/dev/null)" != "$N_REPORTS" ]; then
    rm -rf "$OUT/corpus"
    python3 bench/fleet_corpus.py reports "$OUT/src" "$OUT/corpus" "$N_REPORTS"
    find "$OUT/corpus" -name '*.json' -print0 | xargs -0 cat >"$OUT/corpus.ndjson"
    echo "$N_REPORTS" >"$OUT/corpus.count"
fi
tenth=$((N_REPORTS / 10))
head -n "$tenth" "$OUT/corpus.ndjson" >"$OUT/corpus-tenth.ndjson"
triage() { # label, expected reports, args...
    local label=$1 want=$2 walls=() rss=()
    shift 2
    for _ in $(seq "$K"); do
        /usr/bin/time -f "%e %M" -o "$OUT/time" "$UF" triage --format json "$@" >"$OUT/triage.json" <"${STDIN:-/dev/null}"
        got=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["reports"], len(d["groups"]))' "$OUT/triage.json")
        [ "$got" = "$want 3" ] || { echo "triage $label: got $got, want $want reports in 3 groups" >&2; exit 1; }
        read -r w m <"$OUT/time"
        walls+=("$w"); rss+=("$m")
    done
    echo "| triage of $want reports, $label | $(printf '%s\n' "${walls[@]}" | median) s | $(printf '%s\n' "${rss[@]}" | median) KiB |" >>"$RES"
}
triage "files in host/date directories" "$N_REPORTS" "$OUT/corpus"
STDIN=$OUT/corpus.ndjson triage "NDJSON on stdin" "$N_REPORTS" -
STDIN=$OUT/corpus-tenth.ndjson triage "NDJSON on stdin (a tenth: peak RSS does not grow with input)" "$tenth" -
cat "$RES"
