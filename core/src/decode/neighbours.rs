//! The copy input of the channel head: for every target sub-pixel, the levels of its neighbours that are
//! already known when it is decoded (docs/design.md section 3, "copy path"): its eight image neighbours that
//! lie in earlier slices, and its four causal neighbours in its own slice (S pixels apart in the image); and
//! a palette: the [`PALETTE`] colours most frequent in the earlier slices (for stage C, among those with the
//! target's MSBs).
//!
//! Why: the slice embedder sees known values as scalars in [-1, 1]. Turning a scalar back into one sharp
//! category out of 32 takes many units, so a flat region was continued only approximately (stage C trained on
//! flat colours alone stayed at 3.6 to 5.0 bits/dim where copying costs about 0.3, models/README.md). The copy
//! path hands the head each neighbour's exact level instead, and the head learns how much to trust it.
//! The palette serves the pixels no neighbour continues (antialiased edges, small details): in flat emoji
//! styles 30 to 45% of the bits that are left go to such pixels whose exact colour is already in the image,
//! and with the earlier channels' agreement (`m` of [`add_copy_bonus`]) a palette colour whose red matches
//! the chosen red makes green and blue nearly certain (models/README.md, stop 19).
//!
//! One rule for training, evaluation and every engine: the map is read off the embedder's input
//! (`host::condition`, or `SpnNet::condition` on libtorch), which every engine already receives, so the copy
//! input is by construction what the embedder may see: only slices before the target's, and for stage C the
//! MSBs of every slice.
use super::SliceBatch;
use crate::config::{NetConfig, StageSpec};
use crate::error::{Error, Result};

/// Offsets `(dy, dx)` of the neighbours in the full image, in the order of the gates.
pub const IMAGE: [(isize, isize); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];
/// Offsets `(dy, dx)` in the target's own slice of the positions decoded before it (raster order), whose gates
/// follow the image neighbours'.
pub const IN_SLICE: [(isize, isize); 4] = [(-1, -1), (-1, 0), (-1, 1), (0, -1)];
/// Palette entries, after the in-slice neighbours: the most frequent colours of the earlier slices.
pub const PALETTE: usize = 8;
/// How often a colour must occur in the earlier slices to be a palette entry: a colour seen once is not yet a
/// colour of the picture's palette.
pub const PALETTE_MIN_COUNT: usize = 2;
/// Directions `(dy, dx)` of the interpolation entries, after the palette: along each, the value between the
/// nearest known pixels on either side (at most S apart), weighted by their distances.
pub const LINES: [(isize, isize); 4] = [(0, 1), (1, 0), (1, 1), (1, -1)];
/// Entries of a target's row of the copy map before the line entries: image neighbours, in-slice neighbours,
/// palette.
pub const FIXED: usize = IMAGE.len() + IN_SLICE.len() + PALETTE;

/// Entries of a target's row of the copy map for a stage's network (0 without the copy path): [`FIXED`], then
/// one group of [`LINES`] per spread bin of `net.copy_spreads` (bin 0 first, so that a model without bins
/// has the rows of bin 0 and warm-starts one with them, `train::warm_start`), then with `net.copy_blends`
/// the [`BLENDS`] entries.
pub fn entries(net: &NetConfig) -> usize {
    if net.copy {
        FIXED + LINES.len() * (net.copy_spreads.len() + 1) + blends(net)
    } else {
        0
    }
}

/// Line entries that also carry a slope (`net.line_slopes`): every line entry of every spread bin, the
/// entries from [`FIXED`] on. Their gates come after the copy map's in the head ([`add_copy_bonus`]).
pub fn slopes(net: &NetConfig) -> usize {
    if net.copy && net.line_slopes {
        LINES.len() * (net.copy_spreads.len() + 1)
    } else {
        0
    }
}

/// Blend entries that also carry a slope (`net.blend_slopes`, with the line slopes): every blend entry.
pub fn blend_slopes(net: &NetConfig) -> usize {
    if net.line_slopes && net.blend_slopes {
        blends(net)
    } else {
        0
    }
}

/// Blend entries, the last of a row: one per direction of [`LINES`]. Why: an antialiased edge pixel mixes
/// the colours on either side of the edge, one weight for all three channels, so once red is chosen the
/// weight is known and green and blue follow ([`blend_level`]). On 16 held-out noto emoji at 256x256, edge
/// pixels (9.6% of the pixels) took 53% of the bits, and along the direction of the largest spread the
/// weight red implies gave green exactly for 61% of them and blue (from red or green) for 77%
/// (models/README.md, stop 23). No fixed candidate can say this: it depends on the pixel's own red.
pub const BLENDS: usize = LINES.len();

/// The blend entries of a stage's network.
pub fn blends(net: &NetConfig) -> usize {
    if net.copy && net.copy_blends {
        BLENDS
    } else {
        0
    }
}

/// How far apart the sides of a blend must be in the channel that fixes the weight: one level apart, every
/// weight rounds to one side, which the image neighbours already offer.
pub const BLEND_MIN_SPREAD: i32 = 2;
/// A blend entry's channel holds its two sides packed into one map value, [`SIDES_BASE`] and above (a level
/// is below 256, [`NONE`] and [`PENDING`] are negative): [`pack_sides`] of the sides `a`, `c` relative to
/// the target's band (stage C: full values less the target's MSBs times the own levels), so in -255..=255.
pub const SIDES_BASE: i32 = 1 << 20;
pub const SIDES_SPAN: i32 = 1024;
pub const SIDES_OFFSET: i32 = 512;

/// A blend entry's map value for sides `a`, `c`.
pub fn pack_sides(a: i32, c: i32) -> i32 {
    SIDES_BASE + (a + SIDES_OFFSET) * SIDES_SPAN + c + SIDES_OFFSET
}

/// The sides of a map value, None for anything but a blend entry's.
pub fn unpack_sides(v: i32) -> Option<(i32, i32)> {
    (v >= SIDES_BASE).then(|| {
        let u = v - SIDES_BASE;
        (u / SIDES_SPAN - SIDES_OFFSET, u % SIDES_SPAN - SIDES_OFFSET)
    })
}

