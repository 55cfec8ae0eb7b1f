/* A program with planted bugs for the fleet tests (triage, exporter):
 *   fleet uaf|oob|dfree|leak [stay]
 * commits the bug once (the bad access through a volatile pointer; leak: none), prints
 * "ready PID", and with "stay" keeps running until SIGTERM (so that its control block stays
 * live), allocating and freeing; with leak it never frees (a pool that fills up). Built twice
 * by the triage test, with and without -DV2: the builds differ only in `unrelated`, which sits
 * before the buggy functions so that every offset after it moves. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

#ifdef V2
NOINLINE int unrelated(int x) {
    volatile int a[16];
    for (int i = 0; i < 16; i++) a[i] = x * i + 3;
    int s = 0;
    for (int i = 0; i < 16; i++) s += a[i] * a[15 - i];
    return s;
}
#else
NOINLINE int unrelated(int x) { return x + 1; }
#endif

NOINLINE char *make_object(size_t n) {
    char *p = malloc(n);
    memset(p, 1, n);
    NO_TAIL_CALL();
    return p;
}

NOINLINE void drop_object(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE int read_freed(volatile char *p) {
    int v = p[8];
    NO_TAIL_CALL();
    return v;
}

/* One of the two reads hits a guard page whichever side the object was placed on. */
NOINLINE int read_around(volatile char *p, size_t n) {
    int v = p[n];
    v += p[-1];
    NO_TAIL_CALL();
    return v;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    const char *bug = argc > 1 ? argv[1] : "";
    signal(SIGTERM, on_term);
    int sink = unrelated(argc);
    char *p = make_object(64);
    if (!strcmp(bug, "uaf")) {
        drop_object(p);
        sink += read_freed(p);
    } else if (!strcmp(bug, "oob")) {
        sink += read_around(p, 64);
        drop_object(p);
    } else if (!strcmp(bug, "dfree")) {
        drop_object(p);
        drop_object(p);
    } else if (strcmp(bug, "leak") != 0) {
        fprintf(stderr, "usage: fleet uaf|oob|dfree|leak [stay]\n");
        return 2;
    }
    printf("ready %d %d\n", (int)getpid(), sink & 1);
    fflush(stdout);
    if (argc > 2 && !strcmp(argv[2], "stay")) {
        int leak = !strcmp(bug, "leak");
        while (!stop) {
            char *q = make_object(32);
            if (!leak) free(q);
            usleep(2000);
        }
    }
    return 0;
}
