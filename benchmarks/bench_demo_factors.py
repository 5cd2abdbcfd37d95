"""Which factor makes a demo recipe count (issue 17): one finished demo run's trained model re-probed on
the synthetic ``val`` split with another readout length.

    python benchmarks/bench_demo_factors.py --run DIR --recipe long --readout-steps 300 --out OUT
        [--model micro] [--tasks synth_pose,synth_depth] [--val-scenes 128]

``DIR`` is a finished ``fourds demo --recipe RECIPE --out DIR``. Its ``pretrain/<model>`` folder is copied
into ``OUT`` (never written in place) and the demo pipeline probes three rows there: ``<model>`` (the
trained weights), ``<model>-random`` (that run's step-0 weights) and ``blank``, with the recipe's readouts
and seeds, the given readout length for every listed task, on the recipe's training scenes and
``--val-scenes`` scenes of the ``val`` split (the test split is never read). Writes ``OUT/results.md`` and
``OUT/results.json`` with the counted verdict, and prints the table. docs/demo.md ("Which factor made
`long` count") was measured with it. ``--quick`` is a smoke run: the quick recipe's demo into a temporary
folder, then its model re-probed with 2 readout steps.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from fourds.demo import get_recipe, run_demo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a finished demo folder (its --out)")
    p.add_argument("--recipe", help="the preset that run used (quick, default, long, gpu)")
    p.add_argument("--readout-steps", type=int, help="readout steps for every listed task")
    p.add_argument("--out", type=Path)
    p.add_argument("--quick", action="store_true", help="smoke run on a fresh quick demo")
    p.add_argument("--model", default=None, help="the recipe's model label (default: its largest)")
    p.add_argument("--tasks", default="synth_pose,synth_depth", help="comma-separated synthetic tasks")
    p.add_argument("--val-scenes", type=int, default=128, help="val scenes to score on (default: 128)")
    a = p.parse_args(argv)
    if a.quick:
        scratch = Path(tempfile.mkdtemp(prefix="bench_demo_factors_"))
        a.recipe, a.readout_steps, a.val_scenes = "quick", 2, 8
        a.run, a.out = scratch / "run", a.out or scratch / "factors"
        run_demo(a.run, recipe=get_recipe("quick"))
    missing = [flag for flag, value in (("--run", a.run), ("--recipe", a.recipe), ("--readout-steps", a.readout_steps),
                                        ("--out", a.out)) if value is None]
    if missing:
        p.error(f"{', '.join(missing)} required (or --quick)")
    recipe = get_recipe(a.recipe)
    label = a.model or recipe.models[-1].label
    source = a.run / "pretrain" / label
    if not (source / "model").is_dir():
        raise SystemExit(f"--run {a.run}: no trained model at {source / 'model'}; pass a finished "
                         f"`fourds demo --recipe {a.recipe}` folder")
    tasks = tuple(a.tasks.split(","))
    recipe.name = f"factors-{a.recipe}-{label}-r{a.readout_steps}"
    recipe.models = [recipe.model(label)]
    recipe.perframe, recipe.visualize_models, recipe.visualize, recipe.reconstructions = (), (), 0, 1
    recipe.eval_split, recipe.test_scenes, recipe.tasks = "val", a.val_scenes, tasks
    recipe.task_probe_steps = {t: a.readout_steps for t in tasks}
    target = a.out / "pretrain" / label
    if not target.exists():
        shutil.copytree(source, target)
    run_demo(a.out, recipe=recipe)
    table = (a.out / "results.md").read_text().split("## Frozen evaluation (Table 2 in miniature)", 1)[-1].split("Arrows:", 1)[0]
    print(table.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
