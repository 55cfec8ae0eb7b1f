/* Invalid free: frees a pointer 8 bytes inside a live 24-byte object. */
#include "common.h"

int main(void) {
    char *p = malloc(24);
    KEEP(p);
    free(p + 8);
    survived();
    return 0;
}
