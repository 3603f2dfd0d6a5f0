/* End-to-end and bad-input tests of libspn through its C ABI. Usage: abi_test MODEL.spn */
#define _DEFAULT_SOURCE
#include "spn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static const char *model_path;
static spn_model *model;
static spn_model_info info;

static void test_versions(void) {
    CHECK(spn_abi_version() == SPN_ABI_VERSION, "abi %u", spn_abi_version());
    CHECK(spn_init(SPN_ABI_VERSION) == SPN_OK, "init");
    CHECK(spn_init(SPN_ABI_VERSION + 1) == SPN_ERR_VERSION, "newer version refused");
    CHECK(strstr(spn_last_error(), "ABI version") != NULL, "message: %s", spn_last_error());
    CHECK(strlen(spn_version_string()) > 0, "version string");
    CHECK(strcmp(spn_status_string(SPN_ERR_CANCELLED), "SPN_ERR_CANCELLED") == 0, "status string");
}

static int log_lines = 0;
static void on_log(void *user, spn_log_level level, const char *msg) {
    (void)user;
    (void)level;
    (void)msg;
    __atomic_add_fetch(&log_lines, 1, __ATOMIC_SEQ_CST);
}

static void test_load(void) {
    spn_model_params mp;
    spn_model_params_init(&mp);
    mp.device = SPN_DEVICE_CPU;
    CHECK(spn_model_load(model_path, &mp, &model) == SPN_OK, "load");
    info.struct_size = sizeof info;
    CHECK(spn_model_get_info(model, &info) == SPN_OK, "info");
    CHECK(info.width == 8 && info.height == 8 && info.scale == 2 && info.msb_bits == 3 && info.stages == 3,
          "info %ux%u S=%u b=%u", info.width, info.height, info.scale, info.msb_bits);
    CHECK(info.parameters > 0, "parameters");

    spn_model *m = NULL;
    CHECK(spn_model_load("/nonexistent/model.spn", NULL, &m) == SPN_ERR_MODEL && m == NULL, "missing file");
    CHECK(spn_model_load(model_path, NULL, NULL) == SPN_ERR_INVALID_ARGUMENT, "null out");
    /* Wrong struct size. */
    spn_model_params bad;
    spn_model_params_init(&bad);
    bad.struct_size = 2;
    CHECK(spn_model_load(model_path, &bad, &m) == SPN_ERR_INVALID_ARGUMENT, "bad struct size");
    /* CUDA where there is none is a clear device error (skipped on a machine with a GPU). */
    spn_model_params cuda;
    spn_model_params_init(&cuda);
    cuda.device = SPN_DEVICE_CUDA;
    cuda.cuda_index = 64;
    CHECK(spn_model_load(model_path, &cuda, &m) == SPN_ERR_DEVICE, "cuda device 64");
    CHECK(strstr(spn_last_error(), "CUDA") != NULL, "%s", spn_last_error());
    /* Truncated and garbage files. */
    FILE *f = fopen(model_path, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *trunc = "abi_test_truncated.spn";
    f = fopen(trunc, "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    CHECK(spn_model_load(trunc, NULL, &m) == SPN_ERR_MODEL, "truncated");
    f = fopen(trunc, "wb");
    fputs("garbage garbage garbage garbage", f);
    fclose(f);
    CHECK(spn_model_load(trunc, NULL, &m) == SPN_ERR_MODEL, "garbage");
    CHECK(strlen(spn_last_error()) > 0, "message");
    remove(trunc);
    /* Paths that are not bundle files are refused at once: a FIFO with no writer (opening it would wait for
       one), a device (read until memory runs out), a folder. The alarm ends a run that hangs as a failure. */
    const char *fifo = "abi_test_fifo.spn";
    remove(fifo);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    alarm(60);
    const char *not_files[] = {fifo, "/dev/zero", "/dev/urandom", "."};
    for (size_t i = 0; i < sizeof not_files / sizeof *not_files; i++) {
        m = NULL;
        CHECK(spn_model_load(not_files[i], NULL, &m) == SPN_ERR_MODEL && m == NULL, "%s", not_files[i]);
        CHECK(strstr(spn_last_error(), "not a regular file") != NULL, "%s: %s", not_files[i], spn_last_error());
    }
    alarm(0);
    remove(fifo);
}

static int progress_calls = 0;
static int on_progress(void *user, uint64_t done, uint64_t total) {
    (void)user;
    CHECK(done <= total, "progress %llu/%llu", (unsigned long long)done, (unsigned long long)total);
    progress_calls++;
    return 1;
}

static void test_generate(void) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.count = 3;
    p.seed = 42;
    p.progress = on_progress;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    CHECK(spn_generate(model, &p, &imgs, &n) == SPN_OK, "generate");
    CHECK(n == 3 && imgs != NULL, "count %u", n);
    CHECK(progress_calls > 0, "progress called");
    for (uint32_t i = 0; i < n; i++) {
        CHECK(imgs[i].width == 8 && imgs[i].height == 8 && imgs[i].channels == 3 && imgs[i].stride == 24, "dims");
        CHECK(imgs[i].seed == 42 + i, "seed %llu", (unsigned long long)imgs[i].seed);
        CHECK(imgs[i].bits > 0, "bits %f", imgs[i].bits);
    }
    CHECK(spn_image_write_png(&imgs[0], "abi_test_out.png") == SPN_OK, "write png");
    remove("abi_test_out.png");
    /* Score the generated image: its bits match what generate reported. */
    spn_image_view v = {imgs[1].width, imgs[1].height, 3, imgs[1].stride, imgs[1].data};
    double total = 0;
    float per[8 * 8 * 3];
    CHECK(spn_score(model, &v, &total, per, 8 * 8 * 3) == SPN_OK, "score");
    double sum = 0;
    for (int i = 0; i < 8 * 8 * 3; i++) sum += per[i];
    CHECK(total > 0 && (sum - total) < 1e-3 * total && (total - sum) < 1e-3 * total, "sum %f total %f", sum, total);
    CHECK((imgs[1].bits - total) < 1e-3 * total && (total - imgs[1].bits) < 1e-3 * total, "bits %f vs %f",
          imgs[1].bits, total);
    CHECK(spn_score(model, &v, &total, per, 10) == SPN_ERR_BUFFER_TOO_SMALL, "small buffer");
    CHECK(spn_score(model, &v, &total, NULL, 0) == SPN_OK, "score without per-pixel");

    /* Same seed, one at a time, gives the same bytes. */
    spn_sample_params one;
    spn_sample_params_init(&one);
    one.seed = 43;
    one.batch_size = 1;
    spn_image *single = NULL;
    uint32_t m = 0;
    CHECK(spn_generate(model, &one, &single, &m) == SPN_OK && m == 1, "single");
    CHECK(memcmp(single[0].data, imgs[1].data, 8 * 8 * 3) == 0, "seed 43 reproduces across batches");
    spn_images_free(single, m);

    /* Complete: left half known. */
    uint8_t mask[8 * 8];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) mask[y * 8 + x] = x < 4 ? 255 : 0;
    spn_image_view mv = {8, 8, 1, 8, mask};
    spn_image *c = NULL;
    CHECK(spn_complete(model, &v, &mv, &one, &c, &m) == SPN_OK && m == 1, "complete");
    int kept = 1;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 4; x++)
            for (int ch = 0; ch < 3; ch++)
                if (c[0].data[y * 24 + x * 3 + ch] != imgs[1].data[y * 24 + x * 3 + ch]) kept = 0;
    CHECK(kept, "completion keeps known pixels");
    spn_images_free(c, m);
    /* A transparent mask pixel is unknown whatever its colour: an all-transparent white RGBA mask completes
     * exactly like an all-black gray one. */
    uint8_t tmask[8 * 8 * 4], black[8 * 8] = {0};
    for (int i = 0; i < 64; i++) {
        tmask[4 * i] = tmask[4 * i + 1] = tmask[4 * i + 2] = 255;
        tmask[4 * i + 3] = 0;
    }
    spn_image_view tmv = {8, 8, 4, 32, tmask}, bmv = {8, 8, 1, 8, black};
    spn_image *c1 = NULL, *c2 = NULL;
    uint32_t m1 = 0, m2 = 0;
    CHECK(spn_complete(model, &v, &tmv, &one, &c1, &m1) == SPN_OK && spn_complete(model, &v, &bmv, &one, &c2, &m2) == SPN_OK,
          "complete with an RGBA mask");
    CHECK(memcmp(c1[0].data, c2[0].data, 8 * 8 * 3) == 0, "transparent mask pixels are unknown");
    spn_images_free(c1, m1);
    spn_images_free(c2, m2);
    /* Depth: top 3 bits kept. RGBA input with a wide stride. */
    uint8_t rgba[8 * 40];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            for (int ch = 0; ch < 3; ch++) rgba[y * 40 + x * 4 + ch] = imgs[2].data[y * 24 + x * 3 + ch];
            rgba[y * 40 + x * 4 + 3] = 255;
        }
    spn_image_view rv = {8, 8, 4, 40, rgba};
    CHECK(spn_upscale_depth(model, &rv, &one, &c, &m) == SPN_OK, "upscale depth");
    CHECK(c[0].channels == 4 && c[0].stride == 32, "RGBA in, RGBA out: %u channels", c[0].channels);
    int top = 1;
    for (int i = 0; i < 8 * 8; i++) {
        for (int ch = 0; ch < 3; ch++)
            if ((c[0].data[i * 4 + ch] >> 5) != (imgs[2].data[i * 3 + ch] >> 5)) top = 0;
        if (c[0].data[i * 4 + 3] != 255) top = 0;
    }
    CHECK(top, "depth upscaling keeps the top bits and alpha");
    spn_images_free(c, m);
    /* Size: a 4x4 image is slice 0 of the output. */
    uint8_t small[4 * 4 * 3];
    for (int i = 0; i < 48; i++) small[i] = (uint8_t)(i * 5);
    spn_image_view sv = {4, 4, 3, 12, small};
    CHECK(spn_upscale_size(model, &sv, &one, &c, &m) == SPN_OK, "upscale size");
    int slice0 = 1;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int ch = 0; ch < 3; ch++)
                if (c[0].data[(2 * y) * 24 + (2 * x) * 3 + ch] != small[y * 12 + x * 3 + ch]) slice0 = 0;
    CHECK(slice0, "size upscaling keeps slice 0");
    spn_images_free(c, m);
    spn_images_free(imgs, n);
}

