//! `spn data`: turns sources (folders of images, Iconify vector icon sets) into a training set of PNG files
//! composited on white, split into `OUT/train` and `OUT/heldout` by the file-name hash `spn train` uses.
//!
//! Vector sets go into one sub-folder per style (`OUT/train/noto/1f600.png`), each emoji under the same file
//! name in every style, so an emoji held out is held out in all of them (see `iconify::EmojiKeys`).
use crate::data;
use crate::error::{Error, Result};
use crate::iconify::{self, EmojiKeys, IconSet};
use image::DynamicImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct PrepareOptions {
    /// A folder of image files, written flat into `OUT/{train,heldout}` (as before vector sets existed).
    pub src: Option<PathBuf>,
    /// A sub-folder (a style's name) for the files of `src`; none: flat.
    pub src_style: Option<String>,
    /// Iconify `icons.json` files; each set's `chars.json` beside it, if any, gives code points.
    pub iconify: Vec<PathBuf>,
    /// File names (of, say, the PNG set) that rendered emoji take when their code points match; defaults to
    /// the files of `src`.
    pub keys_from: Option<PathBuf>,
    pub out: PathBuf,
    pub heldout_percent: u32,
    /// Fit folder images to, and render icons at, SIZE x SIZE. Needed for icon sets.
    pub size: Option<u32>,
    /// Write RGBA with the sources' alpha instead of compositing on white.
    pub keep_alpha: bool,
    /// Write one CROP x CROP window of each image (after fitting or rendering at SIZE) instead of the
    /// whole ([`crop_window`]).
    pub crop: Option<u32>,
}

enum From {
    File(PathBuf),
    Svg(String),
}

/// One file to write.
pub struct Item {
    from: From,
    pub to: PathBuf,
    pub heldout: bool,
}

/// Where every image goes. Two sources must not land on one name, and nothing from another run (another
/// split, say) may stay beside them, or held-out images could leak into training.
pub fn plan(opts: &PrepareOptions) -> Result<Vec<Item>> {
    let mut items: BTreeMap<PathBuf, Item> = BTreeMap::new();
    let mut sources: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut add = |item: Item, what: String| {
        if let Some(other) = sources.get(&item.to) {
            return Err(Error::input(format!(
                "{other} and {what} would both become {}: rename one",
                item.to.display()
            )));
        }
        sources.insert(item.to.clone(), what);
        items.insert(item.to.clone(), item);
        Ok(())
    };
    let split_dir = |held: bool| opts.out.join(if held { "heldout" } else { "train" });
    if let Some(src) = &opts.src {
        let files = data::list_images(src)?;
        if files.is_empty() {
            return Err(Error::input(format!("no images in {}", src.display())));
        }
        for f in files {
            let held = data::is_heldout(&f, opts.heldout_percent);
            let dir = split_dir(held);
            let dir = opts.src_style.as_ref().map_or(dir.clone(), |s| dir.join(s));
            let to = dir.join(format!("{}.png", stem(&f)));
            add(
                Item {
                    from: From::File(f.clone()),
                    to,
                    heldout: held,
                },
                f.display().to_string(),
            )?;
        }
    }
    if !opts.iconify.is_empty() {
        if opts.size.is_none() {
            return Err(Error::input(
                "icon sets are rendered at --size SIZE: give one",
            ));
        }
        let keys = emoji_keys(opts)?;
        for path in &opts.iconify {
            let set = IconSet::load(path)?;
            for icon in set.icons {
                let key = keys.key(&icon.name);
                let name = format!("{key}.png");
                let held = data::is_heldout(Path::new(&name), opts.heldout_percent);
                let to = split_dir(held).join(&set.prefix).join(name);
                let what = format!("icon '{}' of {}", icon.name, path.display());
                add(
                    Item {
                        from: From::Svg(icon.svg),
                        to,
                        heldout: held,
                    },
                    what,
                )?;
            }
        }
    }
    if items.is_empty() {
        return Err(Error::input(
            "nothing to prepare: give --src DIR and/or --iconify FILE",
        ));
    }
    refuse_leftovers(opts, &items)?;
    Ok(items.into_values().collect())
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn emoji_keys(opts: &PrepareOptions) -> Result<EmojiKeys> {
    let mut chars = BTreeMap::new();
    for path in &opts.iconify {
        chars.extend(iconify::load_chars(path)?);
    }
    let stems = match opts.keys_from.as_ref().or(opts.src.as_ref()) {
        Some(dir) => data::list_images(dir)?.iter().map(|p| stem(p)).collect(),
        None => vec![],
    };
    Ok(EmojiKeys::new(&chars, &stems))
}

fn refuse_leftovers(opts: &PrepareOptions, items: &BTreeMap<PathBuf, Item>) -> Result<()> {
    for split in ["train", "heldout"] {
        let dir = opts.out.join(split);
        if !dir.is_dir() {
            continue;
        }
        let stale: Vec<PathBuf> = data::list_images(&dir)?
            .into_iter()
            .filter(|p| !items.contains_key(p))
            .collect();
        if let Some(first) = stale.first() {
            return Err(Error::input(format!(
                "{} already holds {} image(s) this run would not write (e.g. {}), perhaps from another split: give an empty --out",
                dir.display(),
                stale.len(),
                first.display()
            )));
        }
    }
    Ok(())
}

/// Reads or renders one item at the requested size, composited on white or, with `keep_alpha`, as RGBA
/// ([`data::fit_rgba`]: a file that has to be resized is composited first, as every reader does).
fn image_of(
    item: &Item,
    size: Option<u32>,
    keep_alpha: bool,
    crop: Option<u32>,
) -> Result<DynamicImage> {
    let rgba = match (&item.from, size) {
        (From::File(f), None) => data::open_image(f)?.to_rgba8(),
        (From::File(f), Some(n)) => data::fit_rgba(&data::open_image(f)?, n, n),
        (From::Svg(svg), Some(n)) => iconify::render(svg, n)
            .map_err(|e| Error::input(format!("{}: {e}", item.to.display())))?,
        (From::Svg(_), None) => return Err(Error::input("icon sets need --size")),
    };
    let rgba = match crop {
        Some(n) => crop_window(&rgba, n, &item.to)?,
        None => rgba,
    };
    let rgba = DynamicImage::ImageRgba8(rgba);
    Ok(if keep_alpha {
        rgba
    } else {
        DynamicImage::ImageRgb8(data::composite_on_white(&rgba))
    })
}

/// Draws for a window with content before taking the one that has the most.
const CROP_DRAWS: usize = 32;

/// An `n` x `n` window of `img` at a position drawn at random, seeded by the file name `to` (so that a run
/// writes the same data every time), centred on a non-transparent pixel drawn at random: the first of
/// [`CROP_DRAWS`] draws of which at least a quarter is not transparent, else the draw with the most. Why: a 64x64 model that upscales a 256x256 canvas window by
/// window sees details four times larger than in the 64x64 renders it was trained on (outlines 4 to 8
/// pixels wide), and windows of 256x256 renders are that data (models/README.md, stop 23).
pub fn crop_window(img: &image::RgbaImage, n: u32, to: &Path) -> Result<image::RgbaImage> {
    use rand::{Rng, SeedableRng};
    let (w, h) = img.dimensions();
    if n == 0 || n > w || n > h {
        return Err(Error::input(format!(
            "--crop {n} must be at least 1 and at most the image's size, {w}x{h}"
        )));
    }
    let seed = data::file_name_hash(to);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let covered = |x0: u32, y0: u32| {
        (y0..y0 + n)
            .flat_map(|y| (x0..x0 + n).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[3] > 0)
            .count() as u64
    };
    // Windows centred on a non-transparent pixel (any window in a wholly transparent image).
    let opaque: Vec<(u32, u32)> = img
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[3] > 0)
        .map(|(x, y, _)| (x, y))
        .collect();
    let mut best = (0, 0, 0);
    for _ in 0..CROP_DRAWS {
        let (x, y) = match opaque.len() {
            0 => (rng.gen_range(0..=w - n), rng.gen_range(0..=h - n)),
            m => {
                let (cx, cy) = opaque[rng.gen_range(0..m)];
                let at = |c: u32, size: u32| c.saturating_sub(n / 2).min(size - n);
                (at(cx, w), at(cy, h))
            }
        };
        let c = covered(x, y);
        if c > best.2 || best == (0, 0, 0) {
            best = (x, y, c);
        }
        if 4 * c >= u64::from(n) * u64::from(n) {
            break;
        }
    }
    Ok(image::imageops::crop_imm(img, best.0, best.1, n, n).to_image())
}

