//! Jobs on a canvas of any size (docs/design.md section 8): the canvas is covered by model-size windows that
//! overlap, visited in raster order; each window is sampled with everything already fixed inside it clamped
//! as known (the user's pixels and what earlier windows drew), exactly as completion clamps, from its own
//! random stream seeded by (seed, window). Windows with nothing to draw are skipped, and windows that share
//! no pixel are batched together (`windows::waves`), so the result depends on neither batching nor engine.
//! Memory: the canvas itself plus one batch of windows.
use super::seams;
use super::windows::{self, Window};
use super::{CancelToken, Job, ProgressFn, Rows, Sampler};
use crate::alpha;
use crate::data::{composite_on_white, MAX_IMAGE_SIDE};
use crate::error::{Error, Result};
use image::{DynamicImage, GenericImageView, RgbImage, RgbaImage};

/// The largest canvas a job works on, in pixels (16384 x 16384): the job holds about 8 bytes a pixel per
/// image (the canvas as the networks see it, its known flags, and the result).
pub const MAX_CANVAS_PIXELS: u64 = 1 << 28;

/// The largest factor of size upscaling: past it, nearly every pixel of a window is drawn with almost nothing
/// known, which is generation rather than upscaling.
pub const MAX_UPSCALE_FACTOR: u32 = 64;

/// A job on a canvas of any size. Images may have alpha: the result then has alpha too (module `alpha`).
pub enum CanvasJob<'a> {
    /// New images of `width` x `height`.
    Generate { width: u32, height: u32 },
    /// Draws where `known` (row-major, one flag a pixel, the image's size) is false.
    Complete {
        image: &'a DynamicImage,
        known: &'a [bool],
    },
    /// Each pixel of `image` becomes pixel (F*y, F*x) of an image F times larger; the rest is drawn. F is
    /// `factor`, by default the model's scale S (the image is then slice 0 exactly, and the job runs stages B
    /// and C); any other factor (at least 2) draws the rest as completion does, every known pixel clamped:
    /// 64x64 to 256x256 is factor 4 with an S = 8 model (docs/design.md section 2).
    UpscaleSize {
        image: &'a DynamicImage,
        factor: Option<u32>,
    },
    /// Keeps the top bits of every value and draws the low bits.
    UpscaleDepth { image: &'a DynamicImage },
}

impl CanvasJob<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            CanvasJob::Generate { .. } => "generate",
            CanvasJob::Complete { .. } => "complete",
            CanvasJob::UpscaleSize { .. } => "upscale-size",
            CanvasJob::UpscaleDepth { .. } => "upscale-depth",
        }
    }
}

/// Overlap between neighbouring windows when none is asked for: three eighths of the window (24 pixels of
/// 64), for every job; chosen by measuring seams on a gradient and on held-out emoji against 16 and 32
/// (models/README.md, "Canvases"; `spn bench --canvas` prints the seams).
pub fn default_overlap(window: usize) -> usize {
    window * 3 / 8
}

/// The factor of size upscaling: the one asked for (at least 2, at most [`MAX_UPSCALE_FACTOR`]), else the
/// model's scale S (an error for a model of scale 1, which has no size to upscale).
pub fn upscale_factor(config: &crate::config::PipelineConfig, asked: Option<u32>) -> Result<usize> {
    match asked {
        None if config.scale > 1 => Ok(config.scale as usize),
        None => Err(Error::input(
            "this model has scale 1: there is no size to upscale",
        )),
        Some(f) if (2..=MAX_UPSCALE_FACTOR).contains(&f) => Ok(f as usize),
        Some(f) => Err(Error::input(format!(
            "upscaling factor {f}: it must be from 2 to {MAX_UPSCALE_FACTOR} (by default the model's scale, {})",
            config.scale
        ))),
    }
}

/// One result: an RGB image, or RGBA where the input had alpha.
pub struct CanvasImage {
    pub image: DynamicImage,
    pub seed: u64,
    /// The sum over the windows that were sampled of each window's bits (sampled and clamped sub-pixels):
    /// the image's exact bits under the model when the canvas is the model's size, else not a likelihood.
    pub bits: f64,
}

