"""The demo's outputs: ``results.json``, ``results.md``, the plots and the pictures, and the final summary."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from fourds.demo.config import DemoRecipe
from fourds.demo.pipeline import BLANK, Entry, Pools, Timings, build_task, probe_dir, say
from fourds.demo.results import Cell, collect, compare, comparisons, markdown_table, verdict_line
from fourds.models.io import write_json_atomic


TRIVIAL = "trivial"

#: How the demo's count (``wins_beyond_reference``) is taken, in words (results.md, results.json).
COUNT_RULE = ("a task counts when the larger pretrained model beats the same architecture at random init (its "
              "pretraining run's step-0 weights) by more than std_a + std_b over the readout seeds, a paired "
              "bootstrap over the test scenes (95%) excludes zero, and the pretrained row beats the task's floor "
              "(the trivial answer and the blank readout) by the same two rules; a missing or non-finite seed "
              "fails the task")

#: What each kind of row in the results table is (results.md lists the kinds the table has).
KIND_TEXT = {
    "pretrained": "SimpleMAE",
    "random": "same architecture at random initialisation: its pretraining run's step-0 weights",
    "no features": "each task's trivial answer: points and boxes that do not move, the mean training pose, the "
                   "median training depth, the most frequent class",
    "perframe": "the pretrained model fed one frame at a time, repeated to fill its 2-frame tubelet, time stacked",
    "distilled": "the largest model distilled into the smallest architecture",
    "blank": "the same readouts trained on constant features (what a readout learns with no information; "
             "with the trivial answer, the task's floor)",
}


def kinds_text(present: set[str]) -> str:
    """What each kind of row in the table is, for the kinds ``present`` only, in :data:`KIND_TEXT` order."""
    return "; ".join(f"`{k}` ({text})" for k, text in KIND_TEXT.items() if k in present)


def _params(out: Path, rows: list[Entry], tasks: list[str], seeds: list[int]) -> dict[str, int]:
    params = {}
    for entry in rows:
        for task in tasks:
            for seed in seeds:
                path = probe_dir(out, entry.label, task, seed) / "results.json"
                if path.is_file():
                    params[entry.label] = int(json.loads(path.read_text()).get("backbone_params", 0))
                    break
            if entry.label in params:
                break
    return params


def readout_widths(recipe: DemoRecipe, dims: dict[str, int]) -> dict[str, Any]:
    """Per task: the readout's width settings and its parameter count on each backbone width."""
    from fourds.tasks import count_readout_params

    widths = {}
    for name in recipe.tasks:
        task = build_task(recipe, name)
        opts = {k: getattr(task, k) for k in ("channels", "num_heads", "embed_dim") if hasattr(task, k)}
        pt, ph, pw = recipe.models[0].overrides.get("patch_size", (2, 16, 16))
        grid = (recipe.frames // pt, recipe.size // ph, recipe.size // pw)
        opts["params_by_backbone_width"] = {str(d): count_readout_params(task, d, grid) for d in sorted(set(dims.values()))}
        widths[name] = opts
    return widths


def add_trivial_row(table: dict[str, dict[str, Cell]], recipe: DemoRecipe, pools: Pools, kinds: dict[str, str],
                    base: dict[str, str]) -> None:
    """Append the row ``trivial`` (kind ``no features``): each task's answer that uses no features
    (:mod:`fourds.demo.trivial`), measured with the task's metric on the test scenes."""
    from fourds.demo.trivial import trivial_scores

    row = {}
    for name in recipe.tasks:
        like = next((r[name] for r in table.values() if name in r), None)
        if like is None:
            continue
        metrics, samples = trivial_scores(build_task(recipe, name), pools.train, pools.test)
        row[name] = Cell(like.metric, like.direction, like.units, [metrics.get(like.metric, math.nan)], [samples])
    if row:
        table[TRIVIAL] = row
        kinds[TRIVIAL], base[TRIVIAL] = "no features", TRIVIAL


def counted_comparison(verdicts: list[dict[str, Any]], kinds: dict[str, str], recipe: DemoRecipe) -> dict[str, Any] | None:
    """The comparison the demo's count is taken from: the largest pretrained model against the same
    architecture at random initialisation (its pretraining run's step-0 weights). The other comparisons
    (per-frame, the smaller size, distillation) are reported beside it."""
    largest = recipe.models[-1].label
    for v in verdicts:
        if v["a"] == largest and v["b"] == f"{largest}-random":
            return v
    return None


def mae_test_loss(mae: Any, video: Any, batch: int = 16) -> float:
    """A SimpleMAE's loss on clips ``video`` ``(N, T, H, W, 3)`` float in [0, 1] with fixed masks (sample
    seeds 0..N-1), the mean over clips."""
    import torch

    losses = []
    mae = mae.eval()
    with torch.no_grad():
        for start in range(0, len(video), batch):
            chunk = video[start:start + batch]
            res = mae(chunk, sample_seeds=list(range(start, start + len(chunk))))
            losses.append(float(res.loss) * len(chunk))
    return sum(losses) / len(video)


def mean_colour_loss(video: Any) -> float:
    """The loss of predicting each clip's mean colour everywhere: the plateau an MAE sits on before it
    learns any structure."""
    return float(((video - video.mean(dim=(1, 2, 3), keepdim=True)) ** 2).mean())


def test_videos(pools: Pools) -> Any:
    """Every test clip ``(N, T, H, W, 3)`` float in [0, 1]."""
    import torch

    from fourds.data import to_float

    return to_float(torch.stack([pools.test[i]["video"] for i in range(len(pools.test))]))


def pretraining_check(out: Path, recipe: DemoRecipe, pools: Pools) -> dict[str, dict[str, float]]:
    """Per pretrained model: its SimpleMAE loss on the test clips (fixed masks) next to the loss of
    predicting each clip's mean colour everywhere, the plateau an MAE sits on before it learns structure."""
    from fourds.models import load_simple_mae

    if not len(pools.test):
        return {}
    video = test_videos(pools)
    mean_colour = mean_colour_loss(video)
    checks = {}
    for model in recipe.models:
        folder = out / "pretrain" / model.label / "model"
        if not (folder / "model.safetensors").is_file():
            continue
        checks[model.label] = {"test_loss": mae_test_loss(load_simple_mae(folder), video), "mean_colour_loss": mean_colour}
    return checks


def stage_times(timings: Timings) -> dict[str, float]:
    """Seconds per stage, with the per-model feature and probe entries summed as well."""
    flat = {k: v["seconds"] for k, v in timings.data.items()}
    for prefix in ("features", "probes"):
        parts = [v for k, v in flat.items() if k.startswith(prefix + ":")]
        if parts:
            flat[prefix] = round(sum(parts), 2)
    return flat


def write_outputs(recipe: DemoRecipe, out: Path, rows: list[Entry], pools: Pools, timings: Timings,
                  machine_start: dict[str, Any], elapsed: float) -> dict[str, Any]:
    from fourds.demo.pictures import draw_pictures
    from fourds.demo.plots import draw_plots
    from fourds.demo.run import machine_info

    tasks, seeds = list(recipe.tasks), list(recipe.seeds)
    labels = [e.label for e in rows]
    table = collect(out / "probes", labels, tasks, seeds)
    params = _params(out, rows, tasks, seeds)
    kinds = {e.label: e.kind for e in rows}
    base = {e.label: e.model.label for e in rows}
    add_trivial_row(table, recipe, pools, kinds, base)
    dims = {e.label: int(e.model.overrides.get("dim", 0)) or _preset_dim(e.model.preset) for e in rows}
    floors = [label for label in (TRIVIAL, BLANK) if label in table]
    verdicts = [compare(table, a, b, tasks, floors) for a, b in comparisons(kinds, labels, base)]
    lines = [verdict_line(v, table) for v in verdicts]
    counted = counted_comparison(verdicts, kinds, recipe)

    t_plots = time.perf_counter()
    figures = draw_plots(out, recipe, table, params, kinds, base)
    figures += draw_pictures(out, recipe, rows, pools)
    plots_seconds = time.perf_counter() - t_plots

    md_table = markdown_table(table, tasks, params, kinds)
    stages = stage_times(timings)
    pretraining = pretraining_check(out, recipe, pools)
    results = {
        "recipe": recipe.name,
        "pretraining_check": pretraining,
        "table": {label: {t: c.to_dict() for t, c in row.items()} for label, row in table.items()},
        "models": {e.label: {"kind": e.kind, "model": e.model.label, "preset": e.model.preset,
                             "params": params.get(e.label), "dim": dims[e.label]} for e in rows},
        "readouts": readout_widths(recipe, dims),
        "verdicts": verdicts,
        "verdict_lines": lines,
        "win_rule": "a win needs |mean difference| > std_a + std_b over the readout seeds",
        "count_rule": COUNT_RULE,
        "counted_comparison": None if counted is None else {"a": counted["a"], "b": counted["b"]},
        "wins_beyond_reference": [] if counted is None else counted.get("wins_beyond_reference", []),
        "total_s": round(sum(v["seconds"] for v in timings.data.values()), 2),
        "seeds": seeds,
        "timings_s": {**stages, "plots_and_pictures": round(plots_seconds, 2), "this_invocation": round(elapsed, 2)},
        "machine": {"start": machine_start, "end": machine_info()},
        "recipe_settings": recipe.to_dict(),
        "figures": [str(p.relative_to(out)) for p in figures],
    }
    write_json_atomic(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(recipe, results, md_table, lines, out, figures))
    print_summary(out, md_table, lines, results, figures)
    return results


def _preset_dim(preset: str) -> int:
    from fourds.models import get_preset

    return int(get_preset(preset).vit["dim"])


def results_markdown(recipe: DemoRecipe, results: dict[str, Any], md_table: str, lines: list[str], out: Path,
                     figures: list[Path]) -> str:
    t = results["timings_s"]
    load = results["machine"]["start"]["load_average_1_5_15"]
    widths = "; ".join(f"{task}: C={w.get('channels')}, {w.get('num_heads')} heads"
                       + (f", query MLP {w['embed_dim']}" if "embed_dim" in w else "")
                       + " (" + ", ".join(f"{n:,} on D={d}" for d, n in w["params_by_backbone_width"].items()) + ")"
                       for task, w in results["readouts"].items())
    present = {m["kind"] for m in results["models"].values()}
    kinds = kinds_text(present | ({"no features"} if TRIVIAL in results["table"] else set()))
    shape = f"{recipe.frames}x{recipe.size}x{recipe.size}"
    pretrain = "; ".join(f"{m.label} = {m.preset} {m.overrides} for {m.steps} steps x batch {m.batch_size}, lr {m.lr:g}"
                         for m in recipe.models)
    md = [
        "# fourds demo: the paper in miniature", "",
        f"Recipe `{recipe.name}`: {recipe.train_scenes} training and {recipe.test_scenes} test procedural scenes of "
        f"{recipe.frames} frames at {recipe.size}x{recipe.size}; SimpleMAE pretraining: {pretrain}. Frozen readouts "
        f"(the paper's designs, narrower): {widths}; {recipe.probe_steps} steps x batch {recipe.probe_batch}"
        f"{''.join(f' ({t}: {n})' for t, n in recipe.task_probe_steps.items())}, "
        f"lr {recipe.probe_lr:g}, one fixed configuration (no selection), mean ± std over readout seeds "
        f"{list(recipe.seeds)}, reported on the test scenes.", "",
        "## Frozen evaluation (Table 2 in miniature)", "", md_table, "",
        f"Arrows: ↑ higher is better, ↓ lower is better; bold: best mean of the column. Kinds: {kinds}.", "",
        f"Params (M): the backbone as the probes ran it — the encoder at the demo's {shape} input, without "
        "SimpleMAE's latent tokens and pixel decoder, which pretraining uses and the probes drop. `fourds models "
        f"NAME --clip {shape}` shows the same count in its `encoder` column (where the recipe keeps the "
        "preset's width and depth, as the default one does); its `total` adds the latents and the decoder, "
        "and its `enc+lat` is at the preset's own input size, so both read larger. Readout widths above give each readout's parameter count once per backbone "
        "width D: a readout's input projection has D inputs, so the same design is larger on a wider backbone.", "",
        "## Verdicts", "",
        f"**Counted: {len(results['wins_beyond_reference'])} of {len(recipe.tasks)} tasks"
        + (f" ({', '.join(results['wins_beyond_reference'])})" if results["wins_beyond_reference"] else "")
        + (f"** ({results['counted_comparison']['a']} vs {results['counted_comparison']['b']}). "
           if results["counted_comparison"] else "**. ")
        + f"Rule: {COUNT_RULE}.", "",
        f"A win is claimed only beyond the seeds' spread ({results['win_rule']}); the other comparisons are "
        "reported beside the counted one.", "",
        *[f"- {line}" for line in lines], "",
        "## Pretraining", "",
        "SimpleMAE loss on the test clips (masked at each model's own ratio, fixed masks) against the loss of predicting each clip's mean "
        "colour everywhere: an MAE sits on that plateau before it learns any structure.", "",
        "| model | test loss | mean-colour loss | ratio |", "|---|---:|---:|---:|",
        *[f"| {label} | {c['test_loss']:.4f} | {c['mean_colour_loss']:.4f} | {c['test_loss'] / c['mean_colour_loss']:.2f} |"
          for label, c in results.get("pretraining_check", {}).items()], "",
        "## Figures", "",
        *[f"![{p.stem}]({p.relative_to(out)})" for p in figures if p.suffix == ".png" and p.parent == out / "plots"], "",
        "Pictures (MAE reconstructions, predicted depth, tracks, boxes, camera trajectories): `pictures/`.", "",
        "## Time", "",
        "| stage | seconds |", "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in t.items() if ":" not in k], "",
        f"Load average at the start: {load[0]} (1 min), {load[1]} (5 min), {load[2]} (15 min) on "
        f"{results['machine']['start']['cpu_count']} CPUs.", "",
    ]
    return "\n".join(md)


def print_summary(out: Path, md_table: str, lines: list[str], results: dict[str, Any], figures: list[Path]) -> None:
    say("")
    say(md_table)
    say("")
    for line in lines:
        say("- " + line.replace("**", ""))
    total = results["timings_s"]
    say("")
    counted = results["wins_beyond_reference"]
    say(f"counted: {len(counted)} of {len(results['table'].get(TRIVIAL, {})) or len(results['readouts'])} tasks"
        + (f" ({', '.join(counted)})" if counted else "") + " — rule in results.md")
    say(f"wall time of this run: {total['this_invocation']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in total.items() if ":" not in k and k != "this_invocation") + ")")
    say(f"results:  {out / 'results.md'}  and  {out / 'results.json'}")
    plots = sorted({str(p.parent) for p in figures if p.parent.name == "plots"})
    pics = sorted({str(p.parent) for p in figures if p.parent.name != "plots"})
    if plots:
        say(f"plots:    {', '.join(plots)}")
    if pics:
        say(f"pictures: {', '.join(pics)}")
    say(f"runs:     {out / 'pretrain'} (models, loss logs), {out / 'probes'} (readouts, per-run results)")
    if any(not math.isfinite(c["mean"]) for row in results["table"].values() for c in row.values()):
        say("note: some runs gave no finite metric (shown as —)")
