#!/usr/bin/env bash
# Profile on a GPU node: the all-reduce sweep over the node's GPUs (NCCL), a 1-GPU profile of the `base`
# U-Net in bf16 and in fp32 on the `bench` synthetic world (256 x 256), and, with 2 or more GPUs, weak and
# strong scaling on 1 and 2 GPUs with Chrome traces, whose communication / computation overlap is read
# with HolisticTraceAnalysis. Every part writes the same report as `hpcdiff profile` (scaling.md,
# scaling.csv, projection.csv, environment.json, PNG plots).
#
# Usage (on the node, inside an allocation or on a workstation):
#   bash tools/profile_gpu.sh [PROFILE]          # default PROFILE: profile-gpu
# Environment: HPCDIFF (default: "python -m hpcdiff.cli"), HPCDIFF_DATASET (a preprocessed dataset to
# use instead of making the bench world), STEPS (measured steps, default 20), WARMUP (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-profile-gpu}"
hpcdiff=(${HPCDIFF:-python -m hpcdiff.cli})
steps="${STEPS:-20}"
warmup="${WARMUP:-5}"
mkdir -p "$out"

ngpu=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$ngpu" -lt 1 ]; then
    echo "profile_gpu.sh: no GPU visible (torch.cuda.device_count() = 0)" >&2
    exit 1
fi
python - <<'EOF' | tee "$out/gpu.txt"
import torch
print(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

dataset="${HPCDIFF_DATASET:-$out/work/dataset}"
if [ ! -f "$dataset/manifest.json" ]; then
    "${hpcdiff[@]}" synth "$out/work/world" --preset bench --no-progress
    "${hpcdiff[@]}" preprocess preprocess/synthetic.yaml --out "$dataset" --set "root=$out/work/world" \
        --no-progress
fi

# The base U-Net, one GPU, global batch 8 from the dataset (data wait included), bf16 then fp32.
common=(--executor local --steps "$steps" --warmup "$warmup" --data dataset
        --set "data.dataset=$dataset" --set data.num_workers=4 --set slurm.gpus_per_node=1
        --set slurm.tasks_per_node=1 --set train.global_batch=8 --set train.micro_batch=8
        --set train.zero_stage=0 --no-progress)
for precision in bf16 fp32; do
    "${hpcdiff[@]}" profile train jobs/gpu_train.yaml --out "$out/base-1gpu-$precision" --ranks 1 \
        --mode strong --trace-steps 3 --set "train.precision=$precision" "${common[@]}"
done

if [ "$ngpu" -ge 2 ]; then
    # NCCL all-reduce, 1 KiB ... 256 MiB, over every GPU of the node; its alpha-beta fit then validates
    # the projection against the measured 1- and 2-GPU points.
    "${hpcdiff[@]}" profile comm --out "$out/scaling" --executor local --ranks "$ngpu" \
        --gpus-per-node "$ngpu"
    "${hpcdiff[@]}" profile train jobs/gpu_train.yaml --out "$out/scaling" --ranks 1,2 --mode both \
        --executor local --steps "$steps" --warmup "$warmup" --data synthetic --trace-steps 3 \
        --set "data.dataset=$dataset" --set train.precision=bf16 \
        --set train.global_batch=16 --set train.micro_batch=8 --no-progress
    # Communication / computation overlap from the 2-GPU traces (GPU kernels on the NCCL and compute
    # streams), as HolisticTraceAnalysis computes it.
    python - "$out/scaling/traces/strong-r2" <<'EOF' | tee "$out/scaling/overlap.txt"
import sys
from hta.trace_analysis import TraceAnalysis

overlap = TraceAnalysis(trace_dir=sys.argv[1]).get_comm_comp_overlap(visualize=False)
print("communication overlapped by computation, per rank (HolisticTraceAnalysis):")
print(overlap.to_string(index=False))
EOF
fi
echo "profile_gpu.sh: reports in $out/base-1gpu-bf16, $out/base-1gpu-fp32$([ "$ngpu" -ge 2 ] && echo ", $out/scaling")"
