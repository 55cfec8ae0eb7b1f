/* One memory-safety bug per mode (argv[1]); with a sampled object each is ufence's to report.
   Prints the addresses the test needs, then "end" and exits 42 if it survives the bug. */
#include "common.h"
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int tid(void) { return (int)syscall(SYS_gettid); }

/* A malloc(size) whose last byte is the last byte of its page (right-placed, touching the
   right guard page). The other allocations of the search are kept, so no slot is reused. */
NOINLINE char *alloc_right(size_t size) {
    for (int i = 0; i < MAX_TRIES; i++) {
        char *p = malloc(size);
        if (p && ((uintptr_t)p + size) % PAGE == 0)
            return p;
    }
    die("no right-placed object");
    return NULL;
}

/* A malloc(size) at the start of its page (left-placed, after the left guard page). */
NOINLINE char *alloc_left(size_t size) {
    for (int i = 0; i < MAX_TRIES; i++) {
        char *p = malloc(size);
        if (p && page_offset(p) == 0)
            return p;
    }
    die("no left-placed object");
    return NULL;
}

/* A right-placed malloc(size) for sizes whose alignment leaves slack after the object. */
NOINLINE char *alloc_right_slack(size_t size) {
    for (int i = 0; i < MAX_TRIES; i++) {
        char *p = malloc(size);
        if (p && page_offset(p) >= PAGE / 2 && page_offset(p) + size < PAGE)
            return p;
    }
    die("no right-placed object with slack");
    return NULL;
}

NOINLINE char *make_object(size_t size) {
    char *p = malloc(size);
    NO_TAIL_CALL();
    return p;
}

