//! Image files in and out: RGBA composited on white, fitted to the model size, a deterministic held-out
//! split by file-name hash, and the lossless codecs the model is compared with.
use crate::error::{Error, Result};
use image::{
    imageops::FilterType, DynamicImage, ImageBuffer, ImageDecoder, ImageEncoder, Pixel, RgbImage,
};
use std::path::{Path, PathBuf};
#[cfg(feature = "torch")]
use tch::{Kind, Tensor};

pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// The widest and tallest image read: 65,535 pixels a side.
pub const MAX_IMAGE_SIDE: u32 = 65_535;
/// The most memory one image may take while it is read (1 GiB): its decoded pixels, and its RGBA copy
/// (4 bytes a pixel) made by [`composite_on_white`]; checked on the file's header, before decoding.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Opens an image file (user input: every image spn reads) within [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_BYTES`]. The size comes from the file's header, so an image too large is refused before its
/// pixels are decoded; the decoder is given the same limits as well.
pub fn open_image(path: &Path) -> Result<DynamicImage> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(err(format!(
            "it is {w}x{h} pixels; images up to {MAX_IMAGE_SIDE} pixels a side are read"
        )));
    }
    let bytes = decoder.total_bytes().max(w as u64 * h as u64 * 4);
    if bytes > MAX_IMAGE_BYTES {
        return Err(err(format!(
            "it is {w}x{h} pixels, which would take {} MiB to read, over the limit of {} MiB",
            bytes.div_ceil(1 << 20),
            MAX_IMAGE_BYTES >> 20
        )));
    }
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    decoder.set_limits(limits).map_err(|e| err(e.to_string()))?;
    DynamicImage::from_decoder(decoder).map_err(|e| err(e.to_string()))
}

/// Opens an image file as 8-bit RGB, compositing any alpha over white ([`open_image`]'s limits).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(composite_on_white(&open_image(path)?))
}

/// The one compositing rule (data sets, the CLI, the C ABI): straight alpha over white, rounded.
pub fn composite_on_white(img: &DynamicImage) -> RgbImage {
    let rgba = img.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    })
}

/// [`mask_flags`] as an `(H, W)` bool tensor.
#[cfg(feature = "torch")]
pub fn mask_known(mask: &DynamicImage) -> Result<Tensor> {
    let flags = mask_flags(mask);
    Ok(Tensor::f_from_slice(&flags)?.f_view([mask.height() as i64, mask.width() as i64])?)
}

/// The one mask rule of completion, shared by the CLI, the C ABI and (through the ABI) the GIMP plug-in: a
/// mask pixel marks its image pixel as known where it is opaque (alpha >= 128) and light (the Rec. 709 luma of
/// its colour composited over white is above 127). Dark or transparent mask pixels are drawn by the model.
/// One flag a pixel, row-major.
pub fn mask_flags(mask: &DynamicImage) -> Vec<bool> {
    let rgba = mask.to_rgba8();
    let luma = DynamicImage::ImageRgb8(composite_on_white(mask)).to_luma8();
    luma.pixels()
        .zip(rgba.pixels())
        .map(|(l, p)| l.0[0] > 127 && p.0[3] >= 128)
        .collect()
}

/// The one rule for an image kept with its alpha at a given size: as it is when it has that size; otherwise
/// composited on white and then fitted, like every other read ([`fit`] of [`composite_on_white`]), and opaque.
/// Resizing straight alpha would bleed the colour hidden under transparent pixels into the edges.
pub fn fit_rgba(img: &DynamicImage, height: u32, width: u32) -> image::RgbaImage {
    if (img.width(), img.height()) == (width, height) {
        return img.to_rgba8();
    }
    DynamicImage::ImageRgb8(fit(composite_on_white(img), height, width)).to_rgba8()
}

/// Centre-crops to the target aspect ratio and resizes; a no-op for images already of that size.
pub fn fit<P>(
    img: ImageBuffer<P, Vec<P::Subpixel>>,
    height: u32,
    width: u32,
) -> ImageBuffer<P, Vec<P::Subpixel>>
where
    P: Pixel + 'static,
{
    if img.width() == width && img.height() == height {
        return img;
    }
    let (w, h) = (img.width() as u64, img.height() as u64);
    let (cw, ch) = if w * height as u64 > h * width as u64 {
        ((h * width as u64 / height as u64).max(1), h)
    } else {
        (w, (w * height as u64 / width as u64).max(1))
    };
    let cropped = image::imageops::crop_imm(
        &img,
        ((w - cw) / 2) as u32,
        ((h - ch) / 2) as u32,
        cw as u32,
        ch as u32,
    )
    .to_image();
    image::imageops::resize(&cropped, width, height, FilterType::Lanczos3)
}