/// The level a blend entry offers channel `ch`, and whether the earlier channel that did not fix the
/// weight agrees with it (the entry's `matched`, [`add_copy_bonus`]); None where it offers none. `sides`:
/// the entry's three channels ([`unpack_sides`]); `earlier`: the levels chosen so far; `levels`: the
/// channel's. The weight comes from the earlier channel whose sides are furthest apart (the lower on a tie),
/// at least [`BLEND_MIN_SPREAD`]; its level, clamped between its sides, is `c + w (a - c)`, and channel `x`
/// then takes `c_x + w (a_x - c_x)`, rounded half up in integers (so that every engine agrees) and
/// clamped into the band. Red gets none: nothing fixes its weight.
pub fn blend_level(
    sides: &[(i32, i32); 3],
    earlier: &[i64; 3],
    ch: usize,
    levels: usize,
) -> Option<(i32, bool)> {
    let spread = |c: usize| (sides[c].0 - sides[c].1).abs();
    let anchor = (0..ch.min(3)).fold(None, |best: Option<usize>, c| match best {
        Some(b) if spread(b) >= spread(c) => Some(b),
        _ => Some(c),
    })?;
    if spread(anchor) < BLEND_MIN_SPREAD {
        return None;
    }
    let (aa, ca) = sides[anchor];
    let t = (earlier[anchor] as i32).clamp(aa.min(ca), aa.max(ca));
    let top = levels as i32 - 1;
    let predict = |x: usize| {
        let (ax, cx) = sides[x];
        let (mut num, mut den) = ((t - ca) * (ax - cx), aa - ca);
        if den < 0 {
            (num, den) = (-num, -den);
        }
        (cx + (2 * num + den).div_euclid(2 * den)).clamp(0, top)
    };
    // With two earlier channels, the one that did not fix the weight agrees or not.
    let matched = (0..ch)
        .filter(|&c| c != anchor)
        .any(|c| i64::from(predict(c)) == earlier[c]);
    Some((predict(ch), matched))
}

/// The spread bin of a line entry whose two sides differ by up to `spread` (the largest of its channels, in
/// the values it interpolates): how many of the cuts `spreads` it exceeds. Why a bin per spread: an
/// interpolation between two close values is nearly always right and one across an edge nearly never, and
/// with one gate per direction the head could not tell them apart (models/README.md, stop 21: leaving out the
/// entries whose sides differ by more than 4 took away 70 to 92% of the harm of opening the gates). Each bin
/// has its own gates, so the head learns how far to trust each.
pub fn spread_bin(spread: i32, spreads: &[i32]) -> usize {
    spreads.iter().filter(|&&cut| spread > cut).count()
}
/// A neighbour with nothing to copy: not yet known, outside the image, or (stage C) with other MSBs.
pub const NONE: i32 = -1;
/// An in-slice neighbour whose level is known only once it is decoded: [`fill_in_slice`] puts it in.
pub const PENDING: i32 = -2;

/// Copy map `(B, h * w, E, 3)`, E = [`entries`], of target slices `ks` from the embedder input `cond`
/// `(B, h * w, cin)`: the neighbour's level in this stage, [`NONE`], or for the in-slice neighbours
/// [`PENDING`] (their levels are the slice's own, filled in by [`fill_in_slice`] as they become known).
///
/// An image neighbour counts when it lies in a slice before the target's (the embedder zeroes later ones).
/// For stage C the value copied is a low-bit level, which only continues the neighbour's colour when its
/// MSBs are the target's own, so a neighbour with other MSBs counts for that channel only when they agree.
/// The palette entries are the [`PALETTE`] colours that occur most often in the slices before the target's
/// (recurring and ranked without ties, [`palette`]), for stage C among those whose three MSBs are the
/// target's; [`NONE`] past the last. The line entries interpolate, along each of [`LINES`], between the
/// nearest pixels of earlier slices on either side (full values for stage C, brought into the target's MSB
/// band, [`interpolate`]): a
/// gradient upscaled from every S-th pixel has no equal neighbour to copy, and the 64 model at stop 19 drew it
/// as flat S-by-S blocks; on synthetic ramps these candidates (within one level) took 52% of its bits, on
/// held-out emoji 10% (emojione) to 18% (noto) (models/README.md, stop 19).
pub fn copy_map(
    spec: &StageSpec,
    cond: &[f32],
    cin: usize,
    ks: &[usize],
    (h, w): (usize, usize),
) -> Result<Vec<i32>> {
    let s = spec.scale.max(1) as usize;
    let n = h * w;
    let with_msb = spec.cond_bits.is_some();
    if cin != 3 * s * s * if with_msb { 2 } else { 1 } || cond.len() != ks.len() * n * cin {
        return Err(Error::Other("slice context of the wrong size".into()));
    }
    let width = entries(&spec.net) * 3;
    let mut out = vec![NONE; ks.len() * n * width];
    for ((&k, cond), rows) in ks
        .iter()
        .zip(cond.chunks_exact(n * cin))
        .zip(out.chunks_exact_mut(n * width))
    {
        let known = Known {
            cond,
            cin,
            s,
            h,
            w,
            with_msb,
            own_levels: spec.levels(),
            msb_levels: 1i64 << spec.cond_bits.unwrap_or(1),
        };
        let palette = palette(
            (0..k)
                .flat_map(|q| (0..n).map(move |p| (q, p)))
                .map(|(q, p)| known.colour(q, p)),
        );
        for (p, px) in rows.chunks_exact_mut(width).enumerate() {
            let target_msb = known.colour(k, p).0;
            known.neighbour_entries(px, k, p, target_msb);
            let first = IMAGE.len() + IN_SLICE.len();
            if let Some(colours) = palette.get(&target_msb) {
                for (e, own) in px[first * 3..].chunks_exact_mut(3).zip(colours) {
                    e.copy_from_slice(own);
                }
            }
            let sides = LINES.map(|(dy, dx)| {
                known
                    .nearest(k, p, (-dy, -dx))
                    .zip(known.nearest(k, p, (dy, dx)))
            });
            let msb = with_msb.then_some(target_msb);
            line_entries(px, &spec.net, &sides, known.own_levels as i32, msb);
        }
    }
    Ok(out)
}

/// The nearest earlier pixel on one side of a target along a line: (distance, full values).
type Side = (isize, [i32; 3]);

/// One image's embedder input `(h * w, cin)` as the copy map reads it: the levels of slice `q`'s pixel `p`.
struct Known<'a> {
    cond: &'a [f32],
    cin: usize,
    /// The scale S: S * S slices of `h` by `w`.
    s: usize,
    h: usize,
    w: usize,
    /// Stage C: the MSBs of every slice follow the own levels.
    with_msb: bool,
    own_levels: i64,
    msb_levels: i64,
}

