//! One batched forward with rows assigned to base / LoRA 1 / LoRA 2 (and both) equals separate forwards, for the
//! UNet and the text encoder; row assignments are checked against the batch; gradients flow through the
//! unfused adapters (CLoRA differentiates w.r.t. the latent).

mod common;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use clora_harness::backend::CpuAutodiff;
use clora_harness::lora::{AdapterId, Component, LoraFile, Unmatched};
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::noise::{gaussian, gaussian_values};
use clora_harness::pipeline::GenerateParams;
use common::*;

fn load<Bk: Backend>() -> StableDiffusion<Bk> {
    let dir = fixtures().join("sd/tiny-a");
    StableDiffusion::<Bk>::load(&dir, &LoadOptions::default(), &Default::default()).unwrap()
}

/// tiny-a with two LoRAs that touch attention, ff, proj, resnet convs (LoCon) and the text encoder.
fn with_two_loras<Bk: Backend>() -> (StableDiffusion<Bk>, AdapterId, AdapterId) {
    let mut sd = load::<Bk>();
    let dir = fixtures().join("lora/tiny-a");
    let l1 = LoraFile::open(&dir.join("kohya_locon.safetensors")).unwrap();
    let l2 = LoraFile::open(&dir.join("peft_meta.safetensors")).unwrap();
    let a = sd
        .add_lora("kohya_locon", &l1, 0.8, Unmatched::Error)
        .unwrap()
        .id;
    let b = sd
        .add_lora("peft_meta", &l2, 1.3, Unmatched::Error)
        .unwrap()
        .id;
    sd.set_lora_scale(0.7).unwrap();
    (sd, a, b)
}

fn rows_of<Bk: Backend, const D: usize>(t: &Tensor<Bk, D>, i: usize) -> Tensor<Bk, D> {
    t.clone().narrow(0, i, 1)
}

fn max_diff<Bk: Backend, const D: usize>(a: &Tensor<Bk, D>, b: &Tensor<Bk, D>) -> f32 {
    let v = (a.clone() - b.clone())
        .abs()
        .max()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    v[0]
}

#[test]
fn batched_unet_rows_equal_separate_forwards() {
    let (mut sd, a, b) = with_two_loras::<B>();
    let weights = [(a, 0.8), (b, 1.3)];
    // the branches of a CLoRA step: base, LoRA 1, LoRA 2 (and both), for the two CFG halves
    let rows: Vec<Vec<AdapterId>> = vec![
        vec![],
        vec![a],
        vec![b],
        vec![a, b],
        vec![],
        vec![a],
        vec![b],
    ];
    let n = rows.len();
    let sample = gaussian::<B>(11, [n, 4, 8, 8], &device());
    let context = Tensor::<B, 3>::from_data(
        TensorData::new(gaussian_values(12, n * 77 * 32), [n, 77, 32]),
        &device(),
    );
    let ts: Vec<f32> = (0..n).map(|i| 981.0 - 140.0 * i as f32).collect();

    sd.set_lora_rows(Component::Unet, &rows).unwrap();
    let batched = sd
        .unet
        .forward(sample.clone(), &ts, context.clone())
        .unwrap();
    sd.clear_lora_rows(Component::Unet);

    let mut worst = 0f32;
    for (i, row) in rows.iter().enumerate() {
        let active: Vec<(AdapterId, f64)> = weights
            .iter()
            .filter(|(id, _)| row.contains(id))
            .copied()
            .collect();
        sd.set_adapters(&active).unwrap();
        let single = sd
            .unet
            .forward(rows_of(&sample, i), &ts[i..=i], rows_of(&context, i))
            .unwrap();
        let d = max_diff(&single, &rows_of(&batched, i));
        println!("unet row {i} {row:?}: batched vs separate max abs diff {d:.2e}");
        worst = worst.max(d);
    }
    assert!(
        worst <= 1e-5,
        "batched rows differ from separate forwards by {worst}"
    );
    // for scale: the base model alone, batch of 7 vs batch of 1 (kernel blocking changes with the batch size)
    sd.set_adapters(&[]).unwrap();
    let base_batched = sd
        .unet
        .forward(sample.clone(), &ts, context.clone())
        .unwrap();
    let base_single = sd
        .unet
        .forward(rows_of(&sample, 0), &ts[0..=0], rows_of(&context, 0))
        .unwrap();
    println!(
        "base model, batch 7 vs batch 1: {:.2e}",
        max_diff(&base_single, &rows_of(&base_batched, 0))
    );

    // the rows really differ from each other (the assignment is not ignored)
    let base_row1 = sd
        .unet
        .forward(rows_of(&sample, 1), &ts[1..=1], rows_of(&context, 1))
        .unwrap();
    assert!(max_diff(&base_row1, &rows_of(&batched, 1)) > 1e-2);
}

