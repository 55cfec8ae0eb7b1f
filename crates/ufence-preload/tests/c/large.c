/* Objects larger than a page, 0-byte objects and page-overaligned requests, one bug per mode
   (argv[1]), as bugs.c does for small objects. Prints the addresses the test needs, then "end"
   and exits 42 if it survives the bug. Under sample_rate=1 every request below goes to the
   pool; the clean modes print the same output with or without ufence. */
#include "common.h"
#include <malloc.h>
#include <string.h>

#define BIG 10000 /* three pages: a partial page at either end of a right- or left-placed one */

/* A malloc(size) whose end touches its slot's right guard page. */
NOINLINE char *big_right(size_t size) {
    for (int i = 0; i < MAX_TRIES; i++) {
        char *p = malloc(size);
        if (p && ((uintptr_t)p + size) % PAGE == 0)
            return p;
    }
    die("no right-placed object");
    return NULL;
}

/* A malloc(size) at its slot's start, after its left guard page. */
NOINLINE char *big_left(size_t size) {
    for (int i = 0; i < MAX_TRIES; i++) {
        char *p = malloc(size);
        if (p && page_offset(p) == 0)
            return p;
    }
    die("no left-placed object");
    return NULL;
}

NOINLINE char *make_big(size_t size) {
    char *p = malloc(size);
    NO_TAIL_CALL();
    return p;
}

NOINLINE void free_big(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE void free_again(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE int read_at(volatile char *p, long i) { return p[i]; }
NOINLINE void write_at(volatile char *p, long i, char v) { p[i] = v; }

/* Reads every byte of [p, p+n) and checks the pattern written by fill(). */
static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 7 + seed))
            return 0;
    return 1;
}
static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + seed);
}

/* realloc chains that cross the classes: small -> large -> larger -> small -> 0 -> large. */
static int realloc_chain(void) {
    static const size_t steps[] = {100, 5000, 60000, 20000, 3000, 70000, 16, 4096, 4097, 65536};
    size_t n = steps[0];
    unsigned char *p = malloc(n);
    fill(p, n, 1);
    int ok = 1, exact = 0;
    for (size_t s = 1; s < sizeof steps / sizeof steps[0]; s++) {
        size_t m = steps[s];
        p = realloc(p, m);
        if (!p)
            die("realloc failed");
        size_t kept = n < m ? n : m;
        if (!same(p, kept, (unsigned)s))
            ok = 0;
        fill(p, m, (unsigned)s + 1);
        if (malloc_usable_size(p) < m)
            ok = 0;
        exact += malloc_usable_size(p) == m;
        printf("realloc %zu -> %zu: %s\n", n, m, ok ? "kept" : "LOST");
        n = m;
    }
    free(p);
    fprintf(stderr, "exact=%d\n", exact);
    return ok;
}

/* Many large buffers allocated, written whole, checked and freed, some kept for a while. */
static void churn(int rounds) {
    enum { KEEP = 16 };
    unsigned char *kept[KEEP] = {0};
    size_t sizes[KEEP] = {0};
    unsigned long sum = 0;
    int exact = 0;
    for (int r = 0; r < rounds; r++) {
        size_t n = 4097 + (size_t)(r * 7919) % 60000;
        int k = r % KEEP;
        if (kept[k]) {
            if (!same(kept[k], sizes[k], (unsigned)k))
                die("a kept buffer changed");
            sum += kept[k][sizes[k] - 1];
            free(kept[k]);
        }
        kept[k] = malloc(n);
        sizes[k] = n;
        exact += malloc_usable_size(kept[k]) == n;
        fill(kept[k], n, (unsigned)k);
        char *z = calloc(0, 8);
        exact += malloc_usable_size(z) == 0;
        free(z);
    }
    for (int k = 0; k < KEEP; k++)
        free(kept[k]);
    printf("churn %d rounds sum=%lu\n", rounds, sum);
    fprintf(stderr, "exact=%d\n", exact);
}

