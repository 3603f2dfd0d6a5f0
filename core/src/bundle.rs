//! The pipeline bundle: one safetensors file with the configs, every stage's weights under stable named
//! paths, a format version and the training record. Written atomically; read defensively.
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::weights::{HostTensor, Weights};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

pub const FORMAT: &str = "spn-bundle";
/// Bumped when a change would make older readers misread a bundle. Readers refuse newer versions.
pub const FORMAT_VERSION: u32 = 1;

/// What a model was trained on, shown by `spn info`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TrainingInfo {
    pub data: Option<String>,
    pub train_images: usize,
    pub heldout_images: usize,
    pub steps: u64,
    pub batch_size: i64,
    pub seconds: f64,
    pub stages: Vec<String>,
    pub heldout_bits_per_dim: Option<f64>,
    pub ema: bool,
}

/// Raw contents of a bundle or checkpoint file: its metadata and its tensors as host arrays.
pub struct Contents {
    pub meta: HashMap<String, String>,
    pub tensors: Weights,
}

fn bundle_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Bundle {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Writes named f32 tensors and string metadata to `path` atomically (temp file + rename).
pub fn write(
    path: &Path,
    meta: HashMap<String, String>,
    tensors: &[(String, HostTensor)],
) -> Result<()> {
    let bufs: Vec<_> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: Vec<u8> = t.data.iter().flat_map(|f| f.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), bytes)
        })
        .collect();
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| bundle_err(path, format!("{e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, &Some(meta))
        .map_err(|e| bundle_err(path, format!("{e:?}")))?;
    let dir = crate::data::parent_dir(path);
    let cannot = |e| crate::data::cannot_write(path, e);
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(cannot)?;
    tmp.write_all(&data).map_err(cannot)?;
    tmp.as_file().sync_all().map_err(cannot)?;
    crate::data::persist(tmp, path)
}

/// The largest bundle or checkpoint [`read`] accepts: 2 GiB. The largest preset's bundle is about 39 MB and
/// its checkpoint about four times that; a config may not ask for more weights than a checkpoint of this
/// size holds (`config::limits::MAX_PARAMETERS`). The bound is what lets a wrong or hostile path (a device
/// such as /dev/zero, a huge file) cost at most this much memory: the file's bytes and its tensors, once each.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// The largest safetensors header read (16 MiB): a checkpoint of the largest config the limits allow needs
/// about 100 bytes a tensor for at most [`MAX_TENSORS`]; safetensors' own limit (100 MB) would let a hostile
/// header cost far more to parse.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// The most tensors a file may hold (65,536): a checkpoint (weights, two Adam moments, EMA weights) of the
/// deepest network the config limits allow holds fewer, and each tensor costs libtorch memory of its own
/// however small it is.
pub const MAX_TENSORS: usize = 1 << 16;
/// Every dimension of a tensor is below 2^31 and a tensor has at most [`MAX_RANK`] of them: shapes are
/// handed to libtorch as i64 (a dimension of 2^63 or more would wrap, and libtorch refuses it as an
/// internal error, not as a damaged file), and the networks' largest dimension is far smaller.
pub const MAX_DIM: usize = 1 << 31;
pub const MAX_RANK: usize = 8;

/// Reads a file written by [`write`]; any damage is an error, never a panic, a hang or unbounded memory.
pub fn read(path: &Path) -> Result<Contents> {
    let data = read_file(path)?;
    parse(path, &data)
}

/// The bytes of a regular file of at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>> {
    let cannot = |e: std::io::Error| bundle_err(path, format!("cannot read: {e}"));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Opening a FIFO blocks until something writes to it, which may be never: non-blocking, the open
    // returns at once and the file-type check below refuses it. On a regular file the flag does nothing.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(cannot)?;
    // The type and size of what was opened, not of what the path names now (it may have been replaced).
    let md = file.metadata().map_err(cannot)?;
    if !md.is_file() {
        return Err(bundle_err(
            path,
            format!(
                "this is {}, not a regular file: a model is a bundle file",
                file_kind(&md.file_type())
            ),
        ));
    }
    if md.len() > MAX_FILE_BYTES {
        return Err(too_large(path, md.len()));
    }
    let mut data = Vec::with_capacity(md.len() as usize);
    // At most one byte past the limit, so a file that grows while it is read cannot exhaust memory either.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path, data.len() as u64));
    }
    Ok(data)
}

