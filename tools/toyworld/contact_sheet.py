#!/usr/bin/env python3
"""Contact sheets of toyworld images, for looking at runs by eye and for the figures in docs/toyworld.md.

Each SOURCE is one or more rows of the sheet (the images of a row are left to right, `--cols` per row):
  - a folder of PNGs (e.g. `harness toyworld judge --out DIR`), sorted by name, the first `--take`;
  - RUN:METHOD:SET, the images of a `harness run` folder (`RUN/images/*.json` sidecars) of one method entry
    and prompt set, sorted by seed, the first `--take`.

Usage (needs Pillow; never needed by CI):
  contact_sheet.py OUT.png SOURCE... [--cols 16] [--take N] [--scale 2]   (`--take` applies to the sources after it)
Figures of docs/toyworld.md (H: a `harness` built with `--features tch`, README, Backends):
  $H toyworld judge --device tch --captions 8 --seeds 4 --out J/base
  contact_sheet.py docs/img/toyworld-base-samples.png J/base
  $H toyworld judge --device tch --lora assets/toyworld/loras/dots.safetensors --prompt "a dtz circle" \
      --seeds 16 --out J/dots          # and stripes "a stz square", rings "a rgz triangle"
  $H toyworld judge --device tch --lora assets/toyworld/loras/outline.safetensors --seeds 8 --out J/outline \
      --prompt "an olz drawing of a red circle" --prompt "an olz drawing of a blue square and a green triangle"
  contact_sheet.py docs/img/toyworld-lora-samples.png J/dots J/stripes J/rings J/outline
  contact_sheet.py docs/img/toyworld-compare-two.png --cols 12 --take 12 \
      results/toyworld-compare:{base,merge,switch,composite,clora-default,clora-tuned,clora-argmax}:two-concepts
"""
import argparse
import sys
from pathlib import Path

from PIL import Image
from run_folder import sidecars


def folder_images(src: Path):
    files = sorted(src.glob("*.png"))
    if not files:
        sys.exit(f"{src}: no PNG files")
    return files


def run_images(spec: str):
    run, method, prompt_set = spec.rsplit(":", 2)
    images = []
    for s in sidecars(Path(run)):
        job = s["job"]
        if job["method"] == method and job["prompt"]["set"] == prompt_set:
            images.append((job["seed"], job["sample"], Path(run) / s["image"]))
    if not images:
        sys.exit(f"{spec}: no image of method `{method}` and prompt set `{prompt_set}` in {run}/images")
    return [p for _, _, p in sorted(images)]


def main():
    # `--take` may be given between sources and applies to the sources after it.
    argv = sys.argv[1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--cols", type=int, default=16)
    p.add_argument("--scale", type=int, default=2)
    args, rest = p.parse_known_args(argv)
    take, files = None, []
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--take":
            take = int(rest[i + 1])
            i += 2
            continue
        picked = run_images(a) if ":" in a else folder_images(Path(a))
        files += picked[:take] if take else picked
        i += 1
    if not files:
        sys.exit("no source given")
    first = Image.open(files[0])
    w, h = first.width * args.scale, first.height * args.scale
    rows = (len(files) + args.cols - 1) // args.cols
    sheet = Image.new("RGB", (args.cols * (w + 2), rows * (h + 2)), (0, 0, 0))
    for k, f in enumerate(files):
        im = Image.open(f).convert("RGB").resize((w, h), Image.NEAREST)
        sheet.paste(im, ((k % args.cols) * (w + 2), (k // args.cols) * (h + 2)))
    tmp = Path(args.out).with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(args.out)
    print(f"{args.out}: {len(files)} images")


if __name__ == "__main__":
    main()
