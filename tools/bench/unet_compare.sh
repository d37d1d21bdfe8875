#!/usr/bin/env bash
# Side-by-side UNet forward timings: this crate (burn, flex CPU backend, release build) and PyTorch diffusers
# (tools/bench/unet_torch.py), same config, batch 2, same thread count. Run on an otherwise idle machine.
#
#   tools/bench/unet_compare.sh [sd15|tiny-a] [iters] [threads]
#
# Needs the Python environment of tools/fixtures/requirements.txt (PYTHON=/path/to/python to choose it).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-sd15}
iters=${2:-3}
threads=${3:-2}
py=${PYTHON:-/root/.venvs/fixtures/bin/python}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/clora-target}"

case "$model" in
  sd15) cfg=sd15; side=512 ;;
  tiny-a) cfg=tests/fixtures/sd/tiny-a/unet/config.json; side=64 ;;
  *) echo "model must be sd15 or tiny-a" >&2; exit 2 ;;
esac

cargo build --release --quiet --bin harness
echo "== burn (flex, ${threads} threads via RAYON_NUM_THREADS)"
RAYON_NUM_THREADS=$threads "$CARGO_TARGET_DIR/release/harness" bench unet --config "$cfg" --batch 2 \
  --width "$side" --height "$side" --iters "$iters"
echo "== PyTorch diffusers (${threads} threads)"
OMP_NUM_THREADS=$threads "$py" tools/bench/unet_torch.py --model "$model" --runs "$iters" --threads "$threads" --batch 2 --latent $((side / 8))
