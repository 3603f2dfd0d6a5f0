//! The pipeline bundle: one safetensors file with the configs, every stage's weights under stable named
//! paths, a format version and the training record. Written atomically; read defensively.
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use tch::{Kind, Tensor};

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

/// Raw contents of a bundle or checkpoint file.
pub struct Contents {
    pub meta: HashMap<String, String>,
    pub tensors: BTreeMap<String, Tensor>,
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
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .f_detach()?
            .f_to_device(tch::Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let v = Vec::<f32>::try_from(t.f_flatten(0, -1)?)?;
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        bufs.push((name.clone(), shape, bytes));
    }
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
    let st =
        SafeTensors::deserialize(data).map_err(|e| bundle_err(path, format!("damaged: {e:?}")))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bundle_err(
                path,
                format!("tensor {name} has dtype {:?}, expected F32", view.dtype()),
            ));
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, Kind::Float)?;
        tensors.insert(name, t);
    }
    Ok(Contents { meta, tensors })
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

#[cfg(test)]
mod tests {
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
