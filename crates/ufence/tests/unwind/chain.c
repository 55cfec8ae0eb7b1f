/* Frames for the unwinder tests: a few levels of calls of different shapes (a leaf-ish
 * function with a big frame, a variable-length array that makes rbp the CFA register, a call
 * through the C library's qsort), ending in a callback into the test. */
#include <stdlib.h>
#include <string.h>
#include <alloca.h>

typedef void (*cb_t)(void);
static cb_t the_cb;
static volatile int sink;

__attribute__((noinline)) static int by_qsort(const void *a, const void *b) {
    static int called;
    if (!called++) the_cb();
    return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) void level_qsort(void) {
    int v[4] = {3, 1, 2, 0};
    qsort(v, 4, sizeof v[0], by_qsort);
    sink = v[0];
}

__attribute__((noinline)) void level_vla(int n) {
    char *buf = alloca(n);
    memset(buf, n, n);
    level_qsort();
    sink = buf[n / 2];
}

__attribute__((noinline)) void level_big(int n) {
    char big[8192];
    memset(big, n, sizeof big);
    level_vla(n + 40);
    sink = big[n];
}

__attribute__((noinline)) void chain(int depth, cb_t cb) {
    the_cb = cb;
    if (depth > 0) {
        chain(depth - 1, cb);
        sink = depth;
    } else {
        level_big(depth + 7);
    }
}

/* A fault at a known instruction, inside a frame of this module: the test's handler makes the
 * page accessible and the write completes. */
__attribute__((noinline)) void fault_in(volatile char *p, int depth) {
    if (depth > 0) {
        fault_in(p, depth - 1);
        sink = depth;
    } else {
        char big[512];
        memset(big, 1, sizeof big);
        p[3] = big[7];
    }
}
