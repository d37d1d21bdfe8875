#!/usr/bin/env python3
"""Which words' attention finds each concept's object: for the CLoRA images of a `harness run` folder made with
`mask_mode = "layout"` and `save_attention = true`, the layout pass's base-branch maps (`layout_maps` in the
image's attention.safetensors) are scored against the objects of the base image of the same prompt and seed (the
`base` method's image in the same run: the layout pass samples exactly that; put a `base` row in the config).

For each token offset from the class noun (0 the noun, its last BPE piece; 1 the token after it; -1 the one
before), and for the maps averaged over all steps and at single steps, every concept is given one object of the
base image, one to one, maximising the summed attention (each token's map scaled by its maximum, averaged over
the object's cells: the rule of src/methods/clora/layout.rs), and the script counts the objects given to the
concept whose class noun the oracle reads as their shape. Images where a class noun's shape is not drawn exactly
once are left out. docs/toyworld.md ("Three concepts: masks from a layout pass") reads the toyworld model's
nouns this way: the token after the noun finds its object, the noun only in part.

Usage (Python 3 with NumPy; never needed by CI):
  layout_words.py RUN [--harness PATH] [--offsets -1,0,1] [--steps 0,3,6,9,12,15,18,21,24,27]
Prints a Markdown table: one row per (prompt set, offset), the objects and the images matched right.
"""
import argparse
import collections
import itertools
import sys
from pathlib import Path

import numpy as np
from mask_shares import load_safetensors
from run_folder import objects, oracle_read, sidecars


def match(score):
    """The one-to-one assignment (concept -> object) maximising the summed score[concept][object]."""
    n = len(score)
    return max(itertools.permutations(range(n)), key=lambda p: sum(score[g][p[g]] for g in range(n)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--harness", default="harness")
    p.add_argument("--offsets", default="-1,0,1")
    p.add_argument("--steps", default="0,3,6,9,12,15,18,21,24,27")
    args = p.parse_args()
    offsets = [int(o) for o in args.offsets.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    # every layout variant of one prompt and seed runs the same pass: one image of each is read
    base, layout = {}, {}
    for s in sidecars(args.run):
        job = s["job"]
        key = (job["prompt"]["set"], job["prompt"]["index"], job["seed"], job.get("sample", 0))
        if job["method"] == "base":
            base[key] = s
        elif (s.get("details", {}).get("clora") or {}).get("layout_words"):
            layout.setdefault(key, s)
    layout = [(k, s) for k, s in sorted(layout.items()) if k in base]
    if not layout:
        sys.exit(f"{args.run}: no layout CLoRA image with a base image of the same prompt and seed")
    readings = oracle_read(args.harness, [args.run / base[k]["image"] for k, _ in layout])
    right = collections.Counter()  # (set, offset, "all" or step) -> objects right
    whole = collections.Counter()  # the same -> images wholly right
    seen = collections.Counter()  # (set) -> (images, objects)
    for (key, s), reading in zip(layout, readings):
        job = s["job"]
        clora = s["details"]["clora"]
        att_name = Path([f for f in s["details"]["attention_files"] if f.endswith(".safetensors")][0]).name
        maps = load_safetensors(args.run / "artifacts" / s["hash"] / att_name)["layout_maps"]  # [S, q, 77]
        side = int(round(maps.shape[1] ** 0.5))
        cell = 64 // side  # `toyworld read` boxes are in 64x64 pixels
        found = collections.defaultdict(list)
        for _, _, shape, _, box in objects(reading):
            found[shape].append(box)
        cells = []
        for lora in job["loras"]:
            boxes = found.get(lora["class_noun"], [])
            if len(boxes) != 1:
                break
            x0, y0, x1, y1 = boxes[0]
            c = np.zeros((side, side), bool)
            c[y0 // cell : y1 // cell + 1, x0 // cell : x1 // cell + 1] = True
            cells.append(c.reshape(-1))
        if len(cells) != len(job["loras"]):
            continue
        # the class noun's last piece: the layout's words are the noun, or the token after it
        after = job["params"].get("mask_words") == "after_noun"
        nouns = [max(w) - 1 if after else max(w) for w in clora["layout_words"]]
        ps = job["prompt"]["set"]
        seen[(ps, "images")] += 1
        seen[(ps, "objects")] += len(cells)
        for off, when in itertools.product(offsets, ["all"] + steps):
            m = maps.mean(0) if when == "all" else maps[when]
            score = []
            for n in nouns:
                a = m[:, n + off]
                a = a / a.max() if a.max() > 0 else a
                score.append([a[c].mean() for c in cells])
            got = match(score)
            ok = sum(got[g] == g for g in range(len(cells)))
            right[(ps, off, when)] += ok
            whole[(ps, off, when)] += ok == len(cells)
    cols = ["all"] + steps
    print("| prompt set | offset | " + " | ".join("all steps" if c == "all" else f"step {c}" for c in cols) + " |")
    print("|" + " --- |" * (2 + len(cols)))
    for ps in sorted({k[0] for k in seen}):
        n_obj, n_img = seen[(ps, "objects")], seen[(ps, "images")]
        for off in offsets:
            vals = [f"{right[(ps, off, c)]}/{n_obj} ({whole[(ps, off, c)]}/{n_img})" for c in cols]
            print(f"| {ps} | {off:+d} | " + " | ".join(vals) + " |")
    print("\nobjects given to their own concept (images with every object right)")


if __name__ == "__main__":
    main()
