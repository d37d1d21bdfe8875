#!/usr/bin/env python3
"""Where CLoRA's latent update moved the latent, for the CLoRA images of a `harness run` folder saved with
`save_attention = true` (their `attention.safetensors` holds `latent_in`, the latent each step received, and
`latent_shift`, what that step's updates moved it by, both `[steps, c, h, w]`).

Per (method, prompt set), over the images with an update: the size of the shift summed over the steps against
the initial latent's (RMS), the share of its energy on one object's latent cells against the object's area, the
norm of the mean shift over those cells against the norm that the mean of N(0, 1) noise over n cells has by
chance (sqrt(c/n) over c channels), and, with `--toward`/`--away`, the cosine between that mean shift and a
colour direction in the latent: the mean over the object's cells of the latent entering the last step, in the
run's images where the oracle reads the object as `--toward`, minus the same where it reads `--away` (e.g.
"blue plain" minus "purple stripes"). One row sums over a set's prompts, seeds and samples. The object's cells
are those its bounding box touches in the oracle's reading (`harness toyworld read`) of the same prompt, seed
and sample's image made by `--reference` (a method without the update, so the cells are where the object would
have been), or of the image itself when not given. docs/toyworld.md ("Why
CLoRA fails on the committed model") reads the `stripes` square this way.

Usage (Python 3 with NumPy; never needed by CI):
  latent_shift.py RUN --shape square [--reference METHOD] [--toward "blue plain" --away "purple stripes"]
                  [--harness PATH]
Every sidecar in the run's `images/` is read, those of earlier configs saved under the same run name included:
give a new config its own `[run] name`.
"""
import argparse
import collections
import sys
from pathlib import Path

import numpy as np
from mask_shares import load_safetensors
from run_folder import objects, oracle_read, sidecars


def cells(reading: str, shape: str, side: int, image_px: int):
    """(latent cells the first `shape` object's box touches as a bool [side, side], 'colour pattern') or None."""
    for colour, pattern, sh, _, bbox in objects(reading):
        if sh == shape:
            x0, y0, x1, y1 = [v * side // image_px for v in bbox]
            c = np.zeros((side, side), bool)
            c[y0 : y1 + 1, x0 : x1 + 1] = True
            return c, f"{colour} {pattern}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--shape", required=True, help="the object's shape as the oracle names it, e.g. square")
    ap.add_argument("--reference", help="method whose image of the same seed gives the object's cells")
    ap.add_argument("--toward", help='reading the colour direction points to, e.g. "blue plain"')
    ap.add_argument("--away", help='reading it points away from, e.g. "purple stripes"')
    ap.add_argument("--harness", default="harness")
    a = ap.parse_args()
    if (a.toward is None) != (a.away is None):
        sys.exit("--toward and --away go together")

    jobs = {}
    for s in sidecars(a.run):
        if s["job"]["kind"] != "clora":
            continue
        files = [f for f in s["details"].get("attention_files", []) if f.endswith(".safetensors")]
        if not files:
            continue
        job = s["job"]
        key = (job["method"], job["prompt"]["set"], job["prompt"]["index_in_set"], job["seed"], job["sample"])
        jobs[key] = (a.run / "images" / Path(s["image"]).name, a.run / "artifacts" / Path(files[0]).parent.name)
    if not jobs:
        sys.exit(f"{a.run}: no CLoRA images saved with save_attention")
    keys = sorted(jobs)
    reading = dict(zip(keys, oracle_read(a.harness, [jobs[k][0] for k in keys])))
    tensors = {k: load_safetensors(jobs[k][1] / "attention.safetensors") for k in keys}
    for k in keys:
        if "latent_shift" not in tensors[k]:
            sys.exit(f"{jobs[k][1]}: no latent_shift (saved by an older harness); run the config again")
    side = tensors[keys[0]]["latent_in"].shape[-1]  # latent cells per side (16 on the toyworld)
    image_px = 64  # the oracle reads every image at 64x64 (its boxes are in those pixels)

    direction = None
    if a.toward:
        final = collections.defaultdict(list)  # reading -> the latent entering the last step, mean over the cells
        for k in keys:
            found = cells(reading[k], a.shape, side, image_px)
            if found:
                final[found[1]].append(tensors[k]["latent_in"][-1][:, found[0]].mean(1))
        for name in (a.toward, a.away):
            if not final[name]:
                sys.exit(f"no image reads the {a.shape} as {name!r} (readings: {sorted(final)})")
        direction = np.mean(final[a.toward], 0) - np.mean(final[a.away], 0)
        print(f"colour direction: mean latent entering the last step over the {a.shape} read as {a.toward!r} ({len(final[a.toward])} "
              f"images) minus {a.away!r} ({len(final[a.away])}): {[round(float(x), 3) for x in direction]}\n")

    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for k in keys:
        m, pset = k[:2]
        r = rows[(m, pset)]
        found = cells(reading[k], a.shape, side, image_px)
        r["drawn"].append(found[1] if found else "none")
        t = tensors[k]
        total = t["latent_shift"].sum(0)  # [c, h, w]
        if not np.any(total):
            continue
        z0 = t["latent_in"][0]
        r["rel"].append(np.sqrt((total**2).mean() / (z0**2).mean()))
        ref = (a.reference, *k[1:]) if a.reference else k
        if ref not in reading:
            continue
        where = cells(reading[ref], a.shape, side, image_px)
        if where is None:
            continue
        c = where[0]
        energy = (total**2).sum(0)
        r["share"].append(energy[c].sum() / energy.sum())
        r["area"].append(c.mean())
        mean_shift = total[:, c].mean(1)
        r["vs_noise"].append(np.linalg.norm(mean_shift) / np.sqrt(total.shape[0] / c.sum()))
        if direction is not None:
            r["cos"].append(mean_shift @ direction / (np.linalg.norm(mean_shift) * np.linalg.norm(direction)))

    head = f"| method | prompt set | n | {a.shape} drawn as | shift RMS / initial latent RMS | images with the {a.shape}'s cells | energy share on them (area) | mean shift / chance noise mean |"
    if direction is not None:
        head += " cos with the colour direction (> 0) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (m, pset), r in sorted(rows.items()):
        drawn = ", ".join(f"{w} {n}" for w, n in collections.Counter(r["drawn"]).most_common())
        if not r["rel"]:
            line = f"| {m} | {pset} | {len(r['drawn'])} | {drawn} | no update | | | |"
            print(line + (" |" if direction is not None else ""))
            continue
        line = (f"| {m} | {pset} | {len(r['drawn'])} | {drawn} | {np.mean(r['rel']):.2f} | {len(r['share'])} | "
                f"{np.mean(r['share']):.2f} ({np.mean(r['area']):.2f}) | {np.mean(r['vs_noise']):.2f} |")
        if direction is not None:
            line += f" {np.mean(r['cos']):+.2f} ({sum(x > 0 for x in r['cos'])}/{len(r['cos'])}) |"
        print(line)


if __name__ == "__main__":
    main()
