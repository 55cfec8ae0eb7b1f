// C++ new/delete under ufence: operator new and delete reach the interposed malloc and free.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

struct Obj {
    long fields[8];
};

NOINLINE Obj *make_obj() {
    Obj *o = new Obj();
    NO_TAIL_CALL();
    return o;
}

NOINLINE void destroy_obj(Obj *o) {
    delete o;
    NO_TAIL_CALL();
}

NOINLINE long read_field(volatile Obj *o, int i) { return o->fields[i]; }

NOINLINE char *make_array(size_t n) {
    char *a = new char[n];
    NO_TAIL_CALL();
    return a;
}

NOINLINE void destroy_array(char *a) {
    delete[] a;
    NO_TAIL_CALL();
}

NOINLINE int *make_ints(size_t n) {
    int *a = new int[n];
    NO_TAIL_CALL();
    return a;
}

NOINLINE void destroy_ints(int *a) {
    delete[] a;
    NO_TAIL_CALL();
}

NOINLINE int read_elem(volatile char *a, long i) { return a[i]; }

// C++17 aligned new of a type aligned beyond a page.
struct alignas(8192) Paged {
    char bytes[10000];
};

NOINLINE Paged *make_paged() {
    Paged *p = new Paged;
    NO_TAIL_CALL();
    return p;
}

NOINLINE void write_int(volatile int *a, long i, int v) { a[i] = v; }

// A new char[32] whose last byte touches the right guard page (the others are kept).
NOINLINE char *make_array_right(size_t n) {
    for (int i = 0; i < 200; i++) {
        char *a = make_array(n);
        if ((reinterpret_cast<uintptr_t>(a) + n) % 4096 == 0)
            return a;
    }
    std::fprintf(stderr, "test program: no right-placed array\n");
    _exit(99);
}

// Ordinary C++ container work, printing a digest: must be the same with or without ufence.
static int clean() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 3000; i++) {
        std::string k = "key-" + std::to_string(i * 7919 % 1000);
        m[k].push_back(i);
        if (i % 3 == 0)
            m[k].shrink_to_fit();
    }
    unsigned long h = 1469598103934665603ul;
    for (auto &kv : m) {
        for (char c : kv.first)
            h = (h ^ (unsigned char)c) * 1099511628211ul;
        for (int v : kv.second)
            h = (h ^ (unsigned)v) * 1099511628211ul;
    }
    std::vector<std::string> words;
    for (int i = 0; i < 2000; i++)
        words.push_back(std::string(i % 97 + 1, (char)('a' + i % 26)));
    size_t total = 0;
    for (auto &w : words)
        total += w.size();
    auto *big = new std::vector<double>(10000, 1.5);
    double s = 0;
    for (double d : *big)
        s += d;
    delete big;
    std::printf("keys=%zu hash=%016lx words=%zu total=%zu sum=%.1f\n", m.size(), h,
                words.size(), total, s);
    return 0;
}

int main(int argc, char **argv) {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    if (argc < 2)
        return 99;
    const char *m = argv[1];
    if (!std::strcmp(m, "clean"))
        return clean();
    if (!std::strcmp(m, "uaf")) {
        Obj *o = make_obj();
        std::printf("obj=%p\n", (void *)o);
        destroy_obj(o);
        read_field(o, 3);
    } else if (!std::strcmp(m, "double_delete")) {
        Obj *o = make_obj();
        std::printf("obj=%p\n", (void *)o);
        destroy_obj(o);
        destroy_obj(o);
    } else if (!std::strcmp(m, "array_oob")) {
        char *a = make_array_right(32);
        std::printf("obj=%p\n", (void *)a);
        read_elem(a, 32);
    } else if (!std::strcmp(m, "array_uaf")) {
        int *a = make_ints(16);
        std::printf("obj=%p\n", (void *)a);
        destroy_ints(a);
        write_int(a, 5, 1);
    } else if (!std::strcmp(m, "new_zero")) {
        char *a = make_array(0);
        std::printf("obj=%p\n", (void *)a);
        read_elem(a, 0);
    } else if (!std::strcmp(m, "aligned_new_oob")) {
        Paged *p = make_paged();
        std::printf("obj=%p\n", (void *)p);
        if (reinterpret_cast<uintptr_t>(p) % 8192)
            return 98;
        read_elem(reinterpret_cast<char *>(p), -1);
    } else if (!std::strcmp(m, "array_double_delete")) {
        char *a = make_array(100);
        std::printf("obj=%p\n", (void *)a);
        destroy_array(a);
        destroy_array(a);
    } else {
        return 99;
    }
    std::printf("end\n");
    return 42;
}
