//! Training in burn autodiff: the loss goes down, weights round-trip through the diffusers layout, and a short
//! run of the whole pipeline writes a folder that `StableDiffusion::load` reads unchanged (and resumes).

mod common;

use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use clora_harness::backend::{Cpu, CpuAutodiff};
use clora_harness::lora::file::LoraFile;
use clora_harness::lora::resolve::Unmatched;
use clora_harness::models::blocks::probe::AttentionProbe;
use clora_harness::models::clip::tokenizer::ClipTokenizer;
use clora_harness::models::sd::{LoadOptions, StableDiffusion};
use clora_harness::models::weights::{decode_f32, WeightStore};
use clora_harness::pipeline::GenerateParams;
use clora_harness::toyworld::arch::ToyArch;
use clora_harness::toyworld::caption::{training_caption, CaptionOrder};
use clora_harness::toyworld::concept::Concept;
use clora_harness::toyworld::grounding::Grounding;
use clora_harness::toyworld::grow::grow_unet;
use clora_harness::toyworld::latent_data::{LatentSet, BARE_RATE, TRAIN_SEED_BASE};
use clora_harness::toyworld::lora_select::best;
use clora_harness::toyworld::progress::PhaseState;
use clora_harness::toyworld::scene::PlainWorld;
use clora_harness::toyworld::seed_work::ModelStart;
use clora_harness::toyworld::text_unet::{TextUnet, TextUnetNames};
use clora_harness::toyworld::token_attention::grounded_token_loss;
use clora_harness::toyworld::train::{train_pipeline, TrainPlan};
use clora_harness::toyworld::train_base::{
    alphas_cumprod, checkpoint_dir, diffusion_batch, ema_dir, epsilon_loss, weighted_epsilon_loss,
    weighted_epsilon_loss_probed, BaseTrainConfig, DiffusionBatch, NoiseOptions,
};
use clora_harness::toyworld::train_decoder::{train_decoder, DecoderTrainConfig};
use clora_harness::toyworld::train_lora::{
    checkpoint_path, train_lora, LoraLayout, LoraTrainConfig,
};
use clora_harness::toyworld::train_vae::{vae_model, VaeTrainConfig};
use clora_harness::toyworld::trainable::trainable;
use common::temp_dir;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type A = CpuAutodiff;

mod toy_common;
use toy_common::{captioned_latents, fake_latents, tiny_arch, tiny_base_config, train_base_logged};

/// The same diffusion batch of 8 rows of `data` on every call (rng seeded with `seed`; the default noise).
fn fixed_batch<'a>(
    arch: &ToyArch,
    data: &'a LatentSet,
    seed: u64,
    device: &'a burn::tensor::Device<A>,
) -> impl Fn() -> DiffusionBatch<A> + 'a {
    fixed_batch_with(arch, data, seed, NoiseOptions::default(), device)
}

/// [`fixed_batch`] with other noise options.
fn fixed_batch_with<'a>(
    arch: &ToyArch,
    data: &'a LatentSet,
    seed: u64,
    noise: NoiseOptions,
    device: &'a burn::tensor::Device<A>,
) -> impl Fn() -> DiffusionBatch<A> + 'a {
    let alphas = alphas_cumprod(&ToyArch::scheduler_config().unwrap()).unwrap();
    let empty = ClipTokenizer::embedded().unwrap().encode("");
    let ls = arch.latent_size();
    move || {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        diffusion_batch::<A>(
            data,
            [4, ls, ls],
            8,
            1.0,
            &alphas,
            &empty,
            0.0,
            None,
            noise,
            &mut rng,
            device,
        )
    }
}

#[test]
fn epsilon_loss_decreases_on_a_fixed_batch() {
    let arch = tiny_arch();
    let device = Default::default();
    let data = fake_latents(&arch, 8);
    let batch = fixed_batch(&arch, &data, 3, &device);
    let mut model = TextUnet::<A>::random(&arch, 7, &device).unwrap();
    let mut optim = AdamConfig::new().init::<A, TextUnet<A>>();
    let mut losses = Vec::new();
    for _ in 0..12 {
        let loss = epsilon_loss(&model, batch()).unwrap();
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(2e-3, model, grads);
    }
    eprintln!("losses: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        losses[11] < 0.8 * losses[0],
        "loss did not decrease: {losses:?}"
    );
}

