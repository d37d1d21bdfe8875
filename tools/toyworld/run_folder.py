"""What the toyworld tools read from a `harness run` folder: the finished images' sidecars, the oracle's
reading of images (`harness toyworld read`) and the objects in one line of that reading. Imported by
contact_sheet.py, tally_objects.py, mask_shares.py and latent_shift.py (Python 3 standard library only)."""
import json
import re
import subprocess
import sys
from pathlib import Path


def sidecars(run: Path):
    """The sidecar (`images/<hash>.json`) of every finished image of `run`, in file-name order; failed jobs'
    `.error.json` records are left out."""
    for side in sorted(Path(run, "images").glob("*.json")):
        if not side.name.endswith(".error.json"):
            yield json.loads(side.read_text())


def oracle_read(harness: str, images):
    """The oracle's reading of each image, one line per image, from one `harness toyworld read` call."""
    images = [str(p) for p in images]
    if not images:
        return []
    try:
        out = subprocess.run([harness, "toyworld", "read", *images], capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(f"{harness}: not found (give the binary with --harness)")
    if out.returncode != 0:
        sys.exit(f"{harness} toyworld read failed: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if len(lines) != len(images):
        sys.exit(f"{harness} toyworld read: {len(lines)} lines for {len(images)} images")
    return lines


# One object of the oracle's reading, e.g. "orange dots circle at (29, 42, 49, 61) (335 px)": colour, pattern,
# shape, " outline" for an outline drawing, and its bounding box in the 64x64 image; `?` where the oracle could
# not tell (src/cli/toyworld.rs, `read_cmd`).
OBJECT = re.compile(r"([\w?]+) ([\w?]+) ([\w?]+)( outline)? at \((\d+), (\d+), (\d+), (\d+)\)")


def objects(reading: str):
    """The objects of one line of the oracle's reading, in its order: (colour, pattern, shape, outline,
    (x0, y0, x1, y1)), outline " outline" or ""."""
    return [(c, p, s, o, tuple(map(int, box))) for c, p, s, o, *box in OBJECT.findall(reading)]
