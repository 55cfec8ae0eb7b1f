/* Healthy programs that do unusual things with memory protection, signals and pointers:
 * each must behave exactly as without ufence (found by review; see preload.rs). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common.h"

static volatile char *tracked;
static volatile int dirty;

/* Write tracking: the page is read-only until the first write, which the handler records. */
static void on_write(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    char *page = (char *)((uintptr_t)si->si_addr & ~(uintptr_t)4095);
    if (page == (char *)tracked) {
        dirty = 1;
        mprotect(page, 4096, PROT_READ | PROT_WRITE);
    } else {
        _exit(3);
    }
}

static int calls;
static void log_and_return(int sig) {
    (void)sig;
    calls++;
    fprintf(stderr, "crash handler call %d\n", calls);
    if (calls > 1) _exit(42); /* would loop forever otherwise */
}

static sigjmp_buf probe_jmp;
static void probe(int sig) { (void)sig; siglongjmp(probe_jmp, 1); }

static void reporter(int sig) {
    (void)sig;
    static const char msg[] = "crash reporter called\n";
    write(2, msg, sizeof msg - 1);
    _exit(1);
}

static int is_left(void *p) { return ((uintptr_t)p & 4095) == 0; }

int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "write_tracking")) {
        struct sigaction sa = {0};
        sa.sa_sigaction = on_write;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        tracked = valloc(4096);
        mprotect((void *)tracked, 4096, PROT_READ);
        tracked[100] = 1;
        printf("dirty=%d value=%d\n", dirty, tracked[100]);
        free((void *)tracked);
    } else if (!strcmp(m, "resethand")) {
        struct sigaction sa = {0};
        sa.sa_handler = log_and_return;
        sa.sa_flags = SA_RESETHAND;
        sigaction(SIGSEGV, &sa, NULL);
        free(malloc(16));
        *(volatile int *)16 = 1; /* once to the handler, then the default action */
        puts("not reached");
    } else if (!strcmp(m, "restore")) {
        /* Probe with a temporary handler, then put the old one back exactly. */
        struct sigaction sa = {0}, old;
        sa.sa_handler = probe;
        sigaction(SIGSEGV, &sa, &old);
        if (!sigsetjmp(probe_jmp, 1)) *(volatile int *)16 = 1;
        sigaction(SIGSEGV, &old, NULL);
        printf("old handler was default: %d\n", old.sa_handler == SIG_DFL);
        fflush(stdout);
        free(malloc(16));
        *(volatile int *)16 = 1; /* a genuine crash: the probe must not be called */
        puts("not reached");
    } else if (!strcmp(m, "late_handler")) {
        /* Objects allocated before the program installs its crash reporter are still guarded. */
        char *p;
        do { p = malloc(32); } while (is_left(p));
        signal(SIGSEGV, reporter);
        printf("obj=%p\n", (void *)p);
        fflush(stdout);
        printf("read %d\n", ((volatile char *)p)[32]);
        puts("end");
    } else if (!strcmp(m, "tagged")) {
        /* Low pointer bits as tags, relying on malloc's 16-byte alignment as glibc documents. */
        int bad = 0;
        for (int i = 0; i < 200; i++) {
            size_t n = 1 + i % 15;
            char *s = malloc(n);
            uintptr_t boxed = (uintptr_t)s | 5;
            if ((boxed & ~(uintptr_t)15) != (uintptr_t)s) bad++;
            free((void *)(boxed & ~(uintptr_t)15));
        }
        printf("misaligned=%d\n", bad);
    } else if (!strcmp(m, "dlerror")) {
        void *h = dlopen("libdoes-not-exist-ufence.so", RTLD_NOW);
        char *big = malloc(8192);
        memset(big, 1, 8192);
        big = realloc(big, 16); /* may move into the pool */
        printf("usable>=16: %d\n", malloc_usable_size(big) >= 16);
        const char *e = dlerror();
        printf("handle=%p error kept=%d\n", h, e != NULL);
        free(big);
    } else if (!strcmp(m, "dlopen")) {
        /* Libraries loaded at run time allocate through the preload like everything else. */
        for (int i = 0; i < 20; i++) {
            void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
            double (*f)(double) = h ? (double (*)(double))dlsym(h, "cos") : NULL;
            char *buf = malloc(64);
            snprintf(buf, 64, "%.6f", f ? f(i * 0.5) : -1.0);
            if (i % 5 == 0) printf("cos(%d/2)=%s\n", i, buf);
            free(buf);
            if (h) dlclose(h);
        }
    } else if (!strcmp(m, "stale_free")) {
        /* Run with num_objects=1: the stale free of an earlier occupant of the slot must not
         * use up the report of the object living there now. */
        char *old = NULL, *obj = NULL;
        for (int i = 0; i < 1000 && !old; i++) { old = malloc(32); if (!is_left(old)) { free(old); old = NULL; } }
        if (!old) { puts("no left-placed object (not sampled?)"); return 3; }
        free(old);
        for (int i = 0; i < 1000 && !obj; i++) { obj = malloc(32); if (is_left(obj)) { free(obj); obj = NULL; } }
        if (!obj) { puts("no right-placed object"); return 3; }
        printf("old=%p obj=%p\n", (void *)old, (void *)obj);
        fflush(stdout);
        free(old); /* bug 1: a stale free */
        printf("read %d\n", ((volatile char *)obj)[32]); /* bug 2: one past the end */
        puts("end");
    } else {
        fprintf(stderr, "unknown mode %s\n", m);
        return 2;
    }
    return 0;
}
