#!/usr/bin/env python3
"""Contact sheet of the PNGs of a folder (e.g. `harness toyworld judge --out DIR`), for looking at a run by eye.

Usage: contact_sheet.py DIR OUT.png [COLUMNS] [SCALE]   (needs Pillow; never needed by CI)
"""
import sys
from pathlib import Path

from PIL import Image

src, out = Path(sys.argv[1]), sys.argv[2]
cols = int(sys.argv[3]) if len(sys.argv) > 3 else 8
scale = int(sys.argv[4]) if len(sys.argv) > 4 else 2
files = sorted(src.glob("*.png"))
if not files:
    sys.exit(f"{src}: no PNG files")
first = Image.open(files[0])
w, h = first.width * scale, first.height * scale
rows = (len(files) + cols - 1) // cols
sheet = Image.new("RGB", (cols * (w + 2), rows * (h + 2)), (0, 0, 0))
for i, f in enumerate(files):
    im = Image.open(f).convert("RGB").resize((w, h), Image.NEAREST)
    sheet.paste(im, ((i % cols) * (w + 2), (i // cols) * (h + 2)))
sheet.save(out)
print(f"{out}: {len(files)} images")
