/*
 * spn.h: the C ABI of libspn, Subscale Pixel Networks with Multidimensional Upscaling.
 *
 * Generate images, complete partially drawn ones, upscale their size or bit depth, and score them with a
 * model bundle (a .spn file) trained by the `spn` command-line tool.
 *
 * THREADING
 *   A loaded model (spn_model) is read-only and may be used by many threads at once: every job runs
 *   independently. spn_job_cancel may be called from any thread at any time. Error messages are kept per
 *   thread (spn_last_error). The log callback may be called from any thread that runs a job.
 *   On the CPU a sampling call also runs helper threads of its own for the time of the call (one per core,
 *   or $SPN_THREADS, each decoding its share of the batch); the progress callback is only ever called from
 *   the calling thread.
 *
 * ERRORS
 *   Every fallible call returns an spn_status; SPN_OK is 0. On failure, output parameters are left
 *   untouched and spn_last_error() returns a UTF-8 message for the calling thread. No call ever unwinds
 *   or aborts the host: Rust panics and libtorch errors become SPN_ERR_INTERNAL. Nothing is printed to the
 *   host's stdout or stderr: messages go to spn_last_error and the log callback.
 *
 * VERSIONING
 *   Call spn_abi_version() or spn_init(SPN_ABI_VERSION) before anything else: a library older than the
 *   header refuses with SPN_ERR_VERSION. Functions added after version 1 say since which version. Structs the caller allocates start with `struct_size`; fill it
 *   with the *_init functions. New fields are only ever appended, and no version of a struct has trailing
 *   padding (its size is where its last field ends), so a host built against an older header keeps working
 *   with a newer library: fields past its struct_size take their defaults. A struct_size that ends inside a
 *   field is refused (SPN_ERR_INVALID_ARGUMENT).
 *
 * MEMORY
 *   Images the library returns are freed with spn_images_free; handles with their *_free function. A freed
 *   handle is never valid again (handles are ids that are never reused), so passing one is an error.
 *   Input images are caller-owned and only read during the call.
 *
 * PIXELS
 *   8 bits per channel, rows top to bottom, `stride` bytes between row starts (>= width * channels); the
 *   view spans stride * (height - 1) + width * channels bytes, which must not overflow the address space.
 *   Input images: 1 (gray), 3 (RGB) or 4 (RGBA) channels, any size from 1x1 to 65535x65535 (and at most
 *   268 megapixels). The networks see colour composited over white (straight alpha); alpha is carried beside
 *   them (since ABI 3, with keep_alpha): outputs are RGBA (4 channels) where the input was RGBA, RGB otherwise.
 *   Known pixels keep their alpha and colour exactly; drawn pixels are opaque; spn_upscale_depth keeps alpha;
 *   spn_upscale_size scales it with Catmull-Rom cubic interpolation that is exact at the input's pixels.
 *
 * CANVASES
 *   Since ABI 3 every sampling call takes a canvas of any size. A canvas larger than the model is covered by
 *   model-size windows that overlap (spn_sample_params.overlap), visited in raster order; each is sampled
 *   with everything already fixed inside it clamped as known (the host's known pixels and what earlier
 *   windows drew), from its own random stream seeded by (seed, window), so results depend on neither
 *   batch_size nor threads. Windows with nothing to draw are skipped (spn_complete touches only the windows
 *   that meet the mask). A canvas smaller than the model is padded with white, known, and cropped after.
 *   Progress counts over all windows; spn_job_cancel works within and between windows. Memory: the canvas
 *   (a few copies of it: the input, the working canvas, the result) plus one batch of windows.
 *
 * DEVICES AND BACKENDS
 *   libspn samples and scores on the CPU with its own engine (plain Rust: it links no libtorch). CUDA runs in
 *   the libtorch backend, libspn_torch.so, a separate library that libspn loads at run time only when asked
 *   for CUDA (or for SPN_DEVICE_AUTO on a machine with an NVIDIA driver, to see whether a GPU exists): from
 *   $SPN_BACKEND if set, else from libspn's own folder, where `make install-cuda` puts it with the libtorch
 *   libraries it needs (in lib/spn). Without it SPN_DEVICE_AUTO uses the CPU, and SPN_DEVICE_CUDA fails with
 *   SPN_ERR_DEVICE saying what to install (or why the backend found could not be used). Both engines draw the
 *   same images from the same seeds.
 */
