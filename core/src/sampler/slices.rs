//! Decoding one slice of a batch: the one loop over positions and channels that every engine runs through,
//! with the batch split into groups (one per thread for the CPU engine).
use super::{draw, Batch, Sampler, Slice};
use crate::decode::SliceDecoding;
use crate::error::{Error, Result};
use crate::sampler::CancelToken;
use tch::{Kind, Tensor};

/// One group of images of a slice, channel-last host buffers.
struct Group<'g> {
    range: std::ops::Range<usize>,
    gumbel: &'g [f32],
    known: &'g [u8],
    values: &'g mut [[i64; 3]],
    log_probs: &'g mut [f64],
}

/// The slice geometry and settings the loop needs.
#[derive(Clone, Copy)]
struct Shape {
    n: usize,
    w: usize,
    levels: usize,
    temperature: f32,
    any_known: bool,
    /// Positions to run (all of them unless a benchmark asks for fewer).
    limit: usize,
}

/// `(B, C, h, w)` -> `(B, h * w, C)`, flat, on the host.
fn channel_last(t: &Tensor, kind: Kind) -> Result<Tensor> {
    Ok(t.f_flatten(2, 3)?
        .f_transpose(1, 2)?
        .f_to_kind(kind)?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?
        .f_flatten(0, -1)?)
}

impl Sampler<'_> {
    /// Decodes a slice: the calling thread decodes the first group and reports progress; the others (CPU
    /// engine only) decode on their own threads and only watch `cancel`.
    pub(super) fn decode_slice(&self, sl: &Slice, batch: &mut Batch) -> Result<()> {
        let (b, _, h, w) = sl.target.size4()?;
        let (b, n) = (b as usize, (h * w) as usize);
        let levels = sl.net.spec.levels() as usize;
        let input = self
            .engine
            .prepare(sl.net, sl.si, (&sl.embed_in, &sl.kk), &sl.target)?;
        let known = Vec::<u8>::try_from(&channel_last(&sl.known, Kind::Uint8)?)?;
        let flat = Vec::<i64>::try_from(&channel_last(&sl.target, Kind::Int64)?)?;
        let mut values: Vec<[i64; 3]> = flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let mut log_probs = vec![0f64; b];
        let shape = Shape {
            n,
            w: w as usize,
            levels,
            temperature: self.options.temperature as f32,
            any_known: known.iter().any(|&k| k != 0),
            limit: self.options.positions_per_slice.unwrap_or(n).min(n),
        };
        let groups = split(
            b,
            self.engine.groups(b),
            shape,
            &sl.gumbel,
            &known,
            &mut values,
            &mut log_probs,
        );
        let mut groups = groups.into_iter();
        let first = groups
            .next()
            .ok_or_else(|| Error::Other("empty batch".into()))?;
        let helpers = groups
            .map(|g| Ok((self.engine.cpu_slice(sl.si, &input, g.range.clone())?, g)))
            .collect::<Result<Vec<_>>>()?;
        let mut engine = self
            .engine
            .slice(sl.net, sl.si, &input, first.range.clone())?;
        let (stage, k, cancel) = (sl.net.spec.kind.name(), sl.k, batch.cancel);
        std::thread::scope(|sc| -> Result<()> {
            let workers: Vec<_> = helpers
                .into_iter()
                .map(|(mut e, g)| {
                    sc.spawn(move || decode_group(&mut e, g, shape, cancel, &mut |_| true))
                })
                .collect();
            let mine = decode_group(&mut *engine, first, shape, cancel, &mut |row| {
                batch.row_done(stage, k, row as i64, h)
            });
            for wk in workers {
                match wk.join() {
                    Ok(r) => r?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            mine
        })?;
        let flat: Vec<i64> = values.iter().flatten().copied().collect();
        sl.target.shallow_clone().f_copy_(
            &Tensor::f_from_slice(&flat)?
                .f_view([b as i64, h, w, 3])?
                .f_permute([0, 3, 1, 2])?
                .f_to_device(sl.target.device())?,
        )?;
        for (a, v) in batch.log_probs.iter_mut().zip(log_probs) {
            *a += v;
        }
        Ok(())
    }
}

/// Splits a batch of `b` images into `groups` contiguous groups of near-equal size.
fn split<'g>(
    b: usize,
    groups: usize,
    shape: Shape,
    gumbel: &'g [f32],
    known: &'g [u8],
    values: &'g mut [[i64; 3]],
    log_probs: &'g mut [f64],
) -> Vec<Group<'g>> {
    let (n, per_image) = (shape.n, shape.n * 3 * shape.levels);
    let (mut vals, mut lps) = (values, log_probs);
    let mut start = 0;
    (0..groups)
        .map(|t| {
            let size = b / groups + usize::from(t < b % groups);
            let (v, rest) = std::mem::take(&mut vals).split_at_mut(size * n);
            let (l, lrest) = std::mem::take(&mut lps).split_at_mut(size);
            (vals, lps) = (rest, lrest);
            let range = start..start + size;
            start += size;
            Group {
                gumbel: &gumbel[range.start * per_image..range.end * per_image],
                known: &known[range.start * n * 3..range.end * n * 3],
                range,
                values: v,
                log_probs: l,
            }
        })
        .collect()
}

/// Samples one group of images through a slice with any engine: at every position the engine's logits of
/// each channel go through the one draw rule, known sub-pixels are kept, and the log-probability of every
/// value is accumulated. `on_row` runs after each row; false stops the work.
fn decode_group(
    engine: &mut dyn SliceDecoding,
    g: Group,
    s: Shape,
    cancel: &CancelToken,
    on_row: &mut dyn FnMut(usize) -> bool,
) -> Result<()> {
    let (n, l) = (s.n, s.levels);
    let mut chosen = vec![[0i64; 3]; g.range.len()];
    for pos in 0..s.limit {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        engine.features(pos)?;
        for ch in 0..3 {
            let logits = engine.channel_logits(ch, &chosen)?;
            for (i, c) in chosen.iter_mut().enumerate() {
                let at = (i * n + pos) * 3 + ch;
                let known = (s.any_known && g.known[at] != 0).then(|| g.values[i * n + pos][ch]);
                let (v, logp) = draw(
                    &logits[i * l..][..l],
                    &g.gumbel[at * l..][..l],
                    s.temperature,
                    known,
                );
                g.log_probs[i] += logp as f64;
                c[ch] = v;
            }
        }
        for (i, c) in chosen.iter().enumerate() {
            g.values[i * n + pos] = *c;
        }
        engine.commit(pos, &chosen)?;
        if (pos + 1) % s.w == 0 && !on_row(pos / s.w) {
            return Err(Error::Cancelled);
        }
    }
    Ok(())
}
