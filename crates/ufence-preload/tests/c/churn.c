/* Multi-threaded allocation churn that checks all its data: 4 threads each keep a ring of live
   objects, fill every new one with a pattern, check it before growing or shrinking it with
   realloc and before freeing it, and hand some objects to the next thread, which checks and
   frees them. Prints per-thread digests that do not depend on scheduling. */
#include "common.h"
#include <malloc.h>
#include <pthread.h>
#include <string.h>

#define THREADS 4
#define ITERS 6000
#define RING 48
#define HANDOFF_EVERY 16
#define QUEUE (ITERS / HANDOFF_EVERY + 1)

struct obj {
    unsigned char *p;
    size_t n;
    unsigned seed;
};

struct queue {
    pthread_mutex_t mu;
    struct obj items[QUEUE];
    int head, tail;
};

static struct queue queues[THREADS];
static long received_ok[THREADS], received_bad[THREADS];
static unsigned long digests[THREADS];
static long bad[THREADS];

static unsigned next(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static int check(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return 0;
    return 1;
}

static size_t pick_size(unsigned *s) {
    unsigned r = next(s);
    switch (r % 8) {
    case 0:
        return 1 + r / 8 % 16;
    case 1:
        return 1000 + r / 8 % 6000; /* some larger than a page: never sampled */
    default:
        return 1 + r / 8 % 400;
    }
}

static void drain(int me) {
    struct queue *q = &queues[me];
    for (;;) {
        pthread_mutex_lock(&q->mu);
        if (q->head == q->tail) {
            pthread_mutex_unlock(&q->mu);
            return;
        }
        struct obj o = q->items[q->head++];
        pthread_mutex_unlock(&q->mu);
        if (check(o.p, o.n, o.seed))
            received_ok[me]++;
        else
            received_bad[me]++;
        free(o.p);
    }
}

static void *worker(void *arg) {
    int me = (int)(long)arg;
    unsigned s = 1234u + (unsigned)me * 777u;
    struct obj ring[RING] = {{0}};
    unsigned long digest = 0;
    for (int it = 0; it < ITERS; it++) {
        struct obj *o = &ring[it % RING];
        if (o->p) {
            if (!check(o->p, o->n, o->seed))
                bad[me]++;
            digest = digest * 31 + o->n + o->p[o->n - 1];
            switch (next(&s) % 4) {
            case 0: { /* grow or shrink, keep the prefix */
                size_t n = pick_size(&s);
                unsigned char *p = realloc(o->p, n);
                if (!p) {
                    bad[me]++;
                    break;
                }
                size_t keep = n < o->n ? n : o->n;
                if (!check(p, keep, o->seed))
                    bad[me]++;
                o->p = p;
                o->n = n;
                fill(p, n, o->seed);
                continue;
            }
            default:
                free(o->p);
                o->p = NULL;
            }
        }
        o->n = pick_size(&s);
        o->seed = next(&s);
        unsigned kind = next(&s) % 4;
        if (kind == 0) {
            o->p = calloc(1, o->n);
            if (o->p && o->p[o->n - 1] != 0)
                bad[me]++;
        } else if (kind == 1) {
            o->p = memalign(64, o->n);
            if ((uintptr_t)o->p % 64)
                bad[me]++;
        } else {
            o->p = malloc(o->n);
        }
        if (!o->p) {
            bad[me]++;
            continue;
        }
        fill(o->p, o->n, o->seed);
        if (it % HANDOFF_EVERY == 0) {
            struct queue *q = &queues[(me + 1) % THREADS];
            pthread_mutex_lock(&q->mu);
            q->items[q->tail++] = *o;
            pthread_mutex_unlock(&q->mu);
            o->p = NULL;
        }
        if (it % 64 == 0)
            drain(me);
    }
    for (int i = 0; i < RING; i++) {
        if (ring[i].p && !check(ring[i].p, ring[i].n, ring[i].seed))
            bad[me]++;
        free(ring[i].p);
    }
    digests[me] = digest;
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_mutex_init(&queues[i].mu, NULL);
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(long)i))
            die("pthread_create");
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    long total_ok = 0, total_bad = 0;
    for (int i = 0; i < THREADS; i++) {
        drain(i);
        total_ok += received_ok[i];
        total_bad += received_bad[i] + bad[i];
        printf("thread %d: digest %016lx bad %ld\n", i, digests[i], bad[i]);
    }
    printf("handed over: %ld ok, all bad: %ld\n", total_ok, total_bad);
    return total_bad != 0;
}
