// A C++ host that loads libspn at run time with dlopen, checks its ABI version, generates a batch of
// assets and writes them as PNG. What a plug-in author would copy.
//
//   host LIBSPN.so MODEL.spn OUT_DIR [COUNT] [SEED]      (MODEL "" = the bundled default)
#include "spn.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

template <class F> static F sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        std::fprintf(stderr, "libspn lacks %s: %s\n", name, dlerror());
        std::exit(1);
    }
    return reinterpret_cast<F>(p);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s LIBSPN MODEL OUT_DIR [COUNT] [SEED]\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
        return 1;
    }
    // Ask for the ABI before anything else.
    auto abi_version = sym<uint32_t (*)(void)>(lib, "spn_abi_version");
    auto init = sym<spn_status (*)(uint32_t)>(lib, "spn_init");
    auto last_error = sym<const char *(*)(void)>(lib, "spn_last_error");
    if (abi_version() < SPN_ABI_VERSION || init(SPN_ABI_VERSION) != SPN_OK) {
        std::fprintf(stderr, "libspn ABI %u is older than this host's %d: %s\n", abi_version(), SPN_ABI_VERSION,
                     last_error());
        return 1;
    }
    auto model_load = sym<decltype(&spn_model_load)>(lib, "spn_model_load");
    auto model_free = sym<decltype(&spn_model_free)>(lib, "spn_model_free");
    auto params_init = sym<decltype(&spn_sample_params_init)>(lib, "spn_sample_params_init");
    auto generate = sym<decltype(&spn_generate)>(lib, "spn_generate");
    auto write_png = sym<decltype(&spn_image_write_png)>(lib, "spn_image_write_png");
    auto images_free = sym<decltype(&spn_images_free)>(lib, "spn_images_free");

    spn_model *model = nullptr;
    const char *path = argv[2][0] ? argv[2] : nullptr;
    if (model_load(path, nullptr, &model) != SPN_OK) {
        std::fprintf(stderr, "cannot load the model: %s\n", last_error());
        return 1;
    }
    spn_sample_params p;
    params_init(&p);
    p.count = argc > 4 ? std::atoi(argv[4]) : 4;
    p.seed = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 0;
    p.progress = [](void *, uint64_t done, uint64_t total) -> int {
        std::fprintf(stderr, "\r%3d%%", int(100 * done / (total ? total : 1)));
        return 1;
    };
    spn_image *images = nullptr;
    uint32_t n = 0;
    if (generate(model, &p, &images, &n) != SPN_OK) {
        std::fprintf(stderr, "generation failed: %s\n", last_error());
        model_free(model);
        return 1;
    }
    std::fprintf(stderr, "\n");
    for (uint32_t i = 0; i < n; i++) {
        std::string out = std::string(argv[3]) + "/asset-" + std::to_string(images[i].seed) + ".png";
        if (write_png(&images[i], out.c_str()) != SPN_OK) {
            std::fprintf(stderr, "cannot write %s: %s\n", out.c_str(), last_error());
            return 1;
        }
        std::printf("%s %ux%u %.1f bits\n", out.c_str(), images[i].width, images[i].height, images[i].bits);
    }
    images_free(images, n);
    model_free(model);
    dlclose(lib);
    return 0;
}