static void test_bad_input(void) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    spn_image *imgs = (spn_image *)0x1;
    uint32_t n = 77;
    /* Null handles and pointers: outputs untouched. */
    CHECK(spn_generate(NULL, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "null model");
    CHECK(imgs == (spn_image *)0x1 && n == 77, "outputs untouched");
    CHECK(spn_generate(model, &p, NULL, &n) == SPN_ERR_INVALID_ARGUMENT, "null out");
    CHECK(spn_generate(model, &p, &imgs, NULL) == SPN_ERR_INVALID_ARGUMENT, "null count");
    CHECK(spn_model_get_info(NULL, &info) == SPN_ERR_INVALID_ARGUMENT, "null info model");
    CHECK(spn_model_get_info(model, NULL) == SPN_ERR_INVALID_ARGUMENT, "null info");
    /* A pointer that is not a model. */
    int dummy = 0;
    CHECK(spn_generate((spn_model *)&dummy, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "foreign handle");
    /* Wrong struct size, zero and huge counts, bad temperature. */
    spn_sample_params q = p;
    q.struct_size = 0;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "struct size 0");
    q = p;
    q.count = 0;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "count 0");
    q.count = 0xFFFFFFFFu;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "huge count");
    q = p;
    q.temperature = 0;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "temperature 0");
    CHECK(strstr(spn_last_error(), "temperature") != NULL, "%s", spn_last_error());
    /* Images: null data, zero and huge sizes, wrong size, short stride, bad channels, mask mismatch. */
    uint8_t px[64 * 3] = {0};
    spn_image_view v = {8, 8, 3, 24, NULL};
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "null data");
    v.data = px;
    v.width = 0;
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "zero width");
    v.width = 0x7FFFFFFF;
    v.height = 0x7FFFFFFF;
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "huge");
    v.width = 70000;
    v.height = 1;
    v.stride = 70000 * 3;
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "side over 65535");
    CHECK(strstr(spn_last_error(), "70000x1") != NULL, "names the size: %s", spn_last_error());
    q = p;
    q.width = 70000;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "generate wider than 65535");
    CHECK(strstr(spn_last_error(), "70000x8") != NULL, "names the size: %s", spn_last_error());
    q.width = q.height = 60000;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "canvas too large to hold");
    CHECK(strstr(spn_last_error(), "60000x60000") != NULL, "names the size: %s", spn_last_error());
    q = p;
    q.overlap = 5;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "overlap over half the window");
    q.overlap = -2;
    CHECK(spn_generate(model, &q, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "negative overlap");
    v.width = 8;
    v.height = 8;
    v.height = 8;
    v.stride = 10;
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "short stride");
    v.stride = 24;
    v.channels = 2;
    CHECK(spn_upscale_depth(model, &v, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "2 channels");
    v.channels = 3;
    uint8_t mpx[16] = {0};
    spn_image_view mv = {4, 4, 1, 4, mpx};
    CHECK(spn_complete(model, &v, &mv, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "mask size");
    CHECK(strstr(spn_last_error(), "mask is 4x4 but the image is 8x8") != NULL, "%s", spn_last_error());
    CHECK(spn_complete(model, &v, NULL, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "null mask");
    double bits;
    CHECK(spn_score(model, &v, NULL, NULL, 0) == SPN_ERR_INVALID_ARGUMENT, "null bits");
    CHECK(spn_score(model, NULL, &bits, NULL, 0) == SPN_ERR_INVALID_ARGUMENT, "null image");
    CHECK(imgs == (spn_image *)0x1 && n == 77, "outputs untouched after errors");
    /* Freeing NULL is fine; cancelling NULL is an error, not a crash. */
    spn_model_free(NULL);
    spn_job_free(NULL);
    spn_images_free(NULL, 3);
    CHECK(spn_job_cancel(NULL) == SPN_ERR_INVALID_ARGUMENT, "cancel null");
}

static void test_freed_handles(void) {
    spn_model *m = NULL;
    CHECK(spn_model_load(model_path, NULL, &m) == SPN_OK, "load 2");
    spn_model_free(m);
    spn_sample_params p;
    spn_sample_params_init(&p);
    spn_image *imgs;
    uint32_t n;
    CHECK(spn_generate(m, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "freed model detected");
    CHECK(strstr(spn_last_error(), "freed") != NULL, "%s", spn_last_error());
    spn_model_free(m); /* double free is detected and ignored */
    spn_job *j;
    CHECK(spn_job_new(&j) == SPN_OK, "job");
    spn_job_free(j);
    CHECK(spn_job_cancel(j) == SPN_ERR_INVALID_ARGUMENT, "freed job detected");
    p.job = j;
    CHECK(spn_generate(model, &p, &imgs, &n) == SPN_ERR_INVALID_ARGUMENT, "freed job in params");
}

static void test_cancel_before(void) {
    spn_job *j;
    spn_job_new(&j);
    CHECK(spn_job_cancel(j) == SPN_OK, "cancel");
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.job = j;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    CHECK(spn_generate(model, &p, &imgs, &n) == SPN_ERR_CANCELLED, "cancelled before the run");
    CHECK(imgs == NULL && n == 0, "no output");
    spn_job_free(j);
}

static int cancel_from_callback(void *user, uint64_t done, uint64_t total) {
    (void)user;
    (void)total;
    return done < 3;
}

/* ---- Threads ---- */
typedef struct {
    uint64_t seed;
    spn_job *job;
    spn_status status;
    uint8_t pixels[8 * 8 * 3];
    volatile int started;
} worker;

static int mark_started(void *user, uint64_t done, uint64_t total) {
    (void)done;
    (void)total;
    ((worker *)user)->started = 1;
    return 1;
}

static void *run_worker(void *arg) {
    worker *w = (worker *)arg;
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.seed = w->seed;
    p.count = w->job ? 200 : 1;
    p.batch_size = 1;
    p.job = w->job;
    p.progress = mark_started;
    p.user_data = w;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    w->status = spn_generate(model, &p, &imgs, &n);
    if (w->status == SPN_OK) memcpy(w->pixels, imgs[0].data, sizeof w->pixels);
    spn_images_free(imgs, n);
    return NULL;
}

static void test_threads(void) {
    worker ws[8];
    pthread_t ts[8];
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < 8; i++) {
        ws[i].seed = 1000 + i;
        pthread_create(&ts[i], NULL, run_worker, &ws[i]);
    }
    for (int i = 0; i < 8; i++) pthread_join(ts[i], NULL);
    for (int i = 0; i < 8; i++) {
        worker one;
        memset(&one, 0, sizeof one);
        one.seed = 1000 + i;
        run_worker(&one);
        CHECK(ws[i].status == SPN_OK && one.status == SPN_OK, "thread %d", i);
        CHECK(memcmp(ws[i].pixels, one.pixels, sizeof one.pixels) == 0, "thread %d matches one thread", i);
    }
    /* Cancel one job from this thread while another runs beside it: only the target stops. */
    worker a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.seed = 1;
    b.seed = 2;
    spn_job_new(&a.job);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run_worker, &a);
    pthread_create(&tb, NULL, run_worker, &b);
    while (!a.started) usleep(1000);
    CHECK(spn_job_cancel(a.job) == SPN_OK, "cancel during the run");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.status == SPN_ERR_CANCELLED, "target cancelled: %s", spn_status_string(a.status));
    CHECK(b.status == SPN_OK, "the other job finished");
    spn_job_free(a.job);
    /* The progress callback can cancel too. */
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.progress = cancel_from_callback;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    CHECK(spn_generate(model, &p, &imgs, &n) == SPN_ERR_CANCELLED, "cancel from callback");
}

