/*
 * spn-gimp: a GIMP 2.10 plug-in on top of libspn (include/spn.h only).
 *
 * Procedures (all usable from scripts with RUN-NONINTERACTIVE):
 *   plug-in-spn-generate       File > Create > SPN > Generate...        new image, one layer per sample
 *   plug-in-spn-complete       Filters > Generic > SPN > Complete Selection   selected/transparent pixels redrawn
 *   plug-in-spn-upscale-depth  Filters > Generic > SPN > Upscale Depth   top bits kept, low bits resampled
 *   plug-in-spn-upscale-size   Filters > Generic > SPN > Upscale Size    new image F times larger (F: the
 *                                                                     dialog's factor, 0 the model's scale S)
 *   plug-in-spn-upscale-size-mean  (scripts)                         S times, each pixel its mean level
 *   plug-in-spn-upscale-size-by    (scripts)                         F times, drawn or the mean level
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
#define MASK_PROC "plug-in-spn-complete-mask"
#define GEN_SIZED_PROC "plug-in-spn-generate-sized"
#define SIZE_MEAN_PROC "plug-in-spn-upscale-size-mean"
#define SIZE_BY_PROC "plug-in-spn-upscale-size-by"

typedef struct {
    gchar model[1024];
    gint32 count;
    gint32 seed;
    gdouble temperature;
    gint32 width; /* generation's canvas; 0: the model's size */
    gint32 height;
    gint32 mean; /* editing procedures: each sub-pixel's mean level, not a draw (SPN_PICK_MEAN) */
    gint32 factor; /* size upscaling's factor; 0: the model's scale S (spn_sample_params.upscale_factor) */
    gint32 draws; /* the dialog's editing: draws averaged into the result (spn_sample_params.draws); scripts: 1 */
} SpnValues;

static SpnValues vals = {"", 4, 0, 1.0, 0, 0, 0, 0, 1};

static void query(void);
static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals, GimpParam **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = {NULL, NULL, query, run};

MAIN()

/* The editing procedures' arguments; some procedures add their own after them. */
#define EDIT_ARGS                                                                                                  \
    {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1) }"},                  \
        {GIMP_PDB_IMAGE, "image", "Input image"},                                                                  \
        {GIMP_PDB_DRAWABLE, "drawable", "Input drawable (RGB or RGBA, any size)"},                                 \
        {GIMP_PDB_STRING, "model", "Model bundle (.spn); empty for the bundled default"},                          \
        {GIMP_PDB_INT32, "seed", "Seed"}, {GIMP_PDB_FLOAT, "temperature", "Sampling temperature (> 0)"},

