#!/usr/bin/env python3
"""What each method drew, object by object: the oracle's reading of every image of a `harness run` folder
(`harness toyworld read`), tallied per method and prompt set as the colour and pattern of each shape.

The run's report scores a concept present or absent; this says what was drawn instead (e.g. the `stripes`
square striped but blue, or the `dots` circle yellow and plain), which is how docs/toyworld.md tells a lost
colour from a lost concept.

Usage (Python 3 standard library only; never needed by CI):
  tally_objects.py RUN [--harness PATH]
    RUN        a `harness run` output folder (e.g. results/toyworld-branches)
    --harness  the harness binary (default: `harness` on PATH); a `--features tch` build needs libtorch on
               LD_LIBRARY_PATH (README, Backends)
Prints a Markdown table: one row per (method variant, prompt set), one column per shape the oracle found, each cell the
readings with their counts, most common first ("blue stripes 13, purple stripes 2"); a shape drawn twice in
one image counts twice, and `none` counts the images without that shape. Every sidecar in the run's `images/`
is read, those of earlier configs saved under the same run name included: give a new config its own `[run] name`.
"""
import argparse
import collections
import sys
from pathlib import Path

from run_folder import objects, oracle_read, sidecars


def images_by_group(run: Path):
    groups = collections.defaultdict(list)
    for s in sidecars(run):
        job = s["job"]
        # the variant label (`merge[lora_weights={rings=2}]`) tells a sweep's points apart; it is the method's
        # name where nothing is swept
        groups[(job["variant"], job["prompt"]["set"])].append((job["seed"], job["sample"], run / s["image"]))
    if not groups:
        sys.exit(f"{run}/images: no image sidecars (is {run} a `harness run` folder?)")
    return {k: [p for _, _, p in sorted(v)] for k, v in groups.items()}


def read(harness: str, images):
    return [objects(line) for line in oracle_read(harness, images)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--harness", default="harness")
    args = p.parse_args()
    groups = images_by_group(args.run)
    rows, shapes = [], set()
    for (method, prompt_set), images in sorted(groups.items()):
        tally = collections.defaultdict(collections.Counter)
        for found in read(args.harness, images):
            seen = set()
            for colour, pattern, shape, outline, _ in found:
                tally[shape][f"{colour} {pattern}{outline}"] += 1
                seen.add(shape)
            for shape in {"circle", "square", "triangle"} - seen:
                tally[shape]["none"] += 1
        shapes |= {s for s, c in tally.items() if set(c) != {"none"}}
        rows.append((method, prompt_set, len(images), tally))
    shapes = sorted(shapes)
    print("| method | prompt set | n | " + " | ".join(shapes) + " |")
    print("|" + " --- |" * (3 + len(shapes)))
    for method, prompt_set, n, tally in rows:
        cells = [", ".join(f"{k} {v}" for k, v in tally[s].most_common()) for s in shapes]
        print(f"| {method} | {prompt_set} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
