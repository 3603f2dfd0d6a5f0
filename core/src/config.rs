//! Network and pipeline configuration, with named presets. Serialised into every bundle, so a bundle
//! always rebuilds the exact network its weights belong to.
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Upper limits of every size in a config, in one place ([`PipelineConfig::validate`] applies them). A
/// config is data: a bundle carries one, and a host may load any file. Each size multiplies into memory
/// before a weight is compared with the file, so every size is bounded, and so is the network they build
/// together ([`MAX_PARAMETERS`]). They are far above what spn trains (the largest preset: 64x64 images,
/// scale 4, 128 channels, 6 decoder blocks, kernel 5, 8 heads).
pub mod limits {
    /// Image height and width.
    pub const MAX_IMAGE_SIDE: i64 = 4096;
    /// Subscale factors (`scale`, `small_scale`): S*S slices, each a pass of the decoder.
    pub const MAX_SCALE: i64 = 64;
    /// `msb_bits`: stage C predicts the other 8 - b bits, so at most 7.
    pub const MAX_MSB_BITS: u32 = 7;
    /// `channels`, the width of every layer.
    pub const MAX_CHANNELS: i64 = 4096;
    /// `heads` of each attention layer (which must also divide the channels).
    pub const MAX_HEADS: i64 = 256;
    /// `embed_blocks`, `decoder_blocks`, and `attention_every`.
    pub const MAX_BLOCKS: i64 = 256;
    /// `first_kernel`, odd.
    pub const MAX_KERNEL: i64 = 31;
    /// `copy_spreads`: each cut adds a group of line entries to the copy path.
    pub const MAX_SPREAD_CUTS: usize = 8;
    /// Weights of the whole pipeline ([`super::PipelineConfig::parameter_count`]), about 133 million: a
    /// training checkpoint holds 16 bytes a weight (the weights, two Adam moments, the EMA weights) and
    /// must stay readable ([`crate::bundle::MAX_FILE_BYTES`] with the largest header).
    pub const MAX_PARAMETERS: u64 =
        (crate::bundle::MAX_FILE_BYTES - crate::bundle::MAX_HEADER_BYTES - 8) / 16;
}

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
    /// The channel head's copy path (`model::head`, docs/design.md section 3): every known image neighbour
    /// of a target sub-pixel, and each colour of the earlier slices' palette, adds a learned, context-gated
    /// bonus to the logit of its own value, so that flat colour is continued exactly rather than
    /// approximated from scalar inputs. Left out of the file when
    /// off, so bundles without it stay readable by earlier versions.
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy: bool,
    /// Cuts of the spread bins of the copy path's line entries, ascending: a line entry whose two sides
    /// differ by more than the first cut (its largest channel difference, in the values it interpolates)
    /// has its own gates, and so on (`decode::neighbours::spread_bin`, docs/design.md section 3). Left out
    /// of the file when empty (one bin), so bundles without it stay readable by earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_spreads: Vec<i32>,
    /// The copy path's blend entries (`decode::neighbours::BLENDS`, docs/design.md section 3): along each
    /// line direction, the value an antialiased edge pixel takes once an earlier channel has fixed how much of
    /// each side it mixes. Left out of the file when off, so bundles without it stay readable by earlier
    /// versions.
    #[serde(default, skip_serializing_if = "is_false")]
    pub copy_blends: bool,
    /// Slopes on the copy path's line entries (`decode::neighbours::add_copy_bonus`, docs/design.md section
    /// 3): each line entry also takes `softplus(gate) * |l - v|` off the logit of every level `l`, a
    /// two-sided geometric prior around its interpolated level `v`, so that a smooth ramp's low bits
    /// can land one or two levels off the line at a cost that grows with the distance (models/README.md,
    /// stop 28). Left out of the file when off, so bundles without it stay readable by earlier versions.
    #[serde(default, skip_serializing_if = "is_false")]
    pub line_slopes: bool,
    /// With `line_slopes` and `copy_blends`, slopes on the blend entries too: the same prior around the
    /// level a blend implies, which in a shaded ramp is where the earlier channel's step along the line puts
    /// this one (models/README.md, stop 28). Left out of the file when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blend_slopes: bool,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_false(x: &bool) -> bool {
    !*x
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

    /// Weights of this stage's network, counted from the sizes alone: layer by layer what
    /// `model::SpnNet::new` builds (a test holds the two equal for every preset and for random configs).
    /// Saturates at `u64::MAX` for sizes far beyond [`limits`], so it never overflows on a config that
    /// has not been validated.
    pub fn parameter_count(&self) -> u64 {
        // Sizes beyond 2^20 are beyond every limit; clamped there, no product of them overflows a u128.
        let n = |x: i64| x.clamp(0, 1 << 20) as u128;
        let net = &self.net;
        let (d, levels) = (n(net.channels), 1u128 << self.bits.min(20));
        let conv = |cin: u128, cout: u128, k: u128| cout * cin * k * k + cout; // weight and bias
        let linear = |cin: u128, cout: u128| cout * cin + cout;
        // `slices`, `slice_hw` and `cond_channels` in arithmetic that cannot overflow or divide by zero.
        let scale = n(self.scale).max(1);
        let slices = scale * scale;
        let cond_channels = if self.cond_bits.is_some() { 6 } else { 3 } * slices;
        let (h, w) = (n(self.height) / scale, n(self.width) / scale);
        let blocks = n(net.decoder_blocks);
        let attention_layers = if net.attention_every > 0 {
            blocks / n(net.attention_every)
        } else {
            0
        };
        let embedder =
            conv(cond_channels, d, 3) + n(net.embed_blocks) * 2 * conv(d, d, 3) + slices * d; // meta-position embedding
        let attention = 2 * d // layer norm
            + linear(d, d) // q
            + linear(d, 2 * d) // kv
            + linear(3, d) // pixel
            + linear(d, d) // out
            + h * w * d // positions
            + 2 * d; // sink
        let decoder = conv(3, d, n(net.first_kernel))
            + conv(d, 2 * d * blocks.max(1), 1) // context projection
            + blocks * (conv(d, 2 * d, 3) + conv(d, d, 1))
            + attention_layers * attention;
        let copy = if net.copy {
            let gates = 3 * crate::decode::neighbours::entries(net) as u128;
            let slopes = 3
                * (crate::decode::neighbours::slopes(net)
                    + crate::decode::neighbours::blend_slopes(net)) as u128;
            // Gates, and the weights of earlier channels' agreement; the same for the slopes.
            linear(d, gates) + gates + linear(d, slopes) + slopes
        } else {
            0
        };
        let head = linear(d, d) + 3 * levels * d + 3 * linear(d, levels) + copy;
        u64::try_from(embedder + decoder + head).unwrap_or(u64::MAX)
    }
}

