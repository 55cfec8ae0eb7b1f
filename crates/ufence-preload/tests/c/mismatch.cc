// Allocation and release routines of different families (tests/mismatch.rs), and a clean run
// that uses every operator form, and the malloc family, as they should be used.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#define NOINLINE __attribute__((noinline))
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

NOINLINE void *make_scalar(size_t n) {
    void *p = ::operator new(n); // LINE:make_scalar
    NO_TAIL_CALL();
    return p;
}

NOINLINE void *make_array(size_t n) {
    void *p = ::operator new[](n); // LINE:make_array
    NO_TAIL_CALL();
    return p;
}

NOINLINE void *make_aligned_array(size_t n) {
    void *p = ::operator new[](n, std::align_val_t(64)); // LINE:make_aligned_array
    NO_TAIL_CALL();
    return p;
}

NOINLINE void *make_malloc(size_t n) {
    void *p = std::malloc(n); // LINE:make_malloc
    NO_TAIL_CALL();
    return p;
}

NOINLINE void release_free(void *p) {
    std::free(p); // LINE:release_free
    NO_TAIL_CALL();
}

NOINLINE void release_scalar(void *p) {
    ::operator delete(p); // LINE:release_scalar
    NO_TAIL_CALL();
}

NOINLINE void release_array(void *p) {
    ::operator delete[](p); // LINE:release_array
    NO_TAIL_CALL();
}

NOINLINE void release_realloc(void *p) {
    void *q = std::realloc(p, 100); // LINE:release_realloc
    NO_TAIL_CALL();
    std::free(q);
}

// Every form, each with its own partner: nothing to report, and the same output with or
// without ufence.
static unsigned long clean_all_forms() {
    unsigned long sum = 0;
    for (int round = 0; round < 50; round++) {
        void *p[24];
        int k = 0;
        p[k++] = ::operator new(24);
        p[k++] = ::operator new[](40);
        p[k++] = ::operator new(24, std::align_val_t(64));
        p[k++] = ::operator new[](40, std::align_val_t(128));
        p[k++] = ::operator new(24, std::nothrow);
        p[k++] = ::operator new[](40, std::nothrow);
        p[k++] = ::operator new(24, std::align_val_t(32), std::nothrow);
        p[k++] = ::operator new[](40, std::align_val_t(32), std::nothrow);
        p[k++] = ::operator new(24);
        p[k++] = ::operator new[](40);
        p[k++] = ::operator new(24, std::align_val_t(64));
        p[k++] = ::operator new[](40, std::align_val_t(64));
        p[k++] = std::malloc(20);
        p[k++] = std::calloc(3, 7);
        p[k++] = std::realloc(std::malloc(5), 50);
        p[k++] = std::aligned_alloc(64, 64);
        void *pm = nullptr;
        if (posix_memalign(&pm, 32, 20) != 0)
            return 0;
        p[k++] = pm;
        for (int i = 0; i < k; i++) {
            std::memset(p[i], i, 20);
            sum += ((unsigned char *)p[i])[19];
        }
        int j = 0;
        ::operator delete(p[j++]);
        ::operator delete[](p[j++]);
        ::operator delete(p[j++], std::align_val_t(64));
        ::operator delete[](p[j++], std::align_val_t(128));
        ::operator delete(p[j++], std::nothrow);
        ::operator delete[](p[j++], std::nothrow);
        ::operator delete(p[j++], std::align_val_t(32), std::nothrow);
        ::operator delete[](p[j++], std::align_val_t(32), std::nothrow);
        ::operator delete(p[j++], 24);
        ::operator delete[](p[j++], 40);
        ::operator delete(p[j++], 24, std::align_val_t(64));
        ::operator delete[](p[j++], 40, std::align_val_t(64));
        while (j < k)
            std::free(p[j++]);
        // Objects of a class type, with their destructors.
        struct S {
            long v[3];
            ~S() { v[0] = 0; }
        };
        S *s = new S[3];
        S *t = new S;
        s[2].v[1] = round;
        t->v[2] = round;
        sum += s[2].v[1] + t->v[2];
        delete t;
        delete[] s;
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    if (!std::strcmp(m, "clean")) {
        std::printf("sum %lu\n", clean_all_forms());
        return 0;
    }
    void *p = nullptr;
    if (!std::strcmp(m, "new_free")) {
        p = make_scalar(32);
        release_free(p);
    } else if (!std::strcmp(m, "malloc_delete")) {
        p = make_malloc(32);
        release_scalar(p);
    } else if (!std::strcmp(m, "newarr_delete")) {
        p = make_array(32);
        release_scalar(p);
    } else if (!std::strcmp(m, "new_deletearr")) {
        p = make_scalar(32);
        release_array(p);
    } else if (!std::strcmp(m, "alignedarr_delete")) {
        p = make_aligned_array(32);
        release_scalar(p);
    } else if (!std::strcmp(m, "new_realloc")) {
        p = make_scalar(32);
        release_realloc(p);
    } else {
        return 2;
    }
    // In continue mode the object was released all the same: with a pool of one slot, the
    // next sampled object lands on the same page.
    if (argc > 2) {
        void *q = std::malloc(32);
        std::printf("same page %d\n", ((unsigned long)p >> 12) == ((unsigned long)q >> 12));
        std::free(q);
    }
    std::printf("done\n");
    return 0;
}