/// Input perturbation noises the latents with `eps + gamma * xi` and keeps `eps` the target; noise assignment
/// gives the same noises to the rows, permuted so their summed distance to the latents is no larger.
#[test]
fn noise_options_perturb_the_input_and_assign_the_noise() {
    let arch = tiny_arch();
    let device = Default::default();
    let data = fake_latents(&arch, 16);
    let alphas = alphas_cumprod(&ToyArch::scheduler_config().unwrap()).unwrap();
    let ls = arch.latent_size();
    let l = 4 * ls * ls;
    let batch = |noise: NoiseOptions| {
        let b = fixed_batch_with(&arch, &data, 11, noise, &device)();
        let v = |t: Tensor<A, 4>| t.into_data().to_vec::<f32>().unwrap();
        (v(b.noisy), v(b.noise), b.timesteps)
    };
    let (noisy, noise, ts) = batch(NoiseOptions::default());
    // x0 per row, recovered from the plain batch: (x_t - sqrt(1 - a) eps) / sqrt(a)
    let scale = |row: usize| {
        let a = alphas[ts[row] as usize];
        (a.sqrt(), (1.0 - a).sqrt())
    };
    let x0: Vec<f32> = (0..noisy.len())
        .map(|k| {
            let (sa, sb) = scale(k / l);
            (noisy[k] - sb * noise[k]) / sa
        })
        .collect();

    let gamma = 0.1;
    let (p_noisy, p_noise, p_ts) = batch(NoiseOptions {
        input_perturbation: gamma,
        ..NoiseOptions::default()
    });
    assert_eq!(p_ts, ts);
    assert_eq!(p_noise, noise, "the target must stay eps");
    // (x_t' - x_t) / sqrt(1 - a) = gamma * xi: mean about 0, deviation about gamma
    let xi: Vec<f32> = (0..noisy.len())
        .map(|k| (p_noisy[k] - noisy[k]) / scale(k / l).1)
        .collect();
    let n = xi.len() as f32;
    let mean = xi.iter().sum::<f32>() / n;
    let sd = (xi.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    assert!(
        mean.abs() < 0.01 && (sd - gamma).abs() < 0.01,
        "mean {mean}, sd {sd}"
    );

    let (a_noisy, a_noise, a_ts) = batch(NoiseOptions {
        assign: true,
        ..NoiseOptions::default()
    });
    assert_eq!(a_ts, ts);
    let rows = |v: &[f32]| {
        let mut r: Vec<Vec<u32>> = v
            .chunks(l)
            .map(|c| c.iter().map(|x| x.to_bits()).collect())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        rows(&a_noise),
        rows(&noise),
        "assigned noises must be the drawn ones, permuted"
    );
    assert_ne!(
        a_noise, noise,
        "8 rows of random noise came out in their drawn order"
    );
    let dist = |e: &[f32]| -> f64 {
        x0.iter()
            .zip(e)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    assert!(
        dist(&a_noise) < dist(&noise),
        "{} >= {}",
        dist(&a_noise),
        dist(&noise)
    );
    for k in 0..noisy.len() {
        let (sa, sb) = scale(k / l);
        assert!((a_noisy[k] - (sa * x0[k] + sb * a_noise[k])).abs() < 1e-4);
    }
}

#[test]
fn min_snr_weighting_turns_down_the_clean_timesteps_only() {
    let arch = tiny_arch();
    let device = Default::default();
    let data = fake_latents(&arch, 8);
    let batch = fixed_batch(&arch, &data, 11, &device);
    let model = TextUnet::<A>::random(&arch, 7, &device).unwrap();
    let scalar = |t: burn::tensor::Tensor<A, 1>| t.into_scalar().elem::<f64>();
    let plain = scalar(epsilon_loss(&model, batch()).unwrap());
    let b = batch();
    // SNR falls from ~1e4 (t = 0) to ~4e-5 (t = 999) on the linear schedule.
    assert!(
        b.snr.iter().any(|&s| s > 5.0) && b.snr.iter().any(|&s| s < 5.0),
        "{:?}",
        b.snr
    );
    // A gamma above every SNR weighs every row 1: the plain loss.
    let loose = scalar(weighted_epsilon_loss(&model, batch(), Some(1e9)).unwrap());
    assert!((loose - plain).abs() < 1e-6 * plain, "{loose} vs {plain}");
    // gamma = 5 turns down the rows with SNR above 5 and only those.
    let weighted = scalar(weighted_epsilon_loss(&model, b, Some(5.0)).unwrap());
    assert!(weighted < plain, "{weighted} vs {plain}");
    assert!(weighted > 0.0);
}

#[test]
fn vae_reconstruction_loss_decreases_on_a_fixed_batch() {
    let arch = tiny_arch();
    let device = Default::default();
    let images: Vec<_> = (0..4)
        .map(|i| clora_harness::toyworld::train_vae::vae_image(1, i).unwrap())
        .collect();
    let x = clora_harness::toyworld::tensors::images_to_tensor::<A>(&images, &device);
    let mut model = trainable(vae_model::<A>(&arch, None, 3, &device).unwrap());
    let mut optim = AdamConfig::new().init::<A, _>();
    let mut losses = Vec::new();
    for _ in 0..10 {
        let post = model.encode(x.clone()).unwrap();
        let loss = (model.decode(post.mean).unwrap() - x.clone()).abs().mean();
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(5e-3, model, grads);
    }
    eprintln!("losses: {losses:?}");
    assert!(
        losses[9] < 0.8 * losses[0],
        "loss did not decrease: {losses:?}"
    );
}

#[test]
fn the_cached_training_set_is_rebuilt_for_another_object_mix() {
    use clora_harness::toyworld::caption::{parse, CaptionOrder};
    use clora_harness::toyworld::scene::PlainWorld;
    let arch = tiny_arch();
    let device = Default::default();
    let vae = vae_model::<Cpu>(&arch, None, 3, &device).unwrap();
    let tok = ClipTokenizer::embedded().unwrap();
    let dir = temp_dir("toyworld-latents");
    let path = dir.join("latents.safetensors");
    let rebuilt = std::cell::Cell::new(0);
    let build_in = |world: &PlainWorld, n: usize, order: CaptionOrder| {
        let mut log = |m: &str| rebuilt.set(rebuilt.get() + m.contains("rebuilding") as usize);
        LatentSet::build_or_load::<Cpu>(&path, n, world, order, &vae, &tok, &device, &mut log)
            .unwrap()
    };
    let build = |world: &PlainWorld, n: usize| build_in(world, n, CaptionOrder::LeftToRight);
    let objects = |set: &LatentSet| -> Vec<usize> {
        set.captions
            .iter()
            .map(|c| parse(c).unwrap().objects.len())
            .collect()
    };
    let default = build(&PlainWorld::default(), 12);
    let threes = PlainWorld {
        object_counts: [0.0, 0.0, 1.0],
        ..PlainWorld::default()
    };
    let three = build(&threes, 12);
    let again = build(&threes, 12);
    assert_eq!(rebuilt.get(), 1, "only the new mix rebuilds the cache");
    assert!(
        objects(&default).iter().any(|n| *n < 3),
        "{:?}",
        default.captions
    );
    assert!(
        objects(&three).iter().all(|n| *n == 3),
        "{:?}",
        three.captions
    );
    assert_eq!(three.captions, again.captions);
    assert_eq!(three.means, again.means, "the second call reads the cache");
    assert_ne!(default.means, three.means);
    // `--caption-order shuffled`: the same cached latents, the captions' objects in another order.
    let shuffled = build_in(&threes, 12, CaptionOrder::Shuffled);
    assert_eq!(
        rebuilt.get(),
        1,
        "the caption order does not rebuild the cache"
    );
    assert_eq!(shuffled.means, three.means);
    assert_ne!(shuffled.captions, three.captions);
}

#[test]
fn weights_round_trip_through_the_diffusers_layout() {
    let arch = tiny_arch();
    round_trip(&arch);
    // `--unet-channels 16,32`: two levels, cross-attention at 8x8 only (mid block included)
    let mut two = arch.clone();
    two.set_unet_channels(&[16, 32]).unwrap();
    round_trip(&two);
}

/// Saves a random text encoder and UNet of `arch` in the diffusers layout, loads them back and finds the same
/// noise prediction.
fn round_trip(arch: &ToyArch) {
    let device = Default::default();
    let names = TextUnetNames::discover::<Cpu>(arch, &device).unwrap();
    // Linear weights are transposed, convolutions and embeddings are not.
    let find = |k: &str| {
        names
            .unet
            .params
            .iter()
            .chain(&names.text.params)
            .find(|p| p.key == k)
            .unwrap()
    };
    assert!(find("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight").transposed);
    assert!(!find("conv_in.weight").transposed);
    let levels = arch.unet_channels.len();
    assert!(names
        .unet
        .params
        .iter()
        .any(|p| p.key.starts_with(&format!("down_blocks.{}.", levels - 1))));
    assert!(!names
        .unet
        .params
        .iter()
        .any(|p| p.key.starts_with(&format!("down_blocks.{levels}."))));
    assert!(!find("text_model.embeddings.token_embedding.weight").transposed);
    assert_eq!(
        find("text_model.embeddings.token_embedding.weight").shape,
        vec![49408, 32]
    );
    let model = TextUnet::<Cpu>::random(arch, 11, &device).unwrap();
    let dir = temp_dir(&format!("toyworld-roundtrip-{levels}"));
    names.save(&model, &dir, false).unwrap();
    let back = TextUnet::<Cpu>::load(arch, &dir, &device).unwrap();
    let ids = vec![ClipTokenizer::embedded().unwrap().encode("a blue square")];
    let ls = arch.latent_size();
    let x = Tensor::<Cpu, 4>::from_data(
        TensorData::new(
            clora_harness::noise::gaussian_values(1, 4 * ls * ls),
            [1, 4, ls, ls],
        ),
        &device,
    );
    let run = |m: &TextUnet<Cpu>| {
        let ctx = m.text_encoder.encode_ids(&ids, None, &device).unwrap();
        m.unet
            .forward(x.clone(), &[500.0], ctx)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(run(&model), run(&back));
}

#[test]
fn a_grown_unet_starts_as_the_trained_one() {
    // The trained UNet, and the same with cross-attention at every level and two transformer layers.
    let arch = tiny_arch();
    let mut grown = arch.clone();
    grown.unet_cross_attention = vec![true, true, true];
    grown.unet_transformer_layers = 2;
    let device = Default::default();
    let model = TextUnet::<Cpu>::random(&arch, 12, &device).unwrap();
    let dir = temp_dir("toyworld-grow");
    TextUnetNames::discover::<Cpu>(&arch, &device)
        .unwrap()
        .save(&model, &dir, false)
        .unwrap();
    let file = dir.join("unet").join("diffusion_pytorch_model.safetensors");
    let before = WeightStore::open(std::slice::from_ref(&file))
        .unwrap()
        .len();
    let added = grow_unet::<Cpu>(&grown, &file, 3, &device).unwrap();
    let after = WeightStore::open(std::slice::from_ref(&file)).unwrap();
    assert_eq!(after.len(), before + added);
    // New: the 16x16 down block's transformer, the 16x16 up block's two, and a second layer in each of the
    // others (down 1, down 2, mid, up 0 x2, up 1 x2).
    assert!(after.contains("down_blocks.0.attentions.0.proj_out.weight"));
    assert!(after.contains("up_blocks.2.attentions.1.transformer_blocks.1.ff.net.2.weight"));
    assert!(after.contains("mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight"));
    let zero = |k: &str| after.read_f32(k).unwrap().0.iter().all(|v| *v == 0.0);
    assert!(zero("down_blocks.0.attentions.0.proj_out.weight"));
    assert!(!zero(
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight"
    ));
    assert!(zero(
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_out.0.weight"
    ));
    assert!(!zero(
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_q.weight"
    ));
    assert!(!zero(
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight"
    ));
    // The grown UNet computes what the trained one did, to the last bit.
    let back = TextUnet::<Cpu>::load(&grown, &dir, &device).unwrap();
    let ids = ClipTokenizer::embedded().unwrap().encode("a blue square");
    let ls = arch.latent_size();
    let x = Tensor::<Cpu, 4>::from_data(
        TensorData::new(
            clora_harness::noise::gaussian_values(2, 2 * 4 * ls * ls),
            [2, 4, ls, ls],
        ),
        &device,
    );
    let run = |m: &TextUnet<Cpu>| {
        let ctx = m
            .text_encoder
            .encode_ids(&[ids.clone(), ids.clone()], None, &device)
            .unwrap();
        m.unet
            .forward(x.clone(), &[500.0, 20.0], ctx)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(run(&model), run(&back));
    // Growing it back down is refused, naming the weight that has no place.
    let err = grow_unet::<Cpu>(&arch, &file, 3, &device).unwrap_err();
    assert!(err.to_string().contains("not a growth"), "{err}");
}

/// `harness toyworld train --text-tokens 16`: the text encoder's 16 positions reach the exported config, and
/// the loader pads prompts to them with the embedded vocabulary, or refuses a tokenizer folder that pads to more.
#[test]
fn a_shorter_text_context_trains_exports_and_loads() {
    let arch = ToyArch {
        text_positions: 16,
        ..tiny_arch()
    };
    let device = Default::default();
    let root = temp_dir("toyworld-context");
    let plan = TrainPlan {
        arch: arch.clone(),
        vae: VaeTrainConfig {
            crop_steps: 1,
            full_steps: 1,
            crop_batch: 2,
            full_batch: 2,
            ..VaeTrainConfig::default()
        },
        base: BaseTrainConfig {
            steps: 2,
            batch: 4,
            dataset: 8,
            warmup: 1,
            ..BaseTrainConfig::default()
        },
        work: root.join("work"),
        out: root.join("model"),
        f16: false,
        start: None,
    };
    train_pipeline::<A>(&plan, &device, &mut |_: &str| {}).unwrap();
    assert_eq!(ToyArch::from_model_dir(&plan.out).unwrap(), arch);
    let sd = StableDiffusion::<Cpu>::load(&plan.out, &LoadOptions::default(), &device).unwrap();
    assert_eq!(sd.text_config.max_position_embeddings, 16);
    assert_eq!(sd.tokenizer.max_length(), 16);
    // A prompt longer than the context is cut to it, as at 77.
    let long =
        "an olz drawing of a red striped circle, a blue dotted square and a green ringed triangle";
    assert!(ClipTokenizer::embedded().unwrap().tokens(long).len() > 16);
    let params = GenerateParams {
        prompt: long.into(),
        steps: 1,
        width: 64,
        height: 64,
        ..GenerateParams::default()
    };
    assert_eq!(
        sd.generate_latent(&params, None).unwrap().latent.dims(),
        [1, 4, 16, 16]
    );
    // The same folder with a tokenizer of SD 1.x's 77 tokens: an error naming both lengths.
    let tokenizer = root.join("model").join("tokenizer");
    std::fs::create_dir_all(&tokenizer).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-a/tokenizer");
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture.join(f), tokenizer.join(f)).unwrap();
    }
    let err = StableDiffusion::<Cpu>::load(&plan.out, &LoadOptions::default(), &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("77 tokens") && err.contains("16 positions") && err.contains("model"),
        "{err}"
    );
    // A work folder keeps its context: another one is refused.
    let mut other = plan.clone();
    other.arch.text_positions = 77;
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another architecture"), "{err}");
    // The base phase refuses a training set tokenized for another context.
    let at_77 = fake_latents(&tiny_arch(), 8);
    let (out, _) = train_base_logged(&arch, &tiny_base_config(), &at_77, &root.join("work-77"));
    let err = out.err().unwrap().to_string();
    assert!(
        err.contains("reads 16 tokens") && err.contains("616 ids for 8 captions"),
        "{err}"
    );
}

#[test]
fn short_pipeline_run_exports_a_loadable_model_and_resumes() {
    let arch = tiny_arch();
    let device = Default::default();
    let root = temp_dir("toyworld-pipeline");
    let mut plan = TrainPlan {
        arch: arch.clone(),
        vae: VaeTrainConfig {
            crop_steps: 3,
            full_steps: 1,
            crop_batch: 4,
            full_batch: 2,
            checkpoint_every: 2,
            ..VaeTrainConfig::default()
        },
        base: BaseTrainConfig {
            steps: 3,
            batch: 4,
            dataset: 16,
            warmup: 2,
            checkpoint_every: 2,
            ..BaseTrainConfig::default()
        },
        work: root.join("work"),
        out: root.join("model"),
        f16: true,
        start: None,
    };
    let mut lines = Vec::new();
    let report =
        train_pipeline::<A>(&plan, &device, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert!(report.vae.scaling_factor.is_finite() && report.vae.scaling_factor > 0.0);
    let sd = StableDiffusion::<Cpu>::load(&plan.out, &LoadOptions::default(), &device).unwrap();
    assert_eq!(sd.vae_scale_factor(), 4);
    assert!((sd.vae_config.scaling_factor - report.vae.scaling_factor).abs() < 1e-9);
    let params = GenerateParams {
        prompt: "a red circle".into(),
        steps: 2,
        width: 64,
        height: 64,
        ..GenerateParams::default()
    };
    let latent = sd.generate_latent(&params, None).unwrap().latent;
    assert_eq!(latent.dims(), [1, 4, 16, 16]);
    assert_eq!(sd.decode_latent(latent).unwrap().dims(), [1, 3, 64, 64]);
    // More steps: the base phase resumes from its checkpoint instead of starting over.
    plan.base.steps = 5;
    lines.clear();
    train_pipeline::<A>(&plan, &device, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("base: resuming at step 3/5")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("vae ")),
        "the finished VAE was trained again: {lines:?}"
    );
    let state = PhaseState::load(&plan.work, "base").unwrap().unwrap();
    assert_eq!((state.step, state.done), (5, true));
    // The work folder records the architecture, the model folder describes it, and the weight average is
    // what was exported.
    assert_eq!(
        ToyArch::of_work_folder(&plan.work).unwrap(),
        Some(arch.clone())
    );
    assert_eq!(ToyArch::from_model_dir(&plan.out).unwrap(), arch);
    let exported = WeightStore::open_component(
        &plan.out.join("unet"),
        &["diffusion_pytorch_model.safetensors"],
    )
    .unwrap();
    let averaged = WeightStore::open_component(
        &plan.work.join("base_ema").join("unet"),
        &["diffusion_pytorch_model.safetensors"],
    )
    .unwrap();
    let last = WeightStore::open_component(
        &plan.work.join("base").join("unet"),
        &["diffusion_pytorch_model.safetensors"],
    )
    .unwrap();
    let key = "conv_in.weight";
    let value = |s: &WeightStore| s.read_f32(key).unwrap().0;
    let f16 = |v: Vec<f32>| -> Vec<f32> {
        v.into_iter()
            .map(|x| half::f16::from_f32(x).to_f32())
            .collect()
    };
    assert_eq!(value(&exported), f16(value(&averaged)));
    assert_ne!(value(&averaged), value(&last));
    // Input scaling: the diffusion's latents (and the exported scaling factor) are the VAE's times the scale.
    let mut scaled = plan.clone();
    scaled.work = root.join("work-scaled");
    scaled.out = root.join("model-scaled");
    scaled.base.latent_scale = 0.5;
    lines.clear();
    let scaled_vae =
        train_pipeline::<A>(&scaled, &device, &mut |l: &str| lines.push(l.to_string()))
            .unwrap()
            .vae;
    let sf = scaled_vae.scaling_factor * 0.5;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("latent scale 0.5 (scaling factor {sf:.4})"))),
        "{lines:?}"
    );
    let sd = StableDiffusion::<Cpu>::load(&scaled.out, &LoadOptions::default(), &device).unwrap();
    assert!((sd.vae_config.scaling_factor - sf).abs() < 1e-9);
    // A work folder refuses to resume with another architecture.
    let mut other = plan.clone();
    other.arch.unet_cross_attention = vec![true, true, false];
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("another architecture"), "{err}");

    // A new work folder started from the exported model trains its text encoder and UNet further from the
    // model's weights (at the step they stand for) and keeps its VAE.
    let mut seeded = plan.clone();
    seeded.work = root.join("work-seeded");
    seeded.out = root.join("model-seeded");
    seeded.base.steps = 7;
    seeded.start = Some(ModelStart {
        model: plan.out.clone(),
        step: 5,
    });
    lines.clear();
    train_pipeline::<A>(&seeded, &device, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("started from")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("base: resuming at step 5/7")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("vae ")), "{lines:?}");
    let unet_of = |dir: &std::path::Path| {
        WeightStore::open_component(&dir.join("unet"), &["diffusion_pytorch_model.safetensors"])
            .unwrap()
            .read_f32(key)
            .unwrap()
            .0
    };
    let vae_of = |dir: &std::path::Path| {
        WeightStore::open_component(&dir.join("vae"), &["diffusion_pytorch_model.safetensors"])
            .unwrap()
            .read_f32("encoder.conv_in.weight")
            .unwrap()
            .0
    };
    assert_eq!(vae_of(&seeded.out), vae_of(&plan.out));
    // The seeded checkpoint held the model's weights exactly; 2 more steps moved them.
    assert_ne!(unet_of(&seeded.out), unet_of(&plan.out));
    assert_eq!(
        ToyArch::from_model_dir(&seeded.out).unwrap(),
        ToyArch::from_model_dir(&plan.out).unwrap()
    );
    let sd = StableDiffusion::<Cpu>::load(&seeded.out, &LoadOptions::default(), &device).unwrap();
    assert!((sd.vae_config.scaling_factor - report.vae.scaling_factor).abs() < 1e-6);
    let state = PhaseState::load(&seeded.work, "base").unwrap().unwrap();
    assert_eq!((state.step, state.done), (7, true));
    // The same command again finds the seeded folder finished instead of seeding it over.
    lines.clear();
    train_pipeline::<A>(&seeded, &device, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert!(
        !lines.iter().any(|l| l.contains("started from")),
        "{lines:?}"
    );
    // Another start on that folder, a start on a folder that holds a training, a start past the phase's
    // end and a model of another architecture are refused.
    let mut other = seeded.clone();
    other.start = Some(ModelStart {
        model: plan.out.clone(),
        step: 4,
    });
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("was started from"), "{err}");
    let mut other = plan.clone();
    other.base.steps = 9;
    other.start = seeded.start.clone();
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(
        err.to_string().contains("already holds a training"),
        "{err}"
    );
    let mut other = seeded.clone();
    other.work = root.join("work-seeded-2");
    other.base.steps = 5;
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("ask for more"), "{err}");
    let mut other = seeded.clone();
    other.work = root.join("work-seeded-4");
    other.start = Some(ModelStart {
        model: root.join("no-such-model"),
        step: 5,
    });
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(err.to_string().contains("no-such-model"), "{err}");
    let mut other = seeded.clone();
    other.work = root.join("work-seeded-3");
    other.arch.text_layers = 2;
    let err = train_pipeline::<A>(&other, &device, &mut |_: &str| {}).unwrap_err();
    assert!(
        err.to_string().contains("architecture") && err.to_string().contains("model"),
        "{err}"
    );
    assert!(!other.work.join("base").exists());
    // A larger architecture grows from the model (cross-attention at every level, two transformer layers),
    // here at step 0 of a new schedule: one step from the model's weights, not from random ones.
    let mut other = seeded.clone();
    other.work = root.join("work-grown");
    other.out = root.join("model-grown");
    other.arch.unet_cross_attention = vec![true, true, true];
    other.arch.unet_transformer_layers = 2;
    other.start = Some(ModelStart {
        model: plan.out.clone(),
        step: 0,
    });
    other.base.steps = 1;
    // Another seed: random weights would be far from the model's (the same seed drew the model's start).
    other.base.seed += 1;
    lines.clear();
    train_pipeline::<A>(&other, &device, &mut |l: &str| lines.push(l.to_string())).unwrap();
    assert!(lines.iter().any(|l| l.contains("grown by")), "{lines:?}");
    assert_eq!(ToyArch::from_model_dir(&other.out).unwrap(), other.arch);
    let moved = unet_of(&other.out)
        .iter()
        .zip(unet_of(&plan.out))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved < 5e-3, "one step moved `{key}` by {moved}");
    StableDiffusion::<Cpu>::load(&other.out, &LoadOptions::default(), &device).unwrap();

    // LoRAs on that model, in both layouts: they load with every key matched and change the output.
    let cfg = LoraTrainConfig {
        steps: 3,
        batch: 3,
        prior_rows: 1,
        concept_scenes: 4,
        prior_scenes: 4,
        lr: 5e-2,
        ..LoraTrainConfig::default()
    };
    let base_latent = {
        // The folder now holds the 5-step model: load it afresh.
        let sd = StableDiffusion::<Cpu>::load(&plan.out, &LoadOptions::default(), &device).unwrap();
        let params = GenerateParams {
            prompt: "a dtz circle".into(),
            steps: 2,
            width: 64,
            height: 64,
            ..GenerateParams::default()
        };
        sd.generate_latent(&params, None).unwrap().latent
    };
    // the kohya file in f16 (`--f16`), the PEFT one in f32
    for (layout, marker, f16) in [
        (LoraLayout::Peft, ".lora_A.weight", false),
        (LoraLayout::Kohya, ".lora_down.weight", true),
    ] {
        let out = root.join(format!("dots-{layout:?}.safetensors"));
        let o = train_lora::<A>(
            &arch,
            &plan.out,
            Concept::Dots,
            &LoraTrainConfig { f16, ..cfg.clone() },
            layout,
            &out,
            &plan.work,
            &device,
            &mut |_| {},
        )
        .unwrap();
        assert!(o.final_loss.is_finite() && o.layers > 0, "{o:?}");
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let want = if f16 {
            safetensors::Dtype::F16
        } else {
            safetensors::Dtype::F32
        };
        assert!(
            st.tensors().iter().all(|(_, t)| t.dtype() == want),
            "{layout:?}"
        );
        let file = LoraFile::open(&out).unwrap();
        assert_eq!(file.modules.len(), o.layers);
        // The resnets' 3x3 convolutions are adapted too (LoCon), with 4-d factors.
        let convs: Vec<_> = file
            .modules
            .iter()
            .filter(|m| m.down.key.contains("resnets"))
            .collect();
        assert!(!convs.is_empty(), "{layout:?}: no resnet conv adapters");
        assert!(
            convs
                .iter()
                .all(|m| m.down.shape.len() == 4 && m.down.shape[2] == 3),
            "{layout:?}: {:?}",
            convs.iter().map(|m| &m.down.shape).collect::<Vec<_>>()
        );
        assert!(file.modules.iter().all(|m| m.down.key.ends_with(marker)));
        let mut with =
            StableDiffusion::<Cpu>::load(&plan.out, &LoadOptions::default(), &device).unwrap();
        let load = with.add_lora("dots", &file, 1.0, Unmatched::Error).unwrap();
        assert_eq!(load.layers.iter().sum::<usize>(), o.layers);
        assert!(load.layers[0] > 0 && load.layers[1] > 0, "{load:?}");
        let params = GenerateParams {
            prompt: "a dtz circle".into(),
            steps: 2,
            width: 64,
            height: 64,
            ..GenerateParams::default()
        };
        let latent = with.generate_latent(&params, None).unwrap().latent;
        let diff = (latent - base_latent.clone())
            .abs()
            .max()
            .into_scalar()
            .elem::<f32>();
        assert!(
            diff > 1e-4,
            "{layout:?}: the LoRA left the latent unchanged ({diff})"
        );
    }
    // `--companions`: the subject among plain objects, captions shuffled; more than two is refused up front.
    let rings_among = |companions: usize| {
        let out = root.join(format!("rings-{companions}.safetensors"));
        let cfg = LoraTrainConfig {
            companions,
            ..cfg.clone()
        };
        let outcome = train_lora::<A>(
            &arch,
            &plan.out,
            Concept::Rings,
            &cfg,
            LoraLayout::Peft,
            &out,
            &plan.work,
            &device,
            &mut |_| {},
        );
        (outcome, out)
    };
    let (o, out) = rings_among(2);
    let o = o.unwrap();
    assert!(o.final_loss.is_finite() && out.is_file(), "{o:?}");
    let (err, refused) = rings_among(3);
    let err = err.unwrap_err();
    assert!(err.to_string().contains("companions 3"), "{err}");
    assert!(!refused.exists());

    // Checkpoints every step and the choice among them by the oracle on held-out seeds: each is scored, the
    // best (ties: the latest) ends up in the output file, and a later training removes the earlier's files.
    let out = root.join("stripes.safetensors");
    let mut lines = Vec::new();
    let o = train_lora::<A>(
        &arch,
        &plan.out,
        Concept::Stripes,
        &LoraTrainConfig {
            select_every: 1,
            select_seeds: 1,
            ..cfg.clone()
        },
        LoraLayout::Kohya,
        &out,
        &plan.work,
        &device,
        &mut |l: &str| lines.push(l.to_string()),
    )
    .unwrap();
    let steps: Vec<usize> = o.selection.iter().map(|s| s.checkpoint.step).collect();
    assert_eq!(steps, [1, 2, 3]);
    assert!(
        o.selection.iter().all(|s| s.images == 1 && s.matched <= 1),
        "{o:?}"
    );
    let chosen = best(&o.selection).unwrap();
    assert_eq!(o.kept_step, chosen.checkpoint.step);
    let paths: Vec<_> = (1..=3)
        .map(|step| checkpoint_path(&plan.work, Concept::Stripes, step))
        .collect();
    assert!(o
        .selection
        .iter()
        .zip(&paths)
        .all(|(s, p)| &s.checkpoint.path == p));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("match their prompt"))
            .count(),
        3,
        "{lines:?}"
    );
    assert_eq!(
        std::fs::read(&chosen.checkpoint.path).unwrap(),
        std::fs::read(&out).unwrap()
    );
    assert_ne!(
        std::fs::read(&paths[0]).unwrap(),
        std::fs::read(&paths[2]).unwrap()
    );
    LoraFile::open(&out).unwrap();
    train_lora::<A>(
        &arch,
        &plan.out,
        Concept::Stripes,
        &cfg,
        LoraLayout::Kohya,
        &out,
        &plan.work,
        &device,
        &mut |_| {},
    )
    .unwrap();
    assert!(!checkpoint_path(&plan.work, Concept::Stripes, 1).exists());

    // Decoder fine-tuning: the encoder (and so the latents the base model and LoRAs know) stays bit for bit,
    // the decoder changes, every other file is copied, and the folder loads.
    let tuned = root.join("model-decoder");
    let dcfg = DecoderTrainConfig {
        steps: 2,
        batch: 1,
        lr: 1e-2,
        checkpoint_every: 1,
        ..DecoderTrainConfig::default()
    };
    let o = train_decoder::<A>(
        &arch,
        &plan.out,
        &tuned,
        &dcfg,
        &plan.work,
        false,
        &device,
        &mut |_| {},
    )
    .unwrap();
    assert!(o.final_loss.is_finite(), "{o:?}");
    let vae_of = |m: &std::path::Path| {
        WeightStore::open(&[m.join("vae/diffusion_pytorch_model.safetensors")]).unwrap()
    };
    let (before, after) = (vae_of(&plan.out), vae_of(&tuned));
    let mut changed = 0;
    for key in before.keys() {
        let same = before.read_f32(key).unwrap() == after.read_f32(key).unwrap();
        if key.starts_with("encoder.") || key.starts_with("quant_conv.") {
            assert!(same, "{key} changed");
        } else if !same {
            changed += 1;
        }
    }
    assert!(changed > 0, "no decoder weight changed");
    for file in [
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
    ] {
        assert_eq!(
            std::fs::read(plan.out.join(file)).unwrap(),
            std::fs::read(tuned.join(file)).unwrap(),
            "{file}"
        );
    }
    StableDiffusion::<Cpu>::load(&tuned, &LoadOptions::default(), &device).unwrap();
}