impl Known<'_> {
    fn level(x: f32, levels: i64) -> i32 {
        ((x + 1.0) * (levels - 1).max(1) as f32 / 2.0).round() as i32
    }

    fn own(&self, c: usize, q: usize, p: usize) -> i32 {
        Self::level(
            self.cond[p * self.cin + c * self.s * self.s + q],
            self.own_levels,
        )
    }

    /// The MSBs of channel `c`, 0 without them.
    fn msb(&self, c: usize, q: usize, p: usize) -> i32 {
        let slices = self.s * self.s;
        if self.with_msb {
            Self::level(
                self.cond[p * self.cin + 3 * slices + c * slices + q],
                self.msb_levels,
            )
        } else {
            0
        }
    }

    /// A pixel's (MSBs, own levels).
    fn colour(&self, q: usize, p: usize) -> ([i32; 3], [i32; 3]) {
        (
            [0, 1, 2].map(|c| self.msb(c, q, p)),
            [0, 1, 2].map(|c| self.own(c, q, p)),
        )
    }

    /// The image and in-slice neighbour entries of target slice `k`'s position `p`, whose MSBs are
    /// `target_msb`: an image neighbour counts when it lies in an earlier slice, and for stage C in a channel
    /// only when its MSBs are the target's.
    fn neighbour_entries(&self, px: &mut [i32], k: usize, p: usize, target_msb: [i32; 3]) {
        let (s, w) = (self.s as isize, self.w as isize);
        let (a, b) = ((k / self.s) as isize, (k % self.s) as isize);
        let (y, x) = (p as isize / w, p as isize % w);
        let msb_ok = |c: usize, q: usize, np: usize| self.msb(c, q, np) == target_msb[c];
        for (o, &(dy, dx)) in IMAGE.iter().enumerate() {
            // Image row S*y + a + dy is row (a + dy) mod S of slice row y + floor((a + dy) / S).
            let (ny, na) = (y + (a + dy).div_euclid(s), (a + dy).rem_euclid(s));
            let (nx, nb) = (x + (b + dx).div_euclid(s), (b + dx).rem_euclid(s));
            let q = (na * s + nb) as usize;
            if q >= k || ny < 0 || nx < 0 || ny >= self.h as isize || nx >= w {
                continue;
            }
            let np = (ny * w + nx) as usize;
            for c in 0..3 {
                if msb_ok(c, q, np) {
                    px[o * 3 + c] = self.own(c, q, np);
                }
            }
        }
        for (j, &(dy, dx)) in IN_SLICE.iter().enumerate() {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || nx >= w {
                continue;
            }
            let np = (ny * w + nx) as usize;
            for c in 0..3 {
                if msb_ok(c, k, np) {
                    px[(IMAGE.len() + j) * 3 + c] = PENDING;
                }
            }
        }
    }

    /// The nearest pixel of a slice before `k` at image offset `(dy, dx) * t`, t = 1..=S, from target slice
    /// `k`'s position `p`: (t, full values).
    fn nearest(&self, k: usize, p: usize, (dy, dx): (isize, isize)) -> Option<Side> {
        let s = self.s;
        let (iy, ix) = (
            (p / self.w * s + k / s) as isize,
            (p % self.w * s + k % s) as isize,
        );
        (1..=s as isize).find_map(|t| {
            let (ny, nx) = (iy + dy * t, ix + dx * t);
            if ny < 0 || nx < 0 || ny >= (self.h * s) as isize || nx >= (self.w * s) as isize {
                return None;
            }
            let (ny, nx) = (ny as usize, nx as usize);
            let q = (ny % s) * s + nx % s;
            (q < k).then(|| {
                let (msb, own) = self.colour(q, (ny / s) * self.w + nx / s);
                (
                    t,
                    [0, 1, 2].map(|c| msb[c] * self.own_levels as i32 + own[c]),
                )
            })
        })
    }
}

/// Writes the line and blend entries of a target's row `px` ([`copy_map`]): `sides`, per direction of
/// [`LINES`], the nearest earlier pixels on either side `(distance, full values)`; `msb`: the target's MSBs
/// (stage C).
fn line_entries(
    px: &mut [i32],
    net: &NetConfig,
    sides: &[Option<(Side, Side)>; 4],
    own_levels: i32,
    msb: Option<[i32; 3]>,
) {
    let first_blend = px.len() / 3 - blends(net);
    for (j, &(before, after)) in sides
        .iter()
        .enumerate()
        .filter_map(|(j, s)| Some((j, s.as_ref()?)))
    {
        let spread = (0..3).map(|c| (before.1[c] - after.1[c]).abs()).max();
        let bin = spread_bin(spread.unwrap_or(0), &net.copy_spreads);
        px[(FIXED + bin * LINES.len() + j) * 3..][..3]
            .copy_from_slice(&interpolate(before, after, own_levels, msb));
        if blends(net) > 0 {
            // Relative to the target's band, as the levels the head chooses are.
            let lo = |c: usize| msb.map_or(0, |m| m[c] * own_levels);
            for c in 0..3 {
                px[(first_blend + j) * 3 + c] = pack_sides(before.1[c] - lo(c), after.1[c] - lo(c));
            }
        }
    }
}

/// A line entry: the full values `va`, `vc` at distances `ta`, `tc` on either side of the target, weighted by
/// distance and rounded half up in integers (so that every engine agrees), as own levels. With the target's
/// MSBs `msb` (stage C), a result with other MSBs becomes the nearest value that has the target's: where a
/// smooth ramp crosses an MSB boundary, the target lies at the edge of its band (the stop-19 rule left it
/// out, and the 64 model drew band edges of upscaled gradients pulled into the band: a line every 32 levels,
/// models/README.md, stop 20).
fn interpolate((ta, va): Side, (tc, vc): Side, own_levels: i32, msb: Option<[i32; 3]>) -> [i32; 3] {
    let (ta, tc) = (ta as i32, tc as i32);
    [0, 1, 2].map(|c| {
        let (num, den) = (va[c] * tc + vc[c] * ta, ta + tc);
        let v = (2 * num + den) / (2 * den);
        match msb {
            // The target's band holds full values lo..lo + own_levels.
            Some(m) => {
                let lo = m[c] * own_levels;
                v.clamp(lo, lo + own_levels - 1) - lo
            }
            None => v,
        }
    })
}

