/* nonheap stack | static: free() of a stack buffer or of a static array. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char table[64];

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    char buf[64];
    memset(buf, 0x5a, sizeof buf);
    char *volatile q = !strcmp(argv[1], "stack") ? buf + 16 : table + 16;
    free(q);
    printf("survived\n");
    fflush(stdout);
    return 0;
}