/// Every tensor of a safetensors file as f32 values, by name.
fn f32_tensors(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            (name, decode_f32(view.data(), view.dtype()).unwrap())
        })
        .collect()
}

#[test]
fn adam_beta2_reaches_the_base_phase() {
    let arch = tiny_arch();
    let data = fake_latents(&arch, 8);
    let root = temp_dir("toyworld-beta2");
    let steps = tiny_base_config().steps;
    let run = |beta2: f64, beta2_steps: Option<usize>| {
        let work = root.join(format!("beta2-{beta2}-{beta2_steps:?}"));
        std::fs::create_dir_all(&work).unwrap();
        let cfg = BaseTrainConfig {
            adam_beta2: beta2,
            adam_beta2_steps: beta2_steps,
            ..tiny_base_config()
        };
        let (outcome, lines) = train_base_logged(&arch, &cfg, &data, &work);
        outcome.unwrap();
        let unet =
            f32_tensors(&checkpoint_dir(&work).join("unet/diffusion_pytorch_model.safetensors"));
        (unet, lines)
    };
    let (default_unet, default_lines) = run(0.999, None);
    let (unet, lines) = run(0.99, None);
    assert!(
        !default_lines.iter().any(|l| l.contains("beta2")),
        "{default_lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "base: Adam beta2 0.99"),
        "{lines:?}"
    );
    // Adam's first step is the same for any beta2 (the bias correction), the later ones are not.
    let w = "conv_in.weight";
    assert_ne!(unet[w], default_unet[w]);
    // 0.99 for every step of the run: the same weights as without a limit.
    let (all_steps, _) = run(0.99, Some(steps));
    assert_eq!(all_steps[w], unet[w]);
    // 0.99 for the first step only: neither run's weights.
    let (first_step, lines) = run(0.99, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l == "base: Adam beta2 0.99 for steps 0..1, then 0.999"),
        "{lines:?}"
    );
    assert_ne!(first_step[w], unet[w]);
    assert_ne!(first_step[w], default_unet[w]);
}

