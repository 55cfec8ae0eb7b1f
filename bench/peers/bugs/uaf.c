/* Use-after-free: uaf SIZE r|w. Reads or writes one byte in the middle of a freed object. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    size_t size = strtoul(argv[1], NULL, 0);
    volatile char *p = malloc(size);
    KEEP(p);
    memset((char *)p, 'a', size);
    free((void *)p);
    if (argv[2][0] == 'w')
        p[size / 2] = 'X';
    else {
        char c = p[size / 2];
        KEEP((long)c);
    }
    survived();
    return 0;
}