#ifndef SPN_H
#define SPN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes. Bumped only when a new call or struct field is added. */
#define SPN_ABI_VERSION 7

typedef enum spn_status {
    SPN_OK = 0,
    SPN_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad struct size, bad value, wrong image size */
    SPN_ERR_IO = 2,               /* a file could not be read or written */
    SPN_ERR_MODEL = 3,            /* the model file is missing, damaged or from a newer format */
    SPN_ERR_DEVICE = 4,           /* the requested device (CUDA) is not available */
    SPN_ERR_CANCELLED = 5,        /* the job was cancelled (spn_job_cancel or the progress callback) */
    SPN_ERR_VERSION = 6,          /* the caller needs a newer ABI than this library has */
    SPN_ERR_INTERNAL = 7,         /* a bug: a panic or an unexpected libtorch error */
    SPN_ERR_BUFFER_TOO_SMALL = 8  /* a caller buffer is smaller than needed */
} spn_status;

typedef enum spn_device {
    SPN_DEVICE_AUTO = 0,     /* CUDA when the libtorch backend is installed and sees a GPU, else the CPU */
    SPN_DEVICE_CPU = 1,      /* libspn's own CPU engine */
    SPN_DEVICE_CUDA = 2,     /* the libtorch backend on GPU cuda_index; SPN_ERR_DEVICE without it */
    SPN_DEVICE_TORCH_CPU = 3 /* since ABI 4: the libtorch backend on the CPU, the reference engine to check
                                the CPU engine against (same images from the same seeds); slow */
} spn_device;

typedef enum spn_log_level {
    SPN_LOG_ERROR = 1,
    SPN_LOG_WARN = 2,
    SPN_LOG_INFO = 3,
    SPN_LOG_DEBUG = 4
} spn_log_level;

/* Opaque handles. */
typedef struct spn_model spn_model; /* a loaded model, shared by any number of jobs and threads */
typedef struct spn_job spn_job;     /* a cancellation handle for one running call */

/* ---- Version and errors ------------------------------------------------------------------------- */

/* The ABI version of the library (compare with SPN_ABI_VERSION). Never fails. */
uint32_t spn_abi_version(void);

/* The library's version, e.g. "0.1.0". Static storage. */
const char *spn_version_string(void);

/* Declares the ABI version the caller was built against. SPN_ERR_VERSION if the library is older. */
spn_status spn_init(uint32_t abi_version);

/* The message of the last failed call on this thread ("" if none has failed); successful calls leave it
 * as it is. The pointer stays valid until the next failing call on this thread. */
const char *spn_last_error(void);

/* A short static name for a status ("SPN_OK", ...). */
const char *spn_status_string(spn_status status);

/* ---- Logging ------------------------------------------------------------------------------------ */

/* Messages from the library go to `callback` (NULL: no logging, the default). Process-wide. */
typedef void (*spn_log_fn)(void *user_data, spn_log_level level, const char *message);
void spn_set_log_callback(spn_log_fn callback, void *user_data);

/* ---- Models ------------------------------------------------------------------------------------- */

typedef struct spn_model_params {
    uint32_t struct_size; /* sizeof(spn_model_params) */
    spn_device device;    /* default SPN_DEVICE_AUTO */
    int32_t cuda_index;   /* default 0 */
} spn_model_params;

void spn_model_params_init(spn_model_params *params);

/* Loads a model bundle. `path` NULL loads the bundled default model ($SPN_MODEL overrides it).
 * `params` NULL uses the defaults. A path that is not a regular file (a FIFO, a device, a folder: refused
 * without waiting or reading), a file over 2 GiB, and a damaged bundle (weights that do not match its config,
 * sizes beyond the config limits, non-finite weights) are SPN_ERR_MODEL. */
