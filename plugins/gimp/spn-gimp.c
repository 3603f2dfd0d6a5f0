/*
 * spn-gimp: a GIMP 2.10 plug-in on top of libspn (include/spn.h only).
 *
 * Procedures (all usable from scripts with RUN-NONINTERACTIVE):
 *   plug-in-spn-generate       File > Create > SPN > Generate...        new image, one layer per sample
 *   plug-in-spn-complete       Filters > Generic > SPN > Complete Selection   selected/transparent pixels redrawn
 *   plug-in-spn-upscale-depth  Filters > Generic > SPN > Upscale Depth   top bits kept, low bits resampled
 *   plug-in-spn-upscale-size   Filters > Generic > SPN > Upscale Size    new image S times larger
 * An empty model path means the bundled default model.
 */
#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>
#include <string.h>

#include "spn.h"

#define GEN_PROC "plug-in-spn-generate"
#define COMPLETE_PROC "plug-in-spn-complete"
#define DEPTH_PROC "plug-in-spn-upscale-depth"
#define SIZE_PROC "plug-in-spn-upscale-size"

typedef struct {
    gchar model[1024];
    gint32 count;
    gint32 seed;
    gdouble temperature;
} SpnValues;

static SpnValues vals = {"", 4, 0, 1.0};

static void query(void);
static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals, GimpParam **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = {NULL, NULL, query, run};

MAIN()

static void query(void) {
    static const GimpParamDef gen_args[] = {
        {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1) }"},
        {GIMP_PDB_STRING, "model", "Model bundle (.spn); empty for the bundled default"},
        {GIMP_PDB_INT32, "count", "Number of images (layers) to generate"},
        {GIMP_PDB_INT32, "seed", "Seed of the first image; image i gets seed + i"},
        {GIMP_PDB_FLOAT, "temperature", "Sampling temperature (> 0; 1 samples the model)"},
    };
    static const GimpParamDef gen_ret[] = {{GIMP_PDB_IMAGE, "image", "The new image"}};
    static const GimpParamDef edit_args[] = {
        {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1) }"},
        {GIMP_PDB_IMAGE, "image", "Input image"},
        {GIMP_PDB_DRAWABLE, "drawable", "Input drawable (RGB or RGBA, the model's size)"},
        {GIMP_PDB_STRING, "model", "Model bundle (.spn); empty for the bundled default"},
        {GIMP_PDB_INT32, "seed", "Seed"},
        {GIMP_PDB_FLOAT, "temperature", "Sampling temperature (> 0)"},
    };
    static const GimpParamDef size_ret[] = {{GIMP_PDB_IMAGE, "new-image", "The upscaled image"}};

    gimp_install_procedure(GEN_PROC, "Generate images with a Subscale Pixel Network",
                           "Samples new images from an SPN model, one layer each; the seed of every layer is in "
                           "its name.",
                           "spn", "spn", "2026", "SPN _Generate...", NULL, GIMP_PLUGIN, G_N_ELEMENTS(gen_args),
                           G_N_ELEMENTS(gen_ret), gen_args, gen_ret);
    gimp_plugin_menu_register(GEN_PROC, "<Image>/File/Create/SPN");

    gimp_install_procedure(COMPLETE_PROC, "Complete the selection with a Subscale Pixel Network",
                           "Redraws the selected pixels (or, without a selection, the transparent ones) of the "
                           "layer; every other pixel is kept exactly.",
                           "spn", "spn", "2026", "_Complete Selection", "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(edit_args),
                           0, edit_args, NULL);
    gimp_plugin_menu_register(COMPLETE_PROC, "<Image>/Filters/Generic/SPN");

    gimp_install_procedure(DEPTH_PROC, "Upscale the bit depth with a Subscale Pixel Network",
                           "Keeps the top bits of every value and resamples the low bits (for posterised or "
                           "banded artwork).",
                           "spn", "spn", "2026", "Upscale _Depth", "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(edit_args), 0,
                           edit_args, NULL);
    gimp_plugin_menu_register(DEPTH_PROC, "<Image>/Filters/Generic/SPN");

    gimp_install_procedure(SIZE_PROC, "Upscale the size with a Subscale Pixel Network",
                           "The layer becomes slice 0 of a new image S times larger.", "spn", "spn", "2026",
                           "Upscale _Size", "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(edit_args), G_N_ELEMENTS(size_ret),
                           edit_args, size_ret);
    gimp_plugin_menu_register(SIZE_PROC, "<Image>/Filters/Generic/SPN");
}