/// Writes every item, on all cores; `done` is called once per file written. Returns (train, held-out) counts.
pub fn write(
    items: &[Item],
    opts: &PrepareOptions,
    done: &(dyn Fn() + Sync),
) -> Result<(usize, usize)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<()> {
                    for item in part {
                        let img = image_of(item, opts.size, opts.keep_alpha, opts.crop)?;
                        data::save_any(&img, &item.to)?;
                        done();
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| Error::Other("a data worker panicked".into()))??;
        }
        Ok::<(), Error>(())
    })?;
    let held = items.iter().filter(|i| i.heldout).count();
    Ok((items.len() - held, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 256x256 image transparent but for an opaque 40x40 square at (200, 8).
    fn square() -> image::RgbaImage {
        image::RgbaImage::from_fn(256, 256, |x, y| {
            let inside = (200..240).contains(&x) && (8..48).contains(&y);
            image::Rgba([x as u8, y as u8, 7, if inside { 255 } else { 0 }])
        })
    }

    #[test]
    fn a_crop_is_a_window_with_content_the_same_for_the_same_file() {
        let img = square();
        let to = Path::new("out/train/noto/1f600.png");
        let a = crop_window(&img, 64, to).unwrap();
        assert_eq!(a.dimensions(), (64, 64));
        assert_eq!(a, crop_window(&img, 64, to).unwrap(), "seeded by the name");
        // The window is a piece of the image: its red and green are its position.
        let (x0, y0) = (
            u32::from(a.get_pixel(0, 0).0[0]),
            u32::from(a.get_pixel(0, 0).0[1]),
        );
        assert_eq!(
            a,
            image::imageops::crop_imm(&img, x0, y0, 64, 64).to_image()
        );
        // A quarter of it at least is the square, which covers 2.4% of the image.
        let opaque = a.pixels().filter(|p| p.0[3] > 0).count();
        assert!(4 * opaque >= 64 * 64, "{opaque} opaque pixels");
        // Other names, other places.
        let places: std::collections::BTreeSet<(u8, u8)> = (0..8)
            .map(|i| {
                let c = crop_window(&img, 64, Path::new(&format!("{i}.png"))).unwrap();
                (c.get_pixel(0, 0).0[0], c.get_pixel(0, 0).0[1])
            })
            .collect();
        assert!(places.len() > 1);
    }

    #[test]
    fn a_crop_larger_than_the_image_is_refused() {
        let img = square();
        for n in [0, 257] {
            let e = crop_window(&img, n, Path::new("a.png")).unwrap_err();
            assert!(e.to_string().contains("--crop"), "{e}");
        }
        assert_eq!(crop_window(&img, 256, Path::new("a.png")).unwrap(), img);
    }
}
