/* Use of the old pointer after realloc: realloc_old r|w grows a 24-byte object to 1000 bytes
 * (so that it moves), then reads or writes through the stale pointer. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    volatile char *p = malloc(24);
    KEEP(p);
    memset((char *)p, 'a', 24);
    char *q = realloc((void *)p, 1000);
    KEEP(q);
    if (q == (char *)p)
        printf("realloc did not move the object\n");
    if (argv[1][0] == 'w')
        p[4] = 'X';
    else {
        char c = p[4];
        KEEP((long)c);
    }
    free(q);
    survived();
    return 0;
}
