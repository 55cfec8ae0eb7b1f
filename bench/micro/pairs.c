/* Exactly N malloc/free pairs and nothing else, for instruction counting (bench/callgrind.sh).
 * Sizes cycle through 16..256 bytes like the Rust example's --callgrind-* modes.
 * usage: pairs N */
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

int main(int argc, char **argv) {
    static const size_t cycle[8] = {16, 24, 32, 48, 64, 96, 128, 256};
    long n = argc > 1 ? atol(argv[1]) : 0;
    unsigned long sum = 0;
    for (long i = 0; i < n; i++) {
        char *p = malloc(cycle[i & 7]);
        if (!p)
            return 1;
        p[0] = (char)i;
        sink = p; /* keeps the compiler from pairing malloc with free away */
        sum += ((char *)sink)[0];
        free(sink);
    }
    return sum == 12345 ? 2 : 0;
}
