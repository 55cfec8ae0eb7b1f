/* Every edge case of the malloc API, with its results printed. A correct program: the output
   must be the same with or without ufence, and ufence must report nothing. With CLEAN_DIAG set,
   also says on stderr how many small allocations look like ufence's (exact usable size or
   page-aligned), so a test can tell that sampling was really on. */
#include "common.h"
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <string.h>

static int failures;

/* Hides a value from the compiler, so that calls with absurd sizes are really made. */
NOINLINE size_t opaque(size_t v) {
    __asm__ volatile("" : "+r"(v));
    return v;
}

static void show(const char *what, long value) { printf("%-44s %ld\n", what, value); }

static void expect(const char *what, int ok) {
    printf("%-44s %s\n", what, ok ? "ok" : "FAILED");
    failures += !ok;
}

static void diag(void) {
    enum { N = 100 };
    static char *ps[N];
    int exact = 0, page_aligned = 0;
    for (int i = 0; i < N; i++) {
        ps[i] = malloc(13);
        exact += malloc_usable_size(ps[i]) == 13;
        page_aligned += page_offset(ps[i]) == 0;
    }
    for (int i = 0; i < N; i++)
        free(ps[i]);
    if (getenv("CLEAN_DIAG"))
        fprintf(stderr, "diag: exact_usable=%d page_aligned=%d\n", exact, page_aligned);
}

static int is_filled(const unsigned char *p, size_t n, unsigned char c) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != c)
            return 0;
    return 1;
}

/* Fills with a pattern depending on the position, and checks it. */
static void pattern(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31 + seed);
}
static int has_pattern(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed))
            return 0;
    return 1;
}

