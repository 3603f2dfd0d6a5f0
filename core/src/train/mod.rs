//! Training: one random target slice per example and stage, Adam with warm-up and cosine decay, global
//! gradient clipping, optional EMA weights, periodic atomic checkpoints and exact resume.
//!
//! Every random choice of step t (the batch and the target slices) comes from an RNG seeded by (seed, t),
//! so a resumed run continues exactly as the uninterrupted one would have.
pub mod backgrounds;

use crate::bundle::{self, TrainingInfo};
use crate::config::PipelineConfig;
use crate::data::{self, Split};
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: PathBuf,
    /// More folders of training images, read as if they were inside `data` (`--data` given again): a data
    /// set mixed from others without copying them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_data: Vec<PathBuf>,
    pub out: PathBuf,
    pub steps: u64,
    pub batch_size: i64,
    pub lr: f64,
    pub warmup: u64,
    pub clip: f64,
    /// EMA decay of the weights written to the bundle (None: the raw weights).
    pub ema: Option<f64>,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub heldout_percent: u32,
    /// Stage names to train (`a`, `b`, `c`, `full`); empty: all.
    pub stages: Vec<String>,
    /// Held-out images evaluated exactly at the end (0: none).
    pub eval_images: usize,
    /// In data-parallel runs, ranks other than 0 also write their final weights to OUT.rankN (to check
    /// that the replicas agree).
    #[serde(default)]
    pub save_every_rank: bool,
    /// Mirror each training example left-right with probability 1/2: twice the images for a small data
    /// set, against the held-out gap that grows on long runs.
    #[serde(default)]
    pub flip: bool,
    /// A new run starts from this bundle's weights (and config) instead of a fresh init: fine-tuning on new
    /// data. Its training time is carried over; the step count and schedule start again at 0.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// A new run of another config (a larger image, another S) starts from this bundle's weights wherever a
    /// weight's name and shape match; the others are freshly initialised.
    #[serde(default)]
    pub warm_start: Option<PathBuf>,
    /// The share of examples composited over a random flat colour or gradient instead of white
    /// ([`backgrounds`]); needs data kept with its alpha (`spn data --keep-alpha`).
    #[serde(default)]
    pub backgrounds: f64,
    /// Stop (with a checkpoint, not an interruption) on reaching this step, the schedule still running to
    /// `steps`: one run in phases, such as a change of data mix at a given step.
    #[serde(skip)]
    pub until: Option<u64>,
    /// A new run may replace the bundle and checkpoint of an earlier one at `out`.
    #[serde(skip)]
    pub overwrite: bool,
    /// Names of the fields given again when resuming (`batch_size`, `lr`, ...): they replace the saved
    /// values, the others stay as saved in the checkpoint.
    #[serde(skip)]
    pub given: Vec<String>,
}

/// Settings a resumed run may take from its command line rather than its checkpoint.
pub const RESUMABLE: &[&str] = &["batch_size", "lr", "warmup", "clip", "seed", "eval_images"];
/// Settings that would change what the run is (its held-out split, whether and how it averages weights):
/// given on resume, they must match the saved ones.
pub const FIXED: &[&str] = &["heldout_percent", "ema"];

/// Applies the settings `given` on the command line (`new`) to the options `saved` with a run, through
/// their serialised form, so that the list of settings is the struct's own.
fn apply_given(saved: TrainOptions, new: &TrainOptions) -> Result<TrainOptions> {
    let bad = |e: serde_json::Error| Error::Other(format!("train options: {e}"));
    let (mut s, n) = (
        serde_json::to_value(&saved).map_err(bad)?,
        serde_json::to_value(new).map_err(bad)?,
    );
    for name in &new.given {
        let (old, given) = (&s[name.as_str()], &n[name.as_str()]);
        if old == given {
            continue;
        }
        let flag = name.replace('_', "-");
        if FIXED.contains(&name.as_str()) {
            let was = match (name.as_str(), old) {
                ("heldout_percent", v) => format!("holds out {v}% of its images"),
                (_, serde_json::Value::Null) => format!("was started without --{flag}"),
                (_, v) => format!("was started with --{flag} {v}"),
            };
            return Err(Error::input(format!(
                "--{flag} {given}: this run {was}, and changing that would make it another run (or train on held-out images); drop the option to resume"
            )));
        }
        if RESUMABLE.contains(&name.as_str()) {
            log::info!("resuming with --{flag} {given} (was {old})");
            s[name.as_str()] = given.clone();
        }
    }
    serde_json::from_value(s).map_err(bad)
}

impl TrainOptions {
    /// The folders of training images: `data`, then `more_data`.
    pub fn data_folders(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.data).chain(&self.more_data)
    }

    /// [`Self::data_folders`] for messages and the training record.
    pub fn data_names(&self) -> String {
        let names: Vec<String> = self
            .data_folders()
            .map(|d| d.display().to_string())
            .collect();
        names.join(", ")
    }

    pub fn new(data: PathBuf, out: PathBuf, steps: u64) -> Self {
        Self {
            data,
            more_data: Vec::new(),
            out,
            steps,
            batch_size: 32,
            lr: 2e-3,
            warmup: 100,
            clip: 1.0,
            ema: None,
            checkpoint_every: 200,
            seed: 0,
            heldout_percent: 5,
            stages: vec![],
            eval_images: 64,
            save_every_rank: false,
            flip: false,
            init: None,
            warm_start: None,
            backgrounds: 0.0,
            until: None,
            overwrite: false,
            given: Vec::new(),
        }
    }
}

