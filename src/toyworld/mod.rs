//! The toyworld: a miniature world where composition can be measured on a CPU.

pub mod arch;
pub mod error;

pub use error::{ToyError, ToyResult};
