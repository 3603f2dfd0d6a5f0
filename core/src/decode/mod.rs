//! Decoding engines behind one interface, apart from the network definitions (`crate::model`).
//!
//! An engine decodes one slice for a group of images, position by position in raster order (docs/design.md
//! section 4): [`SliceDecoding::features`] runs the trunk at a position once every earlier pixel is
//! committed, [`SliceDecoding::channel_logits`] gives the logits of one channel given the channels already
//! chosen for that pixel, and [`SliceDecoding::commit`] records the pixel. What value is chosen is not the
//! engine's business: the sampler's one draw rule (`crate::sampler::draw`) decides, for every engine.
//!
//! Engines take plain host data ([`SliceBatch`]) and also score slices whose every sub-pixel is known
//! ([`Engine::score`]), so an engine may be plain Rust, libtorch, or a library loaded at run time
//! (`crate::backend`, docs/design.md section 9):
//! - [`host`]: the CPU engine without libtorch, built from a bundle's weights: the slice embedder ([`embed`]),
//!   per-layer caches as plain loops and small matrix products, one group of images per thread ([`cpu`]), and
//!   the full pass for known slices ([`full`]). The path on CPUs, and all of libspn's own;
//! - [`tensor`] (feature `torch`): the same caches as tensor ops on the model's device (the path on GPUs);
//! - [`naive`] (feature `torch`): a full decoder pass per position, the reference.
//!
//! All give the same logits (tests hold them within 1e-4 of libtorch's full pass).
pub mod cpu;
pub mod embed;
pub mod full;
pub mod host;
#[cfg(feature = "torch")]
pub mod naive;
pub mod neighbours;
#[cfg(feature = "torch")]
pub mod tensor;
#[cfg(feature = "torch")]
pub mod torch;

use crate::config::PipelineConfig;
use crate::error::Result;

/// One slice being decoded for a group of images. Values are integer levels, one `[R, G, B]` per image of
/// the group; logits are `group x levels`, row-major.
pub trait SliceDecoding {
    /// Runs the trunk at raster position `pos`; every pixel before it must be committed.
    fn features(&mut self, pos: usize) -> Result<()>;
    /// Logits of channel `ch` at the current position given the channels before it (`chosen[i][..ch]`).
    fn channel_logits(&mut self, ch: usize, chosen: &[[i64; 3]]) -> Result<&[f32]>;
    /// Records the pixel at `pos` so that later positions see it.
    fn commit(&mut self, pos: usize, values: &[[i64; 3]]) -> Result<()>;
}

/// Which engine decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoding {
    /// Per-layer caches: each step computes only the new position. On the CPU this is the plain-Rust
    /// engine of [`cpu`], elsewhere [`Decoding::IncrementalTensor`].
    Incremental,
    /// The same caches as tensor ops on the model's device: the path on GPUs; on the CPU kept as a second
    /// implementation the fast one is tested against.
    IncrementalTensor,
    /// A full decoder pass per pixel: the reference the incremental engines are tested against.
    Naive,
}

/// One slice of a batch as every engine receives it: host arrays, channel-last, so that an engine may live
/// in plain Rust, on libtorch, or behind a loaded library (docs/design.md section 4).
pub struct SliceBatch<'a> {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    /// The embedder's input `(B, h * w, cin)` (`host::condition`).
    pub cond: &'a [f32],
    pub cin: usize,
    /// Each image's target slice.
    pub ks: &'a [usize],
    /// The slice's current values `(B, h * w)`, known ones in place.
    pub values: &'a [[i64; 3]],
}

/// A decoding engine with its per-stage weights, chosen once for a model and a device.
pub trait Engine {
    /// `cpu`, `tensor`, `naive`, ...
    fn name(&self) -> &'static str;
    /// Groups a batch of `b` images is split into, each decoded on its own thread
    /// ([`PreparedSlice::decoder_send`]). Engines that parallelise inside run the batch as one group.
    fn groups(&self, _b: usize) -> usize {
        1
    }
    /// Prepares slice decoding for stage `si` (the slice context of every image of the batch).
    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>>;
    /// Natural log-probability of every sub-pixel `(B, h * w, 3)` of a slice whose values are all known, in
    /// one pass.
    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>>;
}

/// A prepared slice of a batch, from which decoders for groups of its images are made.
pub trait PreparedSlice {
    /// A decoder of images `range`, run on the calling thread.
    fn decoder(&self, range: std::ops::Range<usize>) -> Result<Box<dyn SliceDecoding + '_>>;
    /// A decoder of images `range` that another thread may run: engines whose [`Engine::groups`] is above 1.
    fn decoder_send(
        &self,
        _range: std::ops::Range<usize>,
    ) -> Result<Box<dyn SliceDecoding + Send + '_>> {
        Err(crate::Error::Other(
            "this engine decodes a batch on one thread".into(),
        ))
    }
}

impl<T: Engine + ?Sized> Engine for &T {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn groups(&self, b: usize) -> usize {
        (**self).groups(b)
    }
    fn prepare<'e>(&'e self, si: usize, input: &SliceBatch) -> Result<Box<dyn PreparedSlice + 'e>> {
        (**self).prepare(si, input)
    }
    fn score(&self, si: usize, input: &SliceBatch) -> Result<Vec<f32>> {
        (**self).score(si, input)
    }
}

/// A model the sampler runs: its config and an engine for it. A libtorch `Pipeline` and a plain-Rust
/// [`host::HostModel`] both are one.
pub trait Network {
    fn config(&self) -> &PipelineConfig;
    /// The engine `decoding` asks for; `host_embedder`: the CPU engine embeds slices in plain Rust (false:
    /// with libtorch, to compare the two in `spn bench`).
    fn engine(&self, decoding: Decoding, host_embedder: bool) -> Result<Box<dyn Engine + '_>>;
}