impl NetConfig {
    /// Checks one network's sizes against [`limits`]; the message says which and why.
    fn validate(&self) -> std::result::Result<(), String> {
        use limits::*;
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(format!(
                "channels {} must be in 1..={MAX_CHANNELS}",
                self.channels
            ));
        }
        if !(1..=MAX_HEADS).contains(&self.heads) || self.channels % self.heads != 0 {
            return Err(format!(
                "heads {} must be in 1..={MAX_HEADS} and divide channels {}",
                self.heads, self.channels
            ));
        }
        if !(1..=MAX_KERNEL).contains(&self.first_kernel) || self.first_kernel % 2 == 0 {
            return Err(format!(
                "first_kernel {} must be odd and in 1..={MAX_KERNEL}",
                self.first_kernel
            ));
        }
        for (what, n) in [
            ("embed_blocks", self.embed_blocks),
            ("decoder_blocks", self.decoder_blocks),
            ("attention_every", self.attention_every),
        ] {
            if !(0..=MAX_BLOCKS).contains(&n) {
                return Err(format!("{what} {n} must be in 0..={MAX_BLOCKS}"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        let cuts = &self.copy_spreads;
        if cuts.len() > MAX_SPREAD_CUTS
            || cuts.iter().any(|c| !(0..=255).contains(c))
            || cuts.windows(2).any(|p| p[0] >= p[1])
        {
            return Err(format!(
                "copy_spreads {cuts:?} must be at most {MAX_SPREAD_CUTS} ascending cuts in 0..=255"
            ));
        }
        Ok(())
    }
}

/// The presets' spread bins of the copy path's line entries: the three cuts the stop-21 experiment tried
/// one at a time (models/README.md: leaving out line entries whose sides differ by more than 1, 4 or 16
/// levels; 4 served best, each helped), as four bins with their own gates.
pub const COPY_SPREADS: [i32; 3] = [1, 4, 16];

/// The presets' networks: tiny, emoji (sized for a 2-core CPU) and large (sized for one GPU).
fn preset_nets() -> (NetConfig, NetConfig, NetConfig) {
    let tiny_net = NetConfig {
        channels: 16,
        embed_blocks: 1,
        decoder_blocks: 2,
        attention_every: 2,
        heads: 2,
        first_kernel: 3,
        dropout: 0.0,
        copy: true,
        copy_spreads: COPY_SPREADS.to_vec(),
        copy_blends: true,
        line_slopes: false,
        blend_slopes: false,
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
        copy: true,
        copy_spreads: COPY_SPREADS.to_vec(),
        copy_blends: true,
        line_slopes: false,
        blend_slopes: false,
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
        copy: true,
        copy_spreads: COPY_SPREADS.to_vec(),
        copy_blends: true,
        line_slopes: false,
        blend_slopes: false,
    };
    (tiny_net, emoji_net, large_net)
}

impl PipelineConfig {
    pub fn preset(name: &str) -> Result<Self> {
        let (tiny_net, emoji_net, large_net) = preset_nets();
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
        // Slopes on the line and blend entries (docs/design.md section 3) for the stages that have earlier
        // slices to copy from; stage A of every preset keeps the plain head.
        let sloped = |net: &NetConfig| NetConfig {
            line_slopes: true,
            blend_slopes: true,
            ..net.clone()
        };
        let c = match name {
            "tiny" => make(8, 2, Some(3), tiny_net),
            "tiny-full" => make(8, 2, None, tiny_net),
            "emoji" => make(64, 4, Some(3), emoji_net),
            "emoji-large" => make(64, 4, Some(3), large_net),
            "emoji-full" => make(64, 4, None, emoji_net),
            // The emoji preset with slopes in stages B and C (stop 29): what the 256 model gained from them
            // (models/README.md "Why the slopes") for the 64x64 model that upscales canvases window by window.
            "emoji-slopes" => PipelineConfig {
                net_b: Some(sloped(&emoji_net)),
                net_c: Some(sloped(&emoji_net)),
                ..make(64, 4, Some(3), emoji_net.clone())
            },
            // 256x256 with the 64x64 preset's networks (docs/design.md section 3: widths never depend on
            // the image size). S = 4: B and C decode 64x64 slices; stage A is itself an SPN over the 64x64
            // slice 0 (small_scale 4: 16x16 sub-slices, the 64 preset's slice size).
            "emoji256" => PipelineConfig {
                small_scale: 4,
                ..make(256, 4, Some(3), emoji_net.clone())
            },
            // The same with S = 8: 32x32 slices, four times cheaper per training example, 64 of them.
            // Stages B and C with slopes on their line entries (stop 28): most of a 256x256 Noto emoji's
            // bits are the low bits of shaded ramps. Stage A keeps the plain head it was trained with.
            "emoji256-s8" => PipelineConfig {
                small_scale: 2,
                net_b: Some(sloped(&emoji_net)),
                net_c: Some(sloped(&emoji_net)),
                ..make(256, 8, Some(3), emoji_net)
            },
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

    pub const PRESETS: &'static [&'static str] = &[
        "tiny",
        "tiny-full",
        "emoji",
        "emoji-large",
        "emoji-full",
        "emoji-slopes",
        "emoji256",
        "emoji256-s8",
    ];

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

    /// Checks every size against the others and against [`limits`], without allocating anything.
    pub fn validate(&self) -> Result<()> {
        use limits::*;
        let bad = |m: String| Err(Error::config(format!("{}: {m}", self.name)));
        let side = 1..=MAX_IMAGE_SIDE;
        if !side.contains(&self.height) || !side.contains(&self.width) {
            return bad(format!(
                "image size {}x{} must be in 1..={MAX_IMAGE_SIDE}",
                self.height, self.width
            ));
        }
        if !(1..=MAX_SCALE).contains(&self.scale) {
            return bad(format!("scale {} must be in 1..={MAX_SCALE}", self.scale));
        }
        if self.height % self.scale != 0 || self.width % self.scale != 0 {
            return bad(format!(
                "scale {} must divide the image size {}x{}",
                self.scale, self.height, self.width
            ));
        }
        if let Some(b) = self.msb_bits {
            if !(1..=MAX_MSB_BITS).contains(&b) {
                return bad(format!("msb_bits {b} must be in 1..={MAX_MSB_BITS}"));
            }
            // Size upscaling needs slices beyond slice 0.
            if self.scale < 2 {
                return bad(format!(
                    "msb_bits needs scale 2 or more (size upscaling), got scale {}",
                    self.scale
                ));
            }
            let (h, w) = (self.height / self.scale, self.width / self.scale);
            if !(1..=MAX_SCALE).contains(&self.small_scale)
                || h % self.small_scale != 0
                || w % self.small_scale != 0
            {
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
            net.validate()
                .map_err(|m| Error::config(format!("{}: {m}", self.name)))?;
        }
        // Every size is bounded now, so this count is exact (no saturation).
        let n = self.parameter_count();
        if n > MAX_PARAMETERS {
            return bad(format!(
                "the network would have {n} weights, more than {MAX_PARAMETERS} (a checkpoint must stay under {} bytes)",
                crate::bundle::MAX_FILE_BYTES
            ));
        }
        Ok(())
    }

    /// Weights of the whole pipeline, from the sizes alone: nothing is allocated, so a bundle's config can
    /// be held to the tensors it carries before the network is built ([`StageSpec::parameter_count`]).
    pub fn parameter_count(&self) -> u64 {
        self.stages()
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.parameter_count()))
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
                    // (Checked: `stages` also serves `parameter_count` of configs not yet validated.)
                    height: self.height.checked_div(self.scale).unwrap_or(0),
                    width: self.width.checked_div(self.scale).unwrap_or(0),
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
                    bits: 8u32.saturating_sub(b),
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

    fn random_net(rng: &mut impl rand::Rng) -> NetConfig {
        let heads = rng.gen_range(1..=3);
        NetConfig {
            channels: heads * rng.gen_range(1..=4),
            embed_blocks: rng.gen_range(0..=2),
            decoder_blocks: rng.gen_range(0..=3),
            attention_every: rng.gen_range(0..=3),
            heads,
            first_kernel: [1, 3, 5][rng.gen_range(0..3)],
            dropout: 0.0,
            copy: rng.gen_bool(0.5),
            copy_spreads: [vec![], vec![0], COPY_SPREADS.to_vec()][rng.gen_range(0..3)].clone(),
            copy_blends: rng.gen_bool(0.5),
            line_slopes: rng.gen_bool(0.5),
            blend_slopes: rng.gen_bool(0.5),
        }
    }

    /// A small valid config with every option varied: scale, depth split, stage A's own scale, per-stage
    /// networks.
    fn random_config(rng: &mut impl rand::Rng) -> PipelineConfig {
        let scale = rng.gen_range(1..=3);
        let msb_bits = (scale >= 2 && rng.gen_bool(0.7)).then(|| rng.gen_range(1..=7));
        let small_scale = if msb_bits.is_some() {
            rng.gen_range(1..=2)
        } else {
            1
        };
        let mut side = || scale * small_scale * rng.gen_range(1..=3);
        let (height, width) = (side(), side());
        let mut maybe_net = || rng.gen_bool(0.3).then(|| random_net(rng));
        let (net_a, net_b, net_c) = (maybe_net(), maybe_net(), maybe_net());
        PipelineConfig {
            name: "random".into(),
            height,
            width,
            scale,
            msb_bits,
            small_scale,
            net: random_net(rng),
            net_a,
            net_b,
            net_c,
        }
    }

    /// The count a bundle is held to before anything is built is what building the network gives.
    #[test]
    #[cfg(feature = "torch")]
    fn parameter_count_is_what_the_built_network_has() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let presets = PipelineConfig::PRESETS
            .iter()
            .map(|p| PipelineConfig::preset(p).unwrap());
        let random: Vec<_> = (0..200).map(|_| random_config(&mut rng)).collect();
        for c in presets.chain(random) {
            c.validate().unwrap_or_else(|e| panic!("{c:?}: {e}"));
            let p = crate::Pipeline::new(c.clone(), tch::Device::Cpu).unwrap();
            assert_eq!(c.parameter_count(), p.parameter_count(None) as u64, "{c:?}");
            for s in c.stages() {
                assert_eq!(
                    s.parameter_count(),
                    p.parameter_count(Some(s.kind.name())) as u64,
                    "stage {} of {c:?}",
                    s.kind.name()
                );
            }
        }
    }

    #[test]
    fn sizes_beyond_the_limits_are_refused_at_once() {
        type Edit = fn(&mut PipelineConfig);
        let cases: &[(&str, Edit)] = &[
            ("decoder_blocks", |c| c.net.decoder_blocks = 1_000_000_000),
            ("embed_blocks", |c| c.net.embed_blocks = 1_000_000_000),
            ("attention_every", |c| c.net.attention_every = i64::MAX),
            ("decoder_blocks", |c| {
                c.net_b = Some(NetConfig {
                    decoder_blocks: 1_000_000_000,
                    ..c.net.clone()
                })
            }),
            ("channels", |c| c.net.channels = 8192),
            ("weights", |c| c.net.channels = 4096),
            ("weights", |c| {
                c.net.channels = 1024;
                c.net.decoder_blocks = 64;
            }),
            ("first_kernel", |c| c.net.first_kernel = 99999),
            ("heads", |c| {
                c.net.channels = 512;
                c.net.heads = 512;
            }),
            ("image size", |c| c.height = 8192),
            ("scale", |c| {
                (c.height, c.width, c.scale) = (256, 256, 128);
            }),
            ("small_scale", |c| {
                (c.height, c.width, c.scale, c.small_scale) = (256, 256, 2, 128);
            }),
            ("msb_bits", |c| c.msb_bits = Some(8)),
            ("msb_bits", |c| c.msb_bits = Some(u32::MAX)),
            ("scale", |c| c.scale = 0),
            ("channels", |c| c.net.channels = i64::MIN),
        ];
        for (what, edit) in cases {
            let mut c = PipelineConfig::preset("tiny").unwrap();
            edit(&mut c);
            let start = std::time::Instant::now();
            // Counting never panics or overflows, valid config or not.
            let _ = c.parameter_count();
            let err = c.validate().expect_err(what).to_string();
            assert!(err.contains(what), "{what}: {err}");
            assert!(start.elapsed().as_secs() < 1, "{what}: slow");
            #[cfg(feature = "torch")]
            assert!(
                crate::Pipeline::new(c, tch::Device::Cpu).is_err(),
                "{what}: built"
            );
        }
        // The limits leave the presets far inside them.
        for p in PipelineConfig::PRESETS {
            let c = PipelineConfig::preset(p).unwrap();
            assert!(c.parameter_count() < limits::MAX_PARAMETERS / 10, "{p}");
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
