/* Hostile input through the C ABI (what the issue "Hostile input through the C ABI, the loader and the CLI"
 * found), run under AddressSanitizer for the host side. Usage: hostile_test MODEL.spn (the tiny 8x8 model). */
#define _DEFAULT_SOURCE
#include "spn.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static spn_model *model;
static unsigned char pixels[8 * 8 * 4];

static spn_status complete_with(spn_image_view image, spn_image_view mask) {
    spn_image *out = NULL;
    uint32_t n = 0;
    spn_status st = spn_complete(model, &image, &mask, NULL, &out, &n);
    spn_images_free(out, n);
    return st;
}

/* Strides whose row addresses wrap, on every call that reads a view. */
static void test_strides(void) {
    /* (A stride that fits the address space but not the buffer is the host breaking spn.h; not testable.) */
    const size_t bad[] = {SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 62};
    spn_image_view good = {8, 8, 4, 32, pixels};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        spn_image_view v = good;
        v.stride = bad[i];
        CHECK(complete_with(v, good) == SPN_ERR_INVALID_ARGUMENT, "image stride %zu", bad[i]);
        CHECK(complete_with(good, v) == SPN_ERR_INVALID_ARGUMENT, "mask stride %zu", bad[i]);
        spn_image *out = NULL;
        uint32_t n = 0;
        spn_image_view small = v;
        small.width = small.height = 4;
        CHECK(spn_upscale_size(model, &small, NULL, &out, &n) == SPN_ERR_INVALID_ARGUMENT, "size %zu", bad[i]);
        CHECK(spn_upscale_depth(model, &v, NULL, &out, &n) == SPN_ERR_INVALID_ARGUMENT, "depth %zu", bad[i]);
        double bits = 0;
        CHECK(spn_score(model, &v, &bits, NULL, 0) == SPN_ERR_INVALID_ARGUMENT, "score %zu", bad[i]);
        CHECK(out == NULL && n == 0, "no output");
    }
}

/* A view whose size differs from the size the call needs (a mask from its image's, an image to score from the
 * model's) is refused before any row of either is read: the buffer behind it holds only 8x8 pixels
 * (AddressSanitizer would see a read past it). */
static void test_oversized_views(void) {
    spn_image_view good = {8, 8, 4, 32, pixels}, tall = good, wide = good;
    tall.height = 30000;
    wide.width = 30000;
    wide.stride = 30000 * 4;
    CHECK(complete_with(tall, good) == SPN_ERR_INVALID_ARGUMENT, "tall image");
    CHECK(complete_with(good, tall) == SPN_ERR_INVALID_ARGUMENT, "tall mask");
    CHECK(complete_with(wide, good) == SPN_ERR_INVALID_ARGUMENT, "wide image");
    CHECK(strstr(spn_last_error(), "30000") != NULL, "message names the size: %s", spn_last_error());
    double bits = 0;
    CHECK(spn_score(model, &tall, &bits, NULL, 0) == SPN_ERR_INVALID_ARGUMENT, "tall score");
}

/* A struct_size that ends inside a field (here inside the progress pointer) is refused. */
static void test_struct_sizes(void) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    const uint32_t inside[] = {9, 12, 17, 22, 25, 28, 33, 47};
    for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++) {
        p.struct_size = inside[i];
        spn_image *out = NULL;
        uint32_t n = 0;
        CHECK(spn_generate(model, &p, &out, &n) == SPN_ERR_INVALID_ARGUMENT, "struct_size %u", inside[i]);
    }
    p.struct_size = 24; /* a header from before the progress callback: still accepted */
    spn_image *out = NULL;
    uint32_t n = 0;
    CHECK(spn_generate(model, &p, &out, &n) == SPN_OK && n == 1, "struct_size 24");
    spn_images_free(out, n);
}

/* Handles are never reused, and a freed one stays invalid. */
static void test_handles(const char *path) {
    spn_model *a = NULL, *b = NULL;
    CHECK(spn_model_load(path, NULL, &a) == SPN_OK, "load a");
    spn_model_free(a);
    for (int i = 0; i < 4; i++) {
        CHECK(spn_model_load(path, NULL, &b) == SPN_OK, "load b");
        CHECK(b != a, "a new model got the freed handle");
        spn_model_info info = {sizeof info, 0, 0, 0, 0, 0, 0};
        CHECK(spn_model_get_info(a, &info) == SPN_ERR_INVALID_ARGUMENT, "freed handle used");
        spn_model_free(b);
    }
    spn_job *j = NULL;
    CHECK(spn_job_new(&j) == SPN_OK, "job");
    spn_job_free(j);
    CHECK(spn_job_cancel(j) == SPN_ERR_INVALID_ARGUMENT, "freed job cancelled");
}

/* The message of the last failure stays after a later success; seeds never wrap. */
static void test_errors_and_seeds(void) {
    spn_image *out = NULL;
    uint32_t n = 0;
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.seed = UINT64_MAX;
    p.count = 2;
    CHECK(spn_generate(model, &p, &out, &n) == SPN_ERR_INVALID_ARGUMENT, "seeds wrap");
    char msg[256];
    snprintf(msg, sizeof msg, "%s", spn_last_error());
    CHECK(strstr(msg, "seed") != NULL, "message: %s", msg);
    p.count = 1;
    CHECK(spn_generate(model, &p, &out, &n) == SPN_OK && n == 1 && out[0].seed == UINT64_MAX, "last seed");
    spn_images_free(out, n);
    CHECK(strcmp(spn_last_error(), msg) == 0, "message after a success: '%s'", spn_last_error());
}

static long max_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

/* A huge batch size is lowered to what the documented bound allows; memory stays near the output's. */
static void test_batch_memory(void) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.count = 4096;
    p.batch_size = UINT32_MAX;
    spn_image *out = NULL;
    uint32_t n = 0;
    long before = max_rss_mb();
    CHECK(spn_generate(model, &p, &out, &n) == SPN_OK && n == 4096, "count 4096, batch UINT32_MAX");
    spn_images_free(out, n);
    long grew = max_rss_mb() - before;
    CHECK(grew < 1024, "max RSS grew by %ld MiB", grew);
    printf("batch of 4096 8x8 images at batch_size UINT32_MAX: max RSS grew %ld MiB\n", grew);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    for (size_t i = 0; i < sizeof pixels; i++) pixels[i] = (unsigned char)(i * 37);
    CHECK(spn_init(SPN_ABI_VERSION) == SPN_OK, "init");
    CHECK(spn_model_load(argv[1], NULL, &model) == SPN_OK, "load");
    test_strides();
    test_oversized_views();
    test_struct_sizes();
    test_handles(argv[1]);
    test_errors_and_seeds();
    test_batch_memory();
    spn_model_free(model);
    printf("hostile_test: %d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
