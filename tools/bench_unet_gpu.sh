#!/usr/bin/env bash
# The `base` U-Net at DANRA's full 589 x 789 grid on one GPU: fp32 and bf16 autocast, inference forward
# and training step (ms, samples/s, peak memory from torch.cuda.max_memory_allocated), which
# scaled_dot_product_attention backends accept the attention calls and which one runs, and the cost per
# pixel against grid size; with the preset's attention window and with global attention.
#
#     tools/bench_unet_gpu.sh [OUT_DIR]              # on a GPU node (a few minutes on one H100/H200)
#     tools/bench_unet_gpu.sh --cpu-small [OUT_DIR]  # the same steps on CPU: tiny preset, 40 x 52, ~2 min
#
# Needs the hpcdiff environment's python on PATH (the repository root on PYTHONPATH, or hpcdiff installed).
#
# Markdown tables go to stdout and OUT_DIR/bench_unet_gpu.log, each table's rows to OUT_DIR/*.json.
set -euo pipefail

device=cuda preset=base size=589x789 grid=(128 256 512 589x789) repeat=5 windows=(preset none)
if [[ "${1:-}" == "--cpu-small" ]]; then
    shift  # tiny has no window of its own: 8 tokens splits its 20 x 26 token grid at 40 x 52
    device=cpu preset=tiny size=40x52 grid=(32 40x52) repeat=1 windows=(8 none)
fi
out=${1:-bench_unet_gpu}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
bench=(python "$here/bench_unet.py" --device "$device" --presets "$preset" --repeat "$repeat")

{
    date -u
    uptime
    if [[ $device == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; fi
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    for window in "${windows[@]}"; do
        for precision in fp32 bf16; do
            flag=()
            [[ $precision == bf16 ]] && flag=(--bf16)
            echo "## $preset $size, $precision, attention window: $window"
            "${bench[@]}" "${flag[@]}" --batch 1 --size "$size" --attention-window "$window" --sdpa-backends \
                --json "$out/step_${precision}_window-${window}.json"
            echo "## $preset cost per pixel, $precision, attention window: $window"
            "${bench[@]}" "${flag[@]}" --grid "${grid[@]}" --attention-window "$window" \
                --json "$out/grid_${precision}_window-${window}.json"
        done
    done
} 2>&1 | tee "$out/bench_unet_gpu.log"
