/* Objects that are never freed (tests/live.rs): an overflow into the slack of a live object
 * is found by the canary check at exit, or on request from `ufence objects PID --check`.
 *
 *   live leak      malloc(13), write p[14], return from main
 *   live _exit     the same, then _exit(0)
 *   live many      300 objects left alive, written in bounds only; prints a checksum
 *   live serve     the overflow, then "ready PID", allocating until SIGTERM, then exit */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

__attribute__((noinline)) static char *make_record(size_t n) {
    char *p = malloc(n); /* LINE:make_record */
    __asm__ volatile("" ::: "memory");
    return p;
}

__attribute__((noinline)) static void damage(char *p) {
    ((volatile char *)p)[14] = 'x'; /* one byte past a 13-byte object: in the page's slack */
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "leak";
    if (strcmp(mode, "many") == 0) {
        unsigned long sum = 0;
        for (int i = 0; i < 300; i++) {
            size_t n = 1 + (size_t)(i * 37) % 600;
            char *p = malloc(n);
            memset(p, i, n);
            sum += (unsigned char)p[n - 1] + n;
        }
        printf("sum %lu\n", sum);
        return 0;
    }
    char *p = make_record(13);
    damage(p);
    if (strcmp(mode, "_exit") == 0)
        _exit(0);
    if (strcmp(mode, "serve") == 0) {
        signal(SIGTERM, on_term);
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        while (!stop) {
            free(malloc(64));
            usleep(1000);
        }
    }
    printf("done\n");
    return 0;
}
