/* Runs one command and prints "WALL CPU STATUS MAXRSS_KB": wall-clock seconds, the child's
 * user+system CPU seconds and its peak resident set size in KiB (both from wait4's rusage, so
 * all its threads and the waited-for children it spawned, e.g. cc1plus under g++), and its exit
 * status (124 for a timeout, 128+N for signal N).
 *
 * usage: runrss TIMEOUT_S STDIN STDOUT STDERR [--as-kb=N] [VAR=VALUE...] -- COMMAND [ARGS...]
 *
 * The interface of bench/timeit.py plus a fourth output field and an optional address-space
 * limit (RLIMIT_AS, as `ulimit -v N`) set in the child only. It is C rather than Python because
 * ru_maxrss keeps the high-water mark of every memory image the process had, including the one
 * it had before exec: a child forked from Python (or vforked from it, sharing its memory) starts
 * with 5-8 MiB of the interpreter's pages already counted, which would swamp small programs.
 * A child forked from this small program starts near 1 MiB. The timeout kills the child's whole
 * process group (g++ runs cc1plus and as). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;
static pid_t child;

static void on_alarm(int sig) {
    (void)sig;
    timed_out = 1;
    kill(-child, SIGKILL);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: runrss TIMEOUT_S STDIN STDOUT STDERR [--as-kb=N] [VAR=VALUE...] -- COMMAND [ARGS...]\n");
        return 2;
    }
    double timeout = atof(argv[1]);
    int fin = open(argv[2], O_RDONLY | O_CLOEXEC);
    int fout = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ferr = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fin < 0 || fout < 0 || ferr < 0) {
        perror("runrss: open");
        return 2;
    }
    long long as_kb = 0;
    int i = 5;
    if (strncmp(argv[i], "--as-kb=", 8) == 0)
        as_kb = atoll(argv[i++] + 8);
    int vars = i;
    while (i < argc && strcmp(argv[i], "--") != 0)
        i++;
    if (i + 1 >= argc) {
        fprintf(stderr, "runrss: missing -- COMMAND\n");
        return 2;
    }
    int nvars = i - vars;
    char **cmd = argv + i + 1;

    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    double t0 = now();
    child = fork();
    if (child < 0) {
        perror("runrss: fork");
        return 2;
    }
    if (child == 0) {
        setpgid(0, 0);
        dup2(fin, 0);
        dup2(fout, 1);
        dup2(ferr, 2);
        for (int k = 0; k < nvars; k++)
            putenv(argv[vars + k]);
        if (as_kb > 0) {
            struct rlimit rl = {as_kb * 1024, as_kb * 1024};
            setrlimit(RLIMIT_AS, &rl);
        }
        execvp(cmd[0], cmd);
        fprintf(stderr, "runrss: exec %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    setpgid(child, child); /* also here, so that the timeout can never miss the group */
    struct itimerval it = {{0, 0}, {(long)timeout, (long)((timeout - (long)timeout) * 1e6)}};
    setitimer(ITIMER_REAL, &it, NULL);
    int status;
    struct rusage ru;
    pid_t r;
    while ((r = wait4(child, &status, 0, &ru)) < 0 && errno == EINTR)
        ;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    double wall = now() - t0;
    /* Reap anything the timeout left of the group (ignore errors: usually nothing). */
    if (timed_out)
        kill(-child, SIGKILL);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    int code;
    if (r < 0)
        code = 255;
    else if (timed_out)
        code = 124;
    else if (WIFSIGNALED(status))
        code = 128 + WTERMSIG(status);
    else
        code = WEXITSTATUS(status);
    printf("%.4f %.4f %d %ld\n", wall, cpu, code, ru.ru_maxrss);
    return 0;
}
