/* Small-object churn: many short-lived binary trees and linked lists built and torn down while
 * one long-lived tree and list stay alive, as a numeric or symbolic program's temporaries do.
 * Node sizes 24..64 bytes.  usage: trees [scale]   (default 14) */
#include <stdio.h>
#include <stdlib.h>

struct node {
    struct node *left, *right;
    long value;
};

struct cell {
    struct cell *next;
    double payload[3];
};

static struct node *build(int depth, long v) {
    struct node *n = malloc(sizeof *n);
    if (!n)
        abort();
    n->value = v;
    if (depth > 0) {
        n->left = build(depth - 1, 2 * v);
        n->right = build(depth - 1, 2 * v + 1);
    } else {
        n->left = n->right = NULL;
    }
    return n;
}

static long check(const struct node *n) {
    if (!n->left)
        return n->value & 1;
    return 1 + check(n->left) - check(n->right);
}

static void destroy(struct node *n) {
    if (n->left) {
        destroy(n->left);
        destroy(n->right);
    }
    free(n);
}

static struct cell *list(int len, double seed) {
    struct cell *head = NULL;
    for (int i = 0; i < len; i++) {
        struct cell *c = malloc(sizeof *c);
        if (!c)
            abort();
        c->payload[0] = seed + i;
        c->payload[1] = c->payload[0] * 0.5;
        c->payload[2] = c->payload[1] * 0.25;
        c->next = head;
        head = c;
    }
    return head;
}

static double sum_and_free(struct cell *c) {
    double s = 0;
    while (c) {
        struct cell *next = c->next;
        s += c->payload[0] + c->payload[2];
        free(c);
        c = next;
    }
    return s;
}

int main(int argc, char **argv) {
    int scale = argc > 1 ? atoi(argv[1]) : 14;
    long checksum = 0;
    double lsum = 0;
    struct node *keep = build(16, 1); /* 131071 nodes alive throughout */
    struct cell *keep_list = list(50000, 1.0);
    for (int rep = 0; rep < scale; rep++) {
        for (int depth = 4; depth <= 14; depth += 2) {
            int iters = 1 << (16 - depth);
            for (int i = 0; i < iters; i++) {
                struct node *t = build(depth, i);
                checksum += check(t);
                destroy(t);
            }
        }
        for (int i = 0; i < 200; i++)
            lsum += sum_and_free(list(1000 + i, i));
    }
    checksum += check(keep);
    destroy(keep);
    lsum += sum_and_free(keep_list);
    printf("trees: checksum %ld %.0f\n", checksum, lsum);
    return 0;
}