spn_status spn_model_load(const char *path, const spn_model_params *params, spn_model **out_model);

/* Frees a model; NULL is ignored. Jobs still running on it must have finished. */
void spn_model_free(spn_model *model);

typedef struct spn_model_info {
    uint32_t struct_size; /* sizeof(spn_model_info), set by the caller */
    uint32_t width;       /* size of the images the model generates */
    uint32_t height;
    uint32_t scale;       /* subscale factor S: spn_upscale_size's default factor */
    uint32_t msb_bits;    /* bits kept by spn_upscale_depth; 0 for a single-stage model */
    uint32_t stages;
    uint64_t parameters;
} spn_model_info;

spn_status spn_model_get_info(const spn_model *model, spn_model_info *info);

/* ---- Jobs, progress, cancellation --------------------------------------------------------------- */

spn_status spn_job_new(spn_job **out_job);
/* Stops the call that uses this job within a few steps; safe from any thread, also before the call. */
spn_status spn_job_cancel(spn_job *job);
void spn_job_free(spn_job *job);

/* Called from the working thread as work progresses; return 0 to cancel, nonzero to go on. */
typedef int (*spn_progress_fn)(void *user_data, uint64_t done, uint64_t total);

/* ---- Images ------------------------------------------------------------------------------------- */

/* A caller-owned input image. Its size is compared with the size the call needs before any of its rows is
 * read (SPN_ERR_INVALID_ARGUMENT names both), and a stride that would wrap an address is refused. */
typedef struct spn_image_view {
    uint32_t width;
    uint32_t height;
    uint32_t channels; /* 1, 3 or 4 */
    size_t stride;     /* bytes between row starts */
    const uint8_t *data;
} spn_image_view;

/* A library-owned output image: RGB, or RGBA where the input was (since ABI 3; see PIXELS). */
typedef struct spn_image {
    uint32_t width;
    uint32_t height;
    uint32_t channels; /* 3, or 4 (since ABI 3, with keep_alpha) */
    size_t stride;
    uint8_t *data;
    uint64_t seed;     /* the seed that reproduces this image */
    double bits;       /* -log2 p(image) under the model */
} spn_image;

/* Frees an array returned by a sampling call; NULL is ignored. */
void spn_images_free(spn_image *images, uint32_t count);

/* Writes an image as PNG (a convenience for hosts without an image library). */
spn_status spn_image_write_png(const spn_image *image, const char *path);

/* ---- Sampling ----------------------------------------------------------------------------------- */

typedef struct spn_sample_params {
    uint32_t struct_size;     /* sizeof(spn_sample_params) */
    uint32_t count;           /* images to make, default 1; at most 2^20 and 4 GiB of images per call
                                 (all are returned at once: for more, call again with a later seed) */
    uint64_t seed;            /* image i gets seed + i; default 0; seeds never wrap (seed + count - 1 must
                                 fit in 64 bits, else SPN_ERR_INVALID_ARGUMENT) */
    float temperature;        /* in [1e-4, 1e4], default 1; lower is more conservative */
    uint32_t batch_size;      /* model-size windows sampled together (of one image or of several), >= 1,
                                 default 16; lowered to 1024, and so that one batch's values stay within
                                 1 GiB (8 bytes a sub-pixel): a call holds its output images, the canvases,
                                 plus the working memory of one such batch */
    spn_progress_fn progress; /* optional */
    void *user_data;          /* passed to progress */
    spn_job *job;             /* optional, for spn_job_cancel */
    /* Since ABI version 3. */
    uint32_t width;           /* spn_generate: the images' width; 0 (default): the model's. Any size (CANVASES) */
    uint32_t height;          /* spn_generate: the images' height; 0 (default): the model's */
    int32_t overlap;          /* pixels neighbouring windows share, rounded up to a multiple of the scale S and
                                 at most half the model's width; -1 (default): 3/8 of the model's width,
                                 measured to leave no visible seams (24 for 64x64 models) */
    uint32_t keep_alpha;      /* 1 (default): RGBA inputs give RGBA outputs; 0: inputs are composited over
                                 white and outputs are RGB. A host built against an older header, or passing
                                 NULL params, gets 0. */
    /* Since ABI version 5. */
    uint32_t pick;            /* how each sub-pixel is chosen: SPN_PICK_SAMPLE (0, default) draws it from the
                                 model's distribution at `temperature`; SPN_PICK_MEAN (1) takes that
                                 distribution's mean level: deterministic (the seed does not matter), and the
                                 sharpest upscaling as PSNR judges it (models/README.md) */
    /* Since ABI version 6 (before, `reserved`, which had to be 0). */
    uint32_t upscale_factor;  /* spn_upscale_size: each input pixel becomes pixel (F*y, F*x) of an image F times
                                 larger. 0 (default): F = the model's scale S (spn_model_info.scale), the input
                                 being slice 0 exactly. Any other F from 2 to 64 draws the rest as
                                 spn_complete does, every input pixel kept: 4 takes 64x64 to 256x256 with an
                                 S = 8 model. Ignored by the other calls. */
    /* Since ABI version 7. */
    uint32_t draws;           /* independent draws averaged into each image, up to 64; 0 or 1 (default): one
                                 draw. With several (SPN_PICK_SAMPLE only), each pixel is their rounded mean,
                                 an estimate of the posterior mean image: the upscale with the least expected
                                 squared error, sharper in PSNR than SPN_PICK_MEAN (models/README.md,
                                 "Averaged draws"). Known pixels stay exact; costs `draws` times the work,
                                 sampled together in batches, and memory for that many canvases. */
    uint32_t reserved;        /* must be 0 */
} spn_sample_params;

