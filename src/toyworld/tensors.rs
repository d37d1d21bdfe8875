//! Conversions between tensors and the host: images of the world to `[b, 3, H, W]` tensors in [-1, 1] for the
//! VAE and back, and any tensor's values to a `Vec` ([`host_values`]).

use burn::tensor::{backend::Backend, Element, Tensor, TensorData};
use image::RgbImage;

use super::error::{ToyError, ToyResult};
use super::palette::is_dark;

/// A tensor's values on the host, as `E` (`what` names them in the error).
pub fn host_values<E: Element>(data: TensorData, what: &str) -> ToyResult<Vec<E>> {
    data.convert::<E>()
        .into_vec::<E>()
        .map_err(|e| ToyError::Training(format!("{what}: {e:?}")))
}

/// Images (all the same size) to a `[b, 3, H, W]` tensor in [-1, 1].
pub fn images_to_tensor<B: Backend>(images: &[RgbImage], device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = images
        .first()
        .map(|i| (i.width() as usize, i.height() as usize))
        .unwrap_or((0, 0));
    let mut v = Vec::with_capacity(images.len() * 3 * w * h);
    for img in images {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    v.push(img.get_pixel(x as u32, y as u32).0[c] as f32 / 127.5 - 1.0);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [images.len(), 3, h, w]), device)
}

/// A `[b, 3, H, W]` tensor in [0, 1] (as `decode_latent` returns) to images.
pub fn tensor_to_images<B: Backend>(t: Tensor<B, 4>) -> Vec<RgbImage> {
    let [b, _, h, w] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 image data");
    (0..b)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let at = |c: usize| v[((i * 3 + c) * h + y as usize) * w + x as usize];
                image::Rgb([0, 1, 2].map(|c| (at(c) * 255.0).round().clamp(0.0, 255.0) as u8))
            })
        })
        .collect()
}

/// The `size x size` crop of `img` at `(x, y)`.
pub fn crop(img: &RgbImage, x: u32, y: u32, size: u32) -> RgbImage {
    image::imageops::crop_imm(img, x, y, size, size).to_image()
}

/// Per-pixel loss weights `[b, 1, H, W]`: `1 + accent_weight` where the target pixel is a dark accent.
pub fn accent_weights<B: Backend>(
    images: &[RgbImage],
    accent_weight: f64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let (w, h) = (images[0].width() as usize, images[0].height() as usize);
    let v: Vec<f32> = images
        .iter()
        .flat_map(|img| img.pixels())
        .map(|p| {
            if is_dark(p.0) {
                1.0 + accent_weight as f32
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [images.len(), 1, h, w]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accent_pixels_weigh_more() {
        type B = burn::backend::Flex;
        let mut img = RgbImage::from_pixel(2, 1, image::Rgb([240, 240, 240]));
        img.put_pixel(1, 0, image::Rgb([20, 20, 20]));
        let w = accent_weights::<B>(&[img], 4.0, &Default::default());
        let v = w.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        assert_eq!(v, vec![1.0, 5.0]);
    }
}
