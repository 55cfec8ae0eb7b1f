#!/usr/bin/env python3
"""Runs one command and prints "WALL CPU STATUS": wall-clock seconds, the child's user+system
CPU seconds (from wait4's rusage, so all its threads), and its exit status (a number, 124 for a
timeout, 128+N for signal N).

usage: timeit.py TIMEOUT_S STDIN STDOUT STDERR [VAR=VALUE...] -- COMMAND [ARGS...]

The VAR=VALUE pairs are added to the child's environment only, so this script never runs
under LD_PRELOAD itself. Start-up of this script is outside the measured interval.
"""
import os
import signal
import sys
import time


def main():
    timeout, fin, fout, ferr = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    rest = sys.argv[5:]
    sep = rest.index("--")
    env = dict(os.environ)
    for kv in rest[:sep]:
        k, v = kv.split("=", 1)
        env[k] = v
    argv = rest[sep + 1:]
    i = os.open(fin, os.O_RDONLY)
    o = os.open(fout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    e = os.open(ferr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(i, 0)
            os.dup2(o, 1)
            os.dup2(e, 2)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    timed_out = []

    def on_alarm(signum, frame):
        timed_out.append(True)
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    # A blocking wait: Python retries it after the alarm's handler runs (PEP 475).
    _, status, ru = os.wait4(pid, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    wall = time.perf_counter() - t0
    cpu = ru.ru_utime + ru.ru_stime
    if timed_out:
        code = 124
    elif os.WIFSIGNALED(status):
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    print(f"{wall:.4f} {cpu:.4f} {code}")


main()
