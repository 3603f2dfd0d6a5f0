//! Model-size windows over a larger canvas (docs/design.md, "Canvases of any size"): where they lie, and
//! which of them can be sampled together without changing the result of visiting them in raster order.

/// A window's top-left corner on the canvas and its place in the grid; every window has the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub row: usize,
    pub col: usize,
}

/// Window origins along one side of `len` pixels for windows of `win` pixels sharing `overlap`: every
/// `win - overlap` pixels, and the last one shifted inward to end at the edge rather than padded past it
/// (padding would invent pixels the model never saw).
pub fn origins(len: usize, win: usize, overlap: usize) -> Vec<usize> {
    if len <= win {
        return vec![0];
    }
    let stride = (win - overlap).max(1);
    let mut v: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&o| o + win < len)
        .collect();
    v.push(len - win);
    v.dedup();
    v
}

/// Every window over a `width` x `height` canvas, in raster order (rows top to bottom): each window continues
/// what the windows above and to its left drew. (Interleaved passes, which batch better, were measured too:
/// their independently drawn first-pass windows pick different tones in flat regions, which later windows
/// cannot reconcile; models/README.md, "Canvases".)
pub fn grid(width: usize, height: usize, win: (usize, usize), overlap: usize) -> Vec<Window> {
    let (ww, wh) = win;
    let xs = origins(width, ww, overlap);
    origins(height, wh, overlap)
        .into_iter()
        .enumerate()
        .flat_map(|(row, y)| {
            xs.iter()
                .enumerate()
                .map(move |(col, &x)| Window { x, y, row, col })
        })
        .collect()
}

fn intersect(a: Window, b: Window, win: (usize, usize)) -> bool {
    a.x < b.x + win.0 && b.x < a.x + win.0 && a.y < b.y + win.1 && b.y < a.y + win.1
}

/// The windows a window can share pixels with: grid neighbours at most two rows or columns away (windows
/// three apart never meet while the overlap is at most half a window).
fn near(a: Window, b: Window) -> bool {
    a.row.abs_diff(b.row) <= 2 && a.col.abs_diff(b.col) <= 2
}

/// Groups windows (in visiting order) into waves that are sampled one after another; the windows of one wave
/// are sampled together. A window's wave comes after the waves of every earlier window it overlaps, so each
/// window sees exactly what it would see if the windows were sampled one by one in order, and no two windows
/// of a wave share a pixel. Returns indices into `windows`, wave by wave, each wave in visiting order.
pub fn waves(windows: &[Window], win: (usize, usize)) -> Vec<Vec<usize>> {
    let index = Neighbours::new(windows);
    let mut wave_of: Vec<usize> = Vec::with_capacity(windows.len());
    for (j, &w) in windows.iter().enumerate() {
        let wave = index
            .around(w)
            .filter(|&i| i < j && intersect(windows[i], w, win))
            .map(|i| wave_of[i] + 1)
            .max()
            .unwrap_or(0);
        wave_of.push(wave);
    }
    let n = wave_of.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); n];
    for (j, &k) in wave_of.iter().enumerate() {
        out[k].push(j);
    }
    out
}

/// Finds a window's grid neighbours by grid position.
pub struct Neighbours {
    cols: usize,
    rows: usize,
    /// Visiting index of the window at each grid position.
    at: Vec<usize>,
}

impl Neighbours {
    pub fn new(windows: &[Window]) -> Self {
        let rows = windows.iter().map(|w| w.row + 1).max().unwrap_or(0);
        let cols = windows.iter().map(|w| w.col + 1).max().unwrap_or(0);
        let mut at = vec![usize::MAX; rows * cols];
        for (i, w) in windows.iter().enumerate() {
            at[w.row * cols + w.col] = i;
        }
        Self { cols, rows, at }
    }

    /// Visiting indices of the windows near `w` (see [`near`]), itself included.
    pub fn around(&self, w: Window) -> impl Iterator<Item = usize> + '_ {
        let rows = w.row.saturating_sub(2)..(w.row + 3).min(self.rows);
        rows.flat_map(move |r| {
            (w.col.saturating_sub(2)..(w.col + 3).min(self.cols))
                .map(move |c| self.at[r * self.cols + c])
        })
        .filter(|&i| i != usize::MAX)
    }
}

/// How far inside a window's edge it stops keeping what it drew, where a later window redraws: a third of the
/// overlap, as a multiple of the scale `s`. A window's edges are drawn without what lies beyond them (and
/// the models learnt from emoji that an edge is white background), so a later window redraws that band with
/// the rest of the overlap clamped beside it (docs/design.md section 8; a third measured better than a half).
pub fn margin(overlap: usize, s: usize) -> usize {
    (overlap / 3).div_ceil(s) * s
}

