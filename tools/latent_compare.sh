#!/usr/bin/env bash
# Pixel-space against latent-space diffusion on the demo world, evaluated (docs/performance_latent.md):
#   1. the demo world, preprocessed as the demo does (skipped when OUT/dataset exists);
#   2. the `small` autoencoder (jobs/autoencoder_train.yaml, AE_STEPS steps), and `hpcdiff encode` of the
#      dataset with its checkpoint AE_CHECKPOINT (default: latest) into OUT/latent;
#   3. the arms: `pixel` = the demo job (residual diffusion, PIXEL_STEPS steps); `latent-N` = the latent job
#      (jobs/latent_train.yaml) for N steps, for each N in LATENT_STEPS;
#   4. each arm sampled for 20 test dates x 4 members (DPM-Solver++(3M), SAMPLE_STEPS steps), merged and
#      evaluated against the truth, bilinear interpolation and the oracle; the table: tools/context_table.py.
#   bash tools/latent_compare.sh OUT      (env: AE_STEPS=1500 PIXEL_STEPS=500 LATENT_STEPS="500 2500"
#                                          SAMPLE_STEPS=25 AE_CHECKPOINT=latest; what exists is kept)
# The training times in the logs measure the machine's load as much as the arm when other work shares the
# cores; equal wall time is set from tools/bench_latent.py's step times on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/latent_compare.sh OUT}
ae_steps=${AE_STEPS:-1500}
pixel_steps=${PIXEL_STEPS:-500}
read -r -a latent_steps <<< "${LATENT_STEPS:-500 2500}"
sample_steps=${SAMPLE_STEPS:-25}
venv="${HPCDIFF_VENV:-.venv}"
hp="$venv/bin/hpcdiff"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} DS_ACCELERATOR=cpu
mkdir -p "$out"
if [ ! -d "$out/dataset" ]; then
    "$hp" synth "$out/world" --preset demo --no-progress
    "$hp" preprocess preprocess/synthetic.yaml --out "$out/dataset" --set root="$out/world" --no-progress
fi
common=(--set data.dataset="$out/dataset" --set train.tensorboard=false --no-progress)
if [ ! -d "$out/ae/checkpoints" ]; then
    /usr/bin/time -f "ae: train wall %e s, peak RSS %M KiB" "$hp" train jobs/autoencoder_train.yaml \
        --out "$out/ae" "${common[@]}" --set train.max_steps="$ae_steps" --set train.val_every=500 \
        --set train.ckpt_every=500 > "$out/train-ae.log" 2>&1
fi
[ -d "$out/latent" ] || /usr/bin/time -f "encode wall %e s" "$hp" encode "$out/ae" --dataset "$out/dataset" \
    --out "$out/latent" --checkpoint "${AE_CHECKPOINT:-latest}" --no-progress > "$out/encode.log" 2>&1

arm() {  # NAME JOB DATASET STEPS: train, sample, merge, evaluate (skipped where done)
    local name=$1 job=$2 dataset=$3 steps=$4
    [ -f "$out/report-$name/metrics.json" ] && return
    if [ ! -d "$out/run-$name/checkpoints" ]; then
        /usr/bin/time -f "$name: train wall %e s, peak RSS %M KiB" "$hp" train "$job" --out "$out/run-$name" \
            --set data.dataset="$dataset" --set train.max_steps="$steps" --set train.val_every="$steps" \
            --set train.ckpt_every="$steps" --set train.log_every=25 --set train.tensorboard=false \
            --no-progress > "$out/train-$name.log" 2>&1
    fi
    /usr/bin/time -f "$name: sample wall %e s" "$hp" sample jobs/demo_sample.yaml --run "$out/run-$name" \
        --out "$out/samples-$name" --no-progress --set dates.limit=20 --set sample.members=4 \
        --set sample.steps="$sample_steps" --set sample.batch_size=8 > "$out/sample-$name.log" 2>&1
    "$hp" merge "$out/samples-$name" --no-progress > /dev/null
    "$hp" evaluate "$out/samples-$name.nc" --dataset "$out/dataset" --out "$out/report-$name" --no-progress \
        > "$out/evaluate-$name.txt"
}
arm pixel jobs/demo_train.yaml "$out/dataset" "$pixel_steps"
names=(pixel)
for n in "${latent_steps[@]}"; do
    arm "latent-$n" jobs/latent_train.yaml "$out/latent" "$n"
    names+=("latent-$n")
done
"$venv/bin/python" tools/context_table.py "$out" --arms "${names[@]}"
