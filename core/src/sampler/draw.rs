//! The one rule that draws a value, used by every engine.

/// How the value of a sub-pixel is chosen from the model's distribution at temperature T.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pick {
    /// A draw from softmax(logits / T) ([`draw`]).
    #[default]
    Sample,
    /// The distribution's mean level, rounded: deterministic, and what minimises the expected squared error
    /// of that sub-pixel, so upscaling is judged by PSNR the way a filter is (issue 15 item 5).
    Mean,
}

/// The value of one sub-pixel by `pick`: [`draw`], or the mean level of softmax(logits / T); a `known` value is
/// kept. Returns the value and its natural log-probability under the model.
pub fn choose(
    pick: Pick,
    logits: &[f32],
    gumbel: &[f32],
    temperature: f32,
    known: Option<i64>,
) -> (i64, f32) {
    match (pick, known) {
        (Pick::Sample, _) | (Pick::Mean, Some(_)) => draw(logits, gumbel, temperature, known),
        (Pick::Mean, None) => {
            let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (mut total, mut sum) = (0f64, 0f64);
            for (j, &lg) in logits.iter().enumerate() {
                let w = (((lg - mx) / temperature) as f64).exp();
                total += w;
                sum += w * j as f64;
            }
            let level = (sum / total).round() as i64;
            draw(logits, gumbel, temperature, Some(level))
        }
    }
}

/// Draws one sub-pixel from `logits` (the model's, untempered) with Gumbel noise `gumbel` of the same
/// length, at temperature `temperature`; a `known` value is kept instead of the draw. Returns the value and
/// its natural log-probability under the model.
///
/// Gumbel-max: argmax(logits / T + G) = argmax(logits + T G) is a draw from softmax(logits / T); the second
/// form never divides by a small T. The noise is drawn whether or not the value is known, so each image's
/// random stream never depends on the mask.
pub fn draw(logits: &[f32], gumbel: &[f32], temperature: f32, known: Option<i64>) -> (i64, f32) {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (j, (lg, gv)) in logits.iter().zip(gumbel).enumerate() {
        let v = lg + temperature * gv;
        if v > best_v {
            best_v = v;
            best = j;
        }
    }
    let v = known.unwrap_or(best as i64);
    let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|x| (x - mx).exp()).sum();
    let logp = logits[v.clamp(0, logits.len() as i64 - 1) as usize] - mx - sum.ln();
    (v, logp)
}

/// Gumbel noise `-ln(-ln(u))` of a uniform `u` in (0, 1) in `f32` arithmetic (each logarithm rounded to
/// `f32`), through [`ln`], which vectorises: the noise of a batch is about half a million values per 64x64
/// image, and the C library's `logf` made it a tenth of the sampler's time.
#[inline]
pub fn gumbel(u: f32) -> f32 {
    let t = ln(u as f64) as f32;
    -(ln(-t as f64) as f32)
}

/// The natural logarithm of a positive normal `x` in `f64` arithmetic accurate to about 1e-15 relative, so
/// that rounded to `f32` it is the correctly rounded `f32` logarithm but in ties far rarer than anything a
/// sampler meets. Branch-free: `x = m 2^e` with `m` in [sqrt(1/2), sqrt(2)), and `ln m = 2 atanh(s)`,
/// `s = (m - 1) / (m + 1)`, by its series to s^19 (|s| < 0.172: the next term is below 1e-16).
#[inline(always)]
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let p = 1.0 / 19.0;
    let p = p * z + 1.0 / 17.0;
    let p = p * z + 1.0 / 15.0;
    let p = p * z + 1.0 / 13.0;
    let p = p * z + 1.0 / 11.0;
    let p = p * z + 1.0 / 9.0;
    let p = p * z + 1.0 / 7.0;
    let p = p * z + 1.0 / 5.0;
    let p = p * z + 1.0 / 3.0;
    let p = p * z + 1.0;
    e as f64 * std::f64::consts::LN_2 + 2.0 * s * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_is_gumbel_noise_to_f32_precision() {
        // Uniforms across (0, 1), dense near the ends and near 1/e (where -ln(-ln u) is near 0).
        let n = 2_000_000u32;
        for i in 1..n {
            let a = i as f32 / n as f32;
            for u in [
                a,
                a * a * a,
                1.0 - a * a * 1e-3,
                (-1.0f32).exp() + (a - 0.5) * 1e-3,
            ] {
                if !(f32::MIN_POSITIVE..1.0).contains(&u) {
                    continue;
                }
                let x = u as f64;
                assert!((ln(x) - x.ln()).abs() <= 1e-15 * x.ln().abs(), "ln {u}");
                // Rounding ln(u) to f32 moves -ln(-ln u) by up to half an f32 ulp, absolute; rounding the
                // result, by half an ulp of it: the precision of any f32 computation of the noise.
                let exact = -(-x.ln()).ln();
                assert!(
                    (gumbel(u) as f64 - exact).abs() <= 1.3e-7 * (1.0 + exact.abs()),
                    "u {u}: {} against {exact}",
                    gumbel(u)
                );
            }
        }
    }

    #[test]
    fn the_mean_pick_takes_the_mean_level() {
        // Levels 0 and 3 equally likely: mean 1.5, rounded to 2; its log-probability is the model's.
        let logits = [0.0f32, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0];
        let (v, _) = choose(Pick::Mean, &logits, &[0.0; 4], 1.0, None);
        assert_eq!(v, 2);
        let logits = [0.0f32, 1.0, 0.0];
        let (v, lp) = choose(Pick::Mean, &logits, &[9.0, 0.0, 0.0], 1.0, None);
        assert_eq!(v, 1);
        assert!((lp - draw(&logits, &[0.0; 3], 1.0, Some(1)).1).abs() < 1e-6);
        assert_eq!(choose(Pick::Mean, &logits, &[0.0; 3], 1.0, Some(2)).0, 2);
    }

    #[test]
    fn known_values_are_kept_and_scored() {
        let logits = [0.0f32, 0.0, 2f32.ln()];
        let (v, lp) = draw(&logits, &[0.0, 5.0, 0.0], 1.0, Some(2));
        assert_eq!(v, 2);
        assert!((lp - 0.5f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn the_noise_decides_at_high_temperature_and_the_logits_at_low() {
        let logits = [1.0f32, 0.0];
        let gumbel = [0.0f32, 3.0];
        assert_eq!(draw(&logits, &gumbel, 1.0, None).0, 1);
        assert_eq!(draw(&logits, &gumbel, 1e-4, None).0, 0);
    }
}
