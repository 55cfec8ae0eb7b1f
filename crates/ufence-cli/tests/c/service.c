/* A long-running "service" for the control-block tests: it allocates steadily, keeps a few
 * objects alive, and exits normally on SIGTERM (so that ufence removes its control file).
 *   service run     allocate until SIGTERM
 *   service fork    fork first; parent and child both run
 *   service hoard   run, leaking one allocation in four (a pool that fills)
 *   service slow    allocate about 200 times a second until SIGTERM
 *   service rawfork fork without glibc's fork handlers (a raw system call); both sides free
 *                   the same inherited objects, then exit
 *   service crash   run ~300 ms, then read a freed object (with on_error=abort: SIGABRT)
 *   service spawn   keep 16 objects of 4000 bytes; start 20 children that never sample (half
 *                   exec a shell without the preload, half _exit at once), then fork one
 *                   child that runs; print "child PID" and "spawned", and run
 *   service daemon  fork a child that closes every descriptor above 2, as daemons do, and
 *                   runs; print "child PID", and run
 *   service closedstdio  close stdin and stdout, fork a child that writes 16 KiB to fd 1 and
 *                   allocates, exiting 3 if none of its allocations was sampled; exit with
 *                   the child's success (its status on stderr)
 *   service vfork   a vfork child allocates and frees 10 objects; print "vforked", and run
 *   service quietchild  allocate 300,000 times quickly, then fork a child that allocates
 *                   100 times a second; print "child PID", and run
 *   service exec    execvp a program that does not exist, print "still here ERRNO", wait
 *                   for SIGUSR1, then execve `sleep 1` without the preload in its environment
 *   service large   keep a 10000-byte object and a 0-byte one (sampled at sample_rate=1), print
 *                   "held", and wait for SIGTERM
 * SERVICE_EXIT_AFTER_MS=N ends the run after N ms. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }
static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

__attribute__((noinline)) char *make_node(size_t n) {
    char *p = malloc(n);
    memset(p, 7, n);
    return p;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double exit_after;

__attribute__((noinline)) static void serve(int crash, int hoard) {
    static char *keep[32];
    double start = now();
    unsigned long i = 0;
    while (!stop) {
        if (exit_after > 0 && now() - start > exit_after) break;
        int k = i % 32;
        if (hoard && i % 4 == 0) keep[k] = NULL; /* leak: long-lived objects fill the pool */
        free(keep[k]);
        keep[k] = make_node(16 + i % 100);
        if (++i % 64 == 0) usleep(200);
        if (crash && now() - start > 0.3) {
            /* Sampled objects are freed steadily: keep freeing until one of ours was
             * sampled, then touch it after free. */
            for (;;) {
                char *p = make_node(24);
                free(p);
                volatile char c = p[0];
                (void)c;
            }
        }
    }
}

/* In a child that runs beside its parent: it dies with the parent and says who it is. */
static void announce_child(void) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    printf("child %d\n", (int)getpid());
    fflush(stdout);
}

/* The parent's side: serve until SIGTERM, then stop the child. */
static int serve_then_stop(pid_t c) {
    serve(0, 0);
    kill(c, SIGTERM);
    waitpid(c, NULL, 0);
    return 0;
}

/* stdout's buffer, so that printf never allocates: every sampled object is then one of
   make_node's, which the tests assert (stdio's buffer once took a sample at start). */