/* The peak resident set in KiB (VmHWM), or -1. */
static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* Allocates, writes whole and frees `n` buffers of `size` bytes, one at a time. */
static void big_cycle(int n, size_t size) {
    int exact = 0;
    for (int i = 0; i < n; i++) {
        char *p = malloc(size);
        memset(p, i, size);
        exact += malloc_usable_size(p) == size; /* ufence's: glibc's chunks hold more */
        free(p);
    }
    printf("cycled %d buffers of %zu bytes\n", n, size);
    fprintf(stderr, "exact=%d\n", exact);
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: large MODE");
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(m, "oob_read_right")) {
        char *p = big_right(BIG);
        printf("obj=%p\n", (void *)p);
        read_at(p, BIG);
    } else if (!strcmp(m, "oob_write_right")) {
        char *p = big_right(BIG);
        printf("obj=%p\n", (void *)p);
        write_at(p, BIG, 0);
    } else if (!strcmp(m, "oob_read_left")) {
        char *p = big_left(BIG);
        printf("obj=%p\n", (void *)p);
        read_at(p, -1);
    } else if (!strcmp(m, "oob_write_left")) {
        char *p = big_left(BIG);
        printf("obj=%p\n", (void *)p);
        write_at(p, -1, 0);
    } else if (!strcmp(m, "underflow_unused_page")) {
        /* Right-placed: the pages of the slot before the object's first are inaccessible. */
        char *p = big_right(BIG);
        printf("obj=%p\n", (void *)p);
        read_at(p, -(long)page_offset(p) - 1);
    } else if (!strcmp(m, "overflow_unused_page")) {
        /* Left-placed: past the object's last page, the slot's unused pages. */
        char *p = big_left(BIG);
        printf("obj=%p\n", (void *)p);
        write_at(p, 3 * PAGE, 0);
    } else if (!strcmp(m, "uaf_read")) {
        char *p = make_big(BIG);
        printf("obj=%p\n", (void *)p);
        free_big(p);
        read_at(p, BIG / 2);
    } else if (!strcmp(m, "uaf_write_end")) {
        char *p = make_big(BIG);
        printf("obj=%p\n", (void *)p);
        free_big(p);
        write_at(p, BIG - 1, 5);
    } else if (!strcmp(m, "double_free")) {
        char *p = make_big(BIG);
        printf("obj=%p\n", (void *)p);
        free_big(p);
        free_again(p);
    } else if (!strcmp(m, "invalid_free")) {
        char *p = make_big(BIG);
        printf("obj=%p\n", (void *)p);
        free_big(p + PAGE);
    } else if (!strcmp(m, "corrupt_right")) {
        /* Left-placed: the bytes after the object up to its last page's end are canary. */
        char *p = big_left(BIG);
        printf("obj=%p\n", (void *)p);
        write_at(p, BIG + 3, 0);
        free_big(p);
    } else if (!strcmp(m, "corrupt_left")) {
        char *p = big_right(BIG);
        printf("obj=%p\n", (void *)p);
        write_at(p, -5, 0);
        free_big(p);
    } else if (!strcmp(m, "reopened")) {
        /* num_large_objects=1: a use-after-free in continue mode opens the faulting page; the
           slot's next object must not inherit it open. */
        char *p = NULL;
        for (int i = 0; i < MAX_TRIES && !p; i++) {
            char *q = make_big(BIG);
            if (page_offset(q) == 0)
                p = q;
            else
                free_big(q);
        }
        if (!p)
            die("no left-placed object");
        printf("obj=%p\n", (void *)p);
        free_big(p);
        write_at(p, 9000, 1);
        char *q = make_big(4097);
        printf("new=%p\n", (void *)q);
        write_at(p, 9000, 2);
    } else if (!strcmp(m, "zero_read")) {
        char *p = make_big(0);
        printf("obj=%p\n", (void *)p);
        read_at(p, 0);
    } else if (!strcmp(m, "zero_calloc_write")) {
        char *p = calloc(0, 16);
        printf("obj=%p\n", (void *)p);
        write_at(p, 0, 1);
    } else if (!strcmp(m, "zero_uaf")) {
        char *p = make_big(0);
        printf("obj=%p\n", (void *)p);
        free_big(p);
        read_at(p, 0);
    } else if (!strcmp(m, "aligned_overflow")) {
        /* Aligned beyond a page (a pool object: its usable size is exact); past its end is the
           guard page or an unused page of its slot. */
        char *p = NULL;
        for (int i = 0; i < MAX_TRIES && !p; i++) {
            void *q = NULL;
            if (posix_memalign(&q, 16384, 3 * 16384) != 0)
                die("posix_memalign failed");
            if ((uintptr_t)q % 16384 == 0 && malloc_usable_size(q) == 3 * 16384)
                p = q;
        }
        if (!p)
            die("no pool object aligned to 16384");
        printf("obj=%p\n", (void *)p);
        read_at(p, 3 * 16384);
    } else if (!strcmp(m, "aligned_check")) {
        /* Every function, alignments to 32 KiB, sizes around and over a page: aligned,
           usable, and (with ufence) of exactly the requested usable size. */
        static const size_t sizes[] = {0, 1, 4096, 5000, 20000};
        int bad = 0, n = 0, exact = 0;
        for (size_t align = 16; align <= 32768; align *= 2)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                void *a = NULL, *b, *c;
                if (posix_memalign(&a, align, sizes[s]) != 0)
                    die("posix_memalign failed");
                b = aligned_alloc(align, sizes[s]);
                c = memalign(align, sizes[s]);
                void *all[3] = {a, b, c};
                for (int k = 0; k < 3; k++) {
                    if (!all[k] || (uintptr_t)all[k] % align)
                        bad++;
                    else
                        memset(all[k], 0x5a, sizes[s]);
                    exact += malloc_usable_size(all[k]) == sizes[s];
                    free(all[k]);
                    n++;
                }
            }
        void *v = valloc(10000), *pv = pvalloc(10000);
        if ((uintptr_t)v % PAGE || (uintptr_t)pv % PAGE)
            bad++;
        memset(v, 1, 10000);
        memset(pv, 1, 3 * PAGE);
        free(v);
        free(pv);
        printf("aligned: %d requests, %d bad\n", n + 2, bad);
        fprintf(stderr, "exact=%d\n", exact);
    } else if (!strcmp(m, "usable_sizes")) {
        /* What malloc_usable_size says of each kind (ufence: the size asked for). */
        static const size_t sizes[] = {0, 1, 4096, 4097, 65536};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            char *p = malloc(sizes[s]);
            void *a = NULL;
            posix_memalign(&a, 8192, sizes[s]);
            fprintf(stderr, "usable %zu: %zu %zu\n", sizes[s], malloc_usable_size(p),
                    malloc_usable_size(a));
            free(p);
            free(a);
        }
    } else if (!strcmp(m, "realloc_chain")) {
        if (!realloc_chain())
            die("realloc lost data");
    } else if (!strcmp(m, "churn")) {
        churn(argc > 2 ? atoi(argv[2]) : 2000);
    } else if (!strcmp(m, "rss")) {
        big_cycle(argc > 2 ? atoi(argv[2]) : 500, 1 << 20);
        fprintf(stderr, "peak_rss_kib=%ld\n", peak_rss_kib());
    } else {
        die("unknown mode");
    }
    printf("end\n");
    return 42;
}