/// The palette of a set of known pixels `(MSBs, own levels)`: for each MSB triple, the own levels of its
/// [`PALETTE`] most frequent colours, the most frequent first (equal counts in level order). Only colours that
/// recur ([`PALETTE_MIN_COUNT`]) and rank unambiguously count: when the colour after the last entry is as
/// frequent as the last, every colour of that count is left out. A tie rule there would pick an arbitrary
/// colour that the head then copies: on a smooth gradient, where every colour occurs about equally often,
/// "ties to the lower levels" (the stop-19 rule) drew each MSB band's lowest colour everywhere and turned the
/// gradient into eight flat steps per channel (models/README.md, stop 20). Counted by sorting packed colours
/// (levels are below 256): hashing tuples took 1.1% of a 256x256 sample's time, this 0.04%.
fn palette(
    known: impl Iterator<Item = ([i32; 3], [i32; 3])>,
) -> std::collections::HashMap<[i32; 3], Vec<[i32; 3]>> {
    let pack = |v: [i32; 3]| v.iter().fold(0u64, |a, &x| (a << 8) | (x as u64 & 0xff));
    let unpack = |k: u64| {
        [
            (k >> 16) as i32 & 0xff,
            (k >> 8) as i32 & 0xff,
            k as i32 & 0xff,
        ]
    };
    let mut keys: Vec<u64> = known
        .map(|(msb, own)| (pack(msb) << 24) | pack(own))
        .collect();
    keys.sort_unstable();
    // Runs of one colour, in (MSBs, own levels) order.
    let mut runs: Vec<(u64, usize)> = Vec::new();
    for k in keys {
        match runs.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => runs.push((k, 1)),
        }
    }
    runs.retain(|&(_, n)| n >= PALETTE_MIN_COUNT);
    runs.sort_by_key(|&(k, n)| (k >> 24, std::cmp::Reverse(n), k));
    let mut out = std::collections::HashMap::<[i32; 3], Vec<[i32; 3]>>::new();
    for band in runs.chunk_by(|a, b| a.0 >> 24 == b.0 >> 24) {
        // The count a colour needs to rank unambiguously: above that of the first colour left out.
        let cut = band.get(PALETTE).map_or(0, |&(_, n)| n);
        out.insert(
            unpack(band[0].0 >> 24),
            band.iter()
                .take(PALETTE)
                .filter(|&&(_, n)| n > cut)
                .map(|&(k, _)| unpack(k & 0xff_ffff))
                .collect(),
        );
    }
    out
}

/// [`copy_map`] of a slice batch as every engine receives it, None for a stage without the copy path.
pub fn batch_map(spec: &StageSpec, input: &SliceBatch) -> Result<Option<Vec<i32>>> {
    if !spec.net.copy {
        return Ok(None);
    }
    copy_map(spec, input.cond, input.cin, input.ks, (input.h, input.w)).map(Some)
}

/// The rows of images `range` of a batch's copy map, `n` positions a slice of `entries` ([`entries`]): what
/// one decoding group takes.
pub fn group_rows(
    map: &[i32],
    range: std::ops::Range<usize>,
    n: usize,
    entries: usize,
) -> Result<&[i32]> {
    let per = n * entries * 3;
    map.get(range.start * per..range.end * per)
        .ok_or_else(|| Error::Other(format!("images {range:?} are not in the batch")))
}

/// Puts the levels of the slice's own earlier pixels into the [`PENDING`] entries of the copy map's row for
/// position `pos`: `values` is the slice `(h * w)` of one image, final at least before `pos`; `w` its width.
pub fn fill_in_slice(row: &mut [i32], values: &[[i64; 3]], pos: usize, w: usize) {
    let (y, x) = ((pos / w) as isize, (pos % w) as isize);
    for (j, &(dy, dx)) in IN_SLICE.iter().enumerate() {
        for c in 0..3 {
            let e = &mut row[(IMAGE.len() + j) * 3 + c];
            if *e == PENDING {
                // PENDING is only ever set for a neighbour inside the slice, before `pos`.
                let np = (y + dy) as usize * w + (x + dx) as usize;
                *e = values.get(np).map_or(NONE, |v| v[c] as i32);
            }
        }
    }
}

/// [`fill_in_slice`] for every position of every image of a map whose slices are all known (teacher forcing,
/// the full pass): `values` `(B, h * w)`; `entries` per row ([`entries`]).
pub fn fill_all(map: &mut [i32], values: &[[i64; 3]], (h, w): (usize, usize), entries: usize) {
    let (n, width) = (h * w, entries * 3);
    if width == 0 {
        return;
    }
    for (rows, vals) in map.chunks_exact_mut(n * width).zip(values.chunks_exact(n)) {
        for (pos, row) in rows.chunks_exact_mut(width).enumerate() {
            fill_in_slice(row, vals, pos, w);
        }
    }
}

/// The copy rows of a group of images while their slice is decoded: the slice's copy map and the levels
/// committed so far, from which each position's in-slice entries are filled in.
pub struct CopyRows {
    /// `(G, h * w, E, 3)`.
    map: Vec<i32>,
    /// `(G, h * w)`.
    levels: Vec<[i64; 3]>,
    n: usize,
    w: usize,
    /// `E * 3`.
    width: usize,
    /// The rows at the current position, `(G, E * 3)`.
    rows: Vec<i32>,
}

impl CopyRows {
    /// `map`: the group's rows of [`copy_map`], `(G, h * w, E, 3)`, E = `entries` ([`entries`]).
    pub fn new(map: Vec<i32>, (h, w): (usize, usize), entries: usize) -> Result<Self> {
        let (n, width) = (h * w, entries * 3);
        if n == 0 || width == 0 || !map.len().is_multiple_of(n * width) {
            return Err(Error::Other("copy map of the wrong size".into()));
        }
        let g = map.len() / (n * width);
        Ok(Self {
            map,
            levels: vec![[0; 3]; g * n],
            n,
            w,
            width,
            rows: vec![NONE; g * width],
        })
    }

    /// The rows `(G, E * 3)` at `pos`, every position before it committed.
    pub fn at(&mut self, pos: usize) -> &[i32] {
        let width = self.width;
        for (gi, row) in self.rows.chunks_exact_mut(width).enumerate() {
            row.copy_from_slice(&self.map[(gi * self.n + pos) * width..][..width]);
            fill_in_slice(row, &self.levels[gi * self.n..][..self.n], pos, self.w);
        }
        &self.rows
    }

    /// Entries per row.
    pub fn entries(&self) -> usize {
        self.width / 3
    }

    /// The rows of the last [`Self::at`].
    pub fn current(&self) -> &[i32] {
        &self.rows
    }

