//! Loading a candle model from safetensors through the crate's [`WeightStore`], so that a missing tensor, a
//! wrong shape or an unsupported dtype becomes the crate's typed error naming the file and the key.
//!
//! Model constructors stay in candle's style (`fn new(vb: VarBuilder, cfg: &Config) -> candle::Result<Self>`);
//! [`load`] runs one with a [`VarBuilder`] backed by the store and turns its failure into a [`crate::Error`]:
//! the backend records the first typed error it produced (candle errors cannot carry it), and that error is
//! returned in place of candle's message.

use std::sync::{Arc, Mutex};

use candle::{DType, Device, Shape, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::models::weights::WeightStore;

struct StoreBackend {
    store: WeightStore,
    first_error: Arc<Mutex<Option<Error>>>,
}

impl StoreBackend {
    fn fail(&self, e: Error) -> candle::Error {
        let msg = e.to_string();
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        candle::Error::Msg(msg)
    }

    fn read(
        &self,
        name: &str,
        expected: Option<&Shape>,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        if !self.store.contains(name) {
            return Err(self.fail(Error::MissingWeight {
                path: self.store.describe_path(),
                key: name.to_string(),
                expected: expected.map(|s| s.dims().to_vec()).unwrap_or_default(),
            }));
        }
        let (values, shape) = self.store.read_f32(name).map_err(|e| self.fail(e))?;
        if let Some(expected) = expected {
            if shape != expected.dims() {
                return Err(self.fail(Error::WeightShape {
                    path: self.store.path_of(name),
                    key: name.to_string(),
                    found: shape,
                    expected: expected.dims().to_vec(),
                }));
            }
        }
        Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)
    }
}

impl candle_nn::var_builder::SimpleBackend for StoreBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle::Result<Tensor> {
        self.read(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle::Result<Tensor> {
        self.read(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.store.contains(name)
    }
}

/// Builds a model with `build(vb)` from the tensors of `store` (f32/f16/bf16 files, converted to `dtype`).
pub fn load<T>(
    store: &WeightStore,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> candle::Result<T>,
) -> Result<T> {
    let first_error = Arc::new(Mutex::new(None));
    let backend = StoreBackend {
        store: store.clone(),
        first_error: first_error.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    build(vb).map_err(|e| {
        let recorded = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        recorded.unwrap_or_else(|| {
            Error::bad_file(
                store.describe_path(),
                format!("cannot build the model: {e}"),
            )
        })
    })
}

/// Maps a candle error raised while running a model to the crate's error.
pub fn run_error(what: &str, e: candle::Error) -> Error {
    Error::invalid(what, e.to_string())
}