/* ---- Canvases of any size (ABI 3) ---- */
static uint64_t last_done, last_total;
static int windows_progress(void *user, uint64_t done, uint64_t total) {
    (void)user;
    CHECK(done >= last_done && done <= total, "progress %llu/%llu", (unsigned long long)done,
          (unsigned long long)total);
    last_done = done;
    last_total = total;
    return 1;
}
static int cancel_at_once(void *user, uint64_t done, uint64_t total) {
    (void)user;
    (void)done;
    (void)total;
    return 0;
}

static void test_canvas(void) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    spn_image *c = NULL;
    uint32_t m = 0;
    /* Generate: any width and height. */
    p.width = 20;
    p.height = 13;
    CHECK(spn_generate(model, &p, &c, &m) == SPN_OK && m == 1, "generate 20x13");
    CHECK(c[0].width == 20 && c[0].height == 13 && c[0].channels == 3, "%ux%u", c[0].width, c[0].height);
    spn_images_free(c, m);
    p.width = p.height = 0;
    /* Complete a 13x11 RGBA sprite: known pixels come back exactly, alpha included; drawn ones are opaque. */
    uint8_t rgba[13 * 11 * 4], mask[13 * 11];
    for (int i = 0; i < 13 * 11; i++) {
        for (int ch = 0; ch < 4; ch++) rgba[i * 4 + ch] = (uint8_t)(i * 7 + ch * 50);
        mask[i] = (i % 13 < 6) ? 255 : 0;
    }
    spn_image_view iv = {13, 11, 4, 13 * 4, rgba}, mv = {13, 11, 1, 13, mask};
    last_done = last_total = 0;
    p.progress = windows_progress;
    CHECK(spn_complete(model, &iv, &mv, &p, &c, &m) == SPN_OK, "complete 13x11");
    CHECK(last_done == last_total && last_total > 0, "progress ends at its total over all windows");
    CHECK(c[0].width == 13 && c[0].height == 11 && c[0].channels == 4, "RGBA out");
    p.progress = NULL;
    int kept = 1, opaque = 1;
    for (int i = 0; i < 13 * 11; i++) {
        if (mask[i] && memcmp(&c[0].data[i * 4], &rgba[i * 4], 4) != 0) kept = 0;
        if (!mask[i] && c[0].data[i * 4 + 3] != 255) opaque = 0;
    }
    CHECK(kept, "known pixels and their alpha come back exactly");
    CHECK(opaque, "drawn pixels are opaque");
    spn_images_free(c, m);
    /* keep_alpha 0: composited over white, RGB out. */
    p.keep_alpha = 0;
    CHECK(spn_complete(model, &iv, &mv, &p, &c, &m) == SPN_OK && c[0].channels == 3, "keep_alpha 0 gives RGB");
    spn_images_free(c, m);
    p.keep_alpha = 1;
    /* Upscale size: a 5x3 image gives 10x6 (S = 2) with its pixels at slice 0. */
    uint8_t small[5 * 3 * 3];
    for (int i = 0; i < 45; i++) small[i] = (uint8_t)(i * 11);
    spn_image_view sv = {5, 3, 3, 15, small};
    CHECK(spn_upscale_size(model, &sv, &p, &c, &m) == SPN_OK, "upscale size 5x3");
    CHECK(c[0].width == 10 && c[0].height == 6, "%ux%u", c[0].width, c[0].height);
    int slice0 = 1;
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 5; x++)
            if (memcmp(&c[0].data[(2 * y) * c[0].stride + 2 * x * 3], &small[y * 15 + x * 3], 3) != 0) slice0 = 0;
    CHECK(slice0, "slice 0 kept");
    spn_images_free(c, m);
    /* The result does not depend on batch_size, which changes how windows are batched. */
    uint8_t big[30 * 21 * 3];
    for (int i = 0; i < (int)sizeof big; i++) big[i] = (uint8_t)(i * 3 + (i / 90) * 5);
    spn_image_view bv = {30, 21, 3, 90, big};
    spn_image *a = NULL, *b = NULL;
    uint32_t na = 0, nb = 0;
    p.batch_size = 1;
    CHECK(spn_upscale_depth(model, &bv, &p, &a, &na) == SPN_OK, "depth batch 1");
    p.batch_size = 64;
    CHECK(spn_upscale_depth(model, &bv, &p, &b, &nb) == SPN_OK, "depth batch 64");
    CHECK(a && b && memcmp(a[0].data, b[0].data, sizeof big) == 0, "same pixels whatever the batch size");
    spn_images_free(a, na);
    spn_images_free(b, nb);
    /* Cancelling from the progress callback stops a many-window job. */
    p.progress = cancel_at_once;
    CHECK(spn_upscale_depth(model, &bv, &p, &c, &m) == SPN_ERR_CANCELLED, "cancel within windows");
}

