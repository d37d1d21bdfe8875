//! CLoRA against the official pipeline (gemlab-vt/clora 76def7c) on the tiny pipeline `sd/tiny-c` with two LoRAs
//! (`clora/lora_cat.safetensors`, PEFT; `clora/lora_dog.safetensors`, kohya), f32 on the CPU. Fixtures:
//! `tools/fixtures/make_clora_fixtures.py` (it records the official run step by step, see
//! `tests/fixtures/clora/cases.json`).
//!
//! - `no_update`, `single_update`: the whole image through [`compose`]; final latent within 1e-3, masks identical
//!   at every step (and the single update's loss within 1e-5).
//! - `iterative` (12 updates): teacher forcing. From the reference's latent before each update, our
//!   [`update_once`] gives the reference's next latent within 1e-4 and its loss within 1e-5; from the reference's
//!   latents at each step (the last forward's input and the updated latent), our step ([`forward_all`],
//!   [`masks_for`], [`fuse`], the scheduler) gives the reference's next latent within 1e-4, with identical masks.
//!   The free-running image is reported, not asserted (step size 20 amplifies float rounding, see issue 4).

mod clora_common;
mod common;

use burn::tensor::Tensor;
use clora_common::*;
use clora_harness::methods::clora::engine::{forward_all, fuse, masks_for, update_once, Branches};
use clora_harness::methods::clora::masks::upsample_nearest;
use clora_harness::methods::clora::params::MapsChoice;
use clora_harness::methods::clora::tokens::{concept_groups, MaskWords};
use clora_harness::methods::clora::{Clora, CloraParams};
use clora_harness::methods::compose;
use clora_harness::schedulers::{self, SchedulerKind};
use common::*;

/// Item `i` of a stacked reference tensor `[n, ...]`, with the leading dimension dropped.
fn item(r: &(Vec<f32>, Vec<usize>), i: usize) -> (Vec<f32>, Vec<usize>) {
    let shape = r.1[1..].to_vec();
    let n: usize = shape.iter().product();
    (r.0[i * n..(i + 1) * n].to_vec(), shape)
}

fn item_tensor<const D: usize>(r: &(Vec<f32>, Vec<usize>), i: usize) -> Tensor<AD, D> {
    let (v, s) = item(r, i);
    ad(v, s)
}

/// Our map-resolution masks `[N][q]`, upsampled to the latent side as the reference stores them `[N, h, w]`.
fn masks_at_latent(small: &[Vec<f32>], map_hw: (usize, usize), h: usize, w: usize) -> Vec<f32> {
    small
        .iter()
        .flat_map(|m| upsample_nearest(m, map_hw.0, map_hw.1, h, w))
        .collect()
}

fn timesteps(r: &Reference) -> Vec<f64> {
    r.i64("timesteps").0.iter().map(|&t| t as f64).collect()
}