/// A pixel's known flags: its top bits (all of it for a single-stage model needs both), its low bits.
const MSB: u8 = 1;
const LSB: u8 = 2;
const ALL: u8 = MSB | LSB;

/// One canvas as the networks see it: colour over white (`rgb`, row-major RGB) and each pixel's known flags.
#[derive(Clone)]
struct Work {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
    known: Vec<u8>,
}

/// Refuses a canvas of no pixels, one wider or taller than the image files spn reads, or one too large to
/// hold, naming its size.
pub fn check_canvas_size(what: &str, w: u64, h: u64) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::input(format!("{what} is {w}x{h}: it has no pixels")));
    }
    let side = MAX_IMAGE_SIDE as u64;
    if w > side || h > side {
        return Err(Error::input(format!(
            "{what} is {w}x{h}: sides up to {side} pixels are supported"
        )));
    }
    if w * h > MAX_CANVAS_PIXELS {
        return Err(Error::input(format!(
            "{what} is {w}x{h}, {} megapixels: over the {} megapixels a job can hold in memory",
            w * h / 1_000_000,
            MAX_CANVAS_PIXELS / 1_000_000
        )));
    }
    Ok(())
}

impl Work {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![0; width * height * 3],
            known: vec![0; width * height],
        }
    }

    /// The colour of `img` over white, with every pixel's flags set to `flags`.
    fn from_image(img: &DynamicImage, flags: u8) -> Self {
        let rgb = composite_on_white(img);
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        Self {
            width: w,
            height: h,
            rgb: rgb.into_raw(),
            known: vec![flags; w * h],
        }
    }

    /// The same canvas grown to at least `w` x `h` with white, known pixels at the right and bottom: the
    /// training background, never drawn, cropped off at the end.
    fn padded(self, w: usize, h: usize) -> Self {
        if self.width >= w && self.height >= h {
            return self;
        }
        let (pw, ph) = (self.width.max(w), self.height.max(h));
        let mut p = Work {
            width: pw,
            height: ph,
            rgb: vec![255; pw * ph * 3],
            known: vec![ALL; pw * ph],
        };
        for y in 0..self.height {
            let (src, dst) = (y * self.width, y * pw);
            p.rgb[dst * 3..(dst + self.width) * 3]
                .copy_from_slice(&self.rgb[src * 3..(src + self.width) * 3]);
            p.known[dst..dst + self.width].copy_from_slice(&self.known[src..src + self.width]);
        }
        p
    }

    fn crop_rgb(&self, w: usize, h: usize) -> RgbImage {
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let p = (y as usize * self.width + x as usize) * 3;
            image::Rgb([self.rgb[p], self.rgb[p + 1], self.rgb[p + 2]])
        })
    }
}

/// The stream of draw `d` of the image of `seed` when draws are averaged: draw 0 is the image's own, so one
/// draw is plain sampling; the others are mixed like windows' streams (`windows::window_seed`) but from a
/// different constant, so that no draw repeats a window's stream.
pub fn draw_seed(seed: u64, d: usize) -> u64 {
    if d == 0 {
        seed
    } else {
        windows::window_seed(seed ^ 0xD1B5_4A32_D192_ED03, d)
    }
}