#[test]
fn compact_token_embeddings_train_the_same_weights() {
    let arch = tiny_arch();
    let device = Default::default();
    let data = fake_latents(&arch, 8);
    let tok = ClipTokenizer::embedded().unwrap();
    let root = temp_dir("toyworld-vocab");
    let run = |compact: bool| {
        let work = root.join(if compact { "compact" } else { "whole" });
        std::fs::create_dir_all(&work).unwrap();
        let cfg = BaseTrainConfig {
            checkpoint_every: 2,
            compact_vocab: compact,
            ..tiny_base_config()
        };
        train_base_logged(&arch, &cfg, &data, &work).0.unwrap();
        work
    };
    let (compact, whole) = (run(true), run(false));
    let emb = "text_model.embeddings.token_embedding.weight";
    let used: std::collections::BTreeSet<usize> = data
        .ids
        .iter()
        .chain(&tok.encode(""))
        .map(|&i| i as usize)
        .collect();
    let d = arch.text_hidden;
    for (dir_of, file) in [
        (
            checkpoint_dir as fn(&std::path::Path) -> std::path::PathBuf,
            "text_encoder/model.safetensors",
        ),
        (checkpoint_dir, "unet/diffusion_pytorch_model.safetensors"),
        (ema_dir, "text_encoder/model.safetensors"),
        (ema_dir, "unet/diffusion_pytorch_model.safetensors"),
    ] {
        let a = f32_tensors(&dir_of(&compact).join(file));
        let b = f32_tensors(&dir_of(&whole).join(file));
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{file}"
        );
        for (name, x) in &a {
            let y = &b[name];
            assert_eq!(x.len(), y.len(), "{file}: {name}");
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "{file}: {name} differs by {worst}");
        }
    }
    // Used rows trained; every other row of the compact run's table is its initial value, bit for bit.
    let init: Vec<f32> = TextUnet::<Cpu>::random(&arch, BaseTrainConfig::default().seed, &device)
        .unwrap()
        .text_encoder
        .token_embedding
        .weight
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let table = &f32_tensors(&checkpoint_dir(&compact).join("text_encoder/model.safetensors"))[emb];
    assert_eq!(table.len(), init.len());
    let moved: Vec<usize> = (0..table.len() / d)
        .filter(|&row| table[row * d..(row + 1) * d] != init[row * d..(row + 1) * d])
        .collect();
    // (A used token moves once a batch has drawn a caption with it.)
    assert!(!moved.is_empty(), "no token embedding trained");
    assert!(
        moved.iter().all(|row| used.contains(row)),
        "unused tokens moved: {moved:?}"
    );
}

