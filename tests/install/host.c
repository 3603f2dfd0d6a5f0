/* A host of an installed libspn: the default model (NULL path), one image, written as PNG.
 * Usage: host OUT.png */
#include <spn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2 || spn_init(SPN_ABI_VERSION) != SPN_OK) return 2;
    spn_model *m = NULL;
    if (spn_model_load(NULL, NULL, &m) != SPN_OK) {
        fprintf(stderr, "load: %s\n", spn_last_error());
        return 1;
    }
    spn_sample_params p;
    spn_sample_params_init(&p);
    spn_image *out = NULL;
    uint32_t n = 0;
    if (spn_generate(m, &p, &out, &n) != SPN_OK || spn_image_write_png(&out[0], argv[1]) != SPN_OK) {
        fprintf(stderr, "generate: %s\n", spn_last_error());
        return 1;
    }
    printf("generated %ux%u\n", out[0].width, out[0].height);
    spn_images_free(out, n);
    spn_model_free(m);
    return 0;
}
