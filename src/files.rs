//! Listing the files of a folder tree, shared by the harness (folder hashes) and the toyworld (copying a
//! model folder).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Every regular file below `root`, as paths relative to `root`, sorted; hidden entries (names starting
/// with `.`, such as the temporary files of `latent_io::write_atomic`) and what lies below them are skipped.
pub fn files_below(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if p.is_file() {
            out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_files_sorted_and_relative_skipping_hidden_ones() {
        let dir = std::env::temp_dir().join(format!("clora-files-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(dir.join("b/c")).unwrap();
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
        for f in ["z.txt", "b/c/x.bin", "a.json", ".tmp1", ".hidden/y"] {
            std::fs::write(dir.join(f), b"1").unwrap();
        }
        let got = files_below(&dir).unwrap();
        let want: Vec<PathBuf> = ["a.json", "b/c/x.bin", "z.txt"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
        assert!(files_below(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
