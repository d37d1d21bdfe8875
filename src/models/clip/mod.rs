//! CLIP: the BPE tokenizer and the text encoder of SD 1.x.

pub mod text_encoder;
pub mod tokenizer;
