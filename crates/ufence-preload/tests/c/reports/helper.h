/* A shared library of the report tests' own: allocations and bugs inside it. */
#include <stddef.h>
char *helper_alloc(size_t n);
void helper_poke(char *p, size_t i);
