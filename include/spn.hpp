// spn.hpp: a header-only C++17 wrapper over the C ABI in spn.h (RAII handles, exceptions).
//
//   spn::Model model("model.spn");              // or spn::Model{} for the bundled default
//   spn::SampleParams p; p.count = 4; p.seed = 1;
//   for (auto& img : model.generate(p)) img.write_png("out-" + std::to_string(img.seed()) + ".png");
//
// Errors throw spn::Error, which carries the spn_status and the library's message. An exception thrown by a
// progress callback never crosses the library: it cancels the job and is rethrown, as it was, to the caller
// of generate/complete/upscale_*.
#ifndef SPN_HPP
#define SPN_HPP

#include "spn.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace spn {

class Error : public std::runtime_error {
  public:
    Error(spn_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    spn_status status() const noexcept { return status_; }

  private:
    spn_status status_;
};

inline void check(spn_status s) {
    if (s != SPN_OK) throw Error(s, std::string(spn_status_string(s)) + ": " + spn_last_error());
}

/// Throws unless the loaded library speaks the ABI this header was written for.
inline void init() { check(spn_init(SPN_ABI_VERSION)); }

/// An output image (RGB, or RGBA where the input was), owning its pixels.
class Image {
  public:
    Image(uint32_t w, uint32_t h, uint32_t channels, std::vector<uint8_t> px, uint64_t seed, double bits)
        : w_(w), h_(h), c_(channels), px_(std::move(px)), seed_(seed), bits_(bits) {}
    /// An RGB image (the constructor before RGBA results existed).
    Image(uint32_t w, uint32_t h, std::vector<uint8_t> px, uint64_t seed, double bits)
        : Image(w, h, 3, std::move(px), seed, bits) {}
    uint32_t width() const noexcept { return w_; }
    uint32_t height() const noexcept { return h_; }
    uint32_t channels() const noexcept { return c_; } // 3 (RGB) or 4 (RGBA)
    const std::vector<uint8_t> &pixels() const noexcept { return px_; } // rows of width*channels bytes
    uint64_t seed() const noexcept { return seed_; }
    double bits() const noexcept { return bits_; }
    spn_image_view view() const noexcept { return spn_image_view{w_, h_, c_, size_t(w_) * c_, px_.data()}; }
    void write_png(const std::string &path) const {
        spn_image im{w_, h_, c_, size_t(w_) * c_, const_cast<uint8_t *>(px_.data()), seed_, bits_};
        check(spn_image_write_png(&im, path.c_str()));
    }

  private:
    uint32_t w_, h_, c_;
    std::vector<uint8_t> px_;
    uint64_t seed_;
    double bits_;
};

/// Cancels a running call from any thread.
class Job {
  public:
    Job() {
        spn_job *j = nullptr;
        check(spn_job_new(&j));
        job_.reset(j);
    }
    void cancel() { check(spn_job_cancel(job_.get())); }
    spn_job *get() const noexcept { return job_.get(); }

  private:
    struct Free {
        void operator()(spn_job *j) const noexcept { spn_job_free(j); }
    };
    std::unique_ptr<spn_job, Free> job_;
};

struct SampleParams {
    uint32_t count = 1;
    uint64_t seed = 0;
    float temperature = 1.0f;
    uint32_t batch_size = 16;
    /// Called with (done, total); return false to cancel.
    std::function<bool(uint64_t, uint64_t)> progress;
    Job *job = nullptr;
    /// generate: the images' size; 0: the model's. Every call takes canvases of any size (spn.h, CANVASES).
    uint32_t width = 0;
    uint32_t height = 0;
    /// Pixels neighbouring windows share; -1: the library's measured default.
    int32_t overlap = -1;
    /// RGBA inputs give RGBA outputs; false: composited over white, RGB out.
    bool keep_alpha = true;
    /// Each sub-pixel's mean level under the model instead of a draw (deterministic; since ABI 5).
    bool mean = false;
    /// upscale_size: the factor; 0: the model's scale S (since ABI 6).
    uint32_t upscale_factor = 0;
    /// Independent draws averaged into each image; 0 or 1: one draw (since ABI 7; spn.h, `draws`).
    uint32_t draws = 0;
};

namespace detail {

/// Frees an array of images returned by a sampling call.
struct ImagesFree {
    uint32_t count;
    void operator()(spn_image *images) const noexcept { spn_images_free(images, count); }
};
using ImageArray = std::unique_ptr<spn_image, ImagesFree>;

/// The state of one sampling call, shared with its progress callback.
struct ProgressContext {
    const std::function<bool(uint64_t, uint64_t)> *progress;
    std::exception_ptr error; // what the callback threw, rethrown once the call has returned
};

// The progress callback handed to the C API. No exception may unwind through the library: one thrown by the
// user's callback is kept in the context and the job is cancelled (return 0); the callback is not called again.
extern "C" inline int spn_hpp_progress_trampoline(void *user_data, uint64_t done, uint64_t total) noexcept {
    ProgressContext &ctx = *static_cast<ProgressContext *>(user_data);
    if (ctx.error) return 0;
    try {
        return (*ctx.progress)(done, total) ? 1 : 0;
    } catch (...) {
        ctx.error = std::current_exception();
        return 0;
    }
}

} // namespace detail

class Model {
  public:
    /// Loads a bundle; an empty path loads the bundled default model.
    explicit Model(const std::string &path = "", spn_device device = SPN_DEVICE_AUTO) {
        spn_model_params p;
        spn_model_params_init(&p);
        p.device = device;
        spn_model *m = nullptr;
        check(spn_model_load(path.empty() ? nullptr : path.c_str(), &p, &m));
        model_.reset(m);
    }

