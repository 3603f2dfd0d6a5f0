//! Model-size windows over a larger canvas (docs/design.md, "Canvases of any size"): where they lie, and
//! which of them can be sampled together without changing the result of visiting them in raster order.

/// A window's top-left corner on the canvas; every window has the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
}

/// Window origins along one side of `len` pixels for windows of `win` pixels sharing `overlap`: every
/// `win - overlap` pixels, and the last one shifted inward to end at the edge rather than padded past it
/// (padding would invent pixels the model never saw). `len >= win`.
pub fn origins(len: usize, win: usize, overlap: usize) -> Vec<usize> {
    let stride = (win - overlap).max(1);
    let mut v: Vec<usize> = (0..).map(|i| i * stride).take_while(|&o| o + win < len).collect();
    v.push(len - win);
    v.dedup();
    v
}

/// Every window over a `width` x `height` canvas, in raster order (rows top to bottom).
pub fn grid(width: usize, height: usize, win: (usize, usize), overlap: usize) -> Vec<Window> {
    let (ww, wh) = win;
    let xs = origins(width, ww, overlap);
    origins(height, wh, overlap)
        .into_iter()
        .flat_map(|y| xs.iter().map(move |&x| Window { x, y }))
        .collect()
}

fn intersect(a: Window, b: Window, win: (usize, usize)) -> bool {
    a.x < b.x + win.0 && b.x < a.x + win.0 && a.y < b.y + win.1 && b.y < a.y + win.1
}

/// Groups windows (in raster order) into waves that are sampled one after another; the windows of one wave
/// are sampled together. A window's wave comes after the waves of every earlier window it overlaps, so each
/// window sees exactly what it would see if the windows were sampled one by one in raster order, and no two
/// windows of a wave share a pixel. Returns indices into `windows`, wave by wave, each wave in raster order.
pub fn waves(windows: &[Window], win: (usize, usize)) -> Vec<Vec<usize>> {
    let mut wave_of: Vec<usize> = Vec::with_capacity(windows.len());
    for (j, &w) in windows.iter().enumerate() {
        let wave = windows[..j]
            .iter()
            .zip(&wave_of)
            .rev()
            // Raster order: windows far enough above can no longer overlap (rows are at least one pixel
            // apart, and a window is `win.1` tall).
            .take_while(|(a, _)| a.y + win.1 > w.y)
            .filter(|(a, _)| intersect(**a, w, win))
            .map(|(_, &k)| k + 1)
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

    #[test]
    fn windows_of_a_wave_never_overlap_and_follow_what_they_overlap() {
        for (w, h, ov) in [(300, 200, 8), (64, 64, 0), (130, 500, 32), (1024, 70, 16)] {
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

    #[test]
    fn windows_without_overlap_are_one_wave() {
        let g = grid(256, 128, (64, 64), 0);
        assert_eq!(waves(&g, (64, 64)).len(), 1);
    }

    #[test]
    fn window_seeds_differ() {
        let s: std::collections::HashSet<u64> = (0..1000).map(|i| window_seed(7, i)).collect();
        assert_eq!(s.len(), 1000);
        assert_eq!(window_seed(7, 0), 7);
    }
}
