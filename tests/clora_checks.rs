//! CLoRA self-consistency on the tiny pipeline `sd/tiny-c` with the two fixture LoRAs:
//! - batched (all branches and both CFG halves in one UNet call, per-row LoRAs) and sequential (one call per
//!   branch) give the same update and the same image up to float rounding; LoRA Composite likewise;
//! - the latent update's gradient (burn autodiff through the batched UNet, the probed attention maps, the
//!   min-max normalisation and NT-Xent) agrees with central finite differences of the loss;
//! - `mask_mode = "layout"`: the layout pass samples the base image, and its masks hold at every step.

mod clora_common;
mod common;

use burn::tensor::{ElementConversion, Tensor};
use clora_common::*;
use clora_harness::methods::clora::engine::{contrastive_loss, forward_all, update_once};
use clora_harness::methods::clora::masks::MaskMode;
use clora_harness::methods::clora::tokens::{following, MaskWords};
use clora_harness::methods::clora::{Clora, CloraParams};
use clora_harness::methods::{self, compose, MethodSpec};
use clora_harness::noise;
use clora_harness::schedulers::{self, SchedulerKind};
use common::*;

fn init_noise() -> Tensor<AD, 4> {
    let r = Reference::open(&fixtures().join("clora/single_update.safetensors"));
    let (v, s) = r.f32("init_noise");
    ad(v, s)
}

#[test]
fn batched_and_sequential_branches_give_the_same_update_and_image() {
    let doc = cases();
    let c = case(&doc, "single_update");
    let (mut sd, job) = setup(&doc);
    let mut updates = Vec::new();
    let mut images = Vec::new();
    for batched in [true, false] {
        let p = CloraParams {
            batched,
            ..params(&doc, c)
        };
        // one update from the initial noise
        let clora = Clora::<AD>::new(p.clone());
        let br = clora.prepare_branches(&mut sd, &job).unwrap();
        let sch =
            schedulers::build::<AD>(SchedulerKind::Ddim, &sd.scheduler_config, job.steps).unwrap();
        let t = sch.timesteps()[0];
        let (fwd, loss, z) =
            update_once(&mut sd, &br, &p, sch.as_ref(), 0, t, init_noise()).unwrap();
        updates.push((loss, to_vec(&z), to_vec(&fwd.eps), to_vec(&fwd.maps)));
        // the whole image (8 steps, one update)
        let mut method = Clora::<AD>::new(p);
        let out = compose(&mut sd, &mut method, &job, init_noise()).unwrap();
        images.push((
            to_vec(&out.latent),
            method
                .records()
                .iter()
                .map(|r| r.masks.clone())
                .collect::<Vec<_>>(),
        ));
    }
    let (b, s) = (&updates[0], &updates[1]);
    let (e_z, e_eps, e_maps) = (
        max_diff(&b.1, &s.1),
        max_diff(&b.2, &s.2),
        max_diff(&b.3, &s.3),
    );
    println!(
        "batched vs sequential, one update: loss {} vs {} ; latent {e_z:.3e}, eps {e_eps:.3e}, maps {e_maps:.3e}",
        b.0, s.0
    );
    let e_img = max_diff(&images[0].0, &images[1].0);
    println!("batched vs sequential, whole image: final latent max abs difference {e_img:.3e}");
    // Equal up to float rounding: the kernels sum in another order for another batch size (about 1e-5 on one
    // update of a latent of size ~3, 2e-4 on a final latent of size ~50, as close as ours and diffusers are).
    assert!((b.0 - s.0).abs() <= 1e-6 && e_z <= 5e-5 && e_eps <= 5e-5 && e_maps <= 5e-6);
    assert!(e_img <= 1e-3);
    assert_eq!(
        images[0].1, images[1].1,
        "masks differ between batched and sequential"
    );
}

#[test]
fn composite_batched_and_sequential_give_the_same_image() {
    let doc = cases();
    let (mut sd, job) = setup(&doc);
    let mut latents = Vec::new();
    for batched in [true, false] {
        let mut m = methods::build::<AD>(&MethodSpec::Composite { batched }).unwrap();
        latents.push(to_vec(
            &compose(&mut sd, m.as_mut(), &job, init_noise())
                .unwrap()
                .latent,
        ));
    }
    let e = max_diff(&latents[0], &latents[1]);
    println!("composite batched vs sequential: final latent max abs difference {e:.3e}");
    assert!(e <= 1e-3);
}