    /// Records the pixels at `pos`, one per image of the group.
    pub fn commit(&mut self, pos: usize, values: &[[i64; 3]]) {
        for (gi, v) in values.iter().enumerate() {
            if let Some(l) = self.levels.get_mut(gi * self.n + pos) {
                *l = *v;
            }
        }
    }
}

/// The head's copy rule for one pixel and channel `ch`, on the host: each neighbour with a level to copy
/// adds `softplus(gate + agree * (earlier channels it matches))` to that level's logit; with slopes
/// (`net.line_slopes`), each line entry `j` with a level `v` also takes `softplus(slope gate + slope agree
/// * matched) * |l - v|` off every level `l`'s logit, and with `net.blend_slopes` each blend entry the same
/// around the level it implies. `gate`, `agree`: `(E * 3)` entry-major, then `(K * 3)` for the K =
/// [`slopes`] line slopes, then `(blend_slopes * 3)`; `copy`: the pixel's row of [`copy_map`] `(E * 3)`;
/// `earlier`: the pixel's channels chosen so far. `model::head::ChannelHead` is the same rule on libtorch
/// (tests hold the two equal).
pub fn add_copy_bonus(
    logits: &mut [f32],
    (gate, agree): (&[f32], &[f32]),
    copy: &[i32],
    (ch, blend_slopes): (usize, usize),
    earlier: &[i64; 3],
) {
    let entries = copy.len().min(gate.len()).min(agree.len()) / 3;
    let matched = |row: &[i32]| {
        (0..ch)
            .filter(|&c| row[c] >= 0 && row[c] as i64 == earlier[c])
            .count()
    };
    // The blend entries' levels, for their slopes: (index among the last `blend_slopes` entries, level,
    // agreement).
    let mut blended = [(0usize, 0i32, 0usize); BLENDS];
    let mut n_blended = 0;
    let first_blend = entries.saturating_sub(blend_slopes);
    for o in 0..entries {
        let row = &copy[o * 3..][..3];
        // Only blend entries hold packed sides (all three channels or none): plain entries skip unpacking.
        let sides = (row[0] >= SIDES_BASE).then(|| [0, 1, 2].map(|c| unpack_sides(row[c])));
        let (v, matched) = match sides {
            Some([Some(r), Some(g), Some(b)]) => {
                match blend_level(&[r, g, b], earlier, ch, logits.len()) {
                    Some((v, m)) => (v, usize::from(m)),
                    None => continue,
                }
            }
            _ => (row[ch], matched(row)),
        };
        if v < 0 || v as usize >= logits.len() {
            continue;
        }
        if o >= first_blend && sides.is_some() && n_blended < BLENDS {
            blended[n_blended] = (o - first_blend, v, matched);
            n_blended += 1;
        }
        let z = gate[o * 3 + ch] + agree[o * 3 + ch] * matched as f32;
        logits[v as usize] += softplus(z);
    }
    let extra = (gate.len().min(agree.len()) / 3).saturating_sub(entries);
    let lines = extra.saturating_sub(blend_slopes);
    if extra == 0 {
        return;
    }
    // Summed before it is taken off, as libtorch does: the sum is small next to a logit, so the engines
    // round alike.
    let mut penalty = [0f32; 256];
    let mut add = |o: usize, v: i32, m: usize| {
        let o = o * 3 + ch;
        let s = softplus(gate[o] + agree[o] * m as f32);
        for (l, p) in penalty.iter_mut().take(logits.len()).enumerate() {
            *p += s * (l as f32 - v as f32).abs();
        }
    };
    for j in 0..lines.min(entries.saturating_sub(FIXED)) {
        let row = &copy[(FIXED + j) * 3..][..3];
        let v = row[ch];
        if v >= 0 && (v as usize) < logits.len() {
            add(entries + j, v, matched(row));
        }
    }
    if extra > lines {
        for &(j, v, m) in &blended[..n_blended] {
            add(entries + lines + j, v, m);
        }
    }
    for (x, p) in logits.iter_mut().zip(penalty) {
        *x -= p;
    }
}