#[cfg(feature = "torch")]
/// `(3, H, W)` uint8 tensor of an image.
pub fn to_tensor(img: &RgbImage) -> Result<Tensor> {
    channels_first(img.as_raw(), img.height(), img.width(), 3)
}

#[cfg(feature = "torch")]
/// `(C, H, W)` uint8 tensor of interleaved `(H, W, C)` pixels.
fn channels_first(raw: &[u8], height: u32, width: u32, channels: i64) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(raw)?
        .f_view([height as i64, width as i64, channels])?
        .f_permute([2, 0, 1])?
        .f_contiguous()?)
}

#[cfg(feature = "torch")]
/// An image from a `(3, H, W)` tensor with values in 0..=255.
pub fn from_tensor(t: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = t.size3()?;
    if c != 3 {
        return Err(Error::input(format!("expected 3 channels, got {c}")));
    }
    let t = t
        .f_to_device(tch::Device::Cpu)?
        .f_clamp(0, 255)?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?;
    let v = Vec::<u8>::try_from(t.f_flatten(0, -1)?)?;
    RgbImage::from_raw(w as u32, h as u32, v)
        .ok_or_else(|| Error::Other("image buffer size".into()))
}

/// Stable 64-bit FNV-1a hash, so the split never changes between versions or machines.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Whether a file belongs to the held-out split (by its file name only, not its folder).
pub fn is_heldout(path: &Path, heldout_percent: u32) -> bool {
    file_name_hash(path) % 100 < heldout_percent as u64
}

/// The hash of a file's name (not its folder) that the split and other per-file choices use.
pub fn file_name_hash(path: &Path) -> u64 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fnv1a(&name)
}

/// The folders directly inside `dir`, sorted by name (the styles of a data set); hidden ones are left out.
pub fn sub_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |e: std::io::Error| Error::input(format!("cannot read {}: {e}", dir.display()));
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden {
            v.push(path);
        }
    }
    v.sort();
    Ok(v)
}

/// Image files of a folder and its sub-folders (one per style in a prepared data set), sorted by path.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    collect_images(dir, &mut v)?;
    v.sort();
    Ok(v)
}

fn collect_images(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::input(format!("cannot read data folder {}: {e}", dir.display())))?;
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        // Linked folders are not followed (a link to a parent would never end).
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_images(&p, into)?;
        } else if p.is_file()
            && p.extension().is_some_and(|e| {
                IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str())
            })
        {
            into.push(p);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    All,
    Train,
    Heldout,
}

/// Files of a folder in one split.
pub fn split_files(dir: &Path, split: Split, heldout_percent: u32) -> Result<Vec<PathBuf>> {
    Ok(list_images(dir)?
        .into_iter()
        .filter(|p| match split {
            Split::All => true,
            Split::Train => !is_heldout(p, heldout_percent),
            Split::Heldout => is_heldout(p, heldout_percent),
        })
        .collect())
}

#[cfg(feature = "torch")]
/// Loads files into one `(N, 3, H, W)` uint8 tensor, fitting each to the size.
pub fn load_batch(files: &[PathBuf], height: i64, width: i64) -> Result<Tensor> {
    let mut ts = Vec::with_capacity(files.len());
    for f in files {
        ts.push(to_tensor(&fit(load_rgb(f)?, height as u32, width as u32))?);
    }
    if ts.is_empty() {
        return Err(Error::input("no images"));
    }
    Ok(Tensor::f_stack(&ts, 0)?)
}

#[cfg(feature = "torch")]
/// [`load_batch`] keeping alpha: one `(N, 4, H, W)` uint8 tensor of straight-alpha RGBA (opaque where a file
/// has no alpha), and how many of the images have any transparency.
pub fn load_batch_rgba(files: &[PathBuf], height: i64, width: i64) -> Result<(Tensor, usize)> {
    let (mut ts, mut transparent) = (Vec::with_capacity(files.len()), 0);
    for f in files {
        let img = fit_rgba(&open_image(f)?, height as u32, width as u32);
        transparent += img.pixels().any(|p| p.0[3] < 255) as usize;
        ts.push(channels_first(img.as_raw(), img.height(), img.width(), 4)?);
    }
    if ts.is_empty() {
        return Err(Error::input("no images"));
    }
    Ok((Tensor::f_stack(&ts, 0)?, transparent))
}

