/* A shared library whose constructor allocates: it runs before libufence.so's own constructor
 * (the loader initialises a program's libraries before its preloads), so ufence must find the
 * allocator behind it at the first call. Linked into alloc.c's program (tests/allocators.rs). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((constructor)) static void allocate_early(void) {
    char *p = malloc(100);
    memset(p, 7, 100);
    size_t n = malloc_usable_size(p);
    p = realloc(p, 5000);
    if (n < 100 || p[99] != 7) {
        fprintf(stderr, "early: usable size %zu, byte %d\n", n, p[99]);
        exit(2);
    }
    free(p);
    void *q = memalign(64, 10);
    free(q);
    q = calloc(3, 50);
    free(q);
    fputs("early ok\n", stderr);
}
