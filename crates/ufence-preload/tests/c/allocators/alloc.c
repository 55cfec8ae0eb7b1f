/* A program on another allocator (built with -DON_JEMALLOC, -DON_TCMALLOC, -DON_MIMALLOC and
 * linked against it, or plain for glibc), under ufence:
 *   usable    malloc, malloc_usable_size, free: the reproduction of redis's crash at start
 *   clean     every function of the family and the allocator's own API on many objects;
 *             prints a checksum that must be the same with and without ufence
 *   uaf       a use-after-free of a malloc'd object freed with free()
 *   ext-uaf   a use-after-free of a malloc'd object freed through the allocator's own API
 *   ext-size  the allocator's own size function on malloc'd objects must say >= the size
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(ON_JEMALLOC)
void sdallocx(void *p, size_t size, int flags);
void dallocx(void *p, int flags);
size_t sallocx(const void *p, int flags);
void *rallocx(void *p, size_t size, int flags);
size_t xallocx(void *p, size_t size, size_t extra, int flags);
#define EXT_FREE(p, n) sdallocx((p), (n), 0)
#define EXT_SIZE(p) sallocx((p), 0)
#define EXT_REALLOC(p, n) rallocx((p), (n), 0)
#elif defined(ON_TCMALLOC)
void tc_free(void *p);
void tc_free_sized(void *p, size_t size);
size_t tc_malloc_size(void *p);
void *tc_realloc(void *p, size_t size);
#define EXT_FREE(p, n) tc_free_sized((p), (n))
#define EXT_SIZE(p) tc_malloc_size(p)
#define EXT_REALLOC(p, n) tc_realloc((p), (n))
#elif defined(ON_MIMALLOC)
void mi_free(void *p);
void mi_free_size(void *p, size_t size);
size_t mi_usable_size(const void *p);
void *mi_realloc(void *p, size_t size);
#define EXT_FREE(p, n) mi_free_size((p), (n))
#define EXT_SIZE(p) mi_usable_size(p)
#define EXT_REALLOC(p, n) mi_realloc((p), (n))
#else
#define EXT_FREE(p, n) free(p)
#define EXT_SIZE(p) malloc_usable_size(p)
#define EXT_REALLOC(p, n) realloc((p), (n))
#endif

static uint64_t sum;

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static void check(const unsigned char *p, size_t n, unsigned seed, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != (unsigned char)(seed + i * 7)) {
            printf("%s: byte %zu lost\n", what, i);
            exit(3);
        }
        sum = sum * 31 + p[i];
    }
}

static void aligned(void *p, size_t align, const char *what) {
    if (p == NULL || ((uintptr_t)p & (align - 1)) != 0) {
        printf("%s: %p not aligned to %zu\n", what, p, align);
        exit(4);
    }
}

/* Reads one byte through a pointer the compiler cannot see through. */
__attribute__((noinline)) static int read_byte(volatile unsigned char *p, size_t i) {
    return p[i];
}

static int clean(int rounds) {
    for (int i = 0; i < rounds; i++) {
        size_t n = (size_t)(i % 300) + 1;
        unsigned char *p = malloc(n);
        fill(p, n, i);
        if (malloc_usable_size(p) < n || EXT_SIZE(p) < n) {
            printf("usable size %zu < %zu\n", malloc_usable_size(p), n);
            return 2;
        }
        p = realloc(p, n * 3);
        check(p, n, i, "realloc");
        p = EXT_REALLOC(p, n * 2);
        check(p, n, i, "allocator's realloc");
        free(p);

        unsigned char *z = calloc(n, 3);
        for (size_t k = 0; k < n * 3; k++)
            if (z[k] != 0) { puts("calloc not zeroed"); return 2; }
        EXT_FREE(z, n * 3);

        void *a = memalign(64, n);
        aligned(a, 64, "memalign");
        fill(a, n, i);
        check(a, n, i, "memalign");
        free(a);
        /* (mimalloc 2.0.9 misaligns posix_memalign(256, 256) on its own: 128 here.) */
        if (posix_memalign(&a, 128, n) != 0) { puts("posix_memalign failed"); return 2; }
        aligned(a, 128, "posix_memalign");
        free(a);
        a = aligned_alloc(32, 64);
        aligned(a, 32, "aligned_alloc");
        free(a);
        a = valloc(n);
        aligned(a, 4096, "valloc");
        free(a);
#ifndef ON_JEMALLOC
        /* (jemalloc has no pvalloc: the program would get glibc's, and crash in jemalloc's
         * free, without ufence.) */
        a = pvalloc(n);
        aligned(a, 4096, "pvalloc");
        if (malloc_usable_size(a) < 4096) { puts("pvalloc smaller than a page"); return 2; }
        free(a);
#endif
        a = reallocarray(NULL, n, 4);
        fill(a, n * 4, i);
        check(a, n * 4, i, "reallocarray");
        free(a);
    }
    printf("clean %d %llu\n", rounds, (unsigned long long)sum);
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "clean";
    if (!strcmp(mode, "usable")) {
        for (int i = 0; i < 1000; i++) {
            unsigned char *p = malloc(100);
            if (malloc_usable_size(p) < 100) { puts("usable size too small"); return 2; }
            free(p);
        }
        puts("usable ok");
        return 0;
    }
    if (!strcmp(mode, "clean"))
        return clean(argc > 2 ? atoi(argv[2]) : 2000);
    if (!strcmp(mode, "ext-size")) {
        for (int i = 0; i < 200; i++) {
            size_t n = (size_t)i + 1;
            void *p = malloc(n);
            if (EXT_SIZE(p) < n) { printf("size %zu < %zu\n", (size_t)EXT_SIZE(p), n); return 2; }
            EXT_FREE(p, n);
        }
        puts("ext-size ok");
        return 0;
    }
    if (!strcmp(mode, "uaf") || !strcmp(mode, "ext-uaf")) {
        unsigned char *p = malloc(64);
        fill(p, 64, 1);
        if (!strcmp(mode, "uaf"))
            free(p);
        else
            EXT_FREE(p, 64);
        printf("read %d\n", read_byte(p, 8));
        return 0;
    }
    printf("unknown mode %s\n", mode);
    return 2;
}
