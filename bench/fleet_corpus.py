#!/usr/bin/env python3
"""Fleet-sized inputs for the fleet benchmarks (bench/fleet.sh), made from real ufence output.

  fleet_corpus.py reports SRC_DIR OUT_DIR N [HOSTS] [DAYS]
      Fans the real JSON reports in SRC_DIR (a few planted bugs) out into N report files laid
      out as a fleet's collected report_dirs, OUT_DIR/host-NNNN/YYYY-MM-DD/ufence-SECS-PID-N.json:
      report i is source report i % len(SRC) with its host name, pid and time changed
      (HOSTS hosts, default 400, over DAYS days, default 30, from 2026-11-01).

  fleet_corpus.py control SRC_FILE OUT_DIR PIDS_FILE
      Copies one real control file (a process's SRC_FILE from its runtime directory) to
      OUT_DIR/PID.ufence for every pid in PIDS_FILE (one a line), with the header's pid set to
      it; with --unknown-start the recorded process start time is cleared, so that a reader
      checks the process's /proc/PID/maps too (the slow path of deciding liveness).
"""
import json
import os
import struct
import sys

# crates/ufence/src/control/control.rs, Header: magic u64, version u32, block_len u32, file_len u64,
# pid u32 (offset 24), ... proc_start_ticks u64 (after start_mono_ns; found by field order below).
PID_OFFSET = 24


def reports(src, out, n, hosts=400, days=30):
    srcs = []
    for name in sorted(os.listdir(src)):
        if name.endswith(".json"):
            with open(os.path.join(src, name)) as f:
                srcs.append(json.load(f))
    if not srcs:
        sys.exit(f"no reports in {src}")
    start = 1793491200  # 2026-11-01T00:00:00Z
    span = days * 86400
    made_dirs = set()
    for i in range(n):
        r = srcs[i % len(srcs)]
        host = f"host-{(i * 7919) % hosts:04d}"
        t = start + (i * 104729) % span
        pid = 1000 + (i * 31) % 60000
        r["process"]["hostname"] = host
        r["process"]["pid"] = pid
        r["time"]["unix_ns"] = t * 1_000_000_000
        y, m, d = civil(t // 86400)
        day = f"{y:04d}-{m:02d}-{d:02d}"
        dirp = os.path.join(out, host, day)
        if dirp not in made_dirs:
            os.makedirs(dirp, exist_ok=True)
            made_dirs.add(dirp)
        with open(os.path.join(dirp, f"ufence-{t}-{pid}-{i}.json"), "w") as f:
            json.dump(r, f)
            f.write("\n")


def civil(z):
    """The civil date of a day count since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def control(src, out, pids_file, unknown_start):
    with open(src, "rb") as f:
        block = bytearray(f.read())
    # Header offsets after pid: uid u32 (28), state u32 (32), mode u32 (36), nslots u32 (40),
    # slot_len u32 (44), slots_offset u64 (48), page_size u64 (56), pool_base u64 (64),
    # start_unix_ns u64 (72), start_mono_ns u64 (80), proc_start_ticks u64 (88).
    os.makedirs(out, mode=0o700, exist_ok=True)
    with open(pids_file) as f:
        pids = [int(l) for l in f if l.strip()]
    for pid in pids:
        struct.pack_into("<I", block, PID_OFFSET, pid)
        if unknown_start:
            struct.pack_into("<Q", block, 88, 0)
        path = os.path.join(out, f"{pid}.ufence")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, block)
        os.close(fd)


def main():
    a = sys.argv[1:]
    if a and a[0] == "reports" and len(a) >= 4:
        reports(a[1], a[2], int(a[3]), *(int(x) for x in a[4:6]))
    elif a and a[0] == "control" and len(a) >= 4:
        control(a[1], a[2], a[3], "--unknown-start" in a[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