enum { SPN_PICK_SAMPLE = 0, SPN_PICK_MEAN = 1 };

void spn_sample_params_init(spn_sample_params *params);

/* New images of params->width x params->height (the model's size by default). On success *out_images holds
 * *out_count images (free with spn_images_free). */
spn_status spn_generate(const spn_model *model, const spn_sample_params *params, spn_image **out_images,
                        uint32_t *out_count);

/* Completes `image` (any size) where `mask` (the image's size) is dark. THE MASK RULE (the same in the `spn`
 * tool and the GIMP plug-in): a mask pixel marks its image pixel as known where it is opaque (alpha >= 128;
 * 1- and 3-channel masks are opaque) and light (the Rec. 709 luma of its colour composited over white is
 * above 127). Dark or transparent mask pixels are drawn. Known pixels are returned unchanged. */
spn_status spn_complete(const spn_model *model, const spn_image_view *image, const spn_image_view *mask,
                        const spn_sample_params *params, spn_image **out_images, uint32_t *out_count);

/* Since ABI version 2. THE MASK RULE of spn_complete applied to `mask` (any size): `known` receives
 * width*height bytes, row-major, 1 where the pixel is known and 0 where the model draws; `capacity` is its
 * length (SPN_ERR_BUFFER_TOO_SMALL if too small). For hosts that write back only the drawn pixels. */
spn_status spn_mask_known(const spn_image_view *mask, uint8_t *known, size_t capacity);

/* `image` (any w x h) becomes slice 0 of an S*w x S*h image: pixel (x, y) lands on (S*x, S*y), kept exactly. */
spn_status spn_upscale_size(const spn_model *model, const spn_image_view *image, const spn_sample_params *params,
                            spn_image **out_images, uint32_t *out_count);

/* Keeps the top msb_bits of every value of `image` (any size) and samples the low bits. */
spn_status spn_upscale_depth(const spn_model *model, const spn_image_view *image, const spn_sample_params *params,
                             spn_image **out_images, uint32_t *out_count);

/* ---- Scoring ------------------------------------------------------------------------------------ */

/* Bits of `image` (the model's size) under the model. `per_subpixel` (optional, may be NULL) receives
 * width*height*3 values in row-major H x W x C order; `capacity` is its length in floats
 * (SPN_ERR_BUFFER_TOO_SMALL if too small). */
spn_status spn_score(const spn_model *model, const spn_image_view *image, double *out_total_bits,
                     float *per_subpixel, size_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* SPN_H */