    spn_model_info info() const {
        spn_model_info i{};
        i.struct_size = sizeof i;
        check(spn_model_get_info(model_.get(), &i));
        return i;
    }

    std::vector<Image> generate(const SampleParams &p) const {
        return run(p, [&](const spn_sample_params *cp, spn_image **out, uint32_t *n) {
            return spn_generate(model_.get(), cp, out, n);
        });
    }
    std::vector<Image> complete(const spn_image_view &image, const spn_image_view &mask, const SampleParams &p) const {
        return run(p, [&](const spn_sample_params *cp, spn_image **out, uint32_t *n) {
            return spn_complete(model_.get(), &image, &mask, cp, out, n);
        });
    }
    std::vector<Image> upscale_size(const spn_image_view &image, const SampleParams &p) const {
        return run(p, [&](const spn_sample_params *cp, spn_image **out, uint32_t *n) {
            return spn_upscale_size(model_.get(), &image, cp, out, n);
        });
    }
    std::vector<Image> upscale_depth(const spn_image_view &image, const SampleParams &p) const {
        return run(p, [&](const spn_sample_params *cp, spn_image **out, uint32_t *n) {
            return spn_upscale_depth(model_.get(), &image, cp, out, n);
        });
    }
    /// Total bits; `per_subpixel` (if given) is resized to width*height*3.
    double score(const spn_image_view &image, std::vector<float> *per_subpixel = nullptr) const {
        double total = 0;
        if (per_subpixel) per_subpixel->resize(size_t(image.width) * image.height * 3);
        check(spn_score(model_.get(), &image, &total, per_subpixel ? per_subpixel->data() : nullptr,
                        per_subpixel ? per_subpixel->size() : 0));
        return total;
    }

  private:
    struct Free {
        void operator()(spn_model *m) const noexcept { spn_model_free(m); }
    };
    std::unique_ptr<spn_model, Free> model_;

    template <class F> static std::vector<Image> run(const SampleParams &p, F call) {
        spn_sample_params cp;
        spn_sample_params_init(&cp);
        cp.count = p.count;
        cp.seed = p.seed;
        cp.temperature = p.temperature;
        cp.batch_size = p.batch_size;
        cp.job = p.job ? p.job->get() : nullptr;
        cp.width = p.width;
        cp.height = p.height;
        cp.overlap = p.overlap;
        cp.keep_alpha = p.keep_alpha ? 1 : 0;
        cp.pick = p.mean ? SPN_PICK_MEAN : SPN_PICK_SAMPLE;
        cp.upscale_factor = p.upscale_factor;
        cp.draws = p.draws;
        detail::ProgressContext ctx{&p.progress, nullptr};
        if (p.progress) {
            cp.progress = &detail::spn_hpp_progress_trampoline;
            cp.user_data = &ctx;
        }
        spn_image *out = nullptr;
        uint32_t n = 0;
        const spn_status status = call(&cp, &out, &n);
        // Owned before anything below can throw (on failure out stays NULL, which the deleter ignores).
        const detail::ImageArray owned(out, detail::ImagesFree{n});
        // The callback's own exception wins over the SPN_ERR_CANCELLED it caused.
        if (ctx.error) std::rethrow_exception(ctx.error);
        check(status);
        std::vector<Image> images;
        images.reserve(n);
        for (uint32_t i = 0; i < n; i++) {
            const spn_image &im = owned.get()[i];
            const size_t row = size_t(im.width) * im.channels;
            std::vector<uint8_t> px(row * im.height);
            for (uint32_t y = 0; y < im.height; y++)
                std::copy(im.data + y * im.stride, im.data + y * im.stride + row, px.begin() + y * row);
            images.emplace_back(im.width, im.height, im.channels, std::move(px), im.seed, im.bits);
        }
        return images;
    }
};

} // namespace spn

#endif // SPN_HPP
