#!/usr/bin/env bash
# Build and run the benchmarks at GPU sizes in three time-boxed stages; with EXTRA=1
# also the per-column norm kernel and the 64×64 kernels pinned at 60m, sections 2 and 3 on
# Burn's tensor ops and two short toy-LLaMA runs. Meant for one
# call on a GPU machine.
#
#   bash benches/gpu.sh                   # builds with cargo, then runs
#   SUBTRACK_BIN=dir bash benches/gpu.sh  # runs prebuilt `benchmark` and `pretrain_llama`
#                                         # (or their `.gz`, unpacked to a temporary folder)
#   bash benches/gpu.sh pack              # builds both here, stripped and gzipped into
#                                         # target/gpu-bin (about 50 MB): carry that folder to
#                                         # a GPU machine of the same architecture and run
#                                         # SUBTRACK_BIN=target/gpu-bin there, so the GPU
#                                         # call spends none of its time on the build
#
# wgpu needs a Vulkan loader: on a bare NVIDIA machine that is libvulkan1 and, for NVIDIA's
# driver, libglvnd's libraries (libegl1, libglvnd0, libgl1, libglx0, libgles2, libopengl0).
#
# Variables: DEVICE (default auto), REPS (default 5), BATCH (section 4's back-to-back calls
# per device sync, default 10: one sync costs about as much as a small kernel on a GPU),
# EXTRA (1: the extra stages below; default off, so that the default call measures what
# the issues ask and no more), STEPS (pretrain steps, default 300), OUT (default
# target/bench), LIMIT_KERNELS, LIMIT_TRAIN, LIMIT_UPDATE (seconds for the three default
# stages: 200, 150 and 90, which with the start leave a call under 8 minutes), LIMIT
# (seconds for every stage, the extra ones included; default none for those). A stage past
# its limit is stopped and reported failed, and the next one starts, so a time-boxed call
# still returns the stages that finished.
# Results: $OUT/COMMIT (the commit the binaries were built from, where known),
# $OUT/kernels/, $OUT/train-60m/ and $OUT/subspace/benchmark.{md,json} (the three default
# stages, SubTrack's WGSL kernels on),
# with EXTRA=1 $OUT/per-column-norms/benchmark.{md,json} (the 60m SubTrack++ training step
# with the per-column norm kernel pinned, against the autotuner's choice in the first stage),
# $OUT/tile-64/benchmark.{md,json} (the same with the 64×64 projection and update pinned,
# against the autotuner's choice in the first stage),
# $OUT/portable/benchmark.{md,json} (sections 2 and 3 on Burn's tensor ops),
# $OUT/pretrain/ and $OUT/pretrain-portable/. Every stage runs even when an
# earlier one failed; the script exits non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench}
DEVICE=${DEVICE:-auto}
REPS=${REPS:-5}
BATCH=${BATCH:-10}
STEPS=${STEPS:-300}
# The commit the checkout is at, with "+dirty" where tracked files differ from it (nothing
# outside a git checkout).
commit_id() {
  local head
  head=$(git rev-parse --short HEAD 2>/dev/null) || return 0
  if git diff --quiet HEAD 2>/dev/null; then echo "$head"; else echo "$head+dirty"; fi
}
if [ "${1:-}" = pack ]; then
  cargo build --release --example benchmark --example pretrain_llama || exit 1
  mkdir -p target/gpu-bin
  for b in benchmark pretrain_llama; do
    strip -o "target/gpu-bin/$b" "target/release/examples/$b" &&
      gzip -f -9 "target/gpu-bin/$b" || exit 1
  done
  # The commit the binaries were built from, which the run prints and writes beside its
  # results.
  commit_id >target/gpu-bin/COMMIT
  ls -l target/gpu-bin
  echo "built from $(cat target/gpu-bin/COMMIT)"
  exit 0
