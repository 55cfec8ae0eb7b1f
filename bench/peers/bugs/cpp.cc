// C++ new/delete: cpp uaf-read | uaf-write | delete-twice | array-overflow | array-underflow |
//                   new-array-delete | new-free | malloc-delete
#include <cstdio>
#include <cstdlib>
#include <cstring>

struct Session {
    long id;
    char name[24];
    int refs;
};

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    const char *bug = argv[1];
    if (!strcmp(bug, "uaf-read") || !strcmp(bug, "uaf-write") || !strcmp(bug, "delete-twice")) {
        Session *volatile s = new Session{42, "alice", 1};
        sink = s;
        delete s;
        if (!strcmp(bug, "uaf-read"))
            sink = reinterpret_cast<void *>(static_cast<long>(s->refs));
        else if (!strcmp(bug, "uaf-write"))
            s->refs = 0;
        else
            delete s;
    } else if (!strcmp(bug, "array-overflow") || !strcmp(bug, "array-underflow")) {
        int *volatile a = new int[25]; // 100 bytes
        sink = a;
        for (int i = 0; i < 25; i++)
            a[i] = i;
        if (!strcmp(bug, "array-overflow"))
            a[25] = 1;
        else
            a[-1] = 1;
        delete[] a;
    } else if (!strcmp(bug, "new-array-delete")) {
        int *volatile a = new int[25];
        sink = a;
        delete a; // should be delete[]
    } else if (!strcmp(bug, "new-free")) {
        Session *volatile s = new Session{42, "alice", 1};
        sink = s;
        std::free(s); // should be delete
    } else if (!strcmp(bug, "malloc-delete")) {
        int *volatile p = static_cast<int *>(std::malloc(100));
        sink = p;
        delete p; // should be free
    } else {
        return 2;
    }
    std::printf("survived\n");
    std::fflush(stdout);
    return 0;
}
