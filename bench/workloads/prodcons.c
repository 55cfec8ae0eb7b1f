/* Producer/consumer across threads: producers malloc messages of 16..512 bytes and pass them
 * through a bounded queue to consumers, which read and free them (every free is a cross-thread
 * free).  usage: prodcons [messages]   (default 1500000; 2 producers, 2 consumers) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QCAP 1024
#define BATCH 32
#define PRODUCERS 2
#define CONSUMERS 2

struct msg {
    unsigned len;
    unsigned seq;
    char body[];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    struct msg *slot[QCAP];
    unsigned head, tail; /* head: next to take; tail: next to fill */
    int producers_left;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static long per_producer;

static void *producer(void *arg) {
    unsigned x = 2463534242u ^ (unsigned)(long)arg;
    struct msg *batch[BATCH];
    for (long done = 0; done < per_producer;) {
        int n = 0;
        for (; n < BATCH && done < per_producer; n++, done++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            unsigned len = 16 + x % 497;
            struct msg *m = malloc(sizeof *m + len);
            if (!m)
                abort();
            m->len = len;
            m->seq = (unsigned)done;
            memset(m->body, (int)(done & 0x7f), len);
            batch[n] = m;
        }
        pthread_mutex_lock(&q.lock);
        for (int i = 0; i < n; i++) {
            while (q.tail - q.head == QCAP)
                pthread_cond_wait(&q.not_full, &q.lock);
            q.slot[q.tail++ % QCAP] = batch[i];
        }
        pthread_cond_broadcast(&q.not_empty);
        pthread_mutex_unlock(&q.lock);
    }
    pthread_mutex_lock(&q.lock);
    q.producers_left--;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    unsigned long sum = 0;
    struct msg *batch[BATCH];
    for (;;) {
        int n = 0;
        pthread_mutex_lock(&q.lock);
        while (q.tail == q.head && q.producers_left > 0)
            pthread_cond_wait(&q.not_empty, &q.lock);
        while (n < BATCH && q.tail != q.head)
            batch[n++] = q.slot[q.head++ % QCAP];
        pthread_cond_broadcast(&q.not_full);
        pthread_mutex_unlock(&q.lock);
        if (n == 0)
            break; /* queue empty and no producer left */
        for (int i = 0; i < n; i++) {
            sum += (unsigned char)batch[i]->body[batch[i]->len - 1] + batch[i]->seq;
            free(batch[i]);
        }
    }
    return (void *)sum;
}

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 1500000;
    per_producer = total / PRODUCERS;
    q.producers_left = PRODUCERS;
    pthread_t p[PRODUCERS], c[CONSUMERS];
    for (long i = 0; i < CONSUMERS; i++)
        pthread_create(&c[i], NULL, consumer, NULL);
    for (long i = 0; i < PRODUCERS; i++)
        pthread_create(&p[i], NULL, producer, (void *)(i + 1));
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(p[i], NULL);
    unsigned long sum = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        void *r;
        pthread_join(c[i], &r);
        sum += (unsigned long)r;
    }
    printf("prodcons: %ld messages, checksum %lu\n", per_producer * PRODUCERS, sum);
    return 0;
}
