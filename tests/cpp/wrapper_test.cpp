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
    // Canvases of any size (ABI 3): generate at a width and height, complete an RGBA sprite of its own size.
    spn::SampleParams wide;
    wide.width = 21;
    wide.height = 10;
    auto g = model.generate(wide);
    expect(g.size() == 1 && g[0].width() == 21 && g[0].height() == 10 && g[0].channels() == 3, "generate 21x10");
    std::vector<uint8_t> rgba(17 * 9 * 4), mask(17 * 9);
    for (size_t i = 0; i < mask.size(); i++) {
        for (size_t c = 0; c < 4; c++) rgba[i * 4 + c] = uint8_t(i * 3 + c * 60);
        mask[i] = (i % 17) < 8 ? 255 : 0;
    }
    spn_image_view iv{17, 9, 4, 17 * 4, rgba.data()}, mv{17, 9, 1, 17, mask.data()};
    auto c = model.complete(iv, mv, spn::SampleParams{});
    expect(c.size() == 1 && c[0].channels() == 4 && c[0].width() == 17, "RGBA completion of 17x9");
    bool kept = true;
    for (size_t i = 0; i < mask.size(); i++)
        if (mask[i] && !std::equal(&rgba[i * 4], &rgba[i * 4] + 4, &c[0].pixels()[i * 4])) kept = false;
    expect(kept, "known pixels and alpha kept exactly");
    auto u = model.upscale_size(c[0].view(), spn::SampleParams{});
    expect(u.size() == 1 && u[0].width() == 34 && u[0].height() == 18 && u[0].channels() == 4, "upscale 17x9");
    std::printf("%d failed\n", failures);
    return failures ? 1 : 0;
}
