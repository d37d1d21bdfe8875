//! Helpers shared by the integration tests: fixture paths, reference tensors, error measures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use clora_harness::models::weights::WeightStore;

/// The backend every test runs on: `flex`, or CUDA with `--features cuda-tests` (on a GPU machine, where the parity
/// tests then check the CUDA kernels against the same fixtures).
#[cfg(not(feature = "cuda-tests"))]
pub type B = clora_harness::backend::Cpu;
#[cfg(feature = "cuda-tests")]
pub type B = burn::backend::Cuda;

pub fn device() -> <B as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The reference tensors of one fixture file.
pub struct Reference {
    pub store: WeightStore,
}

impl Reference {
    pub fn open(path: &Path) -> Self {
        let store = WeightStore::open(&[path.to_path_buf()])
            .unwrap_or_else(|e| panic!("cannot open fixture {}: {e}", path.display()));
        Self { store }
    }

    pub fn has(&self, key: &str) -> bool {
        self.store.contains(key)
    }

    pub fn f32(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        self.store
            .read_f32(key)
            .unwrap_or_else(|e| panic!("fixture tensor {key}: {e}"))
    }

    pub fn i64(&self, key: &str) -> (Vec<i64>, Vec<usize>) {
        self.store
            .read_i64(key)
            .unwrap_or_else(|e| panic!("fixture tensor {key}: {e}"))
    }

    pub fn tensor<const D: usize>(&self, key: &str) -> Tensor<B, D> {
        let (v, shape) = self.f32(key);
        assert_eq!(
            shape.len(),
            D,
            "fixture tensor {key} has rank {}",
            shape.len()
        );
        Tensor::from_data(TensorData::new(v, shape), &device())
    }
}

/// Maximum absolute difference between a tensor and reference values of the same shape.
pub fn max_abs_diff<Bk: Backend, const D: usize>(
    t: &Tensor<Bk, D>,
    reference: &(Vec<f32>, Vec<usize>),
) -> f32 {
    assert_eq!(
        t.dims().to_vec(),
        reference.1,
        "shape differs from the reference"
    );
    let v: Vec<f32> = t
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    v.iter()
        .zip(&reference.0)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Largest absolute reference value (to put an error in context).
pub fn max_abs(reference: &(Vec<f32>, Vec<usize>)) -> f32 {
    reference.0.iter().map(|v| v.abs()).fold(0f32, f32::max)
}

/// Asserts `t` is within `tol` of the reference, printing the error so test logs record it.
pub fn assert_close<Bk: Backend, const D: usize>(
    what: &str,
    t: &Tensor<Bk, D>,
    reference: &(Vec<f32>, Vec<usize>),
    tol: f32,
) {
    let err = max_abs_diff(t, reference);
    println!(
        "{what}: max abs error {err:.3e} (reference max |x| {:.3})",
        max_abs(reference)
    );
    assert!(err <= tol, "{what}: max abs error {err:e} exceeds {tol:e}");
}

/// A temporary file or folder, removed (with everything in it) when the guard drops, also when its test
/// fails, so that tests leave nothing behind in the system temp dir. Derefs to its path.
pub struct TempPath(PathBuf);

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0)
        } else {
            std::fs::remove_file(&self.0)
        };
    }
}

/// A fresh empty directory under the system temp dir, unique to this process and `tag`.
pub fn temp_dir(tag: &str) -> TempPath {
    let d = std::env::temp_dir().join(format!("clora-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempPath(d)
}

/// A path for one temporary file under the system temp dir, unique to this process and `name` (which ends it,
/// extension included); nothing is created.
pub fn temp_file(name: &str) -> TempPath {
    let p = std::env::temp_dir().join(format!("clora-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    TempPath(p)
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites a safetensors file as f32 tensors, letting `edit` drop or replace entries.
pub fn rewrite_safetensors(
    path: &Path,
    edit: impl Fn(&str, Vec<f32>, Vec<usize>) -> Option<(Vec<f32>, Vec<usize>)>,
) {
    let store = WeightStore::open(&[path.to_path_buf()]).unwrap();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for key in store.keys().map(str::to_string).collect::<Vec<_>>() {
        let Ok((v, s)) = store.read_f32(&key) else {
            continue;
        };
        if let Some((v, s)) = edit(&key, v, s) {
            tensors.push((key, v.iter().flat_map(|x| x.to_le_bytes()).collect(), s));
        }
    }
    drop(store);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}
