#!/usr/bin/env bash
# redis-server (Debian's, linked against jemalloc) under ufence: requests per second from
# redis-benchmark, plain, under libufence.so at its defaults, and at sample_rate=1.
#
#   bench/redis.sh            K=5 interleaved rounds of -n 200000 (a few minutes)
#   bench/redis.sh --quick    K=1 round of -n 20000: a smoke test that asserts nothing about speed
#
# Each round starts a fresh server per variant on a loopback port (the variants' order rotates
# from round to round), runs `redis-benchmark -q -n N -t set,get,lpush,lpop` against it, and
# shuts it down. Prints and writes bench/out/redis.md: the median requests per second of each
# test per variant and its ratio to plain, and the server's CPU time (user+system, from
# /proc/PID/stat) per 1,000 requests, which a shared machine's noise moves less than
# throughput does. Fails if a server does not start, does not shut down
# cleanly, or prints a ufence report (the workload is clean).
# Needs redis-server and redis-tools (apt-get install redis-server redis-tools).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
mkdir -p "$OUT/redis"

QUICK=0
[ "${1:-}" = --quick ] && QUICK=1
if [ $QUICK = 1 ]; then K=${K:-1} N=${N:-20000}; else K=${K:-5} N=${N:-200000}; fi
unset UFENCE_OPTIONS LD_PRELOAD

for tool in redis-server redis-benchmark redis-cli; do
    command -v $tool >/dev/null || { echo "redis.sh: $tool not installed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
cargo build --release -p ufence-preload >&2 || exit 1
cp target/release/libufence.so "$OUT/redis/libufence.so"
SO=$OUT/redis/libufence.so
PORT=${PORT:-16379}
TSV=$OUT/redis/rps.tsv
printf 'variant\tround\ttest\trps\n' >"$TSV"
CPU=$OUT/redis/cpu.tsv
printf 'variant\tround\tcpu_ticks\n' >"$CPU"
FAILED=0

# one VARIANT ROUND: a server under the variant, one benchmark, a clean shutdown.
one() {
    local variant=$1 k=$2 env=()
    case $variant in
    default) env=(LD_PRELOAD="$SO") ;;
    rate1) env=(LD_PRELOAD="$SO" UFENCE_OPTIONS=sample_rate=1) ;;
    esac
    local dir=$OUT/redis/$variant.$k log=$OUT/redis/$variant.$k.log
    rm -rf "$dir"
    mkdir -p "$dir"
    env "${env[@]}" UFENCE_RUNTIME_DIR="$dir" redis-server --port "$PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$dir" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-benchmark -p "$PORT" -q -n "$N" -t set,get,lpush,lpop 2>/dev/null | tr '\r' '\n' |
        awk -v v="$variant" -v k="$k" '/requests per second/ { sub(":", "", $1); print v "\t" k "\t" $1 "\t" $2 }' >>"$TSV"
    # utime + stime (fields 14 and 15, after the command name in parentheses), in clock ticks.
    local ticks
    ticks=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    printf '%s\t%s\t%s\n' "$variant" "$k" "${ticks:-0}" >>"$CPU"
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1
    wait "$pid"
    local rc=$?
    if [ $rc -ne 0 ] || grep -q 'BUG: UFENCE' "$log" || ! grep -q 'bye bye' "$log"; then
        echo "redis.sh: FAIL: $variant round $k (exit $rc; see $log)" >&2
        FAILED=1
    fi
    echo "  $variant round $k done" >&2
}

VARIANTS=(plain default rate1)
for ((k = 1; k <= K; k++)); do
    for ((j = 0; j < 3; j++)); do
        one "${VARIANTS[$(((j + k) % 3))]}" "$k"
    done
done

python3 - "$TSV" "$K" "$N" "$CPU" "$(getconf CLK_TCK)" >"$OUT/redis.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
k, n = sys.argv[2], sys.argv[3]
cpu = list(csv.DictReader(open(sys.argv[4]), delimiter="\t"))
hz = float(sys.argv[5])
tests = ["SET", "GET", "LPUSH", "LPOP"]
med = {}
for t in tests:
    for v in ["plain", "default", "rate1"]:
        xs = [float(r["rps"]) for r in rows if r["test"] == t and r["variant"] == v]
        med[t, v] = statistics.median(xs) if xs else float("nan")
print(f"redis-benchmark -q -n {n}, median of K={k} rounds (requests per second; ratio to plain)")
print()
print("| test | plain | ufence default | ratio | ufence sample_rate=1 | ratio |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for t in tests:
    p, d, r = med[t, "plain"], med[t, "default"], med[t, "rate1"]
    print(f"| {t} | {p:,.0f} | {d:,.0f} | {d / p:.3f} | {r:,.0f} | {r / p:.3f} |")
requests = 4 * int(n) / 1000
c = {v: statistics.median(float(r["cpu_ticks"]) for r in cpu if r["variant"] == v) / hz / requests * 1000
     for v in ["plain", "default", "rate1"]}
print()
print("| server CPU per 1,000 requests | plain | ufence default | ratio | ufence sample_rate=1 | ratio |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
print(f"| ms (median of K) | {c['plain']:.2f} | {c['default']:.2f} | {c['default'] / c['plain']:.3f} "
      f"| {c['rate1']:.2f} | {c['rate1'] / c['plain']:.3f} |")
PY
cat "$OUT/redis.md"
exit $FAILED
