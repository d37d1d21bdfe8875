//! Shared by the CLoRA tests: tiny-c with the two fixture LoRAs attached, the job and the parameters that
//! `tests/fixtures/clora/cases.json` describes (made by `tools/fixtures/make_clora_fixtures.py`).
#![allow(dead_code)]

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use clora_harness::lora::{LoraFile, Unmatched};
use clora_harness::methods::clora::tokens::ConceptWords;
use clora_harness::methods::clora::CloraParams;
use clora_harness::methods::{CompositionJob, LoraRef};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::schedulers::SchedulerKind;
use serde_json::Value;

use crate::common::{device, fixtures, B};

pub type AD = Autodiff<B>;

pub fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("clora/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn case<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// tiny-c with both LoRAs attached (no adapter active), and the job the fixtures describe (concepts from words).
pub fn setup(doc: &Value) -> (StableDiffusion<AD>, CompositionJob) {
    let dir = fixtures().join("sd/tiny-c");
    let mut sd = StableDiffusion::<AD>::load(&dir, &LoadOptions::default(), &device()).unwrap();
    let mut loras = Vec::new();
    for l in doc["loras"].as_array().unwrap() {
        let file =
            LoraFile::open(&fixtures().join("clora").join(l["file"].as_str().unwrap())).unwrap();
        let load = sd
            .add_lora(l["name"].as_str().unwrap(), &file, 1.0, Unmatched::Error)
            .unwrap();
        assert!(load.skipped.is_empty());
        assert!(
            load.layers[0] > 0 && load.layers[1] > 0,
            "both UNet and text-encoder parts"
        );
        loras.push(LoraRef {
            id: load.id,
            weight: 1.0,
            concept: ConceptWords {
                triggers: vec![l["trigger"].as_str().unwrap().into()],
                class_noun: l["class_noun"].as_str().unwrap().into(),
            },
        });
    }
    sd.set_adapters(&[]).unwrap();
    let job = CompositionJob {
        base_prompt: doc["base_prompt"].as_str().unwrap().into(),
        combined_prompt: None,
        branch_prompts: None,
        negative_prompt: doc["negative_prompt"].as_str().unwrap().into(),
        loras,
        style: None,
        lora_scale: doc["lora_scale"].as_f64().unwrap(),
        steps: doc["steps"].as_u64().unwrap() as usize,
        guidance: doc["guidance_scale"].as_f64().unwrap(),
        scheduler: SchedulerKind::Ddim,
        width: doc["width"].as_u64().unwrap() as usize,
        height: doc["height"].as_u64().unwrap() as usize,
        clip_skip: None,
        token_indices: None,
    };
    (sd, job)
}

/// The CLoRA parameters of a fixture case.
pub fn params(doc: &Value, c: &Value) -> CloraParams {
    let usizes = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect::<Vec<_>>()
    };
    CloraParams {
        step_size: c["step_size"].as_f64().unwrap(),
        max_iter_to_alter: c["max_iter_to_alter"].as_u64().unwrap() as usize,
        iterative_steps: usizes(&c["iterative_steps"]),
        iterative_steps_steps: c["iterative_steps_steps"].as_u64().unwrap() as usize,
        latent_update: c["latent_update"].as_bool().unwrap(),
        apply_mask_after: doc["apply_mask_after"].as_u64().unwrap() as usize,
        mask_threshold_alpha: doc["mask_threshold_alpha"].as_f64().unwrap(),
        use_text_encoder_lora: doc["use_text_encoder_lora"].as_bool().unwrap(),
        ..CloraParams::default()
    }
}

pub fn ad<const D: usize>(values: Vec<f32>, shape: Vec<usize>) -> Tensor<AD, D> {
    Tensor::from_data(TensorData::new(values, shape), &device())
}

pub fn to_vec<const D: usize>(t: &Tensor<AD, D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
