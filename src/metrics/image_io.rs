//! Reading images for the metrics: PNG or JPEG bytes to 8-bit RGB, the way `PIL.Image.open(path).convert("RGB")`
//! gives them to the transformers image processors.
//!
//! Conversions (all to 8-bit RGB, never a rejection):
//! - gray and gray + alpha: the gray value in all three channels, alpha dropped;
//! - RGBA: alpha dropped (PIL's `convert("RGB")` does not composite onto a background);
//! - palette PNGs: expanded through the palette (alpha dropped);
//! - 16-bit PNGs: the high byte of each sample, which is what PIL keeps for 16-bit RGB(A) and gray + alpha.
//!   One deliberate difference: PIL opens 16-bit *gray* as mode `I;16`, and its `convert("RGB")` clips every
//!   value above 255 to 255 (a nearly white image); we keep the high byte there too.
//!
//! EXIF orientation is not applied, as neither PIL's `open` nor the processors apply it.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File extensions (lower case) treated as images when listing a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`HWC`, as numpy holds a PIL image).
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    /// An image from `HWC` bytes; `None` when the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(Self {
            width,
            height,
            data,
        })
    }

    /// The pixel at (x, y) as `[r, g, b]`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// An image file's bytes with their sha256 (the cache key of its embeddings).
#[derive(Debug, Clone)]
pub struct ImageFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

impl ImageFile {
    /// Reads the file (the error names it).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let sha256 = Sha256::digest(&bytes).into();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            sha256,
        })
    }

    /// The content hash as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// Decodes the bytes to 8-bit RGB.
    pub fn decode(&self) -> Result<RgbImage> {
        decode_rgb(&self.bytes, &self.path)
    }
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads and decodes an image file to 8-bit RGB.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    ImageFile::read(path)?.decode()
}

/// Decodes PNG or JPEG bytes to 8-bit RGB; `path` is only used in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let format = image::guess_format(bytes).map_err(|_| {
        Error::bad_file(
            path,
            "not an image: the content is neither PNG nor JPEG (expected a .png or .jpg file)",
        )
    })?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(Error::bad_file(
            path,
            format!("unsupported image format {format:?} (expected PNG or JPEG)"),
        ));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::bad_file(
            path,
            "cannot decode the JPEG image: truncated (the data ends before the end-of-image marker)",
        ));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let decoded = reader.decode().map_err(|e| {
        Error::bad_file(
            path,
            format!("cannot decode the {format:?} image (truncated or corrupt?): {e}"),
        )
    })?;
    Ok(to_rgb8(decoded))
}

/// Whether JPEG data runs to its end-of-image marker. The JPEG decoder fills a truncated scan with gray instead
/// of failing, where PIL raises "image file is truncated"; walking the marker segments (skipping entropy-coded
/// data, stuffed `FF 00` bytes and restart markers, and embedded thumbnails by their segment lengths) finds the
/// truncation.
fn jpeg_is_complete(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return false;
    }
    let mut i = 2;
    loop {
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        if i >= b.len() {
            return false;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                if i + 2 > b.len() {
                    return false;
                }
                let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
                if len < 2 || i + len > b.len() {
                    return false;
                }
                i += len;
                if marker == 0xDA {
                    // entropy-coded data up to the next real marker
                    loop {
                        while i < b.len() && b[i] != 0xFF {
                            i += 1;
                        }
                        if i + 1 >= b.len() {
                            return false;
                        }
                        match b[i + 1] {
                            0x00 | 0xD0..=0xD7 => i += 2,
                            0xFF => i += 1,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}

/// Converts any decoded image to 8-bit RGB as described in the module docs.
pub fn to_rgb8(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let n = width * height;
    let data: Vec<u8> = match image {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        DynamicImage::ImageRgba8(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma8(buf) => {
            buf.into_raw().into_iter().flat_map(|v| [v, v, v]).collect()
        }
        DynamicImage::ImageLumaA8(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        DynamicImage::ImageRgb16(buf) => buf.into_raw().into_iter().map(high_byte).collect(),
        DynamicImage::ImageRgba16(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [high_byte(p[0]), high_byte(p[1]), high_byte(p[2])])
            .collect(),
        DynamicImage::ImageLuma16(buf) => buf
            .into_raw()
            .into_iter()
            .flat_map(|v| {
                let b = high_byte(v);
                [b, b, b]
            })
            .collect(),
        DynamicImage::ImageLumaA16(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let b = high_byte(p[0]);
                [b, b, b]
            })
            .collect(),
        // Float images do not come out of the PNG and JPEG decoders; convert them the image crate's way.
        other => other.to_rgb8().into_raw(),
    };
    debug_assert_eq!(data.len(), n * 3);
    RgbImage {
        width,
        height,
        data,
    }
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Whether a path has an image extension (`.png`, `.jpg`, `.jpeg`, any case).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// The image files of a folder (by extension, not recursive), sorted by name. Errors name the folder when it
/// cannot be read or holds no image.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::bad_file(
            dir,
            "not a directory (expected a folder of .png/.jpg images)",
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if path.is_file() && has_image_extension(&path) {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::bad_file(
            dir,
            format!(
                "no image in this folder (expected at least one file ending in .{})",
                IMAGE_EXTENSIONS.join(", .")
            ),
        ));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_completeness_walks_segments() {
        // SOI, APP0 (len 4), SOS (len 3 + 1 byte), data with a stuffed FF00 and a restart marker, EOI
        let full = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12,
            0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xD9,
        ];
        assert!(jpeg_is_complete(&full));
        for cut in 2..full.len() - 1 {
            assert!(!jpeg_is_complete(&full[..cut]), "cut at {cut}");
        }
        // an EOI inside a segment (e.g. an EXIF thumbnail) does not count
        let thumb = [
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02, 0x11,
        ];
        assert!(!jpeg_is_complete(&thumb));
        assert!(!jpeg_is_complete(b"not a jpeg"));
    }

    #[test]
    fn conversions_to_rgb8() {
        let gray16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![0x12ff, 0xff00])
                .unwrap();
        let rgb = to_rgb8(DynamicImage::ImageLuma16(gray16));
        assert_eq!(rgb.data, vec![0x12, 0x12, 0x12, 0xff, 0xff, 0xff]);
        let la = image::ImageBuffer::<image::LumaA<u8>, _>::from_raw(1, 1, vec![7, 0]).unwrap();
        assert_eq!(to_rgb8(DynamicImage::ImageLumaA8(la)).data, vec![7, 7, 7]);
        let rgba =
            image::ImageBuffer::<image::Rgba<u8>, _>::from_raw(1, 1, vec![1, 2, 3, 0]).unwrap();
        assert_eq!(to_rgb8(DynamicImage::ImageRgba8(rgba)).data, vec![1, 2, 3]);
    }
}