/// Mirrors the images `(B, C, H, W)` whose flag is set, left to right; the others are returned as they are.
pub fn flip_some(x: &Tensor, flips: &[bool]) -> Result<Tensor> {
    let n = x.size().first().copied().unwrap_or(0);
    if flips.len() as i64 != n {
        return Err(Error::input(format!(
            "{} flip flags for a batch of {n}",
            flips.len()
        )));
    }
    let mask = Tensor::f_from_slice(flips)?
        .f_to_device(x.device())?
        .f_view([-1, 1, 1, 1])?;
    Ok(x.f_flip([3])?.f_where_self(&mask, x)?)
}

/// Path of the training checkpoint that goes with a bundle.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    seconds: f64,
    options: TrainOptions,
}

/// Reported after every step.
pub struct Progress {
    pub step: u64,
    pub steps: u64,
    /// Estimate of the trained stages' bits/dim on this step's batch.
    pub bits_per_dim: f64,
    pub images_per_sec: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The step this run started from (0 unless resumed).
    pub resumed_from: u64,
    pub steps: u64,
    pub seconds: f64,
    pub images_per_sec: f64,
    pub first_bits_per_dim: Option<f64>,
    pub last_bits_per_dim: Option<f64>,
    pub heldout_bits_per_dim: Option<f64>,
    pub interrupted: bool,
}

struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

pub struct Trainer {
    pub pipeline: Pipeline,
    opts: TrainOptions,
    names: Vec<String>,
    params: Vec<Tensor>,
    adam: Adam,
    ema: Option<Vec<Tensor>>,
    /// Checkpoint entries (`adam_m.`, `adam_v.`, `ema.` + name) of the stages this run does not train.
    carried: Vec<(String, Tensor)>,
    step: u64,
    seconds: f64,
    train: Tensor,
    train_count: usize,
    heldout_files: Vec<PathBuf>,
    stage_mask: Vec<bool>,
    dist: Option<Dist>,
}

fn zeros_like(ts: &[Tensor]) -> Result<Vec<Tensor>> {
    ts.iter()
        .map(|t| Ok(t.f_zeros_like()?.f_detach()?))
        .collect()
}

/// The checkpoint to resume, if any; refuses a new run over an earlier one's files unless told to.
fn open_run(
    opts: &TrainOptions,
    ckpt: &Path,
    resume: bool,
    rank0: bool,
) -> Result<Option<bundle::Contents>> {
    if resume && ckpt.exists() {
        return Ok(Some(bundle::read(ckpt)?));
    }
    // A new run never replaces an earlier one's bundle unless told to.
    if opts.out.exists() && !opts.overwrite {
        return Err(Error::input(if resume {
            format!(
                "--resume: there is no checkpoint {} to continue, and {} exists: pass --force to start a new run over it, or another --out",
                ckpt.display(),
                opts.out.display()
            )
        } else {
            format!(
                "{} exists: pass --resume to continue its run, --force to replace it, or another --out",
                opts.out.display()
            )
        }));
    }
    if resume {
        log::warn!("no checkpoint at {}: starting a new run", ckpt.display());
    } else if ckpt.exists() && !opts.overwrite && rank0 {
        // (With --force it is removed once every other check has passed, in `Trainer::new`.)
        return Err(Error::input(format!(
            "{} exists: pass --resume to continue that run, or --force to start over",
            ckpt.display()
        )));
    }
    Ok(None)
}

/// The pipeline, step and training time of a resumed run; `opts` become the saved ones with what may
/// change on resume (more steps, where to stop, the checkpoint interval, which stages to train next, flips
/// and backgrounds, and the settings given again) taken from the command line.
fn resume_pipeline(
    config: Option<PipelineConfig>,
    opts: &mut TrainOptions,
    c: &bundle::Contents,
    ckpt: &Path,
    device: Device,
) -> Result<(Pipeline, u64, f64)> {
    let (cfg, info) = bundle::parse_meta(ckpt, &c.meta)?;
    if config.is_some_and(|given| given != cfg) {
        return Err(Error::input(
            "the checkpoint was trained with another config; drop --preset/--config to resume it",
        ));
    }
    let state: TrainState = serde_json::from_str(
        c.meta.get("train_state").map(String::as_str).unwrap_or(""),
    )
    .map_err(|e| Error::Bundle {
        path: ckpt.to_path_buf(),
        msg: format!("bad train state: {e}"),
    })?;
    // The paths are where things are now: a checkpoint is found beside the given --out, and must go on
    // being written there even if it was moved.
    let mut saved = apply_given(state.options, opts)?;
    saved.steps = opts.steps;
    saved.checkpoint_every = opts.checkpoint_every;
    // Augmentations are set by each command line, like --steps: say so when one changes.
    if (saved.flip, saved.backgrounds) != (opts.flip, opts.backgrounds) {
        log::info!(
            "resuming with --flip {} and --backgrounds {} (the run had {} and {})",
            opts.flip,
            opts.backgrounds,
            saved.flip,
            saved.backgrounds
        );
    }
    saved.flip = opts.flip;
    saved.backgrounds = opts.backgrounds;
    saved.until = opts.until;
    saved.out = opts.out.clone();
    saved.data = opts.data.clone();
    saved.more_data = opts.more_data.clone();
    if !opts.stages.is_empty() {
        saved.stages = opts.stages.clone();
    }
    *opts = saved;
    let p = Pipeline::from_tensors(ckpt, cfg, info, &c.tensors, "model.", device)?;
    Ok((p, state.step, state.seconds))
}

