#!/usr/bin/env bash
# Build and run the benchmarks at GPU sizes, printing every table (issue 5), then a short
# toy-LLaMA run on the same device. Meant for one call on a GPU machine; about 5 minutes
# after the build.
#
#   bash benches/gpu.sh                 # builds with cargo, then runs
#   SUBTRACK_BIN=dir bash benches/gpu.sh  # runs prebuilt `benchmark` and `pretrain_llama`
#
# Results: $OUT (default target/bench)/benchmark.{md,json}, $OUT/wgsl/benchmark.{md,json}
# (sections 2 and 3 with the WGSL kernels), $OUT/pretrain/ and $OUT/pretrain-wgsl/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench}
DEVICE=${DEVICE:-auto}
mkdir -p "$OUT"
if [ -n "${SUBTRACK_BIN:-}" ]; then
  BIN=$SUBTRACK_BIN
else
  cargo build --release --example benchmark --example pretrain_llama
  BIN=target/release/examples
fi
# Burn loads optimizer records onto its default device before moving them; keep that on the CPU.
export BURN_DEVICE=${BURN_DEVICE:-flex}
echo "== benchmark --full"
"$BIN/benchmark" --full --device "$DEVICE" --reps "${REPS:-5}" --out "$OUT"
echo "== benchmark --full --sections 2,3 --wgsl-kernels (SubTrack's WGSL kernels on)"
"$BIN/benchmark" --full --device "$DEVICE" --reps "${REPS:-5}" --sections 2,3 --wgsl-kernels --out "$OUT/wgsl"
echo "== pretrain_llama (9m, SubTrack++, 300 steps)"
"$BIN/pretrain_llama" --device "$DEVICE" --steps 300 --out "$OUT/pretrain" --overwrite
echo "== pretrain_llama --wgsl-kernels (9m, SubTrack++, 300 steps)"
"$BIN/pretrain_llama" --device "$DEVICE" --steps 300 --wgsl-kernels --out "$OUT/pretrain-wgsl" --overwrite
