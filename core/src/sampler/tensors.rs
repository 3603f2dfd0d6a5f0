//! The jobs on libtorch tensors of the model's size, for training, evaluation and the tests: each becomes a
//! host job (`Job`) and runs through the same sampler as canvases of any size (`canvas.rs`).
use super::{CancelToken, Job, ProgressFn, Rows, Sampler};
use crate::error::{Error, Result};
use crate::subscale::from_slices_host;
use tch::{Kind, Tensor};

/// The output of a job: `(N, 3, H, W)` uint8 images, and each one's bits under the model
/// (-log2 p of the whole image, over the slices that were run).
pub struct Samples {
    pub images: Tensor,
    pub bits: Vec<f64>,
    pub seeds: Vec<u64>,
}

/// A tensor's values as a host `i64` array, row-major.
fn host_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        t.f_to_kind(Kind::Int64)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .f_flatten(0, -1)?,
    )?)
}

/// Image `i` of a job array of images of `per` values: the one shared image, or its own.
fn image_of<T>(v: &[T], per: usize, i: usize) -> &[T] {
    if v.len() == per {
        v
    } else {
        &v[i * per..(i + 1) * per]
    }
}

impl Job {
    /// Images `range` as a job of their own.
    fn part(&self, range: std::ops::Range<usize>, per: usize) -> Job {
        fn take<T: Clone>(v: &[T], per: usize, range: &std::ops::Range<usize>) -> Vec<T> {
            range
                .clone()
                .flat_map(|i| image_of(v, per, i).iter().cloned())
                .collect()
        }
        Job {
            init: take(&self.init, per, &range),
            known_msb: take(&self.known_msb, per, &range),
            known_lsb: take(&self.known_lsb, per, &range),
            run_known: self.run_known,
        }
    }
}

