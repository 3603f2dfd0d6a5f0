// spn.hpp as the only include of a translation unit: it must bring in everything it uses. Linked into
// progress_throw_test (built with -Wall -Wextra -Werror -std=c++17), which calls the function below.
#include "spn.hpp"

// Touches the wrapper's types without loading a model: true when the header and the library agree.
bool spn_hpp_alone_ok() {
    spn::SampleParams p;
    p.progress = [](uint64_t done, uint64_t total) { return done <= total; };
    std::vector<spn::Image> images;
    images.emplace_back(1, 1, std::vector<uint8_t>(3, 255), 7, 1.5);
    const spn_image_view v = images[0].view();
    const spn::Error e(SPN_ERR_CANCELLED, std::string("x"));
    return spn_abi_version() == SPN_ABI_VERSION && p.progress(1, 2) && v.stride == 3 && images[0].seed() == 7 &&
           e.status() == SPN_ERR_CANCELLED;
}
