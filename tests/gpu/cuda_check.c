/* The CUDA path of libspn, for a session lent a GPU (recipes/gpu-check.sh): the libtorch backend loads, its
 * per-sub-pixel bits (log-softmax of its logits) match the CPU engine's, and how many 64x64 images a minute it
 * generates at batch 256. Usage: cuda_check MODEL DEVICE   DEVICE: cuda, or torch-cpu to try this program on a
 * machine without a GPU (the backend's libtorch on the CPU). */
#define _POSIX_C_SOURCE 199309L
#include "spn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static spn_model *load(const char *path, spn_device device) {
    spn_model_params mp;
    spn_model_params_init(&mp);
    mp.device = device;
    spn_model *m = NULL;
    if (spn_model_load(path, &mp, &m) != SPN_OK) fprintf(stderr, "load (device %d): %s\n", device, spn_last_error());
    return m;
}

/* Images a minute of `count` new images at batch `batch`. */
static double per_minute(const spn_model *m, uint32_t count, uint32_t batch) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.count = count;
    p.batch_size = batch;
    p.seed = 100;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    double t = now();
    if (spn_generate(m, &p, &imgs, &n) != SPN_OK) {
        fprintf(stderr, "generate: %s\n", spn_last_error());
        return -1;
    }
    t = now() - t;
    spn_images_free(imgs, n);
    return 60.0 * n / t;
}

int main(int argc, char **argv) {
    if (argc < 3 || spn_init(SPN_ABI_VERSION) != SPN_OK) return 2;
    spn_device dev = strcmp(argv[2], "cuda") == 0 ? SPN_DEVICE_CUDA : SPN_DEVICE_TORCH_CPU;
    spn_model *cpu = load(argv[1], SPN_DEVICE_CPU), *gpu = load(argv[1], dev);
    if (!cpu || !gpu) return 1;
    spn_model_info info = {.struct_size = sizeof info};
    if (spn_model_get_info(cpu, &info) != SPN_OK) return 1;
    /* Eight images drawn by the CPU engine, scored by both. */
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.count = 8;
    p.seed = 1;
    spn_image *imgs = NULL;
    uint32_t n = 0;
    if (spn_generate(cpu, &p, &imgs, &n) != SPN_OK) return 1;
    size_t per = (size_t)info.width * info.height * 3;
    static float a[256 * 256 * 3], b[256 * 256 * 3];
    if (per > sizeof a / sizeof *a) return 1;
    double worst = 0, worst_total = 0;
    for (uint32_t i = 0; i < n; i++) {
        spn_image_view v = {imgs[i].width, imgs[i].height, 3, imgs[i].stride, imgs[i].data};
        double ta = 0, tb = 0;
        if (spn_score(cpu, &v, &ta, a, per) != SPN_OK || spn_score(gpu, &v, &tb, b, per) != SPN_OK) {
            fprintf(stderr, "score: %s\n", spn_last_error());
            return 1;
        }
        for (size_t j = 0; j < per; j++) worst = fmax(worst, fabs(a[j] - b[j]));
        worst_total = fmax(worst_total, fabs(ta - tb) / ta);
    }
    spn_images_free(imgs, n);
    printf("per-sub-pixel bits, CPU engine against %s: largest difference %.3g (relative total %.3g)\n", argv[2],
           worst, worst_total);
    printf("%s: %s\n", argv[2], worst < 1e-3 ? "MATCH (within 1e-3)" : "DIFFER");
    uint32_t count = dev == SPN_DEVICE_CUDA ? 256 : 8;
    per_minute(gpu, dev == SPN_DEVICE_CUDA ? 256 : 1, dev == SPN_DEVICE_CUDA ? 256 : 1); /* warm-up */
    printf("%s: %.0f images/minute at batch %u (%u images)\n", argv[2], per_minute(gpu, count, count), count, count);
    printf("CPU engine: %.0f images/minute at batch 32 (32 images)\n", per_minute(cpu, 32, 32));
    spn_model_free(gpu);
    spn_model_free(cpu);
    return worst < 1e-3 ? 0 : 1;
}
