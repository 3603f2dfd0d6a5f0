/* A host of an installed libspn: the default model (NULL path), one image, written as PNG.
 * Usage: host OUT.png [DEVICE]   DEVICE: cpu (default), torch-cpu (the libtorch backend on the CPU), or
 * cuda-missing (expects CUDA to be refused with a message saying what to install). */
#include <spn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || spn_init(SPN_ABI_VERSION) != SPN_OK) return 2;
    const char *device = argc > 2 ? argv[2] : "cpu";
    spn_model_params mp;
    spn_model_params_init(&mp);
    mp.device = strcmp(device, "torch-cpu") == 0 ? SPN_DEVICE_TORCH_CPU
                : strcmp(device, "cuda-missing") == 0 ? SPN_DEVICE_CUDA
                                                      : SPN_DEVICE_AUTO;
    spn_model *m = NULL;
    spn_status s = spn_model_load(NULL, &mp, &m);
    if (strcmp(device, "cuda-missing") == 0) {
        if (s == SPN_ERR_DEVICE && strstr(spn_last_error(), "make install-cuda") != NULL) {
            printf("CUDA refused: %s\n", spn_last_error());
            return 0;
        }
        fprintf(stderr, "CUDA without the backend: status %d, %s\n", s, spn_last_error());
        return 1;
    }
    if (s != SPN_OK) {
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
    printf("generated %ux%u (%s)\n", out[0].width, out[0].height, device);
    spn_images_free(out, n);
    spn_model_free(m);
    return 0;
}
