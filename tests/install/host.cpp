// A C++ host of an installed libspn through spn.hpp: the default model, one image.
#include <spn.hpp>
#include <cstdio>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    spn::init();
    spn::Model model; // the bundled default, found beside the installed library
    auto images = model.generate(spn::SampleParams{});
    images.at(0).write_png(argv[1]);
    std::printf("generated %ux%u\n", images[0].width(), images[0].height());
    return 0;
}