#[test]
fn token_groups_from_words_equal_the_indices_given_to_the_official_code() {
    let doc = cases();
    let (sd, job) = setup(&doc);
    let prompts = job.clora_prompts().unwrap();
    let want: Vec<String> = doc["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().into())
        .collect();
    assert_eq!(prompts, want, "branch prompts built from the concept words");
    let concepts: Vec<_> = job.loras.iter().map(|l| l.concept.clone()).collect();
    let (groups, masks) = concept_groups(
        &sd.tokenizer,
        &prompts,
        &concepts,
        MaskWords::TriggerAndNoun,
    )
    .unwrap();
    let groups_ref: Vec<Vec<Vec<usize>>> =
        serde_json::from_value(doc["important_token_indices"].clone()).unwrap();
    let masks_ref: Vec<Vec<usize>> = serde_json::from_value(doc["mask_indices"].clone()).unwrap();
    assert_eq!(groups, groups_ref);
    assert_eq!(masks, masks_ref);
}

/// Runs a whole image and compares it with the reference run: final latent, masks at every step, losses.
fn whole_image(name: &str, final_tol: f32, assert_final: bool) {
    let doc = cases();
    let c = case(&doc, name);
    let r = Reference::open(&fixtures().join("clora").join(c["file"].as_str().unwrap()));
    let (mut sd, job) = setup(&doc);
    let mut clora = Clora::<AD>::new(params(&doc, c));
    clora.record_latents = true;
    let noise = r.f32("init_noise");
    let out = compose(&mut sd, &mut clora, &job, ad(noise.0, noise.1)).unwrap();
    // the method's finish restored the model
    assert!(
        sd.lora.active().is_empty() && sd.lora.rows(clora_harness::lora::Component::Unet).is_none()
    );

    let final_ref = r.f32("final_latent");
    let err = max_diff(&to_vec(&out.latent), &final_ref.0);
    println!(
        "{name}: final latent max abs error {err:.3e} (reference max |x| {:.3})",
        max_abs(&final_ref)
    );

    let masks_ref = r.f32("masks");
    let [_, _, h, w] = out.latent.dims();
    let map_hw = (4, 4);
    let mut first_mask_mismatch = None;
    for (i, rec) in clora.records().iter().enumerate() {
        let ours = masks_at_latent(&rec.masks, map_hw, h, w);
        if ours != item(&masks_ref, i).0 && first_mask_mismatch.is_none() {
            first_mask_mismatch = Some(i);
        }
    }
    let losses_ref = if r.has("update_loss") {
        r.f32("update_loss").0
    } else {
        vec![]
    };
    let losses: Vec<f32> = clora
        .records()
        .iter()
        .flat_map(|rec| rec.losses.clone())
        .collect();
    assert_eq!(losses.len(), losses_ref.len(), "number of latent updates");
    let loss_err = max_diff(&losses, &losses_ref);
    println!(
        "{name}: {} updates, loss max abs error {loss_err:.3e}; masks: {}",
        losses.len(),
        first_mask_mismatch.map_or("identical at every step".to_string(), |i| format!(
            "differ from step {i}"
        ))
    );
    if assert_final {
        assert!(
            err <= final_tol,
            "{name}: final latent error {err:e} > {final_tol:e}"
        );
        assert!(
            first_mask_mismatch.is_none(),
            "{name}: masks differ at step {first_mask_mismatch:?}"
        );
        assert!(loss_err <= 1e-5, "{name}: loss error {loss_err:e}");
    }
}

#[test]
fn no_update_matches_the_official_pipeline() {
    whole_image("no_update", 1e-3, true);
}

#[test]
fn single_update_matches_the_official_pipeline() {
    whole_image("single_update", 1e-3, true);
}

/// The teacher-forced checks of the many-update run.
#[test]
fn iterative_updates_match_the_official_pipeline_step_by_step() {
    let doc = cases();
    let c = case(&doc, "iterative");
    let r = Reference::open(&fixtures().join("clora").join(c["file"].as_str().unwrap()));
    let (mut sd, job) = setup(&doc);
    let p = params(&doc, c);
    let clora = Clora::<AD>::new(p.clone());
    let br: Branches<AD> = clora.prepare_branches(&mut sd, &job).unwrap();
    let mut scheduler =
        schedulers::build::<AD>(SchedulerKind::Ddim, &sd.scheduler_config, job.steps).unwrap();
    let ts = timesteps(&r);
    assert_eq!(scheduler.timesteps(), &ts[..], "timesteps");

    // prompt embeddings per branch: [N, 2 (neg, pos), 77, D] vs our [2N, 77, D] laid out the same way
    let pe = r.f32("prompt_embeds");
    let emb_err = max_diff(&to_vec(&br.context), &pe.0);
    println!("prompt embeddings (TE + branch LoRA): max abs error {emb_err:.3e}");
    assert!(emb_err <= 1e-4);

    // 1. every update from the reference's own latent
    let steps_of: Vec<i64> = r.i64("update_step").0;
    let (u_in, u_out, u_loss) = (
        r.f32("update_in"),
        r.f32("update_out"),
        r.f32("update_loss").0,
    );
    let (mut worst_z, mut worst_loss) = (0f32, 0f32);
    for (u, &i) in steps_of.iter().enumerate() {
        let i = i as usize;
        let z: Tensor<AD, 4> = item_tensor(&u_in, u);
        let (_, loss, z_new) =
            update_once(&mut sd, &br, &p, scheduler.as_ref(), i, ts[i], z).unwrap();
        let ez = max_diff(&to_vec(&z_new), &item(&u_out, u).0);
        let el = (loss - u_loss[u]).abs();
        println!("update {u} (step {i}): latent error {ez:.3e}, loss {loss:.6} vs {:.6} (error {el:.2e})", u_loss[u]);
        worst_z = worst_z.max(ez);
        worst_loss = worst_loss.max(el);
    }
    println!(
        "updates: worst one-update latent error {worst_z:.3e}, worst loss error {worst_loss:.3e}"
    );
    assert!(
        worst_z <= 1e-4,
        "one-update latent error {worst_z:e} > 1e-4"
    );
    assert!(worst_loss <= 1e-5, "loss error {worst_loss:e} > 1e-5");

    // 2. every step from the reference's latents: forward on the last forward's input, masks, fusion, DDIM step
    //    from the updated latent
    let (f_in, s_in, out) = (r.f32("forward_in"), r.f32("sched_in"), r.f32("latents_out"));
    let (maps_ref, masks_ref, eps_ref) = (r.f32("maps"), r.f32("masks"), r.f32("eps_branches"));
    let mut worst_step = 0f32;
    for (i, &t) in ts.iter().enumerate().take(job.steps) {
        let z: Tensor<AD, 4> = item_tensor(&f_in, i);
        let dims = z.dims();
        let fwd = forward_all(&mut sd, &br, &p, scheduler.as_ref(), i, t, z).unwrap();
        let e_eps = max_diff(&to_vec(&fwd.eps), &item(&eps_ref, i).0);
        let e_maps = max_diff(&to_vec(&fwd.maps), &item(&maps_ref, i).0);
        let (masks, small) = masks_for(&fwd.maps, &br, &p, i, dims, None).unwrap();
        let same_masks =
            masks_at_latent(&small, br.map_hw, dims[2], dims[3]) == item(&masks_ref, i).0;
        let eps = fuse(fwd.eps.detach(), masks, job.guidance);
        let next = scheduler.step(eps, i, item_tensor(&s_in, i));
        let e = max_diff(&to_vec(&next), &item(&out, i).0);
        println!("step {i}: next latent error {e:.3e} (branch eps {e_eps:.2e}, maps {e_maps:.2e}), masks identical: {same_masks}");
        assert!(same_masks, "step {i}: masks differ");
        worst_step = worst_step.max(e);
        if i == 0 {
            // The checks can tell the official quirks from their fixes: a fresh noise prediction on the updated
            // latent (`fresh_eps`), or maps from the conditional rows only (`maps = "cond"`), give other results.
            let fresh = forward_all(
                &mut sd,
                &br,
                &p,
                scheduler.as_ref(),
                i,
                t,
                item_tensor(&s_in, i),
            )
            .unwrap();
            let (m, _) = masks_for(&fresh.maps, &br, &p, i, dims, None).unwrap();
            let e_fresh = max_diff(
                &to_vec(&scheduler.step(
                    fuse(fresh.eps, m, job.guidance),
                    i,
                    item_tensor(&s_in, i),
                )),
                &item(&out, i).0,
            );
            let cond = CloraParams {
                maps: MapsChoice::Cond,
                ..p.clone()
            };
            let z: Tensor<AD, 4> = item_tensor(&f_in, i);
            let e_cond = max_diff(
                &to_vec(
                    &forward_all(&mut sd, &br, &cond, scheduler.as_ref(), i, t, z)
                        .unwrap()
                        .maps,
                ),
                &item(&maps_ref, i).0,
            );
            println!("step 0 with fresh_eps: next latent error {e_fresh:.3e}; maps = cond: maps error {e_cond:.3e}");
            assert!(
                e_fresh > 1e-2 && e_cond > 1e-4,
                "the fixtures do not exercise the stale-eps / both-halves quirks"
            );
        }
    }
    println!("steps: worst one-step latent error {worst_step:.3e}");
    assert!(
        worst_step <= 1e-4,
        "one-step latent error {worst_step:e} > 1e-4"
    );
}

/// The free-running many-update image, for the record (drifts, as the issue explains; not asserted).
#[test]
fn iterative_free_running_is_reported() {
    whole_image("iterative", f32::INFINITY, false);
}
