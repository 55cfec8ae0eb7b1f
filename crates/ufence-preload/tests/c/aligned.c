/* Aligned allocations: every power-of-two alignment of posix_memalign, aligned_alloc and
   memalign. Mode "check" verifies alignment and usability (same output with or without
   ufence); mode "overflow" writes one byte past a right-placed object of each kind, which
   ufence must catch, on the guard page or in the canary when the object is freed. */
#include "common.h"
#include <errno.h>
#include <malloc.h>
#include <string.h>

enum { F_POSIX, F_ALIGNED_ALLOC, F_MEMALIGN, NFUNCS };
static const char *const names[NFUNCS] = {"posix_memalign", "aligned_alloc", "memalign"};

/* The smallest alignment each function accepts. */
static size_t min_align(int f) { return f == F_POSIX ? sizeof(void *) : 1; }

NOINLINE void *alloc_aligned(int f, size_t align, size_t size) {
    void *p = NULL;
    switch (f) {
    case F_POSIX:
        if (posix_memalign(&p, align, size) != 0)
            p = NULL;
        break;
    case F_ALIGNED_ALLOC:
        p = aligned_alloc(align, size);
        break;
    default:
        p = memalign(align, size);
        break;
    }
    NO_TAIL_CALL();
    return p;
}

NOINLINE void free_aligned(void *p) {
    free(p);
    NO_TAIL_CALL();
}

/* A plain store (no read first, so a guard-page fault is a write). Zero is never a canary
   byte (KFENCE's pattern is 0xaa ^ (address & 7)). */
NOINLINE void poke_past_end(volatile char *p, size_t size) { p[size] = 0; }

NOINLINE int check(void) {
    static const size_t sizes[] = {1, 7, 24, 48, 100, 1000, 4000, 4096, 5000};
    int bad = 0, n = 0;
    for (int f = 0; f < NFUNCS; f++) {
        for (size_t align = min_align(f); align <= 16384; align *= 2) {
            int ok = 1;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                for (int rep = 0; rep < 3; rep++) {
                    char *p = alloc_aligned(f, align, sizes[s]);
                    n++;
                    if (!p || (uintptr_t)p % align != 0 || malloc_usable_size(p) < sizes[s]) {
                        ok = 0;
                        continue;
                    }
                    memset(p, 0x5a, sizes[s]);
                    free_aligned(p);
                }
            }
            printf("%s align=%zu: %s\n", names[f], align, ok ? "ok" : "BAD");
            bad += !ok;
        }
    }
    /* valloc and pvalloc are page-aligned. */
    for (int rep = 0; rep < 20; rep++) {
        char *v = valloc(100 + rep), *pv = pvalloc(100 + rep);
        if (!v || page_offset(v) || !pv || page_offset(pv) || malloc_usable_size(pv) < PAGE)
            bad++;
        else {
            memset(v, 1, 100 + rep);
            memset(pv, 2, PAGE);
        }
        free(v);
        free(pv);
    }
    printf("allocations=%d bad=%d\n", n, bad);
    return bad != 0;
}

/* For each kind and alignment up to a page: a right-placed object of 48 bytes (one not at the
   start of its page; with a page alignment, any), one byte written past its end, freed. */
NOINLINE int overflow(void) {
    int combos = 0;
    for (int f = 0; f < NFUNCS; f++) {
        for (size_t align = min_align(f); align <= PAGE; align *= 2) {
            char *p = NULL;
            for (int i = 0; i < MAX_TRIES && !p; i++) {
                char *q = alloc_aligned(f, align, 48);
                if (!q || (uintptr_t)q % align != 0)
                    die("misaligned or failed aligned allocation");
                if (page_offset(q) != 0 || align == PAGE)
                    p = q;
                else
                    free_aligned(q);
            }
            if (!p)
                die("no right-placed aligned object");
            printf("case %s align=%zu obj=%p\n", names[f], align, (void *)p);
            poke_past_end(p, 48);
            free_aligned(p);
            combos++;
        }
    }
    printf("cases=%d\n", combos);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && !strcmp(argv[1], "check"))
        return check();
    if (argc > 1 && !strcmp(argv[1], "overflow"))
        return overflow();
    die("usage: aligned check|overflow");
}
