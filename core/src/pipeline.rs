//! A model: one or three stages (docs/design.md section 2) sharing one VarStore under the stage names
//! `full` or `a`, `b`, `c`. Computes exact likelihoods; sampling lives in [`crate::sampler`].
use crate::bundle::{self, TrainingInfo};
use crate::config::{PipelineConfig, StageKind, StageSpec};
use crate::error::{Error, Result};
use crate::model::values::Values;
use crate::model::{nll, SpnNet};
use crate::subscale::from_slices;
use crate::weights::Weights;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The config, the VarStore and the stage networks are built together and must stay consistent (every
/// weight of the store belongs to one stage, shaped by the config), so outside the crate they are read
/// through [`Pipeline::config`] and [`Pipeline::stages`]. `info` is the training record: free to edit.
pub struct Pipeline {
    pub(crate) config: PipelineConfig,
    pub(crate) vs: nn::VarStore,
    pub(crate) stages: Vec<SpnNet>,
    pub info: TrainingInfo,
}

/// An image batch split into what the stages model: 8-bit values, or MSB and LSB images.
/// Each is `Values` over full-size images `(B, 3, [L], H, W)`.
pub struct Parts {
    pub full: Option<Values>,
    pub msb: Option<Values>,
    pub lsb: Option<Values>,
}

/// Per-stage negative log-likelihoods in nats.
pub struct Likelihood {
    /// Per stage (generation order): `(B,)` NLL of each image.
    pub per_stage: Vec<Tensor>,
    /// Sum over stages, `(B,)`.
    pub total: Tensor,
}

impl Pipeline {
    pub fn new(config: PipelineConfig, device: Device) -> Result<Self> {
        config.validate()?;
        if device.is_cuda() {
            crate::precision::ieee_fp32();
        }
        let vs = nn::VarStore::new(device);
        let stages = config
            .stages()
            .iter()
            .map(|s| SpnNet::new(vs.root() / s.kind.name(), s))
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            vs,
            stages,
            info: TrainingInfo::default(),
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The stage networks in generation order.
    pub fn stages(&self) -> &[SpnNet] {
        &self.stages
    }

    pub fn specs(&self) -> Vec<&StageSpec> {
        self.stages.iter().map(|s| &s.spec).collect()
    }

    /// Parameters of one stage (by name) or of all.
    pub fn parameter_count(&self, stage: Option<&str>) -> i64 {
        self.vs
            .variables()
            .iter()
            .filter(|(n, _)| stage.is_none_or(|s| n.split('.').next() == Some(s)))
            .map(|(_, t)| t.numel() as i64)
            .sum()
    }

    /// Named weights in a stable order.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The weights as host arrays, named as a bundle stores them (for the CPU engine, `decode::host`).
    pub fn host_weights(&self) -> Result<Weights> {
        Ok(Weights(
            crate::weights::from_tensors(&self.named_weights())?
                .into_iter()
                .collect(),
        ))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = bundle::base_meta(&self.config, &self.info)?;
        bundle::write(
            path,
            meta,
            &crate::weights::from_tensors(&self.named_weights())?,
        )
    }

    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let contents = bundle::read(path)?;
        if contents.meta.contains_key("train_state") {
            return Err(bundle::checkpoint_not_model(path));
        }
        let (config, info) = bundle::parse_meta(path, &contents.meta)?;
        Self::from_tensors(path, config, info, &contents.tensors, "", device)
    }

    /// The pipeline of `config` with the weights `prefix + name` of `tensors` (read from `path`, a bundle or
    /// a checkpoint), the two held to each other before anything is allocated
    /// ([`bundle::check_weight_count`]); [`Self::load_weights`] then compares names and shapes one by one.
    pub fn from_tensors(
        path: &Path,
        config: PipelineConfig,
        info: TrainingInfo,
        tensors: &Weights,
        prefix: &str,
        device: Device,
    ) -> Result<Self> {
        bundle::check_weight_count(path, &config, tensors, prefix)?;
        let mut p = Self::new(config, device)?;
        p.info = info;
        p.load_weights(path, tensors, prefix)?;
        Ok(p)
    }

    /// Copies `prefix + name` tensors into the VarStore, checking that names and shapes match exactly.
    pub fn load_weights(&mut self, path: &Path, tensors: &Weights, prefix: &str) -> Result<()> {
        let err = |m: String| Error::Bundle {
            path: path.to_path_buf(),
            msg: m,
        };
        let vars = self.vs.variables();
        for (name, var) in &vars {
            let src = tensors.0.get(&format!("{prefix}{name}")).ok_or_else(|| {
                err(format!(
                    "missing weight '{name}': the bundle does not match its config"
                ))
            })?;
            let size: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
            if src.shape != size {
                return Err(err(format!(
                    "weight '{name}' has shape {:?}, expected {size:?}",
                    src.shape
                )));
            }
            let mut var = var.shallow_clone();
            let src = src.to_tensor()?;
            tch::no_grad(|| var.f_copy_(&src))?;
        }
        let extra = tensors
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter(|k| !k.starts_with("__") && !vars.contains_key(*k))
            .count();
        if !prefix.is_empty() || extra == 0 {
            Ok(())
        } else {
            Err(err(format!("{extra} weights that the config does not use")))
        }
    }

    /// Splits 8-bit images `(B, 3, H, W)` (any integer kind) into the stages' value images.
    pub fn decompose(&self, x: &Tensor) -> Result<Parts> {
        let (_, c, h, w) = x.size4()?;
        if c != 3 || h != self.config.height || w != self.config.width {
            return Err(Error::input(format!(
                "image batch is {c}x{h}x{w}; this model takes 3x{}x{}",
                self.config.height, self.config.width
            )));
        }
        let x = x.f_to_kind(Kind::Int64)?.f_to_device(self.device())?;
        Ok(match self.config.msb_bits {
            None => Parts {
                full: Some(Values::Hard(x)),
                msb: None,
                lsb: None,
            },
            Some(b) => {
                let (m, l) = crate::subscale::split_depth(&x, b)?;
                Parts {
                    full: None,
                    msb: Some(Values::Hard(m)),
                    lsb: Some(Values::Hard(l)),
                }
            }
        })
    }

    /// Each stage's own slice stack and conditioning slice stack.
    pub fn stage_inputs(&self, parts: &Parts) -> Result<Vec<(Values, Option<Values>)>> {
        let missing = || Error::Other("image parts do not match the pipeline".into());
        self.stages
            .iter()
            .map(|st| {
                let s = &st.spec;
                Ok(match s.kind {
                    StageKind::Full => (
                        parts
                            .full
                            .as_ref()
                            .ok_or_else(missing)?
                            .to_slices(s.scale)?,
                        None,
                    ),
                    StageKind::Small => {
                        let m = parts.msb.as_ref().ok_or_else(missing)?;
                        (
                            m.to_slices(self.config.scale)?
                                .select_slice(0)?
                                .to_slices(s.scale)?,
                            None,
                        )
                    }
                    StageKind::SizeUp => (
                        parts.msb.as_ref().ok_or_else(missing)?.to_slices(s.scale)?,
                        None,
                    ),
                    StageKind::DepthUp => (
                        parts.lsb.as_ref().ok_or_else(missing)?.to_slices(s.scale)?,
                        Some(parts.msb.as_ref().ok_or_else(missing)?.to_slices(s.scale)?),
                    ),
                })
            })
            .collect()
    }

    /// Exact NLL (nats) of every sub-pixel a stage predicts, as a slice stack `(B, 3, S*S, h, w)`:
    /// one decoder pass per slice, each conditioned on the true earlier slices.
    pub fn stage_nll_slices(
        &self,
        stage: usize,
        own: &Values,
        cond: Option<&Values>,
    ) -> Result<Tensor> {
        let net = &self.stages[stage];
        let Values::Hard(own_t) = own else {
            return Err(Error::Other("exact NLL needs hard values".into()));
        };
        let (b, _, n, h, w) = own_t.size5()?;
        let mut out = Vec::with_capacity(n as usize);
        for k in 0..n {
            if k < net.spec.first_slice {
                out.push(Tensor::f_zeros([b, 3, h, w], (Kind::Float, self.device()))?);
                continue;
            }
            let kk = Tensor::f_full([b], k, (Kind::Int64, self.device()))?;
            let logits = net.logits(own, cond, &kk)?;
            out.push(nll(&logits, &own_t.f_select(2, k)?)?);
        }
        Ok(Tensor::f_stack(&out, 2)?)
    }

    /// Per-stage NLL maps in image coordinates, `(B, 3, H, W)` each: a sub-pixel's bits in a stage are
    /// those of the part of it (MSBs or LSBs) that the stage predicts.
    pub fn nll_maps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let parts = self.decompose(x)?;
        let inputs = self.stage_inputs(&parts)?;
        let s = self.config.scale;
        let mut maps = Vec::new();
        for (i, (own, cond)) in inputs.iter().enumerate() {
            let spec = &self.stages[i].spec;
            let sl = self.stage_nll_slices(i, own, cond.as_ref())?;
            let img = from_slices(&sl, spec.scale)?;
            let img = if spec.kind == StageKind::Small {
                // Stage A's image is slice 0 of the full-size image.
                let (b, c, h, w) = img.size4()?;
                let z = Tensor::f_zeros([b, c, s * s - 1, h, w], (Kind::Float, self.device()))?;
                from_slices(&Tensor::f_cat(&[img.f_unsqueeze(2)?, z], 2)?, s)?
            } else {
                img
            };
            maps.push(img);
        }
        Ok(maps)
    }

    /// Exact per-image NLL of an 8-bit image batch `(B, 3, H, W)`.
    pub fn likelihood(&self, x: &Tensor) -> Result<Likelihood> {
        let maps = tch::no_grad(|| self.nll_maps(x))?;
        let per_stage: Vec<Tensor> = maps
            .iter()
            .map(|m| m.f_sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double))
            .collect::<Result<_, _>>()?;
        let mut total = per_stage[0].shallow_clone();
        for t in &per_stage[1..] {
            total = total.f_add(t)?;
        }
        Ok(Likelihood { per_stage, total })
    }

    /// Unbiased one-slice-per-example estimate of each image's NLL per stage (nats), for training:
    /// the loss of one random target slice times the number of slices the stage predicts, with the config's
    /// dropout applied.
    pub fn stage_loss(
        &self,
        stage: usize,
        own: &Values,
        cond: Option<&Values>,
        k: &Tensor,
    ) -> Result<Tensor> {
        let net = &self.stages[stage];
        let Values::Hard(own_t) = own else {
            return Err(Error::Other("training needs hard values".into()));
        };
        // With dropout on (train) this is the training loss, not the density's.
        let logits = net.logits_t(own, cond, k, true)?;
        let target = Values::Hard(own_t.shallow_clone()).gather_slice(k)?;
        let n = (net.spec.slices() - net.spec.first_slice) as f64;
        Ok(nll(&logits, target.tensor())?
            .f_sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)?
            .f_mul_scalar(n)?)
    }

    /// Nats -> bits per dimension of a full image.
    pub fn bits_per_dim(&self, nats: f64) -> f64 {
        nats / (std::f64::consts::LN_2 * self.config.dims() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{join, split, tiny_bundle};
    use crate::config::NetConfig;

    /// Loads `bytes` as a bundle file.
    fn load(bytes: &[u8]) -> Result<Pipeline> {
        let dir = tempfile::tempdir().map_err(Error::Io)?;
        let p = dir.path().join("b.spn");
        std::fs::write(&p, bytes).map_err(Error::Io)?;
        Pipeline::load(&p, Device::Cpu)
    }

    /// The tiny bundle with its config edited.
    fn with_config(edit: impl FnOnce(&mut PipelineConfig)) -> Vec<u8> {
        let (mut header, data) = split(&tiny_bundle());
        let mut c = PipelineConfig::preset("tiny").unwrap();
        edit(&mut c);
        header["__metadata__"]["config"] = serde_json::to_string(&c).unwrap().into();
        join(&header, &data)
    }

    /// A config asking for more weights than its file holds is refused before its network is built, even
    /// when it is within every limit (the first would allocate about 200 MB).
    #[test]
    fn configs_are_held_to_their_tensors_before_anything_is_allocated() {
        assert!(load(&tiny_bundle()).is_ok());
        type Edit = fn(&mut PipelineConfig);
        let cases: &[(&str, Edit)] = &[
            ("weights but", |c| c.net.channels = 512),
            ("weights but", |c| c.net.first_kernel = 31),
            ("weights but", |c| c.net.decoder_blocks = 200),
            ("weights but", |c| {
                c.net_c = Some(NetConfig {
                    embed_blocks: 0,
                    ..c.net.clone()
                })
            }),
            ("first_kernel", |c| c.net.first_kernel = 99999),
            ("decoder_blocks", |c| c.net.decoder_blocks = 1_000_000_000),
            ("embed_blocks", |c| c.net.embed_blocks = 1_000_000_000),
            ("would have", |c| c.net.channels = 4096),
        ];
        for (what, edit) in cases {
            let start = std::time::Instant::now();
            let err = match load(&with_config(edit)) {
                Err(e @ Error::Bundle { .. }) => e.to_string(),
                Err(e) => panic!("{what}: wrong error {e}"),
                Ok(_) => panic!("{what}: loaded"),
            };
            assert!(err.contains(what), "{what}: {err}");
            assert!(
                start.elapsed().as_secs() < 2,
                "{what}: slow, so it allocated"
            );
        }
    }
}
