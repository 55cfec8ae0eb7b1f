/* Double free of a 24-byte object. */
#include "common.h"

int main(void) {
    char *p = malloc(24);
    KEEP(p);
    free(p);
    free(p);
    survived();
    return 0;
}
