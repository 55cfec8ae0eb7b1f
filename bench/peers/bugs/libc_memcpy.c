/* Out-of-bounds access inside the C library's memcpy:
 *   libc_memcpy w: copies 24 bytes into a 16-byte object (8 bytes past its end);
 *   libc_memcpy r: copies 24 bytes out of a 16-byte object. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    size_t n = 16 + (size_t)(argc + 6); /* 24, opaque to the compiler */
    char *obj = malloc(16);
    char *big = malloc(64);
    KEEP(obj);
    KEEP(big);
    memset(obj, 'a', 16);
    memset(big, 'b', 64);
    if (argv[1][0] == 'w')
        memcpy(obj, big, n);
    else
        memcpy(big, obj, n);
    free(obj);
    free(big);
    survived();
    return 0;
}
