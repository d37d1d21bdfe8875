//! The token embeddings the base phase trains: only the rows its captions use.
//!
//! The toyworld keeps the real CLIP vocabulary (49408 x 64 token embedding, two thirds of the trainable
//! weights), but its captions use a few dozen of those tokens. Rows that no caption looks up get a zero
//! gradient at every step, and Adam (no weight decay) moves a row whose moments are zero by exactly zero, so
//! they keep their initial values; yet updating the whole table and its moving average costs a fixed share
//! of every step. The base phase therefore trains a compact table of the used rows (captions looked up
//! through [`TrainVocab::remap`]) and writes the whole table back, with the unused rows as they were loaded,
//! whenever it saves ([`TrainVocab::expand`]). The training computes the same numbers either way (tested).

use burn::module::Param;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::error::{ToyError, ToyResult};
use super::tensors::host_values;
use super::text_unet::TextUnet;

/// The vocabulary ids the training captions use, and where each sits in the compact table.
#[derive(Debug, Clone)]
pub struct TrainVocab {
    /// Used vocabulary ids, ascending: row `i` of the compact table is the embedding of `used[i]`.
    pub used: Vec<u32>,
    /// For every vocabulary id, its row in the compact table (0 for ids no caption uses: never looked up).
    rows: Vec<i64>,
}

/// A model's whole token-embedding table (`[vocab, d]`), kept on the host while the compact one trains.
#[derive(Debug, Clone)]
pub struct FullTable {
    values: Vec<f32>,
    dims: [usize; 2],
}

impl TrainVocab {
    /// The ids of `token_ids` (the training captions' and the empty prompt's) in a vocabulary of `vocab`.
    pub fn of<'a>(token_ids: impl IntoIterator<Item = &'a u32>, vocab: usize) -> ToyResult<Self> {
        let mut seen = vec![false; vocab];
        for &id in token_ids {
            let slot = seen.get_mut(id as usize).ok_or_else(|| {
                ToyError::Training(format!(
                    "token id {id} outside the text encoder's vocabulary of {vocab}"
                ))
            })?;
            *slot = true;
        }
        let used: Vec<u32> = (0..vocab as u32).filter(|&i| seen[i as usize]).collect();
        let mut rows = vec![0i64; vocab];
        for (row, &id) in used.iter().enumerate() {
            rows[id as usize] = row as i64;
        }
        Ok(Self { used, rows })
    }

    /// Vocabulary ids `[b, s]` to rows of the compact table `[b, s]`.
    pub fn remap<B: Backend>(&self, ids: Tensor<B, 2, Int>) -> ToyResult<Tensor<B, 2, Int>> {
        let [b, s] = ids.dims();
        let device = ids.device();
        let ids: Vec<i64> = host_values(ids.into_data(), "token ids")?;
        let rows: Vec<i64> = ids.iter().map(|&i| self.rows[i as usize]).collect();
        Ok(Tensor::from_data(TensorData::new(rows, [b, s]), &device))
    }

    /// `model` with its token embedding cut to the used rows, and the whole table it had.
    pub fn compact<B: Backend>(&self, model: TextUnet<B>) -> ToyResult<(TextUnet<B>, FullTable)> {
        let weight = model.text_encoder.token_embedding.weight.val();
        let [n, d] = weight.dims();
        let device = weight.device();
        let values: Vec<f32> = host_values(weight.into_data(), "token embedding")?;
        // [used, d]
        let compact: Vec<f32> = self
            .used
            .iter()
            .flat_map(|&id| {
                values[id as usize * d..(id as usize + 1) * d]
                    .iter()
                    .copied()
            })
            .collect();
        let rows = self.used.len();
        Ok((
            with_table(model, compact, [rows, d], &device),
            FullTable {
                values,
                dims: [n, d],
            },
        ))
    }

    /// `model` (compact) with its whole token-embedding table again: `full` with the used rows replaced.
    pub fn expand<B: Backend>(
        &self,
        model: &TextUnet<B>,
        full: &FullTable,
    ) -> ToyResult<TextUnet<B>> {
        let weight = model.text_encoder.token_embedding.weight.val();
        let device = weight.device();
        let d = full.dims[1];
        let compact: Vec<f32> = host_values(weight.into_data(), "token embedding")?;
        let mut values = full.values.clone();
        for (row, &id) in self.used.iter().enumerate() {
            values[id as usize * d..(id as usize + 1) * d]
                .copy_from_slice(&compact[row * d..(row + 1) * d]);
        }
        Ok(with_table(model.clone(), values, full.dims, &device))
    }
}

/// `model` with the token-embedding table `values` (`dims`).
fn with_table<B: Backend>(
    mut model: TextUnet<B>,
    values: Vec<f32>,
    dims: [usize; 2],
    device: &B::Device,
) -> TextUnet<B> {
    model.text_encoder.token_embedding.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), device));
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::toyworld::arch::ToyArch;

    fn table_of(model: &TextUnet<Cpu>) -> Vec<f32> {
        let weight = model.text_encoder.token_embedding.weight.val();
        host_values(weight.into_data(), "token embedding").unwrap()
    }

    #[test]
    fn compacts_to_the_used_rows_and_expands_back() {
        let device = Default::default();
        let arch = ToyArch::default();
        let model = TextUnet::<Cpu>::random(&arch, 3, &device).unwrap();
        let whole = table_of(&model);
        let d = whole.len() / 49408;
        let vocab = TrainVocab::of(&[49407, 320, 320, 49406], 49408).unwrap();
        assert_eq!(vocab.used, vec![320, 49406, 49407]);
        let ids = Tensor::<Cpu, 2, Int>::from_data(
            TensorData::new(vec![49406i64, 320, 49407, 49407], [2, 2]),
            &device,
        );
        let rows: Vec<i64> = vocab
            .remap(ids)
            .unwrap()
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        assert_eq!(rows, vec![1, 0, 2, 2]);
        let (compact, table) = vocab.compact(model).unwrap();
        let small = table_of(&compact);
        assert_eq!(small.len(), 3 * d);
        assert_eq!(&small[..d], &whole[320 * d..321 * d]);
        // A trained compact row goes back to its id; the others are as they were.
        let mut moved = compact.clone();
        moved.text_encoder.token_embedding.weight = Param::from_tensor(
            compact
                .text_encoder
                .token_embedding
                .weight
                .val()
                .add_scalar(1.0),
        );
        let back = table_of(&vocab.expand(&moved, &table).unwrap());
        for id in 0..49408 {
            let (b, w) = (&back[id * d..(id + 1) * d], &whole[id * d..(id + 1) * d]);
            if vocab.used.contains(&(id as u32)) {
                assert!(
                    b.iter().zip(w).all(|(b, w)| (b - w - 1.0).abs() < 1e-6),
                    "{id}"
                );
            } else {
                assert_eq!(b, w, "{id}");
            }
        }
        let err = TrainVocab::of(&[49408], 49408).unwrap_err().to_string();
        assert!(err.contains("49408"), "{err}");
    }
}
