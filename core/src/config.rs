//! Network and pipeline configuration, with named presets. Serialised into every bundle, so a bundle
//! always rebuilds the exact network its weights belong to.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Sizes of one stage's network (slice embedder, masked decoder, channel head).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Width of every layer.
    pub channels: i64,
    /// Residual blocks in the slice embedder (unmasked 3x3 convolutions).
    pub embed_blocks: i64,
    /// Gated causal blocks in the masked decoder.
    pub decoder_blocks: i64,
    /// A causal self-attention layer after every n-th decoder block (0: none).
    pub attention_every: i64,
    pub heads: i64,
    /// Kernel of the first (strictly causal) masked convolution; odd.
    pub first_kernel: i64,
    /// Dropout on every residual branch while training, as in PixelCNN++: small data sets overfit
    /// without it. Likelihoods and sampling never drop. Left out of the file when 0, so bundles without
    /// it stay readable by earlier versions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// What a stage models (docs/design.md section 2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Single-stage 8-bit SPN: the baseline.
    Full,
    /// Stage A: slice 0 of the MSB image, a small low-depth image.
    Small,
    /// Stage B: size upscaling, slices 1.. of the MSB image given slice 0.
    SizeUp,
    /// Stage C: depth upscaling, the low bits given all MSBs.
    DepthUp,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Full => "full",
            StageKind::Small => "a",
            StageKind::SizeUp => "b",
            StageKind::DepthUp => "c",
        }
    }
}

/// A whole model: one 8-bit stage, or the three stages of Multidimensional Upscaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub height: i64,
    pub width: i64,
    /// Subscale factor S of the full-size stages.
    pub scale: i64,
    /// Bits b kept by the low-depth stages; `None` for the single-stage 8-bit SPN.
    pub msb_bits: Option<u32>,
    /// Subscale factor of stage A over the (H/S, W/S) slice-0 image (1: a plain decoder).
    #[serde(default = "one")]
    pub small_scale: i64,
    /// The network of every stage, unless a stage overrides it below.
    pub net: NetConfig,
    #[serde(default)]
    pub net_a: Option<NetConfig>,
    #[serde(default)]
    pub net_b: Option<NetConfig>,
    #[serde(default)]
    pub net_c: Option<NetConfig>,
}

fn one() -> i64 {
    1
}

/// Everything a stage's network needs to know, derived from the pipeline config.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub kind: StageKind,
    /// Size of the image this stage models (slice 0 of the MSB image for stage A).
    pub height: i64,
    pub width: i64,
    pub scale: i64,
    /// Bits of the values it predicts: 2^bits levels.
    pub bits: u32,
    /// Bits of the MSB image it is conditioned on (stage C only).
    pub cond_bits: Option<u32>,
    /// The first slice it predicts (stage B starts at 1: slice 0 comes from stage A).
    pub first_slice: i64,
    pub net: NetConfig,
}

impl StageSpec {
    pub fn levels(&self) -> i64 {
        1 << self.bits
    }
    pub fn slices(&self) -> i64 {
        self.scale * self.scale
    }
    pub fn slice_hw(&self) -> (i64, i64) {
        (self.height / self.scale, self.width / self.scale)
    }
    /// Channels of the embedder input: the stage's own slices, plus the MSB slices for stage C.
    pub fn cond_channels(&self) -> i64 {
        let own = 3 * self.slices();
        if self.cond_bits.is_some() {
            2 * own
        } else {
            own
        }
    }
}

impl PipelineConfig {
    pub fn preset(name: &str) -> Result<Self> {
        let tiny_net = NetConfig {
            channels: 16,
            embed_blocks: 1,
            decoder_blocks: 2,
            attention_every: 2,
            heads: 2,
            first_kernel: 3,
            dropout: 0.0,
        };
        // Sized for a 2-core CPU: training throughput and sampling speed over depth.
        let emoji_net = NetConfig {
            channels: 64,
            embed_blocks: 2,
            decoder_blocks: 3,
            attention_every: 3,
            heads: 4,
            first_kernel: 5,
            dropout: 0.0,
        };
        // Sized for one GPU (see recipes/gpu.sh): wider and deeper, with dropout because 3,597 training
        // images overfit even the CPU-sized net. About 39 MB as a bundle.
        let large_net = NetConfig {
            channels: 128,
            embed_blocks: 3,
            decoder_blocks: 6,
            attention_every: 3,
            heads: 8,
            first_kernel: 5,
            dropout: 0.1,
        };
        // Every preset is square, with a plain stage A.
        let make = |size: i64, scale: i64, msb_bits: Option<u32>, net: NetConfig| PipelineConfig {
            name: name.into(),
            height: size,
            width: size,
            scale,
            msb_bits,
            small_scale: 1,
            net,
            net_a: None,
            net_b: None,
            net_c: None,
        };
        let c = match name {
            "tiny" => make(8, 2, Some(3), tiny_net),
            "tiny-full" => make(8, 2, None, tiny_net),
            "emoji" => make(64, 4, Some(3), emoji_net),
            "emoji-large" => make(64, 4, Some(3), large_net),
            "emoji-full" => make(64, 4, None, emoji_net),
            other => {
                return Err(Error::config(format!(
                    "unknown preset '{other}' (known: {})",
                    Self::PRESETS.join(", ")
                )))
            }
        };
        c.validate()?;
        Ok(c)
    }

