/* One bug per mode (argv[1]), in places whose names and lines the report tests check. Marked
   lines carry a LINE:tag comment, which the tests look up to know the line numbers. Prints
   "end" and exits 42 if it survives the bug (on_error=continue). */
#define _GNU_SOURCE
#include "helper.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

NOINLINE char *make_object(size_t n) {
    char *p = malloc(n); /* LINE:make_object */
    NO_TAIL_CALL();
    return p;
}

NOINLINE void drop_object(char *p) {
    free(p); /* LINE:drop_object */
    NO_TAIL_CALL();
}

NOINLINE int use_object(volatile char *p) {
    int v = p[8]; /* LINE:use_object */
    NO_TAIL_CALL();
    return v;
}

NOINLINE void write_past(char *p, size_t n) {
    for (size_t i = 0; i <= n; i++)
        ((volatile char *)p)[i] = 'x'; /* LINE:write_past */
    NO_TAIL_CALL();
}

/* A use-after-free inside the C library: memcpy reads the freed object. */
NOINLINE void copy_from(char *dst, const char *src, size_t n) {
    memcpy(dst, src, n); /* LINE:copy_from */
    NO_TAIL_CALL();
}

/* A use-after-free reached through the C library: qsort calls back into the program. */
static char *stale;
NOINLINE int compare(const void *a, const void *b) {
    int d = *(const int *)a - *(const int *)b + ((volatile char *)stale)[0]; /* LINE:compare */
    NO_TAIL_CALL();
    return d;
}

NOINLINE void sort_numbers(void) {
    int v[8] = {5, 3, 7, 1, 8, 2, 6, 4};
    qsort(v, 8, sizeof v[0], compare); /* LINE:sort_numbers */
    NO_TAIL_CALL();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "uaf")) {
        char *p = make_object(64);
        drop_object(p);
        use_object(p); /* LINE:main_uaf */
    } else if (!strcmp(mode, "oob")) {
        /* Writes p[0..4096]: a right-placed object faults at p[64] (its guard page, then
           opened, holds the rest), a left-placed one at p[4096], past its page's canary. */
        char *p = make_object(64);
        write_past(p, 4096); /* LINE:main_oob */
    } else if (!strcmp(mode, "memcpy")) {
        char buf[64];
        char *p = make_object(64);
        drop_object(p);
        copy_from(buf, p, sizeof buf); /* LINE:main_memcpy */
    } else if (!strcmp(mode, "qsort")) {
        stale = make_object(64);
        drop_object(stale);
        sort_numbers(); /* LINE:main_qsort */
    } else if (!strcmp(mode, "helper")) {
        char *p = helper_alloc(32); /* LINE:main_helper_alloc */
        free(p);
        helper_poke(p, 3); /* LINE:main_helper_poke */
    } else {
        fprintf(stderr, "usage: reports uaf|oob|memcpy|qsort|helper\n");
        return 2;
    }
    puts("end");
    return 42;
}
