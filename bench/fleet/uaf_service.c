/* A small service for the fleet experiment (bench/fleet_real.py): it allocates and frees one
 * 64-byte request object about every `period_us` microseconds, and every `bug_every` requests
 * it runs a rare path that reads its object after freeing it (a planted use-after-free). It
 * With SHADOWED=1 the rare path runs right after that iteration's request (microseconds after
 * another allocation); by default it replaces the request, so every allocation follows the
 * same pause.
 *   uaf_service PERIOD_US BUG_EVERY SECONDS [SHADOWED] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

__attribute__((noinline)) static char *request(void) {
    char *p = malloc(64);
    memset(p, 1, 64);
    return p;
}

__attribute__((noinline)) static void rare_path(void) {
    char *p = malloc(64);
    memset(p, 2, 64);
    free(p);
    volatile char c = p[8]; /* use after free */
    (void)c;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long period = argc > 1 ? atol(argv[1]) : 1000;
    long every = argc > 2 ? atol(argv[2]) : 5000;
    double secs = argc > 3 ? atof(argv[3]) : 60;
    int shadowed = argc > 4 && atoi(argv[4]) != 0;
    double start = now(), next = start;
    for (long i = 1; now() - start < secs; i++) {
        if (i % every != 0 || shadowed) free(request());
        if (i % every == 0) rare_path();
        next += period / 1e6;
        double wait = next - now();
        if (wait > 0) usleep((useconds_t)(wait * 1e6));
    }
    return 0;
}
