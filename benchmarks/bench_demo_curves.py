"""Learning curves of the demo's counted comparison (issue 17): metric vs pretraining clips and vs readout
examples, per task, on the synthetic ``val`` split, with the floors (trivial answer, blank readout).

    python benchmarks/bench_demo_curves.py --out DIR [--recipe default] [--model micro]
        [--points 0,50,100,150] [--readout-steps 100,300] [--tasks synth_pose,synth_depth]

Pretrains the recipe's model once with checkpoints at ``--points``, probes each checkpoint (step 0 = the
random-init row's weights) with the recipe's readouts and seeds, and writes ``DIR/curves.json`` (every
cell, and a log-linear trend per task with the pretraining clips it would need to beat the floor) and
``DIR/curves.png``. Rerunning skips what is done. ``--quick`` is a smoke run (the quick recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from fourds.demo import get_recipe
    from fourds.demo.curves import CurvePlan, learning_curves

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recipe", default="default", help="the demo preset whose settings are used (default)")
    p.add_argument("--quick", action="store_true", help="the quick recipe, 2 points, 2 readout lengths (smoke)")
    p.add_argument("--model", default=None, help="the recipe's model label (default: its largest)")
    p.add_argument("--points", default=None, help="pretraining steps to probe, comma-separated (0 = step-0 weights)")
    p.add_argument("--readout-steps", default=None, help="readout lengths, comma-separated")
    p.add_argument("--tasks", default=None, help="comma-separated synthetic tasks (default: the recipe's)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="override the model's pretraining steps")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    recipe = get_recipe("quick" if a.quick else a.recipe)
    recipe.eval_split = "val"  # curves tune nothing on test
    recipe.threads = a.threads
    model = recipe.model(a.model) if a.model else recipe.models[-1]
    if a.pretrain_steps:
        model.steps = a.pretrain_steps
        model.warmup_steps = max(1, a.pretrain_steps // 10)
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    default_points = (0, model.steps // 2, model.steps)
    plan = CurvePlan(model=model.label, pretrain_points=ints(a.points) if a.points else default_points,
                     readout_steps=ints(a.readout_steps) if a.readout_steps else ((2, 4) if a.quick else (100, 300)),
                     tasks=tuple(a.tasks.split(",")) if a.tasks else None)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    curves = learning_curves(recipe, a.out, plan)
    print("SimpleMAE loss / mean-colour loss at each point: "
          + ", ".join(f"step {p}: {r:.3f}" for p, r in curves["mae_ratio"].items()))
    for name, entry in curves["tasks"].items():
        t = entry["trend"]
        needed = t["clips_needed"]
        text = ("beats it at the last point" if t["beats_floor_at_last_point"] else
                "no trend towards the floor" if needed is None else
                "beyond 1e15" if math.isinf(needed) else f"{needed:,.0f} pretraining clips")
        print(f"{name:<15} floor {t['floor']:.4g}, slope/decade {t['slope_per_decade']}, to beat it by "
              f"{t['margin']:.2g}: {text}")
    print(json.dumps({"curves": str(a.out / "curves.json"), "figure": str(a.out / "curves.png")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
