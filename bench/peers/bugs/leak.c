/* leak: malloc(13), write p[14] (in the object's slack), never free it, exit normally. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char *volatile p = malloc(13);
    for (int i = 0; i < 13; i++)
        p[i] = (char)i;
    p[14] = 1;
    printf("survived\n");
    fflush(stdout);
    return 0;
}
