#!/usr/bin/env bash
# Patch training against whole fields on the `danra` synthetic world (docs/performance_patches.md).
# A 96 x 128 window of the 589 x 789 grid (2.5 km, half land) with 12 days per year, so a whole-field
# model trains on CPU in minutes: the `small` U-Net, 200 steps of global batch 8, for
#   whole      whole 96 x 128 fields
#   patch      64 x 64 windows with the two position channels
#   patch-nopos 64 x 64 windows without them
# then samples 20 test dates x 4 members (DPM-Solver++(3M), 10 steps) whole-grid and, for the patch
# model, in 64 x 64 tiles overlapping by 16, and evaluates each against the truth and the oracle.
# Then the full 589 x 789 grid: a patch model (64 x 64 windows, 200 steps) trained on the full-grid
# dataset, and one test date x 2 members sampled whole-grid and in tiles, for time, memory and seams.
#   bash tools/compare_patches.sh OUT [window|full|all]   (OUT: a new folder; ~1 h on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/compare_patches.sh OUT [window|full|all]}
part=${2:-all}
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
window() {
train whole
train patch --set data.patch_size=64 --set data.position_channels=true
train patch-nopos --set data.patch_size=64
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
for name in patch-tiled patch-whole whole; do
    "${HPCDIFF_VENV:-.venv}/bin/python" tools/seams.py "$out/samples-$name.nc" --tile 64 --overlap 16 \
        --json "$out/seams-$name.json" > /dev/null
done
}

full() {
[ -d "$out/full" ] || "$hp" preprocess preprocess/synthetic.yaml --out "$out/full" --set root="$out/world" \
    --set "shards.chunk_hw=[64, 64]" --set shards.batch_chunk=1 --no-progress
common=(--set data.dataset="$out/full" --set train.max_steps=200 --set train.global_batch=8 --set train.val_every=100
        --set train.ckpt_every=100 --set train.log_every=10 --set train.tensorboard=false --no-progress)
train full-patch --set data.patch_size=64 --set data.position_channels=true
for mode in whole tiled; do
    extra=(); [ "$mode" = tiled ] && extra=(--set sample.tile=64 --set sample.tile_overlap=16)
    [ -f "$out/samples-full-$mode.nc" ] && continue
    /usr/bin/time -f "full-$mode: sample wall %e s, peak RSS %M KiB" "$hp" sample jobs/demo_sample.yaml \
        --run "$out/full-patch" --out "$out/samples-full-$mode" --no-progress --set dates.limit=1 \
        --set sample.members=2 --set sample.steps=10 --set sample.batch_size=2 "${extra[@]}"
    "$hp" merge "$out/samples-full-$mode" --no-progress
done
"${HPCDIFF_VENV:-.venv}/bin/python" tools/seams.py "$out/samples-full-tiled.nc" --tile 64 --overlap 16 \
    --reference "$out/samples-full-whole.nc" --json "$out/seams-full.json" > /dev/null
}

case $part in
    window) window ;;
    full) full ;;
    all) window; full ;;
    *) echo "unknown part $part (window, full or all)" >&2; exit 2 ;;
esac
