#!/usr/bin/env python3
"""PyTorch CPU baseline for one UNet forward pass (to compare with the Rust/burn port).

Builds diffusers' UNet2DConditionModel with random weights (no download) for
  * sd15   : the full Stable Diffusion 1.5 UNet config (~860M parameters, ~3.4 GB in f32)
  * tiny-a : the tiny fixture config from tools/fixtures/tiny_configs.py
and times `unet(sample, t, encoder_hidden_states)` in fp32 under torch.no_grad():
batch 2 (one CFG pair), latent 64x64 (512x512 pixels) by default, 1 warm-up + N timed runs.

    /root/.venvs/fixtures/bin/python tools/bench/unet_torch.py --model tiny-a --runs 5
    /root/.venvs/fixtures/bin/python tools/bench/unet_torch.py --model sd15 --runs 3 --threads 2

Prints one line per model: `unet_torch model=... threads=... batch=... latent=... runs=... mean_s=... min_s=...`
(and a JSON object with --json). The full-size model is slow on 2 cores (tens of seconds per forward).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))

# Stable Diffusion 1.5 UNet (runwayml/stable-diffusion-v1-5 unet/config.json), written out inline.
SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,  # SD 1.x quirk: number of heads (head dim = channels / 8)
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def model_config(name):
    if name == "sd15":
        return dict(SD15_UNET_CONFIG)
    from tiny_configs import CONFIGS

    return dict(CONFIGS[name]["unet"])


def bench(name, args):
    from diffusers import UNet2DConditionModel

    cfg = model_config(name)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**cfg).eval().to(torch.float32)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in unet.parameters())
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(args.batch, cfg["in_channels"], args.latent, args.latent, generator=g)
    ehs = torch.randn(args.batch, 77, cfg["cross_attention_dim"], generator=g)
    timesteps = [981, 500, 1]
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            t = torch.tensor(timesteps[i % len(timesteps)], dtype=torch.int64)
            t0 = time.perf_counter()
            out = unet(sample, t, encoder_hidden_states=ehs).sample
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
            if args.verbose:
                print(f"  {name} run {i} ({'warm-up' if i < args.warmup else 'timed'}): {dt:.3f}s", flush=True)
    assert out.shape == sample.shape and torch.isfinite(out).all()
    res = {
        "model": name,
        "params": n_params,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "latent": args.latent,
        "warmup": args.warmup,
        "runs": args.runs,
        "mean_s": statistics.mean(times),
        "min_s": min(times),
        "build_s": build_s,
        "torch": torch.__version__,
    }
    print(
        f"unet_torch model={name} params={n_params} threads={res['threads']} batch={args.batch} "
        f"latent={args.latent} runs={args.runs} mean_s={res['mean_s']:.4f} min_s={res['min_s']:.4f}",
        flush=True,
    )
    if args.json:
        print(json.dumps(res))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["sd15", "tiny-a", "tiny-b", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--latent", type=int, default=64, help="latent height = width (64 -> 512x512 pixels)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = ["tiny-a", "sd15"] if args.model == "all" else [args.model]
    for m in models:
        bench(m, args)


if __name__ == "__main__":
    main()