/// A new run's pipeline: fresh weights from the config, or those of `--init`.
fn new_pipeline(
    config: Option<PipelineConfig>,
    opts: &TrainOptions,
    device: Device,
) -> Result<(Pipeline, u64, f64)> {
    match &opts.init {
        Some(from) => {
            let p = Pipeline::load(from, device)?;
            if config.as_ref().is_some_and(|c| c != &p.config) {
                return Err(Error::input(format!(
                    "--init {}: that model has another config; drop --preset/--config",
                    from.display()
                )));
            }
            let seconds = p.info.seconds;
            Ok((p, 0, seconds))
        }
        None => {
            let cfg =
                config.ok_or_else(|| Error::input("give a preset, a config file or --init"))?;
            tch::manual_seed(opts.seed as i64);
            let p = Pipeline::new(cfg, device)?;
            if let Some(from) = &opts.warm_start {
                warm_start(&p, from)?;
            }
            Ok((p, 0, 0.0))
        }
    }
}

/// Copies into `p` every weight of the bundle `from` with the same name and shape. Networks of the same
/// widths share most of their weights across image sizes and S (only the context embedder's input, which
/// sees S*S slices, differs), so a model trained at one size is a start for another.
/// The copy path's weights, one row per entry: the palette (docs/design.md section 3) appended entries.
const GROWN_BY_ENTRIES: [&str; 3] = ["copy_gate.weight", "copy_gate.bias", "copy_agree"];

/// Copies into `p` every weight of the model at `from` whose name it shares and whose shape fits: the same
/// shape, or for the copy path's weights ([`GROWN_BY_ENTRIES`]) fewer rows, which then start the new tensor
/// while the new entries keep their initialisation. The source's tensors are read as stored, so a model of
/// an earlier config serves.
fn warm_start(p: &Pipeline, from: &Path) -> Result<()> {
    let contents = bundle::read(from)?;
    if contents.meta.contains_key("train_state") {
        return Err(bundle::checkpoint_not_model(from));
    }
    let (from_config, _) = bundle::parse_meta(from, &contents.meta)?;
    let (mut copied, mut total) = (0i64, 0i64);
    for (name, t) in p.named_weights() {
        total += t.numel() as i64;
        let Some(s) = contents.tensors.0.get(&name) else {
            continue;
        };
        let size: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let grown = GROWN_BY_ENTRIES.iter().any(|g| name.ends_with(g))
            && s.shape.len() == size.len()
            && s.shape.first() < size.first()
            && s.shape[1..] == size[1..];
        if s.shape != size && !grown {
            continue;
        }
        let src = s.to_tensor()?.f_to_device(t.device())?;
        if grown {
            let blends = |c: &PipelineConfig| 3 * blend_entries(c, &name) as i64;
            grow_entries(&t, &src, (blends(&from_config), blends(&p.config)))?;
        } else {
            tch::no_grad(|| t.shallow_clone().f_copy_(&src))?;
        }
        copied += s.numel() as i64;
    }
    if copied == 0 {
        return Err(Error::input(format!(
            "--warm-start {}: no weight of that model has a name and shape of this config's",
            from.display()
        )));
    }
    log::info!(
        "warm start: {copied} of {total} parameters ({:.0}%) from {}",
        100.0 * copied as f64 / total as f64,
        from.display()
    );
    Ok(())
}

/// The blend entries of the stage whose weight `name` is (names start with its kind, `Pipeline::new`).
fn blend_entries(config: &PipelineConfig, name: &str) -> usize {
    config
        .stages()
        .iter()
        .find(|s| {
            name.strip_prefix(s.kind.name())
                .is_some_and(|r| r.starts_with('.'))
        })
        .map_or(0, |s| crate::decode::neighbours::blends(&s.net))
}

/// A copy-path weight `t` grown from `src` (one row per entry and channel): the source's entries before its
/// blend entries start the new tensor (line rows spread into the new bins, [`split_lines_into_bins`]), its
/// blend rows, if the new tensor has as many, end it, and everything else keeps its initialisation.
/// `blend_rows`: the source's and the new tensor's.
fn grow_entries(t: &tch::Tensor, src: &tch::Tensor, blend_rows: (i64, i64)) -> Result<()> {
    let all = t.size().first().copied().unwrap_or(0);
    let rows = src.size().first().copied().unwrap_or(0) - blend_rows.0;
    let plain = t.f_narrow(0, 0, all - blend_rows.1)?;
    tch::no_grad(|| {
        plain
            .f_narrow(0, 0, rows)?
            .f_copy_(&src.f_narrow(0, 0, rows)?)
    })?;
    split_lines_into_bins(&plain, &src.f_narrow(0, 0, rows)?, rows)?;
    if blend_rows.0 > 0 && blend_rows.0 == blend_rows.1 {
        let to = t.f_narrow(0, all - blend_rows.1, blend_rows.1)?;
        tch::no_grad(|| {
            to.shallow_clone()
                .f_copy_(&src.f_narrow(0, rows, blend_rows.0)?)
        })?;
    }
    Ok(())
}

