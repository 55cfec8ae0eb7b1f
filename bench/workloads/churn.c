/* Multi-threaded churn: 4 threads, each replacing random entries of its own 2000-slot array
 * with fresh blocks (mostly 8..256 bytes, 1 in 16 up to 4 KiB, 1 in 1024 up to 256 KiB),
 * so each thread keeps a changing working set alive.  usage: churn [ops per thread]   (default 3000000) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define SLOTS 2000

static long ops = 3000000;

static void *worker(void *arg) {
    unsigned long x = 0x9e3779b97f4a7c15ul * ((unsigned long)arg + 1);
    char *slot[SLOTS] = {0};
    unsigned long sum = 0;
    for (long i = 0; i < ops; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned k = (unsigned)(x >> 8) % SLOTS;
        unsigned r = (unsigned)(x >> 32);
        size_t n;
        if ((r & 1023) == 0)
            n = 4096 + (r >> 10) % (256 * 1024);
        else if ((r & 15) == 0)
            n = 257 + (r >> 4) % 3840;
        else
            n = 8 + (r >> 4) % 249;
        if (slot[k]) {
            sum += (unsigned char)slot[k][0];
            free(slot[k]);
            slot[k] = NULL;
        }
        if (r & 0x100000) { /* half the time leave the slot empty for a while */
            slot[k] = malloc(n);
            if (!slot[k])
                abort();
            slot[k][0] = (char)i;
            slot[k][n - 1] = (char)k;
        }
    }
    for (int k = 0; k < SLOTS; k++)
        free(slot[k]);
    return (void *)sum;
}

int main(int argc, char **argv) {
    if (argc > 1)
        ops = atol(argv[1]);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    unsigned long sum = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (unsigned long)r;
    }
    printf("churn: checksum %lu\n", sum);
    return 0;
}
