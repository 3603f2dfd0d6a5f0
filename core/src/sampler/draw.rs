//! The one rule that draws a value, used by every engine.

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

#[cfg(test)]
mod tests {
    use super::*;

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