/// A training set of real scenes and captions (seeds `TRAIN_SEED_BASE + i`, as the cache) with random latents.
fn scene_latents(arch: &ToyArch, world: &PlainWorld, n: usize) -> LatentSet {
    let captions: Vec<String> = (0..n as u64)
        .map(|i| {
            let scene = world.sample(TRAIN_SEED_BASE + i).unwrap();
            training_caption(&scene, i, BARE_RATE, CaptionOrder::LeftToRight)
        })
        .collect();
    captioned_latents(arch, captions, 9)
}

#[test]
fn token_attention_loss_trains_the_cross_attention_and_runs_in_the_base_phase() {
    let arch = tiny_arch();
    let device = Default::default();
    let world = PlainWorld {
        object_counts: [0.0, 0.5, 0.5],
        ..PlainWorld::default()
    };
    let data = scene_latents(&arch, &world, 8);
    let tok = ClipTokenizer::embedded().unwrap();
    let grid = arch.finest_attention_side().unwrap();
    assert_eq!(grid, arch.latent_size() / 2);
    let grounding = Grounding::of_training_set(
        &world,
        &data.captions,
        CaptionOrder::LeftToRight,
        &tok,
        grid,
    )
    .unwrap();
    let batch = fixed_batch(&arch, &data, 5, &device);
    let mut model = TextUnet::<A>::random(&arch, 7, &device).unwrap();
    let mut optim = AdamConfig::new().init::<A, TextUnet<A>>();
    let mut losses = Vec::new();
    for _ in 0..15 {
        let b = batch();
        let rows = b.captioned.clone();
        assert!(rows.iter().all(|r| r.is_some()), "no caption dropout here");
        let mut probe = AttentionProbe::at_query_len(grid * grid);
        weighted_epsilon_loss_probed(&model, b, None, &mut probe).unwrap();
        // The finest level's cross-attention layers: down, and two in the up block.
        assert_eq!(probe.maps.len(), 3);
        let loss = grounded_token_loss(&grounding, &rows, &probe.maps, &device);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    eprintln!("token-attention losses: {losses:?}");
    assert!(losses[0] > 0.3, "{losses:?}");
    assert!(losses[14] < 0.7 * losses[0], "{losses:?}");

    // In the base phase: trained with the epsilon loss, reported on its log lines.
    let work = temp_dir("toyworld-token-attention");
    let cfg = BaseTrainConfig {
        world,
        token_attention_weight: 0.5,
        ..tiny_base_config()
    };
    let (outcome, lines) = train_base_logged(&arch, &cfg, &data, &work);
    assert!(outcome.unwrap().final_loss.is_finite());
    assert!(
        lines.iter().any(|l| l.contains("8 captions grounded")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("base 4/4") && l.contains("token-attention loss")),
        "{lines:?}"
    );
    // Another world's scenes are not these captions' scenes.
    let other = BaseTrainConfig {
        world: PlainWorld::default(),
        ..cfg
    };
    std::fs::remove_dir_all(&work).ok();
    std::fs::create_dir_all(&work).unwrap();
    let err = train_base_logged(&arch, &other, &data, &work)
        .0
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not its scene's"), "{err}");
}