/// A copy path grown from one bin of line entries to several (`net.copy_spreads`, docs/design.md section 3):
/// every new bin starts with the trained rows of the one bin, so that each line entry, whichever bin its
/// spread puts it in, has the gate it had, and the model starts with its density unchanged; training then
/// tells the bins apart. (Started closed instead, the bins' gates stayed nearly shut: at a fine-tuning
/// learning rate Adam moves a bias by about the rate a step, and from -4 that is thousands of steps.)
/// `t`: the new tensor up to its blend entries' rows (those keep their initialisation), whose first `rows`
/// rows are the source `src`.
fn split_lines_into_bins(t: &tch::Tensor, src: &tch::Tensor, rows: i64) -> Result<()> {
    use crate::decode::neighbours::{FIXED, LINES};
    let (fixed, lines) = (3 * FIXED as i64, 3 * LINES.len() as i64);
    let all = t.size().first().copied().unwrap_or(0);
    if rows != fixed + lines || all <= rows || (all - fixed) % lines != 0 {
        return Ok(());
    }
    let one = src.f_narrow(0, fixed, lines)?;
    for start in (rows..all).step_by(lines as usize) {
        let mut bin = t.f_narrow(0, start, lines)?;
        tch::no_grad(|| bin.f_copy_(&one))?;
    }
    Ok(())
}

fn check_settings(opts: &TrainOptions) -> Result<()> {
    if opts.steps == 0 || opts.batch_size < 1 {
        return Err(Error::input("steps and batch size must be at least 1"));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0 && opts.clip.is_finite() && opts.clip >= 0.0) {
        return Err(Error::input(format!(
            "--lr must be above 0 and --clip at least 0, got {} and {}",
            opts.lr, opts.clip
        )));
    }
    if !(0.0..=1.0).contains(&opts.backgrounds) {
        return Err(Error::input(format!(
            "--backgrounds is a share of the examples, from 0 to 1; got {}",
            opts.backgrounds
        )));
    }
    match opts.ema {
        Some(d) if !(0.0..1.0).contains(&d) => Err(Error::input("EMA decay must be in [0, 1)")),
        _ => Ok(()),
    }
}

/// The weights this run trains (those of the stages asked for), their names, and which stages train.
fn trained_weights(
    pipeline: &Pipeline,
    opts: &TrainOptions,
) -> Result<(Vec<String>, Vec<Tensor>, Vec<bool>)> {
    let names_all: Vec<&str> = pipeline.specs().iter().map(|s| s.kind.name()).collect();
    if let Some(s) = opts
        .stages
        .iter()
        .find(|s| !names_all.contains(&s.as_str()))
    {
        return Err(Error::input(format!(
            "unknown stage '{s}' (this model has: {})",
            names_all.join(", ")
        )));
    }
    let stage_mask: Vec<bool> = names_all
        .iter()
        .map(|n| opts.stages.is_empty() || opts.stages.iter().any(|s| s == n))
        .collect();
    let (names, params) = pipeline
        .named_weights()
        .into_iter()
        .filter(|(n, _)| {
            let stage = n.split('.').next().unwrap_or("");
            names_all
                .iter()
                .zip(&stage_mask)
                .any(|(s, &m)| m && *s == stage)
        })
        .unzip();
    Ok((names, params, stage_mask))
}

type OptimiserState = (Adam, Option<Vec<Tensor>>, Vec<(String, Tensor)>);

