#!/usr/bin/env python3
"""PyTorch eager baseline for one toyworld base training step (to compare with `harness toyworld train`).

Builds the committed toyworld model's text encoder (transformers' CLIPTextModel) and UNet (diffusers'
UNet2DConditionModel) from the configs in assets/toyworld/model with random weights (no download), and times
the step the base training runs: text encoder on 77 tokens, UNet on `[batch, 4, 16, 16]` noisy latents, mean
squared error, backward, Adam (fused) and the weight average (EMA 0.999). The Rust side's step time is in its
training log (`s/step`; docs/toyworld.md, "The step against PyTorch's").

    OMP_NUM_THREADS=2 python tools/bench/toyworld_step_torch.py --threads 2 --batch 16
    ... --channels-last / --bf16 (CPU autocast) / --sdpa (fused attention) / --tokens 24: variants

Prints one line: `toyworld_step_torch threads=... batch=... tokens=... variant=... steps=... mean_s=...`.
Needs torch, diffusers and transformers (never CI).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from transformers import CLIPTextConfig, CLIPTextModel

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "assets", "toyworld", "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=77, help="text length (the training's is 77)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps, after 10 warm-up steps")
    ap.add_argument("--channels-last", action="store_true", help="UNet and latents in channels-last layout")
    ap.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    ap.add_argument("--sdpa", action="store_true", help="fused scaled-dot-product attention in the UNet")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    with open(os.path.join(MODEL, "unet", "config.json"), encoding="utf-8") as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    unet = UNet2DConditionModel(**cfg)
    unet.set_attn_processor(AttnProcessor2_0() if a.sdpa else AttnProcessor())
    text = CLIPTextModel(CLIPTextConfig.from_json_file(os.path.join(MODEL, "text_encoder", "config.json")))
    if a.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    params = [p for m in (text, unet) for p in m.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)

    side = cfg["sample_size"]
    x0 = torch.randn(a.batch, cfg["in_channels"], side, side)  # clean latents [b, 4, 16, 16]
    eps = torch.randn_like(x0)
    t = torch.randint(0, 1000, (a.batch,))
    ids = torch.randint(0, text.config.vocab_size, (a.batch, a.tokens))
    if a.channels_last:
        x0, eps = (v.contiguous(memory_format=torch.channels_last) for v in (x0, eps))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            context = text(ids).last_hidden_state  # [b, tokens, 64]
            pred = unet(0.7 * x0 + 0.7 * eps, t, context).sample  # epsilon, [b, 4, 16, 16]
        loss = (pred.float() - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1e-3)

    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    mean = (time.perf_counter() - start) / a.steps
    variant = "+".join(n for n, on in (("channels-last", a.channels_last), ("bf16", a.bf16), ("sdpa", a.sdpa)) if on)
    print(
        f"toyworld_step_torch threads={a.threads} batch={a.batch} tokens={a.tokens} "
        f"variant={variant or 'plain'} steps={a.steps} mean_s={mean:.4f}"
    )


if __name__ == "__main__":
    main()