static void query(void) {
    static const GimpParamDef gen_args[] = {
        {GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1) }"},
        {GIMP_PDB_STRING, "model", "Model bundle (.spn); empty for the bundled default"},
        {GIMP_PDB_INT32, "count", "Number of images (layers) to generate"},
        {GIMP_PDB_INT32, "seed", "Seed of the first image; image i gets seed + i"},
        {GIMP_PDB_FLOAT, "temperature", "Sampling temperature (> 0; 1 samples the model)"},
        /* plug-in-spn-generate-sized only (the menu's dialog asks for them; scripts written before they
         * existed keep calling plug-in-spn-generate with five arguments). */
        {GIMP_PDB_INT32, "width", "Image width; 0 for the model's"},
        {GIMP_PDB_INT32, "height", "Image height; 0 for the model's"},
    };
    static const GimpParamDef gen_ret[] = {{GIMP_PDB_IMAGE, "image", "The new image"}};
    static const GimpParamDef edit_args[] = {
        EDIT_ARGS
    };
    static const GimpParamDef size_ret[] = {{GIMP_PDB_IMAGE, "new-image", "The upscaled image"}};
    static const GimpParamDef size_by_args[] = {
        EDIT_ARGS
        {GIMP_PDB_INT32, "factor", "Upscaling factor, 2 to 64; 0 for the model's scale S"},
        {GIMP_PDB_INT32, "mean", "1: each new pixel its mean level (sharp, deterministic); 0: drawn"},
    };
    static const GimpParamDef mask_args[] = {
        EDIT_ARGS
        {GIMP_PDB_DRAWABLE, "mask", "Mask (the drawable's size): light and opaque = known, dark or clear = drawn"},
    };

    gimp_install_procedure(GEN_PROC, "Generate images with a Subscale Pixel Network",
                           "Samples new images from an SPN model, one layer each, of any width and height "
                           "(larger than the model: drawn window by window); the seed of every layer is in its "
                           "name.",
                           "spn", "spn", "2026", "SPN _Generate...", NULL, GIMP_PLUGIN, G_N_ELEMENTS(gen_args) - 2,
                           G_N_ELEMENTS(gen_ret), gen_args, gen_ret);
    gimp_plugin_menu_register(GEN_PROC, "<Image>/File/Create/SPN");
    gimp_install_procedure(GEN_SIZED_PROC, "Generate images of a given size with a Subscale Pixel Network",
                           "As plug-in-spn-generate, with the images' width and height (0: the model's). For "
                           "scripts.",
                           "spn", "spn", "2026", NULL, NULL, GIMP_PLUGIN, G_N_ELEMENTS(gen_args),
                           G_N_ELEMENTS(gen_ret), gen_args, gen_ret);

    gimp_install_procedure(COMPLETE_PROC, "Complete the selection with a Subscale Pixel Network",
                           "Redraws the selected pixels (or, without a selection, the transparent ones) of a layer "
                           "of any size, one undo step; every other pixel is kept exactly, and only the model-size "
                           "windows that meet the selection are drawn.",
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
                           "The layer (any size) becomes every F-th pixel of a new image F times larger (the "
                           "dialog's factor; by default the model's scale S, the layer being slice 0); alpha is "
                           "scaled with a cubic filter.",
                           "spn", "spn", "2026",
                           "Upscale _Size", "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(edit_args), G_N_ELEMENTS(size_ret),
                           edit_args, size_ret);
    gimp_plugin_menu_register(SIZE_PROC, "<Image>/Filters/Generic/SPN");

    gimp_install_procedure(SIZE_MEAN_PROC, "Upscale the size with a Subscale Pixel Network, sharp and deterministic",
                           "As plug-in-spn-upscale-size, each new pixel taking its mean level under the model "
                           "instead of a draw (the seed does not matter). For scripts; the menu's dialog offers "
                           "it as a check box.",
                           "spn", "spn", "2026", NULL, "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(edit_args),
                           G_N_ELEMENTS(size_ret), edit_args, size_ret);

    gimp_install_procedure(SIZE_BY_PROC, "Upscale the size by a factor with a Subscale Pixel Network",
                           "As plug-in-spn-upscale-size, by a given factor (0: the model's scale S; 4 takes 64x64 "
                           "to 256x256 with an S = 8 model), drawn or each new pixel its mean level. For scripts.",
                           "spn", "spn", "2026", NULL, "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(size_by_args),
                           G_N_ELEMENTS(size_ret), size_by_args, size_ret);

    gimp_install_procedure(MASK_PROC, "Complete a layer where a mask says, with a Subscale Pixel Network",
                           "Redraws the pixels of the layer that the mask drawable leaves unknown, by libspn's mask "
                           "rule (light and opaque = known); every other pixel is kept exactly. For scripts.",
                           "spn", "spn", "2026", NULL, "RGB*", GIMP_PLUGIN, G_N_ELEMENTS(mask_args), 0, mask_args,
                           NULL);
}

/* One call of a procedure: its name and run mode, and where its return values go (ret[0] the status,
 * ret[1] the new image or the error message). */
typedef struct {
    const gchar *name;
    GimpRunMode mode;
    GimpParam *ret;
    gint *nret;
} Call;

/* The loaded model, the sampling parameters of the call, and the images the model returned. */
typedef struct {
    spn_model *model;
    spn_model_info info;
    spn_sample_params sp;
    spn_image *out;
    uint32_t n;
} Session;

/* The layer an editing procedure works on, read as RGBA u8 (w * h * 4). */
typedef struct {
    gint32 image;
    gint32 drawable;
    gint w, h;
    guchar *px;
} Layer;

