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
# each sampled for 20 test dates x 4 members (DPM-Solver++(3M), SAMPLE_STEPS steps) and evaluated against
# the truth, bilinear interpolation and the oracle (which knows the driver).
#   bash tools/context_ablation.sh OUT [STEPS] [SAMPLE_STEPS]   (defaults 300, 10; OUT: a new folder;
#   ~1 h at 300 steps on 2 CPU cores, two runs at a time; ARMS="none spatial" runs only those arms)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/context_ablation.sh OUT [STEPS] [SAMPLE_STEPS]}
steps=${2:-300}
sample_steps=${3:-10}
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
declare -A overrides=(
    [none]=""
    [temporal]="context.temporal=[-2,-1]"
    [spatial]="context.spatial=[0]"
    [both]="context.temporal=[-2,-1] context.spatial=[-2,-1,0]"
    [spatial-emb]="context.spatial=[0] context.inject=embedding"
)
arm() {  # NAME: train, sample, merge, evaluate (skipped where done)
    local name=$1 sets=() o
    for o in ${overrides[$name]}; do sets+=(--set "$o"); done
    [ -f "$out/report-$name/metrics.json" ] && return
    /usr/bin/time -f "$name: train wall %e s, peak RSS %M KiB" "$hp" train jobs/demo_train.yaml \
        --out "$out/run-$name" "${common[@]}" "${sets[@]}" > "$out/train-$name.log" 2>&1
    /usr/bin/time -f "$name: sample wall %e s" "$hp" sample jobs/demo_sample.yaml --run "$out/run-$name" \
        --out "$out/samples-$name" --no-progress --set dates.limit=20 --set sample.members=4 \
        --set sample.steps="$sample_steps" --set sample.batch_size=4 > "$out/sample-$name.log" 2>&1
    "$hp" merge "$out/samples-$name" --no-progress > /dev/null
    "$hp" evaluate "$out/samples-$name.nc" --dataset "$out/dataset" --out "$out/report-$name" --no-progress \
        > "$out/evaluate-$name.txt"
}
read -r -a arms <<< "${ARMS:-none temporal spatial both spatial-emb}"
for ((k = 0; k < ${#arms[@]}; k += 2)); do  # two arms at a time, one core each; a failed arm fails the script
    ( arm "${arms[k]}" ) & a=$!
    b=""
    if ((k + 1 < ${#arms[@]})); then ( arm "${arms[k + 1]}" ) & b=$!; fi
    wait "$a"; [ -z "$b" ] || wait "$b"
done
"$venv/bin/python" tools/context_table.py "$out" --arms "${arms[@]}"
