// C++ operators on another allocator (or glibc), under ufence:
//   clean   every form of operator new and delete (plain, array, sized, aligned, nothrow) on
//           many objects; prints a checksum that must be the same with and without ufence
//   huge    a new[] that cannot be served throws std::bad_alloc, a nothrow one returns null
//           (after the program's new-handler ran once)
//   uaf     a use-after-free of a new[]'d array freed with delete[]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct alignas(64) Line {
    char c[100];
};

static int handler_calls;

static void handler() {
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}

__attribute__((noinline)) static int read_int(volatile int *p, int i) { return p[i]; }

static void check_aligned(const void *p, std::size_t align) {
    if (reinterpret_cast<std::uintptr_t>(p) % align != 0) {
        std::printf("%p not aligned to %zu\n", p, align);
        std::exit(4);
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "clean";
    if (!std::strcmp(mode, "huge")) {
        // Beyond the address space (2^47): no allocator can serve it.
        volatile std::size_t n = std::size_t(1) << 48;
        std::set_new_handler(handler);
        try {
            char *p = new char[n];
            p[0] = 1;
            std::puts("no exception");
        } catch (const std::bad_alloc &) {
            std::printf("bad_alloc after %d handler call(s)\n", handler_calls);
        }
        char *q = new (std::nothrow) char[n];
        std::printf("nothrow: %s\n", q ? "memory" : "null");
        return 0;
    }
    if (!std::strcmp(mode, "uaf")) {
        int *p = new int[16];
        for (int i = 0; i < 16; i++) p[i] = i * 3;
        delete[] p;
        std::printf("read %d\n", read_int(p, 5));
        return 0;
    }
    unsigned long sum = 0;
    for (int i = 0; i < 3000; i++) {
        std::vector<int> v(i % 100 + 1, i);
        sum += v.back() + v.size();
        std::string s(i % 50 + 20, 'x');
        sum += s.size();
        Line *l = new Line; // aligned new and sized aligned delete
        check_aligned(l, 64);
        l->c[5] = 3;
        sum += l->c[5];
        delete l;
        Line *ls = new Line[3];
        check_aligned(ls, 64);
        delete[] ls;
        int *n = new (std::nothrow) int(5);
        sum += *n;
        delete n;
        int *a = new (std::nothrow) int[7]();
        sum += a[6];
        delete[] a;
        Line *ln = new (std::nothrow) Line;
        check_aligned(ln, 64);
        ::operator delete(ln, std::align_val_t(64), std::nothrow);
        void *raw = ::operator new(24);
        ::operator delete(raw, 24);
        void *rawa = ::operator new[](40, std::align_val_t(32));
        check_aligned(rawa, 32);
        ::operator delete[](rawa, 40, std::align_val_t(32));
    }
    std::printf("clean %lu\n", sum);
    return 0;
}
