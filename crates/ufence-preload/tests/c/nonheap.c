/* free() of memory that was never on the heap (tests/nonheap.rs): glibc aborts or faults
 * inside the free that ufence forwarded; ufence names the bug and the freeing stack, then the
 * process ends as it would have.
 *
 *   nonheap stack|static|mmap|interior [handler]
 *   nonheap abort [handler]     a plain abort(), nothing to do with free
 *   nonheap readback            what sigaction(SIGABRT) reads back */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char table[64];

__attribute__((noinline)) static void release(void *p) {
    free(p); /* LINE:release */
    __asm__ volatile("" ::: "memory");
}

static void on_abort(int sig) {
    (void)sig;
    static const char msg[] = "program's SIGABRT handler ran\n";
    write(1, msg, sizeof msg - 1);
    _exit(7);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    if (argc > 2)
        signal(SIGABRT, on_abort);
    if (!strcmp(m, "readback")) {
        struct sigaction old;
        sigaction(SIGABRT, NULL, &old);
        printf("default %d\n", old.sa_handler == SIG_DFL);
        signal(SIGABRT, on_abort);
        sigaction(SIGABRT, NULL, &old);
        printf("ours %d\n", old.sa_handler == on_abort);
        return 0;
    }
    if (!strcmp(m, "abort"))
        abort();
    char buf[64];
    memset(buf, 0x5a, sizeof buf);
    char *volatile q;
    if (!strcmp(m, "stack"))
        q = buf + 16; /* its "chunk header" is in buf: the same bytes in every run */
    else if (!strcmp(m, "static"))
        q = table;
    else if (!strcmp(m, "mmap")) {
        char *r = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(r, 4096);
        q = r + 4096;
    } else if (!strcmp(m, "interior"))
        q = (char *)malloc(100) + 8;
    else
        return 2;
    release(q);
    printf("survived\n");
    return 0;
}
