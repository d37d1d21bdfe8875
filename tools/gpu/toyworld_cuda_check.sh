#!/bin/bash
# The toyworld's checks on an NVIDIA GPU (sessions 14 and 15 ran them on an H200; results in docs/toyworld.md,
# "On a GPU"). Run from the repository root on the GPU machine, with a `cuda` build of the harness:
#
#   # here (no GPU needed to build; match CUDARC_CUDA_VERSION to the GPU machine's driver, 13000 = CUDA 13.0,
#   # or cudarc takes the newest CUDA it knows):
#   CUDARC_CUDA_VERSION=13000 cargo build --locked --bin harness --features cuda
#   mkdir -p .gpu && strip -o /tmp/harness target/debug/harness && xz -T2 -3 -c /tmp/harness > .gpu/harness.xz
#   # there (OUT: a folder for the results; the device tool sets it):
#   bash tools/gpu/toyworld_cuda_check.sh          # everything, about 7 minutes
#   bash tools/gpu/toyworld_cuda_check.sh clora    # the CLoRA diagnosis alone
#   bash tools/gpu/toyworld_cuda_check.sh batch    # training step cost at batch 64, 256, 1024 (after the
#                                                  # `tiny` check, and the tests when their binaries are carried)
#
# Then compare, here:
# - clora-check.tgz and smoke-run.tgz against CPU runs of the same configs (`harness run
#   tools/gpu/clora_check.toml`, `harness run configs/smoke.toml`), with `python3 tools/gpu/compare_runs.py
#   results/clora-check <unpacked>/clora-check` (likewise smoke): where images, attention maps and masks part;
# - judge.txt against `harness toyworld judge --device tch --captions 50 --seeds 2 --out DIR` (the same
#   verdicts are expected, and images within a few levels: the noise is drawn on the CPU);
# - wf/base.loss.csv against the same `--from-model ... --base-steps 16030` run here (losses step by step);
# - the train-logs' *.loss.csv clocks (s/step) and smoke-report.md's "Time per image".
# Each step has a time limit, so a slow or stuck step does not take the rest down with it; about 7 minutes on an
# H200 by session 14's timings. What travels to the GPU machine must stay under 64 MiB: the binary packed (~25
# MB with xz -9) and the checkout without tests/ (its fixtures are 45 MB; session 14 moved tests/ aside for the
# call). Session 15 carried the harness, backend_grads and clora_parity (7 MB each packed) with
# tests/fixtures/clora and tests/fixtures/sd/tiny-c, and docs/, assets/photos and assets/toyworld/encoders moved
# aside (65.5 MB in all), and ran `TEST_FILTER="..." BACKEND_GRADS_REPORT_ONLY=1 bash ... clora`.
set -u
R=${OUT:?set OUT to a results folder}
mkdir -p "$R"
exec > >(tee "$R/log.txt") 2>&1
H=/tmp/harness
if [ -f .gpu/harness.xz ]; then
  xz -dc .gpu/harness.xz > $H || python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('.gpu/harness.xz'),open('$H','wb'))"
  chmod +x $H
fi
T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
step() { # step NAME LIMIT CMD...: run with a time limit, print rc and wall ms
  local name=$1 lim=$2; shift 2
  echo "=== $name (limit ${lim}s) at $(ms $T0) ms"
  local t=$(date +%s%N)
  timeout $lim "$@"; local rc=$?
  echo "=== $name rc=$rc wall=$(ms $t) ms"
  return $rc
}
nvidia-smi -L
# The harness checks these itself (src/cuda_setup.rs) and says what is missing; this finds them on an image
# with the CUDA toolkit in /usr/local/cuda.
[ -z "${CUDA_PATH:-}" ] && export CUDA_PATH=/usr/local/cuda
NV=$(find $CUDA_PATH/ /opt /usr/lib -name 'libnvrtc.so.1*' 2>/dev/null | grep -v builtins | head -1)
echo "CUDA_PATH=$CUDA_PATH nvrtc=$NV"
mkdir -p /tmp/lib && ln -sf "$NV" /tmp/lib/libnvrtc.so
export LD_LIBRARY_PATH=/tmp/lib:$(dirname "$NV"):/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
if [ -x $H ]; then
  step tiny 90 $H toyworld judge --device cuda --captions 2 --seeds 1 || { echo "cuda does not run: stop"; exit 3; }