/// Adam moments, EMA weights and the entries carried over for stages this run does not train: fresh for
/// a new run, as saved for a resumed one.
fn optimiser_state(
    params: &[Tensor],
    names: &[String],
    ema_decay: Option<f64>,
    resumed: Option<&bundle::Contents>,
    ckpt: &Path,
    device: Device,
) -> Result<OptimiserState> {
    let mut adam = Adam {
        m: zeros_like(params)?,
        v: zeros_like(params)?,
    };
    let mut ema = match ema_decay {
        Some(_) => Some(
            params
                .iter()
                .map(|p| p.f_detach()?.f_contiguous()?.f_mul_scalar(1.0))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let mut carried = Vec::new();
    let Some(c) = resumed else {
        return Ok((adam, ema, carried));
    };
    let get = |prefix: &str, n: &str| {
        c.tensors
            .0
            .get(&format!("{prefix}{n}"))
            .map(|t| -> Result<Tensor> { Ok(t.to_tensor()?.f_to_device(device)?) })
            .transpose()?
            .ok_or_else(|| Error::Bundle {
                path: ckpt.to_path_buf(),
                msg: format!("checkpoint lacks {prefix}{n}"),
            })
    };
    // Stages not trained in this run keep their optimiser and EMA state as saved, for the bundle (their EMA
    // weights, not the raw ones) and for a later run that trains them again.
    let trained: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    for (key, t) in &c.tensors.0 {
        let Some((prefix, n)) = key.split_once('.') else {
            continue;
        };
        if matches!(prefix, "adam_m" | "adam_v" | "ema") && !trained.contains(n) {
            carried.push((key.clone(), t.to_tensor()?.f_to_device(device)?));
        }
    }
    for (i, n) in names.iter().enumerate() {
        // A stage trained for the first time in this run starts with fresh optimiser state.
        if !c.tensors.0.contains_key(&format!("adam_m.{n}")) {
            continue;
        }
        adam.m[i] = get("adam_m.", n)?;
        adam.v[i] = get("adam_v.", n)?;
        if let Some(e) = ema.as_mut() {
            e[i] = get("ema.", n)?;
        }
    }
    Ok((adam, ema, carried))
}

/// The training images as one tensor on the device, their count, and the held-out files. The held-out
/// images scored at the end are read now too: a bad one must not cost a whole run.
fn read_data(
    opts: &TrainOptions,
    cfg: &PipelineConfig,
    device: Device,
) -> Result<(Tensor, usize, Vec<PathBuf>)> {
    let files = |split: Split| -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        for dir in opts.data_folders() {
            all.extend(data::split_files(dir, split, opts.heldout_percent)?);
        }
        Ok(all)
    };
    let (train_files, heldout_files) = (files(Split::Train)?, files(Split::Heldout)?);
    if train_files.is_empty() {
        return Err(Error::input(if heldout_files.is_empty() {
            format!("no training images in {}", opts.data_names())
        } else {
            format!(
                "all {} images in {} fall in the held-out split (--heldout-percent {}): lower it, e.g. --heldout-percent 0",
                heldout_files.len(),
                opts.data_names(),
                opts.heldout_percent
            )
        }));
    }
    let train = if opts.backgrounds > 0.0 {
        let (rgba, transparent) = data::load_batch_rgba(&train_files, cfg.height, cfg.width)?;
        if transparent < train_files.len() {
            log::warn!(
                "{} of {} training images have no transparency: backgrounds show behind them only in the examples of the background alone (keep the alpha with `spn data --keep-alpha`)",
                train_files.len() - transparent,
                train_files.len()
            );
        }
        rgba
    } else {
        data::load_batch(&train_files, cfg.height, cfg.width)?
    }
    .f_to_device(device)?;
    let eval_n = opts.eval_images.min(heldout_files.len());
    if eval_n > 0 {
        let _ = data::load_batch(&heldout_files[..eval_n], cfg.height, cfg.width)?;
    }
    log::info!(
        "{} training images, {} held out",
        train_files.len(),
        heldout_files.len()
    );
    Ok((train, train_files.len(), heldout_files))
}

impl Trainer {
    /// A new run (`config`) or, with `resume`, the run saved in the checkpoint beside `opts.out`.
    /// With `dist`, every rank runs this with the same options; gradients are averaged across ranks and
    /// rank 0 writes the checkpoints.
    pub fn new(
        config: Option<PipelineConfig>,
        mut opts: TrainOptions,
        resume: bool,
        device: Device,
        mut dist: Option<Dist>,
    ) -> Result<Self> {
        let ckpt = checkpoint_path(&opts.out);
        let rank0 = dist.as_ref().is_none_or(|d| d.rank == 0);
        let resumed = open_run(&opts, &ckpt, resume, rank0)?;
        check_settings(&opts)?;
        let (pipeline, step, seconds) = match &resumed {
            Some(c) => resume_pipeline(config, &mut opts, c, &ckpt, device)?,
            None => new_pipeline(config, &opts, device)?,
        };
        check_settings(&opts)?;
        let (names, params, stage_mask) = trained_weights(&pipeline, &opts)?;
        if let (Some(d), None) = (dist.as_mut(), &resumed) {
            // Identical initial weights on every rank.
            d.broadcast(&params, 0)?;
        }
        let (adam, ema, carried) =
            optimiser_state(&params, &names, opts.ema, resumed.as_ref(), &ckpt, device)?;
        // A phase already passed (a recipe rerun) trains nothing: its data need not be read.
        let passed = opts.until.is_some_and(|u| u <= step) || step >= opts.steps;
        let (train, train_count, heldout_files) = if passed && resumed.is_some() {
            (Tensor::f_zeros([0], (Kind::Uint8, device))?, 0, Vec::new())
        } else {
            read_data(&opts, &pipeline.config, device)?
        };
        if !resume && opts.overwrite && rank0 {
            // The old run's checkpoint must not be resumed into this one by a later --resume.
            std::fs::remove_file(&ckpt).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })?;
        }
        Ok(Self {
            pipeline,
            opts,
            names,
            params,
            adam,
            ema,
            carried,
            step,
            seconds,
            train,
            train_count,
            heldout_files,
            stage_mask,
            dist,
        })
    }

    fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.rank)
    }

    fn world(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.world)
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    fn lr_at(&self, step: u64) -> f64 {
        let o = &self.opts;
        if step < o.warmup {
            return o.lr * (step + 1) as f64 / o.warmup as f64;
        }
        let t = (step - o.warmup) as f64 / (o.steps.saturating_sub(o.warmup)).max(1) as f64;
        o.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
    }

    /// One optimisation step; returns the bits/dim estimate of the trained stages on the batch.
    fn train_step(&mut self) -> Result<f64> {
        let step = self.step;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step,
        );
        let device = self.pipeline.device();
        let b = self.opts.batch_size;
        // The global batch is drawn the same way on every rank; each rank trains on its part of it, so W
        // ranks of batch b follow the single-process run of batch W*b.
        let (world, rank) = (self.world() as i64, self.rank() as i64);
        if self
            .pipeline
            .stages
            .iter()
            .any(|s| s.spec.net.dropout > 0.0)
        {
            // Dropout draws from libtorch's own generator: seeded by (seed, step, rank) like every other
            // random choice, so a resumed run repeats it, and ranks drop different units.
            tch::manual_seed(
                (self.opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step ^ ((rank as u64) << 48))
                    as i64,
            );
        }
        let part = (rank * b) as usize..((rank + 1) * b) as usize;
        let mine = |v: Vec<i64>| v[part.clone()].to_vec();
        let idx: Vec<i64> = mine(
            (0..b * world)
                .map(|_| rng.gen_range(0..self.train_count as i64))
                .collect(),
        );
        let mut x = self
            .train
            .f_index_select(0, &Tensor::f_from_slice(&idx)?.f_to_device(device)?)?;
        if self.opts.flip {
            let flips: Vec<bool> = (0..b * world).map(|_| rng.gen_bool(0.5)).collect();
            x = flip_some(&x, &flips[part.clone()])?;
        }
        if x.size().get(1) == Some(&4) {
            let choices =
                backgrounds::choose(&mut rng, (b * world) as usize, self.opts.backgrounds);
            x = backgrounds::composite(&x, &choices[part.clone()])?;
        }
        let per_dim = self.batch_loss(&x, &mut rng, &mine)?;
        self.backward(&per_dim)?;
        let bpd = per_dim.f_double_value(&[])? / std::f64::consts::LN_2;
        if !bpd.is_finite() {
            return Err(Error::Other(format!(
                "training diverged at step {step} (loss {bpd})"
            )));
        }
        self.apply_update(step)?;
        self.step += 1;
        Ok(bpd)
    }

    /// The loss of a batch per dimension (nats): one random slice per example and trained stage.
    fn batch_loss(
        &self,
        x: &Tensor,
        rng: &mut rand_chacha::ChaCha8Rng,
        mine: &dyn Fn(Vec<i64>) -> Vec<i64>,
    ) -> Result<Tensor> {
        let device = self.pipeline.device();
        let n = self.opts.batch_size * self.world() as i64;
        let parts = self.pipeline.decompose(x)?;
        let inputs = self.pipeline.stage_inputs(&parts)?;
        let mut loss = Tensor::f_zeros([], (Kind::Float, device))?;
        for (i, (own, cond)) in inputs.iter().enumerate() {
            if !self.stage_mask[i] {
                continue;
            }
            let spec = &self.pipeline.stages[i].spec;
            let ks: Vec<i64> = mine(
                (0..n)
                    .map(|_| rng.gen_range(spec.first_slice..spec.slices()))
                    .collect(),
            );
            let k = Tensor::f_from_slice(&ks)?.f_to_device(device)?;
            let nats = self.pipeline.stage_loss(i, own, cond.as_ref(), &k)?;
            loss = loss.f_add(&nats.f_mean(Kind::Float)?)?;
        }
        Ok(loss.f_div_scalar(self.pipeline.config.dims() as f64)?)
    }

    /// Gradients of the loss, averaged over ranks.
    fn backward(&mut self, per_dim: &Tensor) -> Result<()> {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        per_dim.f_backward()?;
        if let Some(d) = self.dist.as_mut() {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.grad())
                .filter(|g| g.defined())
                .collect();
            d.allreduce_mean(&grads)?;
        }
        Ok(())
    }

    fn apply_update(&mut self, step: u64) -> Result<()> {
        let (b1, b2, eps) = (0.9f64, 0.99f64, 1e-8f64);
        let lr = self.lr_at(step);
        tch::no_grad(|| -> Result<()> {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if g.defined() {
                        Ok(g)
                    } else {
                        Ok(p.f_zeros_like()?)
                    }
                })
                .collect::<Result<_>>()?;
            let mut sq = 0f64;
            for g in &grads {
                sq += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
            let norm = sq.sqrt();
            let scale = if self.opts.clip > 0.0 && norm > self.opts.clip {
                self.opts.clip / norm
            } else {
                1.0
            };
            let t = (step + 1) as i32;
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for (i, p) in self.params.iter().enumerate() {
                let g = grads[i].f_mul_scalar(scale)?;
                let m = &mut self.adam.m[i];
                let _ = m.f_mul_scalar_(b1)?.f_add_(&g.f_mul_scalar(1.0 - b1)?)?;
                let v = &mut self.adam.v[i];
                let _ = v
                    .f_mul_scalar_(b2)?
                    .f_add_(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
                let denom = v.f_div_scalar(c2)?.f_sqrt()?.f_add_scalar(eps)?;
                let upd = m.f_div_scalar(c1)?.f_div(&denom)?.f_mul_scalar(lr)?;
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&upd)?;
                if let (Some(e), Some(d)) = (self.ema.as_mut(), self.opts.ema) {
                    // Warm-up of the average, so that early checkpoints are not dominated by the init.
                    let d = d.min((1.0 + step as f64) / (10.0 + step as f64));
                    let _ = e[i].f_mul_scalar_(d)?.f_add_(&p.f_mul_scalar(1.0 - d)?)?;
                }
            }
            Ok(())
        })
    }

    fn info(&self) -> TrainingInfo {
        TrainingInfo {
            data: Some(self.opts.data_names()),
            train_images: self.train_count,
            heldout_images: self.heldout_files.len(),
            steps: self.step,
            batch_size: self.opts.batch_size,
            seconds: self.seconds,
            stages: self
                .pipeline
                .specs()
                .iter()
                .zip(&self.stage_mask)
                .filter(|(_, &m)| m)
                .map(|(s, _)| s.kind.name().to_string())
                .collect(),
            heldout_bits_per_dim: self.pipeline.info.heldout_bits_per_dim,
            ema: self.ema.is_some(),
        }
    }

    /// Writes the checkpoint (everything needed to resume) and the bundle (the weights to use), atomically.
    pub fn save(&mut self) -> Result<()> {
        self.pipeline.info = self.info();
        if self.rank() != 0 {
            return Ok(());
        }
        let mut meta = bundle::base_meta(&self.pipeline.config, &self.pipeline.info)?;
        let state = TrainState {
            step: self.step,
            seconds: self.seconds,
            options: self.opts.clone(),
        };
        meta.insert(
            "train_state".into(),
            serde_json::to_string(&state).map_err(|e| Error::Other(e.to_string()))?,
        );
        let mut tensors: Vec<(String, Tensor)> = self
            .pipeline
            .named_weights()
            .into_iter()
            .map(|(n, t)| (format!("model.{n}"), t))
            .collect();
        for (i, n) in self.names.iter().enumerate() {
            tensors.push((format!("adam_m.{n}"), self.adam.m[i].shallow_clone()));
            tensors.push((format!("adam_v.{n}"), self.adam.v[i].shallow_clone()));
            if let Some(e) = &self.ema {
                tensors.push((format!("ema.{n}"), e[i].shallow_clone()));
            }
        }
        tensors.extend(
            self.carried
                .iter()
                .map(|(k, t)| (k.clone(), t.shallow_clone())),
        );
        bundle::write(
            &checkpoint_path(&self.opts.out),
            meta,
            &crate::weights::from_tensors(&tensors)?,
        )?;
        self.write_bundle()
    }

    fn write_bundle(&self) -> Result<()> {
        let mut weights = self.pipeline.named_weights();
        let mut by_name: HashMap<&str, &Tensor> = self
            .carried
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("ema.").map(|n| (n, t)))
            .collect();
        if let Some(e) = &self.ema {
            by_name.extend(self.names.iter().map(String::as_str).zip(e.iter()));
        }
        for (n, t) in weights.iter_mut() {
            if let Some(x) = by_name.get(n.as_str()) {
                *t = x.shallow_clone();
            }
        }
        let meta = bundle::base_meta(&self.pipeline.config, &self.pipeline.info)?;
        bundle::write(
            &self.opts.out,
            meta,
            &crate::weights::from_tensors(&weights)?,
        )
    }

    /// The last checkpoint and bundle; other ranks' weights when asked; the held-out score of a finished
    /// run, written into its bundle.
    fn finish(&mut self, interrupted: bool) -> Result<Option<f64>> {
        self.save()?;
        if self.rank() != 0 && self.opts.save_every_rank {
            let mut p = self.opts.out.as_os_str().to_owned();
            p.push(format!(".rank{}", self.rank()));
            self.pipeline.save(std::path::Path::new(&p))?;
        }
        if self.rank() != 0
            || interrupted
            || self.opts.eval_images == 0
            || self.heldout_files.is_empty()
        {
            return Ok(None);
        }
        let files: Vec<PathBuf> = self
            .heldout_files
            .iter()
            .take(self.opts.eval_images)
            .cloned()
            .collect();
        let model = Pipeline::load(&self.opts.out, self.pipeline.device())?;
        let r = crate::eval::evaluate(&model, &files, self.opts.batch_size)?;
        log::info!(
            "held-out bits/dim {:.4} on {} images",
            r.bits_per_dim,
            r.images
        );
        self.pipeline.info.heldout_bits_per_dim = Some(r.bits_per_dim);
        self.write_bundle()?;
        Ok(Some(r.bits_per_dim))
    }

    /// Trains until `opts.steps` (or `opts.until`) or until `stop` is set; checkpoints periodically and at the
    /// end.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Report> {
        let start_step = self.step;
        let start = Instant::now();
        let base_seconds = self.seconds;
        let (mut first, mut last) = (None, None);
        let mut interrupted = false;
        let mut window = Vec::new();
        let end = self
            .opts
            .until
            .map_or(self.opts.steps, |u| u.min(self.opts.steps));
        if self.step >= end {
            // Resumed past this phase (`new` read no data for it): nothing to train. A fresh checkout has
            // the finished run's checkpoint (recipes/checkpoint.sh) but not its bundle: write it from the
            // checkpoint's EMA weights, so that rerunning a recipe brings the bundle back.
            log::info!(
                "step {} is past this phase's end ({end}): nothing to train",
                self.step
            );
            if self.rank() == 0 && !self.opts.out.exists() {
                self.write_bundle()?;
                log::info!("wrote {} from the checkpoint", self.opts.out.display());
            }
            return Ok(Report {
                resumed_from: self.step,
                steps: self.step,
                seconds: self.seconds,
                images_per_sec: 0.0,
                first_bits_per_dim: None,
                last_bits_per_dim: None,
                heldout_bits_per_dim: None,
                interrupted: false,
            });
        }
        while self.step < end {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let bpd = self.train_step()?;
            first.get_or_insert(bpd);
            last = Some(bpd);
            self.seconds = base_seconds + start.elapsed().as_secs_f64();
            let done = (self.step - start_step) as f64
                * (self.opts.batch_size * self.world() as i64) as f64;
            progress(&Progress {
                step: self.step,
                steps: self.opts.steps,
                bits_per_dim: bpd,
                images_per_sec: done / start.elapsed().as_secs_f64().max(1e-9),
            });
            window.push(bpd);
            if self.opts.checkpoint_every > 0
                && self.step.is_multiple_of(self.opts.checkpoint_every)
                && self.step < end
            {
                self.save()?;
                let mean = window.iter().sum::<f64>() / window.len().max(1) as f64;
                log::info!("checkpoint at step {}: {mean:.4} bits/dim on the training batches since the last", self.step);
                window.clear();
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let images_per_sec = (self.step - start_step) as f64
            * (self.opts.batch_size * self.world() as i64) as f64
            / elapsed.max(1e-9);
        // A phase that ends before the run does is scored by the run's end, not here.
        let heldout = self.finish(interrupted || self.step < self.opts.steps)?;
        Ok(Report {
            resumed_from: start_step,
            steps: self.step,
            seconds: self.seconds,
            images_per_sec,
            first_bits_per_dim: first,
            last_bits_per_dim: last,
            heldout_bits_per_dim: heldout,
            interrupted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::neighbours::{entries, BLENDS, IMAGE, IN_SLICE};
    use crate::weights::HostTensor;

    /// A model saved before the copy path had its palette and lines (gates for 12 entries) warm-starts one
    /// with them: the old gates keep their rows, the new entries' start closed, every other weight is copied.
    #[test]
    fn a_warm_start_keeps_the_rows_of_a_grown_head_and_leaves_the_new_ones_closed() {
        tch::manual_seed(3);
        let c = PipelineConfig::preset("tiny").unwrap();
        let old = Pipeline::new(c.clone(), Device::Cpu).unwrap();
        let old_rows = 3 * (IMAGE.len() + IN_SLICE.len());
        let mut tensors = crate::weights::from_tensors(&old.named_weights()).unwrap();
        for (name, t) in tensors.iter_mut() {
            if name.contains("copy_gate") || name.contains("copy_agree") {
                *t = t.narrow(0, 0, old_rows);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.spn");
        let mut old_config = c.clone();
        old_config.net.copy_blends = false;
        bundle::write(
            &path,
            bundle::base_meta(&old_config, &old.info).unwrap(),
            &tensors,
        )
        .unwrap();

        tch::manual_seed(4);
        let e = entries(&c.net);
        let new = Pipeline::new(c, Device::Cpu).unwrap();
        warm_start(&new, &path).unwrap();
        let stored: HashMap<&str, &HostTensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut grown = 0;
        for (name, t) in new.named_weights() {
            let got = crate::weights::from_tensors(&[(name.clone(), t)]).unwrap();
            let got = &got[0].1;
            let src = stored[name.as_str()];
            if got.shape == src.shape {
                assert_eq!(got, src, "{name} is copied");
                continue;
            }
            grown += 1;
            assert_eq!(
                &got.narrow(0, 0, old_rows),
                src,
                "{name} keeps the old rows"
            );
            // The palette and the lines closed, the blends half open (`model::head::close_palette`).
            let blend_rows = 3 * BLENDS;
            let fresh = got.narrow(0, old_rows, 3 * e - old_rows - blend_rows);
            let want = if name.ends_with("copy_gate.bias") {
                -4.0
            } else {
                0.0
            };
            let blend = got.narrow(0, 3 * e - blend_rows, blend_rows);
            if !name.ends_with("copy_agree") {
                assert!(
                    fresh.data.iter().all(|&v| v == want),
                    "{name}: palette closed"
                );
                assert!(
                    blend.data.iter().all(|&v| v == 0.0),
                    "{name}: blends half open"
                );
            }
        }
        // Three stages, each with a gate weight, bias and agreement weight.
        assert_eq!(grown, 9);
    }

    /// A model with one bin of line entries warm-starts one with spread bins: every bin starts with the line
    /// rows it had (so each entry keeps its gate whatever its bin), everything else is copied.
    #[test]
    fn a_warm_start_into_spread_bins_gives_every_bin_the_trained_line_gates() {
        for old_blends in [false, true] {
            warm_start_into_spread_bins(old_blends);
        }
    }

    /// `old_blends`: the old model has blend entries, which then start the new model's.
    fn warm_start_into_spread_bins(old_blends: bool) {
        use crate::decode::neighbours::{FIXED, LINES};
        tch::manual_seed(5);
        let new_config = PipelineConfig::preset("tiny").unwrap();
        let mut old_config = new_config.clone();
        old_config.net.copy_spreads.clear();
        old_config.net.copy_blends = old_blends;
        let old = Pipeline::new(old_config.clone(), Device::Cpu).unwrap();
        let tensors = crate::weights::from_tensors(&old.named_weights()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.spn");
        bundle::write(
            &path,
            bundle::base_meta(&old_config, &old.info).unwrap(),
            &tensors,
        )
        .unwrap();

        let bins = new_config.net.copy_spreads.len() + 1;
        assert!(bins > 1);
        let new = Pipeline::new(new_config, Device::Cpu).unwrap();
        warm_start(&new, &path).unwrap();
        let stored: HashMap<&str, &HostTensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let (fixed, lines) = (3 * FIXED, 3 * LINES.len());
        let mut grown = 0;
        for (name, t) in new.named_weights() {
            let got = &crate::weights::from_tensors(&[(name.clone(), t)]).unwrap()[0].1;
            let src = stored[name.as_str()];
            if got.shape == src.shape {
                assert_eq!(got, src, "{name} is copied");
                continue;
            }
            grown += 1;
            assert_eq!(got.shape[0], fixed + bins * lines + 3 * BLENDS, "{name}");
            assert_eq!(
                got.narrow(0, 0, fixed + lines),
                src.narrow(0, 0, fixed + lines),
                "{name}: old rows kept"
            );
            for b in 1..bins {
                assert_eq!(
                    got.narrow(0, fixed + b * lines, lines),
                    src.narrow(0, fixed, lines),
                    "{name}: bin {b} starts as the one bin"
                );
            }
            // The blend entries come from the old model's, or are new and keep their initialisation.
            let blend = got.narrow(0, fixed + bins * lines, 3 * BLENDS);
            if old_blends {
                assert_eq!(blend, src.narrow(0, fixed + lines, 3 * BLENDS), "{name}");
            } else if name.ends_with("copy_gate.bias") {
                assert!(
                    blend.data.iter().all(|&v| v == 0.0),
                    "{name}: blends half open"
                );
            }
        }
        assert_eq!(grown, 9);
    }
}
