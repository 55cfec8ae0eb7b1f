/* Shared by the bug programs of bench/peers: each program does exactly one memory-safety bug,
 * then prints "survived" and exits 0, so that a silent miss (exit 0, "survived") can be told
 * from a detection (a report, a crash). Built with -O0 -fno-builtin so that the compiler keeps
 * every access as written and calls the C library's string functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keeps a value alive and opaque to the compiler. */
static void *volatile sink;
#define KEEP(p) (sink = (void *)(p))

static void survived(void) {
    printf("survived\n");
    fflush(stdout);
}
