//! Typed errors of the toyworld: rendering, the oracle, training and export.

use std::path::PathBuf;

/// What can go wrong in the toyworld.
#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    /// An error of the model code (loading, shapes, configs).
    #[error(transparent)]
    Model(#[from] crate::error::Error),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A scene description is impossible (e.g. objects that cannot be placed without overlap).
    #[error("scene: {0}")]
    Scene(String),

    /// An image the oracle cannot judge (wrong size).
    #[error("image: {0}")]
    Image(String),

    /// A caption or prompt names something this world does not know.
    #[error("prompt `{prompt}`: {msg}")]
    Prompt { prompt: String, msg: String },

    /// Training diverged or was given impossible settings.
    #[error("training: {0}")]
    Training(String),

    /// A checkpoint or exported file is not what it should be.
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
}

impl ToyError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Result with the toyworld's error type.
pub type ToyResult<T> = std::result::Result<T, ToyError>;