/// Which pixels of window `j` (of `windows`, in visiting order, on a `canvas` (width, height)) it keeps, row
/// by row over the window: all but those within `margin` of one of its edges that is not the canvas's edge
/// and that a later window covers (which redraws them). Pixels already known are never redrawn, so dropping
/// them changes nothing; every pixel is kept by the last window that covers it.
pub fn keep_mask(
    windows: &[Window],
    index: &Neighbours,
    j: usize,
    win: (usize, usize),
    canvas: (usize, usize),
    margin: usize,
) -> Vec<bool> {
    let (ww, wh) = win;
    let w = windows[j];
    let mut keep = vec![true; ww * wh];
    if margin == 0 {
        return keep;
    }
    // Distance bands inside each edge that is not the canvas's.
    let left = if w.x > 0 { margin } else { 0 };
    let top = if w.y > 0 { margin } else { 0 };
    let right = if w.x + ww < canvas.0 { ww - margin } else { ww };
    let bottom = if w.y + wh < canvas.1 { wh - margin } else { wh };
    for k in index.around(w).filter(|&k| k > j) {
        let l = windows[k];
        if !near(w, l) || !intersect(w, l, win) {
            continue;
        }
        // The part of window j that window k covers, in window j's coordinates.
        let (x0, x1) = (l.x.max(w.x) - w.x, (l.x + ww).min(w.x + ww) - w.x);
        let (y0, y1) = (l.y.max(w.y) - w.y, (l.y + wh).min(w.y + wh) - w.y);
        for y in y0..y1 {
            for x in x0..x1 {
                if x < left || x >= right || y < top || y >= bottom {
                    keep[y * ww + x] = false;
                }
            }
        }
    }
    keep
}

/// A window's own random stream: window 0 uses the image's seed itself (so a canvas of the model's size
/// samples exactly as before windows existed), every other window a mix of the seed and its index
/// (SplitMix64's finaliser), so the result depends on (seed, window) only.
pub fn window_seed(seed: u64, index: usize) -> u64 {
    if index == 0 {
        return seed;
    }
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_the_side_and_end_at_the_edge() {
        assert_eq!(origins(64, 64, 8), vec![0]);
        assert_eq!(origins(30, 64, 8), vec![0]);
        assert_eq!(origins(100, 64, 8), vec![0, 36]);
        assert_eq!(origins(128, 64, 0), vec![0, 64]);
        assert_eq!(origins(200, 64, 16), vec![0, 48, 96, 136]);
        for len in 64..400 {
            for ov in [0, 4, 8, 16, 32] {
                let o = origins(len, 64, ov);
                assert_eq!(*o.last().unwrap() + 64, len);
                assert!(o.windows(2).all(|p| p[1] > p[0] && p[1] <= p[0] + 64 - ov));
            }
        }
    }

    const SIZES: [(usize, usize, usize); 6] = [
        (300, 200, 8),
        (64, 64, 0),
        (130, 500, 32),
        (1024, 70, 16),
        (113, 177, 32),
        (200, 200, 24),
    ];

    #[test]
    fn windows_of_a_wave_never_overlap_and_follow_what_they_overlap() {
        {
            for (w, h, ov) in SIZES {
                let g = grid(w, h, (64, 64), ov);
                let waves = waves(&g, (64, 64));
                let mut wave_of = vec![0; g.len()];
                for (k, wave) in waves.iter().enumerate() {
                    for &j in wave {
                        wave_of[j] = k;
                    }
                    for (i, &a) in wave.iter().enumerate() {
                        for &b in &wave[i + 1..] {
                            assert!(!intersect(g[a], g[b], (64, 64)));
                        }
                    }
                }
                for j in 0..g.len() {
                    for i in 0..j {
                        if intersect(g[i], g[j], (64, 64)) {
                            assert!(wave_of[i] < wave_of[j], "{w}x{h}: {i} before {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn windows_without_overlap_are_one_wave() {
        let g = grid(256, 128, (64, 64), 0);
        assert_eq!(waves(&g, (64, 64)).len(), 1);
    }

    #[test]
    fn every_pixel_is_kept_by_the_last_window_that_covers_it() {
        {
            for (w, h, ov) in SIZES {
                let g = grid(w, h, (64, 64), ov);
                let idx = Neighbours::new(&g);
                let m = margin(ov, 4);
                let mut last = vec![usize::MAX; w * h];
                let mut kept = vec![false; w * h];
                for (j, win) in g.iter().enumerate() {
                    let keep = keep_mask(&g, &idx, j, (64, 64), (w, h), m);
                    for y in 0..64.min(h) {
                        for x in 0..64.min(w) {
                            let p = (win.y + y) * w + win.x + x;
                            last[p] = j;
                            kept[p] |= keep[y * 64 + x];
                        }
                    }
                }
                assert!(kept.iter().all(|&k| k), "{w}x{h} ov {ov}");
                // And the last window over a pixel keeps it.
                for (j, win) in g.iter().enumerate() {
                    let keep = keep_mask(&g, &idx, j, (64, 64), (w, h), m);
                    for y in 0..64.min(h) {
                        for x in 0..64.min(w) {
                            if last[(win.y + y) * w + win.x + x] == j {
                                assert!(keep[y * 64 + x]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn window_seeds_differ() {
        let s: std::collections::HashSet<u64> = (0..1000).map(|i| window_seed(7, i)).collect();
        assert_eq!(s.len(), 1000);
        assert_eq!(window_seed(7, 0), 7);
    }
}
