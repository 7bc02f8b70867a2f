"""The table of docs/performance_context.md from the outputs of tools/context_ablation.sh: per arm and
variable, the land CRPS, its ratio to the oracle's, the share of the gap between the no-context run and
the oracle that the arm closes, bias, spread/skill, the high-wavenumber power ratio and the training
time.

    python tools/context_table.py OUT --arms none temporal spatial both spatial-emb
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def train_seconds(out: Path, arm: str) -> str:
    """The ``train wall`` seconds GNU time wrote into the arm's training log, or a dash."""
    log = out / f"train-{arm}.log"
    found = re.findall(r"train wall ([0-9.]+) s", log.read_text()) if log.is_file() else []
    return f"{float(found[-1]):.0f}" if found else "–"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--arms", nargs="+", required=True)
    args = p.parse_args(argv)
    metrics = {a: json.loads((args.out / f"report-{a}" / "metrics.json").read_text()) for a in args.arms
               if (args.out / f"report-{a}" / "metrics.json").is_file()}
    if not metrics:
        print(f"{args.out}: no report-*/metrics.json", file=sys.stderr)
        return 1
    base = metrics.get("none")
    print("| arm | variable | CRPS | / oracle | gap closed | bilinear | bias | spread/skill | psd-high | "
          "train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arm, m in metrics.items():
        for var, methods in m.items():
            model, oracle = methods["model"], methods["oracle"]
            closed = "–"
            if base is not None:
                gap = base[var]["model"]["crps"] - oracle["crps"]
                closed = f"{(base[var]['model']['crps'] - model['crps']) / gap:+.0%}" if gap > 0 else "–"
            ratio = model["crps"] / oracle["crps"]
            print(f"| {arm} | {var} | {model['crps']:.4f} | {ratio:.3f} | {closed} | "
                  f"{methods['bilinear']['crps']:.4f} | {model['bias']:+.4f} | {model['spread_skill']:.2f} | "
                  f"{model.get('psd_high_ratio', float('nan')):.2f} | {train_seconds(args.out, arm)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
