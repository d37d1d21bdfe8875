#!/usr/bin/env python3
"""Compares two run folders of the same config made on different backends (e.g. `--device cuda` on a GPU
machine against `--device cpu` here), image by image and, for CLoRA, step by step through its saved attention
maps and masks (`save_attention = true`), to find where two backends part.

    python3 tools/gpu/compare_runs.py results/smoke /path/to/cuda/smoke

Images are matched by (variant, prompt set, prompt index, seed, sample) from their sidecars (the file names
are job hashes, which include the backend). Per image: the largest and mean absolute pixel difference (0-255).
Per CLoRA image: its losses update by update (the first comes before any latent update), and for each tensor in `artifacts/<hash>/attention.safetensors` (maps `[steps, branches, cells,
77]`, masks `[steps, branches, h, w]`), the largest difference at each denoising step, and the first step
where it passes --tol. Needs numpy and Pillow.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "U8": np.uint8, "I64": np.int64}


def read_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file (header: u64 length, JSON; then the raw bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = DTYPES.get(meta["dtype"])
        if dtype is None:
            sys.exit(f"{path}: tensor {name} has dtype {meta['dtype']}, which this script does not read")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(meta["shape"]).astype(np.float64)
    return out


def sidecars(run: Path) -> dict:
    """(variant, set, index, seed, sample) -> sidecar of each image in a run folder."""
    found = {}
    images = run / "images"
    if not images.is_dir():
        sys.exit(f"{run}: no images/ folder (expected a run folder such as results/smoke)")
    for f in sorted(images.glob("*.json")):
        d = json.loads(f.read_text())
        j = d["job"]
        key = (j["variant"], j["prompt"]["set"], j["prompt"]["index"], j["seed"], j["sample"])
        found[key] = d
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="run folder A (e.g. the CPU run)")
    ap.add_argument("b", type=Path, help="run folder B (e.g. the cuda run)")
    ap.add_argument("--tol", type=float, default=1e-3, help="a map or mask difference above this counts")
    args = ap.parse_args()
    sa, sb = sidecars(args.a), sidecars(args.b)
    common = sorted(set(sa) & set(sb))
    if not common:
        sys.exit("no image in common (same config and seeds expected)")
    print(f"{len(common)} images in common ({len(sa)} in A, {len(sb)} in B); A: {sa[common[0]]['backend']}, B: {sb[common[0]]['backend']}")
    for key in common:
        da, db = sa[key], sb[key]
        ia = np.asarray(Image.open(args.a / da["image"]), dtype=np.int16)
        ib = np.asarray(Image.open(args.b / db["image"]), dtype=np.int16)
        diff = np.abs(ia - ib)
        line = f"{key[0]:<16} {key[1]}[{key[2]}] seed {key[3]:>3}: pixels max {diff.max():>3}, mean {diff.mean():7.3f}"
        la = (da.get("details") or {}).get("clora", {}).get("losses")
        lb = (db.get("details") or {}).get("clora", {}).get("losses")
        if la and lb and any(la) and any(lb):
            # CLoRA's losses in update order: the first is computed before any update (the forward alone);
            # the later ones follow the latent updates, so where they part tells the update from the forward.
            fa = [v for step in la for v in step]
            fb = [v for step in lb for v in step]
            d = [abs(x - y) for x, y in zip(fa, fb)]
            part = next((i for i, v in enumerate(d) if v > args.tol), None)
            line += f"\n    losses ({len(fa)} updates): first {fa[0]:.6f} vs {fb[0]:.6f}; "
            line += "never part" if part is None else f"first update over {args.tol:g}: {part} ({fa[part]:.6f} vs {fb[part]:.6f})"
            line += "; first six: " + " ".join(f"{x:.4f}/{y:.4f}" for x, y in zip(fa[:6], fb[:6]))
        art_a = args.a / "artifacts" / da["hash"] / "attention.safetensors"
        art_b = args.b / "artifacts" / db["hash"] / "attention.safetensors"
        if art_a.is_file() and art_b.is_file():
            ta, tb = read_safetensors(art_a), read_safetensors(art_b)
            for name in sorted(set(ta) & set(tb)):
                x, y = ta[name], tb[name]
                if x.shape != y.shape:
                    line += f"; {name}: shapes {x.shape} vs {y.shape}"
                    continue
                per_step = np.abs(x - y).reshape(x.shape[0], -1).max(axis=1)
                over = np.nonzero(per_step > args.tol)[0]
                first = f"first step over {args.tol:g}: {over[0]}" if len(over) else "never over tol"
                steps = " ".join(f"{v:.1e}" for v in per_step)
                line += f"\n    {name} {list(x.shape)}: {first}; max per step: {steps}"
        print(line)


if __name__ == "__main__":
    main()