fi
# The backward kernels on CLoRA's path against finite differences (tests/backend_grads.rs, built with
# `cargo test --features cuda-tests --test backend_grads --no-run`, stripped and packed as .gpu/backend_grads.xz).
# Test binaries look for the checkout where they were built (CARGO_MANIFEST_DIR): link it.
# The CLoRA parity tests (clora_loss, clora_parity: the official PyTorch code's fixtures) likewise, when carried
# as .gpu/<test>.xz (they need tests/fixtures/clora, and clora_parity tests/fixtures/sd/tiny-c, beside them).
# BACKEND_GRADS_REPORT_ONLY=1 makes backend_grads print every check instead of stopping at the first failure.
for t in backend_grads clora_loss clora_parity; do
  if [ -f .gpu/$t.xz ]; then
    [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
    xz -dc .gpu/$t.xz > /tmp/$t && chmod +x /tmp/$t
    step $t 100 /tmp/$t --test-threads 1 --nocapture ${TEST_FILTER:-}
  fi
done
# Without a harness binary (only test binaries carried, to stay under the 64 MiB) the tests are all.
[ -x $H ] || { echo "no .gpu/harness.xz: tests only; total $(ms $T0) ms"; exit 0; }
# `batch` as the first argument: what a base training step costs at larger batches, 25 steps each at batch 64,
# 256 and 1024 from the committed model (a few minutes; each has its own limit). Session 14 measured 0.36 s per step at batch 64 on an
# H200, bound by kernel launches; if a step of 1024 costs little more, training in well under an hour is a
# matter of batch size there (docs/toyworld.md, "How to go on"). The s/step are the loss logs' clocks
# (train-batch.tgz; the first steps include compiling kernels: read the last ten).
if [ "${1:-}" = batch ]; then
  for b in 64 256 1024; do
    step batch$b 150 $H toyworld train --device cuda --work /tmp/wb$b --out /tmp/wb$b/model \
      --from-model assets/toyworld/model --from-step 0 --base-steps 25 --dataset 2048 --batch $b
  done
  (cd /tmp && tar czf "$R/train-batch.tgz" $(find wb64 wb256 wb1024 -name '*.csv' 2>/dev/null))
  echo "total $(ms $T0) ms"; exit 0
fi
# CLoRA on cuda against the CPU backends (session 14 found it apart, session 15 found why and fixed it): its
# images and saved attention maps and masks come back for tools/gpu/compare_runs.py: with the latent update,
# without it, unbatched.
step clora-check 150 $H run tools/gpu/clora_check.toml --device cuda --out /tmp/cc --quiet
tar czf "$R/clora-check.tgz" -C /tmp/cc clora-check/images clora-check/artifacts
# `clora` as the first argument stops here: the CLoRA diagnosis alone (about 3 minutes).
[ "${1:-}" = clora ] && { echo "total $(ms $T0) ms"; exit 0; }
step smoke 120 $H run configs/smoke.toml --device cuda --out /tmp/res --quiet
cp /tmp/res/smoke/report/report.md "$R/smoke-report.md" 2>/dev/null
tar czf "$R/smoke-run.tgz" -C /tmp/res smoke/images smoke/artifacts
step judge 120 $H toyworld judge --device cuda --captions 50 --seeds 2 --out /tmp/j50 > "$R/judge.txt"
tar czf "$R/judge-png.tgz" -C /tmp j50
step train 100 $H toyworld train --device cuda --work /tmp/w --out /tmp/w/model --vae-crop-steps 150 \
  --vae-full-steps 50 --dataset 2000 --base-steps 300 --batch 64 --loras /tmp/w/loras --lora-steps 50
# The same 30 steps from the committed model on every backend (its weights, the data and the noise are all
# drawn on the CPU): step-by-step losses against `tch` or `flex` here test the forward, the weight gradients and Adam.
step steps30 90 $H toyworld train --device cuda --work /tmp/wf --out /tmp/wf/model --from-model assets/toyworld/model \
  --from-step 16000 --base-steps 16030 --dataset 1000 --batch 64
(cd /tmp && tar czf "$R/train-logs.tgz" $(find w wf -name '*.csv' -o -name '*.json' 2>/dev/null | grep -v model/))
step smoke-f16 90 $H run configs/smoke.toml --device cuda --dtype f16 --out /tmp/res16 --quiet
cp /tmp/res16/smoke/report/report.md "$R/smoke-f16-report.md" 2>/dev/null
echo "total $(ms $T0) ms"