static int on_progress(void *user, uint64_t done, uint64_t total) {
    (void)user;
    gimp_progress_update(total ? (gdouble)done / (gdouble)total : 0.0);
    return 1;
}

/* A message for the user, also returned to scripts. */
static GimpPDBStatusType fail(Call *c, const gchar *fmt, ...) G_GNUC_PRINTF(2, 3);
static GimpPDBStatusType fail(Call *c, const gchar *fmt, ...) {
    static gchar msg[2048];
    va_list ap;
    va_start(ap, fmt);
    g_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_message("SPN: %s", msg);
    *c->nret = 2;
    c->ret[1].type = GIMP_PDB_STRING;
    c->ret[1].data.d_string = msg;
    return GIMP_PDB_EXECUTION_ERROR;
}

/* A new image for the caller: shown unless run from a script, and returned. */
static void return_image(Call *c, gint32 image) {
    if (c->mode != GIMP_RUN_NONINTERACTIVE) gimp_display_new(image);
    *c->nret = 2;
    c->ret[1].type = GIMP_PDB_IMAGE;
    c->ret[1].data.d_image = image;
}

static gboolean dialog(gboolean with_count, gboolean with_factor) {
    gimp_ui_init("spn-gimp", FALSE);
    GtkWidget *dlg = gimp_dialog_new("SPN", "spn-gimp", NULL, 0, gimp_standard_help_func, GEN_PROC, "_Cancel",
                                     GTK_RESPONSE_CANCEL, "_OK", GTK_RESPONSE_OK, NULL);
    GtkWidget *table = gtk_table_new(7, 2, FALSE);
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
    GtkWidget *mean = NULL;
    if (!with_count) {
        mean = gtk_check_button_new_with_mnemonic("_Mean level: sharp and deterministic, no drawn detail");
        gtk_toggle_button_set_active(GTK_TOGGLE_BUTTON(mean), vals.mean);
        gtk_table_attach_defaults(GTK_TABLE(table), mean, 0, 2, 4, 5);
    }
    GtkObject *factor = NULL;
    if (with_factor)
        factor = gimp_scale_entry_new(GTK_TABLE(table), 0, 5, "Factor (2-64; 0: model's S):", 150, 6, vals.factor, 0,
                                      64, 1, 2, 0, TRUE, 0, 64, NULL, NULL);
    /* Averaged draws: the least squared error an upscale can have (models/README.md, "Averaged draws"). */
    GtkObject *draws = NULL;
    if (!with_count)
        draws = gimp_scale_entry_new(GTK_TABLE(table), 0, 6, "Averaged draws (1: one draw):", 150, 6,
                                     vals.draws < 1 ? 1 : vals.draws, 1, 64, 1, 4, 0, TRUE, 0, 0, NULL, NULL);
    GtkObject *width = NULL, *height = NULL;
    if (with_count) {
        width = gimp_scale_entry_new(GTK_TABLE(table), 0, 4, "Width (0: model's):", 150, 6, vals.width, 0, 4096, 1,
                                     64, 0, TRUE, 0, 65535, NULL, NULL);
        height = gimp_scale_entry_new(GTK_TABLE(table), 0, 5, "Height (0: model's):", 150, 6, vals.height, 0, 4096,
                                      1, 64, 0, TRUE, 0, 65535, NULL, NULL);
    }
    gtk_widget_show_all(dlg);
    gboolean ok = gimp_dialog_run(GIMP_DIALOG(dlg)) == GTK_RESPONSE_OK;
    if (ok) {
        g_strlcpy(vals.model, gtk_entry_get_text(GTK_ENTRY(model)), sizeof vals.model);
        if (count) vals.count = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(count));
        if (width) vals.width = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(width));
        if (height) vals.height = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(height));
        vals.seed = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(seed));
        vals.temperature = gtk_adjustment_get_value(GTK_ADJUSTMENT(temp));
        if (mean) vals.mean = gtk_toggle_button_get_active(GTK_TOGGLE_BUTTON(mean));
        if (factor) vals.factor = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(factor));
        if (draws) vals.draws = (gint32)gtk_adjustment_get_value(GTK_ADJUSTMENT(draws));
    }
    gtk_widget_destroy(dlg);
    return ok;
}

