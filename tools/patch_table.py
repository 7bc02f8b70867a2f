"""The tables of docs/performance_patches.md from the outputs of tools/compare_patches.sh.

    python tools/patch_table.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VARIANTS = [("whole", "whole fields, whole grid"), ("patch-whole", "64 x 64 patches + positions, whole grid"),
            ("patch-tiled", "64 x 64 patches + positions, tiles 64 / 16"),
            ("patch-nopos-whole", "64 x 64 patches, no positions, whole grid")]


def main(out: Path) -> int:
    print("| model, sampling | variable | CRPS | CRPS / oracle | bilinear | bias | psd-high | "
          "seams rows / columns |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label in VARIANTS:
        metrics_path = out / f"report-{name}" / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        seams_path = out / f"seams-{name}.json"
        seams = json.loads(seams_path.read_text())["tiled"] if seams_path.is_file() else {}
        for var, m in metrics.items():
            model, oracle = m["model"], m["oracle"]
            psd = model.get("psd_high_ratio", float("nan"))
            seam = seams.get(var, {})
            seam_text = f"{seam['rows']:.3f} / {seam['columns']:.3f}" if seam else "–"
            print(f"| {label} | {var} | {model['crps']:.4f} | {model['crps'] / oracle['crps']:.3f} | "
                  f"{m['bilinear']['crps']:.4f} | {model['bias']:+.4f} | {psd:.2f} | {seam_text} |")
    full = out / "seams-full.json"
    if full.is_file():
        data = json.loads(full.read_text())
        print("\n| 589 x 789, patch model | variable | tiled rows / columns | whole grid rows / columns |")
        print("|---|---|---|---|")
        for var, s in data["tiled"].items():
            w = data["whole"][var]
            print(f"| | {var} | {s['rows']:.3f} / {s['columns']:.3f} | "
                  f"{w['rows']:.3f} / {w['columns']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
