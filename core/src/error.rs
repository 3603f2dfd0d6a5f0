use std::path::PathBuf;

/// Everything the library can fail with; user-facing messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("cannot read image {path}: {msg}")]
    Image { path: PathBuf, msg: String },
    #[error("bad model bundle {path}: {msg}")]
    Bundle { path: PathBuf, msg: String },
    #[error("unsupported bundle format version {found} in {path} (this build reads up to {supported}); upgrade spn")]
    BundleVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}
