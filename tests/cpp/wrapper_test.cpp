// The C++ wrapper end to end; also checks that it survives double inclusion.
#include "spn.hpp"
#include "spn.hpp"

#include <cstdio>
#include <thread>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int failures = 0;
    auto expect = [&](bool ok, const char *what) {
        if (!ok) {
            std::fprintf(stderr, "FAIL: %s\n", what);
            failures++;
        }
    };
    spn::init();
    spn::Model model(argv[1], SPN_DEVICE_CPU);
    expect(model.info().width == 8, "info");
    spn::SampleParams p;
    p.count = 2;
    p.seed = 9;
    int calls = 0;
    p.progress = [&](uint64_t, uint64_t) { return ++calls > 0; };
    auto imgs = model.generate(p);
    expect(imgs.size() == 2 && imgs[1].seed() == 10 && calls > 0, "generate");
    double bits = model.score(imgs[0].view());
    expect(bits > 0, "score");
    auto up = model.upscale_depth(imgs[0].view(), p);
    expect(up.size() == 2, "upscale depth");
    try {
        spn::Model bad("/nonexistent.spn");
        expect(false, "missing model throws");
    } catch (const spn::Error &e) {
        expect(e.status() == SPN_ERR_MODEL, "status of a missing model");
    }
    spn::Job job;
    spn::SampleParams slow;
    slow.count = 500;
    slow.batch_size = 1;
    slow.job = &job;
    std::thread canceller([&] { job.cancel(); });
    try {
        model.generate(slow);
        canceller.join();
        expect(false, "cancelled job throws");
    } catch (const spn::Error &e) {
        canceller.join();
        expect(e.status() == SPN_ERR_CANCELLED, "cancel status");
    }
    std::printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