/* The model, seed and temperature (and, for generation, the count, width and height; for size upscaling, the
 * factor) into `vals`: from the arguments, the dialog, or the last values. Generation's model is argument 1;
 * the editing procedures' is argument 3. Generation's width and height may be left out (scripts written before
 * they existed); plug-in-spn-upscale-size-by has the factor and the pick after the temperature. */
static GimpPDBStatusType read_values(Call *c, gint nparams, const GimpParam *param, gboolean with_count) {
    gint m = with_count ? 1 : 3, k = with_count ? 1 : 0;
    gboolean size = strcmp(c->name, SIZE_PROC) == 0 || strcmp(c->name, SIZE_MEAN_PROC) == 0;
    gboolean by = strcmp(c->name, SIZE_BY_PROC) == 0;
    gimp_get_data(c->name, &vals);
    if (c->mode == GIMP_RUN_NONINTERACTIVE) {
        gboolean sized = with_count && nparams == m + 5 + k;
        if (by && nparams != m + 5) return fail(c, "wrong number of arguments");
        if (!by && nparams != m + 3 + k && !sized) return fail(c, "wrong number of arguments");
        vals.width = sized ? param[m + 3 + k].data.d_int32 : 0;
        vals.height = sized ? param[m + 4 + k].data.d_int32 : 0;
        const gchar *model = param[m].data.d_string;
        g_strlcpy(vals.model, model ? model : "", sizeof vals.model);
        if (with_count) vals.count = param[m + 1].data.d_int32;
        vals.seed = param[m + 1 + k].data.d_int32;
        vals.temperature = param[m + 2 + k].data.d_float;
        /* Scripts choose the mean pick by procedure, or by argument. */
        vals.mean = by ? param[m + 4].data.d_int32 != 0 : strcmp(c->name, SIZE_MEAN_PROC) == 0;
        vals.factor = by ? param[m + 3].data.d_int32 : 0;
        vals.draws = 1;
    } else if (c->mode == GIMP_RUN_INTERACTIVE && !dialog(with_count, size || by)) {
        return GIMP_PDB_CANCEL;
    }
    if (vals.temperature <= 0) return fail(c, "temperature must be > 0");
    if (vals.factor < 0) return fail(c, "the factor must be 0 (the model's scale) or from 2 to 64; got %d", vals.factor);
    return GIMP_PDB_SUCCESS;
}

/* The model named in `vals`, its info and the sampling parameters of `vals`, into `s`. */
static GimpPDBStatusType open_model(Call *c, Session *s) {
    if (spn_init(SPN_ABI_VERSION) != SPN_OK) return fail(c, "libspn is too old: %s", spn_last_error());
    if (spn_model_load(vals.model[0] ? vals.model : NULL, NULL, &s->model) != SPN_OK) {
        s->model = NULL;
        return fail(c, "cannot load the model: %s", spn_last_error());
    }
    s->info.struct_size = sizeof s->info;
    spn_model_get_info(s->model, &s->info);
    spn_sample_params_init(&s->sp);
    s->sp.seed = (uint64_t)vals.seed;
    s->sp.temperature = (float)vals.temperature;
    s->sp.pick = vals.mean ? SPN_PICK_MEAN : SPN_PICK_SAMPLE;
    s->sp.upscale_factor = (uint32_t)vals.factor; /* read by spn_upscale_size only */
    /* The mean level is the same every draw: averaging applies to drawn values only. */
    s->sp.draws = vals.mean || vals.draws < 1 ? 1 : (uint32_t)vals.draws;
    s->sp.progress = on_progress;
    return GIMP_PDB_SUCCESS;
}

/* Frees what open_model and the sampling call left in `s` (nothing when no model was loaded). */
static void close_model(Session *s) {
    if (!s->model) return;
    spn_images_free(s->out, s->n);
    spn_model_free(s->model);
}

