/* Who allocated: a record names the thread by id and name, which ufence caches per thread.
 * usage: names MODE, with MODE one of
 *   prctl    the main thread allocates (its name read), renames itself with prctl, then
 *            allocates the object of a use-after-free;
 *   setname  the same through pthread_setname_np;
 *   fork     the parent allocates (its id cached), forks; the child makes the bug;
 *   rawfork  the same with a fork that runs no fork handlers (the clone system call).
 * Prints `pid=N` for the process that makes the bug. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void bug(void) {
    printf("pid=%d\n", (int)getpid());
    fflush(stdout);
    char *volatile p = malloc(48);
    free(p);
    volatile char c = p[1];
    (void)c;
}

int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    for (int i = 0; i < 10; i++) { /* sampled: the thread's id and name are read here */
        char *volatile q = malloc(48);
        free(q);
    }
    if (!strcmp(m, "prctl")) {
        prctl(PR_SET_NAME, "renamed-prctl");
        bug();
    } else if (!strcmp(m, "setname")) {
        pthread_setname_np(pthread_self(), "renamed-np");
        bug();
    } else if (!strcmp(m, "fork") || !strcmp(m, "rawfork")) {
        pid_t pid = !strcmp(m, "fork") ? fork() : (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) {
            bug();
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
    }
    return 0;
}
