/* Mixed sizes with realloc: string builders that grow one word at a time (realloc on every
 * append, as naive code does), growable arrays that double, strdup'd tokens, and buffers that
 * shrink back, with sizes from a few bytes to ~64 KiB.  usage: strings [reps]   (default 32) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned rng = 88172645u;
static unsigned next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta",
                              "theta", "iota", "kappa", "lambda", "mu", "a-much-longer-word-here",
                              "x", "omicron-pi-rho-sigma-tau"};
#define NWORDS (sizeof words / sizeof *words)

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q)
        abort();
    return q;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 32;
    unsigned long check = 0;
    for (int rep = 0; rep < reps; rep++) {
        /* 1: string builders, realloc on every append */
        for (int s = 0; s < 400; s++) {
            size_t len = 0;
            char *str = NULL;
            int nw = 1 + next() % 300;
            for (int w = 0; w < nw; w++) {
                const char *word = words[next() % NWORDS];
                size_t wl = strlen(word);
                str = xrealloc(str, len + wl + 2);
                memcpy(str + len, word, wl);
                len += wl;
                str[len++] = ' ';
                str[len] = 0;
            }
            /* tokens: strdup each word of the built string, then free them all */
            char *toks[512];
            int nt = 0;
            for (char *t = strtok(str, " "); t && nt < 512; t = strtok(NULL, " "))
                toks[nt++] = strdup(t);
            for (int i = 0; i < nt; i++) {
                check += (unsigned char)toks[i][0];
                free(toks[i]);
            }
            /* shrink back to a short prefix */
            str = xrealloc(str, 8);
            check += (unsigned char)str[0];
            free(str);
        }
        /* 2: doubling arrays of records */
        for (int a = 0; a < 60; a++) {
            size_t cap = 4, n = 0;
            long *v = malloc(cap * sizeof *v);
            size_t want = 16 + next() % 8000;
            for (; n < want; n++) {
                if (n == cap) {
                    cap *= 2;
                    v = xrealloc(v, cap * sizeof *v);
                }
                v[n] = (long)n * 3;
            }
            check += (unsigned long)v[n - 1];
            v = xrealloc(v, n * sizeof *v); /* shrink to fit */
            free(v);
        }
        /* 3: a pool of buffers resized at random, small and large */
        char *buf[64] = {0};
        size_t sz[64] = {0};
        for (int i = 0; i < 12000; i++) {
            unsigned k = next() % 64;
            size_t n = (next() & 7) ? 1 + next() % 256 : 1 + next() % 65536;
            buf[k] = xrealloc(buf[k], n);
            if (n > sz[k])
                memset(buf[k] + sz[k], (int)k, n - sz[k]);
            sz[k] = n;
            check += (unsigned char)buf[k][n - 1];
        }
        for (int k = 0; k < 64; k++)
            free(buf[k]);
    }
    printf("strings: checksum %lu\n", check);
    return 0;
}