#[test]
fn batched_text_encoder_rows_equal_separate_encodes() {
    let (mut sd, a, b) = with_two_loras::<B>();
    let prompts = [
        "a cat and a dog",
        "a sks dog and a cat",
        "a cat and a sks dog",
        "nsfw",
    ];
    let rows = vec![vec![], vec![a], vec![b], vec![a, b]];
    let batched = sd.encode_prompts_per_row(&prompts, &rows, None).unwrap();
    assert!(
        sd.lora.rows(Component::TextEncoder).is_none(),
        "previous assignment restored"
    );
    let weights = [(a, 0.8), (b, 1.3)];
    let mut worst = 0f32;
    for (i, row) in rows.iter().enumerate() {
        let active: Vec<(AdapterId, f64)> = weights
            .iter()
            .filter(|(id, _)| row.contains(id))
            .copied()
            .collect();
        sd.set_adapters(&active).unwrap();
        let single = sd.encode_prompts(&[prompts[i]], None).unwrap();
        let d = max_diff(&single, &rows_of(&batched, i));
        println!("text encoder row {i} {row:?}: batched vs separate max abs diff {d:.2e}");
        worst = worst.max(d);
    }
    assert!(worst <= 1e-5, "batched text-encoder rows differ by {worst}");
    // LoRA rows differ from the base encoding of the same prompt
    sd.set_adapters(&[]).unwrap();
    let base = sd.encode_prompts(&[prompts[1]], None).unwrap();
    assert!(max_diff(&base, &rows_of(&batched, 1)) > 1e-2);
}

#[test]
fn row_assignments_are_checked() {
    let (mut sd, a, _) = with_two_loras::<B>();
    sd.set_lora_rows(Component::Unet, &[vec![], vec![a], vec![a]])
        .unwrap();
    let params = GenerateParams {
        prompt: "a cat".into(),
        steps: 1,
        width: 64,
        height: 64,
        ..Default::default()
    };
    // CFG runs a batch of 2: an error, not a panic inside the layers
    let e = sd.generate_latent(&params, None).unwrap_err().to_string();
    assert!(e.contains("batch of 3") && e.contains("has 2"), "{e}");
    sd.clear_lora_rows(Component::Unet);
    assert!(sd.generate_latent(&params, None).is_ok());

    sd.set_lora_rows(Component::TextEncoder, &[vec![a], vec![]])
        .unwrap();
    let e = sd
        .encode_prompts(&["one prompt"], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("text encoder"), "{e}");
    sd.clear_lora_rows(Component::TextEncoder);

    let e = sd
        .set_lora_rows(Component::Unet, &[vec![AdapterId(7)]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no adapter with id 7"), "{e}");
    assert!(sd.set_lora_rows(Component::Unet, &[]).is_err());
    assert!(sd.fuse_loras(&[(AdapterId(9), 1.0)], 1.0).is_err());
    assert!(sd.set_lora_scale(f64::NAN).is_err());
    let e = sd
        .encode_prompts_per_row(&["a", "b"], &[vec![a]], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 prompts but 1 rows"), "{e}");
}

/// d(sum of squares of the noise prediction)/d(latent) for the given rows, on the autodiff backend.
fn latent_grad(
    sd: &StableDiffusion<CpuAutodiff>,
    latent: &Tensor<CpuAutodiff, 4>,
    ctx: &Tensor<CpuAutodiff, 3>,
) -> Tensor<B, 4> {
    let x = latent.clone().detach().require_grad();
    let b = x.dims()[0];
    let out = sd
        .unet
        .forward(x.clone(), &vec![500.0; b], ctx.clone())
        .unwrap();
    let grads = out.powf_scalar(2.0).sum().backward();
    x.grad(&grads).expect("the latent has a gradient")
}

#[test]
fn gradient_flows_through_unfused_adapters_per_row() {
    let (mut sd, a, _) = with_two_loras::<CpuAutodiff>();
    let dev = Default::default();
    let latent = gaussian::<CpuAutodiff>(21, [2, 4, 8, 8], &dev);
    let ctx = Tensor::<CpuAutodiff, 3>::from_data(
        TensorData::new(gaussian_values(22, 2 * 77 * 32), [2, 77, 32]),
        &dev,
    );

    sd.set_lora_rows(Component::Unet, &[vec![], vec![a]])
        .unwrap();
    let g_rows = latent_grad(&sd, &latent, &ctx);
    sd.clear_lora_rows(Component::Unet);
    sd.set_adapters(&[]).unwrap();
    let g_base = latent_grad(&sd, &latent, &ctx);
    sd.set_adapters(&[(a, 0.8)]).unwrap();
    let g_lora = latent_grad(&sd, &latent, &ctx);

    let has_nan = g_rows
        .clone()
        .is_nan()
        .any()
        .into_data()
        .to_vec::<bool>()
        .unwrap()[0];
    assert!(!has_nan, "NaN in the gradient");
    // row 0 is the base branch, row 1 the LoRA branch: each row's gradient is its own branch's
    let d0 = max_diff(&rows_of(&g_rows, 0), &rows_of(&g_base, 0));
    let d1 = max_diff(&rows_of(&g_rows, 1), &rows_of(&g_lora, 1));
    let effect = max_diff(&rows_of(&g_lora, 1), &rows_of(&g_base, 1));
    println!(
        "gradient: base row {d0:.2e}, LoRA row {d1:.2e}, LoRA effect on the gradient {effect:.2e}"
    );
    assert!(
        d0 <= 1e-4 && d1 <= 1e-4,
        "per-row gradients differ from separate ones"
    );
    assert!(effect > 1e-2, "the LoRA does not change the gradient");
}