impl Sampler<'_> {
    /// Runs `job` once per seed on a canvas of any size (at least 1x1); with several draws an image
    /// (`SampleOptions::draws`), each image is the average of that many, all sampled in the same batches.
    pub fn canvas(
        &self,
        job: &CanvasJob,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Vec<CanvasImage>> {
        Self::check_seeds(seeds)?;
        let k = self.options.draws.max(1);
        if k == 1 {
            return self.canvas_draws(job, seeds, progress, cancel);
        }
        // Draw d of the image of seed s: its own stream, draw 0 the image's plain one.
        let all: Vec<u64> = seeds
            .iter()
            .flat_map(|&s| (0..k).map(move |d| draw_seed(s, d)))
            .collect();
        let (draws, size) = self.canvas_works(job, &all, progress, cancel)?;
        let mut out = Vec::with_capacity(seeds.len());
        for (&seed, group) in seeds.iter().zip(draws.chunks(k)) {
            let Some((first, _)) = group.first() else {
                continue;
            };
            let mut work = first.clone();
            let n = k as u32;
            for (p, v) in work.rgb.iter_mut().enumerate() {
                let sum: u32 = group.iter().map(|(w, _)| w.rgb[p] as u32).sum();
                *v = ((sum + n / 2) / n) as u8;
            }
            // Not a likelihood of the average: the draws' mean bits, for a host that shows one.
            let bits = group.iter().map(|(_, b)| b).sum::<f64>() / k as f64;
            let image = self.finish(job, &work, size)?;
            out.push(CanvasImage { image, seed, bits });
        }
        Ok(out)
    }

    /// One draw per seed: the finished images.
    fn canvas_draws(
        &self,
        job: &CanvasJob,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Vec<CanvasImage>> {
        let (works, size) = self.canvas_works(job, seeds, progress, cancel)?;
        let mut out = Vec::with_capacity(seeds.len());
        for ((w, bits), &seed) in works.iter().zip(seeds) {
            let image = self.finish(job, w, size)?;
            out.push(CanvasImage {
                image,
                seed,
                bits: *bits,
            });
        }
        Ok(out)
    }

    /// Samples the job's canvas once per seed: each draw's canvas and bits, and the result's size.
    fn canvas_works(
        &self,
        job: &CanvasJob,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<(Vec<(Work, f64)>, (usize, usize))> {
        let (start, size) = self.start(job)?;
        let (mh, mw) = self.hw();
        let start = start.padded(mw, mh);
        let plan = self.plan(&start)?;
        let bs = self.options.batch_size;
        // Images sampled together: enough to fill a batch when waves are small (one window: `bs` images).
        let group = bs.div_ceil(plan.widest_wave()).max(1);
        let mut rows = Rows {
            done: 0,
            total: 0,
            batches: plan.batches(seeds.len(), group, bs),
            batch: 0,
        };
        rows.total = self.rows_per_batch() * rows.batches as u64;
        let mut out = Vec::with_capacity(seeds.len());
        for chunk in seeds.chunks(group) {
            let mut works = vec![start.clone(); chunk.len()];
            let bits = self.run_windows(&mut works, chunk, &plan, &mut rows, progress, cancel)?;
            out.extend(works.into_iter().zip(bits));
        }
        Ok((out, size))
    }

    /// The job's canvas before sampling, and the size of its result.
    fn start(&self, job: &CanvasJob) -> Result<(Work, (usize, usize))> {
        let work = match *job {
            CanvasJob::Generate { width, height } => {
                check_canvas_size("the canvas", width as u64, height as u64)?;
                Work::new(width as usize, height as usize)
            }
            CanvasJob::Complete { image, known } => {
                let (w, h) = image.dimensions();
                check_canvas_size("the image", w as u64, h as u64)?;
                if known.len() != w as usize * h as usize {
                    return Err(Error::input(format!(
                        "the mask has {} pixels but the image is {w}x{h} ({} pixels)",
                        known.len(),
                        w as u64 * h as u64
                    )));
                }
                let mut work = Work::from_image(image, ALL);
                for (f, &k) in work.known.iter_mut().zip(known) {
                    *f = if k { ALL } else { 0 };
                }
                work
            }
            CanvasJob::UpscaleSize { image, factor } => self.start_upscale_size(image, factor)?,
            CanvasJob::UpscaleDepth { image } => {
                self.depth_stage()?;
                let (w, h) = image.dimensions();
                check_canvas_size("the image", w as u64, h as u64)?;
                Work::from_image(image, MSB)
            }
        };
        let size = (work.width, work.height);
        Ok((work, size))
    }

    /// An error for a single-stage model, which has no depth to upscale.
    pub(super) fn depth_stage(&self) -> Result<()> {
        match self.config.msb_bits {
            None => Err(Error::input(
                "this model is a single-stage 8-bit SPN: it has no depth-upscaling stage",
            )),
            Some(_) => Ok(()),
        }
    }

    /// The factor of size upscaling for this model ([`upscale_factor`]).
    pub fn upscale_factor(&self, asked: Option<u32>) -> Result<usize> {
        upscale_factor(self.config, asked)
    }

    /// A canvas F times the small image's size, with the small image at every F-th pixel (known; for F = S,
    /// slice 0) and the rest unknown.
    fn start_upscale_size(&self, image: &DynamicImage, factor: Option<u32>) -> Result<Work> {
        let s = self.upscale_factor(factor)?;
        let (w, h) = image.dimensions();
        check_canvas_size("the small image", w as u64, h as u64)?;
        check_canvas_size(
            &format!("the result of upscaling {w}x{h} {s} times"),
            w as u64 * s as u64,
            h as u64 * s as u64,
        )?;
        let small = Work::from_image(image, ALL);
        let mut work = Work::new(small.width * s, small.height * s);
        for y in 0..small.height {
            for x in 0..small.width {
                let (src, dst) = (y * small.width + x, s * y * work.width + s * x);
                work.rgb[dst * 3..dst * 3 + 3].copy_from_slice(&small.rgb[src * 3..src * 3 + 3]);
                work.known[dst] = ALL;
            }
        }
        Ok(work)
    }

    /// The overlap between windows: the one asked for in the options, else [`default_overlap`], rounded up to a multiple of S, which keeps every window's slice 0 on the canvas's slice 0 (size
    /// upscaling needs it).
    pub fn overlap(&self) -> Result<usize> {
        let (mh, mw) = self.hw();
        let s = self.config.scale as usize;
        let asked = self
            .options
            .overlap
            .unwrap_or_else(|| default_overlap(mw.min(mh)));
        let overlap = asked.div_ceil(s) * s;
        if overlap > mw.min(mh) / 2 {
            return Err(Error::input(format!(
                "overlap {asked} is more than half the model's {mw}x{mh} window"
            )));
        }
        Ok(overlap)
    }

    /// The windows that have anything to draw, and the waves they are sampled in.
    fn plan(&self, start: &Work) -> Result<Plan> {
        let (mh, mw) = self.hw();
        let win = (mw, mh);
        let s = self.config.scale as usize;
        let overlap = self.overlap()?;
        let grid = windows::grid(start.width, start.height, win, overlap);
        let cols = grid.iter().map(|w| w.col + 1).max().unwrap_or(1);
        // Windows that meet a pixel unknown at the start (for completion, the mask's windows); the others
        // have nothing to draw. Every unknown pixel is kept by the last of them that covers it.
        let todo: Vec<Window> = grid
            .into_iter()
            .filter(|w| {
                (w.y..w.y + win.1)
                    .map(|y| y * start.width + w.x)
                    .any(|r| start.known[r..r + win.0].iter().any(|&f| f != ALL))
            })
            .collect();
        let waves = windows::waves(&todo, win);
        log::debug!(
            "{} windows of {}x{} (overlap {overlap}) to sample in {} waves",
            todo.len(),
            win.0,
            win.1,
            waves.len()
        );
        Ok(Plan {
            index: windows::Neighbours::new(&todo),
            windows: todo,
            waves,
            cols,
            margin: windows::margin(overlap, s),
            canvas: (start.width, start.height),
            win,
        })
    }

    /// Samples every planned window of each canvas of a group (one seed each), wave by wave, batches of up to
    /// `batch_size` windows; returns each canvas's bits.
    fn run_windows(
        &self,
        works: &mut [Work],
        seeds: &[u64],
        plan: &Plan,
        rows: &mut Rows,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Vec<f64>> {
        let mut bits = vec![0.0; works.len()];
        for wave in &plan.waves {
            let items: Vec<(usize, usize)> = wave
                .iter()
                .flat_map(|&j| (0..works.len()).map(move |i| (i, j)))
                .collect();
            for chunk in items.chunks(self.options.batch_size) {
                if cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let at: Vec<(usize, usize)> = chunk.to_vec();
                let part = self.window_job(works, plan, &at)?;
                let wseeds: Vec<u64> = chunk
                    .iter()
                    .map(|&(i, j)| windows::window_seed(seeds[i], plan.seed_index(j)))
                    .collect();
                let (img, b) = self.run_part(&part, &wseeds, rows, &mut *progress, cancel)?;
                rows.batch += 1;
                self.write_back(works, plan, &at, &img)?;
                for (&(i, _), b) in chunk.iter().zip(b) {
                    bits[i] += b;
                }
            }
        }
        Ok(bits)
    }

    /// The windows `at` (canvas, planned window) as one batch: their values and known flags.
    fn window_job(&self, works: &[Work], plan: &Plan, at: &[(usize, usize)]) -> Result<Job> {
        let (hu, wu) = self.hw();
        let n = at.len() * 3 * hu * wu;
        let (mut init, mut km, mut kl) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for &(i, j) in at {
            let (wk, win) = (&works[i], plan.windows[j]);
            for c in 0..3 {
                for y in win.y..win.y + hu {
                    for p in y * wk.width + win.x..y * wk.width + win.x + wu {
                        init.push(wk.rgb[p * 3 + c] as i64);
                        km.push(wk.known[p] & MSB != 0);
                        kl.push(wk.known[p] & LSB != 0);
                    }
                }
            }
        }
        Ok(Job {
            init,
            known_msb: km,
            known_lsb: kl,
            run_known: false,
        })
    }

    /// Writes the kept part of sampled windows `(B, 3, h, w)` back into their canvases
    /// (`windows::keep_mask`); those pixels are fixed from now on.
    fn write_back(
        &self,
        works: &mut [Work],
        plan: &Plan,
        at: &[(usize, usize)],
        v: &[u8],
    ) -> Result<()> {
        let (wu, hu) = plan.win;
        for (b, &(i, j)) in at.iter().enumerate() {
            let (wk, win) = (&mut works[i], plan.windows[j]);
            let keep = plan.keep(j);
            for y in 0..hu {
                for x in (0..wu).filter(|&x| keep[y * wu + x]) {
                    let p = (win.y + y) * wk.width + win.x + x;
                    for c in 0..3 {
                        wk.rgb[p * 3 + c] = v[((b * 3 + c) * hu + y) * wu + x];
                    }
                    wk.known[p] = ALL;
                }
            }
        }
        Ok(())
    }

    /// Which window drew each pixel of `job`'s result (its index in visiting order), or
    /// [`seams::KNOWN`] for pixels known from the start; row-major over the result. For measuring seams.
    pub fn window_owners(&self, job: &CanvasJob) -> Result<Vec<u32>> {
        let (start, (w, h)) = self.start(job)?;
        let (mh, mw) = self.hw();
        let start = start.padded(mw, mh);
        let plan = self.plan(&start)?;
        let mut owners = vec![seams::KNOWN; start.width * start.height];
        for (j, win) in plan.windows.iter().enumerate() {
            let keep = plan.keep(j);
            for y in 0..plan.win.1 {
                for x in (0..plan.win.0).filter(|&x| keep[y * plan.win.0 + x]) {
                    let p = (win.y + y) * start.width + win.x + x;
                    if start.known[p] != ALL {
                        owners[p] = j as u32;
                    }
                }
            }
        }
        Ok((0..h)
            .flat_map(|y| owners[y * start.width..y * start.width + w].to_vec())
            .collect())
    }

    /// The result of one canvas: cropped to its size, with the input's alpha carried beside (module `alpha`).
    fn finish(&self, job: &CanvasJob, work: &Work, size: (usize, usize)) -> Result<DynamicImage> {
        let rgb = work.crop_rgb(size.0, size.1);
        Ok(match *job {
            CanvasJob::Generate { .. } => DynamicImage::ImageRgb8(rgb),
            CanvasJob::Complete { image, known } if image.color().has_alpha() => {
                // Known pixels come back as they were, alpha and colour; drawn ones are opaque.
                let src = image.to_rgba8();
                DynamicImage::ImageRgba8(RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                    if known[(y * rgb.width() + x) as usize] {
                        *src.get_pixel(x, y)
                    } else {
                        let c = rgb.get_pixel(x, y).0;
                        image::Rgba([c[0], c[1], c[2], 255])
                    }
                }))
            }
            CanvasJob::UpscaleDepth { image } if image.color().has_alpha() => {
                // Alpha kept; a transparent pixel is returned as it was (its colour is not seen).
                let src = image.to_rgba8();
                DynamicImage::ImageRgba8(with_alpha(&rgb, |x, y| {
                    let p = src.get_pixel(x, y).0;
                    (p[3], (p[3] == 0).then_some(p))
                }))
            }
            CanvasJob::UpscaleSize { image, factor } if image.color().has_alpha() => {
                // Alpha scaled by a filter that is exact at the known pixels, where the small image returns.
                let s = self.upscale_factor(factor)? as u32;
                let src = image.to_rgba8();
                let a = alpha::upscale_aligned(
                    &image::GrayImage::from_fn(src.width(), src.height(), |x, y| {
                        image::Luma([src.get_pixel(x, y).0[3]])
                    }),
                    s,
                );
                DynamicImage::ImageRgba8(with_alpha(&rgb, |x, y| {
                    let on_slice0 = x % s == 0 && y % s == 0;
                    let orig = on_slice0.then(|| src.get_pixel(x / s, y / s).0);
                    (a.get_pixel(x, y).0[0], orig)
                }))
            }
            _ => DynamicImage::ImageRgb8(rgb),
        })
    }
}

/// RGBA from the networks' colour over white: `pixel(x, y)` gives each pixel's alpha and, where the pixel is
/// returned as it was, its original value; every other colour is brought back from over white to straight
/// colour under its alpha (`alpha::uncomposite`).
fn with_alpha(rgb: &RgbImage, pixel: impl Fn(u32, u32) -> (u8, Option<[u8; 4]>)) -> RgbaImage {
    RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| match pixel(x, y) {
        (_, Some(orig)) => image::Rgba(orig),
        (a, None) => {
            let c = rgb.get_pixel(x, y).0;
            let un = |v: u8| alpha::uncomposite(v, a).unwrap_or(v);
            image::Rgba([un(c[0]), un(c[1]), un(c[2]), a])
        }
    })
}