int main(void) {
    void *p, *q;
    int e, r;

    diag();

    /* malloc(0) and free(NULL) */
    p = malloc(0);
    expect("malloc(0) is not NULL", p != NULL);
    free(p);
    errno = 0;
    free(NULL);
    expect("free(NULL) leaves errno alone", errno == 0);
    show("malloc_usable_size(NULL)", (long)malloc_usable_size(NULL));

    /* malloc failures */
    errno = 0;
    p = malloc(opaque(SIZE_MAX));
    expect("malloc(SIZE_MAX) is NULL with ENOMEM", p == NULL && errno == ENOMEM);
    errno = 0;
    p = malloc(opaque(PTRDIFF_MAX));
    expect("malloc(PTRDIFF_MAX) is NULL with ENOMEM", p == NULL && errno == ENOMEM);

    /* realloc edge cases */
    p = realloc(NULL, 10);
    expect("realloc(NULL, 10) allocates", p != NULL);
    memset(p, 7, 10);
    q = realloc(p, 0);
    expect("realloc(p, 0) frees and returns NULL", q == NULL);
    p = malloc(40);
    pattern(p, 40, 1);
    errno = 0;
    q = realloc(p, opaque(SIZE_MAX));
    p = (void *)opaque((size_t)p); /* still ours: the failed realloc left it alone */
    expect("realloc(p, SIZE_MAX) is NULL with ENOMEM", q == NULL && errno == ENOMEM);
    expect("... and p is intact", has_pattern(p, 40, 1));
    free(p);

    /* realloc keeps the contents through growing and shrinking, small and large */
    {
        static const size_t steps[] = {1, 7, 16, 33, 100, 1000, 4095, 4096, 4097, 10000,
                                       200000, 3, 64, 5000, 24, 0};
        size_t prev = 0;
        int ok = 1;
        p = NULL;
        for (int i = 0; steps[i]; i++) {
            q = realloc(p, steps[i]);
            if (!q) {
                ok = 0;
                break;
            }
            size_t keep = prev < steps[i] ? prev : steps[i];
            if (!has_pattern(q, keep, 9))
                ok = 0;
            pattern(q, steps[i], 9);
            p = q;
            prev = steps[i];
        }
        free(p);
        expect("realloc preserves contents", ok);
    }

    /* calloc */
    {
        /* Dirty some memory first so that a non-zeroing calloc would show. */
        for (int i = 0; i < 300; i++) {
            char *d = malloc(100 + i % 50);
            memset(d, 0xee, 100 + i % 50);
            free(d);
        }
        int ok = 1;
        for (int i = 0; i < 300; i++) {
            char *c = calloc(1, 100 + i % 50);
            ok &= c != NULL && is_filled((unsigned char *)c, 100 + i % 50, 0);
            free(c);
        }
        expect("calloc zeroes", ok);
        char *c = calloc(1000, 10);
        expect("calloc(1000, 10) zeroed", c && is_filled((unsigned char *)c, 10000, 0));
        free(c);
        p = calloc(0, 10);
        q = calloc(10, 0);
        expect("calloc(0, 10) and calloc(10, 0) not NULL", p != NULL && q != NULL);
        free(p);
        free(q);
        errno = 0;
        p = calloc(opaque(SIZE_MAX / 2 + 1), 2);
        expect("calloc overflow is NULL with ENOMEM", p == NULL && errno == ENOMEM);
        errno = 0;
        p = calloc(opaque((size_t)1 << 33), opaque((size_t)1 << 33));
        expect("calloc(2^33, 2^33) is NULL with ENOMEM", p == NULL && errno == ENOMEM);
    }

    /* reallocarray */
    p = reallocarray(NULL, 10, 10);
    expect("reallocarray(NULL, 10, 10) allocates", p != NULL);
    pattern(p, 100, 3);
    errno = 0;
    q = reallocarray(p, opaque(SIZE_MAX / 2), 3);
    p = (void *)opaque((size_t)p); /* still ours: the failed reallocarray left it alone */
    expect("reallocarray overflow is NULL with ENOMEM", q == NULL && errno == ENOMEM);
    expect("... and p is intact", has_pattern(p, 100, 3));
    q = reallocarray(p, 20, 10);
    expect("reallocarray(p, 20, 10) keeps contents", q && has_pattern(q, 100, 3));
    free(q);

    /* posix_memalign: bad alignments are EINVAL and leave the out-pointer alone */
    {
        static const size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 4097, SIZE_MAX};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            void *out = (void *)0x1234;
            errno = 0;
            r = posix_memalign(&out, bad[i], 16);
            char what[64];
            snprintf(what, sizeof what, "posix_memalign(align=%zu)", bad[i]);
            printf("%-44s ret=%s out_untouched=%d errno=%d\n", what,
                   r == EINVAL ? "EINVAL" : r == 0 ? "0" : "other", out == (void *)0x1234,
                   errno);
        }
        void *out = (void *)0x1234;
        r = posix_memalign(&out, 64, opaque(SIZE_MAX / 2));
        printf("%-44s ret=%s out_untouched=%d\n", "posix_memalign(64, huge)",
               r == ENOMEM ? "ENOMEM" : r == 0 ? "0" : "other", out == (void *)0x1234);
        out = NULL;
        errno = 1234;
        r = posix_memalign(&out, 256, 1000);
        expect("posix_memalign(256, 1000)", r == 0 && out && (uintptr_t)out % 256 == 0);
        show("... errno", errno);
        free(out);
    }

    /* aligned_alloc and memalign, valid and odd alignments */
    {
        static const size_t aligns[] = {0, 1, 3, 8, 24, 64, 4096, 8192, 65536};
        for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
            size_t a = aligns[i];
            size_t want = 1;
            while (want < a)
                want *= 2;
            char what[64];
            errno = 0;
            p = aligned_alloc(a, 64);
            e = errno;
            snprintf(what, sizeof what, "aligned_alloc(%zu, 64)", a);
            printf("%-44s null=%d aligned_to_%zu=%d errno=%d\n", what, p == NULL, want,
                   p ? (uintptr_t)p % want == 0 : -1, e);
            if (p)
                memset(p, 1, 64);
            free(p);
            errno = 0;
            p = memalign(a, 100);
            e = errno;
            snprintf(what, sizeof what, "memalign(%zu, 100)", a);
            printf("%-44s null=%d aligned_to_%zu=%d errno=%d\n", what, p == NULL, want,
                   p ? (uintptr_t)p % want == 0 : -1, e);
            if (p)
                memset(p, 1, 100);
            free(p);
        }
        errno = 0;
        p = aligned_alloc(opaque((size_t)1 << 62), 16);
        expect("aligned_alloc(2^62, 16) is NULL", p == NULL);
        show("... errno", errno);
        errno = 0;
        p = memalign(64, opaque(SIZE_MAX - 100));
        expect("memalign(64, SIZE_MAX - 100) is NULL with ENOMEM", p == NULL && errno == ENOMEM);
    }

    /* valloc and pvalloc */
    p = valloc(100);
    expect("valloc(100) page-aligned", p && page_offset(p) == 0 && malloc_usable_size(p) >= 100);
    memset(p, 3, 100);
    free(p);
    p = pvalloc(100);
    expect("pvalloc(100) page-aligned, a whole page",
           p && page_offset(p) == 0 && malloc_usable_size(p) >= PAGE);
    memset(p, 3, PAGE);
    free(p);
    p = pvalloc(0);
    expect("pvalloc(0) page-aligned", p && page_offset(p) == 0);
    free(p);
    p = pvalloc(PAGE + 1);
    expect("pvalloc(PAGE + 1) two pages", p && malloc_usable_size(p) >= 2 * PAGE);
    memset(p, 3, 2 * PAGE);
    free(p);
    p = valloc(PAGE);
    expect("valloc(PAGE) page-aligned", p && page_offset(p) == 0);
    memset(p, 3, PAGE);
    free(p);

    /* malloc_usable_size is at least the request, and all of it may be used */
    {
        int ok = 1;
        for (size_t n = 0; n <= 5000; n += (n < 300 ? 1 : 97)) {
            unsigned char *m = malloc(n);
            size_t u = malloc_usable_size(m);
            ok &= m != NULL && u >= n;
            memset(m, 0x11, u);
            unsigned char *c = calloc(n, 1);
            u = malloc_usable_size(c);
            ok &= c != NULL && u >= n;
            memset(c, 0x22, u);
            m = realloc(m, n + 5);
            u = malloc_usable_size(m);
            ok &= m != NULL && u >= n + 5;
            memset(m, 0x33, u);
            unsigned char *a = memalign(32, n);
            u = malloc_usable_size(a);
            ok &= a != NULL && u >= n;
            memset(a, 0x44, u);
            free(m);
            free(c);
            free(a);
        }
        expect("usable size >= requested, and writable", ok);
    }

    /* free preserves errno, for every kind of pointer */
    {
        int ok = 1;
        for (int i = 0; i < 400; i++) {
            void *m = malloc(1 + i * 13 % 3000);
            errno = EILSEQ;
            free(m);
            ok &= errno == EILSEQ;
        }
        void *a = memalign(64, 100), *b = calloc(3, 5), *c = malloc(100000);
        errno = EDOM;
        free(a);
        free(b);
        free(c);
        ok &= errno == EDOM;
        expect("free preserves errno", ok);
    }

    /* libc functions that allocate: strdup, asprintf, getline-style growth */
    {
        char *s = strdup("hello, ufence");
        char *t = strndup("abcdefghij", 4);
        char *u;
        r = asprintf(&u, "%s|%s|%d", s, t, 12345);
        printf("%-44s %s (%d)\n", "strdup/strndup/asprintf", u, r);
        free(s);
        free(t);
        free(u);
        FILE *f = open_memstream(&s, (size_t[]){0});
        for (int i = 0; i < 1000; i++)
            fprintf(f, "%d,", i);
        fclose(f);
        show("open_memstream length", (long)strlen(s));
        free(s);
    }

    /* many live objects of all sizes at once, checked, then freed */
    {
        enum { N = 600 };
        static unsigned char *live[N];
        int ok = 1;
        for (int i = 0; i < N; i++) {
            size_t n = 1 + (size_t)i * 37 % 4200;
            live[i] = malloc(n);
            pattern(live[i], n, (unsigned)i);
        }
        for (int i = 0; i < N; i++) {
            size_t n = 1 + (size_t)i * 37 % 4200;
            ok &= has_pattern(live[i], n, (unsigned)i);
            free(live[i]);
        }
        expect("600 live objects keep their contents", ok);
    }

    show("failures", failures);
    return failures != 0;
}
