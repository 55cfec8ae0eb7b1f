/* Aligned allocation: memalign ALIGN SIZE OFFSET r|w
 * posix_memalign(&p, ALIGN, SIZE), then one access at p[OFFSET], then free. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 5)
        return 2;
    size_t align = strtoul(argv[1], NULL, 0), size = strtoul(argv[2], NULL, 0);
    long off = strtol(argv[3], NULL, 0);
    void *v;
    if (posix_memalign(&v, align, size) != 0)
        return 3;
    volatile char *p = v;
    KEEP(p);
    memset(v, 'a', size);
    if (argv[4][0] == 'w')
        p[off] = 'X';
    else {
        char c = p[off];
        KEEP((long)c);
    }
    free(v);
    survived();
    return 0;
}
