/* Heap out-of-bounds access: oob SIZE OFFSET r|w
 * Allocates SIZE bytes with malloc, accesses the byte at p[OFFSET] once (OFFSET >= SIZE is an
 * overflow by OFFSET-SIZE+1 bytes, OFFSET < 0 an underflow by -OFFSET bytes), then frees it. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    size_t size = strtoul(argv[1], NULL, 0);
    long off = strtol(argv[2], NULL, 0);
    volatile char *p = malloc(size);
    KEEP(p);
    memset((char *)p, 'a', size);
    if (argv[3][0] == 'w')
        p[off] = 'X';
    else {
        char c = p[off];
        KEEP((long)c);
    }
    free((void *)p);
    survived();
    return 0;
}