/* A layer named `prefix` and the sample's seed, from an spn_image (RGB or RGBA), added on top of `image`. */
static void add_layer(gint32 image, const spn_image *im, const gchar *prefix) {
    gchar *name = g_strdup_printf("%s %" G_GUINT64_FORMAT, prefix, im->seed);
    gboolean alpha = im->channels == 4;
    gint32 layer = gimp_layer_new(image, name, (gint)im->width, (gint)im->height,
                                  alpha ? GIMP_RGBA_IMAGE : GIMP_RGB_IMAGE, 100.0, GIMP_LAYER_MODE_NORMAL);
    g_free(name);
    gimp_image_insert_layer(image, layer, 0, 0);
    GeglBuffer *buf = gimp_drawable_get_buffer(layer);
    gegl_buffer_set(buf, GEGL_RECTANGLE(0, 0, im->width, im->height), 0,
                    babl_format(alpha ? "R'G'B'A u8" : "R'G'B' u8"), im->data, (gint)im->stride);
    g_object_unref(buf);
}

static GimpPDBStatusType run_generate(Call *c, gint nparams, const GimpParam *param) {
    Session s = {0};
    GimpPDBStatusType status = read_values(c, nparams, param, TRUE);
    if (status == GIMP_PDB_SUCCESS) status = open_model(c, &s);
    if (status == GIMP_PDB_SUCCESS && (vals.count < 1 || vals.count > 1024))
        status = fail(c, "count must be in 1..1024");
    if (status == GIMP_PDB_SUCCESS && (vals.width < 0 || vals.height < 0))
        status = fail(c, "width and height must be 0 (the model's) or more; got %dx%d", vals.width, vals.height);
    if (status == GIMP_PDB_SUCCESS) {
        s.sp.count = (uint32_t)vals.count;
        s.sp.width = (uint32_t)vals.width;
        s.sp.height = (uint32_t)vals.height;
        gimp_progress_init("SPN: generating...");
        if (spn_generate(s.model, &s.sp, &s.out, &s.n) != SPN_OK)
            status = fail(c, "generation failed: %s", spn_last_error());
    }
    if (status == GIMP_PDB_SUCCESS) {
        gint32 image = gimp_image_new((gint)s.out[0].width, (gint)s.out[0].height, GIMP_RGB);
        gimp_image_undo_disable(image);
        for (uint32_t i = 0; i < s.n; i++) add_layer(image, &s.out[i], "spn seed");
        gimp_image_undo_enable(image);
        return_image(c, image);
    }
    close_model(&s);
    return status;
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

/* The argument layer into `l`: any size, and RGB (with or without alpha). */
static GimpPDBStatusType open_layer(Call *c, const GimpParam *param, Layer *l) {
    l->image = param[1].data.d_image;
    l->drawable = param[2].data.d_drawable;
    if (!gimp_drawable_is_rgb(l->drawable))
        return fail(c, "SPN works on RGB layers; this one is %s. Use Image > Mode > RGB first.",
                    gimp_drawable_is_gray(l->drawable) ? "grayscale" : "indexed");
    l->w = gimp_drawable_width(l->drawable);
    l->h = gimp_drawable_height(l->drawable);
    l->px = read_rgba(l->drawable, l->w, l->h);
    return GIMP_PDB_SUCCESS;
}

static spn_image_view layer_view(const Layer *l) {
    spn_image_view view = {(uint32_t)l->w, (uint32_t)l->h, 4, (size_t)l->w * 4, l->px};
    return view;
}

/* The result of completion or depth upscaling written back to the layer, as one undo step.
 * Completion: known pixels keep their exact values (alpha included); drawn ones are opaque.
 * Depth upscaling (`known` NULL): every pixel gets new low bits, and keeps its alpha (transparent stays so). */
static GimpPDBStatusType finish_edit(Call *c, spn_status st, const Session *s, Layer *l, const guchar *known) {
    if (st != SPN_OK) return fail(c, "%s", spn_last_error());
    const spn_image *out = &s->out[0];
    for (gint y = 0; y < l->h; y++)
        for (gint x = 0; x < l->w; x++) {
            gint i = y * l->w + x;
            if (known && known[i]) continue;
            for (gint ch = 0; ch < 3; ch++)
                l->px[4 * i + ch] = out->data[y * out->stride + out->channels * x + ch];
            if (known) l->px[4 * i + 3] = 255;
        }
    gimp_image_undo_group_start(l->image);
    write_rgba(l->drawable, l->w, l->h, l->px);
    gimp_image_undo_group_end(l->image);
    if (c->mode != GIMP_RUN_NONINTERACTIVE) gimp_displays_flush();
    return GIMP_PDB_SUCCESS;
}

/* Known pixels (255) and unknown ones (0): unknown are the selected pixels; without a selection, the
 * transparent ones. */
static guchar *known_mask(const Layer *l) {
    gint n = l->w * l->h;
    guchar *known = g_malloc((gsize)n);
    if (!gimp_selection_is_empty(l->image)) {
        gint ox, oy;
        gimp_drawable_offsets(l->drawable, &ox, &oy);
        GeglBuffer *sel = gimp_drawable_get_buffer(gimp_image_get_selection(l->image));
        gegl_buffer_get(sel, GEGL_RECTANGLE(ox, oy, l->w, l->h), 1.0, babl_format("Y u8"), known,
                        GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
        g_object_unref(sel);
        for (gint i = 0; i < n; i++) known[i] = known[i] >= 128 ? 0 : 255;
    } else {
        for (gint i = 0; i < n; i++) known[i] = l->px[4 * i + 3] >= 128 ? 255 : 0;
    }
    return known;
}

/* The mask a completion sends to libspn, and the pixels to write back (`known`, one byte a pixel, nonzero =
 * keep). With a mask drawable, libspn's one mask rule (spn.h) decides both, through spn_mask_known; without,
 * the selection (selected = drawn) or else the layer's alpha gives a 0/255 mask. */
static GimpPDBStatusType completion_mask(Call *c, const Layer *l, gint32 mask, guchar **mask_px, guchar **known,
                                         spn_image_view *mv) {
    if (mask < 0) {
        *known = known_mask(l);
        *mv = (spn_image_view){(uint32_t)l->w, (uint32_t)l->h, 1, (size_t)l->w, *known};
        return GIMP_PDB_SUCCESS;
    }
    if (gimp_drawable_width(mask) != l->w || gimp_drawable_height(mask) != l->h)
        return fail(c, "the mask is %dx%d but the layer is %dx%d", gimp_drawable_width(mask),
                    gimp_drawable_height(mask), l->w, l->h);
    *mask_px = read_rgba(mask, l->w, l->h);
    *known = g_malloc((gsize)l->w * l->h);
    *mv = (spn_image_view){(uint32_t)l->w, (uint32_t)l->h, 4, (size_t)l->w * 4, *mask_px};
    if (spn_mask_known(mv, *known, (size_t)l->w * l->h) != SPN_OK) return fail(c, "%s", spn_last_error());
    return GIMP_PDB_SUCCESS;
}

/* Completion of the layer (`nparams` without the mask drawable, if any; `mask` -1 for none). */
static GimpPDBStatusType complete(Call *c, gint nparams, const GimpParam *param, gint32 mask) {
    Session s = {0};
    Layer l = {0};
    guchar *mask_px = NULL, *known = NULL;
    spn_image_view mv;
    GimpPDBStatusType status = read_values(c, nparams, param, FALSE);
    if (status == GIMP_PDB_SUCCESS) status = open_model(c, &s);
    if (status == GIMP_PDB_SUCCESS) status = open_layer(c, param, &l);
    if (status == GIMP_PDB_SUCCESS) status = completion_mask(c, &l, mask, &mask_px, &known, &mv);
    if (status == GIMP_PDB_SUCCESS) {
        spn_image_view view = layer_view(&l);
        gimp_progress_init(mask < 0 ? "SPN: completing the selection..." : "SPN: completing where the mask says...");
        spn_status st = spn_complete(s.model, &view, &mv, &s.sp, &s.out, &s.n);
        status = finish_edit(c, st, &s, &l, known);
    }
    g_free(known);
    g_free(mask_px);
    g_free(l.px);
    close_model(&s);
    return status;
}

static GimpPDBStatusType run_complete(Call *c, gint nparams, const GimpParam *param) {
    return complete(c, nparams, param, -1);
}

/* The mask drawable is the last parameter. */
static GimpPDBStatusType run_complete_mask(Call *c, gint nparams, const GimpParam *param) {
    return complete(c, nparams - 1, param, param[nparams - 1].data.d_drawable);
}

static GimpPDBStatusType run_upscale_depth(Call *c, gint nparams, const GimpParam *param) {
    Session s = {0};
    Layer l = {0};
    GimpPDBStatusType status = read_values(c, nparams, param, FALSE);
    if (status == GIMP_PDB_SUCCESS) status = open_model(c, &s);
    if (status == GIMP_PDB_SUCCESS) status = open_layer(c, param, &l);
    if (status == GIMP_PDB_SUCCESS) {
        /* The layer's own colours, alpha left out (blending onto white would lighten translucent pixels
         * when their alpha is put back). */
        gint n = l.w * l.h;
        guchar *rgb = g_malloc((gsize)n * 3);
        for (gint i = 0; i < n; i++)
            for (gint ch = 0; ch < 3; ch++) rgb[3 * i + ch] = l.px[4 * i + ch];
        spn_image_view view = {(uint32_t)l.w, (uint32_t)l.h, 3, (size_t)l.w * 3, rgb};
        gimp_progress_init("SPN: upscaling depth...");
        spn_status st = spn_upscale_depth(s.model, &view, &s.sp, &s.out, &s.n);
        g_free(rgb);
        status = finish_edit(c, st, &s, &l, NULL);
    }
    g_free(l.px);
    close_model(&s);
    return status;
}

static GimpPDBStatusType run_upscale_size(Call *c, gint nparams, const GimpParam *param) {
    Session s = {0};
    Layer l = {0};
    GimpPDBStatusType status = read_values(c, nparams, param, FALSE);
    if (status == GIMP_PDB_SUCCESS) status = open_model(c, &s);
    if (status == GIMP_PDB_SUCCESS) status = open_layer(c, param, &l);
    if (status == GIMP_PDB_SUCCESS) {
        spn_image_view view = layer_view(&l);
        gimp_progress_init("SPN: upscaling size...");
        if (spn_upscale_size(s.model, &view, &s.sp, &s.out, &s.n) != SPN_OK) {
            status = fail(c, "upscaling failed: %s", spn_last_error());
        } else {
            gint32 big = gimp_image_new((gint)s.out[0].width, (gint)s.out[0].height, GIMP_RGB);
            add_layer(big, &s.out[0], "spn upscaled seed");
            return_image(c, big);
        }
    }
    g_free(l.px);
    close_model(&s);
    return status;
}

static void run(const gchar *name, gint nparams, const GimpParam *param, gint *nreturn_vals, GimpParam **return_vals) {
    static const struct {
        const gchar *name;
        GimpPDBStatusType (*run)(Call *c, gint nparams, const GimpParam *param);
    } procs[] = {
        {GEN_PROC, run_generate},
        {GEN_SIZED_PROC, run_generate},
        {COMPLETE_PROC, run_complete},
        {DEPTH_PROC, run_upscale_depth},
        {SIZE_PROC, run_upscale_size},
        {SIZE_MEAN_PROC, run_upscale_size},
        {SIZE_BY_PROC, run_upscale_size},
        {MASK_PROC, run_complete_mask},
    };
    static GimpParam ret[2];
    Call c = {name, (GimpRunMode)param[0].data.d_int32, ret, nreturn_vals};
    GimpPDBStatusType status = GIMP_PDB_CALLING_ERROR;
    *nreturn_vals = 1;
    *return_vals = ret;
    ret[0].type = GIMP_PDB_STATUS;
    gegl_init(NULL, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(procs); i++)
        if (strcmp(name, procs[i].name) == 0) status = procs[i].run(&c, nparams, param);
    if (status == GIMP_PDB_SUCCESS && c.mode == GIMP_RUN_INTERACTIVE) gimp_set_data(name, &vals, sizeof vals);
    ret[0].data.d_status = status;
}
