#!/usr/bin/env python3
"""Whose mask holds each concept's object: for the CLoRA images of a `harness run` folder saved with
`save_attention = true`, the share of the cells under each concept's object that each branch's mask holds, at
a few denoising steps, averaged over the images.

The object is the one the oracle reads (`harness toyworld read`) in the final image with the concept's class
noun as its shape (the first, where there are several); its cells are the attention-map cells its bounding box
touches (8x8 maps of 8-pixel cells on the toyworld). Images without such an object are left out (counted in
`n`). docs/toyworld.md ("Why CLoRA fails on the committed model") reads the `stripes` square this way: held by
its own branch at the first steps in one order of the prompt, by the `dots` branch in the other.

Usage (Python 3 with NumPy; never needed by CI):
  mask_shares.py RUN [--harness PATH] [--steps 0,4,8,14]
Prints a Markdown table: one row per (method, prompt set, concept), with the images that hold its object and,
per step, each branch's share of the object's cells (base branch included; shares of disjoint masks add to 1).
"""
import argparse
import collections
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

BOX = re.compile(r"[\w?]+ [\w?]+ (\w+)(?: outline)? at \((\d+), (\d+), (\d+), (\d+)\)")


def load_safetensors(path: Path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, v in header.items():
        if key == "__metadata__":
            continue
        if v["dtype"] != "F32":
            sys.exit(f"{path}: {key} is {v['dtype']}, expected F32")
        s, e = v["data_offsets"]
        out[key] = np.frombuffer(raw[8 + n + s : 8 + n + e], dtype=np.float32).reshape(v["shape"])
    return out


def boxes(harness: str, image: Path):
    try:
        out = subprocess.run([harness, "toyworld", "read", str(image)], capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(f"{harness}: not found (give the binary with --harness)")
    if out.returncode != 0:
        sys.exit(f"{harness} toyworld read failed: {out.stderr.strip()}")
    found = {}
    for shape, *bbox in BOX.findall(out.stdout):
        found.setdefault(shape, tuple(map(int, bbox)))
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--harness", default="harness")
    p.add_argument("--steps", default="0,4,8,14")
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    shares = collections.defaultdict(list)  # (method, set, concept) -> [per image: {(step, branch): share}]
    counts = collections.Counter()
    branches_of = {}
    for side in sorted((args.run / "images").glob("*.json")):
        if side.name.endswith(".error.json"):
            continue
        s = json.loads(side.read_text())
        clora = s.get("details", {}).get("clora")
        files = [f for f in s.get("details", {}).get("attention_files", []) if f.endswith(".safetensors")]
        if not clora or not files:
            continue
        job = s["job"]
        # the sidecar names it from where `harness run` ran: take it from the run folder's `artifacts/` on
        parts = Path(files[0]).parts
        att = load_safetensors(args.run.joinpath(*parts[parts.index("artifacts") :]))
        masks = att["masks"]  # [S, N, h, w]
        _, n_branch, h, w = masks.shape
        found = boxes(args.harness, args.run / s["image"])
        cell_h, cell_w = s["height"] // h, s["width"] // w
        branches = clora["branches"]
        for lora in job["loras"]:
            key = (job["method"], job["prompt"]["set"], lora["name"])
            branches_of[key] = branches
            counts[key] += 1
            box = found.get(lora["class_noun"])
            if box is None:
                continue
            x0, y0, x1, y1 = box
            cells = np.zeros((h, w), bool)
            cells[y0 // cell_h : y1 // cell_h + 1, x0 // cell_w : x1 // cell_w + 1] = True
            shares[key].append(
                {(t, b): float(masks[t, b][cells].mean()) for t in steps if t < len(masks) for b in range(n_branch)}
            )
    if not counts:
        sys.exit(f"{args.run}: no CLoRA image with saved attention (set `save_attention = true`)")
    print("| method | prompt set | concept | images with its object | " + " | ".join(f"step {t}" for t in steps) + " |")
    print("|" + " --- |" * (4 + len(steps)))
    for key in sorted(counts):
        rows = shares[key]
        cells = []
        for t in steps:
            if not rows or (t, 0) not in rows[0]:
                cells.append("–")
                continue
            cells.append(
                ", ".join(f"{b} {np.mean([r[(t, i)] for r in rows]):.2f}" for i, b in enumerate(branches_of[key]))
            )
        method, prompt_set, concept = key
        print(f"| {method} | {prompt_set} | {concept} | {len(rows)} of {counts[key]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
