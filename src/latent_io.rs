//! Latents as safetensors files with one tensor `latent` `[1, 4, h, w]` (f32), the exchange format of
//! `--init-latent` / `--save-latent`, and images as PNG.

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::models::weights::WeightStore;

/// Reads the tensor `latent` of `path`, which must have shape `expected`.
pub fn read_latent<B: Backend>(
    path: &Path,
    expected: [usize; 4],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let store = WeightStore::open(&[path.to_path_buf()])?;
    if !store.contains("latent") {
        return Err(Error::MissingWeight {
            path: path.to_path_buf(),
            key: "latent".into(),
            expected: expected.to_vec(),
        });
    }
    let (values, shape) = store.read_f32("latent")?;
    if shape != expected {
        return Err(Error::WeightShape {
            path: path.to_path_buf(),
            key: "latent".into(),
            found: shape,
            expected: expected.to_vec(),
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::bad_file(
            path,
            format!("tensor `latent` holds a non-finite value at index {i}"),
        ));
    }
    Ok(Tensor::from_data(TensorData::new(values, expected), device))
}

/// Writes `latent` (converted to f32) as the tensor `latent` of a safetensors file, atomically.
pub fn write_latent<B: Backend>(path: &Path, latent: &Tensor<B, 4>) -> Result<()> {
    let shape = latent.dims().to_vec();
    let values: Vec<f32> = latent
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::invalid("latent", format!("{e:?}")))?;
    write_f32_safetensors(path, &[("latent", shape, &values)], None)
}

/// Writes f32 tensors `(name, shape, values)` (and optional metadata) as a safetensors file, atomically.
pub fn write_f32_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    write_safetensors(path, tensors, false, metadata)
}

/// [`write_f32_safetensors`], the values stored as f16 when `f16` (rounded to nearest).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    f16: bool,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| {
            if f16 {
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        })
        .collect();
    let dtype = if f16 {
        safetensors::Dtype::F16
    } else {
        safetensors::Dtype::F32
    };
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(dtype, shape.clone(), b)
                .map(|v| (*name, v))
                .map_err(|e| Error::invalid(format!("tensor `{name}`"), e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    write_atomic(path, &data)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // unique per process and call: concurrent writers of one path never share a temporary file
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Converts an image `[1, 3, h, w]` in [0, 1] to 8-bit RGB as diffusers does (`(x * 255).round()`).
pub fn to_rgb8<B: Backend>(image: &Tensor<B, 4>) -> Result<image::RgbImage> {
    let [b, c, h, w] = image.dims();
    if b != 1 || c != 3 {
        return Err(Error::invalid(
            "image",
            format!("shape [{b}, {c}, {h}, {w}], expected [1, 3, h, w]"),
        ));
    }
    let v: Vec<f32> = image
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::invalid("image", format!("{e:?}")))?;
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for y in 0..h {
        for x in 0..w {
            let px = [0, 1, 2]
                .map(|ch| (v[ch * h * w + y * w + x].clamp(0.0, 1.0) * 255.0).round() as u8);
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    Ok(img)
}

/// Saves an image `[1, 3, h, w]` in [0, 1] as PNG, atomically.
pub fn save_png<B: Backend>(path: &Path, image: &Tensor<B, 4>) -> Result<()> {
    write_png(path, &to_rgb8(image)?)
}

/// Saves an 8-bit RGB image as PNG, atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    write_atomic(path, buf.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_files_hold_the_values_rounded_to_half() {
        let dir = std::env::temp_dir().join(format!("clora-latent-io-{}", std::process::id()));
        let path = dir.join("t.safetensors");
        let values = [0.1f32, -2.5, 65504.0, 1e-8];
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write_safetensors(&path, &[("w", vec![2, 2], &values)], true, Some(meta)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("w").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F16);
        assert_eq!(t.shape(), &[2, 2]);
        let back: Vec<f32> = t
            .data()
            .chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let want: Vec<f32> = values
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(back, want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
