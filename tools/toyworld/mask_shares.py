#!/usr/bin/env python3
"""Whose mask holds each concept's object: for the CLoRA images of a `harness run` folder saved with
`save_attention = true`, the share of the cells under each concept's object that each branch's mask holds, at
a few denoising steps, averaged over the images.

The object is the one the oracle reads (`harness toyworld read`) in the final image with the concept's class
noun as its shape (the first, where there are several); its cells are the attention-map cells its bounding box
touches (8x8 maps of 8-pixel cells on the toyworld; the oracle reads every image at 64x64). Images without such
an object are left out of that concept's row ("images with its object: X of Y"). Every sidecar in the run's
`images/` is read, those of earlier configs saved under the same run name included: give a new config its own
`[run] name`. docs/toyworld.md ("Why CLoRA fails on the committed model") reads the `stripes` square this way: held by
its own branch at the first steps in one order of the prompt, by the `dots` branch in the other.

Usage (Python 3 with NumPy; never needed by CI):
  mask_shares.py RUN [--harness PATH] [--steps 0,4,8,14] [--tokens STEP]
Prints a Markdown table: one row per (method, prompt set, concept), with the images that hold its object and,
per step, each branch's share of the object's cells (base branch included; shares of disjoint masks add to 1).
With `--tokens STEP`, a second table of what the masks are made from at that step: per (method, prompt set,
branch, mask token), the token's attention map scaled by its maximum (`a / max a`, what both mask rules
compare), its mean over each concept's object, and its flatness (`min a / max a`: near 1, the token attends
everywhere alike and its scaled map is high in every cell).
"""
import argparse
import collections
import json
import struct
import sys
from pathlib import Path

import numpy as np
from run_folder import objects, oracle_read, sidecars


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


def boxes(reading: str):
    """Shape -> bounding box of its first object in one line of the oracle's reading."""
    found = {}
    for _, _, shape, _, bbox in objects(reading):
        found.setdefault(shape, bbox)
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--harness", default="harness")
    p.add_argument("--steps", default="0,4,8,14")
    p.add_argument("--tokens", type=int, metavar="STEP")
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    shares = collections.defaultdict(list)  # (method, set, concept) -> [per image: {(step, branch): share}]
    counts = collections.Counter()
    branches_of = {}
    # (method, set, branch, token) -> [per image: {"flat": .., concept: mean scaled attention on its object}]
    tokens = collections.defaultdict(list)
    # CLoRA images with saved maps: (sidecar, attention file), then the oracle's reading of all of them at once
    with_maps = []
    for s in sidecars(args.run):
        clora = s.get("details", {}).get("clora")
        files = [f for f in s.get("details", {}).get("attention_files", []) if f.endswith(".safetensors")]
        if clora and files:
            with_maps.append((s, Path(files[0]).name))
    readings = oracle_read(args.harness, [args.run / s["image"] for s, _ in with_maps])
    for (s, att_name), reading in zip(with_maps, readings):
        clora = s["details"]["clora"]
        job = s["job"]
        # the sidecar names it from where `harness run` ran; it lies in the run folder's artifacts/<hash>/
        att = load_safetensors(args.run / "artifacts" / s["hash"] / att_name)
        masks = att["masks"]  # [S, N, h, w]
        _, n_branch, h, w = masks.shape
        found = boxes(reading)
        cell_h, cell_w = 64 // h, 64 // w  # `toyworld read` boxes are in 64x64 pixels
        branches = clora["branches"]
        objects = {}  # concept -> its object's cells, flattened like the maps' rows
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
            objects[lora["name"]] = cells.reshape(-1)
            shares[key].append(
                {(t, b): float(masks[t, b][cells].mean()) for t in steps if t < len(masks) for b in range(n_branch)}
            )
        if args.tokens is not None and args.tokens < len(masks):
            maps = att["maps"][args.tokens]  # [N, h*w, 77]
            for b, toks in enumerate(clora["mask_tokens"]):
                for t in toks:
                    a = maps[b, :, t]
                    if a.max() <= 0:
                        continue
                    row = {"flat": float(a.min() / a.max())}
                    row.update({c: float((a / a.max())[cells].mean()) for c, cells in objects.items()})
                    tokens[(job["method"], job["prompt"]["set"], branches[b], t)].append(row)
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
    if args.tokens is not None:
        concepts = sorted({c for rows in tokens.values() for r in rows for c in r if c != "flat"})
        print(f"\nStep {args.tokens}: each mask token's attention scaled by its maximum (mean over images)\n")
        print("| method | prompt set | branch | token | images | flatness | " + " | ".join(f"on {c}" for c in concepts) + " |")
        print("|" + " --- |" * (6 + len(concepts)))
        for (method, prompt_set, branch, t), rows in sorted(tokens.items()):
            vals = [f"{np.mean([r[c] for r in rows if c in r]):.2f}" if any(c in r for r in rows) else "–" for c in concepts]
            flat = np.mean([r["flat"] for r in rows])
            print(f"| {method} | {prompt_set} | {branch} | {t} | {len(rows)} | {flat:.2f} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