/* ---- The mean pick (ABI 5) ---- */
static void test_pick(void) {
    uint8_t rgb[8 * 8 * 3];
    for (int i = 0; i < (int)sizeof rgb; i++) rgb[i] = (uint8_t)(i * 29);
    spn_image_view v = {8, 8, 3, 24, rgb};
    spn_sample_params p;
    spn_sample_params_init(&p);
    CHECK(p.pick == SPN_PICK_SAMPLE && p.upscale_factor == 0 && p.draws == 0, "defaults");
    CHECK(sizeof(spn_sample_params) == 80, "size %zu", sizeof(spn_sample_params));
    p.pick = SPN_PICK_MEAN;
    spn_image *a = NULL, *b = NULL;
    uint32_t na = 0, nb = 0;
    p.seed = 1;
    CHECK(spn_upscale_depth(model, &v, &p, &a, &na) == SPN_OK, "mean, seed 1");
    p.seed = 2;
    CHECK(spn_upscale_depth(model, &v, &p, &b, &nb) == SPN_OK, "mean, seed 2");
    CHECK(a && b && memcmp(a[0].data, b[0].data, 8 * 24) == 0, "the mean pick does not depend on the seed");
    for (int i = 0; a && i < (int)sizeof rgb; i++)
        CHECK((a[0].data[i] >> 5) == (rgb[i] >> 5), "top bits kept at %d", i);
    spn_images_free(a, na);
    spn_images_free(b, nb);
    p.pick = 2;
    CHECK(spn_upscale_depth(model, &v, &p, &a, &na) == SPN_ERR_INVALID_ARGUMENT, "unknown pick");
    /* An ABI 4 host (64 bytes) draws as before. */
    spn_sample_params_init(&p);
    p.struct_size = 64;
    p.pick = 9; /* past its struct: never read */
    CHECK(spn_upscale_depth(model, &v, &p, &a, &na) == SPN_OK, "ABI 4 struct");
    spn_images_free(a, na);
}

