/* Shared helpers of the ufence preload test programs. */
#ifndef UFENCE_TEST_COMMON_H
#define UFENCE_TEST_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
/* Placed after a call, keeps the compiler from turning it into a tail call, so that the
   calling helper shows up in the stacks ufence records. */
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

#define PAGE 4096u
#define MAX_TRIES 200

static inline uintptr_t page_offset(const void *p) { return (uintptr_t)p & (PAGE - 1); }

/* Fails loudly (status 99) instead of letting a test pass on the wrong premise. */
static inline void die(const char *what) {
    fprintf(stderr, "test program: %s\n", what);
    fflush(stderr);
    _exit(99);
}

#endif