NOINLINE void free_object(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE void free_again(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE void free_interior(char *p) {
    free(p);
    NO_TAIL_CALL();
}

NOINLINE char *grow_object(char *p, size_t size) {
    char *q = realloc(p, size);
    NO_TAIL_CALL();
    return q;
}

NOINLINE int read_at(volatile char *p, long i) { return p[i]; }

NOINLINE void write_at(volatile char *p, long i, char v) { p[i] = v; }

/* Damages one canary byte without faulting: its page is accessible. */
NOINLINE void flip_byte(volatile char *p, long i) { p[i] = (char)~p[i]; }

NOINLINE size_t copy_string(char *dst, const char *src) {
    strcpy(dst, src);
    NO_TAIL_CALL();
    return strlen(src);
}

NOINLINE void copy_bytes(char *dst, const char *src, size_t n) {
    memcpy(dst, src, n);
    NO_TAIL_CALL();
}

NOINLINE void fill_bytes(char *dst, int c, size_t n) {
    memset(dst, c, n);
    NO_TAIL_CALL();
}

NOINLINE size_t measure_string(const char *s) {
    size_t n = strlen(s);
    NO_TAIL_CALL();
    return n;
}

static char *volatile shared_object;
static volatile int worker_tid_a, worker_tid_b;

NOINLINE void *thread_alloc_and_free(void *arg) {
    (void)arg;
    worker_tid_a = tid();
    char *p = make_object(64);
    free_object(p);
    shared_object = p;
    return NULL;
}

NOINLINE void *thread_alloc(void *arg) {
    (void)arg;
    worker_tid_a = tid();
    shared_object = make_object(64);
    return NULL;
}

NOINLINE void *thread_free(void *arg) {
    (void)arg;
    worker_tid_b = tid();
    free_object(shared_object);
    return NULL;
}

NOINLINE void *thread_use(void *arg) {
    (void)arg;
    worker_tid_b = tid();
    read_at(shared_object, 3);
    return NULL;
}

static void run_thread(void *(*fn)(void *)) {
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0)
        die("pthread_create");
    pthread_join(t, NULL);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0); /* nothing lost if the bug aborts */
    if (argc < 2)
        die("usage: bugs MODE");
    const char *m = argv[1];
    char *p;
    printf("pid=%d\n", (int)getpid());

    if (!strcmp(m, "oob_read_right")) {
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        read_at(p, 32);
    } else if (!strcmp(m, "oob_read_left")) {
        p = alloc_left(32);
        printf("obj=%p\n", (void *)p);
        read_at(p, -1);
    } else if (!strcmp(m, "oob_write_right")) {
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        write_at(p, 32, 'x');
    } else if (!strcmp(m, "oob_write_left")) {
        p = alloc_left(32);
        printf("obj=%p\n", (void *)p);
        write_at(p, -1, 'x');
    } else if (!strcmp(m, "oob_read_right_far")) {
        /* 100 bytes past the end: still on the guard page. */
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        read_at(p, 32 + 99);
    } else if (!strcmp(m, "uaf_read")) {
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_object(p);
        read_at(p, 10);
    } else if (!strcmp(m, "uaf_write")) {
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_object(p);
        write_at(p, 20, 'x');
    } else if (!strcmp(m, "uaf_after_realloc")) {
        /* realloc moved the object: the old pointer is dangling. */
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        char *q = grow_object(p, 200);
        printf("new=%p\n", (void *)q);
        read_at(p, 0);
        free_object(q);
    } else if (!strcmp(m, "double_free")) {
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_object(p);
        free_again(p);
    } else if (!strcmp(m, "invalid_free_plus1")) {
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_interior(p + 1);
    } else if (!strcmp(m, "invalid_free_interior")) {
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_interior(p + 40);
    } else if (!strcmp(m, "corrupt_right")) {
        /* Left-placed, so the bytes after the object are canary on the same page. */
        p = alloc_left(13);
        printf("obj=%p\n", (void *)p);
        flip_byte(p, 13);
        free_object(p);
    } else if (!strcmp(m, "corrupt_left")) {
        /* Right-placed, so the bytes before the object are canary on the same page. */
        p = alloc_right_slack(13);
        printf("obj=%p\n", (void *)p);
        flip_byte(p, -1);
        free_object(p);
    } else if (!strcmp(m, "strcpy_overflow")) {
        char src[41];
        memset(src, 'A', 40);
        src[40] = 0;
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        copy_string(p, src);
    } else if (!strcmp(m, "memcpy_overflow")) {
        char src[64];
        memset(src, 'B', sizeof src);
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        copy_bytes(p, src, 48);
    } else if (!strcmp(m, "memset_overflow")) {
        p = alloc_right(32);
        printf("obj=%p\n", (void *)p);
        fill_bytes(p, 'C', 33);
    } else if (!strcmp(m, "strlen_overread")) {
        p = alloc_right(32);
        memset(p, 'D', 32); /* no terminating NUL inside the object */
        printf("obj=%p\n", (void *)p);
        printf("len=%zu\n", measure_string(p));
    } else if (!strcmp(m, "uaf_thread")) {
        /* Allocated and freed by a worker thread, used by the main thread. */
        run_thread(thread_alloc_and_free);
        printf("obj=%p\n", (void *)shared_object);
        printf("alloc_tid=%d free_tid=%d use_tid=%d\n", worker_tid_a, worker_tid_a, tid());
        read_at(shared_object, 3);
    } else if (!strcmp(m, "uaf_thread3")) {
        /* Allocated by one thread, freed by a second, used by a third. */
        run_thread(thread_alloc);
        printf("obj=%p\n", (void *)shared_object);
        run_thread(thread_free);
        printf("alloc_tid=%d free_tid=%d main_tid=%d\n", worker_tid_a, worker_tid_b, tid());
        run_thread(thread_use);
        printf("use_tid=%d\n", worker_tid_b);
    } else if (!strcmp(m, "fork_child")) {
        /* The parent allocates; a forked child frees and then uses the object. */
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        pid_t child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            printf("child=%d\n", (int)getpid());
            free_object(p);
            read_at(p, 5);
            printf("child end\n");
            _exit(7);
        }
        int st;
        if (waitpid(child, &st, 0) != child)
            die("waitpid");
        if (WIFEXITED(st))
            printf("child exited %d\n", WEXITSTATUS(st));
        else if (WIFSIGNALED(st))
            printf("child killed by signal %d\n", WTERMSIG(st));
        /* The parent's copy of the object is still live: using and freeing it is fine. */
        write_at(p, 63, 'z');
        free_object(p);
        for (int i = 0; i < 50; i++)
            free(make_object(100 + i));
        printf("parent end\n");
        return 0;
    } else if (!strcmp(m, "three_touches")) {
        /* Two freed objects, each touched three times: one report per object. */
        char *a = make_object(64), *b = make_object(128);
        printf("obj=%p\nobj=%p\n", (void *)a, (void *)b);
        free_object(a);
        free_object(b);
        for (int i = 0; i < 3; i++) {
            read_at(a, i);
            write_at(a, i, 'q');
            read_at(b, 100 + i);
        }
        free_again(a);
    } else if (!strcmp(m, "exit_after_uaf")) {
        /* A use-after-free, then an ending chosen by argv[2]; a line left in a fully buffered
           stream must still come out when ufence changes the exit status. */
        const char *how = argc > 2 ? argv[2] : "return0";
        FILE *f = fdopen(dup(1), "w");
        if (!f)
            die("fdopen");
        setvbuf(f, NULL, _IOFBF, 4096);
        fputs("buffered line\n", f);
        if (!strcmp(how, "clean_return0"))
            return 0;
        p = make_object(64);
        printf("obj=%p\n", (void *)p);
        free_object(p);
        read_at(p, 5);
        if (!strcmp(how, "_exit0")) {
            fflush(f);
            _exit(0);
        }
        if (!strcmp(how, "exit3"))
            exit(3);
        if (!strcmp(how, "child_exit0")) {
            /* The child found no bug itself: its status is its own. */
            pid_t child = fork();
            if (child < 0)
                die("fork");
            if (child == 0)
                _exit(0);
            int st;
            if (waitpid(child, &st, 0) != child || !WIFEXITED(st))
                die("waitpid");
            printf("child exited %d\n", WEXITSTATUS(st));
        }
        return 0;
    } else {
        die("unknown mode");
    }
    printf("end\n");
    return 42;
}
