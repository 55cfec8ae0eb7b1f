/* libreports_helper.so: allocates and misuses memory from inside a shared library, so that
   report frames in a library of ours are named with their file and line. */
#include "helper.h"
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

NOINLINE char *helper_alloc(size_t n) {
    char *p = malloc(n); /* LINE:helper_alloc */
    __asm__ volatile("" ::: "memory");
    return p;
}

NOINLINE void helper_poke(char *p, size_t i) {
    p[i] = 1; /* LINE:helper_poke */
    __asm__ volatile("" ::: "memory");
}
