//! What `--device cuda` needs on the machine, checked before the first CUDA call.
//!
//! burn's CUDA backend loads the driver (`libcuda.so`) and NVRTC (`libnvrtc.so`) when it first runs, and
//! NVRTC compiles its kernels against the CUDA headers. A missing piece makes cudarc or cubecl panic on a
//! device thread (exit 101, "Unable to dynamically load ..."); this check names what is missing and what to set
//! instead. What a working machine needed (an H200, session 14, docs/toyworld.md "On a GPU"):
//! `CUDA_PATH=/usr/local/cuda` and the folder of `libnvrtc.so.13` on `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};

/// Library names tried for the driver (as cudarc does, in the forms found on Linux).
pub const DRIVER_NAMES: [&str; 2] = ["libcuda.so", "libcuda.so.1"];
/// Library names tried for NVRTC.
pub const NVRTC_NAMES: [&str; 4] = [
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CudaSetupError {
    #[error("--device cuda: the CUDA driver could not be loaded (tried {tried}); is an NVIDIA driver installed? Its folder (e.g. /usr/local/nvidia/lib64) must be on LD_LIBRARY_PATH or in the loader's cache")]
    Driver { tried: String },
    #[error("--device cuda: NVRTC, which compiles the kernels, could not be loaded (tried {tried}); add the folder that holds libnvrtc.so.* (e.g. /usr/local/cuda/lib64, or the lib folder of pip's nvidia-cuda-nvrtc) to LD_LIBRARY_PATH")]
    Nvrtc { tried: String },
    #[error("--device cuda: no CUDA toolkit found (looked at {looked}); set CUDA_PATH to the folder that holds include/cuda.h")]
    Toolkit { looked: String },
    #[error("--device cuda: the CUDA toolkit at {root} has no include/ folder (NVRTC compiles the kernels against its headers); set CUDA_PATH to the folder that holds include/cuda.h")]
    Headers { root: String },
}

/// Checks this machine: the driver and NVRTC load, and a CUDA toolkit with headers is found where burn's
/// CUDA backend (cubecl) looks. Returns the toolkit folder.
pub fn check() -> Result<PathBuf, CudaSetupError> {
    check_with(
        &can_load,
        std::env::var_os("CUDA_PATH").map(PathBuf::from),
        &|p: &Path| p.exists(),
    )
}

/// [`check`] over a library loader, the `CUDA_PATH` value and a file-existence test (for tests).
pub fn check_with(
    load: &dyn Fn(&str) -> bool,
    cuda_path: Option<PathBuf>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, CudaSetupError> {
    if !DRIVER_NAMES.iter().any(|n| load(n)) {
        return Err(CudaSetupError::Driver {
            tried: DRIVER_NAMES.join(", "),
        });
    }
    if !NVRTC_NAMES.iter().any(|n| load(n)) {
        return Err(CudaSetupError::Nvrtc {
            tried: NVRTC_NAMES.join(", "),
        });
    }
    // cubecl's order: $CUDA_PATH, then /usr/local/cuda, /opt/cuda, and /usr when /usr/bin/nvcc exists.
    let root = match cuda_path {
        Some(p) => p,
        None => {
            let found = [
                ("/usr/local/cuda", "/usr/local/cuda"),
                ("/opt/cuda", "/opt/cuda"),
                ("/usr/bin/nvcc", "/usr"),
            ]
            .into_iter()
            .find(|(probe, _)| exists(Path::new(probe)))
            .map(|(_, root)| PathBuf::from(root));
            found.ok_or_else(|| CudaSetupError::Toolkit {
                looked: "$CUDA_PATH (unset), /usr/local/cuda, /opt/cuda, /usr/bin/nvcc".into(),
            })?
        }
    };
    if !exists(&root.join("include")) {
        return Err(CudaSetupError::Headers {
            root: root.display().to_string(),
        });
    }
    Ok(root)
}

/// Whether the dynamic loader finds and opens library `name` (closed again at once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn can_load(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call; a handle dlopen returns is closed once.
    unsafe {
        let handle = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            false
        } else {
            libc::dlclose(handle);
            true
        }
    }
}

/// Elsewhere the libraries go by other names; leave finding them to cudarc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn can_load(_name: &str) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(present: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p: &Path| present.iter().any(|f| Path::new(f) == p)
    }

    #[test]
    fn names_the_missing_driver_first() {
        let err = check_with(&|_| false, None, &files(&[])).unwrap_err();
        assert!(matches!(err, CudaSetupError::Driver { .. }));
        assert!(err.to_string().contains("libcuda.so.1"), "{err}");
    }

    #[test]
    fn names_a_missing_nvrtc() {
        let err = check_with(&|n| n.starts_with("libcuda"), None, &files(&[])).unwrap_err();
        assert!(matches!(err, CudaSetupError::Nvrtc { .. }));
        assert!(err.to_string().contains("LD_LIBRARY_PATH"), "{err}");
    }

    #[test]
    fn finds_the_toolkit_where_cubecl_looks() {
        let all = |_: &str| true;
        // CUDA_PATH wins over the default folders.
        let root = check_with(
            &all,
            Some("/x/cuda".into()),
            &files(&["/x/cuda/include", "/usr/local/cuda"]),
        );
        assert_eq!(root, Ok(PathBuf::from("/x/cuda")));
        let root = check_with(
            &all,
            None,
            &files(&["/usr/local/cuda", "/usr/local/cuda/include"]),
        );
        assert_eq!(root, Ok(PathBuf::from("/usr/local/cuda")));
        // A system nvcc: the toolkit is /usr.
        let root = check_with(&all, None, &files(&["/usr/bin/nvcc", "/usr/include"]));
        assert_eq!(root, Ok(PathBuf::from("/usr")));
        let err = check_with(&all, None, &files(&[])).unwrap_err();
        assert!(matches!(err, CudaSetupError::Toolkit { .. }));
        let err = check_with(
            &all,
            Some("/x/cuda".into()),
            &files(&["/usr/local/cuda/include"]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            CudaSetupError::Headers {
                root: "/x/cuda".into()
            }
        );
    }

    #[test]
    fn this_machine_answers_without_panicking() {
        // CI has no GPU: an error that names what is missing, or, on a CUDA machine, the toolkit folder.
        match check() {
            Ok(root) => assert!(root.join("include").exists()),
            Err(e) => assert!(e.to_string().starts_with("--device cuda: "), "{e}"),
        }
    }
}