    pub const PRESETS: &'static [&'static str] =
        &["tiny", "tiny-full", "emoji", "emoji-large", "emoji-full"];

    /// Reads a config file: TOML, or JSON when the name ends in `.json`.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        let c: Self = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .map_err(|e| Error::config(format!("{}: {e}", path.display())))?
        } else {
            toml::from_str(&text).map_err(|e| Error::config(format!("{}: {e}", path.display())))?
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config(format!("{}: {m}", self.name)));
        if self.height < 1 || self.width < 1 || self.height > 4096 || self.width > 4096 {
            return bad(format!(
                "image size {}x{} must be in 1..=4096",
                self.height, self.width
            ));
        }
        if self.scale < 1 || self.height % self.scale != 0 || self.width % self.scale != 0 {
            return bad(format!(
                "scale {} must divide the image size {}x{}",
                self.scale, self.height, self.width
            ));
        }
        if let Some(b) = self.msb_bits {
            if !(1..=7).contains(&b) {
                return bad(format!("msb_bits {b} must be in 1..=7"));
            }
            // Size upscaling needs slices beyond slice 0.
            if self.scale < 2 {
                return bad(format!(
                    "msb_bits needs scale 2 or more (size upscaling), got scale {}",
                    self.scale
                ));
            }
            let (h, w) = (self.height / self.scale, self.width / self.scale);
            if self.small_scale < 1 || h % self.small_scale != 0 || w % self.small_scale != 0 {
                return bad(format!(
                    "small_scale {} must divide the slice size {h}x{w}",
                    self.small_scale
                ));
            }
        }
        for net in [
            Some(&self.net),
            self.net_a.as_ref(),
            self.net_b.as_ref(),
            self.net_c.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if net.channels < 1 || net.channels > 4096 {
                return bad(format!("channels {} must be in 1..=4096", net.channels));
            }
            if net.heads < 1 || net.channels % net.heads != 0 {
                return bad(format!(
                    "heads {} must divide channels {}",
                    net.heads, net.channels
                ));
            }
            if net.first_kernel < 1 || net.first_kernel % 2 == 0 {
                return bad(format!("first_kernel {} must be odd", net.first_kernel));
            }
            if net.embed_blocks < 0 || net.decoder_blocks < 0 || net.attention_every < 0 {
                return bad("block counts must be >= 0".into());
            }
            if !(0.0..1.0).contains(&net.dropout) {
                return bad(format!("dropout {} must be in [0, 1)", net.dropout));
            }
        }
        Ok(())
    }

    /// The stages in generation order.
    pub fn stages(&self) -> Vec<StageSpec> {
        let net = |o: &Option<NetConfig>| o.clone().unwrap_or_else(|| self.net.clone());
        match self.msb_bits {
            None => vec![StageSpec {
                kind: StageKind::Full,
                height: self.height,
                width: self.width,
                scale: self.scale,
                bits: 8,
                cond_bits: None,
                first_slice: 0,
                net: self.net.clone(),
            }],
            Some(b) => vec![
                StageSpec {
                    kind: StageKind::Small,
                    height: self.height / self.scale,
                    width: self.width / self.scale,
                    scale: self.small_scale,
                    bits: b,
                    cond_bits: None,
                    first_slice: 0,
                    net: net(&self.net_a),
                },
                StageSpec {
                    kind: StageKind::SizeUp,
                    height: self.height,
                    width: self.width,
                    scale: self.scale,
                    bits: b,
                    cond_bits: None,
                    first_slice: 1,
                    net: net(&self.net_b),
                },
                StageSpec {
                    kind: StageKind::DepthUp,
                    height: self.height,
                    width: self.width,
                    scale: self.scale,
                    bits: 8 - b,
                    cond_bits: Some(b),
                    first_slice: 0,
                    net: net(&self.net_c),
                },
            ],
        }
    }

    pub fn dims(&self) -> i64 {
        self.height * self.width * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_roundtrip() {
        for p in PipelineConfig::PRESETS {
            let c = PipelineConfig::preset(p).unwrap();
            let t = toml::to_string(&c).unwrap();
            assert_eq!(toml::from_str::<PipelineConfig>(&t).unwrap(), c);
        }
        assert!(PipelineConfig::preset("nope").is_err());
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let mut c = PipelineConfig::preset("tiny").unwrap();
        c.height = 9;
        assert!(c.validate().is_err());
        let mut c = PipelineConfig::preset("tiny").unwrap();
        c.net.heads = 3;
        assert!(c.validate().is_err());
        for d in [-0.1, 1.0, f64::NAN] {
            let mut c = PipelineConfig::preset("tiny").unwrap();
            c.net.dropout = d;
            assert!(c.validate().is_err(), "dropout {d}");
        }
    }

    #[test]
    fn configs_without_dropout_keep_the_earlier_format() {
        let c = PipelineConfig::preset("emoji").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("dropout"), "{json}");
        let large = PipelineConfig::preset("emoji-large").unwrap();
        assert!(serde_json::to_string(&large)
            .unwrap()
            .contains("\"dropout\":0.1"));
    }
}
