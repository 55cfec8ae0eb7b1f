/* A program with its own SIGSEGV handler. Modes:
     before   installs it (sigaction, SA_SIGINFO) before its first malloc,
     after    installs it after some allocations,
   then dereferences NULL twice; the handler records the fault and siglongjmps out.
     unhandled  no handler: a NULL dereference must kill the program with SIGSEGV. */
#include "common.h"
#include <setjmp.h>
#include <signal.h>
#include <string.h>

static sigjmp_buf env;
static volatile sig_atomic_t caught, caught_signo;
static void *volatile caught_addr = (void *)1;

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    caught++;
    caught_signo = sig;
    caught_addr = info->si_addr;
    siglongjmp(env, 1);
}

static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        die("sigaction");
}

NOINLINE int deref(volatile int *p) { return *p; }

static void churn(void) {
    for (int i = 0; i < 100; i++)
        free(malloc(16 + i));
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: sigsegv before|after|unhandled");
    const char *m = argv[1];
    if (!strcmp(m, "before"))
        install();
    churn(); /* the first mallocs */
    if (!strcmp(m, "after"))
        install();
    char *keep = malloc(64);
    for (int round = 0; round < 2; round++) {
        if (sigsetjmp(env, 1) == 0) {
            deref(NULL);
            printf("round %d: no fault\n", round);
        } else {
            printf("round %d: caught signal %d at %p\n", round, (int)caught_signo, caught_addr);
        }
        churn();
    }
    free(keep);
    printf("caught %d\n", (int)caught);
    return 0;
}