/* ---- Upscaling by a factor other than S (ABI 6) ---- */
static void test_upscale_factor(void) {
    spn_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(spn_model_get_info(model, &info) == SPN_OK, "info");
    uint8_t rgba[5 * 3 * 4];
    for (int i = 0; i < (int)sizeof rgba; i++) rgba[i] = (uint8_t)(i * 37 + 11);
    spn_image_view v = {5, 3, 4, 20, rgba};
    spn_sample_params p;
    spn_sample_params_init(&p);
    spn_image *a = NULL;
    uint32_t na = 0;
    /* Factor 3: every input pixel is pixel (3y, 3x) of a 15x9 result, colour and alpha as they were. */
    p.upscale_factor = 3;
    CHECK(spn_upscale_size(model, &v, &p, &a, &na) == SPN_OK, "factor 3: %s", spn_last_error());
    CHECK(a && na == 1 && a[0].width == 15 && a[0].height == 9 && a[0].channels == 4, "factor 3 size");
    for (int y = 0; a && y < 3; y++)
        for (int x = 0; x < 5; x++)
            CHECK(memcmp(a[0].data + (size_t)3 * y * a[0].stride + (size_t)3 * x * 4, rgba + y * 20 + x * 4, 4) == 0,
                  "input pixel (%d, %d) kept", x, y);
    spn_images_free(a, na);
    /* 0 is the model's scale, as every host before ABI 6 asked. */
    p.upscale_factor = 0;
    CHECK(spn_upscale_size(model, &v, &p, &a, &na) == SPN_OK, "factor 0");
    CHECK(a && a[0].width == 5 * info.scale && a[0].height == 3 * info.scale, "factor 0 is S");
    spn_images_free(a, na);
    a = NULL;
    p.upscale_factor = 1;
    CHECK(spn_upscale_size(model, &v, &p, &a, &na) == SPN_ERR_INVALID_ARGUMENT && !a, "factor 1 refused");
    CHECK(strstr(spn_last_error(), "upscale_factor") != NULL, "message names the field: %s", spn_last_error());
    p.upscale_factor = 65;
    CHECK(spn_upscale_size(model, &v, &p, &a, &na) == SPN_ERR_INVALID_ARGUMENT && !a, "factor 65 refused");
    /* The other calls ignore it. */
    CHECK(spn_upscale_depth(model, &v, &p, &a, &na) == SPN_OK, "ignored by upscale_depth");
    spn_images_free(a, na);
}