static int on_progress(void *user, uint64_t done, uint64_t total) {
    (void)user;
    gimp_progress_update(total ? (gdouble)done / (gdouble)total : 0.0);
    return 1;
}

/* A message for the user, also returned to scripts. */
static GimpPDBStatusType fail(GimpParam *ret, gint *nret, const gchar *fmt, ...) G_GNUC_PRINTF(3, 4);
static GimpPDBStatusType fail(GimpParam *ret, gint *nret, const gchar *fmt, ...) {
    static gchar msg[2048];
    va_list ap;
    va_start(ap, fmt);
    g_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_message("SPN: %s", msg);
    *nret = 2;
    ret[1].type = GIMP_PDB_STRING;
    ret[1].data.d_string = msg;
    return GIMP_PDB_EXECUTION_ERROR;
}

static spn_model *load_model(const gchar *path, GimpParam *ret, gint *nret, GimpPDBStatusType *status) {
    spn_model *model = NULL;
    if (spn_init(SPN_ABI_VERSION) != SPN_OK) {
        *status = fail(ret, nret, "libspn is too old: %s", spn_last_error());
        return NULL;
    }
    if (spn_model_load(path && path[0] ? path : NULL, NULL, &model) != SPN_OK) {
        *status = fail(ret, nret, "cannot load the model: %s", spn_last_error());
        return NULL;
    }
    return model;
}

/* Reads a drawable as RGBA u8 (w * h * 4). */
static guchar *read_rgba(gint32 drawable, gint w, gint h) {
    GeglBuffer *buf = gimp_drawable_get_buffer(drawable);
    guchar *px = g_malloc((gsize)w * h * 4);
    gegl_buffer_get(buf, GEGL_RECTANGLE(0, 0, w, h), 1.0, babl_format("R'G'B'A u8"), px, GEGL_AUTO_ROWSTRIDE,
                    GEGL_ABYSS_NONE);
    g_object_unref(buf);
    return px;
}

static void write_rgba(gint32 drawable, gint w, gint h, const guchar *px) {
    GeglBuffer *shadow = gimp_drawable_get_shadow_buffer(drawable);
    gegl_buffer_set(shadow, GEGL_RECTANGLE(0, 0, w, h), 0, babl_format("R'G'B'A u8"), px, GEGL_AUTO_ROWSTRIDE);
    gegl_buffer_flush(shadow);
    g_object_unref(shadow);
    gimp_drawable_merge_shadow(drawable, TRUE);
    gimp_drawable_update(drawable, 0, 0, w, h);
}

/* A layer from an spn_image (RGB) added on top of `image`. */
static gint32 add_layer(gint32 image, const spn_image *im, const gchar *name) {
    gint32 layer = gimp_layer_new(image, name, (gint)im->width, (gint)im->height, GIMP_RGB_IMAGE, 100.0,
                                  GIMP_LAYER_MODE_NORMAL);
    gimp_image_insert_layer(image, layer, 0, 0);
    GeglBuffer *buf = gimp_drawable_get_buffer(layer);
    gegl_buffer_set(buf, GEGL_RECTANGLE(0, 0, im->width, im->height), 0, babl_format("R'G'B' u8"), im->data,
                    (gint)im->stride);
    g_object_unref(buf);
    return layer;
}

static gboolean dialog(gboolean with_count) {
    gimp_ui_init("spn-gimp", FALSE);
    GtkWidget *dlg = gimp_dialog_new("SPN", "spn-gimp", NULL, 0, gimp_standard_help_func, GEN_PROC, "_Cancel",
                                     GTK_RESPONSE_CANCEL, "_OK", GTK_RESPONSE_OK, NULL);
    GtkWidget *table = gtk_table_new(4, 2, FALSE);
    gtk_container_set_border_width(GTK_CONTAINER(table), 12);
    gtk_box_pack_start(GTK_BOX(gtk_dialog_get_content_area(GTK_DIALOG(dlg))), table, TRUE, TRUE, 0);
    GtkWidget *model = gtk_entry_new();
    gtk_entry_set_text(GTK_ENTRY(model), vals.model);
    gimp_table_attach_aligned(GTK_TABLE(table), 0, 0, "Model (empty: bundled):", 0.0, 0.5, model, 1, FALSE);
    GtkObject *count = NULL;
    if (with_count)
        count = gimp_scale_entry_new(GTK_TABLE(table), 0, 1, "Count:", 150, 6, vals.count, 1, 64, 1, 4, 0, TRUE, 0,
                                     0, NULL, NULL);
    GtkObject *seed = gimp_scale_entry_new(GTK_TABLE(table), 0, 2, "Seed:", 150, 6, vals.seed, 0, 1000000, 1, 10, 0,
                                           TRUE, 0, 0, NULL, NULL);
    GtkObject *temp = gimp_scale_entry_new(GTK_TABLE(table), 0, 3, "Temperature:", 150, 6, vals.temperature, 0.05,
                                           2.0, 0.05, 0.1, 2, TRUE, 0, 0, NULL, NULL);
    gtk_widget_show_all(dlg);
    gboolean ok = gimp_dialog_run(GIMP_DIALOG(dlg)) == GTK_RESPONSE_OK;
    if (ok) {
        g_strlcpy(vals.model, gtk_entry_get_text(GTK_ENTRY(model)), sizeof vals.model);
        if (count) vals.count = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(count));
        vals.seed = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(seed));
        vals.temperature = gtk_adjustment_get_value(GTK_ADJUSTMENT(temp));
    }
    gtk_widget_destroy(dlg);
    return ok;
}