fn too_large(path: &Path, len: u64) -> Error {
    bundle_err(
        path,
        format!(
            "{len} bytes is larger than any bundle this build reads ({MAX_FILE_BYTES} bytes, 2 GiB)"
        ),
    )
}

/// What a path that is not a regular file is, for the error message.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "something else"
    }
}

/// The contents of a bundle or checkpoint file's bytes.
fn parse(path: &Path, data: &[u8]) -> Result<Contents> {
    let header_len = data
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    if let Some(n) = header_len.filter(|&n| n > MAX_HEADER_BYTES) {
        return Err(bundle_err(
            path,
            format!("its header is {n} bytes, over the {MAX_HEADER_BYTES}-byte limit of bundles"),
        ));
    }
    let (_, md) = SafeTensors::read_metadata(data)
        .map_err(|e| bundle_err(path, format!("not a safetensors file or damaged: {e:?}")))?;
    let meta = md.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bundle_err(
            path,
            "not an spn bundle (no 'format: spn-bundle' in its header)",
        ));
    }
    let version: u32 = meta
        .get("format_version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bundle_err(path, "missing or invalid format_version"))?;
    if version > FORMAT_VERSION {
        return Err(Error::BundleVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    check_tensors(path, &md)?;
    let st =
        SafeTensors::deserialize(data).map_err(|e| bundle_err(path, format!("damaged: {e:?}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        // NaN or infinite weights would load and then give NaN likelihoods and garbage samples.
        if let Some(i) = view
            .data()
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        {
            return Err(bundle_err(
                path,
                format!("tensor {name} holds a value that is not finite (NaN or infinity) at element {i}: the weights are damaged"),
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, HostTensor::new(view.shape().to_vec(), data)?);
    }
    Ok(Contents {
        meta,
        tensors: Weights(tensors),
    })
}

/// Every tensor the header declares, checked before any is made: its count, dtype, shape, and a byte range
/// exactly as long as the shape needs (checked arithmetic: no shape wraps around to fit). The product is
/// taken in dimension order, so every partial product of an accepted shape fits too, even of a tensor with
/// no elements: libtorch's and tch's own products over the shape (`numel`) cannot overflow.
fn check_tensors(path: &Path, md: &safetensors::tensor::Metadata) -> Result<()> {
    let infos = md.tensors();
    if infos.len() > MAX_TENSORS {
        return Err(bundle_err(
            path,
            format!(
                "{} tensors, more than any bundle holds ({MAX_TENSORS})",
                infos.len()
            ),
        ));
    }
    // In name order, so that a file with several faults always reports the same one.
    let mut infos: Vec<_> = infos.into_iter().collect();
    infos.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in infos {
        let bad = |why: String| bundle_err(path, format!("tensor {name}: {why}"));
        if info.dtype != Dtype::F32 {
            return Err(bad(format!("dtype {:?}, expected F32", info.dtype)));
        }
        let shape = &info.shape;
        if shape.len() > MAX_RANK || shape.iter().any(|&d| d >= MAX_DIM) {
            return Err(bad(format!(
                "shape {shape:?}: at most {MAX_RANK} dimensions, each below 2^31"
            )));
        }
        let (start, end) = info.data_offsets;
        let needed = shape
            .iter()
            .try_fold(Dtype::F32.size(), |n, &d| n.checked_mul(d));
        if needed.is_none() || needed != end.checked_sub(start) {
            return Err(bad(format!(
                "shape {shape:?} does not fit its data range {start}..{end}"
            )));
        }
    }
    Ok(())
}

/// The error for a training checkpoint given where a model is wanted.
pub fn checkpoint_not_model(path: &Path) -> Error {
    bundle_err(
        path,
        "this is a training checkpoint (for --resume), not a model: use the bundle it was saved beside (the same name without .ckpt)",
    )
}

/// Holds the weights `prefix + name` of a file to its config before anything is built from them: the network
/// the config describes must have exactly as many weights as the file holds, counted from the config's sizes
/// alone ([`PipelineConfig::parameter_count`]). So a config that would need more memory than its file never
/// allocates it; the builders then compare names and shapes one by one.
pub fn check_weight_count(
    path: &Path,
    config: &PipelineConfig,
    weights: &Weights,
    prefix: &str,
) -> Result<()> {
    config.validate()?;
    // `__` names are not weights.
    let found = weights
        .0
        .iter()
        .filter(|(k, _)| k.strip_prefix(prefix).is_some_and(|k| !k.starts_with("__")))
        .fold(0u64, |n, (_, t)| n.saturating_add(t.numel() as u64));
    let needed = config.parameter_count();
    if found != needed {
        return Err(bundle_err(
            path,
            format!(
                "its tensors hold {found} weights but the network its config describes has {needed}: the weights do not have the shapes the config needs"
            ),
        ));
    }
    Ok(())
}

/// Metadata every bundle carries.
pub fn base_meta(config: &PipelineConfig, info: &TrainingInfo) -> Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    m.insert("format".into(), FORMAT.into());
    m.insert("format_version".into(), FORMAT_VERSION.to_string());
    m.insert(
        "config".into(),
        serde_json::to_string(config).map_err(|e| Error::Other(e.to_string()))?,
    );
    m.insert(
        "training".into(),
        serde_json::to_string(info).map_err(|e| Error::Other(e.to_string()))?,
    );
    Ok(m)
}

pub fn parse_meta(
    path: &Path,
    meta: &HashMap<String, String>,
) -> Result<(PipelineConfig, TrainingInfo)> {
    let config: PipelineConfig = serde_json::from_str(
        meta.get("config")
            .ok_or_else(|| bundle_err(path, "no config"))?,
    )
    .map_err(|e| bundle_err(path, format!("bad config: {e}")))?;
    config
        .validate()
        .map_err(|e| bundle_err(path, e.to_string()))?;
    let info = match meta.get("training") {
        Some(t) => serde_json::from_str(t)
            .map_err(|e| bundle_err(path, format!("bad training record: {e}")))?,
        None => TrainingInfo::default(),
    };
    Ok((config, info))
}

// The tests make bundles with libtorch.
#[cfg(all(test, feature = "torch"))]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Reads `path` on another thread: a read that blocks fails the test instead of hanging it.
    fn read_within(path: &Path, secs: u64) -> Result<Contents> {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read(&p));
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("reading {} did not return", path.display()))
    }

    fn refused(r: Result<Contents>, what: &str) -> String {
        match r {
            Err(e @ Error::Bundle { .. }) => e.to_string(),
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok(_) => panic!("{what}: read"),
        }
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.spn");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever comes: opening it for reading must not wait for one.
        let err = refused(read_within(&fifo, 20), "fifo");
        assert!(
            err.contains("FIFO") && err.contains("not a regular file"),
            "{err}"
        );
        for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let err = refused(read_within(Path::new(dev), 20), dev);
            assert!(err.contains("device"), "{err}");
        }
        let err = refused(read_within(dir.path(), 20), "folder");
        assert!(err.contains("folder"), "{err}");
        let err = refused(read_within(&dir.path().join("missing.spn"), 20), "missing");
        assert!(err.contains("cannot read"), "{err}");
    }

    /// A freshly made (untrained) `tiny` bundle's bytes.
    pub(crate) fn tiny_bundle() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.spn");
        crate::Pipeline::new(
            crate::PipelineConfig::preset("tiny").unwrap(),
            tch::Device::Cpu,
        )
        .unwrap()
        .save(&p)
        .unwrap();
        std::fs::read(p).unwrap()
    }

    /// The JSON header and the data of a safetensors file.
    pub(crate) fn split(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        (
            serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
            bytes[8 + n..].to_vec(),
        )
    }

    pub(crate) fn join(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
        let h = serde_json::to_vec(header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    fn read_bytes(bytes: &[u8]) -> Result<Contents> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.spn");
        std::fs::write(&p, bytes).unwrap();
        read(&p)
    }

    /// The first tensor's name and its data range.
    fn first_tensor(header: &serde_json::Value) -> (String, usize, usize) {
        let (name, t) = header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .min_by_key(|(_, t)| t["data_offsets"][0].as_u64())
            .unwrap();
        let o = &t["data_offsets"];
        (
            name.clone(),
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        )
    }

    #[test]
    fn shapes_that_do_not_fit_an_i64_or_their_bytes_are_refused() {
        let bytes = tiny_bundle();
        assert!(read_bytes(&bytes).is_ok());
        let (header, data) = split(&bytes);
        let end = data.len();
        // Zero elements, so the byte range (empty) matches: only the dimensions' size is wrong.
        for shape in [
            serde_json::json!([1u64 << 63, 0]),
            serde_json::json!([u64::MAX, 0]),
            serde_json::json!([1u64 << 31, 0]),
            serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 0]),
        ] {
            let mut h = header.clone();
            h["extra"] =
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [end, end]});
            let err = refused(read_bytes(&join(&h, &data)), &shape.to_string());
            assert!(
                err.contains("tensor extra") && err.contains("shape"),
                "{err}"
            );
        }
        // Other dtypes, even of the right byte length.
        let (name, start, stop) = first_tensor(&header);
        let mut h = header.clone();
        h[&name] = serde_json::json!({"dtype": "I32", "shape": [(stop - start) / 4], "data_offsets": [start, stop]});
        let err = refused(read_bytes(&join(&h, &data)), "dtype");
        assert!(err.contains(&name) && err.contains("I32"), "{err}");
    }

    #[test]
    fn too_many_tensors_or_too_large_a_header_are_refused() {
        let (mut header, data) = split(&tiny_bundle());
        let end = data.len();
        for i in 0..MAX_TENSORS {
            header[format!("__empty{i}")] =
                serde_json::json!({"dtype": "F32", "shape": [0], "data_offsets": [end, end]});
        }
        let err = refused(read_bytes(&join(&header, &data)), "tensors");
        assert!(err.contains("tensors, more than"), "{err}");
        let mut big = (MAX_HEADER_BYTES + 8).to_le_bytes().to_vec();
        big.extend(b"{");
        big.resize(MAX_HEADER_BYTES as usize + 8, b' ');
        big.extend(b"}");
        let err = refused(read_bytes(&big), "header");
        assert!(err.contains("header") && err.contains("limit"), "{err}");
    }

    #[test]
    fn weights_that_are_not_finite_are_refused_naming_the_tensor() {
        let bytes = tiny_bundle();
        let (header, data) = split(&bytes);
        let (name, start, stop) = first_tensor(&header);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut d = data.clone();
            d[stop - 4..stop].copy_from_slice(&bad.to_le_bytes());
            let err = refused(read_bytes(&join(&header, &d)), &bad.to_string());
            assert!(
                err.contains(&name)
                    && err.contains("not finite")
                    && err.contains(&format!("element {}", (stop - start) / 4 - 1)),
                "{err}"
            );
        }
    }

    #[test]
    fn files_over_the_limit_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.spn");
        // Sparse: no disk space used, and the loader must not read it anyway.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let start = std::time::Instant::now();
        let err = refused(read_within(&big, 60), "big file");
        assert!(err.contains("2 GiB"), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the file was read"
        );
    }
}