impl Sampler<'_> {
    /// Samples a job, `batch_size` images at a time; returns the images `(N, 3, H, W)` and each one's bits.
    fn run(
        &self,
        job: Job,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<(Vec<u8>, Vec<f64>)> {
        let n = seeds.len();
        let bs = self.options.batch_size;
        let batches = n.div_ceil(bs);
        let mut rows = Rows {
            done: 0,
            total: self.rows_per_batch() * batches as u64,
            batches,
            batch: 0,
        };
        let (h, w) = self.hw();
        let mut images = Vec::new();
        let mut bits = Vec::new();
        for (bi, chunk) in seeds.chunks(bs).enumerate() {
            rows.batch = bi;
            let part = job.part(bi * bs..bi * bs + chunk.len(), 3 * h * w);
            let (img, b) = self.run_part(&part, chunk, &mut rows, &mut *progress, cancel)?;
            images.extend(img);
            bits.extend(b);
        }
        Ok((images, bits))
    }

    /// Runs `job` and returns its images as a tensor.
    fn run_tensors(
        &self,
        job: Job,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        let (h, w) = self.hw();
        let (images, bits) = self.run(job, seeds, progress, cancel)?;
        Ok(Samples {
            images: Tensor::f_from_slice(&images)?.f_view([
                seeds.len() as i64,
                3,
                h as i64,
                w as i64,
            ])?,
            bits,
            seeds: seeds.to_vec(),
        })
    }

    /// A job starting every image at `init` (one image), its MSBs and LSBs each all known or all drawn; with
    /// everything known, every slice is still run position by position (teacher forcing).
    fn uniform_job(&self, init: Vec<i64>, msb_known: bool, lsb_known: bool) -> Job {
        let (h, w) = self.hw();
        Job {
            init,
            known_msb: vec![msb_known; 3 * h * w],
            known_lsb: vec![lsb_known; 3 * h * w],
            run_known: msb_known && lsb_known,
        }
    }

    /// New images, one per seed.
    pub fn generate(
        &self,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        let job = self.uniform_job(vec![0; 3 * h * w], false, false);
        self.run_tensors(job, seeds, progress, cancel)
    }

    /// Completes `image` `(3, H, W)` where `known` `(H, W)` (bool) is false; known pixels are kept exactly.
    pub fn complete(
        &self,
        image: &Tensor,
        known: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        self.check_image(image, h, w, "image")?;
        if known.size() != [h as i64, w as i64] {
            return Err(Error::input(format!(
                "mask is {:?}; it must be {w}x{h} like the image",
                known.size()
            )));
        }
        let flags: Vec<bool> = host_i64(&known.f_to_kind(Kind::Bool)?)?
            .iter()
            .map(|&v| v != 0)
            .collect();
        if flags.iter().all(|&k| k) {
            log::warn!("the mask marks every pixel as known: there is nothing to complete");
        }
        let k3: Vec<bool> = (0..3).flat_map(|_| flags.iter().copied()).collect();
        let job = Job {
            init: host_i64(image)?,
            known_msb: k3.clone(),
            known_lsb: k3,
            run_known: false,
        };
        self.run_tensors(job, seeds, progress, cancel)
    }

    /// A small image `(3, H/S, W/S)` becomes slice 0 of a full-size image (kept exactly); the other slices
    /// are sampled.
    pub fn upscale_size(
        &self,
        small: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        let (h, w) = self.hw();
        let s = self.upscale_factor(None)?;
        self.check_image(small, h / s, w / s, "small image")?;
        let n = (h / s) * (w / s);
        let (mut stack, mut known) = (vec![0i64; 3 * h * w], vec![false; 3 * h * w]);
        for (c, px) in host_i64(small)?.chunks_exact(n).enumerate() {
            stack[c * s * s * n..][..n].copy_from_slice(px);
            known[c * s * s * n..][..n].fill(true);
        }
        let known = from_slices_host(&known, (h, w), s)?;
        let job = Job {
            init: from_slices_host(&stack, (h, w), s)?,
            known_msb: known.clone(),
            known_lsb: known,
            run_known: false,
        };
        self.run_tensors(job, seeds, progress, cancel)
    }

    /// Keeps the top b bits of every value of `image` `(3, H, W)` exactly and samples the low bits.
    pub fn upscale_depth(
        &self,
        image: &Tensor,
        seeds: &[u64],
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Samples> {
        Self::check_seeds(seeds)?;
        self.depth_stage()?;
        let (h, w) = self.hw();
        self.check_image(image, h, w, "image")?;
        let job = self.uniform_job(host_i64(image)?, true, false);
        self.run_tensors(job, seeds, progress, cancel)
    }

    /// Bits of each image `(N, 3, H, W)` computed by the sampler itself, teacher-forced (every sub-pixel
    /// known): equals the parallel NLL.
    pub fn teacher_forced_bits(
        &self,
        images: &Tensor,
        progress: ProgressFn,
        cancel: &CancelToken,
    ) -> Result<Vec<f64>> {
        let (h, w) = self.hw();
        let size = images.size();
        let n = match size[..] {
            [n, 3, ih, iw] if (ih, iw) == (h as i64, w as i64) && n > 0 => n as usize,
            _ => {
                return Err(Error::input(format!(
                    "images are {size:?}; this model scores (N, 3, {h}, {w})"
                )))
            }
        };
        let job = self.uniform_job(host_i64(images)?, true, true);
        Ok(self.run(job, &vec![0; n], progress, cancel)?.1)
    }

    fn check_image(&self, t: &Tensor, h: usize, w: usize, what: &str) -> Result<()> {
        if t.size() != [3, h as i64, w as i64] {
            let s = t.size();
            let got = if s.len() == 3 {
                format!("{}x{}", s[2], s[1])
            } else {
                format!("{s:?}")
            };
            return Err(Error::input(format!(
                "{what} is {got}; this model needs {w}x{h}"
            )));
        }
        Ok(())
    }
}