/// Which windows run, in which waves, and what each keeps.
struct Plan {
    /// The windows to sample, in visiting order.
    windows: Vec<Window>,
    index: windows::Neighbours,
    /// Indices into `windows`, wave by wave.
    waves: Vec<Vec<usize>>,
    /// Columns of the canvas's full grid (a window's random stream is its raster index in it).
    cols: usize,
    margin: usize,
    canvas: (usize, usize),
    win: (usize, usize),
}

impl Plan {
    fn seed_index(&self, j: usize) -> usize {
        let w = self.windows[j];
        w.row * self.cols + w.col
    }

    fn keep(&self, j: usize) -> Vec<bool> {
        windows::keep_mask(
            &self.windows,
            &self.index,
            j,
            self.win,
            self.canvas,
            self.margin,
        )
    }

    fn widest_wave(&self) -> usize {
        self.waves.iter().map(Vec::len).max().unwrap_or(1).max(1)
    }

    /// Batches a job of `images` canvases runs, sampled `group` canvases at a time.
    fn batches(&self, images: usize, group: usize, bs: usize) -> usize {
        let per =
            |g: usize| -> usize { self.waves.iter().map(|w| (w.len() * g).div_ceil(bs)).sum() };
        let full = images / group;
        let rest = images % group;
        full * per(group) + if rest > 0 { per(rest) } else { 0 }
    }
}
