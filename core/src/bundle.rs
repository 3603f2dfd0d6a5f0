//! The pipeline bundle: one safetensors file with the configs, every stage's weights under stable named
//! paths, a format version and the training record. Written atomically; read defensively.
use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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

/// Reads a file written by [`write`]; any damage is an error, never a panic.
pub fn read(path: &Path) -> Result<Contents> {
    let data = std::fs::read(path).map_err(|e| bundle_err(path, format!("cannot read: {e}")))?;
    let (_, md) = SafeTensors::read_metadata(&data)
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
        SafeTensors::deserialize(&data).map_err(|e| bundle_err(path, format!("damaged: {e:?}")))?;
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
