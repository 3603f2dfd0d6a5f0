// spn.hpp and exceptions: a progress callback that throws must not unwind through libspn (the wrapper catches
// it, cancels the job and rethrows it to the caller), and the images a call returns are freed even when
// copying them out throws. Built together with hpp_alone.cpp (spn.hpp alone in a translation unit).
#include "spn.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <typeinfo>

bool spn_hpp_alone_ok(); // hpp_alone.cpp

// ---- Test hooks: make the wrapper's first allocation after spn_generate returns fail --------------------------

namespace {
thread_local bool fail_next_new = false;  // the next operator new on this thread throws std::bad_alloc
bool fail_after_generate = false;         // arm fail_next_new once spn_generate has returned images
spn_image *generated = nullptr;           // what that call returned
uint32_t generated_count = 0;
bool generated_freed = false;             // spn_images_free was called with exactly that array
} // namespace

void *operator new(std::size_t n) {
    if (fail_next_new) {
        fail_next_new = false;
        throw std::bad_alloc();
    }
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

template <class Fn> static Fn next_symbol(const char *name) {
    void *sym = dlsym(RTLD_NEXT, name);
    if (!sym) {
        std::fprintf(stderr, "dlsym(%s) failed\n", name);
        std::abort();
    }
    Fn fn;
    std::memcpy(&fn, &sym, sizeof fn);
    return fn;
}

// These definitions take the place of libspn's for the calls spn.hpp makes; they forward to the library.
extern "C" spn_status spn_generate(const spn_model *model, const spn_sample_params *params, spn_image **out_images,
                                   uint32_t *out_count) {
    using Fn = spn_status (*)(const spn_model *, const spn_sample_params *, spn_image **, uint32_t *);
    static const Fn real = next_symbol<Fn>("spn_generate");
    const spn_status s = real(model, params, out_images, out_count);
    if (s == SPN_OK && fail_after_generate) {
        fail_after_generate = false;
        generated = *out_images;
        generated_count = *out_count;
        fail_next_new = true;
    }
    return s;
}

extern "C" void spn_images_free(spn_image *images, uint32_t count) {
    using Fn = void (*)(spn_image *, uint32_t);
    static const Fn real = next_symbol<Fn>("spn_images_free");
    if (images && images == generated && count == generated_count) generated_freed = true;
    real(images, count);
}

// ---- Tests ----------------------------------------------------------------------------------------------------

struct NotAnException {
    int value;
};

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int passed = 0, failures = 0;
    auto expect = [&](bool ok, const char *what) {
        if (ok) {
            passed++;
        } else {
            std::fprintf(stderr, "FAIL: %s\n", what);
            failures++;
        }
    };
    expect(spn_hpp_alone_ok(), "spn.hpp alone in a translation unit");
    spn::init();
    spn::Model model(argv[1], SPN_DEVICE_CPU);

    // A callback that throws std::runtime_error("boom") on its 3rd call: that exception, and nothing else,
    // reaches the caller, and the callback is not called again.
    spn::SampleParams p;
    p.count = 2;
    p.seed = 3;
    int calls = 0;
    p.progress = [&](uint64_t, uint64_t) -> bool {
        if (++calls == 3) throw std::runtime_error("boom");
        return true;
    };
    try {
        model.generate(p);
        expect(false, "generate with a throwing callback throws");
    } catch (const spn::Error &e) {
        std::fprintf(stderr, "got spn::Error %d: %s\n", int(e.status()), e.what());
        expect(false, "the callback's exception, not spn::Error");
    } catch (const std::runtime_error &e) {
        expect(typeid(e) == typeid(std::runtime_error), "exactly std::runtime_error");
        expect(std::strcmp(e.what(), "boom") == 0, "its message is boom");
        expect(calls == 3, "the callback is not called after it threw");
    }

    // The library is usable afterwards.
    int calls2 = 0;
    p.progress = [&](uint64_t done, uint64_t total) { return ++calls2 > 0 && done <= total; };
    std::vector<spn::Image> imgs;
    try {
        imgs = model.generate(p);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "second generate: %s\n", e.what());
    }
    expect(imgs.size() == 2 && imgs[0].seed() == 3 && imgs[1].seed() == 4, "a second generate succeeds");
    expect(calls2 > 3, "its callback runs to the end");

    // Any type is carried through, from the other sampling calls as well.
    if (!imgs.empty()) {
        spn::SampleParams q;
        q.progress = [](uint64_t, uint64_t) -> bool { throw NotAnException{42}; };
        try {
            model.upscale_depth(imgs[0].view(), q);
            expect(false, "upscale_depth with a throwing callback throws");
        } catch (const NotAnException &e) {
            expect(e.value == 42, "a thrown non-exception type arrives intact");
        } catch (...) {
            expect(false, "the callback's own exception from upscale_depth");
        }
    }

    // Returning false still cancels with spn::Error(SPN_ERR_CANCELLED).
    spn::SampleParams r;
    r.progress = [](uint64_t, uint64_t) { return false; };
    try {
        model.generate(r);
        expect(false, "a callback that returns false cancels");
    } catch (const spn::Error &e) {
        expect(e.status() == SPN_ERR_CANCELLED, "cancelled status");
    }

    // The images a call returns are freed when copying them out throws std::bad_alloc.
    spn::SampleParams s;
    s.count = 2;
    fail_after_generate = true;
    try {
        model.generate(s);
        expect(false, "an allocation failure after spn_generate throws");
    } catch (const std::bad_alloc &) {
        expect(generated != nullptr && generated_count == 2, "spn_generate returned the images");
        expect(generated_freed, "spn_images_free was called on them");
    }
    fail_after_generate = fail_next_new = false;

    std::printf("progress_throw_test: %d passed, %d failed\n", passed, failures);
    return failures ? 1 : 0;
}
