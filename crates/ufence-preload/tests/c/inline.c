/* A use-after-free inside a static inline accessor, the object allocated inside a static
   inline constructor: built with -O2, both are inlined into run_bug. The report must name
   them (`#0 get_value (inline.c:N, inlined)`, then `#1 run_bug+0x.. (inline.c:M, ...)`).

   Modes (argv[1]) put the fault in hostile surroundings:
     plain     the fault in the main thread
     threads   the fault in a second thread while four others allocate and free
     closed    fds 0, 1 and 2 closed, the environment cleared (no PATH)
     sigign    SIGCHLD ignored
     sigcount  a SIGCHLD handler that counts
   After the report the program checks that ufence left no child behind (waitpid with __WALL
   must say ECHILD: no child, running or zombie) and exits 42 if so, 43 if not. Modes with a
   standard error print `sigchld=N` first. Every mode first opens descriptor 77 without
   O_CLOEXEC: the symbolizer must not inherit it. */
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

struct obj {
    long pad;
    long value;
};

static inline long get_value(const struct obj *o) {
    return *(volatile const long *)&o->value; /* LINE:get_value */
}

static inline struct obj *new_obj(long v) {
    struct obj *o = malloc(sizeof *o); /* LINE:new_obj */
    if (!o)
        die("malloc");
    o->value = v;
    return o;
}

static volatile long sink;

NOINLINE void run_bug(void) {
    struct obj *o = new_obj(7); /* LINE:call_new */
    NO_TAIL_CALL();
    free(o);
    NO_TAIL_CALL();
    sink = get_value(o); /* LINE:call_get */
    NO_TAIL_CALL();
}

static volatile int stop;
static volatile int sigchld_count;

static void *churn(void *arg) {
    (void)arg;
    /* Allocating all along, but leaving the CPU to the symbolizer too (two cores, shared). */
    while (!stop) {
        void *p = malloc(32);
        free(p);
        usleep(20);
    }
    return NULL;
}

static void *bug_thread(void *arg) {
    (void)arg;
    run_bug();
    return NULL;
}

static void on_sigchld(int sig) {
    (void)sig;
    sigchld_count++;
}

static int no_child_left(void) {
    int status;
    return waitpid(-1, &status, WNOHANG | __WALL) < 0 && errno == ECHILD;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "plain";
    int has_stderr = 1;
    if (dup2(open("/dev/null", O_RDONLY), 77) != 77)
        die("dup2");
    if (!strcmp(mode, "plain")) {
        run_bug();
    } else if (!strcmp(mode, "threads")) {
        pthread_t churners[4], bug;
        for (int i = 0; i < 4; i++)
            pthread_create(&churners[i], NULL, churn, NULL);
        pthread_create(&bug, NULL, bug_thread, NULL);
        pthread_join(bug, NULL);
        stop = 1;
        for (int i = 0; i < 4; i++)
            pthread_join(churners[i], NULL);
    } else if (!strcmp(mode, "closed")) {
        close(0);
        close(1);
        close(2);
        clearenv();
        has_stderr = 0;
        run_bug();
    } else if (!strcmp(mode, "sigign")) {
        signal(SIGCHLD, SIG_IGN);
        run_bug();
    } else if (!strcmp(mode, "sigcount")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigchld;
        sigaction(SIGCHLD, &sa, NULL);
        run_bug();
    } else {
        die("unknown mode");
    }
    if (has_stderr) {
        fprintf(stderr, "sigchld=%d\n", sigchld_count);
        fflush(stderr);
    }
    return no_child_left() ? 42 : 43;
}
