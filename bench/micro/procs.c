/* Process life-cycle costs under a malloc preload: what a fork, a fork+exec and a whole process
 * start cost, in microseconds per operation. bench/procs.sh runs it plain and under preloads.
 *
 *   procs fork N        fork; the child allocates once and _exits; the parent waits
 *   procs forkexec N    fork; the child execs PROG (argv[3]); the parent waits
 *   procs exit N        fork; the child allocates once and returns through exit() (atexit runs)
 *
 * The parent first allocates 1,000 small objects, as a service has a live heap.
 *
 * Prints one line of key=value pairs: the median and minimum wall time of one operation, and
 * the CPU time (user + system) and minor page faults per operation of the parent and of the
 * children (from getrusage: the children's share includes their exit).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: procs fork|forkexec|exit N [PROG]\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = atoi(argv[2]);
    const char *prog = argc > 3 ? argv[3] : "/bin/true";
    double *t = malloc(sizeof(double) * n);
    /* Some live heap, as a service has. */
    for (int i = 0; i < 1000; i++) {
        volatile char *p = malloc(64 + i % 512);
        p[0] = 1;
    }
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            if (!strcmp(mode, "forkexec")) {
                execl(prog, prog, (char *)0);
                _exit(127);
            }
            volatile char *p = malloc(100);
            p[0] = 1;
            free((void *)p);
            if (!strcmp(mode, "exit"))
                exit(0);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "procs: child failed (status %d)\n", st);
            return 1;
        }
        t[i] = now_us() - t0;
    }
    qsort(t, n, sizeof(double), cmp);
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
#define US(tv) ((tv).tv_sec * 1e6 + (tv).tv_usec)
    printf("mode=%s median_us=%.1f min_us=%.1f parent_cpu_us=%.1f child_cpu_us=%.1f child_minflt=%.1f\n",
           mode, t[n / 2], t[0], (US(self.ru_utime) + US(self.ru_stime)) / n,
           (US(kids.ru_utime) + US(kids.ru_stime)) / n, (double)kids.ru_minflt / n);
    return 0;
}