/* ---- Averaged draws (ABI 7) ---- */
static void test_draws(void) {
    uint8_t rgb[5 * 4 * 3];
    for (int i = 0; i < (int)sizeof rgb; i++) rgb[i] = (uint8_t)(i * 41 + 3);
    spn_image_view v = {5, 4, 3, 15, rgb};
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.seed = 3;
    spn_image *one = NULL, *avg = NULL, *again = NULL;
    uint32_t n1 = 0, na = 0, ng = 0;
    CHECK(spn_upscale_size(model, &v, &p, &one, &n1) == SPN_OK, "one draw: %s", spn_last_error());
    p.draws = 4;
    CHECK(spn_upscale_size(model, &v, &p, &avg, &na) == SPN_OK, "4 draws: %s", spn_last_error());
    p.batch_size = 1;
    CHECK(spn_upscale_size(model, &v, &p, &again, &ng) == SPN_OK, "4 draws, batch 1");
    size_t bytes = one ? (size_t)one[0].height * one[0].stride : 0;
    CHECK(avg && again && avg[0].width == one[0].width && memcmp(avg[0].data, again[0].data, bytes) == 0,
          "the average does not depend on the batch");
    CHECK(avg && memcmp(avg[0].data, one[0].data, bytes) != 0, "the average is not one draw");
    spn_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(spn_model_get_info(model, &info) == SPN_OK, "info");
    for (uint32_t y = 0; avg && y < 4; y++)
        for (uint32_t x = 0; x < 5; x++)
            CHECK(memcmp(avg[0].data + (size_t)info.scale * y * avg[0].stride + (size_t)info.scale * x * 3,
                         rgb + y * 15 + x * 3, 3) == 0,
                  "input pixel (%u, %u) kept", x, y);
    spn_images_free(one, n1);
    spn_images_free(avg, na);
    spn_images_free(again, ng);
    spn_image *bad = NULL;
    uint32_t nb = 0;
    p.draws = 65;
    CHECK(spn_upscale_size(model, &v, &p, &bad, &nb) == SPN_ERR_INVALID_ARGUMENT && !bad, "65 draws refused");
    CHECK(strstr(spn_last_error(), "draws") != NULL, "message names the field: %s", spn_last_error());
    p.draws = 2;
    p.pick = SPN_PICK_MEAN;
    CHECK(spn_upscale_size(model, &v, &p, &bad, &nb) == SPN_ERR_INVALID_ARGUMENT && !bad, "draws with the mean");
    p.pick = SPN_PICK_SAMPLE;
    p.reserved = 1;
    CHECK(spn_upscale_size(model, &v, &p, &bad, &nb) == SPN_ERR_INVALID_ARGUMENT && !bad, "reserved refused");
    /* An ABI 6 host (72 bytes) gets one draw: what lies past its struct is never read. */
    spn_sample_params_init(&p);
    p.struct_size = 72;
    p.seed = 3;
    p.draws = 99;
    spn_image *old = NULL;
    uint32_t no = 0;
    CHECK(spn_upscale_size(model, &v, &p, &old, &no) == SPN_OK, "ABI 6 struct: %s", spn_last_error());
    spn_images_free(old, no);
}

