#!/usr/bin/env bash
# The value of large-scale context, measured (docs/performance_context.md): the `context` synthetic world
# (the demo's 64 x 64 grid, with a driver the same-day conditions over the grid do not carry: yesterday's
# temperature anomaly 2 deg upstream, see hpcdiff/data/synth/law.py), preprocessed once with
# `context: {days: [-2, -1, 0], box: the whole ERA5 box}`, then five runs of the demo job at equal steps
# (the `small` U-Net, STEPS steps of global batch 16) that differ only in what they read:
#   none        the same day's conditions on the target grid (what hpcdiff did before)
#   temporal    + the conditions of days -2 and -1 on the target grid (extra condition channels)
#   spatial     + the ERA5 box of day 0 (context encoder, features sampled at each pixel's place)
#   both        + days -2 and -1 on the grid and the box of days -2, -1 and 0
#   spatial-emb as spatial, the encoder's output pooled into the time embedding instead
# each sampled for 20 test dates x 4 members (DPM-Solver++(3M), 10 steps) and evaluated against the
# truth, bilinear interpolation and the oracle (which knows the driver).
#   bash tools/context_ablation.sh OUT [STEPS]    (OUT: a new folder; ~45 min on 2 CPU cores, 2 runs at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/context_ablation.sh OUT [STEPS]}
steps=${2:-300}
venv="${HPCDIFF_VENV:-.venv}"
hp="$venv/bin/hpcdiff"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} DS_ACCELERATOR=cpu
mkdir -p "$out"
[ -d "$out/world" ] || "$hp" synth "$out/world" --preset context --no-progress
if [ ! -d "$out/dataset" ]; then
    box=$("$venv/bin/python" -c "import json, sys; g = json.load(open(sys.argv[1]))['era5_grid']; \
print(f\"{{lon: [{g['lon_west']}, {g['lon_east']}], lat: [{g['lat_south']}, {g['lat_north']}]}}\")" \
        "$out/world/world.json")
    { cat preprocess/synthetic.yaml; printf 'context:\n  days: [-2, -1, 0]\n  neighbours: split\n  box: %s\n' "$box"; } \
        > "$out/recipe.yaml"
    "$hp" preprocess "$out/recipe.yaml" --out "$out/dataset" --set root="$out/world" --no-progress
fi
common=(--set data.dataset="$out/dataset" --set train.max_steps="$steps" --set train.val_every="$steps"
        --set train.ckpt_every="$steps" --set train.log_every=25 --set train.tensorboard=false --no-progress)
arm() {  # NAME OVERRIDES...: train, sample, merge, evaluate (skipped where done)
    local name=$1; shift
    if [ ! -f "$out/report-$name/metrics.json" ]; then
        /usr/bin/time -f "$name: train wall %e s, peak RSS %M KiB" "$hp" train jobs/demo_train.yaml \
            --out "$out/run-$name" "${common[@]}" "$@" > "$out/train-$name.log" 2>&1
        /usr/bin/time -f "$name: sample wall %e s" "$hp" sample jobs/demo_sample.yaml --run "$out/run-$name" \
            --out "$out/samples-$name" --no-progress --set dates.limit=20 --set sample.members=4 \
            --set sample.steps=10 --set sample.batch_size=4 > "$out/sample-$name.log" 2>&1
        "$hp" merge "$out/samples-$name" --no-progress > /dev/null
        "$hp" evaluate "$out/samples-$name.nc" --dataset "$out/dataset" --out "$out/report-$name" --no-progress \
            > "$out/evaluate-$name.txt"
    fi
}
pair() {  # two arms at a time (one core each); a failed arm fails the script
    local a b
    ( arm "${first[@]}" ) & a=$!
    ( arm "${second[@]}" ) & b=$!
    wait "$a"; wait "$b"
}
first=(none); second=(temporal --set "context.temporal=[-2, -1]"); pair
first=(spatial --set "context.spatial=[0]")
second=(both --set "context.temporal=[-2, -1]" --set "context.spatial=[-2, -1, 0]"); pair
arm spatial-emb --set "context.spatial=[0]" --set context.inject=embedding
"$venv/bin/python" tools/context_table.py "$out" --arms none temporal spatial both spatial-emb