static char out_buf[4096];

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "run";
    setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);
    signal(SIGTERM, on_term);
    if (getenv("SERVICE_EXIT_AFTER_MS")) exit_after = atoi(getenv("SERVICE_EXIT_AFTER_MS")) / 1000.0;
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (strcmp(mode, "slow") == 0) {
        while (!stop) {
            free(make_node(32));
            usleep(5000);
        }
        return 0;
    }
    if (strcmp(mode, "rawfork") == 0) {
        char *objs[8];
        for (int i = 0; i < 8; i++) objs[i] = make_node(48);
        pid_t c = (pid_t)syscall(SYS_fork);
        for (int i = 0; i < 8; i++) free(objs[i]);
        if (c == 0) _exit(0);
        waitpid(c, NULL, 0);
        printf("done\n");
        return 0;
    }
    if (strcmp(mode, "spawn") == 0) {
        static char *kept[16];
        for (int i = 0; i < 16; i++) kept[i] = make_node(4000);
        for (int i = 0; i < 20; i++) {
            pid_t c = fork();
            if (c == 0) {
                if (i % 2 == 0) {
                    char *env[] = {"PATH=/usr/bin:/bin", NULL};
                    execle("/bin/sh", "sh", "-c", "exit 0", (char *)0, env);
                }
                _exit(0);
            }
            waitpid(c, NULL, 0);
        }
        pid_t c = fork();
        if (c == 0) {
            announce_child();
            serve(0, 0);
            return 0;
        }
        waitpid(-1, NULL, WNOHANG);
        /* After the child's line: the parent's stdout buffer was copied into the child. */
        usleep(100000);
        printf("spawned\n");
        fflush(stdout);
        return serve_then_stop(c);
    }
    if (strcmp(mode, "daemon") == 0) {
        pid_t c = fork();
        if (c == 0) {
            for (int fd = 3; fd < 1024; fd++) close(fd);
            announce_child();
            serve(0, 0);
            return 0;
        }
        return serve_then_stop(c);
    }
    if (strcmp(mode, "exec") == 0) {
        char *missing[] = {"ufence-test-no-such-program", NULL};
        execvp(missing[0], missing);
        printf("still here %d\n", errno);
        fflush(stdout);
        signal(SIGUSR1, on_usr1);
        while (!go) pause();
        char *sleep1[] = {"sleep", "1", NULL};
        char *env[] = {"PATH=/usr/bin:/bin", NULL};
        execve("/bin/sleep", sleep1, env);
        return 127;
    }
    if (strcmp(mode, "closedstdio") == 0) {
        close(0);
        close(1);
        pid_t c = fork();
        if (c == 0) {
            char junk[4096];
            memset(junk, 'x', sizeof junk);
            for (int i = 0; i < 4; i++) (void)!write(1, junk, sizeof junk);
            /* Sampled objects have exactly the requested usable size (glibc rounds up): the
             * child must still be sampling after its writes to fd 1. */
            int sampled = 0;
            for (int i = 0; i < 1000; i++) {
                char *p = make_node(64);
                sampled += malloc_usable_size(p) == 64;
                free(p);
            }
            _exit(sampled > 0 ? 0 : 3);
        }
        int st = 0;
        waitpid(c, &st, 0);
        fprintf(stderr, "child status %d\n", st);
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
    }
    if (strcmp(mode, "vfork") == 0) {
        pid_t c = vfork();
        if (c == 0) {
            for (int i = 0; i < 10; i++) free(make_node(32));
            _exit(0);
        }
        waitpid(c, NULL, 0);
        printf("vforked\n");
        fflush(stdout);
        serve(0, 0);
        return 0;
    }
    if (strcmp(mode, "quietchild") == 0) {
        for (int i = 0; i < 300000; i++) free(make_node(16 + i % 64));
        pid_t c = fork();
        if (c == 0) {
            announce_child();
            while (!stop) {
                free(make_node(32));
                usleep(10000);
            }
            return 0;
        }
        return serve_then_stop(c);
    }
    if (strcmp(mode, "large") == 0) {
        char *volatile big = malloc(10000);
        char *volatile zero = malloc(0);
        memset(big, 1, 10000);
        printf("held %p %p\n", (void *)big, (void *)zero);
        fflush(stdout);
        while (!stop)
            usleep(10000);
        free(big);
        free(zero);
        return 0;
    }
    if (strcmp(mode, "fork") == 0) {
        pid_t c = fork();
        if (c == 0) {
            announce_child();
            serve(0, 0);
            return 0;
        }
        return serve_then_stop(c);
    }
    if (strcmp(mode, "hostile") == 0) {
        /* A thread name that would clear the operator's screen and break a table's line. */
        prctl(PR_SET_NAME, "\x1b[2J\nEVIL\x07");
    }
    serve(strcmp(mode, "crash") == 0, strcmp(mode, "hoard") == 0);
    return 0;
}
