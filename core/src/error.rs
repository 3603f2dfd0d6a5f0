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
    // No `#[from]` on these two: that would also make the inner error the `source`, and error chains
    // (anyhow's `{:#}`) would print its text twice.
    #[error("{0}")]
    Io(std::io::Error),
    #[cfg(feature = "torch")]
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(feature = "torch")]
impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
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