/* ---- Compatibility ---- */
/* What a host built against an older header would pass: the struct before its later fields existed.
 * (No version has trailing padding, so a newer field never lies in an older one's padding.) */
typedef struct {
    uint32_t struct_size;
    uint32_t count;
    uint64_t seed;
    float temperature;
    uint32_t batch_size;
} old_sample_params;

/* The ABI 2 struct: ends after `job` (48 bytes). Its hosts expect RGB results. */
typedef struct {
    uint32_t struct_size;
    uint32_t count;
    uint64_t seed;
    float temperature;
    uint32_t batch_size;
    spn_progress_fn progress;
    void *user_data;
    spn_job *job;
} v2_sample_params;

/* What a host built against a newer header would pass: one field appended. */
typedef struct {
    spn_sample_params base;
    uint64_t future_field;
} new_sample_params;

static void test_compat(void) {
    old_sample_params o = {sizeof(old_sample_params), 2, 7, 1.0f, 2};
    spn_image *imgs = NULL;
    uint32_t n = 0;
    CHECK(spn_generate(model, (const spn_sample_params *)&o, &imgs, &n) == SPN_OK && n == 2, "older struct");
    uint8_t first[8 * 8 * 3];
    memcpy(first, imgs[0].data, sizeof first);
    spn_images_free(imgs, n);
    new_sample_params nw;
    spn_sample_params_init(&nw.base);
    nw.base.struct_size = sizeof nw;
    nw.base.seed = 7;
    nw.future_field = 12345;
    CHECK(spn_generate(model, &nw.base, &imgs, &n) == SPN_OK && n == 1, "newer struct");
    CHECK(memcmp(first, imgs[0].data, sizeof first) == 0, "same result whatever the struct version");
    spn_images_free(imgs, n);
    /* An ABI 2 host passing RGBA gets RGB, as it did. */
    v2_sample_params v2 = {sizeof(v2_sample_params), 1, 0, 1.0f, 16, NULL, NULL, NULL};
    uint8_t rgba[8 * 8 * 4];
    for (int i = 0; i < (int)sizeof rgba; i++) rgba[i] = (uint8_t)(i * 13);
    spn_image_view rv = {8, 8, 4, 32, rgba};
    CHECK(spn_upscale_depth(model, &rv, (const spn_sample_params *)&v2, &imgs, &n) == SPN_OK, "v2 struct");
    CHECK(imgs[0].channels == 3 && imgs[0].stride == 24, "an older host gets RGB: %u", imgs[0].channels);
    spn_images_free(imgs, n);
    /* NULL params say nothing of the host's header: RGB too. */
    CHECK(spn_upscale_depth(model, &rv, NULL, &imgs, &n) == SPN_OK && imgs[0].channels == 3, "NULL params: RGB");
    spn_images_free(imgs, n);
    /* An info struct from an older header: only its fields are written. */
    struct {
        uint32_t struct_size, width, height;
        uint32_t canary;
    } small_info = {12, 0, 0, 0xDEADBEEF};
    CHECK(spn_model_get_info(model, (spn_model_info *)&small_info) == SPN_OK, "old info");
    CHECK(small_info.width == 8 && small_info.canary == 0xDEADBEEF, "no write past the caller's struct");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL\n", argv[0]);
        return 2;
    }
    model_path = argv[1];
    spn_set_log_callback(on_log, NULL);
    test_versions();
    test_load();
    if (!model) return 1;
    test_generate();
    test_bad_input();
    test_freed_handles();
    test_cancel_before();
    test_threads();
    test_canvas();
    test_compat();
    test_pick();
    test_upscale_factor();
    test_draws();
    CHECK(log_lines > 0, "log callback called");
    spn_set_log_callback(NULL, NULL);
    spn_model_free(model);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
