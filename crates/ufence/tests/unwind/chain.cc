// C++ frames for the unwinder tests: a template, a virtual call and a lambda through
// std::function, with an exception thrown and caught on the way (so that the frames have
// personality routines and LSDAs).
#include <functional>
#include <stdexcept>

typedef void (*cb_t)(void);
static volatile int sink;

struct Base { virtual void run(cb_t cb) = 0; virtual ~Base() {} };
struct Derived : Base {
    __attribute__((noinline)) void run(cb_t cb) override {
        try {
            if (sink == 12345) throw std::runtime_error("never");
            std::function<void()> f = [cb]() { cb(); sink++; };
            f();
        } catch (const std::exception &) { sink--; }
    }
};

template <int N> __attribute__((noinline)) void nest(Base &b, cb_t cb) {
    nest<N - 1>(b, cb);
    sink += N;
}
template <> __attribute__((noinline)) void nest<0>(Base &b, cb_t cb) { b.run(cb); }

extern "C" void chain(int depth, cb_t cb) {
    (void)depth;
    Derived d;
    nest<3>(d, cb);
}
