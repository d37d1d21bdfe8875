//! Typed errors of the library. Every error that concerns a file names the file, and every error that
//! concerns a tensor or a config field names the key or field and what was expected.

use std::path::PathBuf;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but is not what it should be (truncated, not safetensors, not JSON, ...).
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },

    /// A weight the model needs is not in the file.
    #[error("{path}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingWeight {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
    },

    /// A weight exists but has the wrong shape.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    WeightShape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A weight has a dtype we cannot load.
    #[error("{path}: tensor `{key}` has dtype {dtype}, expected F32, F16 or BF16")]
    WeightDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },

    /// A config field is missing, of the wrong type, or has a value we do not support.
    #[error("{path}: field `{field}`: {msg}")]
    Config {
        path: PathBuf,
        field: String,
        msg: String,
    },

    /// A user-supplied value (CLI flag, prompt, tensor) is invalid.
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// Result with the library's error type.
pub type Result<T> = std::result::Result<T, Error>;
