//! Errors of the harness (planning, running, evaluating, reporting).

use std::path::PathBuf;

use crate::config::ConfigError;

/// What can stop a harness command.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Core(#[from] crate::Error),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A table (Parquet/CSV) could not be written or read, or lacks a column.
    #[error("{}: {msg}", path.display())]
    Table { path: PathBuf, msg: String },

    /// A plot or image grid could not be drawn.
    #[error("{}: {msg}", path.display())]
    Draw { path: PathBuf, msg: String },

    /// A run folder is not what it should be.
    #[error("{}: {msg}", path.display())]
    RunDir { path: PathBuf, msg: String },

    /// The generator cannot go on at all (e.g. the model does not load).
    #[error("generation stopped: {0}")]
    Fatal(String),
}

impl HarnessError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HarnessError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn table(path: impl Into<PathBuf>, msg: impl ToString) -> Self {
        HarnessError::Table {
            path: path.into(),
            msg: msg.to_string(),
        }
    }

    pub fn draw(path: impl Into<PathBuf>, msg: impl ToString) -> Self {
        HarnessError::Draw {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

pub type HarnessResult<T> = std::result::Result<T, HarnessError>;