/// `ln(1 + e^z)` as libtorch computes it (linear above 20).
pub fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;

    /// A stage-B-like spec with scale `s` and its embedder input for one image whose own value at slice q,
    /// position p is `q * 10 + p` (scaled to levels), every slice present.
    fn setup(kind: usize) -> (StageSpec, usize, Vec<f32>) {
        let c = PipelineConfig::preset("tiny").unwrap();
        let spec = c.stages()[kind].clone();
        let s = spec.scale as usize;
        let (h, w) = spec.slice_hw();
        let n = (h * w) as usize;
        let slices = s * s;
        let cin = spec.cond_channels() as usize;
        let mut cond = vec![0f32; n * cin];
        let scale = 2.0 / (spec.levels() - 1) as f32;
        for ch in 0..3 * slices {
            for p in 0..n {
                let v = ((ch % slices) + p + ch / slices) as i64 % spec.levels();
                cond[p * cin + ch] = v as f32 * scale - 1.0;
                if cin > 3 * slices {
                    cond[p * cin + 3 * slices + ch] = -1.0; // every MSB 0: all agree
                }
            }
        }
        (spec, cin, cond)
    }

    #[test]
    fn only_earlier_slices_are_copied_and_their_levels_are_exact() {
        for kind in [1, 2] {
            let (spec, cin, cond) = setup(kind);
            let s = spec.scale as usize;
            let (h, w) = spec.slice_hw();
            let (h, w) = (h as usize, w as usize);
            let slices = s * s;
            for k in 0..slices {
                let map = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
                let e = entries(&spec.net);
                for p in 0..h * w {
                    for (o, &(dy, dx)) in IMAGE.iter().enumerate() {
                        // The neighbour's image coordinates, then its slice and position.
                        let iy = (p / w * s + k / s) as isize + dy;
                        let ix = (p % w * s + k % s) as isize + dx;
                        let inside =
                            iy >= 0 && ix >= 0 && iy < (h * s) as isize && ix < (w * s) as isize;
                        let q = (iy.rem_euclid(s as isize) * s as isize + ix.rem_euclid(s as isize))
                            as usize;
                        let np = (iy.div_euclid(s as isize) * w as isize
                            + ix.div_euclid(s as isize)) as usize;
                        for c in 0..3 {
                            let got = map[(p * e + o) * 3 + c];
                            if inside && q < k {
                                let want = ((q + np + c) as i64 % spec.levels()) as i32;
                                assert_eq!(got, want, "stage {kind} slice {k} pos {p} offset {o}");
                            } else {
                                assert_eq!(got, NONE, "stage {kind} slice {k} pos {p} offset {o}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn in_slice_neighbours_are_the_earlier_positions_filled_in_as_they_are_known() {
        for kind in [0, 1, 2] {
            let (spec, cin, cond) = setup(kind);
            let (h, w) = spec.slice_hw();
            let (h, w) = (h as usize, w as usize);
            let k = spec.first_slice as usize;
            let mut map = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
            let values: Vec<[i64; 3]> = (0..h * w).map(|p| [p as i64, 100, 7]).collect();
            let e = entries(&spec.net);
            fill_all(&mut map, &values, (h, w), e);
            for p in 0..h * w {
                let (y, x) = ((p / w) as isize, (p % w) as isize);
                for (j, &(dy, dx)) in IN_SLICE.iter().enumerate() {
                    let o = IMAGE.len() + j;
                    let inside = y + dy >= 0 && x + dx >= 0 && x + dx < w as isize;
                    let np = (y + dy) * w as isize + x + dx;
                    assert!(!inside || np < p as isize, "only earlier positions");
                    let want = |c: usize| {
                        if inside {
                            values[np as usize][c] as i32
                        } else {
                            NONE
                        }
                    };
                    for c in 0..3 {
                        assert_eq!(map[(p * e + o) * 3 + c], want(c), "stage {kind} pos {p}");
                    }
                }
            }
            assert!(!map.contains(&PENDING));
        }
    }

    #[test]
    fn stage_c_copies_only_where_the_msbs_agree() {
        let (spec, cin, mut cond) = setup(2);
        let slices = (spec.scale * spec.scale) as usize;
        let (h, w) = spec.slice_hw();
        let (h, w) = (h as usize, w as usize);
        let k = slices - 1;
        // Positions 1 to 6 of slice 0 are black: the most frequent colour, so a palette entry (the others
        // recur about equally often, and a tie at the cut leaves them out).
        for p in 1..=6 {
            for c in 0..3 {
                cond[p * cin + c * slices] = -1.0;
            }
        }
        let before = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
        // The target's red MSB becomes 1 at position 0: red stops copying there, green and blue go on.
        cond[3 * slices + k] = 2.0 / ((1 << spec.cond_bits.unwrap()) - 1) as f32 - 1.0;
        let after = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
        let first = IMAGE.len() + IN_SLICE.len();
        for o in 0..first {
            assert_eq!(after[o * 3], NONE);
            assert_eq!(after[o * 3 + 1..o * 3 + 3], before[o * 3 + 1..o * 3 + 3]);
        }
        // No earlier pixel has the new MSBs: no palette there, where there was one.
        let palette = first * 3..(first + PALETTE) * 3;
        assert!(after[palette.clone()].iter().all(|&v| v == NONE));
        assert!(before[palette].iter().any(|&v| v >= 0));
        let e = entries(&spec.net);
        assert!(before[..e * 3].iter().any(|&v| v != NONE));
        // Elsewhere only red entries change, to NONE: the in-slice neighbours that are position 0.
        let changed: Vec<usize> = (e * 3..after.len())
            .filter(|&i| after[i] != before[i])
            .collect();
        assert!(!changed.is_empty());
        for i in changed {
            assert_eq!(
                (i % 3, after[i], before[i]),
                (0, NONE, PENDING),
                "entry {i}"
            );
        }
    }

    #[test]
    fn the_palette_is_the_most_frequent_earlier_colours_with_the_targets_msbs() {
        let (spec, cin, mut cond) = setup(2);
        let slices = (spec.scale * spec.scale) as usize;
        let (h, w) = spec.slice_hw();
        let (h, w) = (h as usize, w as usize);
        let n = h * w;
        let (own_l, msb_l) = (spec.levels(), 1i64 << spec.cond_bits.unwrap());
        let norm = |v: i64, l: i64| v as f32 * 2.0 / (l - 1) as f32 - 1.0;
        // Slices 0 and 1 hold few colours, some repeated: own level (p % 3) * 5 + q in red, p % 2 in green,
        // 7 in blue; MSBs 1 in red where p % 4 == 0, else 0.
        for q in 0..slices {
            for p in 0..n {
                let own = [(p % 3) as i64 * 5 + q as i64, (p % 2) as i64, 7];
                let msb = [i64::from(p % 4 == 0), 0, 0];
                for c in 0..3 {
                    cond[p * cin + c * slices + q] = norm(own[c], own_l);
                    cond[p * cin + 3 * slices + c * slices + q] = norm(msb[c], msb_l);
                }
            }
        }
        let (mut entries, mut ties_cut) = (0, 0);
        for k in [0, 1, 2, slices - 1] {
            let map = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
            for p in 0..n {
                // The reference: count the earlier slices' colours with this target's MSBs, by brute force.
                let cube = i64::from(p % 4 == 0);
                let mut counts: Vec<([i64; 3], usize)> = Vec::new();
                for q in 0..k {
                    for r in (0..n).filter(|r| i64::from(r % 4 == 0) == cube) {
                        let own = [(r % 3) as i64 * 5 + q as i64, (r % 2) as i64, 7];
                        match counts.iter_mut().find(|(c, _)| *c == own) {
                            Some((_, m)) => *m += 1,
                            None => counts.push((own, 1)),
                        }
                    }
                }
                // Recurring colours, most frequent first, without the count the first one left out has.
                counts.retain(|c| c.1 >= PALETTE_MIN_COUNT);
                counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let cut = counts.get(PALETTE).map_or(0, |c| c.1);
                let recurring = counts.len();
                counts.truncate(PALETTE);
                counts.retain(|c| c.1 > cut);
                entries += counts.len();
                ties_cut += usize::from(recurring > PALETTE && counts.len() < PALETTE);
                let first = IMAGE.len() + IN_SLICE.len();
                for j in 0..PALETTE {
                    let got = &map[(p * super::entries(&spec.net) + first + j) * 3..][..3];
                    let want = counts
                        .get(j)
                        .map_or([NONE; 3], |(c, _)| c.map(|v| v as i32));
                    assert_eq!(got, want, "slice {k} pos {p} entry {j}");
                }
            }
        }
        // The data holds both: palettes, and positions where a tie at the cut left colours out.
        assert!(
            entries > 0 && ties_cut > 0,
            "{entries} entries, {ties_cut} cut"
        );
    }

    #[test]
    fn a_line_entry_across_an_msb_boundary_lies_at_the_edge_of_the_targets_band() {
        // Stage C with 3 MSBs: own levels 0..32, band m holds 32m..32m+31. 93 and 99 at distances 1 and 3:
        // 94.5, rounded half up to 95.
        let (a, c) = ((1, [93, 64, 0]), (3, [99, 72, 255]));
        assert_eq!(interpolate(a, c, 32, None), [95, 66, 64]);
        // Target band 3 (96..127) in red: 95 comes back as 96, its lowest; green 66 lies in band 2; blue 64
        // lies below band 7 (224..255), so 224.
        assert_eq!(interpolate(a, c, 32, Some([3, 2, 7])), [0, 2, 0]);
        // Target band 2 in red: 95 is its top.
        assert_eq!(interpolate(a, c, 32, Some([2, 2, 1])), [31, 2, 31]);
    }

    #[test]
    fn line_entries_interpolate_between_the_nearest_earlier_pixels_on_either_side_in_their_spread_bin(
    ) {
        let mut seen = std::collections::BTreeSet::new();
        for kind in [1, 2] {
            let (spec, cin, mut cond) = setup(kind);
            let s = spec.scale as usize;
            let (h, w) = spec.slice_hw();
            let (h, w) = (h as usize, w as usize);
            let slices = s * s;
            let levels = spec.levels() as i32;
            // Own levels l become 7l mod levels: neighbours far apart too, so that every spread bin is used.
            for x in cond.iter_mut().take(h * w * cin) {
                let l = ((*x + 1.0) * (levels - 1) as f32 / 2.0).round() as i32;
                *x = ((l * 7) % levels) as f32 * 2.0 / (levels - 1) as f32 - 1.0;
            }
            // The image in image coordinates (every MSB is 0, so a full value is the own level).
            let value = |iy: usize, ix: usize, c: usize| {
                let (q, np) = ((iy % s) * s + ix % s, (iy / s) * w + ix / s);
                ((cond[np * cin + c * slices + q] + 1.0) * (levels - 1) as f32 / 2.0).round() as i32
            };
            let mut lines = 0;
            for k in 0..slices {
                let map = copy_map(&spec, &cond, cin, &[k], (h, w)).unwrap();
                for p in 0..h * w {
                    let (iy, ix) = ((p / w * s + k / s) as isize, (p % w * s + k % s) as isize);
                    let known = |y: isize, x: isize| {
                        y >= 0
                            && x >= 0
                            && y < (h * s) as isize
                            && x < (w * s) as isize
                            && (y as usize % s) * s + (x as usize % s) < k
                    };
                    for (j, &(dy, dx)) in LINES.iter().enumerate() {
                        let find = |sign: isize| {
                            (1..=s as isize)
                                .map(|t| (t, iy + sign * dy * t, ix + sign * dx * t))
                                .find(|&(_, y, x)| known(y, x))
                        };
                        // The entries of this direction, one per spread bin.
                        let e = entries(&spec.net);
                        let bins: Vec<&[i32]> = (0..=spec.net.copy_spreads.len())
                            .map(|bin| &map[(p * e + FIXED + bin * LINES.len() + j) * 3..][..3])
                            .collect();
                        let blend = &map[(p * e + e - BLENDS + j) * 3..][..3];
                        match (find(-1), find(1)) {
                            (Some((ta, ya, xa)), Some((tc, yc, xc))) => {
                                lines += 1;
                                // Every MSB is 0: the sides as they are.
                                for (c, &got) in blend.iter().enumerate() {
                                    let sides = (
                                        value(ya as usize, xa as usize, c),
                                        value(yc as usize, xc as usize, c),
                                    );
                                    assert_eq!(unpack_sides(got), Some(sides), "blend {j}");
                                }
                                let (mut want, mut spread) = ([0; 3], 0);
                                for c in 0..3 {
                                    let (va, vc) = (
                                        value(ya as usize, xa as usize, c),
                                        value(yc as usize, xc as usize, c),
                                    );
                                    let exact = (va as f64 * tc as f64 + vc as f64 * ta as f64)
                                        / (ta + tc) as f64;
                                    want[c] = (exact + 0.5).floor() as i32;
                                    spread = spread.max((va - vc).abs());
                                }
                                let bin = spec
                                    .net
                                    .copy_spreads
                                    .iter()
                                    .take_while(|&&cut| spread > cut)
                                    .count();
                                seen.insert(bin);
                                for (b, got) in bins.iter().enumerate() {
                                    let want = if b == bin { want } else { [NONE; 3] };
                                    assert_eq!(
                                        *got, want,
                                        "stage {kind} slice {k} pos {p} line {j} bin {b}"
                                    );
                                }
                            }
                            _ => assert!(
                                bins.iter().all(|got| *got == [NONE; 3]) && blend == [NONE; 3],
                                "stage {kind} slice {k} pos {p} line {j}"
                            ),
                        }
                    }
                }
            }
            assert!(lines > 0);
        }
        // The data has lines in every bin of the tiny preset's cuts.
        let bins = PipelineConfig::preset("tiny")
            .unwrap()
            .net
            .copy_spreads
            .len()
            + 1;
        assert_eq!(seen.len(), bins, "bins seen: {seen:?}");
    }

    #[test]
    fn the_bonus_goes_to_each_neighbours_level_and_grows_with_agreement() {
        const E: usize = FIXED + LINES.len();
        let mut copy = [NONE; E * 3];
        copy[..3].copy_from_slice(&[2, 5, 1]); // neighbour 0
        copy[3..6].copy_from_slice(&[2, 5, 1]); // neighbour 1, the same colour
        let (gate, agree) = ([0.5f32; E * 3], [1.0f32; E * 3]);
        let mut logits = vec![0f32; 8];
        add_copy_bonus(&mut logits, (&gate, &agree), &copy, (2, 0), &[2, 5, 0]);
        let one = softplus(0.5 + 2.0);
        assert!((logits[1] - 2.0 * one).abs() < 1e-6);
        assert_eq!(logits.iter().filter(|&&l| l != 0.0).count(), 1);
        let mut logits = vec![0f32; 8];
        add_copy_bonus(&mut logits, (&gate, &agree), &copy, (2, 0), &[3, 5, 0]);
        assert!((logits[1] - 2.0 * softplus(0.5 + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn a_slope_takes_its_distance_from_the_line_level_off_every_level() {
        const E: usize = FIXED + LINES.len();
        let mut copy = [NONE; E * 3];
        copy[FIXED * 3..][..3].copy_from_slice(&[2, 5, 4]); // line entry 0
        copy[(FIXED + 2) * 3..][..3].copy_from_slice(&[7, 5, 1]); // line entry 2
                                                                  // The copy map's gates closed, then one slope gate per line entry and channel.
        let mut gate = vec![-100f32; E * 3];
        gate.extend([0.5f32; LINES.len() * 3]);
        let agree = vec![1.0f32; (E + LINES.len()) * 3];
        let mut logits = vec![0f32; 8];
        // Blue, red chosen 2 (entry 0 agrees once), green 5 (both agree).
        add_copy_bonus(&mut logits, (&gate, &agree), &copy, (2, 0), &[2, 5, 0]);
        let (s0, s2) = (softplus(0.5 + 2.0), softplus(0.5 + 1.0));
        for (l, x) in logits.iter().enumerate() {
            let want = -s0 * (l as f32 - 4.0).abs() - s2 * (l as f32 - 1.0).abs();
            assert!((x - want).abs() < 1e-4, "level {l}: {x} against {want}");
        }
        // Without slope gates in the row, the same map adds nothing.
        let mut logits = vec![0f32; 8];
        add_copy_bonus(
            &mut logits,
            (&gate[..E * 3], &agree),
            &copy,
            (2, 0),
            &[2, 5, 0],
        );
        assert!(logits.iter().all(|&x| x.abs() < 1e-30));
    }

    #[test]
    fn sides_pack_into_one_value_above_every_level() {
        for (a, c) in [(-255, 255), (0, 0), (255, -255), (31, -7)] {
            let v = pack_sides(a, c);
            assert!(v > 255, "{v}");
            assert_eq!(unpack_sides(v), Some((a, c)));
        }
        for v in [NONE, PENDING, 0, 255] {
            assert_eq!(unpack_sides(v), None);
        }
    }

    #[test]
    fn a_blend_takes_its_weight_from_the_earlier_channel_whose_sides_differ_most() {
        // Half-way in red: green half-way too, blue a quarter of the way from 50 to 0... (0 - 50) / 2.
        let sides = [(200, 0), (100, 0), (0, 50)];
        assert_eq!(
            blend_level(&sides, &[0; 3], 0, 256),
            None,
            "red has no weight"
        );
        assert_eq!(blend_level(&sides, &[100, 0, 0], 1, 256), Some((50, false)));
        // Blue from red; green agrees when it is what red implies.
        assert_eq!(blend_level(&sides, &[100, 50, 0], 2, 256), Some((25, true)));
        assert_eq!(
            blend_level(&sides, &[100, 51, 0], 2, 256),
            Some((25, false))
        );
        // Red beyond its sides counts as the nearer side.
        assert_eq!(
            blend_level(&sides, &[255, 0, 0], 1, 256),
            Some((100, false))
        );
        // Green's sides are further apart than red's: blue takes green's weight, a quarter of the way from
        // 100 to 0, and red agrees when it is 12 + (10 - 12) * 3/4 = 10.5, rounded half up to 11.
        let sides = [(10, 12), (0, 100), (0, 200)];
        assert_eq!(blend_level(&sides, &[11, 25, 0], 2, 256), Some((50, true)));
        assert_eq!(blend_level(&sides, &[10, 25, 0], 2, 256), Some((50, false)));
        // Sides one level apart fix no weight.
        assert_eq!(
            blend_level(&[(5, 6), (0, 9), (0, 9)], &[5, 0, 0], 1, 256),
            None
        );
        // The result is a level of the channel: clamped into the band.
        assert_eq!(
            blend_level(&[(0, 10), (-40, 40), (0, 0)], &[1, 0, 0], 1, 32),
            Some((0, false))
        );
        assert_eq!(
            blend_level(&[(0, 10), (40, 20), (0, 0)], &[2, 0, 0], 1, 32),
            Some((31, false))
        );
    }

    #[test]
    fn a_blend_entry_adds_its_bonus_to_the_level_the_earlier_channels_imply() {
        let e = FIXED + LINES.len() + BLENDS;
        let mut copy = vec![NONE; e * 3];
        let blend = (e - BLENDS) * 3;
        for (c, (a, s)) in [(200, 0), (100, 0), (0, 50)].into_iter().enumerate() {
            copy[blend + c] = pack_sides(a, s);
        }
        let (gate, agree) = (vec![0.5f32; e * 3], vec![1.0f32; e * 3]);
        let bonus = |ch: usize, earlier: [i64; 3]| {
            let mut logits = vec![0f32; 256];
            add_copy_bonus(&mut logits, (&gate, &agree), &copy, (ch, 0), &earlier);
            logits
                .iter()
                .enumerate()
                .filter(|(_, &l)| l != 0.0)
                .map(|(v, &l)| (v, l))
                .collect::<Vec<_>>()
        };
        assert_eq!(bonus(0, [0; 3]), vec![]);
        assert_eq!(bonus(1, [100, 0, 0]), vec![(50, softplus(0.5))]);
        assert_eq!(bonus(2, [100, 50, 0]), vec![(25, softplus(1.5))]);
        assert_eq!(bonus(2, [100, 49, 0]), vec![(25, softplus(0.5))]);
    }

    #[test]
    fn a_blend_slope_centres_on_the_level_the_blend_implies() {
        let e = FIXED + LINES.len() + BLENDS;
        let mut copy = vec![NONE; e * 3];
        let blend = (e - BLENDS) * 3;
        for (c, (a, s)) in [(200, 0), (100, 0), (0, 50)].into_iter().enumerate() {
            copy[blend + c] = pack_sides(a, s);
        }
        // Copy gates shut, line slopes shut, blend slopes at 0.5.
        let mut gate = vec![-100f32; (e + LINES.len()) * 3];
        gate.extend([0.5f32; BLENDS * 3]);
        let agree = vec![1.0f32; gate.len()];
        let mut logits = vec![0f32; 256];
        add_copy_bonus(
            &mut logits,
            (&gate, &agree),
            &copy,
            (1, BLENDS),
            &[100, 0, 0],
        );
        let s = softplus(0.5);
        for (l, x) in logits.iter().enumerate() {
            let want = -s * (l as f32 - 50.0).abs();
            assert!((x - want).abs() < 1e-3, "level {l}: {x} against {want}");
        }
        // Red takes no slope from a blend: nothing fixes its weight.
        let mut logits = vec![0f32; 256];
        add_copy_bonus(&mut logits, (&gate, &agree), &copy, (0, BLENDS), &[0; 3]);
        assert!(logits.iter().all(|&x| x.abs() < 1e-30));
    }
}
