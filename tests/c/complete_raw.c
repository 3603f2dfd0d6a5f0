/* Completes an image through the C ABI from raw RGBA files, for the mask-rule test (tests/tests/c_abi.rs):
 *   complete_raw MODEL WIDTH HEIGHT IMAGE.rgba MASK.rgba SEED OUT.png */
#include "spn.h"

#include <stdio.h>
#include <stdlib.h>

static unsigned char *read_all(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(n);
    size_t got = buf ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (got != n) {
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL WIDTH HEIGHT IMAGE.rgba MASK.rgba SEED OUT.png\n", argv[0]);
        return 2;
    }
    uint32_t w = (uint32_t)atoi(argv[2]), h = (uint32_t)atoi(argv[3]);
    size_t n = (size_t)w * h * 4;
    unsigned char *img = read_all(argv[4], n), *mask = read_all(argv[5], n);
    if (!img || !mask || spn_init(SPN_ABI_VERSION) != SPN_OK) {
        fprintf(stderr, "cannot read the inputs or start libspn\n");
        return 1;
    }
    spn_model *model = NULL;
    spn_status st = spn_model_load(argv[1], NULL, &model);
    spn_image_view iv = {w, h, 4, (size_t)w * 4, img}, mv = {w, h, 4, (size_t)w * 4, mask};
    spn_sample_params p;
    spn_sample_params_init(&p);
    p.seed = strtoull(argv[6], NULL, 10);
    spn_image *out = NULL;
    uint32_t count = 0;
    if (st == SPN_OK) st = spn_complete(model, &iv, &mv, &p, &out, &count);
    if (st == SPN_OK) st = spn_image_write_png(&out[0], argv[7]);
    if (st != SPN_OK) fprintf(stderr, "%s: %s\n", spn_status_string(st), spn_last_error());
    spn_images_free(out, count);
    spn_model_free(model);
    free(img);
    free(mask);
    return st == SPN_OK ? 0 : 1;
}
