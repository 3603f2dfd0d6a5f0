//! Vector emoji from Iconify JSON icon sets (the npm packages `@iconify-json/*`), rendered with `resvg` at
//! any size. A set is one JSON file: `{"prefix", "width", "height", "icons": {name: {"body", ...}}}`, where each
//! icon's `body` is the inside of an `<svg>` element and its box defaults to the set's (format:
//! https://iconify.design/docs/types/iconify-json.html). Aliases (mirrored or renamed copies of other icons)
//! and hidden icons are left out: they would only repeat their parents.
use crate::error::{Error, Result};
use image::RgbaImage;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct SetFile {
    prefix: String,
    #[serde(default = "default_box")]
    width: f32,
    #[serde(default = "default_box")]
    height: f32,
    #[serde(default)]
    left: f32,
    #[serde(default)]
    top: f32,
    icons: BTreeMap<String, IconFile>,
}

#[derive(Deserialize)]
struct IconFile {
    body: String,
    width: Option<f32>,
    height: Option<f32>,
    left: Option<f32>,
    top: Option<f32>,
    #[serde(default)]
    hidden: bool,
}

fn default_box() -> f32 {
    16.0
}

/// One icon as a standalone SVG document.
pub struct Icon {
    pub name: String,
    pub svg: String,
}

/// A loaded icon set: its prefix (the style's name, e.g. `noto`) and its visible icons, sorted by name.
pub struct IconSet {
    pub prefix: String,
    pub icons: Vec<Icon>,
}

impl IconSet {
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Image {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let set: SetFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not an Iconify icon set: {e}")))?;
        let icons = set
            .icons
            .into_iter()
            .filter(|(_, i)| !i.hidden)
            .map(|(name, i)| {
                let (l, t) = (i.left.unwrap_or(set.left), i.top.unwrap_or(set.top));
                let (w, h) = (i.width.unwrap_or(set.width), i.height.unwrap_or(set.height));
                let svg = format!(
                    r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{w}" height="{h}" viewBox="{l} {t} {w} {h}">{}</svg>"#,
                    i.body
                );
                Icon { name, svg }
            })
            .collect();
        Ok(Self {
            prefix: set.prefix,
            icons,
        })
    }
}

/// Code points of the emoji a set's names stand for, from the `chars.json` beside an icon set (code point
/// sequence, e.g. `1f468-200d-1f469`, to icon name); empty if there is none.
pub fn load_chars(icons_json: &Path) -> Result<BTreeMap<String, String>> {
    let path: PathBuf = icons_json.with_file_name("chars.json");
    if !path.is_file() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Image {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Image {
        path,
        msg: format!("not an Iconify chars map: {e}"),
    })
}

/// Renders an SVG document into a `size` x `size` RGBA image, scaled to fit and centred, on a transparent
/// background (straight, not premultiplied, alpha).
pub fn render(svg: &str, size: u32) -> Result<RgbaImage> {
    let opt = resvg::usvg::Options::default();
    let tree = resvg::usvg::Tree::from_str(svg, &opt)
        .map_err(|e| Error::input(format!("cannot parse SVG: {e}")))?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size, size)
        .ok_or_else(|| Error::input(format!("cannot render at {size}x{size}")))?;
    let s = tree.size();
    let scale = size as f32 / s.width().max(s.height());
    let (dx, dy) = (
        (size as f32 - s.width() * scale) / 2.0,
        (size as f32 - s.height() * scale) / 2.0,
    );
    let transform = resvg::tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy);
    resvg::render(&tree, transform, &mut pixmap.as_mut());
    let raw: Vec<u8> = pixmap
        .pixels()
        .iter()
        .flat_map(|p| {
            let c = p.demultiply();
            [c.red(), c.green(), c.blue(), c.alpha()]
        })
        .collect();
    RgbaImage::from_raw(size, size, raw).ok_or_else(|| Error::Other("pixmap size".into()))
}

/// Removes the emoji variation selector (U+FE0F) from a code point sequence such as `2764-fe0f`: sets
/// disagree on where they write it, and it does not change which emoji is meant.
pub fn strip_variation(cps: &str) -> String {
    cps.split('-')
        .filter(|p| !p.eq_ignore_ascii_case("fe0f"))
        .collect::<Vec<_>>()
        .join("-")
}

/// The file name an emoji gets in every style, so that its held-out split (a hash of the file name, see
/// `data::is_heldout`) is the same in all of them: the name of the file of `keys` (file stems, e.g. of the
/// PNG set) that has its code points, else its code points, else its icon name.
pub struct EmojiKeys {
    by_name: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
}

impl EmojiKeys {
    /// `chars`: code point to icon name, merged over all sets (names are shared between Iconify's emoji
    /// sets, so a set without a chars map is keyed through the others). `file_stems`: names of existing
    /// files to align with.
    pub fn new(chars: &BTreeMap<String, String>, file_stems: &[String]) -> Self {
        let files: BTreeMap<String, String> = file_stems
            .iter()
            .map(|s| (strip_variation(s), s.clone()))
            .collect();
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for (cp, name) in chars {
            let key = strip_variation(cp);
            // One name may be reached from several spellings; prefer one that names an existing file, then
            // the shortest, so the choice does not depend on map order.
            let better = |old: &String| {
                let (nf, of) = (files.contains_key(&key), files.contains_key(old));
                nf && !of || (nf == of && (key.len(), &key) < (old.len(), old))
            };
            match by_name.get(name) {
                Some(old) if !better(old) => {}
                _ => {
                    by_name.insert(name.clone(), key);
                }
            }
        }
        Self { by_name, files }
    }

    pub fn key(&self, icon_name: &str) -> String {
        match self.by_name.get(icon_name) {
            Some(cp) => self.files.get(cp).cloned().unwrap_or_else(|| cp.clone()),
            None => icon_name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_square_body_centred_on_transparency() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" viewBox="0 0 20 10"><rect width="20" height="10" fill="#ff0000"/></svg>"##;
        let img = render(svg, 8).unwrap();
        // A 2:1 box fits the width: rows 2..6 red, the rest transparent.
        assert_eq!(img.get_pixel(4, 4).0, [255, 0, 0, 255]);
        assert_eq!(img.get_pixel(4, 0).0[3], 0);
        assert_eq!(img.get_pixel(4, 7).0[3], 0);
    }

    #[test]
    fn keys_align_with_existing_files_and_fall_back_to_names() {
        let chars: BTreeMap<String, String> = [
            ("2764", "red-heart"),
            ("1f600", "grinning-face"),
            ("0023-20e3", "keycap-hash"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let keys = EmojiKeys::new(&chars, &["2764-fe0f".into(), "0023-fe0f-20e3".into()]);
        assert_eq!(keys.key("red-heart"), "2764-fe0f");
        assert_eq!(keys.key("keycap-hash"), "0023-fe0f-20e3");
        assert_eq!(keys.key("grinning-face"), "1f600");
        assert_eq!(keys.key("no-code-point"), "no-code-point");
    }
}
