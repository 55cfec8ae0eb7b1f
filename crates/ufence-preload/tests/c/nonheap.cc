// operator delete of an object that was never allocated (tests/nonheap.rs).
static long table[8];

__attribute__((noinline)) static void destroy(long *p) {
    delete p; // LINE:destroy
    __asm__ volatile("" ::: "memory");
}

int main() {
    long *volatile q = table + 2;
    destroy(q);
    return 0;
}