/// `d/dh L(z + h d)` at 0 by autodiff (the gradient the update uses, `(z - z') / step_size`, dotted with `d`) and
/// by central differences `(L(z + h d) - L(z - h d)) / 2h`, along the gradient and along random directions.
#[test]
fn latent_gradient_matches_finite_differences() {
    let doc = cases();
    let c = case(&doc, "single_update");
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, c);
    let clora = Clora::<AD>::new(p.clone());
    let br = clora.prepare_branches(&mut sd, &job).unwrap();
    let sch =
        schedulers::build::<AD>(SchedulerKind::Ddim, &sd.scheduler_config, job.steps).unwrap();
    // a mid-denoising step (index 3) from the reference's latent there
    let r = Reference::open(&fixtures().join("clora/no_update.safetensors"));
    let (v, shape) = r.f32("latents_in");
    let n: usize = shape[1..].iter().product();
    let i = 3;
    let t = sch.timesteps()[i];
    let z: Tensor<AD, 4> = ad(v[i * n..(i + 1) * n].to_vec(), shape[1..].to_vec());

    let (_, loss0, z_new) = update_once(&mut sd, &br, &p, sch.as_ref(), i, t, z.clone()).unwrap();
    let grad = (z.clone() - z_new) / p.step_size;
    let mut loss_at = |x: Tensor<AD, 4>| -> f64 {
        let f = forward_all(&mut sd, &br, &p, sch.as_ref(), i, t, x.detach()).unwrap();
        let l: f32 = contrastive_loss(&f.maps, &br.groups, p.temperature)
            .into_scalar()
            .elem();
        l as f64
    };
    assert!((loss_at(z.clone()) - loss0 as f64).abs() < 1e-6);
    let gnorm: f32 = grad.clone().square().sum().sqrt().into_scalar().elem();
    let mut directions = vec![("gradient", grad.clone() / gnorm as f64)];
    for seed in [11u64, 12] {
        let d = noise::gaussian::<AD>(seed, z.dims(), &device());
        let dn: f32 = d.clone().square().sum().sqrt().into_scalar().elem();
        directions.push(("random", d / dn as f64));
    }
    println!("loss {loss0:.6}, |grad| {gnorm:.4e}");
    for (what, d) in directions {
        let analytic: f32 = (grad.clone() * d.clone()).sum().into_scalar().elem();
        let mut best = f64::INFINITY;
        for h in [1e-1, 3e-2, 1e-2] {
            let fd = (loss_at(z.clone() + d.clone() * h) - loss_at(z.clone() - d.clone() * h))
                / (2.0 * h);
            let rel =
                (fd - analytic as f64).abs() / (analytic as f64).abs().max(1e-3 * gnorm as f64);
            println!("{what} direction, h = {h:.0e}: autodiff {analytic:+.6e}, finite differences {fd:+.6e}, relative error {rel:.2e}");
            best = best.min(rel);
        }
        assert!(
            best < 2e-2,
            "{what} direction: directional derivative off by {best:.2e} (relative)"
        );
    }
}

#[test]
fn layout_masks_come_from_the_base_image_and_hold_at_every_step() {
    let doc = cases();
    let c = case(&doc, "single_update");
    let (mut sd, job) = setup(&doc);
    let p = CloraParams {
        mask_mode: MaskMode::Layout,
        latent_update: false,
        apply_mask_after: 0,
        ..params(&doc, c)
    };
    let mut method = Clora::<AD>::new(p.clone());
    compose(&mut sd, &mut method, &job, init_noise()).unwrap();
    let layout = method.layout().expect("a layout was made").clone();
    // the layout pass samples the base image: the `base` method's final latent from the same noise
    let mut base = methods::build::<AD>(&MethodSpec::Base).unwrap();
    let out = compose(&mut sd, base.as_mut(), &job, init_noise()).unwrap();
    let e = max_diff(&layout.pass.latent, &to_vec(&out.latent));
    println!("layout pass vs base image: final latent max abs difference {e:.3e}");
    assert!(e <= 1e-4, "{e}");
    assert_eq!(
        layout.pass.step_maps.len(),
        job.steps * layout.pass.map.len()
    );
    // the concepts are scored by their class nouns in the base prompt
    let br = Clora::<AD>::new(p.clone())
        .prepare_branches(&mut sd, &job)
        .unwrap();
    let nouns: Vec<Vec<usize>> = br.groups.iter().map(|g| g[0].clone()).collect();
    assert_eq!(layout.words, nouns);
    // the same masks at every step; the LoRA branches' masks disjoint; every cell in some mask
    let records = method.records();
    assert_eq!(records.len(), job.steps);
    assert!(records.iter().all(|r| r.masks == records[0].masks));
    let masks = &records[0].masks;
    let held: Vec<f32> = masks.iter().map(|m| m.iter().sum()).collect();
    println!("cells per branch (base first): {held:?}");
    assert!(
        held[1..].iter().all(|&n| n > 0.0),
        "every concept gets an object"
    );
    for i in 0..masks[0].len() {
        let lora: f32 = masks[1..].iter().map(|m| m[i]).sum();
        assert!(lora <= 1.0 && lora + masks[0][i] >= 1.0, "cell {i}");
    }
    // `after_noun`: the token after each noun
    let mut after = Clora::<AD>::new(CloraParams {
        mask_words: MaskWords::AfterNoun,
        ..p
    });
    compose(&mut sd, &mut after, &job, init_noise()).unwrap();
    let shifted: Vec<Vec<usize>> = nouns.iter().map(|n| following(n)).collect();
    assert_eq!(after.layout().unwrap().words, shifted);
}