/// Bytes of the image as lossless WebP from libwebp at its strongest setting (`cwebp -lossless -z 9`:
/// method 6, quality 100), the baseline a likelihood model has to beat. The `image` crate's own WebP
/// encoder is far weaker (about 40% larger files on emoji), so it is not used here.
pub fn webp_lossless(img: &RgbImage) -> Result<Vec<u8>> {
    webp_encode(webp::Encoder::from_rgb(
        img.as_raw(),
        img.width(),
        img.height(),
    ))
}

/// [`webp_lossless`] of an RGB or RGBA image (alpha kept).
fn webp_lossless_any(img: &DynamicImage) -> Result<Vec<u8>> {
    match img {
        DynamicImage::ImageRgba8(i) => {
            webp_encode(webp::Encoder::from_rgba(i.as_raw(), i.width(), i.height()))
        }
        i => webp_lossless(&i.to_rgb8()),
    }
}

fn webp_encode(encoder: webp::Encoder) -> Result<Vec<u8>> {
    let mut config = webp::WebPConfig::new().map_err(|()| Error::Other("libwebp config".into()))?;
    config.lossless = 1;
    config.quality = 100.0;
    config.method = 6;
    // Colours under alpha 0 are kept too: a known pixel comes back exactly, seen or not.
    config.exact = 1;
    let mem = encoder
        .encode_advanced(&config)
        .map_err(|e| Error::Other(format!("webp encode: {e:?}")))?;
    Ok(mem.to_vec())
}

/// Bytes of the image as lossless JPEG XL from libjxl at its strongest effort (`cjxl -q 100 -e 9`), the
/// strongest lossless codec a user could pick instead of the model; None where `cjxl` is not installed
/// (Debian's `libjxl-tools`; `make test` installs it).
pub fn jxl_lossless(img: &RgbImage) -> Result<Option<usize>> {
    let dir = tempfile::tempdir()?;
    let (src, dst) = (dir.path().join("in.png"), dir.path().join("out.jxl"));
    img.save(&src)
        .map_err(|e| Error::Other(format!("png for cjxl: {e}")))?;
    let run = std::process::Command::new("cjxl")
        .args(["-q", "100", "-e", "9"])
        .arg(&src)
        .arg(&dst)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match run {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Other(format!("cjxl: {e}"))),
        Ok(out) if !out.status.success() => Err(Error::Other(format!(
            "cjxl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Ok(_) => Ok(Some(std::fs::metadata(&dst)?.len() as usize)),
    }
}

/// Sizes of one image under the lossless codecs the model is compared with.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodecSizes {
    /// PNG from the `image` crate, best compression, adaptive filters.
    pub png: usize,
    /// WebP from libwebp at its strongest lossless setting.
    pub webp: usize,
    /// JPEG XL from libjxl at its strongest effort, where `cjxl` is installed.
    pub jxl: Option<usize>,
}

impl std::ops::Add for CodecSizes {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            png: self.png + o.png,
            webp: self.webp + o.webp,
            jxl: self.jxl.zip(o.jxl).map(|(a, b)| a + b),
        }
    }
}

/// Bytes of the image as lossless PNG, WebP and (where installed) JPEG XL.
pub fn codec_sizes(img: &RgbImage) -> Result<CodecSizes> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut png,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Other(format!("png encode: {e}")))?;
    Ok(CodecSizes {
        png: png.len(),
        webp: webp_lossless(img)?.len(),
        jxl: jxl_lossless(img)?,
    })
}

pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    write_atomically(path, |w| {
        img.write_to(w, image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
}

/// The formats `save_image` writes, by file extension.
pub fn output_format(path: &Path) -> Result<image::ImageFormat> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(image::ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(image::ImageFormat::Jpeg),
        Some("webp") => Ok(image::ImageFormat::WebP),
        _ => Err(Error::input(format!(
            "cannot tell which format to write {}: give a name ending in .png, .jpg or .webp",
            path.display()
        ))),
    }
}

/// Writes an image in the format its extension names (`output_format`); WebP is lossless (libwebp). Written
/// to a temporary file first, so a failed or interrupted write never leaves a partial file at `path`.
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    save_any(&DynamicImage::ImageRgb8(img.clone()), path)
}

