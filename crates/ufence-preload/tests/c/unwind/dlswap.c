/* A library that allocates (every allocation sampled) is unloaded, and another, with other
 * unwind rules at the same offsets, is loaded at the same address; a use-after-free of an
 * object allocated through the second must show its real allocation stack.
 * usage: dlswap DIR (holding liba.so and libb.so) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char *(*make_t)(int);

/* The allocation happens below 8 KiB of zeros: a walk that takes libb's frame for liba's
 * (0x1010 bytes instead of 0x90) finds a zero return address there and stops. */
__attribute__((noinline)) static char *via(make_t make) {
    volatile char pad[8192];
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = 0;
    char *p = make(32); /* LINE:via */
    pad[0] = 1;
    return p;
}

static make_t load(const char *dir, const char *name, void **h, void **base) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*h) { fprintf(stderr, "%s\n", dlerror()); exit(3); }
    make_t make = (make_t)dlsym(*h, "make");
    Dl_info info;
    dladdr((void *)make, &info);
    *base = info.dli_fbase;
    return make;
}

int main(int argc, char **argv) {
    void *h, *base_a, *base_b;
    make_t make = load(argv[1], "liba.so", &h, &base_a);
    for (int i = 0; i < 20; i++) free(via(make));
    dlclose(h);
    make = load(argv[1], "libb.so", &h, &base_b);
    printf("same_base=%d\n", base_a == base_b);
    fflush(stdout);
    char *p = via(make); /* LINE:main */
    free(p);
    volatile char c = p[0];
    (void)c;
    return 0;
}