fi
mkdir -p "$OUT"
if [ -n "${SUBTRACK_BIN:-}" ]; then
  BIN=$SUBTRACK_BIN
  if [ -f "$BIN/COMMIT" ]; then
    echo "== prebuilt binaries from commit $(cat "$BIN/COMMIT")"
    cp "$BIN/COMMIT" "$OUT/COMMIT"
  else
    echo "== prebuilt binaries of unknown commit (no $BIN/COMMIT: pack them again)"
  fi
  if [ -f "$BIN/benchmark.gz" ] && [ ! -x "$BIN/benchmark" ]; then
    unpacked=$(mktemp -d)
    trap 'rm -rf "$unpacked"' EXIT
    for b in benchmark pretrain_llama; do
      gunzip -c "$BIN/$b.gz" >"$unpacked/$b" && chmod +x "$unpacked/$b" || exit 1
    done
    BIN=$unpacked
  fi
else
  cargo build --release --example benchmark --example pretrain_llama || exit 1
  BIN=target/release/examples
  commit_id >"$OUT/COMMIT"
fi
# Burn loads optimizer records onto its default device before moving them; keep that on the CPU.
export BURN_DEVICE=${BURN_DEVICE:-flex}

failed=()
stage() {
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name"
  local limit=()
  [ -n "${LIMIT:-}" ] && limit=(timeout "$LIMIT")
  if ! ${limit[@]+"${limit[@]}"} "$@"; then
    failed+=("$name")
    echo "!! $name failed"
  fi
  echo "== $name: $((SECONDS - start)) s"
}
start=$SECONDS
# The stages whose goals are open on a GPU, in the order they matter, each within its own
# limit (LIMIT overrides all three), so that the call ends within 8 minutes and one that
# is cut short keeps the stages before: section 4 (the kernels with the autotuner's choices
# against Burn's matmul and the portable step), section 3 (the 60m training step, AdamW
# against SubTrack++), section 1 (the subspace update up to 2048×5461).
stage_within() {
  local limit=$1
  shift
  LIMIT=${LIMIT:-$limit} stage "$@"
}
stage_within "${LIMIT_KERNELS:-200}" "benchmark --full --sections 4 --batch $BATCH" \
  "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 4 --batch "$BATCH" --out "$OUT/kernels"
stage_within "${LIMIT_TRAIN:-150}" "benchmark --full --sections 3 --train-sizes 60m --optimizers adamw,subtrack++" \
  "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 3 --train-sizes 60m --optimizers adamw,subtrack++ --out "$OUT/train-60m"
stage_within "${LIMIT_UPDATE:-90}" "benchmark --full --sections 1 --update-max 2048" \
  "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 1 --update-max 2048 --out "$OUT/subspace"
if [ "${EXTRA:-0}" = 1 ]; then
  stage "benchmark --full --sections 3 --train-sizes 60m --optimizers subtrack++ --recovery-norms per-column" \
    "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 3 --train-sizes 60m --optimizers subtrack++ --recovery-norms per-column --out "$OUT/per-column-norms"
  stage "benchmark --full --sections 3 --train-sizes 60m --optimizers subtrack++ --projection-tile 64" \
    "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 3 --train-sizes 60m --optimizers subtrack++ --projection-tile 64 --out "$OUT/tile-64"
  stage "benchmark --full --sections 2,3 --no-wgsl-kernels" \
    "$BIN/benchmark" --full --device "$DEVICE" --reps "$REPS" --sections 2,3 --no-wgsl-kernels --out "$OUT/portable"
  stage "pretrain_llama (9m, SubTrack++, $STEPS steps)" \
    "$BIN/pretrain_llama" --device "$DEVICE" --steps "$STEPS" --out "$OUT/pretrain" --overwrite
  stage "pretrain_llama --no-wgsl-kernels (9m, SubTrack++, $STEPS steps)" \
    "$BIN/pretrain_llama" --device "$DEVICE" --steps "$STEPS" --no-wgsl-kernels --out "$OUT/pretrain-portable" --overwrite
fi
echo "== total $((SECONDS - start)) s after the build"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