/// [`save_image`] for RGB or RGBA: PNG and WebP keep alpha; JPEG has none, so RGBA is composited over white
/// there (the one compositing rule).
pub fn save_any(img: &DynamicImage, path: &Path) -> Result<()> {
    let format = output_format(path)?;
    let img = match (format, img.color().has_alpha()) {
        (_, false) => DynamicImage::ImageRgb8(img.to_rgb8()),
        (image::ImageFormat::Jpeg, true) => {
            log::info!(
                "JPEG has no alpha: {} is written over white",
                path.display()
            );
            DynamicImage::ImageRgb8(composite_on_white(img))
        }
        (_, true) => DynamicImage::ImageRgba8(img.to_rgba8()),
    };
    write_atomically(path, |w| match format {
        image::ImageFormat::WebP => {
            let bytes = webp_lossless_any(&img).map_err(|e| e.to_string())?;
            std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())
        }
        f => img.write_to(w, f).map_err(|e| e.to_string()),
    })
}

/// The folder a file goes in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> Result<(), String>,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Io(std::io::Error::other(format!(
            "cannot write {}: {e}",
            path.display()
        )))
    };
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".spn-")
        .tempfile_in(dir)
        .map_err(|e| fail(&e))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w).map_err(|e| fail(&e))?;
        std::io::Write::flush(&mut w).map_err(|e| fail(&e))?;
    }
    persist(tmp, path)
}

/// Moves a finished temporary file into place (atomic on one file system), readable like any new file
/// (temporary files are created private).
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| cannot_write(path, e))?;
    }
    tmp.persist(path).map_err(|e| cannot_write(path, e.error))?;
    Ok(())
}

/// An I/O error that names the file (the OS's own message doesn't), keeping its kind.
pub(crate) fn cannot_write(path: &Path, e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("cannot write {}: {e}", path.display()),
    ))
}

/// Tiles images of one size into one picture, as square as possible, with a 2-pixel white border.
pub fn grid_of(images: &[RgbImage]) -> RgbImage {
    let n = images.len() as i64;
    let (w, h) = images
        .first()
        .map_or((0, 0), |i| (i.width() as i64, i.height() as i64));
    let cols = (n as f64).sqrt().ceil().max(1.0) as i64;
    let rows = (n + cols - 1) / cols;
    let gap = 2i64;
    let mut out = RgbImage::from_pixel(
        (cols * (w + gap) + gap) as u32,
        (rows * (h + gap) + gap) as u32,
        image::Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let i = i as i64;
        let (x, y) = (gap + (i % cols) * (w + gap), gap + (i / cols) * (h + gap));
        image::imageops::replace(&mut out, img, x, y);
    }
    out
}

/// [`grid_of`] for `(N, 3, H, W)` images.
#[cfg(feature = "torch")]
pub fn grid(images: &Tensor) -> Result<RgbImage> {
    let n = images.size4()?.0;
    let imgs = (0..n)
        .map(|i| from_tensor(&images.f_get(i)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(grid_of(&imgs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// A PNG file that says it is a `w` x `h` 8-bit grey image, with no pixel data: what a reader learns
    /// before decoding.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut out = vec![137, 80, 78, 71, 13, 10, 26, 10];
        let mut chunk = |kind: &[u8], data: &[u8]| {
            out.extend((data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            out.extend(&body);
            out.extend(crc32(&body).to_be_bytes());
        };
        let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        out
    }

    #[test]
    fn images_too_large_are_refused_from_their_header() {
        let dir = tempfile::tempdir().unwrap();
        // 20000x20000 grey is 400 MB decoded (under the image crate's default limit) and 1.6 GB as RGBA.
        for (w, h, says) in [
            (20_000, 20_000, "over the limit of 1024 MiB"),
            (70_000, 10, "up to 65535 pixels a side"),
            (10, 70_000, "up to 65535 pixels a side"),
        ] {
            let p = dir.path().join(format!("{w}x{h}.png"));
            std::fs::write(&p, png_header(w, h)).unwrap();
            let start = std::time::Instant::now();
            for r in [open_image(&p).map(|_| ()), load_rgb(&p).map(|_| ())] {
                let err = r.expect_err("refused").to_string();
                assert!(
                    err.contains(&format!("{w}x{h} pixels")) && err.contains(says),
                    "{err}"
                );
            }
            assert!(start.elapsed().as_secs() < 1, "decoded");
        }
        // Within the limits, the same header is read on (and its missing pixels are the error).
        let p = dir.path().join("small.png");
        std::fs::write(&p, png_header(16, 16)).unwrap();
        let err = open_image(&p).expect_err("no pixels").to_string();
        assert!(!err.contains("pixels;") && !err.contains("limit"), "{err}");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/emoji8/1f308.png");
        assert_eq!(load_rgb(&fixture).unwrap().dimensions(), (8, 8));
    }
}
