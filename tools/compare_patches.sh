#!/usr/bin/env bash
# Patch training against whole fields on the `danra` synthetic world (docs/performance_patches.md).
# A 96 x 128 window of the 589 x 789 grid (2.5 km, half land) with 12 days per year, so a whole-field
# model trains on CPU in minutes: the `small` U-Net, 200 steps of global batch 8, for
#   whole      whole 96 x 128 fields
#   patch      64 x 64 windows with the two position channels
#   patch-nopos 64 x 64 windows without them
# then samples 20 test dates x 4 members (DPM-Solver++(3M), 10 steps) whole-grid and, for the patch
# model, in 64 x 64 tiles overlapping by 16, and evaluates each against the truth and the oracle.
#   bash tools/compare_patches.sh OUT     (OUT: a new folder; ~40 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/compare_patches.sh OUT}
hp="${HPCDIFF_VENV:-.venv}/bin/hpcdiff"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DS_ACCELERATOR=cpu
mkdir -p "$out"
[ -d "$out/world" ] || "$hp" synth "$out/world" --preset danra --days-per-year 12 --no-progress
[ -d "$out/win" ] || "$hp" preprocess preprocess/synthetic.yaml --out "$out/win" --set root="$out/world" \
    --set "domain={y: [246, 342], x: [330, 458]}" --set "shards.chunk_hw=[32, 32]" --set shards.batch_chunk=1 \
    --no-progress
common=(--set data.dataset="$out/win" --set train.max_steps=200 --set train.global_batch=8 --set train.val_every=100
        --set train.ckpt_every=100 --set train.log_every=10 --set train.tensorboard=false --no-progress)
train() {  # NAME EXTRA...
    local name=$1; shift
    [ -f "$out/$name/train.csv" ] && [ -n "$(ls "$out/$name/checkpoints" 2>/dev/null | grep step-00000200)" ] && return
    /usr/bin/time -f "$name: train wall %e s, peak RSS %M KiB" "$hp" train jobs/demo_train.yaml --out "$out/$name" \
        "${common[@]}" "$@"
}
train whole
train patch --set data.patch_size=64
train patch-nopos --set data.patch_size=64 --set data.position_channels=false
sample() {  # RUN NAME EXTRA...
    local run=$1 name=$2; shift 2
    /usr/bin/time -f "$name: sample wall %e s" "$hp" sample jobs/demo_sample.yaml --run "$out/$run" \
        --out "$out/samples-$name" --no-progress --set dates.limit=20 --set sample.members=4 --set sample.steps=10 \
        --set sample.batch_size=4 "$@"
    "$hp" merge "$out/samples-$name" --no-progress
    "$hp" evaluate "$out/samples-$name.nc" --dataset "$out/win" --out "$out/report-$name" --no-progress \
        > "$out/evaluate-$name.txt"
}
sample whole whole
sample patch patch-whole
sample patch patch-tiled --set sample.tile=64 --set sample.tile_overlap=16
sample patch-nopos patch-nopos-whole
