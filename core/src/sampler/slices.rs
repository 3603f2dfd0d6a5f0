//! Decoding one slice of a batch: the one loop over positions and channels that every engine runs through,
//! with the batch split into groups (one per thread for the CPU engine).
use super::draw::{choose, Pick};
use super::{Batch, Sampler};
use crate::config::StageSpec;
use crate::decode::{SliceBatch, SliceDecoding};
use crate::error::{Error, Result};
use crate::sampler::CancelToken;

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
    pick: Pick,
    any_known: bool,
    /// Positions to run (all of them unless a benchmark asks for fewer).
    limit: usize,
}

impl Sampler<'_> {
    /// Decodes slice `k` of stage `si` and returns its values `(B, h * w)`: the calling thread decodes the
    /// first group and reports progress; the others (CPU engine only) decode on their own threads and only
    /// watch `cancel`. `known`: `(B, h * w, 3)` flags; `gumbel`: `(B, h * w, 3, L)` noise.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decode_slice(
        &self,
        si: usize,
        spec: &StageSpec,
        k: usize,
        input: &SliceBatch,
        gumbel: &[f32],
        known: &[u8],
        batch: &mut Batch,
    ) -> Result<Vec<[i64; 3]>> {
        let (b, n) = (input.b, input.h * input.w);
        let prepared = self.engine.prepare(si, input)?;
        let mut values = input.values.to_vec();
        let mut log_probs = vec![0f64; b];
        let shape = Shape {
            n,
            w: input.w,
            levels: spec.levels() as usize,
            temperature: self.options.temperature as f32,
            pick: self.options.pick,
            any_known: known.iter().any(|&k| k != 0),
            limit: self.options.positions_per_slice.unwrap_or(n).min(n),
        };
        let groups = split(
            b,
            self.engine.groups(b),
            shape,
            gumbel,
            known,
            &mut values,
            &mut log_probs,
        );
        let mut groups = groups.into_iter();
        let first = groups
            .next()
            .ok_or_else(|| Error::Other("empty batch".into()))?;
        let helpers = groups
            .map(|g| Ok((prepared.decoder_send(g.range.clone())?, g)))
            .collect::<Result<Vec<_>>>()?;
        let mut engine = prepared.decoder(first.range.clone())?;
        let (stage, cancel, rows) = (spec.kind.name(), batch.cancel, input.h as i64);
        std::thread::scope(|sc| -> Result<()> {
            let workers: Vec<_> = helpers
                .into_iter()
                .map(|(mut e, g)| {
                    sc.spawn(move || decode_group(&mut *e, g, shape, cancel, &mut |_| true))
                })
                .collect();
            let mine = decode_group(&mut *engine, first, shape, cancel, &mut |row| {
                batch.row_done(stage, k as i64, row as i64, rows)
            });
            for wk in workers {
                match wk.join() {
                    Ok(r) => r?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            mine
        })?;
        for (a, v) in batch.log_probs.iter_mut().zip(log_probs) {
            *a += v;
        }
        Ok(values)
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
                let (v, logp) = choose(
                    s.pick,
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
