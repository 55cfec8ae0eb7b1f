/* The classic off-by-one inside the C library: strcpy of a 13-character string (14 bytes with
 * its terminating NUL) into malloc(13). */
#include "common.h"

int main(int argc, char **argv) {
    (void)argv;
    char src[32] = "hello, world!"; /* 13 characters */
    char *dst = malloc(12 + argc); /* 13 */
    KEEP(dst);
    strcpy(dst, src);
    free(dst);
    survived();
    return 0;
}
