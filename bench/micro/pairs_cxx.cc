// Exactly N operator new/delete pairs and nothing else, for instruction counting
// (bench/callgrind.sh): the C++ twin of pairs.c, sizes cycling through 16..256 bytes.
// usage: pairs_cxx N
#include <cstdlib>
#include <new>

static void *volatile sink;

int main(int argc, char **argv) {
    static const std::size_t cycle[8] = {16, 24, 32, 48, 64, 96, 128, 256};
    long n = argc > 1 ? std::atol(argv[1]) : 0;
    unsigned long sum = 0;
    for (long i = 0; i < n; i++) {
        char *p = static_cast<char *>(::operator new(cycle[i & 7]));
        p[0] = static_cast<char>(i);
        sink = p; // keeps the compiler from pairing new with delete away
        sum += static_cast<char *>(sink)[0];
        ::operator delete(sink, cycle[i & 7]);
    }
    return sum == 12345 ? 2 : 0;
}
