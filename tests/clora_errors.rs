//! CLoRA on bad input (tiny-c and the fixture LoRAs): a concept word missing from a prompt, fewer than 2 concept
//! groups, a mask threshold outside (0, 1), a non-finite step size, and a NaN after an update (a poisoned latent,
//! an overflowing step). Each stops the image with an error that names the problem (and the step); the method's
//! `finish` still runs, so the same model then composes the next image exactly as a fresh one would.

mod clora_common;
mod common;

use burn::tensor::{Tensor, TensorData};
use clora_common::*;
use clora_harness::lora::Component;
use clora_harness::methods::clora::engine::contrastive_loss;
use clora_harness::methods::clora::{Clora, CloraParams};
use clora_harness::methods::job::TokenIndices;
use clora_harness::methods::{self, compose, CompositionJob, MethodSpec};
use clora_harness::models::sd::StableDiffusion;
use common::*;

fn init_noise() -> Tensor<AD, 4> {
    let r = Reference::open(&fixtures().join("clora/no_update.safetensors"));
    let (v, s) = r.f32("init_noise");
    ad(v, s)
}

/// Runs CLoRA and returns its error message; checks that the model was restored.
fn fails(
    sd: &mut StableDiffusion<AD>,
    job: &CompositionJob,
    p: CloraParams,
    noise: Tensor<AD, 4>,
) -> String {
    let mut m = Clora::<AD>::new(p);
    let e = compose(sd, &mut m, job, noise)
        .expect_err("the image must stop")
        .to_string();
    assert!(
        sd.lora.active().is_empty(),
        "finish did not deactivate the adapters"
    );
    assert!(
        sd.lora.rows(Component::Unet).is_none() && sd.lora.rows(Component::TextEncoder).is_none()
    );
    println!("error: {e}");
    e
}

/// The model still gives the reference image afterwards (the no-update case of the parity fixtures).
fn still_matches_the_reference(sd: &mut StableDiffusion<AD>, job: &CompositionJob) {
    let doc = cases();
    let p = params(&doc, case(&doc, "no_update"));
    let out = compose(sd, &mut Clora::<AD>::new(p), job, init_noise()).unwrap();
    let r = Reference::open(&fixtures().join("clora/no_update.safetensors"));
    let err = max_abs_diff(&out.latent, &r.f32("final_latent"));
    println!("next image after the error: final latent error {err:.3e}");
    assert!(err <= 1e-3);
}

#[test]
fn a_concept_word_missing_from_a_prompt_is_named() {
    let doc = cases();
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, case(&doc, "no_update"));
    // the dog LoRA's own prompt without its trigger word
    let mut bad = job.clone();
    bad.branch_prompts = Some(vec!["A sks cat and a dog".into(), "A cat and a dog".into()]);
    let e = fails(&mut sd, &bad, p.clone(), init_noise());
    assert!(
        e.contains("\"sks\"") && e.contains("prompt 2") && e.contains("A cat and a dog"),
        "{e}"
    );
    // a class noun the base prompt lacks
    let mut bad = job.clone();
    bad.loras[1].concept.class_noun = "bird".into();
    let e = fails(&mut sd, &bad, p, init_noise());
    assert!(e.contains("\"bird\""), "{e}");
    still_matches_the_reference(&mut sd, &job);
}

#[test]
fn fewer_than_two_groups_is_refused() {
    let doc = cases();
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, case(&doc, "no_update"));
    let mut one = job.clone();
    one.loras.truncate(1);
    let e = fails(&mut sd, &one, p.clone(), init_noise());
    assert!(e.contains("at least 2"), "{e}");
    // hand-given indices with one group
    let mut hand = job.clone();
    hand.token_indices = Some(TokenIndices {
        groups: vec![vec![vec![2], vec![2, 3], vec![2]]],
        masks: vec![vec![], vec![2, 3], vec![5, 6]],
    });
    let e = fails(&mut sd, &hand, p, init_noise());
    assert!(e.contains("at least 2"), "{e}");
}

#[test]
fn a_threshold_outside_zero_one_and_a_non_finite_step_size_are_refused() {
    let doc = cases();
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, case(&doc, "no_update"));
    for alpha in [0.0, 1.0, -0.2, 1.5, f64::NAN] {
        let bad = CloraParams {
            mask_threshold_alpha: alpha,
            ..p.clone()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("mask_threshold_alpha"), "{e}");
        assert!(methods::build::<AD>(&MethodSpec::Clora(bad.clone())).is_err());
        let e = fails(&mut sd, &job, bad, init_noise());
        assert!(e.contains("mask_threshold_alpha"), "{e}");
    }
    for step_size in [f64::INFINITY, f64::NAN] {
        let bad = CloraParams {
            step_size,
            latent_update: true,
            max_iter_to_alter: 1,
            ..p.clone()
        };
        let e = fails(&mut sd, &job, bad, init_noise());
        assert!(e.contains("step_size"), "{e}");
    }
}

#[test]
fn a_nan_after_an_update_stops_the_image_naming_the_step() {
    let doc = cases();
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, case(&doc, "iterative"));
    // a step so large that the updated latent overflows to infinity
    let huge = CloraParams {
        step_size: 1e38,
        ..p.clone()
    };
    let e = fails(&mut sd, &job, huge, init_noise());
    assert!(
        e.contains("clora step 0") && e.contains("non-finite"),
        "{e}"
    );
    // a poisoned latent: NaN in the initial noise gives a NaN loss at the first update
    let mut v = to_vec(&init_noise());
    v[17] = f32::NAN;
    let poisoned: Tensor<AD, 4> = ad(v.clone(), vec![1, 4, 16, 16]);
    let e = fails(&mut sd, &job, p.clone(), poisoned);
    assert!(e.contains("clora step 0") && e.contains("NaN"), "{e}");
    // without latent updates the loop's own check names the step
    let no_update = params(&doc, case(&doc, "no_update"));
    let e = fails(&mut sd, &job, no_update, ad(v, vec![1, 4, 16, 16]));
    assert!(e.contains("clora step 0"), "{e}");
    // the run goes on: the same model makes the next image as a fresh one would
    still_matches_the_reference(&mut sd, &job);
}

/// A constant token map has no min-max normalisation (0 / 0): the loss is NaN, as in the official code, and the
/// update stops the image (above).
#[test]
fn a_constant_map_gives_a_nan_loss() {
    let q = 16;
    let mut maps = vec![0.5f32; 3 * q * 77];
    for (i, v) in maps.iter_mut().enumerate() {
        if i % 77 != 2 {
            *v = ((i / 77) % 7) as f32 * 0.1;
        }
    }
    let maps = Tensor::<AD, 3>::from_data(TensorData::new(maps, [3, q, 77]), &device());
    let groups = vec![
        vec![vec![2], vec![3], vec![2]],
        vec![vec![5], vec![6], vec![5]],
    ];
    let loss: f32 = contrastive_loss(&maps, &groups, 0.5).into_scalar();
    assert!(loss.is_nan());
}
