/* The libtorch backend (libspn_torch.so, loaded by libspn at run time) against libspn's own CPU engine: the
 * same images from the same seeds for every job, on canvases larger and smaller than the model, and the same
 * scores. Usage: backend_test MODEL.spn; backend_test MODEL.spn broken (with $SPN_BACKEND naming a file that is not
 * the backend: the libtorch devices are refused saying why, and the CPU works). */
#include "spn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

enum { W = 21, H = 13 };
static unsigned char rgb[W * H * 3], mask[W * H];

typedef spn_status (*job_fn)(const spn_model *, const spn_sample_params *, spn_image **, uint32_t *);

/* One job on one model: its images (copied into `out`) and bits. */
static int run(const spn_model *m, int job, unsigned char *out, size_t cap, double *bits) {
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.seed = 7;
    p.count = 2;
    p.batch_size = 3;
    spn_image_view img = {W, H, 3, W * 3, rgb}, msk = {W, H, 1, W, mask};
    spn_image *imgs = NULL;
    uint32_t n = 0;
    spn_status s;
    switch (job) {
    case 0:
        p.width = W;
        p.height = H;
        s = spn_generate(m, &p, &imgs, &n);
        break;
    case 1: s = spn_complete(m, &img, &msk, &p, &imgs, &n); break;
    case 2: s = spn_upscale_size(m, &img, &p, &imgs, &n); break;
    default: s = spn_upscale_depth(m, &img, &p, &imgs, &n); break;
    }
    if (s != SPN_OK) return -1;
    size_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t sz = imgs[i].stride * imgs[i].height;
        if (used + sz > cap) return -1;
        memcpy(out + used, imgs[i].data, sz);
        used += sz;
        bits[i] = imgs[i].bits;
    }
    spn_images_free(imgs, n);
    return (int)used;
}

int main(int argc, char **argv) {
    if (argc < 2 || spn_init(SPN_ABI_VERSION) != SPN_OK) return 2;
    for (int i = 0; i < W * H; i++) {
        int x = i % W, y = i / W;
        rgb[3 * i] = (unsigned char)(x * 12);
        rgb[3 * i + 1] = (unsigned char)(y * 19);
        rgb[3 * i + 2] = 90;
        mask[i] = x < 9 ? 255 : 0;
    }
    spn_model_params mp;
    spn_model_params_init(&mp);
    spn_model *cpu = NULL, *torch = NULL;
    if (argc > 2 && strcmp(argv[2], "broken") == 0) {
        mp.device = SPN_DEVICE_TORCH_CPU;
        CHECK(spn_model_load(argv[1], &mp, &torch) == SPN_ERR_DEVICE && torch == NULL, "broken backend refused");
        CHECK(strstr(spn_last_error(), "cannot be used") != NULL, "says why: %s", spn_last_error());
        mp.device = SPN_DEVICE_AUTO;
        CHECK(spn_model_load(argv[1], &mp, &cpu) == SPN_OK, "AUTO falls back to the CPU");
        spn_model_free(cpu);
        printf("%d passed, %d failed\n", checks - failures, failures);
        return failures ? 1 : 0;
    }
    mp.device = SPN_DEVICE_CPU;
    CHECK(spn_model_load(argv[1], &mp, &cpu) == SPN_OK, "CPU engine");
    mp.device = SPN_DEVICE_TORCH_CPU;
    CHECK(spn_model_load(argv[1], &mp, &torch) == SPN_OK, "libtorch backend");
    if (!cpu || !torch) return 1;
    static unsigned char a[1 << 16], b[1 << 16];
    for (int job = 0; job < 4; job++) {
        double ba[2] = {0}, bb[2] = {0};
        int na = run(cpu, job, a, sizeof a, ba), nb = run(torch, job, b, sizeof b, bb);
        CHECK(na > 0 && na == nb, "job %d: %d and %d bytes", job, na, nb);
        CHECK(na > 0 && memcmp(a, b, (size_t)na) == 0, "job %d: the same pixels", job);
        for (int i = 0; i < 2; i++)
            CHECK(fabs(ba[i] - bb[i]) <= 1e-3 * fabs(ba[i]) + 1e-3, "job %d bits %f %f", job, ba[i], bb[i]);
    }
    spn_model_info info = {.struct_size = sizeof info};
    CHECK(spn_model_get_info(torch, &info) == SPN_OK, "info");
    static unsigned char sq[64 * 64 * 3];
    for (size_t i = 0; i < sizeof sq; i++) sq[i] = (unsigned char)(i * 7);
    spn_image_view v = {info.width, info.height, 3, info.width * 3, sq};
    static float pa[64 * 64 * 3], pb[64 * 64 * 3];
    double ta = 0, tb = 0;
    CHECK(spn_score(cpu, &v, &ta, pa, sizeof pa / sizeof *pa) == SPN_OK, "score on the CPU engine");
    CHECK(spn_score(torch, &v, &tb, pb, sizeof pb / sizeof *pb) == SPN_OK, "score on the backend");
    CHECK(ta > 0 && fabs(ta - tb) <= 1e-4 * ta, "total bits %f %f", ta, tb);
    double worst = 0;
    for (uint32_t i = 0; i < info.width * info.height * 3; i++) worst = fmax(worst, fabs(pa[i] - pb[i]));
    CHECK(worst < 1e-3, "per sub-pixel bits differ by %g", worst);
    /* Without a GPU, CUDA is refused with a message from the backend. */
    spn_model *gpu = NULL;
    mp.device = SPN_DEVICE_CUDA;
    spn_status s = spn_model_load(argv[1], &mp, &gpu);
    if (s == SPN_OK) {
        printf("a GPU is present: CUDA loaded\n");
        spn_model_free(gpu);
    } else {
        CHECK(s == SPN_ERR_DEVICE && strstr(spn_last_error(), "CUDA") != NULL, "CUDA refused: %d", s);
    }
    spn_model_free(cpu);
    spn_model_free(torch);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