static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals, GimpParam **return_vals) {
    static GimpParam ret[2];
    GimpPDBStatusType status = GIMP_PDB_SUCCESS;
    GimpRunMode mode = (GimpRunMode)param[0].data.d_int32;
    gboolean is_gen = strcmp(name, GEN_PROC) == 0;
    *nreturn_vals = 1;
    *return_vals = ret;
    ret[0].type = GIMP_PDB_STATUS;
    gegl_init(NULL, NULL);

    gimp_get_data(name, &vals);
    if (mode == GIMP_RUN_NONINTERACTIVE) {
        if (nparams != (is_gen ? 5 : 6)) {
            ret[0].data.d_status = fail(ret, nreturn_vals, "wrong number of arguments");
            return;
        }
        const gchar *m = param[is_gen ? 1 : 3].data.d_string;
        g_strlcpy(vals.model, m ? m : "", sizeof vals.model);
        if (is_gen) {
            vals.count = param[2].data.d_int32;
            vals.seed = param[3].data.d_int32;
            vals.temperature = param[4].data.d_float;
        } else {
            vals.seed = param[4].data.d_int32;
            vals.temperature = param[5].data.d_float;
        }
    } else if (mode == GIMP_RUN_INTERACTIVE) {
        if (!dialog(is_gen)) {
            ret[0].data.d_status = GIMP_PDB_CANCEL;
            return;
        }
    }
    if (vals.temperature <= 0) {
        ret[0].data.d_status = fail(ret, nreturn_vals, "temperature must be > 0");
        return;
    }

    spn_model *model = load_model(vals.model, ret, nreturn_vals, &status);
    if (!model) {
        ret[0].data.d_status = status;
        return;
    }
    spn_model_info info;
    info.struct_size = sizeof info;
    spn_model_get_info(model, &info);
    spn_sample_params sp;
    spn_sample_params_init(&sp);
    sp.seed = (uint64_t)vals.seed;
    sp.temperature = (float)vals.temperature;
    sp.progress = on_progress;
    spn_image *out = NULL;
    uint32_t n = 0;

    if (is_gen) {
        if (vals.count < 1 || vals.count > 1024) {
            status = fail(ret, nreturn_vals, "count must be in 1..1024");
            goto done;
        }
        sp.count = (uint32_t)vals.count;
        gimp_progress_init("SPN: generating...");
        if (spn_generate(model, &sp, &out, &n) != SPN_OK) {
            status = fail(ret, nreturn_vals, "generation failed: %s", spn_last_error());
            goto done;
        }
        gint32 image = gimp_image_new((gint)info.width, (gint)info.height, GIMP_RGB);
        gimp_image_undo_disable(image);
        for (uint32_t i = 0; i < n; i++) {
            gchar *lname = g_strdup_printf("spn seed %" G_GUINT64_FORMAT, out[i].seed);
            add_layer(image, &out[i], lname);
            g_free(lname);
        }
        gimp_image_undo_enable(image);
        if (mode != GIMP_RUN_NONINTERACTIVE) gimp_display_new(image);
        *nreturn_vals = 2;
        ret[1].type = GIMP_PDB_IMAGE;
        ret[1].data.d_image = image;
        goto done;
    }

    gint32 image = param[1].data.d_image;
    gint32 drawable = param[2].data.d_drawable;
    if (!gimp_drawable_is_rgb(drawable)) {
        status = fail(ret, nreturn_vals, "SPN works on RGB layers; this one is %s. Use Image > Mode > RGB first.",
                      gimp_drawable_is_gray(drawable) ? "grayscale" : "indexed");
        goto done;
    }
    gint w = gimp_drawable_width(drawable), h = gimp_drawable_height(drawable);
    gboolean is_size = strcmp(name, SIZE_PROC) == 0;
    gint need_w = is_size ? (gint)(info.width / info.scale) : (gint)info.width;
    gint need_h = is_size ? (gint)(info.height / info.scale) : (gint)info.height;
    if (w != need_w || h != need_h) {
        status = fail(ret, nreturn_vals, "the layer is %dx%d; this model %s %dx%d layers (Image > Scale Image first)",
                      w, h, is_size ? "upscales" : "works on", need_w, need_h);
        goto done;
    }
    guchar *px = read_rgba(drawable, w, h);
    spn_image_view view = {(uint32_t)w, (uint32_t)h, 4, (size_t)w * 4, px};

    if (is_size) {
        gimp_progress_init("SPN: upscaling size...");
        if (spn_upscale_size(model, &view, &sp, &out, &n) != SPN_OK) {
            status = fail(ret, nreturn_vals, "upscaling failed: %s", spn_last_error());
        } else {
            gint32 big = gimp_image_new((gint)out[0].width, (gint)out[0].height, GIMP_RGB);
            gchar *lname = g_strdup_printf("spn upscaled seed %" G_GUINT64_FORMAT, out[0].seed);
            add_layer(big, &out[0], lname);
            g_free(lname);
            if (mode != GIMP_RUN_NONINTERACTIVE) gimp_display_new(big);
            *nreturn_vals = 2;
            ret[1].type = GIMP_PDB_IMAGE;
            ret[1].data.d_image = big;
        }
        g_free(px);
        goto done;
    }

    spn_status st;
    guchar *known = NULL;
    if (strcmp(name, COMPLETE_PROC) == 0) {
        /* Unknown: selected pixels; without a selection, transparent ones. */
        known = g_malloc((gsize)w * h);
        if (!gimp_selection_is_empty(image)) {
            gint ox, oy;
            gimp_drawable_offsets(drawable, &ox, &oy);
            GeglBuffer *sel = gimp_drawable_get_buffer(gimp_image_get_selection(image));
            gegl_buffer_get(sel, GEGL_RECTANGLE(ox, oy, w, h), 1.0, babl_format("Y u8"), known, GEGL_AUTO_ROWSTRIDE,
                            GEGL_ABYSS_NONE);
            g_object_unref(sel);
            for (gint i = 0; i < w * h; i++) known[i] = known[i] >= 128 ? 0 : 255;
        } else {
            for (gint i = 0; i < w * h; i++) known[i] = px[4 * i + 3] >= 128 ? 255 : 0;
        }
        spn_image_view mask = {(uint32_t)w, (uint32_t)h, 1, (size_t)w, known};
        gimp_progress_init("SPN: completing the selection...");
        st = spn_complete(model, &view, &mask, &sp, &out, &n);
    } else {
        /* The layer's own colours, alpha left out (blending onto white would lighten translucent pixels
         * when their alpha is put back). */
        guchar *rgb = g_malloc((gsize)w * h * 3);
        for (gint i = 0; i < w * h; i++)
            for (gint c = 0; c < 3; c++) rgb[3 * i + c] = px[4 * i + c];
        spn_image_view rgb_view = {(uint32_t)w, (uint32_t)h, 3, (size_t)w * 3, rgb};
        gimp_progress_init("SPN: upscaling depth...");
        st = spn_upscale_depth(model, &rgb_view, &sp, &out, &n);
        g_free(rgb);
    }
    if (st != SPN_OK) {
        status = fail(ret, nreturn_vals, "%s", spn_last_error());
    } else {
        /* Completion: known pixels keep their exact values (alpha included); drawn ones are opaque.
         * Depth upscaling: every pixel gets new low bits, and keeps its alpha (transparent stays so). */
        for (gint y = 0; y < h; y++)
            for (gint x = 0; x < w; x++) {
                gint i = y * w + x;
                if (known && known[i]) continue;
                for (gint c = 0; c < 3; c++) px[4 * i + c] = out[0].data[y * out[0].stride + 3 * x + c];
                if (known) px[4 * i + 3] = 255;
            }
        gimp_image_undo_group_start(image);
        write_rgba(drawable, w, h, px);
        gimp_image_undo_group_end(image);
        if (mode != GIMP_RUN_NONINTERACTIVE) gimp_displays_flush();
    }
    g_free(known);
    g_free(px);

done:
    spn_images_free(out, n);
    spn_model_free(model);
    if (status == GIMP_PDB_SUCCESS && mode == GIMP_RUN_INTERACTIVE) gimp_set_data(name, &vals, sizeof vals);
    ret[0].data.d_status = status;
}
