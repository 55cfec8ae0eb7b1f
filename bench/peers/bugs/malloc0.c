/* Zero-size allocation: malloc0 r|w: p = malloc(0), then one byte read or written at p[0]. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    volatile char *p = malloc(0);
    KEEP(p);
    if (p == NULL)
        return 3;
    if (argv[1][0] == 'w')
        p[0] = 'X';
    else {
        char c = p[0];
        KEEP((long)c);
    }
    free((void *)p);
    survived();
    return 0;
}
