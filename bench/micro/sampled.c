/* What one sampled allocation and its free cost (bench/samples.sh).
 *
 *   sampled N [DEPTH]    N malloc(33)/free pairs, each made DEPTH calls below main (default 8,
 *                        so that the stack walks have a realistic length). Run it under
 *                        libufence.so with UFENCE_OPTIONS=sample_rate=1:max_overhead=0 to have
 *                        every pair sampled.
 *   sampled --mprotect N the floor of a sampled pair: the two mprotect calls ufence makes (open
 *                        the object's page at allocation, close the slot at free) on a region
 *                        laid out as ufence's pool (255 object pages between guard pages),
 *                        slots taken in turn, with one write to the page as the canary fill does.
 *
 * Prints `pairs=N sampled=S cpu_s=C wall_s=W`: S counts the pairs whose object was ufence's
 * (malloc_usable_size gives a pool object's exact size, 33, where glibc's is 40); C is the
 * process's CPU time (user and system) over the loop, which a busy neighbour does not inflate
 * the way it does wall time. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static long sampled;

__attribute__((noinline)) static void pair(int depth) {
    if (depth > 0) {
        pair(depth - 1);
        __asm__ volatile("" ::: "memory"); /* no tail call: each level keeps its frame */
        return;
    }
    char *volatile p = malloc(33);
    p[0] = 1;
    sampled += malloc_usable_size(p) == 33;
    free(p);
}

int main(int argc, char **argv) {
    double c0, w0;
    long n;
    if (argc > 2 && !strcmp(argv[1], "--mprotect")) {
        n = atol(argv[2]);
        const long page = 4096, slots = 255;
        char *pool = mmap(NULL, (2 * slots + 1) * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pool == MAP_FAILED) return 1;
        c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        w0 = now(CLOCK_MONOTONIC);
        for (long i = 0; i < n; i++) {
            char *obj = pool + (1 + 2 * (i % slots)) * page;
            if (mprotect(obj, page, PROT_READ | PROT_WRITE)) return 1;
            obj[i % page] = 1;
            if (mprotect(obj, page, PROT_NONE)) return 1;
        }
    } else {
        n = argc > 1 ? atol(argv[1]) : 0;
        int depth = argc > 2 ? atoi(argv[2]) : 8;
        c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        w0 = now(CLOCK_MONOTONIC);
        for (long i = 0; i < n; i++) pair(depth);
    }
    printf("pairs=%ld sampled=%ld cpu_s=%.6f wall_s=%.6f\n", n, sampled,
           now(CLOCK_PROCESS_CPUTIME_ID) - c0, now(CLOCK_MONOTONIC) - w0);
    return 0;
}
